//! The shard registry: which SFU shards are alive, how loaded they are, whether they are
//! draining, and which shard each room is pinned to. One trait, two backends: memory for a
//! single node, Redis for a cluster ([`crate::registry_redis::RedisRegistry`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Registry entries carry this; a reader skips entries of another version.
pub const SCHEMA_VERSION: u32 = 1;

/// A shard whose heartbeats stop for this long is gone.
pub const DEFAULT_SHARD_TTL: Duration = Duration::from_secs(3);

/// How often a shard heartbeats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Whether a shard takes new rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardState {
    Active,
    /// Keeps its calls, takes no new rooms, exits when empty or at its deadline.
    Draining,
}

/// What a shard can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCapacity {
    pub max_rooms: u32,
    pub max_participants: u32,
}

/// What a shard carries now.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ShardLoad {
    pub rooms: u32,
    pub participants: u32,
    pub egress_bps: u64,
    /// Busy share of the shard's worker threads, 0.0..=1.0.
    pub cpu: f32,
}

/// One shard as the registry knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub version: u32,
    pub id: String,
    /// Base URL of the shard's internal HTTP listener, where the API relays joins and
    /// leaves (never handed to clients).
    pub signal_url: String,
    /// Public media address (ip:port of its first worker).
    pub media_addr: String,
    pub capacity: ShardCapacity,
    pub load: ShardLoad,
    pub state: ShardState,
}

impl ShardInfo {
    /// A shard as it announces itself on start: active, nothing placed on it yet.
    pub fn new(
        id: impl Into<String>,
        signal_url: impl Into<String>,
        media_addr: impl Into<String>,
        max_rooms: u32,
        max_participants: u32,
    ) -> Self {
        Self {
            version: SCHEMA_VERSION,
            id: id.into(),
            signal_url: signal_url.into(),
            media_addr: media_addr.into(),
            capacity: ShardCapacity {
                max_rooms,
                max_participants,
            },
            load: ShardLoad::default(),
            state: ShardState::Active,
        }
    }

    /// Free participant slots, the weight placement uses.
    pub fn free_participants(&self) -> u32 {
        self.capacity
            .max_participants
            .saturating_sub(self.load.participants)
    }

    /// Takes new rooms: active, below its room limit and with participant headroom.
    pub fn accepts_new_rooms(&self) -> bool {
        self.state == ShardState::Active
            && self.load.rooms < self.capacity.max_rooms
            && self.free_participants() > 0
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("the registry backend is unreachable: {0}")]
    Unavailable(String),
    #[error("the registry entry is invalid: {0}")]
    Invalid(String),
}

/// The shared view of shards and room pins.
#[async_trait]
pub trait ShardRegistry: Send + Sync + 'static {
    /// Registers or refreshes `info`; it stays live for `ttl` unless refreshed. Returns
    /// whether an operator asked this shard to drain (so the shard can start draining).
    async fn heartbeat(&self, info: &ShardInfo, ttl: Duration) -> Result<bool, RegistryError>;

    /// Removes a shard at once (clean exit).
    async fn deregister(&self, id: &str) -> Result<(), RegistryError>;

    /// Every live shard; entries that do not parse are skipped and logged.
    async fn live_shards(&self) -> Result<Vec<ShardInfo>, RegistryError>;

    /// Asks a shard to drain; it learns it on its next heartbeat. False if it is unknown.
    async fn request_drain(&self, id: &str) -> Result<bool, RegistryError>;

    /// The shard `room` is pinned to, if any.
    async fn room_pin(&self, room: &str) -> Result<Option<String>, RegistryError>;

    /// Atomically pins `room` to `shard` if it is unpinned or pinned to `replace`
    /// (a shard found dead or draining); returns the pin that holds afterwards, which is
    /// another replica's choice when it won the race.
    async fn pin_room(
        &self,
        room: &str,
        shard: &str,
        replace: Option<&str>,
        ttl: Duration,
    ) -> Result<String, RegistryError>;

    /// Keeps the pins of a shard's occupied rooms alive; empty rooms' pins then expire.
    async fn refresh_pins(
        &self,
        shard: &str,
        rooms: &[String],
        ttl: Duration,
    ) -> Result<(), RegistryError>;

    /// How many live pins name each of `shards` (in the same order): the rooms placed on a
    /// shard, occupied or about to be. Placement uses it to even out new rooms; a backend
    /// that cannot tell reports zeros (placement then falls back to pure rendezvous).
    async fn pinned_rooms(&self, shards: &[String]) -> Result<Vec<u32>, RegistryError> {
        Ok(vec![0; shards.len()])
    }
}

struct Entry<T> {
    value: T,
    expires: Instant,
}

#[derive(Default)]
struct MemoryState {
    shards: HashMap<String, Entry<ShardInfo>>,
    drain_requests: HashMap<String, Instant>,
    pins: Pins,
}

/// Room pins with their expiry order and per-shard counts, so expired pins are dropped
/// (a long-running single node does not accumulate every room it ever saw) and counts
/// cost no scan.
#[derive(Default)]
struct Pins {
    by_room: HashMap<String, Entry<String>>,
    by_expiry: BTreeSet<(Instant, String)>,
    per_shard: HashMap<String, u32>,
}

impl Pins {
    /// Drops every pin expired at `now`.
    fn expire(&mut self, now: Instant) {
        while let Some((expires, room)) = self.by_expiry.first().cloned() {
            if expires > now {
                break;
            }
            self.by_expiry.pop_first();
            if let Some(entry) = self.by_room.remove(&room) {
                self.uncount(&entry.value);
            }
        }
    }

    fn uncount(&mut self, shard: &str) {
        if let Some(n) = self.per_shard.get_mut(shard) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_shard.remove(shard);
            }
        }
    }

    fn get(&self, room: &str) -> Option<&String> {
        self.by_room.get(room).map(|e| &e.value)
    }

    fn set(&mut self, room: &str, shard: &str, expires: Instant) {
        if let Some(old) = self.by_room.remove(room) {
            self.by_expiry.remove(&(old.expires, room.to_owned()));
            self.uncount(&old.value);
        }
        self.by_expiry.insert((expires, room.to_owned()));
        *self.per_shard.entry(shard.to_owned()).or_default() += 1;
        self.by_room.insert(
            room.to_owned(),
            Entry {
                value: shard.to_owned(),
                expires,
            },
        );
    }

    fn extend(&mut self, room: &str, shard: &str, expires: Instant) {
        if let Some(entry) = self.by_room.get_mut(room)
            && entry.value == shard
            && entry.expires < expires
        {
            self.by_expiry.remove(&(entry.expires, room.to_owned()));
            self.by_expiry.insert((expires, room.to_owned()));
            entry.expires = expires;
        }
    }
}

/// The single-node registry: the same contract in one process, on tokio's clock so tests
/// can pause time.
#[derive(Default)]
pub struct MemoryRegistry {
    state: Mutex<MemoryState>,
}

impl MemoryRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panic while holding this lock leaves plain maps behind, still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl ShardRegistry for MemoryRegistry {
    async fn heartbeat(&self, info: &ShardInfo, ttl: Duration) -> Result<bool, RegistryError> {
        let now = Instant::now();
        let mut state = self.lock();
        let alive = state.shards.get(&info.id).is_some_and(|e| e.expires > now);
        if !alive {
            // A new incarnation of the shard: its predecessor's drain request is void.
            state.drain_requests.remove(&info.id);
        }
        state.shards.insert(
            info.id.clone(),
            Entry {
                value: info.clone(),
                expires: now + ttl,
            },
        );
        Ok(state.drain_requests.contains_key(&info.id))
    }

    async fn deregister(&self, id: &str) -> Result<(), RegistryError> {
        let mut state = self.lock();
        state.shards.remove(id);
        state.drain_requests.remove(id);
        Ok(())
    }

    async fn live_shards(&self) -> Result<Vec<ShardInfo>, RegistryError> {
        let now = Instant::now();
        let mut state = self.lock();
        let MemoryState {
            shards,
            drain_requests,
            ..
        } = &mut *state;
        shards.retain(|id, e| {
            let alive = e.expires > now;
            if !alive {
                drain_requests.remove(id);
            }
            alive
        });
        let mut shards: Vec<ShardInfo> = shards
            .values()
            .filter(|e| {
                // The same rule as the Redis backend, so both pass one behavioural suite.
                let current = e.value.version == SCHEMA_VERSION;
                if !current {
                    metrics::counter!("surge_registry_entries_skipped_total").increment(1);
                    tracing::debug!(
                        shard = %e.value.id,
                        version = e.value.version,
                        "skipping a shard entry of another schema version"
                    );
                }
                current
            })
            .map(|e| e.value.clone())
            .collect();
        for shard in &mut shards {
            if state.drain_requests.contains_key(&shard.id) {
                shard.state = ShardState::Draining;
            }
        }
        shards.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(shards)
    }

    async fn request_drain(&self, id: &str) -> Result<bool, RegistryError> {
        let now = Instant::now();
        let mut state = self.lock();
        let known = state.shards.get(id).is_some_and(|e| e.expires > now);
        if known {
            state.drain_requests.insert(id.to_owned(), now);
        }
        Ok(known)
    }

    async fn room_pin(&self, room: &str) -> Result<Option<String>, RegistryError> {
        let mut state = self.lock();
        state.pins.expire(Instant::now());
        Ok(state.pins.get(room).cloned())
    }

    async fn pin_room(
        &self,
        room: &str,
        shard: &str,
        replace: Option<&str>,
        ttl: Duration,
    ) -> Result<String, RegistryError> {
        let now = Instant::now();
        let mut state = self.lock();
        state.pins.expire(now);
        match state.pins.get(room) {
            Some(pinned) if Some(pinned.as_str()) != replace => Ok(pinned.clone()),
            _ => {
                state.pins.set(room, shard, now + ttl);
                Ok(shard.to_owned())
            }
        }
    }

    async fn refresh_pins(
        &self,
        shard: &str,
        rooms: &[String],
        ttl: Duration,
    ) -> Result<(), RegistryError> {
        let now = Instant::now();
        let mut state = self.lock();
        state.pins.expire(now);
        for room in rooms {
            state.pins.extend(room, shard, now + ttl);
        }
        Ok(())
    }

    async fn pinned_rooms(&self, shards: &[String]) -> Result<Vec<u32>, RegistryError> {
        let mut state = self.lock();
        state.pins.expire(Instant::now());
        Ok(shards
            .iter()
            .map(|id| state.pins.per_shard.get(id).copied().unwrap_or(0))
            .collect())
    }
}

/// The registry the flags select: Redis when a URL is given (keys under `prefix`),
/// otherwise this process's memory.
pub async fn connect(
    redis_url: Option<&str>,
    prefix: &str,
) -> Result<std::sync::Arc<dyn ShardRegistry>, RegistryError> {
    match redis_url {
        None => Ok(std::sync::Arc::new(MemoryRegistry::new())),
        Some(url) => Ok(std::sync::Arc::new(
            crate::registry_redis::RedisRegistry::connect(url, prefix).await?,
        )),
    }
}

/// A stable 64-bit fingerprint of raw bytes (FNV-1a), to recognise an entry already
/// reported as unreadable.
pub(crate) fn fingerprint(raw: &[u8]) -> u64 {
    raw.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The registry as a dependency: it answers.
pub struct RegistryDependency(pub std::sync::Arc<dyn ShardRegistry>);

#[async_trait]
impl crate::health::Dependency for RegistryDependency {
    fn name(&self) -> &'static str {
        "registry"
    }

    async fn check(&self) -> Result<(), String> {
        self.0
            .live_shards()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
