//! Helpers shared by the cluster's integration tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use surge_cluster::RedisRegistry;
use surge_cluster::redis_conn::{RedisConn, RedisTarget, RedisTimeouts};
use surge_cluster::registry::{MemoryRegistry, ShardInfo, ShardRegistry};

/// Runs after a test to remove what it left behind.
pub type Cleanup = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An active shard `id` with room for 1000 participants, `participants` of them taken.
pub fn shard(id: &str, participants: u32) -> ShardInfo {
    let mut shard = ShardInfo::new(
        id,
        format!("http://{id}.test"),
        "127.0.0.1:5000",
        1000,
        1000,
    );
    shard.load.participants = participants;
    shard
}

pub fn redis_url() -> String {
    std::env::var("SURGE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// A key prefix no other test uses.
pub fn random_prefix() -> String {
    format!("surge-test:{:016x}:", rand::random::<u64>())
}

pub async fn memory_backend() -> (Arc<dyn ShardRegistry>, Cleanup) {
    (Arc::new(MemoryRegistry::new()), Box::pin(async {}))
}

pub async fn redis_backend() -> (Arc<dyn ShardRegistry>, Cleanup) {
    let prefix = random_prefix();
    let registry = RedisRegistry::connect(&redis_url(), &prefix)
        .await
        .unwrap_or_else(|e| panic!("these tests need Redis at {}: {e}", redis_url()));
    (Arc::new(registry), Box::pin(delete_prefix(prefix)))
}

fn target() -> RedisTarget {
    RedisTarget::parse(&redis_url()).unwrap()
}

const TIMEOUTS: RedisTimeouts = RedisTimeouts {
    connect: Duration::from_secs(2),
    response: Duration::from_secs(2),
    retries: 2,
    max_delay: Duration::from_secs(1),
};

/// A plain connection (to one server or the cluster), for writing entries by hand.
pub async fn raw_redis() -> RedisConn {
    RedisConn::connect(&target(), &TIMEOUTS).await.unwrap()
}

/// Deletes every key under `prefix` (on a cluster, found on every seed node).
pub async fn delete_prefix(prefix: String) {
    let mut conn = raw_redis().await;
    let nodes = match target() {
        RedisTarget::Single(url) => vec![url],
        RedisTarget::Cluster(seeds) => seeds,
    };
    for node in nodes {
        let Ok(mut scan) = redis::Client::open(node.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
        else {
            continue;
        };
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut scan)
                .await
                .unwrap();
            // One key per DEL: on a cluster the keys live in different slots.
            for key in keys {
                let () = redis::cmd("DEL")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
}

/// Polls until `id` is no longer live (generous bound: the machine may be busy).
pub async fn wait_until_gone(registry: &dyn ShardRegistry, id: &str) {
    for _ in 0..300 {
        let live = registry.live_shards().await.unwrap();
        if live.iter().all(|s| s.id != id) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("shard {id} did not expire within 30 s");
}

/// Polls until `room` has no pin.
pub async fn wait_until_unpinned(registry: &dyn ShardRegistry, room: &str) {
    for _ in 0..300 {
        if registry.room_pin(room).await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the pin of {room} did not expire within 30 s");
}
