//! Surge's signup, login, presence and rooms API.
//!
//! The facade the `surge` binary uses: [`ApiConfig`] (flags), [`Api::start`],
//! [`Api::router`], [`Api::probes`], [`Api::stop`] and [`migrate`].

use std::sync::Arc;

use axum::Router;
use surge_cluster::http::Probe;
use surge_cluster::{ShardRegistry, TokenKey};
use tokio_util::sync::CancellationToken;

/// The embedded default: a SQLite file under `./data/`, created on first run.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/surge.db";

/// The API's flags (each with a `SURGE_…` environment fallback).
#[derive(Debug, Clone, clap::Args)]
pub struct ApiConfig {
    /// Accounts database: sqlite://PATH (embedded) or postgres://… (cluster).
    #[arg(long, env = "SURGE_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

/// What the binary hands the API besides its flags.
pub struct ApiDeps {
    pub registry: Arc<dyn ShardRegistry>,
    pub token_key: TokenKey,
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    pub admin_token: Option<String>,
    /// Cancelled on shutdown; long-lived responses (SSE) end when it fires.
    pub shutdown: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("database {url}: {source}")]
    Database { url: String, source: sqlx::Error },
}

/// A running API.
pub struct Api {
    router: Router,
}

impl Api {
    pub async fn start(_config: &ApiConfig, _deps: ApiDeps) -> Result<Self, StartError> {
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

    pub async fn stop(self) {}
}

/// Applies the migrations to `database_url` and returns.
pub async fn migrate(_database_url: &str) -> Result<(), StartError> {
    Ok(())
}
