#![allow(clippy::unwrap_used)]
//! Participants change networks mid-call (`--network-change-after`): each moves to a new
//! local socket and restarts ICE over the API's `PATCH` against an in-process Surge; the
//! report says how long media stopped, for the mover and its room mates, and that nobody
//! fell back to a rejoin or saw the mover leave.

mod common;

use std::time::Duration;

use surge_loadgen::calls::{self, CallsArgs};
use surge_loadgen::network_change::WINDOW;
use surge_loadgen::report;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_that_change_networks_restart_ice_and_keep_their_sessions() {
    let surge = common::SurgeUp::start("network-change").await;

    let mut args = CallsArgs::new(surge.base.clone());
    args.rooms = 1;
    args.publishers = 2;
    args.subscribers = 2;
    args.capped_subscribers = 0;
    args.duration = Duration::from_secs(12);
    args.source_ips = Default::default();
    args.network.network_change_after = Some(Duration::from_secs(5));
    // Every other participant: publisher 1 and subscriber 1.
    args.network.network_changes_share = 0.5;
    let r = calls::run(&args, true).await.unwrap();
    eprintln!("{}", r.verdict.line);
    let n = r.network_changes.clone().expect("network changes reported");
    eprint!("{}", n.table());

    for p in &r.participants {
        assert!(p.joined && p.error.is_none(), "{p:?}");
        assert_eq!(p.rejoins, 0, "no full rejoin: {p:?}");
    }
    let movers: Vec<_> = r
        .participants
        .iter()
        .filter(|p| p.moved.is_some())
        .collect();
    assert_eq!(movers.len(), 2, "{:#?}", r.participants);
    for m in &movers {
        assert_eq!(m.index, 1, "the share picks every other participant: {m:?}");
        let moved = m.moved.as_ref().unwrap();
        assert!(!moved.skipped && moved.fell_back.is_none(), "{moved:?}");
        assert!(moved.same_id && moved.restart_ms.is_some(), "{moved:?}");
        assert!(
            moved.back_ms.is_some(),
            "the mover receives again: {moved:?}"
        );
    }
    // The moving publisher is heard again by the three others; the moving subscriber sends
    // nothing, so nobody waits for it.
    assert_eq!(
        (n.moves, n.skipped, n.fell_back, n.changed_id),
        (2, 0, 0, 0),
        "{n:?}"
    );
    assert_eq!(n.mover_back.count, 2, "{n:?}");
    assert_eq!(n.others_back.count, 3, "{n:?}");
    assert_eq!(n.not_back, 0, "{n:?}");
    assert_eq!(
        n.membership_events, 0,
        "nobody saw a mover leave or join: {n:?}"
    );
    let window_ms = WINDOW.as_secs_f64() * 1000.0;
    assert!(n.mover_back.max_ms <= window_ms && n.others_back.max_ms <= window_ms);
    // Every room mate judged both moves (the subscriber's too, for left/joined).
    let observed: usize = r.participants.iter().map(|p| p.observed.len()).sum();
    assert_eq!(observed, 6, "{:#?}", r.participants);

    let out = tempfile::tempdir().unwrap();
    let written = report::write(out.path(), &r, &report::calls_page(&r)).unwrap();
    let html = std::fs::read_to_string(written.html).unwrap();
    assert!(html.contains("Network changes") && html.contains("receives again"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(written.json).unwrap()).unwrap();
    assert_eq!(json["network_changes"]["moves"], 2);

    surge.stop().await;
}

#[tokio::test]
async fn a_network_change_against_janus_is_refused_before_anything_starts() {
    let mut args = CallsArgs::new("http://127.0.0.1:9");
    args.sfu = calls::SfuKind::Janus;
    args.network.network_change_after = Some(Duration::from_secs(5));
    let e = calls::run(&args, true).await.unwrap_err();
    assert!(e.to_string().contains("--sfu surge"), "{e}");
}
