//! ICE-TCP (RFC 6544 passive, RFC 4571 framing) on a shard's workers: real str0m
//! participants, one over TCP only, beside UDP ones; and TCP peers that misbehave.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{TestShard, wait_for};
use surge_participant::Participant;

const LONG: Duration = Duration::from_secs(40);

fn render_metrics() -> String {
    surge_cluster::telemetry::install_metrics()
        .map(|h| h.render())
        .unwrap_or_default()
}

/// The value of `name{..reason="reason"..}`, 0 when absent.
fn closed(text: &str, reason: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.starts_with("surge_sfu_tcp_connections_closed_total")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn packets(p: &Participant, kind: &str) -> u64 {
    p.stats().receiving(kind).iter().map(|t| t.packets).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_only_participant_sends_and_receives_media_beside_a_udp_one() {
    let _ = render_metrics();
    let shard = TestShard::start().await;
    assert_eq!(shard.shard.media_tcp_addrs().len(), 2);
    let alice = shard.join("tcp-room", "alice").await;
    let mut config = shard.config("tcp-room", "bob");
    config.tcp_only = true;
    let bob = Participant::join(config).await.unwrap();
    let both = |s: &surge_participant::ParticipantStats| {
        !s.receiving("audio").is_empty() && !s.receiving("video").is_empty()
    };
    let bob_got = wait_for(&bob, LONG, both).await;
    assert!(bob_got.connected, "{bob_got:?}");
    assert!(both(&bob_got), "bob over TCP receives alice: {bob_got:?}");
    let alice_got = wait_for(&alice, LONG, both).await;
    assert!(
        both(&alice_got),
        "alice over UDP receives bob: {alice_got:?}"
    );

    // Media keeps flowing over TCP both ways.
    let (bob_before, alice_before) = (packets(&bob, "video"), packets(&alice, "video"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bob_stats = bob.stats();
    let (bob_after, alice_after) = (packets(&bob, "video"), packets(&alice, "video"));
    assert!(bob_after > bob_before, "{bob_before} -> {bob_after}");
    assert!(
        alice_after > alice_before,
        "{alice_before} -> {alice_after}"
    );
    let loss = bob_stats.receiving("video")[0].delivery_loss();
    println!(
        "ICE-TCP participant: join {:?} (UDP peer {:?}), video packets in 3 s: over TCP {}, over UDP {}, TCP video loss {:?}",
        bob_stats.join_time,
        alice.stats().join_time,
        bob_after - bob_before,
        alice_after - alice_before,
        loss,
    );
    let text = render_metrics();
    assert!(
        text.lines()
            .any(|l| l.starts_with("surge_sfu_tcp_connections ") && !l.ends_with(" 0")),
        "{text}"
    );
    bob.leave().await.unwrap();
    alice.leave().await.unwrap();
    shard.stop().await;
}

/// Connects to `addr`, writes `bytes`, and waits for the shard to close the connection.
fn closed_by_the_shard(addr: SocketAddr, bytes: &[u8], within: Duration) -> bool {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(within)).unwrap();
    let _ = stream.write_all(bytes);
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        // A timeout is not a close; a reset is.
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_tcp_peers_are_closed_and_counted_while_udp_media_flows() {
    let before = render_metrics();
    // One worker: every connection lands beside the UDP participants' room.
    let shard = TestShard::start_with(|c| c.workers = Some(1)).await;
    let tcp_addr = shard.shard.media_tcp_addrs()[0];
    let mut config = shard.config("busy", "alice");
    // Every layer heavy: whatever layer the slow reader gets fills its backlog quickly.
    config.layer_bps = [1_000_000, 1_500_000, 2_000_000];
    let alice = Participant::join(config).await.unwrap();
    let carol = Participant::join(shard.config("busy", "carol").subscriber_only())
        .await
        .unwrap();
    let got = wait_for(&carol, LONG, |s| !s.receiving("video").is_empty()).await;
    assert!(!got.receiving("video").is_empty(), "{got:?}");

    // A slow reader: a TCP subscriber that stops reading once its media flows.
    let mut slow = shard.config("busy", "dave").subscriber_only();
    slow.tcp_only = true;
    slow.tcp_stall_after = Some(Duration::from_secs(2));
    let dave = Participant::join(slow).await.unwrap();

    let carol_before = packets(&carol, "video");
    let started = Instant::now();
    let abuse = tokio::task::spawn_blocking(move || {
        let within = Duration::from_secs(15);
        // Oversized and zero lengths, a first packet that is not STUN, and a half-open
        // connection that never sends anything.
        let oversized = closed_by_the_shard(tcp_addr, &[0xff, 0xff, 1, 2, 3], within);
        let zero = closed_by_the_shard(tcp_addr, &[0, 0, 0, 4, 1, 2, 3, 4], within);
        let mut rtp = vec![0, 12, 0x80, 96];
        rtp.extend_from_slice(&[0; 10]);
        let not_stun = closed_by_the_shard(tcp_addr, &rtp, within);
        let half_open = closed_by_the_shard(tcp_addr, &[], within);
        (oversized, zero, not_stun, half_open)
    });
    let (oversized, zero, not_stun, half_open) = abuse.await.unwrap();
    assert!(oversized && zero && not_stun && half_open);

    // The slow reader is dropped, not waited for.
    let deadline = Instant::now() + LONG;
    let mut text = render_metrics();
    while closed(&text, "slow_reader") <= closed(&before, "slow_reader")
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
        text = render_metrics();
    }
    for reason in [
        "bad_framing",
        "not_stun",
        "handshake_timeout",
        "slow_reader",
    ] {
        assert!(
            closed(&text, reason) > closed(&before, reason),
            "{reason} not counted: {text}"
        );
    }
    assert!(closed(&text, "bad_framing") >= closed(&before, "bad_framing") + 2);

    // Carol, over UDP on the same worker, kept receiving throughout, and still does.
    let carol_during = packets(&carol, "video");
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let carol_after = packets(&carol, "video");
    println!(
        "UDP subscriber during {elapsed:?} of TCP abuse: {} video packets, then {} in 2 s",
        carol_during - carol_before,
        carol_after - carol_during
    );
    assert!(
        carol_during > carol_before,
        "{carol_before} -> {carol_during}"
    );
    assert!(
        carol_after > carol_during,
        "{carol_during} -> {carol_after}"
    );
    assert!(carol.stats().connected);

    dave.vanish();
    carol.leave().await.unwrap();
    alice.leave().await.unwrap();
    shard.stop().await;
}
