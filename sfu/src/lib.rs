//! The Surge SFU shard.
//!
//! The facade the `surge` binary uses: [`SfuConfig`] (flags), [`Shard::start`],
//! [`Shard::router`], [`Shard::ready_gate`], draining and [`Shard::stop`]. The headless test
//! and load participant is its own crate, `surge-participant`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use surge_cluster::health::Gate;
use surge_cluster::{ShardRegistry, TokenVerifier};

mod commands;
mod metrics_names;
mod occupancy;
mod shard;
mod shared;
mod signalling;
mod worker;

/// ICE-TCP's RFC 4571 framing, shared with the headless participant.
use surge_sfu_proto::framing;
/// The room core and session set-up live in the sans-IO crate; re-exported for the benches.
pub use surge_sfu_proto::{core, session};

pub use shard::Shard;
pub use shared::ShardStatus;

/// The shard's flags (each with a `SURGE_…` environment fallback).
#[derive(Debug, Clone, clap::Args)]
pub struct SfuConfig {
    /// This shard's id, unique in the cluster (a StatefulSet pod name is a good one).
    #[arg(long, env = "SURGE_SHARD_ID", default_value = "local")]
    pub shard_id: String,

    /// Base URL at which the API replicas reach this shard's HTTP listener (signalling is
    /// cluster-internal: clients talk only to the API, which relays). In Kubernetes, the
    /// pod's DNS name through the shards' headless Service. Default: the address the
    /// listener bound (loopback when it bound every interface).
    #[arg(long, env = "SURGE_SIGNAL_URL")]
    pub signal_url: Option<String>,

    /// Address the media (UDP) sockets bind to.
    #[arg(long, env = "SURGE_MEDIA_BIND", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub media_bind: IpAddr,

    /// First UDP port; worker k binds port+k. 0 picks ephemeral ports.
    #[arg(long, env = "SURGE_MEDIA_PORT", default_value_t = 0)]
    pub media_port: u16,

    /// Listen for ICE-TCP (RFC 6544, passive) beside UDP, for clients whose networks block
    /// UDP: each worker's SDP answer then carries a TCP host candidate too.
    #[arg(long, env = "SURGE_MEDIA_TCP", default_value_t = true, action = clap::ArgAction::Set)]
    pub media_tcp: bool,

    /// First ICE-TCP port; worker k binds port+k. Default: the same port number as the
    /// worker's UDP socket (an ephemeral one when that is taken and --media-port is 0).
    #[arg(long, env = "SURGE_MEDIA_TCP_PORT")]
    pub media_tcp_port: Option<u16>,

    /// ICE-TCP connections per worker at most; more are closed at accept.
    #[arg(
        long,
        env = "SURGE_MAX_TCP_CONNECTIONS",
        default_value_t = 1000,
        hide = true
    )]
    pub max_tcp_connections: usize,

    /// The IP clients reach the media ports at (the ICE candidate); default: --media-bind.
    #[arg(long, env = "SURGE_PUBLIC_IP")]
    pub public_ip: Option<IpAddr>,

    /// Worker threads, each with its own UDP socket and rooms (default: the number of cores).
    #[arg(long, env = "SURGE_WORKERS")]
    pub workers: Option<usize>,

    /// Rooms this shard hosts at most; past it a join for a new room gets `503 shard_full`.
    #[arg(long, env = "SURGE_MAX_ROOMS", default_value_t = 1000)]
    pub max_rooms: u32,

    /// Participants this shard hosts at most; past it a join gets `503 shard_full`.
    #[arg(long, env = "SURGE_MAX_PARTICIPANTS", default_value_t = 5000)]
    pub max_participants: u32,

    /// Participants per room at most; past it a join gets `409 room_full`.
    #[arg(long, env = "SURGE_MAX_ROOM_PARTICIPANTS", default_value_t = 50)]
    pub max_room_participants: u32,

    /// How long a draining shard keeps its calls before it ends them and exits.
    #[arg(long, env = "SURGE_DRAIN_DEADLINE_SECS", default_value_t = 600)]
    pub drain_deadline_secs: u64,

    /// A participant whose media and ICE go silent this long is removed.
    #[arg(long, env = "SURGE_PARTICIPANT_TIMEOUT_SECS", default_value_t = 15)]
    pub participant_timeout_secs: u64,
}

impl SfuConfig {
    /// Defaults for a shard started in-process (tests, benches): ephemeral ports on
    /// 127.0.0.1, two workers.
    pub fn for_tests(shard_id: &str) -> Self {
        Self {
            shard_id: shard_id.to_owned(),
            signal_url: None,
            media_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            media_port: 0,
            media_tcp: true,
            media_tcp_port: None,
            max_tcp_connections: 1000,
            public_ip: None,
            workers: Some(2),
            max_rooms: 1000,
            max_participants: 5000,
            max_room_participants: 50,
            drain_deadline_secs: 600,
            participant_timeout_secs: 15,
        }
    }

    pub(crate) fn worker_count(&self) -> usize {
        self.workers
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1)
    }

    pub(crate) fn participant_timeout(&self) -> Duration {
        Duration::from_secs(self.participant_timeout_secs.max(1))
    }
}

/// What the binary hands the shard besides its flags.
pub struct ShardDeps {
    /// Where the shard heartbeats its load and refreshes its room pins.
    pub registry: Arc<dyn ShardRegistry>,
    /// Verifies join tokens: the public key only (the API holds the private one).
    pub token_key: TokenVerifier,
    /// Bearer token for `POST /v1/sfu/drain`; the endpoint is disabled without it.
    pub admin_token: Option<String>,
    /// The internal signalling base URL to advertise when `--signal-url` is not given.
    pub default_signal_url: String,
}

/// Why a shard could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A worker's UDP socket could not be bound.
    #[error("cannot bind the media socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A worker thread could not be spawned.
    #[error("cannot start a worker thread: {0}")]
    Thread(std::io::Error),
}

impl Shard {
    /// The router with the signalling routes (`/v1/sfu/...`); merge it into a listener.
    pub fn router(&self) -> Router {
        signalling::router(self.shared())
    }

    /// Readiness: the workers run and the shard is not draining.
    pub fn ready_gate(&self) -> Gate {
        shard::ready_gate(self.shared())
    }
}
