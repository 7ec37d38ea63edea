//! Room placement: a room goes to one live, active shard with headroom, chosen by weighted
//! rendezvous hashing on free capacity, and is pinned there atomically so every API replica
//! agrees. Rendezvous hashing keeps placement stable: adding or losing a shard moves only
//! the rooms that must move.
//!
//! A room stays on its shard while that shard is alive, draining or not: a participant who
//! joins (or rejoins) a call during a rolling update lands with the others. It moves only
//! when its shard is gone, either by the registry's reckoning or because the caller found
//! it unreachable ([`Placer::replace`]).

use std::sync::Arc;
use std::time::Duration;

use crate::registry::{RegistryError, ShardInfo, ShardRegistry};

/// How long a fresh pin lives before the shard refreshes it (the time a client has to join).
pub const DEFAULT_PIN_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    #[error("no SFU shard has room for a new call right now")]
    NoCapacity,
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// 64-bit FNV-1a then a splitmix finaliser: stable across processes and releases, which
/// the std hasher does not promise.
fn stable_hash(room: &str, shard: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.bytes().chain([0xff]).chain(shard.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Weighted rendezvous score: `-w / ln(u)` with `u` uniform in (0, 1) from the hash.
fn score(room: &str, shard: &ShardInfo) -> f64 {
    let weight = f64::from(shard.free_participants());
    let u = ((stable_hash(room, &shard.id) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -weight / u.ln()
}

/// The shard a new room should go to, among those that accept new rooms.
pub fn choose_shard<'a>(room: &str, shards: &'a [ShardInfo]) -> Option<&'a ShardInfo> {
    shards
        .iter()
        .filter(|s| s.accepts_new_rooms())
        .max_by(|a, b| score(room, a).total_cmp(&score(room, b)))
}

/// The `n` shards that accept new rooms with the best rendezvous scores for `room`, best
/// first.
pub fn candidates<'a>(room: &str, shards: &'a [ShardInfo], n: usize) -> Vec<&'a ShardInfo> {
    let mut ranked: Vec<(f64, &ShardInfo)> = shards
        .iter()
        .filter(|s| s.accepts_new_rooms())
        .map(|s| (score(room, s), s))
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked.into_iter().take(n).map(|(_, s)| s).collect()
}

/// Of rendezvous candidates (best first) with their pinned-room counts, the one whose
/// rooms fill the least of its room capacity; ties keep the rendezvous order.
///
/// Rendezvous alone spreads rooms like independent coin flips (±8% at 100 rooms a
/// shard); taking the emptier of the two best candidates ("two choices") keeps shards
/// within a few rooms of each other, while each room still has only two possible homes.
pub fn least_filled<'a>(candidates: &[&'a ShardInfo], pinned: &[u32]) -> Option<&'a ShardInfo> {
    let fill = |i: usize| {
        let rooms = f64::from(pinned.get(i).copied().unwrap_or(0));
        rooms / f64::from(candidates[i].capacity.max_rooms.max(1))
    };
    (0..candidates.len())
        .min_by(|&a, &b| fill(a).total_cmp(&fill(b)).then(a.cmp(&b)))
        .map(|i| candidates[i])
}

/// Places rooms through a registry.
#[derive(Clone)]
pub struct Placer {
    registry: Arc<dyn ShardRegistry>,
    pin_ttl: Duration,
}

impl Placer {
    pub fn new(registry: Arc<dyn ShardRegistry>) -> Self {
        Self {
            registry,
            pin_ttl: DEFAULT_PIN_TTL,
        }
    }

    /// How long a fresh pin lives unless its shard refreshes it (tests shorten it).
    pub fn with_pin_ttl(mut self, ttl: Duration) -> Self {
        self.pin_ttl = ttl;
        self
    }

    pub fn registry(&self) -> &Arc<dyn ShardRegistry> {
        &self.registry
    }

    /// A home for a room that has none (or lost it): the less filled of its two best
    /// rendezvous candidates.
    async fn choose_new<'a>(
        &self,
        room: &str,
        shards: &'a [ShardInfo],
    ) -> Result<&'a ShardInfo, PlacementError> {
        let best = candidates(room, shards, 2);
        let pinned = if best.len() > 1 {
            let ids: Vec<String> = best.iter().map(|s| s.id.clone()).collect();
            self.registry.pinned_rooms(&ids).await?
        } else {
            Vec::new()
        };
        least_filled(&best, &pinned).ok_or_else(|| {
            metrics::counter!("surge_placements_total", "outcome" => "no_capacity").increment(1);
            PlacementError::NoCapacity
        })
    }

    /// The shard `room` lives on: its current pin if that shard is alive (draining or
    /// not), otherwise a new choice, pinned atomically (another replica's concurrent pin
    /// wins and is returned).
    pub async fn place(&self, room: &str) -> Result<ShardInfo, PlacementError> {
        // Two independent reads: issued together they cost one round trip on Redis.
        let (shards, pinned) =
            tokio::join!(self.registry.live_shards(), self.registry.room_pin(room));
        let (shards, pinned) = (shards?, pinned?);
        if let Some(id) = &pinned
            && let Some(shard) = shards.iter().find(|s| &s.id == id)
        {
            metrics::counter!("surge_placements_total", "outcome" => "pinned").increment(1);
            return Ok(shard.clone());
        }
        self.pin_new(room, shards, pinned).await
    }

    /// The live shard `room` is pinned to now, if any; places nothing.
    pub async fn current(&self, room: &str) -> Result<Option<ShardInfo>, PlacementError> {
        let (shards, pinned) =
            tokio::join!(self.registry.live_shards(), self.registry.room_pin(room));
        let (shards, pinned) = (shards?, pinned?);
        Ok(pinned.and_then(|id| shards.into_iter().find(|s| s.id == id)))
    }

    /// Moves `room` off `gone`, a shard the caller could not reach (or that no longer
    /// hosts the room and takes no new ones), without waiting for the registry to notice:
    /// a new choice among the other shards, pinned only if the room is still pinned to
    /// `gone` (or not at all), so replicas that saw the same failure agree on one new home.
    pub async fn replace(&self, room: &str, gone: &str) -> Result<ShardInfo, PlacementError> {
        let mut shards = self.registry.live_shards().await?;
        shards.retain(|s| s.id != gone);
        self.pin_new(room, shards, Some(gone.to_owned())).await
    }

    /// Chooses a home for `room` among `shards` and pins it there unless another replica
    /// changed the pin from `pinned` first (then that replica's choice is returned).
    async fn pin_new(
        &self,
        room: &str,
        shards: Vec<ShardInfo>,
        pinned: Option<String>,
    ) -> Result<ShardInfo, PlacementError> {
        let choice = self.choose_new(room, &shards).await?;
        let winner = self
            .registry
            .pin_room(room, &choice.id, pinned.as_deref(), self.pin_ttl)
            .await?;
        let outcome = match (&pinned, winner == choice.id) {
            (_, false) => "lost_race",
            (None, true) => "new",
            (Some(_), true) => "replaced",
        };
        if outcome == "replaced" {
            tracing::info!(
                room,
                from = pinned.as_deref().unwrap_or_default(),
                to = %winner,
                "room re-placed: its shard is gone"
            );
        }
        metrics::counter!("surge_placements_total", "outcome" => outcome).increment(1);
        // The winner may be a shard this replica's snapshot has not seen yet, or one that
        // has just gone; the caller retries on its next join.
        shards
            .into_iter()
            .find(|s| s.id == winner)
            .ok_or(PlacementError::NoCapacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{MemoryRegistry, ShardState};

    fn shard(id: &str, participants: u32) -> ShardInfo {
        let mut shard = ShardInfo::new(id, format!("http://{id}"), "127.0.0.1:5000", 1000, 1000);
        shard.load.participants = participants;
        shard
    }

    #[test]
    fn spreads_evenly_and_is_stable() {
        let shards = vec![shard("a", 0), shard("b", 0), shard("c", 0)];
        let mut counts = std::collections::HashMap::new();
        for i in 0..3000 {
            let room = format!("room-{i}");
            let chosen = choose_shard(&room, &shards).unwrap().id.clone();
            assert_eq!(choose_shard(&room, &shards).unwrap().id, chosen);
            *counts.entry(chosen).or_insert(0) += 1;
        }
        for n in counts.values() {
            assert!((800..=1200).contains(n), "{counts:?}");
        }
    }

    #[test]
    fn losing_a_shard_moves_only_its_rooms() {
        let all = vec![shard("a", 0), shard("b", 0), shard("c", 0)];
        let two = vec![shard("a", 0), shard("b", 0)];
        for i in 0..500 {
            let room = format!("r{i}");
            let before = &choose_shard(&room, &all).unwrap().id;
            if before != "c" {
                assert_eq!(&choose_shard(&room, &two).unwrap().id, before);
            }
        }
    }

    #[test]
    fn full_and_draining_shards_get_nothing() {
        let mut draining = shard("a", 0);
        draining.state = ShardState::Draining;
        let full = shard("b", 1000);
        assert!(choose_shard("r", &[draining.clone(), full.clone()]).is_none());
        assert_eq!(
            choose_shard("r", &[draining, full, shard("c", 999)])
                .unwrap()
                .id,
            "c"
        );
    }

    #[test]
    fn weight_follows_free_capacity() {
        // b has three times a's free slots: it should get about three times the rooms.
        let shards = vec![shard("a", 750), shard("b", 250)];
        let b = (0..4000)
            .filter(|i| choose_shard(&format!("room-{i}"), &shards).unwrap().id == "b")
            .count();
        assert!((2700..=3300).contains(&b), "b got {b} of 4000");
    }

    #[test]
    fn two_choices_prefer_the_emptier_shard() {
        let (a, b) = (shard("a", 0), shard("b", 0));
        assert_eq!(least_filled(&[&a, &b], &[5, 3]).unwrap().id, "b");
        assert_eq!(
            least_filled(&[&a, &b], &[3, 3]).unwrap().id,
            "a",
            "ties keep rank"
        );
        assert_eq!(least_filled(&[&a], &[]).unwrap().id, "a");
        assert!(least_filled(&[], &[]).is_none());
        let mut big = shard("big", 0);
        big.capacity.max_rooms = 4000;
        assert_eq!(least_filled(&[&a, &big], &[100, 300]).unwrap().id, "big");
    }

    proptest::proptest! {
        /// Whatever the shards, the choice accepts new rooms, does not depend on the
        /// order shards are listed in, and survives the loss of any other shard.
        #[test]
        fn choice_is_valid_and_stable(
            room in "[a-z0-9-]{1,24}",
            loads in proptest::collection::vec((0u32..=1000, proptest::bool::ANY), 1..12),
            gone in 0usize..12,
        ) {
            let shards: Vec<ShardInfo> = loads
                .iter()
                .enumerate()
                .map(|(i, (participants, draining))| {
                    let mut s = shard(&format!("s{i}"), *participants);
                    if *draining {
                        s.state = ShardState::Draining;
                    }
                    s
                })
                .collect();
            let chosen = choose_shard(&room, &shards).map(|s| s.id.clone());
            if let Some(id) = &chosen {
                let s = shards.iter().find(|s| &s.id == id).unwrap();
                proptest::prop_assert!(s.accepts_new_rooms());
            } else {
                proptest::prop_assert!(shards.iter().all(|s| !s.accepts_new_rooms()));
            }
            let mut reversed = shards.clone();
            reversed.reverse();
            proptest::prop_assert_eq!(
                choose_shard(&room, &reversed).map(|s| s.id.clone()),
                chosen.clone()
            );
            let gone = gone % shards.len();
            if chosen.as_deref() != Some(shards[gone].id.as_str()) {
                let mut fewer = shards.clone();
                fewer.remove(gone);
                proptest::prop_assert_eq!(
                    choose_shard(&room, &fewer).map(|s| s.id.clone()),
                    chosen
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pins_hold_until_the_shard_dies() {
        let registry = Arc::new(MemoryRegistry::new());
        let ttl = Duration::from_secs(3);
        registry.heartbeat(&shard("a", 0), ttl).await.unwrap();
        registry.heartbeat(&shard("b", 0), ttl).await.unwrap();
        let placer = Placer::new(registry.clone());
        let first = placer.place("room").await.unwrap().id;
        assert_eq!(placer.place("room").await.unwrap().id, first);
        // Only the other shard keeps heartbeating.
        let other = if first == "a" { "b" } else { "a" };
        tokio::time::advance(Duration::from_secs(2)).await;
        registry.heartbeat(&shard(other, 0), ttl).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(placer.place("room").await.unwrap().id, other);
    }

    #[tokio::test(start_paused = true)]
    async fn a_draining_shard_keeps_its_rooms_and_gets_no_new_ones() {
        let registry = Arc::new(MemoryRegistry::new());
        let ttl = Duration::from_secs(60);
        registry.heartbeat(&shard("a", 0), ttl).await.unwrap();
        registry.heartbeat(&shard("b", 0), ttl).await.unwrap();
        let placer = Placer::new(registry.clone());
        let home = placer.place("meeting").await.unwrap().id;
        assert!(registry.request_drain(&home).await.unwrap());
        assert_eq!(
            placer.place("meeting").await.unwrap().id,
            home,
            "a rejoin during the drain lands with the others"
        );
        for i in 0..20 {
            let id = placer.place(&format!("new-{i}")).await.unwrap().id;
            assert_ne!(id, home, "a draining shard takes no new room");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_shard_loses_its_room_at_once_and_replicas_agree() {
        let registry = Arc::new(MemoryRegistry::new());
        let ttl = Duration::from_secs(60);
        for id in ["a", "b", "c"] {
            registry.heartbeat(&shard(id, 0), ttl).await.unwrap();
        }
        let (one, two) = (Placer::new(registry.clone()), Placer::new(registry.clone()));
        let dead = one.place("room").await.unwrap().id;
        // Both replicas find the shard unreachable while the registry still lists it.
        let first = one.replace("room", &dead).await.unwrap().id;
        let second = two.replace("room", &dead).await.unwrap().id;
        assert_ne!(first, dead);
        assert_eq!(
            first, second,
            "the second replica adopts the first one's choice"
        );
        assert_eq!(two.place("room").await.unwrap().id, first);
        // The moved room stays where it went, even if the old shard turns up again.
        let again = one.replace("room", &dead).await.unwrap().id;
        assert_eq!(again, first);
    }
}
