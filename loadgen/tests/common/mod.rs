//! What the loadgen's end-to-end tests share: an in-process Surge (API and SFU shards on
//! loopback listeners, as `surge up` composes them) with cheap password hashing.
#![allow(clippy::unwrap_used, dead_code)]

use std::sync::Arc;
use std::time::Duration;

use surge_cluster::{MemoryRegistry, TokenSigner};
use surge_sfu::{SfuConfig, Shard, ShardDeps};
use surge_signup_api::{Api, ApiConfig, ApiDeps};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// An API config on a SQLite file in `dir`, with Argon2 cheap enough for tests and a
/// latency budget that never sheds.
pub fn cheap_api_config(dir: &std::path::Path) -> ApiConfig {
    let mut config = ApiConfig::with_database(format!("sqlite://{}/surge.db", dir.display()));
    config.argon2_memory_kib = 64;
    config.argon2_iterations = 1;
    config.latency_budget_ms = 10_000;
    config
}

/// A loopback listener on an ephemeral port and its base URL.
pub async fn listen() -> (TcpListener, String) {
    let listener = surge_cluster::http::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    (listener, base)
}

/// Serves `router` (with the ops routes, ready while the `gates` are open) on `listener`
/// until `stop` fires.
pub fn serve(
    listener: TcpListener,
    router: axum::Router,
    gates: Vec<surge_cluster::health::Gate>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let health = surge_cluster::health::Health::new(gates, Vec::new());
    let router =
        surge_cluster::http::finish_router(router.merge(surge_cluster::http::ops_routes(health)));
    tokio::spawn(surge_cluster::http::serve(
        listener,
        router,
        stop,
        Duration::from_secs(5),
    ))
}

/// Starts the API on the in-memory registry (no Redis).
pub async fn start_api(
    config: &ApiConfig,
    registry: Arc<MemoryRegistry>,
    token_key: TokenSigner,
    shutdown: CancellationToken,
) -> Api {
    Api::start(
        config,
        ApiDeps {
            registry,
            token_key,
            redis_url: None,
            redis_prefix: "unused:".into(),
            shutdown,
        },
    )
    .await
    .unwrap()
}

/// Starts shard `id` whose signalling URL is `base` (the listener it will be served on).
pub async fn start_shard(
    id: &str,
    base: &str,
    registry: Arc<MemoryRegistry>,
    token_key: &TokenSigner,
) -> Shard {
    Shard::start(
        &SfuConfig::for_tests(id),
        ShardDeps {
            registry,
            token_key: token_key.verifier(),
            admin_token: None,
            default_signal_url: base.to_owned(),
        },
    )
    .await
    .unwrap()
}

/// A shard on a listener of its own; cancelling the token stops serving it.
pub async fn serve_shard(
    id: &str,
    registry: Arc<MemoryRegistry>,
    token_key: &TokenSigner,
) -> (Shard, CancellationToken) {
    let (listener, base) = listen().await;
    let shard = start_shard(id, &base, registry, token_key).await;
    let stop = CancellationToken::new();
    serve(
        listener,
        shard.router(),
        vec![shard.ready_gate()],
        stop.clone(),
    );
    (shard, stop)
}

/// `surge up` in process: the API (without per-IP signup and login limits, which a calls run
/// from one address would hit) and one shard on one listener.
pub struct SurgeUp {
    pub base: String,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    shard: Shard,
    api: Api,
    _dir: tempfile::TempDir,
}

impl SurgeUp {
    pub async fn start(shard_id: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = cheap_api_config(dir.path());
        config.signup_ip_per_min = 0;
        config.login_ip_per_min = 0;
        let registry = Arc::new(MemoryRegistry::new());
        let token_key = TokenSigner::generate();
        let shutdown = CancellationToken::new();
        let (listener, base) = listen().await;
        let shard = start_shard(shard_id, &base, registry.clone(), &token_key).await;
        let api = start_api(&config, registry, token_key, shutdown.clone()).await;
        let server = serve(
            listener,
            api.router().merge(shard.router()),
            vec![shard.ready_gate()],
            shutdown.clone(),
        );
        Self {
            base,
            shutdown,
            server,
            shard,
            api,
            _dir: dir,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
        self.shard.stop().await;
        self.api.stop().await;
    }
}
