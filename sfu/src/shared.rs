//! What the HTTP handlers, the heartbeat and the workers share: limits, load counters, the
//! rooms hosted (for pins and the drain rule), draining.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use surge_cluster::TokenVerifier;
use surge_cluster::registry::{ShardCapacity, ShardState};
use surge_cluster::token::ReplayGuard;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::commands::WorkerHandle;

/// Limits a join is checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_rooms: u32,
    pub max_participants: u32,
    pub max_room_participants: u32,
}

/// What the HTTP handlers, the heartbeat and the workers share. Workers touch only the
/// atomics, and the room set when a room opens or closes (never per packet).
pub(crate) struct Shared {
    pub shard_id: String,
    pub signal_url: String,
    pub token_key: TokenVerifier,
    /// The ids of the join tokens used here, until they expire: each opens one join.
    pub used_tokens: ReplayGuard,
    pub admin_token: Option<String>,
    pub limits: Limits,
    pub participant_timeout: Duration,
    pub drain_deadline: Duration,
    pub workers: Vec<WorkerHandle>,
    pub rooms: AtomicU32,
    pub participants: AtomicU32,
    pub egress_bps: AtomicU64,
    /// RTP packets forwarded / received since start (flushed by workers once a second).
    pub packets_out_total: AtomicU64,
    pub packets_in_total: AtomicU64,
    /// Nanoseconds the workers spent busy (not waiting for packets), for the load figure.
    pub busy_nanos: AtomicU64,
    pub occupied_rooms: Mutex<BTreeSet<String>>,
    pub draining: AtomicBool,
    pub drain_started: Mutex<Option<Instant>>,
    pub drain_token: CancellationToken,
    pub stopped: AtomicBool,
    /// Cancelled when a worker thread fails (see `worker::run`).
    pub worker_failed: CancellationToken,
}

impl Shared {
    /// The worker that hosts `room`: a stable hash, so every join for a room lands on the
    /// same thread.
    pub fn worker_for(&self, room: &str) -> &WorkerHandle {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        room.hash(&mut hasher);
        let index = (hasher.finish() % self.workers.len() as u64) as usize;
        &self.workers[index]
    }

    /// Takes one shard-wide participant slot, or `false` when the shard is full.
    pub fn reserve_participant(&self) -> bool {
        self.participants
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limits.max_participants).then_some(n + 1)
            })
            .is_ok()
    }

    pub fn release_participant(&self) {
        let _ = self
            .participants
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Takes one room slot, or `false` when the shard hosts `max_rooms` already.
    pub fn reserve_room(&self, room: &str) -> bool {
        let ok = self
            .rooms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limits.max_rooms).then_some(n + 1)
            })
            .is_ok();
        if ok && let Ok(mut rooms) = self.occupied_rooms.lock() {
            rooms.insert(room.to_owned());
        }
        ok
    }

    /// Whether a participant is in `room` on this shard now.
    pub fn hosts(&self, room: &str) -> bool {
        self.occupied_rooms
            .lock()
            .map(|rooms| rooms.contains(room))
            .unwrap_or(false)
    }

    pub fn release_room(&self, room: &str) {
        let _ = self
            .rooms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if let Ok(mut rooms) = self.occupied_rooms.lock() {
            rooms.remove(room);
        }
    }

    /// Adjusts the shard's summed egress estimate by `delta` bits/s.
    pub fn add_egress(&self, delta: i64) {
        let _ = self
            .egress_bps
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add_signed(delta))
            });
    }

    pub fn begin_drain(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            tracing::info!(deadline = ?self.drain_deadline, "draining: no new rooms; hosted rooms stay open");
            if let Ok(mut started) = self.drain_started.lock() {
                *started = Some(Instant::now());
            }
            self.drain_token.cancel();
        }
    }

    pub fn drain_deadline_at(&self) -> Option<Instant> {
        self.drain_started
            .lock()
            .ok()
            .and_then(|s| *s)
            .map(|s| s + self.drain_deadline)
    }

    pub fn state(&self) -> ShardState {
        if self.draining.load(Ordering::Acquire) {
            ShardState::Draining
        } else {
            ShardState::Active
        }
    }

    pub fn status(&self) -> ShardStatus {
        ShardStatus {
            shard_id: self.shard_id.clone(),
            state: self.state(),
            rooms: self.rooms.load(Ordering::Acquire),
            participants: self.participants.load(Ordering::Acquire),
            egress_bps: self.egress_bps.load(Ordering::Acquire),
            workers: self.workers.len(),
            media_addrs: self
                .workers
                .iter()
                .map(|w| w.public_addr.to_string())
                .collect(),
            capacity: self.capacity(),
            forwarded_packets: self.packets_out_total.load(Ordering::Relaxed),
            received_packets: self.packets_in_total.load(Ordering::Relaxed),
            busy_seconds: self.busy_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }

    fn capacity(&self) -> ShardCapacity {
        ShardCapacity {
            max_rooms: self.limits.max_rooms,
            max_participants: self.limits.max_participants,
        }
    }
}

/// The load and state a shard reports on `GET /v1/sfu/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ShardStatus {
    /// The shard's id.
    pub shard_id: String,
    /// Active or draining.
    pub state: ShardState,
    /// Rooms hosted now.
    pub rooms: u32,
    /// Participants connected now.
    pub participants: u32,
    /// Sum of the subscribers' egress estimates, bits/s.
    pub egress_bps: u64,
    /// Worker threads.
    pub workers: usize,
    /// Public media address of each worker.
    pub media_addrs: Vec<String>,
    /// Limits.
    pub capacity: ShardCapacity,
    /// RTP packets forwarded to subscribers since start (updated once a second).
    pub forwarded_packets: u64,
    /// RTP packets received from publishers since start (updated once a second).
    pub received_packets: u64,
    /// CPU time the worker threads spent busy since start, seconds.
    pub busy_seconds: f64,
}
