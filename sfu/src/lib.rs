//! The Surge SFU shard.
//!
//! The facade the `surge` binary uses: [`SfuConfig`] (flags), [`Shard::start`],
//! [`Shard::router`], [`Shard::probes`], draining and [`Shard::stop`].

pub mod core;

use std::sync::Arc;

use axum::Router;
use surge_cluster::http::Probe;
use surge_cluster::{ShardRegistry, TokenKey};

/// The shard's flags (each with a `SURGE_…` environment fallback).
#[derive(Debug, Clone, clap::Args)]
pub struct SfuConfig {
    /// This shard's id, unique in the cluster (a StatefulSet pod name is a good one).
    #[arg(long, env = "SURGE_SHARD_ID", default_value = "local")]
    pub shard_id: String,
}

/// What the binary hands the shard besides its flags.
pub struct ShardDeps {
    pub registry: Arc<dyn ShardRegistry>,
    pub token_key: TokenKey,
    pub admin_token: Option<String>,
    /// The signalling base URL to advertise when `--signal-url` is not given.
    pub default_signal_url: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("cannot bind the media socket {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// A running shard; clones share it.
#[derive(Clone)]
pub struct Shard {
    router: Router,
}

impl Shard {
    pub async fn start(_config: &SfuConfig, _deps: ShardDeps) -> Result<Self, StartError> {
        Ok(Self {
            router: Router::new(),
        })
    }

    pub fn router(&self) -> Router {
        self.router.clone()
    }

    pub fn probes(&self) -> Vec<Arc<dyn Probe>> {
        Vec::new()
    }

    /// Stops taking new joins; calls continue.
    pub fn begin_drain(&self) {}

    /// Resolves when an operator asks this shard to drain (admin endpoint or registry).
    pub async fn drain_requested(&self) {
        std::future::pending::<()>().await
    }

    /// Resolves when a draining shard is empty or its deadline has passed.
    pub async fn drained(&self) {}

    /// Ends every call and stops the workers.
    pub async fn stop(self) {}
}
