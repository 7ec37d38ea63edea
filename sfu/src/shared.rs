//! What the HTTP handlers and the heartbeat need: the shard's identity, the join-token
//! check, the workers' handles and the drain. The workers see only the [`Occupancy`] and their
//! own [`WorkerContext`](crate::worker::WorkerContext).

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use surge_cluster::TokenVerifier;
use surge_cluster::registry::{ShardCapacity, ShardState};
use surge_cluster::token::ReplayGuard;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::commands::WorkerHandle;
use crate::occupancy::Occupancy;

pub(crate) struct Shared {
    pub shard_id: String,
    pub signal_url: String,
    pub token_key: TokenVerifier,
    /// The ids of the join tokens used here, until they expire: each opens one join.
    pub used_tokens: ReplayGuard,
    pub admin_token: Option<String>,
    pub occupancy: Arc<Occupancy>,
    pub drain_deadline: Duration,
    pub workers: Vec<WorkerHandle>,
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

    pub fn begin_drain(&self) {
        if self.occupancy.start_draining() {
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
        if self.occupancy.is_draining() {
            ShardState::Draining
        } else {
            ShardState::Active
        }
    }

    pub fn status(&self) -> ShardStatus {
        let o = &self.occupancy;
        ShardStatus {
            shard_id: self.shard_id.clone(),
            state: self.state(),
            rooms: o.rooms.load(Ordering::Acquire),
            participants: o.participants.load(Ordering::Acquire),
            egress_bps: o.egress_bps.load(Ordering::Acquire),
            workers: self.workers.len(),
            media_addrs: self
                .workers
                .iter()
                .map(|w| w.public_addr.to_string())
                .collect(),
            capacity: ShardCapacity {
                max_rooms: o.limits.max_rooms,
                max_participants: o.limits.max_participants,
            },
            forwarded_packets: o.packets_out_total.load(Ordering::Relaxed),
            received_packets: o.packets_in_total.load(Ordering::Relaxed),
            busy_seconds: o.busy_nanos.load(Ordering::Relaxed) as f64 / 1e9,
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
