//! ICE restart over HTTP (`PATCH` on the participant, as WHIP does) with real str0m
//! participants over loopback UDP against an in-process shard.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{TestShard, wait_for};
use str0m::Rtc;
use surge_participant::{Participant, ParticipantStats};
use surge_sfu_proto::protocol::ServerMessage;
use surge_sfu_proto::synthetic::add_publish_media;

const LONG: Duration = Duration::from_secs(40);

/// Waits until `me` received more than `more` packets from `from`.
async fn flowing(me: &Participant, from: &str, more: u64) {
    wait_for(me, LONG, |s| received_from(s, from) > more).await;
}

/// Packets received from `from` (a participant id), all tracks.
fn received_from(stats: &ParticipantStats, from: &str) -> u64 {
    stats
        .tracks
        .iter()
        .filter(|t| t.participant_id.as_deref() == Some(from))
        .map(|t| t.packets)
        .sum()
}

fn membership_messages(stats: &ParticipantStats) -> usize {
    stats
        .messages
        .iter()
        .filter(|m| matches!(m, ServerMessage::Joined { .. } | ServerMessage::Left { .. }))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_moves_to_a_new_socket_restarts_ice_and_keeps_its_session() {
    let shard = TestShard::start().await;
    let alice = shard.join("move", "alice").await;
    let bob = shard.join("move", "bob").await;
    let alice_id = alice.stats().participant_id.unwrap();
    let bob_id = bob.stats().participant_id.unwrap();
    flowing(&bob, &alice_id, 50).await;
    flowing(&alice, &bob_id, 50).await;
    let bob_before = bob.stats();
    let (to_bob, to_alice) = (
        received_from(&bob_before, &alice_id),
        received_from(&alice.stats(), &bob_id),
    );

    let restarted = Instant::now();
    alice.restart_ice().await.unwrap();
    let answered = restarted.elapsed();
    flowing(&alice, &bob_id, to_alice + 20).await;
    let alice_hears = restarted.elapsed();
    flowing(&bob, &alice_id, to_bob + 20).await;
    let bob_hears = restarted.elapsed();
    println!(
        "ICE restart on a new socket: answer after {answered:?}; alice receives again after \
         {alice_hears:?}, bob receives alice again after {bob_hears:?}"
    );
    assert!(alice_hears < Duration::from_secs(10) && bob_hears < Duration::from_secs(10));

    let alice_after = alice.stats();
    let bob_after = bob.stats();
    assert_eq!(alice_after.ice_restarts, 1);
    assert_eq!(
        alice_after.participant_id.as_deref(),
        Some(alice_id.as_str())
    );
    assert!(
        received_from(&bob_after, &alice_id) > to_bob,
        "{bob_after:?}"
    );
    assert_eq!(
        membership_messages(&bob_after),
        membership_messages(&bob_before),
        "bob saw no left/joined: {:?}",
        bob_after.messages
    );
    let status = shard.shard.status();
    assert_eq!((status.rooms, status.participants), (1, 2));
    alice.leave().await.unwrap();
    bob.leave().await.unwrap();
    shard.stop().await;
}

/// A fresh offer shaped like a subscriber-only participant's (the data channel only), with
/// its own new ICE credentials.
fn channel_only_offer() -> String {
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
    let mut change = rtc.sdp_api();
    add_publish_media(&mut change, false, false);
    change.add_channel("surge".to_owned());
    change.apply().unwrap().0.to_sdp_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_restarts_get_clear_errors_and_change_nothing() {
    let shard = TestShard::start().await;
    let alice = shard.join("bad", "alice").await;
    let carol = Participant::join(shard.config("bad", "carol").subscriber_only())
        .await
        .unwrap();
    let alice_id = alice.stats().participant_id.unwrap();
    let carol_id = carol.stats().participant_id.unwrap();
    wait_for(&carol, LONG, |s| received_from(s, &alice_id) > 20).await;
    let http = reqwest::Client::new();
    let url = |id: &str| format!("{}/{id}", shard.url("bad"));
    let patch = |id: String, token: String, content_type: &'static str, body: String| {
        let request = http
            .patch(url(&id))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (
                status,
                body["error"]["code"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    let carol_token = shard.token("bad", "carol");
    let cases = [
        (
            "malformed SDP",
            patch(
                carol_id.clone(),
                carol_token.clone(),
                "application/sdp",
                "v=0\r\nnonsense".into(),
            )
            .await,
            (400, "invalid_sdp"),
        ),
        (
            "not SDP",
            patch(
                carol_id.clone(),
                carol_token.clone(),
                "application/json",
                "{}".into(),
            )
            .await,
            (415, "unsupported_media_type"),
        ),
        (
            "unknown session",
            patch(
                "00000000000000ff".into(),
                carol_token.clone(),
                "application/sdp",
                channel_only_offer(),
            )
            .await,
            (404, "session_gone"),
        ),
        (
            "someone else's session",
            patch(
                alice_id.clone(),
                carol_token.clone(),
                "application/sdp",
                channel_only_offer(),
            )
            .await,
            (404, "session_gone"),
        ),
        (
            "no token",
            patch(
                carol_id.clone(),
                String::new(),
                "application/sdp",
                channel_only_offer(),
            )
            .await,
            (401, ""),
        ),
    ];
    for (what, (status, code), (want_status, want_code)) in cases {
        assert_eq!(status, want_status, "{what}: {code}");
        assert!(want_code.is_empty() || code == want_code, "{what}: {code}");
    }
    // A restart whose credentials are the current ones: the first one takes (Carol's own
    // session, which it breaks, as a second device of hers could), the same offer again is
    // not a restart.
    let offer = channel_only_offer();
    let first = patch(
        carol_id.clone(),
        carol_token.clone(),
        "application/sdp",
        offer.clone(),
    )
    .await;
    assert_eq!(first.0, 200, "{first:?}");
    let again = patch(carol_id.clone(), carol_token, "application/sdp", offer).await;
    assert_eq!(again, (400, "ice_restart_required".to_owned()));

    // Alice was not touched: her session is the same, and she keeps sending.
    let sent = alice.stats().sent_packets;
    let now = wait_for(&alice, LONG, |s| s.sent_packets > sent + 50).await;
    assert!(now.connected && now.ice_restarts == 0, "{now:?}");
    assert_eq!(shard.shard.status().participants, 2);
    alice.leave().await.unwrap();
    carol.vanish();
    shard.stop().await;
}
