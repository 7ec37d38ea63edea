//! Real str0m participants over loopback UDP against an in-process shard.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TestShard, wait_for};
use surge_participant::Participant;
use surge_sfu_proto::protocol::{ClientMessage, Kind, ServerMessage};

const LONG: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_and_video_reach_the_other_participant_but_not_the_sender() {
    let shard = TestShard::start().await;
    let alice = shard.join("r1", "alice").await;
    let bob = Participant::join(shard.config("r1", "bob").subscriber_only())
        .await
        .unwrap();
    let got = wait_for(&bob, LONG, |s| {
        !s.receiving("audio").is_empty() && !s.receiving("video").is_empty()
    })
    .await;
    assert!(got.connected, "{got:?}");
    assert_eq!(got.receiving("audio").len(), 1, "{got:?}");
    assert_eq!(got.receiving("video").len(), 1, "{got:?}");
    assert!(got.join_time.is_some());
    let alice_id = alice.stats().participant_id.unwrap();
    assert_eq!(
        got.receiving("audio")[0].participant_id.as_deref(),
        Some(alice_id.as_str())
    );
    assert!(
        got.messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Welcome { .. })),
        "{:?}",
        got.messages
    );
    let alice_stats = alice.stats();
    assert!(alice_stats.sent_packets > 0);
    // Alice is the only publisher: nothing comes back to her.
    assert!(alice_stats.receiving("audio").is_empty(), "{alice_stats:?}");
    assert!(alice_stats.receiving("video").is_empty(), "{alice_stats:?}");
    let status = shard.shard.status();
    assert_eq!((status.rooms, status.participants), (1, 2));
    bob.leave().await.unwrap();
    // Alice learns that Bob left.
    let seen = wait_for(&alice, LONG, |s| {
        s.messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Left { .. }))
    })
    .await;
    assert!(
        seen.messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Left { .. })),
        "{:?}",
        seen.messages
    );
    alice.leave().await.unwrap();
    assert_eq!(shard.shard.status().participants, 0);
    assert_eq!(shard.shard.status().rooms, 0);
    shard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subscriber_gets_the_simulcast_layer_its_bandwidth_allows() {
    let shard = TestShard::start().await;
    // Layers light enough that the top one fits the initial estimate: the test is about
    // the layer choice, not about how fast TWCC probing ramps up on a busy machine.
    let mut config = shard.config("sim", "pub");
    config.layer_bps = [60_000, 200_000, 600_000];
    let publisher = Participant::join(config).await.unwrap();
    let mut subscribers = Vec::new();
    for (user, cap, expected) in [
        ("wide", None, "f"),
        ("medium", Some(450_000), "h"),
        ("narrow", Some(170_000), "q"),
    ] {
        let mut config = shard.config("sim", user).subscriber_only();
        config.max_receive_bps = cap;
        subscribers.push((Participant::join(config).await.unwrap(), expected));
    }
    for (sub, expected) in &subscribers {
        let got = wait_for(sub, Duration::from_secs(60), |s| {
            s.receiving("video")
                .first()
                .is_some_and(|t| t.layer.as_deref() == Some(*expected))
        })
        .await;
        let video = got.receiving("video");
        assert_eq!(
            video.first().and_then(|t| t.layer.as_deref()),
            Some(*expected),
            "{:?}",
            got.tracks
        );
    }
    // Audio reaches every subscriber as well.
    for (sub, _) in &subscribers {
        assert_eq!(sub.stats().receiving("audio").len(), 1);
    }
    drop(publisher);
    drop(subscribers);
    shard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_participant_times_out() {
    let shard = TestShard::start_with(|c| c.participant_timeout_secs = 2).await;
    let stays = shard.join("gone", "stays").await;
    let vanishes = shard.join("gone", "vanishes").await;
    wait_for(&stays, LONG, |s| !s.receiving("audio").is_empty()).await;
    assert_eq!(shard.shard.status().participants, 2);
    vanishes.vanish();
    let seen = wait_for(&stays, LONG, |s| {
        s.messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Left { .. }))
    })
    .await;
    assert!(
        seen.messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Left { .. })),
        "{:?}",
        seen.messages
    );
    assert_eq!(shard.shard.status().participants, 1);
    stays.leave().await.unwrap();
    shard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_are_dropped_and_calls_go_on() {
    let shard = TestShard::start().await;
    let alice = shard.join("junk", "alice").await;
    let bob = shard.join("junk", "bob").await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for target in shard.shard.media_addrs() {
        for n in 0..200u32 {
            let random: Vec<u8> = (0..(n % 300)).map(|_| rand::random()).collect();
            socket.send_to(&random, target).unwrap();
        }
        // Truncated RTP, RTCP-looking junk, STUN for a ufrag nobody has, an empty datagram.
        socket.send_to(&[0x80, 0x60, 0x00], target).unwrap();
        socket
            .send_to(&[0x80, 0xC8, 0x00, 0x06, 1, 2], target)
            .unwrap();
        let mut stun = vec![0x00, 0x01, 0x00, 0x0C, 0x21, 0x12, 0xA4, 0x42];
        stun.extend_from_slice(&[9; 12]);
        stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x07]);
        stun.extend_from_slice(b"nobody:x\0");
        socket.send_to(&stun, target).unwrap();
        socket.send_to(&[], target).unwrap();
    }
    let got = wait_for(&bob, LONG, |s| {
        !s.receiving("audio").is_empty() && !s.receiving("video").is_empty()
    })
    .await;
    assert_eq!(got.receiving("video").len(), 1, "{got:?}");
    let got = wait_for(&alice, LONG, |s| !s.receiving("video").is_empty()).await;
    assert_eq!(got.receiving("video").len(), 1, "{got:?}");
    alice.leave().await.unwrap();
    bob.leave().await.unwrap();
    shard.stop().await;
}

/// Client messages on the data channel: a mute reaches the others as an event, and a
/// subscriber that asks for a small size gets the low layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_and_max_height_from_the_data_channel_take_effect() {
    let shard = TestShard::start().await;
    let mut config = shard.config("ctl", "alice");
    config.layer_bps = [60_000, 200_000, 600_000];
    let alice = Participant::join(config).await.unwrap();
    let bob = Participant::join(shard.config("ctl", "bob").subscriber_only())
        .await
        .unwrap();
    // First the top layer (nothing limits it), then the small size it asks for.
    let got = wait_for(&bob, LONG, |s| {
        s.receiving("video")
            .first()
            .is_some_and(|t| t.layer.as_deref() == Some("f"))
    })
    .await;
    assert_eq!(got.receiving("video")[0].layer.as_deref(), Some("f"));
    let video_mid = got.receiving("video")[0].mid.clone();
    bob.send(&ClientMessage::MaxHeight {
        mid: video_mid,
        height: 180,
    });
    let got = wait_for(&bob, LONG, |s| {
        s.receiving("video")
            .first()
            .is_some_and(|t| t.layer.as_deref() == Some("q"))
    })
    .await;
    assert_eq!(
        got.receiving("video")[0].layer.as_deref(),
        Some("q"),
        "{:?}",
        got.tracks
    );
    alice.send(&ClientMessage::Mute {
        kind: Kind::Audio,
        muted: true,
    });
    let is_muted = |m: &ServerMessage| {
        matches!(
            m,
            ServerMessage::Muted {
                kind: Kind::Audio,
                muted: true,
                ..
            }
        )
    };
    let got = wait_for(&bob, LONG, |s| s.messages.iter().any(is_muted)).await;
    assert!(got.messages.iter().any(is_muted), "{:?}", got.messages);
    alice.leave().await.unwrap();
    bob.leave().await.unwrap();
    shard.stop().await;
}
