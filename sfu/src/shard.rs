//! The shard: binds the workers' sockets, starts their threads, heartbeats to the registry,
//! drains and stops.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use surge_cluster::ShardRegistry;
use surge_cluster::health::Gate;
use surge_cluster::placement::DEFAULT_PIN_TTL;
use surge_cluster::registry::{DEFAULT_SHARD_TTL, HEARTBEAT_INTERVAL, ShardInfo, ShardLoad};
use surge_cluster::token::ReplayGuard;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::commands::{Command, WorkerHandle};
use crate::occupancy::{Limits, Occupancy};
use crate::shared::{ShardStatus, Shared};
use crate::worker::WorkerContext;
use crate::{SfuConfig, ShardDeps, StartError};

/// Binds worker `k`'s ICE-TCP listener (see `SfuConfig::media_tcp_port`) and has its wait
/// watch it; returns it with the address clients reach it at.
fn tcp_listener(
    config: &SfuConfig,
    k: usize,
    udp: &crate::worker::Udp,
    public_udp: SocketAddr,
) -> Result<(crate::worker::Tcp, SocketAddr), StartError> {
    let port = match config.media_tcp_port {
        Some(0) => 0,
        Some(first) => first.saturating_add(k as u16),
        None => public_udp.port(),
    };
    let addr = SocketAddr::new(config.media_bind, port);
    let listener = match crate::worker::bind_listener(addr) {
        Ok(l) => l,
        // Only the UDP port was chosen by the kernel: any free TCP port will do.
        Err(_) if config.media_tcp_port.is_none() && config.media_port == 0 => {
            crate::worker::bind_listener(SocketAddr::new(config.media_bind, 0))
                .map_err(|source| StartError::Bind { addr, source })?
        }
        Err(source) => return Err(StartError::Bind { addr, source }),
    };
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let limits = crate::worker::TcpLimits {
        max_connections: config.max_tcp_connections,
        idle_timeout: config.participant_timeout(),
    };
    let tcp = crate::worker::Tcp::new(listener, limits)
        .map_err(|source| StartError::Bind { addr, source })?;
    udp.watch(tcp.ready_fd())
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok((tcp, SocketAddr::new(public_udp.ip(), local.port())))
}

/// A running shard; clones share it.
#[derive(Clone)]
pub struct Shard {
    shared: Arc<Shared>,
    heartbeat_stop: CancellationToken,
    threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
    registry: Arc<dyn ShardRegistry>,
}

impl Shard {
    /// Binds one UDP socket per worker, starts the worker threads and the registry heartbeat.
    pub async fn start(config: &SfuConfig, deps: ShardDeps) -> Result<Self, StartError> {
        let count = config.worker_count();
        let public_ip = config.public_ip.unwrap_or(config.media_bind);
        let mut sockets = Vec::with_capacity(count);
        for k in 0..count {
            let port = if config.media_port == 0 {
                0
            } else {
                config.media_port.saturating_add(k as u16)
            };
            let addr = SocketAddr::new(config.media_bind, port);
            let socket = crate::worker::bind_socket(addr)
                .map_err(|source| StartError::Bind { addr, source })?;
            let local = socket
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            sockets.push((socket, SocketAddr::new(public_ip, local.port())));
        }
        let mut handles = Vec::with_capacity(count);
        let mut receivers = Vec::with_capacity(count);
        let mut udps = Vec::with_capacity(count);
        for (k, (socket, public_addr)) in sockets.into_iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::channel();
            let (udp, waker) =
                crate::worker::Udp::new(socket).map_err(|source| StartError::Bind {
                    addr: public_addr,
                    source,
                })?;
            let tcp = if config.media_tcp {
                Some(tcp_listener(config, k, &udp, public_addr)?)
            } else {
                None
            };
            udps.push(crate::worker::Transports {
                udp,
                public_addr,
                tcp,
            });
            handles.push(WorkerHandle {
                public_addr,
                public_tcp_addr: udps
                    .last()
                    .and_then(|t: &crate::worker::Transports| t.tcp.as_ref().map(|(_, a)| *a)),
                commands: tx,
                waker,
                failed: Arc::new(AtomicBool::new(false)),
            });
            receivers.push(rx);
        }
        let shared = Arc::new(Shared {
            shard_id: config.shard_id.clone(),
            signal_url: config
                .signal_url
                .clone()
                .unwrap_or_else(|| deps.default_signal_url.clone()),
            token_key: deps.token_key,
            used_tokens: ReplayGuard::new(),
            admin_token: deps.admin_token,
            occupancy: Arc::new(Occupancy::new(Limits {
                max_rooms: config.max_rooms,
                max_participants: config.max_participants,
                max_room_participants: config.max_room_participants,
            })),
            drain_deadline: Duration::from_secs(config.drain_deadline_secs),
            workers: handles,
            drain_started: Mutex::new(None),
            drain_token: CancellationToken::new(),
            stopped: AtomicBool::new(false),
            worker_failed: CancellationToken::new(),
        });
        let mut threads = Vec::with_capacity(count);
        let flags = shared.workers.iter().map(|w| w.failed.clone());
        for (((index, transports), rx), failed) in
            udps.into_iter().enumerate().zip(receivers).zip(flags)
        {
            let context = WorkerContext {
                occupancy: shared.occupancy.clone(),
                participant_timeout: config.participant_timeout(),
                failed,
                worker_failed: shared.worker_failed.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("sfu-worker-{index}"))
                .spawn(move || crate::worker::run(index, transports, rx, context))
                .map_err(StartError::Thread)?;
            threads.push(thread);
        }
        tracing::info!(
            shard = %shared.shard_id,
            workers = count,
            media = ?shared.workers.iter().map(|w| w.public_addr).collect::<Vec<_>>(),
            "SFU shard started"
        );
        let shard = Self {
            shared,
            heartbeat_stop: CancellationToken::new(),
            threads: Arc::new(Mutex::new(threads)),
            registry: deps.registry,
        };
        tokio::spawn(heartbeat(
            shard.shared.clone(),
            shard.registry.clone(),
            shard.heartbeat_stop.clone(),
        ));
        Ok(shard)
    }

    /// Public ICE-TCP address of each worker that listens on TCP.
    pub fn media_tcp_addrs(&self) -> Vec<SocketAddr> {
        self.shared
            .workers
            .iter()
            .filter_map(|w| w.public_tcp_addr)
            .collect()
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// The current load and state.
    pub fn status(&self) -> ShardStatus {
        self.shared.status()
    }

    /// Public media address of each worker (ip:port).
    pub fn media_addrs(&self) -> Vec<SocketAddr> {
        self.shared.workers.iter().map(|w| w.public_addr).collect()
    }

    /// Stops taking new joins; calls continue.
    pub fn begin_drain(&self) {
        self.shared.begin_drain();
    }

    /// Resolves when an operator asks this shard to drain (admin endpoint or registry).
    pub async fn drain_requested(&self) {
        self.shared.drain_token.cancelled().await;
    }

    /// Resolves when a worker thread has failed (panicked): its calls are lost, the shard
    /// is not ready, and the process should exit non-zero so that it is restarted.
    pub async fn worker_failed(&self) {
        self.shared.worker_failed.cancelled().await;
    }

    /// Test hook: panics the worker that hosts `room`, to check what a failed worker
    /// does. Never called outside tests.
    #[doc(hidden)]
    pub fn inject_worker_panic(&self, room: &str) {
        let worker = self.shared.worker_for(room);
        let _ = worker.commands.send(Command::InjectPanic);
        worker.waker.wake();
    }

    /// Resolves when a draining shard is empty or its deadline has passed.
    pub async fn drained(&self) {
        self.shared.drain_token.cancelled().await;
        loop {
            let empty = self.shared.occupancy.participants.load(Ordering::Acquire) == 0;
            let past_deadline = self
                .shared
                .drain_deadline_at()
                .is_some_and(|d| Instant::now() >= d);
            if empty || past_deadline {
                tracing::info!(empty, past_deadline, "drained");
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Ends every call and stops the workers.
    pub async fn stop(self) {
        self.heartbeat_stop.cancel();
        self.shared.stopped.store(true, Ordering::Release);
        for worker in &self.shared.workers {
            let _ = worker.commands.send(Command::Stop);
            worker.waker.wake();
        }
        let threads = self
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("an SFU worker thread panicked");
                }
            }
        })
        .await;
        if let Err(e) = self.registry.deregister(&self.shared.shard_id).await {
            tracing::warn!(%e, "could not deregister the shard");
        }
        tracing::info!("SFU shard stopped");
    }
}

/// Every second: report load to the registry (learning about operator drain requests)
/// and keep the occupied rooms' pins alive.
async fn heartbeat(shared: Arc<Shared>, registry: Arc<dyn ShardRegistry>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(HEARTBEAT_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_busy = 0u64;
    let mut last_at = Instant::now();
    let mut registry_down = false;
    // Export the load gauges from the start (the workers only move them on joins and
    // leaves): an idle shard reports 0 rather than nothing, which an autoscaler following
    // participants per shard would take as a shard without metrics.
    metrics::gauge!(crate::metrics_names::PARTICIPANTS).increment(0.0);
    metrics::gauge!(crate::metrics_names::ROOMS).increment(0.0);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let busy = shared.occupancy.busy_nanos.load(Ordering::Relaxed);
        let now = Instant::now();
        let wall = now.duration_since(last_at).as_nanos().max(1) as f64;
        let cpu = (busy.saturating_sub(last_busy) as f64 / (wall * shared.workers.len() as f64))
            .clamp(0.0, 1.0) as f32;
        last_busy = busy;
        last_at = now;
        let status = shared.status();
        metrics::gauge!(crate::metrics_names::EGRESS_BPS).set(status.egress_bps as f64);
        let info = ShardInfo {
            load: ShardLoad {
                rooms: status.rooms,
                participants: status.participants,
                egress_bps: status.egress_bps,
                cpu,
            },
            state: status.state,
            ..ShardInfo::new(
                shared.shard_id.clone(),
                shared.signal_url.clone(),
                status.media_addrs.first().cloned().unwrap_or_default(),
                status.capacity.max_rooms,
                status.capacity.max_participants,
            )
        };
        // Without the registry the calls go on; only new placements miss this shard.
        let beat = registry.heartbeat(&info, DEFAULT_SHARD_TTL).await;
        if let Ok(true) = beat {
            shared.begin_drain();
        }
        if beat.is_ok() {
            metrics::gauge!(crate::metrics_names::HEARTBEAT_TIMESTAMP)
                .set(surge_cluster::token::unix_now() as f64);
        }
        let rooms = shared.occupancy.hosted_rooms();
        let refreshed = registry
            .refresh_pins(&shared.shard_id, &rooms, DEFAULT_PIN_TTL)
            .await;
        let failure = beat.err().or(refreshed.err());
        match (&failure, registry_down) {
            (Some(e), false) => {
                tracing::warn!(%e, "registry unreachable: calls go on; heartbeats retry every second");
            }
            (None, true) => tracing::info!("registry answers again: heartbeats resumed"),
            _ => {}
        }
        registry_down = failure.is_some();
    }
}

/// Ready while the workers run and the shard is not draining. A draining shard keeps its
/// calls and still answers the API (its per-shard Services publish not-ready addresses);
/// it only leaves the pool of new work. A failed worker makes it unready for good (the
/// process exits for a restart).
pub(crate) fn ready_gate(shared: Arc<Shared>) -> Gate {
    Arc::new(move || {
        let failed: Vec<usize> = shared
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.has_failed())
            .map(|(index, _)| index)
            .collect();
        if !failed.is_empty() {
            Err(format!(
                "sfu_worker_failed: media worker {failed:?} failed; the shard exits for a restart"
            ))
        } else if shared.stopped.load(Ordering::Acquire) {
            Err("the shard is stopped".to_owned())
        } else if shared.occupancy.is_draining() {
            Err("the shard is draining".to_owned())
        } else {
            Ok(())
        }
    })
}
