//! One behavioural suite for the shard registry, run against both backends: the in-memory
//! one and the Redis one (real Redis at `$SURGE_TEST_REDIS_URL`, a random key prefix per
//! test). Expiry is checked with short TTLs and generous waits (a busy machine only makes
//! the wait longer, never the check wrong); liveness with long TTLs.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::{shard, wait_until_gone, wait_until_unpinned};
use surge_cluster::placement::Placer;
use surge_cluster::registry::{SCHEMA_VERSION, ShardRegistry, ShardState};

const LONG: Duration = Duration::from_secs(60);
/// Long enough that the calls right after a registration see it even on a loaded machine;
/// tests then poll until it is gone rather than sleeping a fixed time.
const SHORT: Duration = Duration::from_secs(2);

async fn ids(registry: &dyn ShardRegistry) -> Vec<String> {
    registry
        .live_shards()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect()
}

async fn register_heartbeat_expire(registry: Arc<dyn ShardRegistry>) {
    assert!(ids(&*registry).await.is_empty());
    assert!(!registry.heartbeat(&shard("a", 0), LONG).await.unwrap());
    assert!(!registry.heartbeat(&shard("b", 0), SHORT).await.unwrap());
    assert!(!registry.heartbeat(&shard("c", 0), LONG).await.unwrap());
    assert_eq!(ids(&*registry).await, ["a", "b", "c"]);

    // A heartbeat carries the current load.
    registry.heartbeat(&shard("a", 42), LONG).await.unwrap();
    let a = registry.live_shards().await.unwrap().remove(0);
    assert_eq!(a.load.participants, 42);
    assert_eq!(a.signal_url, "http://a.test");

    // b stops heartbeating; it is gone after its TTL.
    wait_until_gone(&*registry, "b").await;
    assert_eq!(ids(&*registry).await, ["a", "c"]);

    // It comes back with its next heartbeat.
    registry.heartbeat(&shard("b", 0), LONG).await.unwrap();
    assert_eq!(ids(&*registry).await, ["a", "b", "c"]);

    // A clean exit removes a shard at once.
    registry.deregister("c").await.unwrap();
    registry.deregister("never-was").await.unwrap();
    assert_eq!(ids(&*registry).await, ["a", "b"]);
}

async fn draining_state(registry: Arc<dyn ShardRegistry>) {
    registry.heartbeat(&shard("a", 0), LONG).await.unwrap();
    registry.heartbeat(&shard("b", 0), LONG).await.unwrap();
    assert!(!registry.request_drain("nope").await.unwrap());
    assert!(registry.request_drain("a").await.unwrap());
    // The shard learns it on its next heartbeat, and keeps learning it.
    assert!(registry.heartbeat(&shard("a", 0), LONG).await.unwrap());
    assert!(registry.heartbeat(&shard("a", 0), LONG).await.unwrap());
    assert!(!registry.heartbeat(&shard("b", 0), LONG).await.unwrap());
    let states: HashMap<_, _> = registry
        .live_shards()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s.state))
        .collect();
    assert_eq!(states["a"], ShardState::Draining);
    assert_eq!(states["b"], ShardState::Active);

    // Nothing new goes to a draining shard, whether an operator asked or it said so itself
    // (SIGTERM).
    let mut self_draining = shard("b", 0);
    self_draining.state = ShardState::Draining;
    registry.heartbeat(&self_draining, LONG).await.unwrap();
    registry.heartbeat(&shard("c", 0), LONG).await.unwrap();
    let placer = Placer::new(registry.clone());
    for i in 0..40 {
        assert_eq!(placer.place(&format!("room-{i}")).await.unwrap().id, "c");
    }

    // A drain request dies with the shard: a new incarnation starts active.
    registry.heartbeat(&shard("d", 0), SHORT).await.unwrap();
    assert!(registry.request_drain("d").await.unwrap());
    wait_until_gone(&*registry, "d").await;
    assert!(!registry.request_drain("d").await.unwrap(), "d is gone");
    assert!(!registry.heartbeat(&shard("d", 0), LONG).await.unwrap());

    // A clean exit clears it too.
    registry.deregister("a").await.unwrap();
    assert!(!registry.heartbeat(&shard("a", 0), LONG).await.unwrap());
}

async fn pin_agreement_under_concurrency(registry: Arc<dyn ShardRegistry>) {
    // Many replicas pin the same new room at once, each to a different choice: one wins
    // and every one of them is told the winner.
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let registry = registry.clone();
            tokio::spawn(async move {
                registry
                    .pin_room("contested", &format!("shard-{i}"), None, LONG)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = HashSet::new();
    for task in tasks {
        winners.insert(task.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let winner = winners.into_iter().next().unwrap();
    assert_eq!(
        registry.room_pin("contested").await.unwrap().as_deref(),
        Some(winner.as_str())
    );

    // Replacing a dead shard's pin races the same way: one replacement wins.
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let registry = registry.clone();
            let dead = winner.clone();
            tokio::spawn(async move {
                registry
                    .pin_room("contested", &format!("new-{i}"), Some(&dead), LONG)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut replacements = HashSet::new();
    for task in tasks {
        replacements.insert(task.await.unwrap());
    }
    assert_eq!(replacements.len(), 1, "{replacements:?}");
    assert!(replacements.iter().all(|r| r.starts_with("new-")));

    // A replace naming a shard that no longer holds the pin changes nothing.
    let held = replacements.into_iter().next().unwrap();
    let after = registry
        .pin_room("contested", "late", Some("shard-stale"), LONG)
        .await
        .unwrap();
    assert_eq!(after, held);

    // Placement from many replicas at once, over live shards, agrees as well.
    for id in ["a", "b", "c"] {
        registry.heartbeat(&shard(id, 0), LONG).await.unwrap();
    }
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let placer = Placer::new(registry.clone());
            tokio::spawn(async move { placer.place("busy-room").await.unwrap().id })
        })
        .collect();
    let mut placed = HashSet::new();
    for task in tasks {
        placed.insert(task.await.unwrap());
    }
    assert_eq!(placed.len(), 1, "{placed:?}");
}

async fn replacement_when_shard_dies_not_when_it_drains(registry: Arc<dyn ShardRegistry>) {
    registry
        .heartbeat(&shard("victim", 0), Duration::from_secs(4))
        .await
        .unwrap();
    for id in ["a", "b"] {
        registry.heartbeat(&shard(id, 0), LONG).await.unwrap();
    }
    let placer = Placer::new(registry.clone());
    let mut before = HashMap::new();
    for i in 0..60 {
        let room = format!("room-{i}");
        before.insert(room.clone(), placer.place(&room).await.unwrap().id);
    }
    let on = |id: &str| before.values().filter(|s| *s == id).count();
    assert!(on("victim") > 0 && on("a") > 0 && on("b") > 0, "{before:?}");

    // The victim stops heartbeating and expires.
    wait_until_gone(&*registry, "victim").await;
    for (room, shard) in &before {
        let now = placer.place(room).await.unwrap().id;
        if shard == "victim" {
            assert_ne!(now, "victim");
        } else {
            assert_eq!(&now, shard, "{room} moved although its shard lives");
        }
        assert_eq!(registry.room_pin(room).await.unwrap(), Some(now));
    }

    // Draining b keeps b's rooms where they are (their meetings stay together); new rooms
    // go to a only.
    let mut current = HashMap::new();
    for room in before.keys() {
        current.insert(room.clone(), placer.place(room).await.unwrap().id);
    }
    assert!(registry.request_drain("b").await.unwrap());
    for (room, shard) in &current {
        assert_eq!(&placer.place(room).await.unwrap().id, shard, "{room} moved");
    }
    for i in 0..20 {
        assert_eq!(placer.place(&format!("new-{i}")).await.unwrap().id, "a");
    }

    // A shard the API finds unreachable loses its rooms at once, before the registry
    // notices; two replicas that both saw it agree on the new home.
    registry.heartbeat(&shard("c", 0), LONG).await.unwrap();
    let other = Placer::new(registry.clone());
    let (room, _) = current.iter().find(|(_, s)| *s == "a").unwrap();
    let moved = placer.replace(room, "a").await.unwrap().id;
    assert_eq!(moved, "c", "b is draining, so c is the only home left");
    assert_eq!(other.replace(room, "a").await.unwrap().id, "c");
    assert_eq!(registry.room_pin(room).await.unwrap().as_deref(), Some("c"));
}

async fn pins_expire_unless_refreshed(registry: Arc<dyn ShardRegistry>) {
    registry.heartbeat(&shard("a", 0), LONG).await.unwrap();
    registry.heartbeat(&shard("b", 0), LONG).await.unwrap();
    for room in ["occupied", "empty", "foreign"] {
        registry.pin_room(room, "a", None, SHORT).await.unwrap();
    }
    // a keeps its occupied room; b cannot extend a's pin.
    registry
        .refresh_pins("a", &["occupied".into(), "never-pinned".into()], LONG)
        .await
        .unwrap();
    registry
        .refresh_pins("b", &["foreign".into()], LONG)
        .await
        .unwrap();
    // Refreshing with a shorter TTL never shortens a pin.
    registry
        .refresh_pins("a", &["occupied".into()], Duration::from_millis(1))
        .await
        .unwrap();
    // Pinned last with the same TTL: once it has expired, so has every unrefreshed pin.
    registry
        .pin_room("sentinel", "a", None, SHORT)
        .await
        .unwrap();
    wait_until_unpinned(&*registry, "sentinel").await;
    assert_eq!(
        registry.room_pin("occupied").await.unwrap().as_deref(),
        Some("a")
    );
    assert_eq!(registry.room_pin("empty").await.unwrap(), None);
    assert_eq!(registry.room_pin("foreign").await.unwrap(), None);
    assert_eq!(registry.room_pin("never-pinned").await.unwrap(), None);

    // Many rooms at once (more than one Redis pipeline batch).
    let rooms: Vec<String> = (0..600).map(|i| format!("bulk-{i}")).collect();
    let pins = rooms
        .iter()
        .map(|room| registry.pin_room(room, "a", None, SHORT));
    for pinned in futures::future::join_all(pins).await {
        assert_eq!(pinned.unwrap(), "a");
    }
    registry.refresh_pins("a", &rooms, LONG).await.unwrap();
    registry
        .pin_room("sentinel", "a", None, SHORT)
        .await
        .unwrap();
    wait_until_unpinned(&*registry, "sentinel").await;
    for room in &rooms {
        assert_eq!(registry.room_pin(room).await.unwrap().as_deref(), Some("a"));
    }

    // An expired room is placed afresh.
    let placer = Placer::new(registry.clone()).with_pin_ttl(SHORT);
    let first = placer.place("comes-back").await.unwrap().id;
    wait_until_unpinned(&*registry, "comes-back").await;
    assert_eq!(placer.place("comes-back").await.unwrap().id, first);
    assert_eq!(registry.room_pin("comes-back").await.unwrap(), Some(first));
}

async fn other_versions_are_skipped(registry: Arc<dyn ShardRegistry>) {
    registry.heartbeat(&shard("good", 0), LONG).await.unwrap();
    let mut future = shard("from-the-future", 0);
    future.version = SCHEMA_VERSION + 1;
    registry.heartbeat(&future, LONG).await.unwrap();
    assert_eq!(ids(&*registry).await, ["good"]);
    let placer = Placer::new(registry.clone());
    for i in 0..20 {
        assert_eq!(placer.place(&format!("r{i}")).await.unwrap().id, "good");
    }
}

async fn no_capacity_is_a_clear_error(registry: Arc<dyn ShardRegistry>) {
    let placer = Placer::new(registry.clone());
    let err = placer.place("lonely").await.unwrap_err();
    assert!(matches!(err, surge_cluster::PlacementError::NoCapacity));
    let mut full = shard("full", 0);
    full.load.participants = full.capacity.max_participants;
    registry.heartbeat(&full, LONG).await.unwrap();
    assert!(placer.place("lonely").await.is_err());
    assert_eq!(registry.room_pin("lonely").await.unwrap(), None);
}

async fn new_rooms_spread_evenly(registry: Arc<dyn ShardRegistry>) {
    for id in ["a", "b", "c"] {
        registry.heartbeat(&shard(id, 0), LONG).await.unwrap();
    }
    // Two replicas, as in a cluster.
    let placers = [Placer::new(registry.clone()), Placer::new(registry.clone())];
    let mut counts: HashMap<String, u32> = HashMap::new();
    for i in 0..300 {
        let placed = placers[i % 2].place(&format!("room-{i}")).await.unwrap();
        *counts.entry(placed.id).or_default() += 1;
    }
    for n in counts.values() {
        assert!((90..=110).contains(n), "{counts:?}");
    }
    let ids: Vec<String> = ["a", "b", "c", "nobody"].map(String::from).to_vec();
    let pinned = registry.pinned_rooms(&ids).await.unwrap();
    assert_eq!(pinned, [counts["a"], counts["b"], counts["c"], 0]);
}

async fn pinned_counts_follow_pins(registry: Arc<dyn ShardRegistry>) {
    let ids: Vec<String> = ["a", "b"].map(String::from).to_vec();
    registry.pin_room("r1", "a", None, LONG).await.unwrap();
    registry.pin_room("r2", "a", None, SHORT).await.unwrap();
    registry.pin_room("r3", "b", None, LONG).await.unwrap();
    // A lost race does not count for the loser.
    registry.pin_room("r3", "a", None, LONG).await.unwrap();
    assert_eq!(registry.pinned_rooms(&ids).await.unwrap(), [2, 1]);
    // An occupied room's refresh keeps it counted; an empty room's pin expires.
    registry
        .refresh_pins("b", &["r3".into()], LONG)
        .await
        .unwrap();
    wait_until_unpinned(&*registry, "r2").await;
    assert_eq!(registry.pinned_rooms(&ids).await.unwrap(), [1, 1]);
    assert!(registry.pinned_rooms(&[]).await.unwrap().is_empty());
}

/// Runs every scenario against one backend; `$make` builds a fresh registry and a
/// clean-up future for it.
macro_rules! suite {
    ($backend:ident, $make:path) => {
        mod $backend {
            use super::*;

            macro_rules! scenario {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let (registry, cleanup) = $make().await;
                        super::$name(registry).await;
                        cleanup.await;
                    }
                };
            }

            scenario!(register_heartbeat_expire);
            scenario!(draining_state);
            scenario!(pin_agreement_under_concurrency);
            scenario!(replacement_when_shard_dies_not_when_it_drains);
            scenario!(pins_expire_unless_refreshed);
            scenario!(other_versions_are_skipped);
            scenario!(no_capacity_is_a_clear_error);
            scenario!(new_rooms_spread_evenly);
            scenario!(pinned_counts_follow_pins);
        }
    };
}

suite!(memory, common::memory_backend);
suite!(redis, common::redis_backend);
