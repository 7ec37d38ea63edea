#![allow(clippy::unwrap_used)]
//! A short calls run against an in-process Surge (API + one SFU shard on one listener, as
//! `surge up` serves them): participants sign up, create rooms, join through the API and
//! exchange media over real UDP on 127.0.0.1.

mod common;

use std::time::Duration;

use surge_loadgen::calls::{self, CallsArgs};
use surge_loadgen::report;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_run_against_an_in_process_surge() {
    let surge = common::SurgeUp::start("loadgen-test").await;

    let mut args = CallsArgs::new(surge.base.clone());
    args.rooms = 2;
    args.publishers = 2;
    args.subscribers = 2;
    args.capped_subscribers = 1;
    args.subscriber_cap_bps = Some(500_000);
    args.duration = Duration::from_secs(15);
    args.source_ips = Default::default();
    let r = calls::run(&args, true).await.unwrap();

    // The verdict is about the SFU (and this busy two-core box); here we check that the
    // loadgen joined everyone through the API and measured what arrived.
    eprintln!("{}", r.verdict.line);
    assert_eq!(r.participants.len(), 8);
    for p in &r.participants {
        assert!(p.joined && p.error.is_none(), "{p:?}");
        assert!(p.connect_ms.is_some(), "{p:?}");
        assert!(p.join_ms.is_some_and(|ms| ms > 0.0), "no media: {p:?}");
    }
    let subscribers: Vec<_> = r
        .participants
        .iter()
        .filter(|p| p.role == "subscriber")
        .collect();
    assert_eq!(subscribers.len(), 4);
    for s in &subscribers {
        assert_eq!(s.audio.iter().filter(|t| t.packets > 0).count(), 2, "{s:?}");
    }
    assert!(
        subscribers
            .iter()
            .any(|s| s.video.iter().any(|t| t.packets > 0 && t.layer.is_some())),
        "{:#?}",
        r.participants
    );
    assert!(r.join.count == 8 && r.join.p50_ms > 0.0, "{:?}", r.join);
    assert!(r.received_packets_per_s > 0.0);
    assert!(!r.timeline.is_empty());
    assert!(r.verdict.line.starts_with("PASS") || r.verdict.line.starts_with("FAIL"));

    let out = tempfile::tempdir().unwrap();
    let written = report::write(out.path(), &r, &report::calls_page(&r)).unwrap();
    let html = std::fs::read_to_string(written.html).unwrap();
    assert!(html.contains("Join time distribution") && html.contains("<svg"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(written.json).unwrap()).unwrap();
    assert_eq!(json["participants"].as_array().unwrap().len(), 8);

    surge.stop().await;
}
