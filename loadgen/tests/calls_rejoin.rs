#![allow(clippy::unwrap_used)]
//! A shard dies in the middle of a call: the loadgen's participants notice the silence,
//! rejoin through the API (which places the room on the surviving shard) and report how
//! long the media was interrupted.

use std::sync::Arc;
use std::time::Duration;

use surge_cluster::{MemoryRegistry, ShardRegistry, TokenKey};
use surge_loadgen::calls::{self, CallsArgs};
use surge_sfu::{SfuConfig, Shard, ShardDeps};
use surge_signup_api::{Api, ApiConfig, ApiDeps};
use tokio_util::sync::CancellationToken;

async fn serve(router: axum::Router) -> (String, CancellationToken) {
    let listener = surge_cluster::http::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(surge_cluster::http::serve(
        listener,
        surge_cluster::http::finish_router(router),
        stop.clone(),
        Duration::from_secs(1),
    ));
    (format!("http://{addr}"), stop)
}

async fn start_shard(
    id: &str,
    registry: Arc<MemoryRegistry>,
    key: &TokenKey,
) -> (Shard, CancellationToken) {
    // The shard needs its URL before it starts; bind first, then serve its router.
    let listener = surge_cluster::http::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let shard = Shard::start(
        &SfuConfig::for_tests(id),
        ShardDeps {
            registry,
            token_key: key.clone(),
            admin_token: None,
            default_signal_url: format!("http://{addr}"),
        },
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(surge_cluster::http::serve(
        listener,
        surge_cluster::http::finish_router(shard.router()),
        stop.clone(),
        Duration::from_secs(1),
    ));
    (shard, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_rejoin_when_their_shard_dies() {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        ApiConfig::with_database(format!("sqlite://{}/surge.db", dir.path().display()));
    config.argon2_memory_kib = 64;
    config.argon2_iterations = 1;
    config.signup_ip_per_min = 0;
    config.login_ip_per_min = 0;
    let registry = Arc::new(MemoryRegistry::new());
    let key = TokenKey::generate();
    let (a, stop_a) = start_shard("shard-a", registry.clone(), &key).await;
    let (b, stop_b) = start_shard("shard-b", registry.clone(), &key).await;
    for _ in 0..100 {
        if registry.live_shards().await.unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(registry.live_shards().await.unwrap().len(), 2);
    let shutdown = CancellationToken::new();
    let api = Api::start(
        &config,
        ApiDeps {
            registry: registry.clone(),
            token_key: key,
            redis_url: None,
            redis_prefix: "unused:".into(),
            admin_token: None,
            shutdown: shutdown.clone(),
        },
    )
    .await
    .unwrap();
    let (base, stop_api) = serve(api.router()).await;

    let mut args = CallsArgs::new(base);
    args.rooms = 1;
    args.publishers = 1;
    args.subscribers = 1;
    args.duration = Duration::from_secs(25);
    args.rejoin_after = Duration::from_secs(2);
    args.source_ips = 1;
    let run = tokio::spawn(async move { calls::run(&args, true).await });

    // Wait until the call is on one shard, let media flow, then kill that shard.
    let mut host = None;
    for _ in 0..150 {
        if a.status().participants >= 2 {
            host = Some("a");
            break;
        }
        if b.status().participants >= 2 {
            host = Some("b");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let survivor = match host.expect("the call never started") {
        "a" => {
            stop_a.cancel();
            a.stop().await;
            (b, stop_b)
        }
        _ => {
            stop_b.cancel();
            b.stop().await;
            (a, stop_a)
        }
    };

    let r = run.await.unwrap().unwrap();
    eprintln!("{}", r.verdict.line);
    for p in &r.participants {
        assert!(p.joined, "{p:?}");
        assert!(p.rejoins >= 1, "{p:?}");
        assert!(!p.rejoin_ms.is_empty(), "no media after rejoining: {p:?}");
        // At least the silence that triggers a rejoin, and not the whole rest of the run.
        assert!(
            p.rejoin_ms.iter().all(|ms| (2000.0..20_000.0).contains(ms)),
            "{p:?}"
        );
    }
    assert!(r.rejoin.count >= 2, "{:?}", r.rejoin);

    stop_api.cancel();
    survivor.1.cancel();
    survivor.0.stop().await;
    shutdown.cancel();
    api.stop().await;
}
