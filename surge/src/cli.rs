//! Command-line flags; every flag has a `SURGE_…` environment variable fallback.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
use surge_cluster::listener::ListenerConfig;
use surge_cluster::telemetry::LogFormat;
use surge_sfu::SfuConfig;
use surge_signup_api::ApiConfig;

#[derive(Debug, Parser)]
#[command(
    name = "surge",
    version,
    about = "Surge: a sharded video-conferencing SFU and a signup API that absorbs a flood"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "SURGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process on embedded defaults: the API, the web client and one SFU
    /// shard, with SQLite and in-memory registry, presence and limits (or Redis/PostgreSQL
    /// when their URLs are given).
    Up(UpArgs),
    /// The signup/presence API alone, for a cluster.
    Api(ApiArgs),
    /// One SFU shard alone, for a cluster; SIGTERM drains it.
    Sfu(SfuArgs),
    /// Apply database migrations and exit.
    Migrate(MigrateArgs),
    /// Ask the SFU shard on this host to start draining (a Kubernetes preStop hook).
    Drain(DrainArgs),
}

/// Flags every serving command shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Where the HTTP listener binds.
    #[arg(long, env = "SURGE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Redis URL (e.g. redis://127.0.0.1:6379/), or a Redis Cluster as
    /// redis+cluster://host:port,host:port/ (seed nodes). Without it, limits, presence and
    /// the shard registry live in this process's memory.
    #[arg(long, env = "SURGE_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix for every Redis key, so several deployments (or tests) can share one Redis.
    #[arg(long, env = "SURGE_REDIS_PREFIX", default_value = "surge:")]
    pub redis_prefix: String,

    /// The Ed25519 private key (PEM, PKCS#8: `openssl genpkey -algorithm ed25519`) with
    /// which the API signs join tokens. A shard refuses to start with it. `surge up`
    /// generates an ephemeral keypair when it is not given.
    #[arg(
        long,
        env = "SURGE_JOIN_TOKEN_PRIVATE_KEY",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub join_token_private_key: Option<String>,

    /// The public half (PEM: `PUBLIC KEY` from `openssl pkey -pubout`, or a `CERTIFICATE`
    /// holding it) with which a shard verifies join tokens; required by `surge sfu`.
    #[arg(long, env = "SURGE_JOIN_TOKEN_PUBLIC_KEY", allow_hyphen_values = true)]
    pub join_token_public_key: Option<String>,

    /// Bearer token for the admin endpoints; they are disabled without it.
    #[arg(long, env = "SURGE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// A second listener for operators: `/metrics` and `/v1/sfu/status` (plus the probes)
    /// are served there only. Without it those two need the admin token.
    #[arg(long, env = "SURGE_OPS_LISTEN")]
    pub ops_listen: Option<SocketAddr>,

    /// Connection and time limits of the HTTP listeners.
    #[command(flatten)]
    pub listener: ListenerConfig,

    /// Seconds in-flight HTTP requests get to finish after a shutdown signal.
    #[arg(long, env = "SURGE_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub api: ApiConfig,
    #[command(flatten)]
    pub sfu: SfuConfig,
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub api: ApiConfig,
}

#[derive(Debug, Args)]
pub struct SfuArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub sfu: SfuConfig,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Database to migrate (sqlite://PATH or postgres://…).
    #[arg(long, env = "SURGE_DATABASE_URL", default_value = surge_signup_api::DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The shard's HTTP listener.
    #[arg(long, env = "SURGE_DRAIN_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Admin token of the shard.
    #[arg(long, env = "SURGE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn up_has_working_defaults() {
        let cli = Cli::try_parse_from(["surge", "up"]).unwrap();
        let Command::Up(up) = cli.command else {
            panic!("not up")
        };
        assert_eq!(up.common.listen.to_string(), "127.0.0.1:8080");
        assert!(up.common.redis_url.is_none());
        assert!(up.api.database_url.starts_with("sqlite:"));
    }

    #[test]
    fn bad_values_are_refused_with_a_message() {
        for args in [
            vec!["surge", "up", "--listen", "not-an-address"],
            vec!["surge", "up", "--shutdown-grace-secs", "-1"],
            vec!["surge", "frobnicate"],
        ] {
            let err = Cli::try_parse_from(&args).unwrap_err();
            assert!(!err.to_string().is_empty(), "{args:?}");
        }
    }
}
