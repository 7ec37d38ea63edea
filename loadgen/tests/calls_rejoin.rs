#![allow(clippy::unwrap_used)]
//! A shard dies in the middle of a call: the loadgen's participants notice the silence,
//! rejoin through the API (which places the room on the surviving shard) and report how
//! long the media was interrupted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use surge_cluster::{MemoryRegistry, ShardRegistry, TokenSigner};
use surge_loadgen::calls::{self, CallsArgs};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_rejoin_when_their_shard_dies() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::cheap_api_config(dir.path());
    config.signup_ip_per_min = 0;
    config.login_ip_per_min = 0;
    let registry = Arc::new(MemoryRegistry::new());
    let key = TokenSigner::generate();
    let (a, stop_a) = common::serve_shard("shard-a", registry.clone(), &key).await;
    let (b, stop_b) = common::serve_shard("shard-b", registry.clone(), &key).await;
    for _ in 0..100 {
        if registry.live_shards().await.unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(registry.live_shards().await.unwrap().len(), 2);
    let shutdown = CancellationToken::new();
    let api = common::start_api(&config, registry.clone(), key, shutdown.clone()).await;
    let (listener, base) = common::listen().await;
    let stop_api = CancellationToken::new();
    common::serve(listener, api.router(), Vec::new(), stop_api.clone());

    let mut args = CallsArgs::new(base);
    args.rooms = 1;
    args.publishers = 1;
    args.subscribers = 1;
    args.duration = Duration::from_secs(25);
    args.rejoin_after = Duration::from_secs(2);
    args.source_ips = Default::default();
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
