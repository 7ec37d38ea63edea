//! Screen sharing with real str0m participants over loopback UDP against an in-process shard.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TestShard, wait_for};
use surge_participant::{Participant, ParticipantStats};
use surge_sfu_proto::protocol::ClientMessage;

const LONG: Duration = Duration::from_secs(40);

/// Packets received from the m-lines named `source` that got any.
fn received(stats: &ParticipantStats, source: &str) -> u64 {
    stats
        .tracks
        .iter()
        .filter(|t| t.source == source)
        .map(|t| t.packets)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_screen_reaches_the_subscriber_as_its_own_track_until_it_stops() {
    let shard = TestShard::start().await;
    // Light layers: the test is about the screen's track, not about bandwidth.
    let mut config = shard.config("s", "alice");
    config.layer_bps = [60_000, 150_000, 300_000];
    config.screen = true;
    let alice = Participant::join(config).await.unwrap();
    let bob = Participant::join(shard.config("s", "bob").subscriber_only())
        .await
        .unwrap();
    let got = wait_for(&bob, LONG, |s| {
        received(s, "screen") > 50 && received(s, "camera") > 50
    })
    .await;
    assert!(received(&got, "screen") > 50, "{:?}", got.tracks);
    assert!(received(&got, "camera") > 50, "{:?}", got.tracks);
    let alice_id = alice.stats().participant_id.unwrap();
    let screen = got.tracks.iter().find(|t| t.source == "screen").unwrap();
    assert_eq!(screen.kind, "video");
    assert_eq!(screen.participant_id.as_deref(), Some(alice_id.as_str()));
    let screen_mid = screen.mid.clone();

    // Alice stops sharing: Bob's screen m-line is stopped by an offer and gets nothing more.
    let mid = alice.stats().screen_mid.unwrap();
    alice.send(&ClientMessage::Screen {
        mid,
        sharing: false,
    });
    let offers = got.offers_answered;
    let got = wait_for(&bob, LONG, |s| s.offers_answered > offers).await;
    assert!(
        got.offers_answered > offers,
        "a renegotiation stops the m-line"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let packets = |s: &ParticipantStats| {
        s.tracks
            .iter()
            .find(|t| t.mid == screen_mid)
            .map_or(0, |t| t.packets)
    };
    let stopped = packets(&bob.stats());
    let camera = received(&bob.stats(), "camera");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = bob.stats();
    assert_eq!(
        packets(&later),
        stopped,
        "nothing more on the screen's m-line"
    );
    assert!(
        received(&later, "camera") > camera + 20,
        "the camera goes on"
    );
    alice.leave().await.unwrap();
    bob.leave().await.unwrap();
    shard.stop().await;
}
