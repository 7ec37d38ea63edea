//! Surge's signup, login, presence and rooms API.
//!
//! The facade the `surge` binary uses: [`ApiConfig`] (flags), [`Api::start`],
//! [`Api::router`], [`Api::dependencies`], [`Api::stop`] and [`migrate`]. Inside: a
//! [`store::Store`] (PostgreSQL or SQLite), an Argon2id [`hashing::HashPool`], rate
//! [`limits::Limits`] (governor + Redis), [`presence::Presence`] (memory or Redis) and the
//! relay of joins and leaves to the shards.

mod every;
pub mod hashing;
pub mod limits;
pub mod login_backoff;
pub mod presence;
mod ringing;
mod routes;
mod shards;
pub mod store;
pub mod tickets;
pub mod turn;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use surge_cluster::client_addr::{ForwardedHeader, ProxyList, TrustedProxies};
use surge_cluster::health::Dependency;
use surge_cluster::{Placer, ShardRegistry, TokenSigner};
use tokio_util::sync::CancellationToken;

use crate::hashing::{HashError, HashParams, HashPool, PoolConfig};
use crate::limits::{Limits, LimitsConfig, Rate};
use crate::login_backoff::{BackoffConfig, LoginBackoff};
use crate::presence::{
    Connections, MemoryPresence, Presence, Publisher, RedisPresence, StreamSlots,
};
use crate::store::{Store, StoreError};
use crate::tickets::{MemoryTickets, RedisTickets, Tickets};
use crate::turn::{Turn, TurnConfigError, TurnSecret};

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The embedded default: a SQLite file under `./data/`, created on first run.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/surge.db";

/// The API's flags (each with a `SURGE_…` environment fallback).
#[derive(Debug, Clone, clap::Args)]
pub struct ApiConfig {
    /// Accounts database: sqlite://PATH (embedded) or postgres://… (cluster).
    #[arg(long, env = "SURGE_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// PostgreSQL schema for Surge's tables (created when missing).
    #[arg(long, env = "SURGE_DATABASE_SCHEMA", hide = true)]
    pub database_schema: Option<String>,

    /// Most database connections this process opens.
    #[arg(long, env = "SURGE_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Longest queueing delay a signup or login may be admitted with; beyond it the
    /// request is answered 429 at once, with Retry-After.
    #[arg(long, env = "SURGE_LATENCY_BUDGET_MS", default_value_t = 500)]
    pub latency_budget_ms: u64,

    /// Password-hashing threads (0: one per core).
    #[arg(long, env = "SURGE_HASH_THREADS", default_value_t = 0)]
    pub hash_threads: usize,

    /// Share of the hashing capacity kept for logins during a signup flood, in percent.
    #[arg(long, env = "SURGE_LOGIN_RESERVE_PERCENT", default_value_t = 25)]
    pub login_reserve_percent: u8,

    /// While signups wait too, the most of the password-hashing starts logins may take, in
    /// percent (never below the login reserve): a login flood cannot starve signups.
    #[arg(long, env = "SURGE_LOGIN_MAX_SHARE_PERCENT", default_value_t = 50)]
    pub login_max_share_percent: u8,

    /// Wrong passwords for one account (from any address) before its logins must wait.
    #[arg(long, env = "SURGE_LOGIN_FREE_FAILURES", default_value_t = 5)]
    pub login_free_failures: u32,

    /// The longest wait of the per-account login backoff (it starts at 1 s and doubles).
    #[arg(long, env = "SURGE_LOGIN_BACKOFF_MAX_SECS", default_value_t = 300)]
    pub login_backoff_max_secs: u64,

    /// Argon2id memory in KiB (OWASP: 19456).
    #[arg(long, env = "SURGE_ARGON2_MEMORY_KIB", default_value_t = HashParams::OWASP.m_kib, hide = true)]
    pub argon2_memory_kib: u32,

    /// Argon2id passes (OWASP: 2).
    #[arg(long, env = "SURGE_ARGON2_ITERATIONS", default_value_t = HashParams::OWASP.t, hide = true)]
    pub argon2_iterations: u32,

    /// Argon2id lanes (OWASP: 1).
    #[arg(long, env = "SURGE_ARGON2_PARALLELISM", default_value_t = HashParams::OWASP.p, hide = true)]
    pub argon2_parallelism: u32,

    /// Signups per minute per client IP (IPv6 by /64); 0 disables.
    #[arg(long, env = "SURGE_SIGNUP_IP_PER_MIN", default_value_t = 20)]
    pub signup_ip_per_min: u32,

    /// Signups a client IP may make at once before the per-minute rate applies.
    #[arg(long, env = "SURGE_SIGNUP_IP_BURST", default_value_t = 10)]
    pub signup_ip_burst: u32,

    /// Logins per minute per client IP; 0 disables.
    #[arg(long, env = "SURGE_LOGIN_IP_PER_MIN", default_value_t = 60)]
    pub login_ip_per_min: u32,

    /// Logins a client IP may make at once.
    #[arg(long, env = "SURGE_LOGIN_IP_BURST", default_value_t = 20)]
    pub login_ip_burst: u32,

    /// Signups per minute across all clients and replicas (shared through Redis); 0
    /// disables.
    #[arg(long, env = "SURGE_SIGNUP_GLOBAL_PER_MIN", default_value_t = 0)]
    pub signup_global_per_min: u32,

    /// Burst of the global signup rate.
    #[arg(long, env = "SURGE_SIGNUP_GLOBAL_BURST", default_value_t = 100)]
    pub signup_global_burst: u32,

    /// Rooms one account may create per minute; 0 disables.
    #[arg(long, env = "SURGE_ROOMS_PER_ACCOUNT_PER_MIN", default_value_t = 30)]
    pub rooms_per_account_per_min: u32,

    /// Rooms one account may create at once.
    #[arg(long, env = "SURGE_ROOMS_PER_ACCOUNT_BURST", default_value_t = 10)]
    pub rooms_per_account_burst: u32,

    /// Joins (rejoins included) one account may make per minute; 0 disables.
    #[arg(long, env = "SURGE_JOINS_PER_ACCOUNT_PER_MIN", default_value_t = 60)]
    pub joins_per_account_per_min: u32,

    /// Joins one account may make at once.
    #[arg(long, env = "SURGE_JOINS_PER_ACCOUNT_BURST", default_value_t = 20)]
    pub joins_per_account_burst: u32,

    /// Rooms one account may hold at once; creating one more is refused (409) until an old
    /// one expires. 0 disables the cap.
    #[arg(long, env = "SURGE_MAX_ROOMS_PER_ACCOUNT", default_value_t = 50)]
    pub max_rooms_per_account: u32,

    /// Seconds a room lives after its last join (or its creation); then its link stops
    /// working and its row is purged.
    #[arg(long, env = "SURGE_ROOM_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub room_ttl_secs: u64,

    /// Seconds a presence heartbeat lasts.
    #[arg(long, env = "SURGE_PRESENCE_TTL_SECS", default_value_t = 30)]
    pub presence_ttl_secs: u64,

    /// Presence heartbeats (status changes included) one account may send per minute; 0
    /// disables.
    #[arg(
        long,
        env = "SURGE_HEARTBEATS_PER_ACCOUNT_PER_MIN",
        default_value_t = 20
    )]
    pub heartbeats_per_account_per_min: u32,

    /// Heartbeats one account may send at once.
    #[arg(long, env = "SURGE_HEARTBEATS_PER_ACCOUNT_BURST", default_value_t = 10)]
    pub heartbeats_per_account_burst: u32,

    /// A user's status changes are published to the streams (and the other replicas) at
    /// most once per this many milliseconds, the last one winning; 0 publishes every change.
    #[arg(long, env = "SURGE_PRESENCE_COALESCE_MS", default_value_t = 1000)]
    pub presence_coalesce_ms: u64,

    /// Milliseconds a user stays online after their last presence stream on this process
    /// closed, so a page reload that reconnects at once does not show them offline.
    #[arg(long, env = "SURGE_PRESENCE_LINGER_MS", default_value_t = 2000)]
    pub presence_linger_ms: u64,

    /// Presence streams one account may hold open on one process.
    #[arg(long, env = "SURGE_PRESENCE_STREAMS_PER_ACCOUNT", default_value_t = 8)]
    pub presence_streams_per_account: usize,

    /// Presence streams one process holds at most.
    #[arg(long, env = "SURGE_PRESENCE_STREAMS_MAX", default_value_t = 4096)]
    pub presence_streams_max: usize,

    /// Seconds a presence-stream ticket stays redeemable (it is single-use).
    #[arg(
        long,
        env = "SURGE_PRESENCE_TICKET_TTL_SECS",
        default_value_t = 30,
        hide = true
    )]
    pub presence_ticket_ttl_secs: u64,

    /// Presence-stream tickets one account may take per minute; 0 disables.
    #[arg(
        long,
        env = "SURGE_STREAM_TICKETS_PER_ACCOUNT_PER_MIN",
        default_value_t = 60,
        hide = true
    )]
    pub stream_tickets_per_account_per_min: u32,

    /// Presence-stream tickets one account may take at once.
    #[arg(
        long,
        env = "SURGE_STREAM_TICKETS_PER_ACCOUNT_BURST",
        default_value_t = 30,
        hide = true
    )]
    pub stream_tickets_per_account_burst: u32,

    /// Contact requests (email look-ups) one account may send per minute; 0 disables.
    #[arg(
        long,
        env = "SURGE_CONTACT_REQUESTS_PER_ACCOUNT_PER_MIN",
        default_value_t = 10
    )]
    pub contact_requests_per_account_per_min: u32,

    /// Contact requests one account may send at once.
    #[arg(
        long,
        env = "SURGE_CONTACT_REQUESTS_PER_ACCOUNT_BURST",
        default_value_t = 10
    )]
    pub contact_requests_per_account_burst: u32,

    /// Unanswered contact requests one account may have out at once.
    #[arg(
        long,
        env = "SURGE_MAX_PENDING_CONTACT_REQUESTS",
        default_value_t = 100
    )]
    pub max_pending_contact_requests: u32,

    /// Calls (and add-to-call requests) one account may make per minute; 0 disables.
    #[arg(long, env = "SURGE_CALLS_PER_ACCOUNT_PER_MIN", default_value_t = 20)]
    pub calls_per_account_per_min: u32,

    /// Calls one account may make at once.
    #[arg(long, env = "SURGE_CALLS_PER_ACCOUNT_BURST", default_value_t = 10)]
    pub calls_per_account_burst: u32,

    /// Milliseconds a call rings before it counts as missed (no answer).
    #[arg(
        long,
        env = "SURGE_RING_TIMEOUT_MS",
        default_value_t = 30_000,
        hide = true
    )]
    pub ring_timeout_ms: u64,

    /// Seconds a login session lasts.
    #[arg(long, env = "SURGE_SESSION_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub session_ttl_secs: u64,

    /// Seconds a room join token lasts.
    #[arg(long, env = "SURGE_JOIN_TOKEN_TTL_SECS", default_value_t = 60)]
    pub join_token_ttl_secs: u64,

    /// Proxies (comma-separated CIDRs or addresses) whose forwarding header is believed: a
    /// request from one of them is keyed on the right-most untrusted address of the chain.
    /// Empty: every client is its socket address.
    #[arg(long, env = "SURGE_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: ProxyList,

    /// The header the trusted proxies write the client chain into.
    #[arg(long, env = "SURGE_CLIENT_IP_HEADER", value_enum, default_value_t = ForwardedHeader::XForwardedFor)]
    pub client_ip_header: ForwardedHeader,

    /// TURN (and STUN) servers handed to callers, comma-separated, e.g.
    /// `turn:turn.example.com:3478?transport=udp,turns:turn.example.com:443?transport=tcp`.
    /// Empty: no ICE servers (media goes straight to the shards).
    #[arg(long, env = "SURGE_TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Vec<String>,

    /// The secret shared with the TURN servers (coturn's `static-auth-secret`); each join
    /// gets credentials derived from it. Required when --turn-urls names turn: servers.
    #[arg(long, env = "SURGE_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<TurnSecret>,

    /// Seconds TURN credentials stay valid (an allocation cannot be refreshed past them).
    #[arg(long, env = "SURGE_TURN_CREDENTIAL_TTL_SECS", default_value_t = 24 * 3600)]
    pub turn_credential_ttl_secs: u64,
}

impl ApiConfig {
    /// The defaults with another database, for tests and tools.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            database_schema: None,
            database_max_connections: 16,
            latency_budget_ms: 500,
            hash_threads: 0,
            login_reserve_percent: 25,
            login_max_share_percent: 50,
            login_free_failures: 5,
            login_backoff_max_secs: 300,
            argon2_memory_kib: HashParams::OWASP.m_kib,
            argon2_iterations: HashParams::OWASP.t,
            argon2_parallelism: HashParams::OWASP.p,
            signup_ip_per_min: 20,
            signup_ip_burst: 10,
            login_ip_per_min: 60,
            login_ip_burst: 20,
            signup_global_per_min: 0,
            signup_global_burst: 100,
            rooms_per_account_per_min: 30,
            rooms_per_account_burst: 10,
            joins_per_account_per_min: 60,
            joins_per_account_burst: 20,
            max_rooms_per_account: 50,
            room_ttl_secs: 30 * 24 * 3600,
            presence_ttl_secs: 30,
            heartbeats_per_account_per_min: 20,
            heartbeats_per_account_burst: 10,
            presence_coalesce_ms: 1000,
            presence_linger_ms: 2000,
            presence_streams_per_account: 8,
            presence_streams_max: 4096,
            presence_ticket_ttl_secs: 30,
            stream_tickets_per_account_per_min: 60,
            stream_tickets_per_account_burst: 30,
            contact_requests_per_account_per_min: 10,
            contact_requests_per_account_burst: 10,
            max_pending_contact_requests: 100,
            calls_per_account_per_min: 20,
            calls_per_account_burst: 10,
            ring_timeout_ms: 30_000,
            session_ttl_secs: 7 * 24 * 3600,
            join_token_ttl_secs: 60,
            trusted_proxies: ProxyList::default(),
            client_ip_header: ForwardedHeader::XForwardedFor,
            turn_urls: Vec::new(),
            turn_secret: None,
            turn_credential_ttl_secs: 24 * 3600,
        }
    }

    fn limits(&self) -> LimitsConfig {
        LimitsConfig {
            signup_per_ip: Rate {
                per_minute: self.signup_ip_per_min,
                burst: self.signup_ip_burst,
            },
            login_per_ip: Rate {
                per_minute: self.login_ip_per_min,
                burst: self.login_ip_burst,
            },
            signup_global: Rate {
                per_minute: self.signup_global_per_min,
                burst: self.signup_global_burst,
            },
            create_room_per_account: Rate {
                per_minute: self.rooms_per_account_per_min,
                burst: self.rooms_per_account_burst,
            },
            join_per_account: Rate {
                per_minute: self.joins_per_account_per_min,
                burst: self.joins_per_account_burst,
            },
            heartbeat_per_account: Rate {
                per_minute: self.heartbeats_per_account_per_min,
                burst: self.heartbeats_per_account_burst,
            },
            contact_request_per_account: Rate {
                per_minute: self.contact_requests_per_account_per_min,
                burst: self.contact_requests_per_account_burst,
            },
            stream_ticket_per_account: Rate {
                per_minute: self.stream_tickets_per_account_per_min,
                burst: self.stream_tickets_per_account_burst,
            },
            ring_per_account: Rate {
                per_minute: self.calls_per_account_per_min,
                burst: self.calls_per_account_burst,
            },
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self::with_database(DEFAULT_DATABASE_URL)
    }
}

/// What the binary hands the API besides its flags.
pub struct ApiDeps {
    /// The SFU shards, for room placement.
    pub registry: Arc<dyn ShardRegistry>,
    /// Signs join tokens.
    pub token_key: TokenSigner,
    /// Shared limits and presence live here when set; in memory otherwise.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key this API writes.
    pub redis_prefix: String,
    /// Cancelled on shutdown; long-lived responses (SSE) end when it fires.
    pub shutdown: CancellationToken,
}

/// Why the API could not start; each renders as one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("database {url}: {source}")]
    Database {
        url: String,
        #[source]
        source: StoreError,
    },
    #[error("password hashing: {0}")]
    Hashing(#[from] HashError),
    #[error("the HTTP client for the shards: {0}")]
    Relay(#[from] reqwest::Error),
    #[error("redis {url}: {reason}")]
    Redis { url: String, reason: String },
    #[error("TURN: {0}")]
    Turn(#[from] TurnConfigError),
}

/// A URL with its password replaced, for error messages and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A running API.
pub struct Api {
    router: Router,
    dependencies: Vec<Arc<dyn Dependency>>,
    hasher: HashPool,
    store: Arc<dyn Store>,
    tasks: CancellationToken,
}

struct DatabaseDependency(Arc<dyn Store>);

#[async_trait]
impl Dependency for DatabaseDependency {
    fn name(&self) -> &'static str {
        "database"
    }
    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

struct RedisDependency(surge_cluster::RedisConn);

#[async_trait]
impl Dependency for RedisDependency {
    fn name(&self) -> &'static str {
        "redis"
    }
    async fn check(&self) -> Result<(), String> {
        let mut conn = self.0.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

impl Api {
    /// Opens and migrates the database, starts the hashing pool, connects Redis (lazily:
    /// an unreachable Redis is not fatal, the API runs on local limits until it answers)
    /// and builds the routes.
    pub async fn start(config: &ApiConfig, deps: ApiDeps) -> Result<Self, StartError> {
        let turn = Turn::new(
            &config.turn_urls,
            config.turn_secret.clone(),
            Duration::from_secs(config.turn_credential_ttl_secs),
        )?;
        let store: Arc<dyn Store> = store::connect(
            &config.database_url,
            config.database_schema.as_deref(),
            config.database_max_connections,
        )
        .await
        .map_err(|source| StartError::Database {
            url: redact(&config.database_url),
            source,
        })?
        .into();
        let params = HashParams {
            m_kib: config.argon2_memory_kib,
            t: config.argon2_iterations,
            p: config.argon2_parallelism,
        };
        let pool_config = PoolConfig {
            params,
            threads: config.hash_threads,
            budget: Duration::from_millis(config.latency_budget_ms),
            login_reserve: f64::from(config.login_reserve_percent.min(90)) / 100.0,
            login_max_share: f64::from(config.login_max_share_percent.min(100)) / 100.0,
        };
        let hasher = tokio::task::spawn_blocking(move || HashPool::start(&pool_config))
            .await
            .map_err(|e| HashError::Argon2(e.to_string()))??;
        tracing::info!(
            threads = hasher.threads(),
            hash_ms = hasher.hash_time().as_secs_f64() * 1000.0,
            "password hashing pool ready"
        );
        let tasks = deps.shutdown.child_token();
        let mut dependencies: Vec<Arc<dyn Dependency>> =
            vec![Arc::new(DatabaseDependency(store.clone()))];
        let backoff_config = BackoffConfig {
            free_failures: config.login_free_failures,
            max_wait: Duration::from_secs(config.login_backoff_max_secs.max(1)),
            ..BackoffConfig::default()
        };
        let (limits, login_backoff, presence, tickets): (
            Limits,
            LoginBackoff,
            Arc<dyn Presence>,
            Arc<dyn Tickets>,
        ) = match &deps.redis_url {
            Some(url) => {
                let redis_error = |reason: String| StartError::Redis {
                    url: redact(url),
                    reason,
                };
                let target = surge_cluster::RedisTarget::parse(url)
                    .map_err(|e| redis_error(e.to_string()))?;
                let conn = surge_cluster::RedisConn::lazy(&target, &limits::REDIS_TIMEOUTS)
                    .map_err(|e| redis_error(e.to_string()))?;
                dependencies.push(Arc::new(RedisDependency(conn.clone())));
                let limits = Limits::new(
                    config.limits(),
                    Some((conn.clone(), deps.redis_prefix.clone())),
                );
                let login_backoff = LoginBackoff::new(
                    backoff_config,
                    Some((conn.clone(), deps.redis_prefix.clone())),
                );
                let tickets = Arc::new(RedisTickets::new(conn.clone(), &deps.redis_prefix));
                let presence =
                    RedisPresence::new(target, conn, deps.redis_prefix.clone(), tasks.clone());
                (limits, login_backoff, presence, tickets)
            }
            None => (
                Limits::new(config.limits(), None),
                LoginBackoff::new(backoff_config, None),
                Arc::new(MemoryPresence::default()),
                Arc::new(MemoryTickets::default()),
            ),
        };
        let login_backoff = Arc::new(login_backoff);
        presence::spawn_sweeper(presence.clone(), Duration::from_secs(1), tasks.clone());
        let publisher = Arc::new(Publisher::new(
            presence.clone(),
            Duration::from_millis(config.presence_coalesce_ms),
        ));
        publisher.clone().spawn_flusher(tasks.clone());
        let presence_ttl = Duration::from_secs(config.presence_ttl_secs.max(1));
        let connections = Connections::new(
            presence.clone(),
            publisher.clone(),
            presence_ttl,
            Duration::from_millis(config.presence_linger_ms),
        );
        connections.clone().spawn_refresher(tasks.clone());
        spawn_limit_eviction(limits.clone(), login_backoff.clone(), tasks.clone());
        let room_ttl = Duration::from_secs(config.room_ttl_secs.max(60));
        spawn_housekeeping(store.clone(), room_ttl, tasks.clone());
        let ring_timeout = Duration::from_millis(config.ring_timeout_ms.max(100));
        ringing::spawn_sweeper(store.clone(), presence.clone(), ring_timeout, tasks.clone());
        let state = routes::AppState(Arc::new(routes::Inner {
            store: store.clone(),
            hasher: hasher.clone(),
            limits,
            login_backoff,
            presence,
            publisher,
            connections,
            tickets,
            streams: StreamSlots::new(
                config.presence_streams_per_account,
                config.presence_streams_max,
            ),
            placer: Placer::new(deps.registry),
            shards: shards::ShardClient::new()?,
            token_key: deps.token_key,
            turn,
            settings: routes::Settings {
                session_ttl: Duration::from_secs(config.session_ttl_secs),
                presence_ttl,
                join_ttl: Duration::from_secs(config.join_token_ttl_secs.max(1)),
                room_ttl,
                max_rooms_per_account: match config.max_rooms_per_account {
                    0 => u32::MAX,
                    cap => cap,
                },
                ticket_ttl: Duration::from_secs(config.presence_ticket_ttl_secs.max(1)),
                max_pending_contact_requests: config.max_pending_contact_requests,
                ring_timeout,
            },
            shutdown: deps.shutdown,
        }));
        let proxies =
            TrustedProxies::new(config.trusted_proxies.0.clone(), config.client_ip_header);
        Ok(Self {
            router: routes::router(state, proxies),
            dependencies,
            hasher,
            store,
            tasks,
        })
    }

    /// The API's routes; the caller adds the ops routes and `finish_router`.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// What the API uses but serves without (answering 503s or on local limits while it
    /// is gone): the database, and Redis when configured. Never readiness gates.
    pub fn dependencies(&self) -> Vec<Arc<dyn Dependency>> {
        self.dependencies.clone()
    }

    /// The account store (tests and tools).
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// The hashing pool (reports and benchmarks).
    pub fn hasher(&self) -> &HashPool {
        &self.hasher
    }

    /// Stops background tasks and the hashing threads (after their current jobs).
    pub async fn stop(self) {
        self.tasks.cancel();
        let hasher = self.hasher.clone();
        let _ = tokio::task::spawn_blocking(move || hasher.stop()).await;
    }
}

/// Forgets idle per-IP limiter and login-backoff state every minute.
fn spawn_limit_eviction(limits: Limits, backoff: Arc<LoginBackoff>, shutdown: CancellationToken) {
    let minute = Duration::from_secs(60);
    every::spawn_every(minute, minute, shutdown, move || {
        limits.evict_idle();
        backoff.evict_idle();
        std::future::ready(())
    });
}

/// Purges what has expired every ten minutes, so no table grows without bound: see
/// [`store::purge_expired`]. The first round a minute after start, not at once: replicas
/// starting together (a rollout) do not all purge in the same second.
fn spawn_housekeeping(store: Arc<dyn Store>, room_ttl: Duration, shutdown: CancellationToken) {
    let (first, period) = (Duration::from_secs(60), Duration::from_secs(600));
    every::spawn_every(first, period, shutdown, move || {
        let store = store.clone();
        async move {
            let now = i64::try_from(surge_cluster::token::unix_now()).unwrap_or(i64::MAX);
            match store::purge_expired(store.as_ref(), now, room_ttl).await {
                Ok(purged) if purged.total() == 0 => {}
                Ok(purged) => tracing::debug!(?purged, "expired rows purged"),
                Err(e) => tracing::debug!(error = %e, "purge failed; the next round retries"),
            }
        }
    });
}

/// Applies the migrations to `database_url` and returns.
pub async fn migrate(database_url: &str) -> Result<(), StartError> {
    store::connect(database_url, None, 1)
        .await
        .map(|_| ())
        .map_err(|source| StartError::Database {
            url: redact(database_url),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(redact("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(
            redact("sqlite://./data/surge.db"),
            "sqlite://./data/surge.db"
        );
    }

    #[test]
    fn flags_parse_with_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            api: ApiConfig,
        }
        let cli = Cli::try_parse_from(["x", "--latency-budget-ms", "250"]).unwrap();
        assert_eq!(cli.api.latency_budget_ms, 250);
        assert_eq!(cli.api.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(cli.api.argon2_memory_kib, 19 * 1024);
        assert!(Cli::try_parse_from(["x", "--latency-budget-ms", "soon"]).is_err());
        assert!(cli.api.trusted_proxies.0.is_empty());
        let cli = Cli::try_parse_from([
            "x",
            "--trusted-proxies",
            "10.0.0.0/8, 127.0.0.1,fd00::/8",
            "--client-ip-header",
            "forwarded",
        ])
        .unwrap();
        let nets: Vec<String> = cli
            .api
            .trusted_proxies
            .0
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]);
        assert_eq!(cli.api.client_ip_header, ForwardedHeader::Forwarded);
        let none = Cli::try_parse_from(["x", "--trusted-proxies", ""]).unwrap();
        assert!(
            none.api.trusted_proxies.0.is_empty(),
            "an empty list trusts none"
        );
        let err = Cli::try_parse_from(["x", "--trusted-proxies", "10.0.0.0/8,nonsense"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a CIDR"), "{err}");
    }
}
