//! What only the Redis backend can meet: entries written by hand or by another release,
//! a Redis that is not there, and keys that stay under their prefix.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{delete_prefix, random_prefix, raw_redis, redis_url, shard};
use surge_cluster::RedisRegistry;
use surge_cluster::placement::Placer;
use surge_cluster::registry::{RegistryError, ShardRegistry};

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn garbage_entries_are_skipped_never_fatal() {
    let prefix = random_prefix();
    let registry = RedisRegistry::connect(&redis_url(), &prefix).await.unwrap();
    registry.heartbeat(&shard("good", 0), LONG).await.unwrap();

    let shards = format!("{prefix}{{registry}}:shards");
    let deadlines = format!("{prefix}{{registry}}:deadlines");
    let mut good_elsewhere = serde_json::to_value(shard("someone-else", 0)).unwrap();
    good_elsewhere["id"] = "someone-else".into();
    let mut old = serde_json::to_value(shard("old", 0)).unwrap();
    old["version"] = 0.into();
    let mut missing_version = serde_json::to_value(shard("unversioned", 0)).unwrap();
    missing_version.as_object_mut().unwrap().remove("version");
    let mut wrong_types = serde_json::to_value(shard("typed", 0)).unwrap();
    wrong_types["capacity"] = "lots".into();
    let entries: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"not json at all".to_vec()),
        ("binary", vec![0xff, 0x00, 0xfe]),
        ("empty", Vec::new()),
        ("array", b"[1,2,3]".to_vec()),
        ("old", old.to_string().into_bytes()),
        ("unversioned", missing_version.to_string().into_bytes()),
        ("typed", wrong_types.to_string().into_bytes()),
        ("impostor", good_elsewhere.to_string().into_bytes()),
    ];
    let mut conn = raw_redis().await;
    let far_future: u64 = 4_000_000_000_000;
    for (id, raw) in &entries {
        let () = redis::pipe()
            .hset(&shards, id, raw.as_slice())
            .ignore()
            .zadd(&deadlines, id, far_future)
            .ignore()
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    // A deadline whose entry is missing, and a deadline that is not a number's worth.
    let () = redis::cmd("ZADD")
        .arg(&deadlines)
        .arg(far_future)
        .arg("ghost")
        .query_async(&mut conn)
        .await
        .unwrap();

    // Read many times: every read skips them, none fails.
    for _ in 0..3 {
        let live = registry.live_shards().await.unwrap();
        let ids: Vec<_> = live.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["good"]);
    }
    let placer = Placer::new(std::sync::Arc::new(
        RedisRegistry::connect(&redis_url(), &prefix).await.unwrap(),
    ));
    for i in 0..20 {
        assert_eq!(placer.place(&format!("r{i}")).await.unwrap().id, "good");
    }
    // A shard that heartbeats over a garbage entry is readable again.
    registry
        .heartbeat(&shard("garbage", 0), LONG)
        .await
        .unwrap();
    assert_eq!(registry.live_shards().await.unwrap().len(), 2);
    delete_prefix(prefix).await;
}

#[tokio::test]
async fn liveness_follows_redis_clock() {
    // The expiry deadline is computed by Redis, so a TTL is honoured whatever this
    // process's clock says: check the stored deadline is near Redis's own TIME.
    let prefix = random_prefix();
    let registry = RedisRegistry::connect(&redis_url(), &prefix).await.unwrap();
    registry.heartbeat(&shard("a", 0), LONG).await.unwrap();
    let mut conn = raw_redis().await;
    let deadline: f64 = redis::cmd("ZSCORE")
        .arg(format!("{prefix}{{registry}}:deadlines"))
        .arg("a")
        .query_async(&mut conn)
        .await
        .unwrap();
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let redis_now_ms = (secs * 1000 + micros / 1000) as f64;
    let ahead = deadline - redis_now_ms;
    assert!(
        ahead > 30_000.0 && ahead <= 60_000.0,
        "deadline {ahead} ms ahead of Redis's clock"
    );
    delete_prefix(prefix).await;
}

#[tokio::test]
async fn unreachable_redis_is_one_clear_error() {
    // Port 1 on loopback: nothing listens there.
    let Err(err) = RedisRegistry::connect("redis://127.0.0.1:1/", "x:").await else {
        panic!("connected to nothing");
    };
    assert!(matches!(err, RegistryError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("cannot reach Redis"), "{err}");

    let Err(err) = surge_cluster::registry::connect(Some("not a url"), "x:").await else {
        panic!("accepted a bad URL");
    };
    assert!(matches!(err, RegistryError::Invalid(_)), "{err:?}");
}

#[tokio::test]
async fn connect_picks_the_backend_from_the_url() {
    let prefix = random_prefix();
    let registry = surge_cluster::registry::connect(Some(&redis_url()), &prefix)
        .await
        .unwrap();
    registry.heartbeat(&shard("a", 0), LONG).await.unwrap();
    // Visible through a second connection: it is in Redis, not in this process.
    let other = RedisRegistry::connect(&redis_url(), &prefix).await.unwrap();
    assert_eq!(other.live_shards().await.unwrap().len(), 1);
    // And invisible under another prefix.
    let elsewhere = RedisRegistry::connect(&redis_url(), &random_prefix())
        .await
        .unwrap();
    assert!(elsewhere.live_shards().await.unwrap().is_empty());
    delete_prefix(prefix).await;
}
