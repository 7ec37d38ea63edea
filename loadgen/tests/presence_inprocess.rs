#![allow(clippy::unwrap_used)]
//! The presence mode, briefly, against the real API in process (SQLite in a temp dir,
//! presence on the test Redis under a key prefix of its own): both ways of staying online,
//! checked by counts, never by timings.

mod common;

use std::sync::Arc;
use std::time::Duration;

use surge_cluster::{MemoryRegistry, TokenSigner};
use surge_loadgen::presence::{self, PresenceArgs, PresenceMode, PresenceResult};
use surge_signup_api::{Api, ApiDeps};
use tokio_util::sync::CancellationToken;

const USERS: usize = 5;

fn redis_url() -> String {
    std::env::var("SURGE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// Runs `mode` for a couple of seconds against a fresh API.
async fn run(mode: PresenceMode) -> PresenceResult {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::cheap_api_config(dir.path());
    config.signup_ip_per_min = 0;
    config.login_ip_per_min = 0;
    let shutdown = CancellationToken::new();
    let prefix = format!("test-loadgen-presence-{}:", uuid_like());
    let api = Api::start(
        &config,
        ApiDeps {
            registry: Arc::new(MemoryRegistry::new()),
            token_key: TokenSigner::generate(),
            redis_url: Some(redis_url()),
            redis_prefix: prefix,
            shutdown: shutdown.clone(),
        },
    )
    .await
    .unwrap();
    let (listener, base) = common::listen().await;
    let server = common::serve(listener, api.router(), Vec::new(), shutdown.clone());

    let mut args = PresenceArgs::new(base);
    args.users = USERS;
    args.mode = mode;
    args.hold = Duration::from_secs(2);
    args.settle = Duration::ZERO;
    args.heartbeat_interval = Some(Duration::from_millis(500));
    args.concurrency = 3;
    // The API runs in this process: its CPU and memory are ours.
    args.api_pid = Some(std::process::id());
    args.redis_url = Some(redis_url());
    let r = presence::run(&args, true).await.unwrap();

    shutdown.cancel();
    let _ = server.await;
    api.stop().await;
    r
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn assert_measured(r: &PresenceResult) {
    assert_eq!(r.users, USERS);
    assert_eq!(r.got_online, USERS as u64, "{:?}", r.not_online_reasons);
    assert_eq!(r.held_at_start, USERS as u64);
    assert_eq!(r.held_at_end, USERS as u64);
    let api = r.api.as_ref().unwrap();
    assert!(api.rss_end_mib > 0.0 && api.cores_per_10k_users.is_some());
    assert!(r.redis.is_some());
    let check = r.online_check.as_ref().unwrap();
    assert_eq!(check.asked, USERS as u64);
    assert_eq!(check.failed, 0, "{check:?}");
    assert_eq!(check.online + check.not_online, USERS as u64);
    // The report renders from the result.
    let html = surge_loadgen::report::presence_page(r);
    assert!(html.contains("held online"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_every_user_online() {
    let r = run(PresenceMode::Heartbeat).await;
    assert_measured(&r);
    assert!(r.verdict.pass, "{}", r.verdict.line);
    assert_eq!(r.online_check.as_ref().unwrap().online, USERS as u64);
    // Each user heartbeat at least once more than its first, inside the window.
    assert!(
        r.statuses.get("heartbeat 200") > USERS as u64,
        "{:?}",
        r.statuses
    );
    assert!(r.http_requests > 0);
    assert_eq!(r.heartbeat_failures, 0);
    assert_eq!(r.statuses.get("stream 200"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_stay_open_for_the_whole_window() {
    let r = run(PresenceMode::Stream).await;
    assert_measured(&r);
    assert_eq!(
        r.statuses.get("ticket 201"),
        USERS as u64,
        "{:?}",
        r.statuses
    );
    assert_eq!(
        r.statuses.get("stream 200"),
        USERS as u64,
        "{:?}",
        r.statuses
    );
    assert_eq!(r.stream_ends, 0);
    // Nothing but the open streams: no request at all inside the window.
    assert_eq!(r.http_requests, 0);
    // Presence by connection: the open stream alone keeps each user online.
    assert_eq!(r.online_check.as_ref().unwrap().online, USERS as u64);
    assert!(r.verdict.pass, "{}", r.verdict.line);
}
