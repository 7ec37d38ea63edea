#![allow(clippy::unwrap_used)]
//! A short outage run against an in-process Surge (API + one shard, as `surge up` serves
//! them): the flood creates accounts, every new user logs in and holds its presence stream,
//! and the first four call each other in two rooms. Checks the counts, not the timings.

mod common;

use std::time::Duration;

use surge_loadgen::outage::{self, OutageArgs};
use surge_loadgen::report;
use surge_loadgen::schedule::Profile;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_run_against_an_in_process_surge() {
    let surge = common::SurgeUp::start("outage-test").await;

    let mut args = OutageArgs::new(surge.base.clone());
    args.signup.profile = Profile::Constant;
    args.signup.rate = Some(8.0);
    args.signup.time_scale = 1.0;
    args.signup.duration = Some(Duration::from_secs(12));
    args.signup.duplicate_share = 0.0;
    args.signup.invalid_share = 0.0;
    args.signup.seed = Some(18);
    args.rooms = 2;
    args.room_size = 2;
    let r = outage::run(&args, true).await.unwrap();
    eprintln!("{}", r.verdict.line);

    let s = &r.signup;
    let created = s.outcomes.created_first_try + s.outcomes.created_after_retry;
    assert!(s.verdict.pass, "{}", s.verdict.line);
    assert!(created >= 40, "{:?}", s.outcomes);
    let logins = s.follow_ups.login_status.get("201");
    assert_eq!(logins, created, "every new user logs in");

    // Every user who logged in held a stream, and the streams counted them online.
    let o = &r.online;
    assert_eq!(o.logged_in, logins);
    // A user whose login was answered after the run's end (a busy machine drains the last
    // signups late) holds no stream; everyone who tried got one.
    assert_eq!(o.held, o.holders, "{o:?}");
    assert!(
        o.holders <= o.logged_in && o.holders * 4 >= o.logged_in * 3,
        "{o:?}"
    );
    assert_eq!((o.never_online, o.failures()), (0, 0), "{o:?}");
    assert_eq!(o.stream_status.get("200"), o.held, "{o:?}");
    assert!(o.peak_online >= created / 2, "{o:?}");
    assert!(
        o.timeline
            .windows(2)
            .all(|w| w[0].logged_in <= w[1].logged_in),
        "{:?}",
        o.timeline
    );
    assert!(o.stream_open.count == o.held && o.stream_open.p50_ms > 0.0);

    // The first four new users called each other in two rooms of two.
    let calls = r.calls.as_ref().unwrap();
    assert!(r.calls_error.is_none(), "{:?}", r.calls_error);
    assert_eq!(calls.participants.len(), 4);
    for p in &calls.participants {
        assert!(p.joined && p.error.is_none(), "{p:?}");
        assert!(p.join_ms.is_some(), "no media: {p:?}");
    }
    assert!(calls.received_packets_per_s > 0.0);
    assert!(r.calls_started_secs.is_some_and(|t| t < 12.0));

    let out = tempfile::tempdir().unwrap();
    let written = report::write(out.path(), &r, &report::outage_page(&r)).unwrap();
    let html = std::fs::read_to_string(written.html).unwrap();
    for part in [
        "New users online over time",
        "Throughput over time",
        "Join time distribution",
        "Presence streams",
    ] {
        assert!(html.contains(part), "the report lacks {part:?}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(written.json).unwrap()).unwrap();
    assert_eq!(json["online"]["held"], o.held);
    assert_eq!(json["calls"]["participants"].as_array().unwrap().len(), 4);

    surge.stop().await;
}
