//! What the HTTP side and the worker threads exchange: requests on a channel, answered on
//! one-shot replies, and a waker that interrupts the worker's socket wait. Depends on neither
//! side, so that neither depends on the other.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;

use str0m::change::{SdpAnswer, SdpOffer};
use surge_cluster::token::JoinClaims;
use surge_sfu_proto::{JoinRefusal, RestartRefusal};

/// A request to join a room, answered on `reply`.
pub(crate) struct JoinRequest {
    pub room: String,
    pub participant: u64,
    pub claims: JoinClaims,
    pub offer: SdpOffer,
    pub reply: tokio::sync::oneshot::Sender<Result<SdpAnswer, JoinRefusal>>,
}

/// A request to leave (or, as `Command::Lookup`, only to know whether the participant is
/// here), answered with whether the user's participant exists in the room.
pub(crate) struct LeaveRequest {
    pub room: String,
    pub participant: u64,
    pub user: String,
    pub reply: tokio::sync::oneshot::Sender<bool>,
}

/// An ICE restart of the user's participant in a room, answered on `reply`.
pub(crate) struct RestartRequest {
    pub room: String,
    pub participant: u64,
    pub user: String,
    pub offer: SdpOffer,
    pub reply: tokio::sync::oneshot::Sender<Result<SdpAnswer, RestartRefusal>>,
}

pub(crate) enum Command {
    Join(Box<JoinRequest>),
    Restart(Box<RestartRequest>),
    Leave(LeaveRequest),
    Lookup(LeaveRequest),
    Stop,
    /// Panics the worker, for the tests of what a failed worker does (sent only by
    /// `Shard::inject_worker_panic`).
    InjectPanic,
}

/// How the HTTP side reaches a worker.
pub(crate) struct WorkerHandle {
    pub public_addr: SocketAddr,
    /// Its ICE-TCP listener's public address, when it has one.
    pub public_tcp_addr: Option<SocketAddr>,
    pub commands: Sender<Command>,
    pub waker: Waker,
    /// The worker thread panicked: its rooms are gone and it takes no more commands.
    pub failed: Arc<AtomicBool>,
}

impl WorkerHandle {
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

/// Wakes a worker blocked in its socket wait; the HTTP side holds it.
pub(crate) struct Waker(pub(crate) mio::Waker);

impl Waker {
    /// Best effort: a failed wake means the worker is awake anyway or stopping.
    pub fn wake(&self) {
        let _ = self.0.wake();
    }
}
