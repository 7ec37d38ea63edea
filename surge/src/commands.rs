//! The subcommands: each builds its pieces from the libraries and serves them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use surge_cluster::client_addr::ProxyList;
use surge_cluster::health::{self, Dependency, Gate, Health};
use surge_cluster::http;
use surge_cluster::listener::ListenerConfig;
use surge_cluster::ops;
use surge_cluster::registry::RegistryDependency;
use surge_sfu::{Shard, ShardDeps};
use surge_signup_api::{Api, ApiDeps};
use tokio_util::sync::CancellationToken;

use crate::backends;
use crate::cli::{ApiArgs, Cli, Command, Common, DrainArgs, SfuArgs, UpArgs};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => up(args).await,
        Command::Api(args) => api(args).await,
        Command::Sfu(args) => sfu(args).await,
        Command::Migrate(args) => {
            surge_signup_api::migrate(&args.database_url)
                .await
                .context("migrating the database")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Drain(args) => drain(args).await,
    }
}

/// Cancels `token` on Ctrl-C or SIGTERM.
fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        http::shutdown_signal().await;
        token.cancel();
    });
}

/// Serves `router` with what every listener has: liveness, readiness (the `gates` only),
/// metrics, and the admin status of the `dependencies`, which a background task checks;
/// and the ops listener when one is configured. `exempt` peers (trusted proxies) are not
/// held to the per-address connection cap.
#[allow(clippy::too_many_arguments)]
async fn serve(
    common: &Common,
    listener: tokio::net::TcpListener,
    router: axum::Router,
    gates: Vec<Gate>,
    mut dependencies: Vec<Arc<dyn Dependency>>,
    backends: &backends::Backends,
    exempt: ProxyList,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Every process uses the shard registry (Redis in a cluster).
    dependencies.push(Arc::new(RegistryDependency(backends.registry.clone())));
    let health = Health::new(gates, dependencies);
    health.spawn_monitor(health::CHECK_INTERVAL, shutdown.child_token());
    let router = http::finish_router(router.merge(http::ops_routes(health.clone())).merge(
        surge_cluster::admin::status_router(health, common.admin_token.clone()),
    ));
    let grace = Duration::from_secs(common.shutdown_grace_secs);
    let limits = ListenerConfig {
        exempt,
        ..common.listener.clone()
    };
    let ops_server = match common.ops_listen {
        Some(addr) => {
            let ops_listener = http::bind(addr).await?;
            tracing::info!(listen = %addr, "ops listener serving");
            let (router, limits, shutdown) =
                (ops::ops(router.clone()), limits.clone(), shutdown.clone());
            Some(tokio::spawn(async move {
                surge_cluster::listener::serve(ops_listener, router, &limits, shutdown, grace).await
            }))
        }
        None => None,
    };
    let public = ops::public(
        router,
        common.ops_listen.is_some(),
        common.admin_token.as_deref(),
    );
    surge_cluster::listener::serve(listener, public, &limits, shutdown, grace)
        .await
        .context("serving HTTP")?;
    if let Some(ops_server) = ops_server {
        ops_server
            .await
            .context("the ops listener's task")?
            .context("serving the ops listener")?;
    }
    Ok(())
}

/// Starts the API on the backends the shared flags selected.
async fn start_api(
    config: &surge_signup_api::ApiConfig,
    common: &Common,
    backends: &backends::Backends,
    shutdown: CancellationToken,
) -> anyhow::Result<Api> {
    Api::start(
        config,
        ApiDeps {
            registry: backends.registry.clone(),
            token_key: backends
                .keys
                .signer
                .clone()
                .context("the API needs the join-token private key")?,
            redis_url: common.redis_url.clone(),
            redis_prefix: common.redis_prefix.clone(),
            shutdown,
        },
    )
    .await
    .context("starting the API")
}

/// Starts a shard whose signalling is served on `local` unless `--signal-url` says otherwise
/// (a listener on every interface is reached on loopback by the API in the same process).
async fn start_shard(
    config: &surge_sfu::SfuConfig,
    common: &Common,
    backends: &backends::Backends,
    local: std::net::SocketAddr,
) -> anyhow::Result<Shard> {
    Shard::start(
        config,
        ShardDeps {
            registry: backends.registry.clone(),
            token_key: backends
                .keys
                .verifier
                .clone()
                .context("a shard needs the join-token public key")?,
            admin_token: common.admin_token.clone(),
            default_signal_url: format!("http://{}", reachable(local)),
        },
    )
    .await
    .context("starting the SFU shard")
}

/// `local` with an unspecified address (0.0.0.0, ::) replaced by loopback.
fn reachable(local: std::net::SocketAddr) -> std::net::SocketAddr {
    match local.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            (std::net::Ipv4Addr::LOCALHOST, local.port()).into()
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            (std::net::Ipv6Addr::LOCALHOST, local.port()).into()
        }
        _ => local,
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    surge_cluster::telemetry::install_metrics();
    let shutdown = CancellationToken::new();
    let backends = backends::build(&args.common, backends::Role::Up).await?;
    let listener = http::bind(args.common.listen).await?;
    let local = listener
        .local_addr()
        .context("reading the listener's address")?;
    let shard = start_shard(&args.sfu, &args.common, &backends, local).await?;
    let api = start_api(&args.api, &args.common, &backends, shutdown.clone()).await?;
    println!("Surge is up. Point a browser at http://{local}/ (Ctrl-C stops it)");
    cancel_on_signal(shutdown.clone());
    let admin =
        surge_cluster::admin::router(backends.registry.clone(), args.common.admin_token.clone());
    let router = api.router().merge(shard.router()).merge(admin);
    let failed = exit_on_worker_failure(&shard, shutdown.clone());
    serve(
        &args.common,
        listener,
        router,
        vec![shard.ready_gate()],
        api.dependencies(),
        &backends,
        args.api.trusted_proxies.clone(),
        shutdown,
    )
    .await?;
    shard.stop().await;
    api.stop().await;
    worker_failure_result(&failed)
}

async fn api(args: ApiArgs) -> anyhow::Result<()> {
    surge_cluster::telemetry::install_metrics();
    let shutdown = CancellationToken::new();
    let backends = backends::build(&args.common, backends::Role::Api).await?;
    let listener = http::bind(args.common.listen).await?;
    let api = start_api(&args.api, &args.common, &backends, shutdown.clone()).await?;
    tracing::info!(listen = %args.common.listen, "API serving");
    cancel_on_signal(shutdown.clone());
    let admin =
        surge_cluster::admin::router(backends.registry.clone(), args.common.admin_token.clone());
    let router = api.router().merge(admin);
    serve(
        &args.common,
        listener,
        router,
        Vec::new(),
        api.dependencies(),
        &backends,
        args.api.trusted_proxies.clone(),
        shutdown,
    )
    .await?;
    api.stop().await;
    Ok(())
}

/// A shard drains on SIGTERM: it takes no new joins, keeps its calls until they end or
/// its deadline passes, and only then stops serving and exits.
async fn sfu(args: SfuArgs) -> anyhow::Result<()> {
    surge_cluster::telemetry::install_metrics();
    let backends = backends::build(&args.common, backends::Role::Shard).await?;
    let listener = http::bind(args.common.listen).await?;
    let local = listener
        .local_addr()
        .context("reading the listener's address")?;
    let shard = start_shard(&args.sfu, &args.common, &backends, local).await?;
    tracing::info!(listen = %local, "SFU shard serving");
    let stop_serving = CancellationToken::new();
    let drained = {
        let shard = shard.clone();
        let stop_serving = stop_serving.clone();
        async move {
            tokio::select! {
                () = http::shutdown_signal() => shard.begin_drain(),
                () = shard.drain_requested() => {},
            }
            shard.drained().await;
            stop_serving.cancel();
        }
    };
    tokio::spawn(drained);
    let failed = exit_on_worker_failure(&shard, stop_serving.clone());
    serve(
        &args.common,
        listener,
        shard.router(),
        vec![shard.ready_gate()],
        Vec::new(),
        &backends,
        ProxyList::default(),
        stop_serving,
    )
    .await?;
    shard.stop().await;
    worker_failure_result(&failed)
}

/// Stops serving when a shard's worker thread fails; the returned flag says it did.
fn exit_on_worker_failure(
    shard: &Shard,
    stop: CancellationToken,
) -> Arc<std::sync::atomic::AtomicBool> {
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let shard = shard.clone();
    let flag = failed.clone();
    tokio::spawn(async move {
        shard.worker_failed().await;
        flag.store(true, std::sync::atomic::Ordering::Release);
        stop.cancel();
    });
    failed
}

/// A failed worker lost its calls and cannot be restarted in place: the process exits
/// non-zero so that its supervisor (Kubernetes) starts a fresh one.
fn worker_failure_result(failed: &std::sync::atomic::AtomicBool) -> anyhow::Result<()> {
    if failed.load(std::sync::atomic::Ordering::Acquire) {
        anyhow::bail!("an SFU worker thread failed (see the log); exiting for a restart");
    }
    Ok(())
}

async fn drain(args: DrainArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let mut request = client.post(format!("{}/v1/sfu/drain", args.url.trim_end_matches('/')));
    if let Some(token) = &args.admin_token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.context("reaching the shard")?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!("the shard refused to drain: {status} {body}");
    }
    println!("draining");
    Ok(())
}
