#![allow(clippy::unwrap_used)]
//! A short signup run against the real API, in process, on SQLite in a temp dir with cheap
//! Argon2: every answer must be one the contract allows, and every 201 must be an account.

mod common;

use std::sync::Arc;
use std::time::Duration;

use surge_cluster::{MemoryRegistry, TokenSigner};
use surge_loadgen::signup::{self, SignupArgs};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_run_against_the_in_process_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::cheap_api_config(dir.path());
    config.hash_threads = 1;
    // Per-IP limits stay on, but generous: the run spreads over four loopback addresses.
    config.signup_ip_per_min = 6_000;
    config.signup_ip_burst = 100;
    let shutdown = CancellationToken::new();
    let api = common::start_api(
        &config,
        Arc::new(MemoryRegistry::new()),
        TokenSigner::generate(),
        shutdown.clone(),
    )
    .await;
    let (listener, base) = common::listen().await;
    let server = common::serve(listener, api.router(), Vec::new(), shutdown.clone());

    let mut args = SignupArgs::new(base);
    args.rate = Some(25.0);
    args.duration = Some(Duration::from_secs(3));
    args.duplicate_share = 0.1;
    args.invalid_share = 0.1;
    args.login_share = 0.3;
    args.heartbeats = 1;
    args.heartbeat_interval = Duration::from_millis(100);
    args.source_ips = surge_loadgen::client::SourceIps::count(4);
    args.seed = Some(7);
    let r = signup::run(&args, true).await.unwrap();

    assert!(r.verdict.pass, "{}\n{:?}", r.verdict.line, r.status_mix);
    let o = &r.outcomes;
    let created = o.created_first_try + o.created_after_retry;
    assert!(created > 20, "{o:?}");
    assert_eq!(o.unexpected + o.failed, 0, "{o:?}");
    assert!(r.status_mix.get("422") > 0, "{:?}", r.status_mix);
    assert!(r.status_mix.get("409") > 0, "{:?}", r.status_mix);
    assert!(
        r.follow_ups.login_status.get("201") > 0,
        "{:?}",
        r.follow_ups
    );
    assert!(
        r.follow_ups.heartbeat_status.get("200") > 0,
        "{:?}",
        r.follow_ups
    );
    assert!(r.latency.accepted.p50_ms > 0.0);
    // Every 201 is an account in the database, and nothing else is.
    let accounts = api.store().count_accounts().await.unwrap();
    assert_eq!(accounts as u64, created);

    shutdown.cancel();
    let _ = server.await;
    api.stop().await;
}
