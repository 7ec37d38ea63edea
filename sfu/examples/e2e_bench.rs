//! End-to-end forwarding benchmark (not a test): an in-process shard and real str0m
//! participants over loopback UDP. M rooms, each with one publisher (three VP8 simulcast
//! layers + Opus) and N subscribers; reports forwarded RTP packets per second and per
//! busy worker-CPU-second (SRTP included), and the CPU cost per forwarded stream.
//!
//! `cargo run --release -p surge-sfu --example e2e_bench -- [rooms] [subscribers] [seconds] [workers]`
//!
//! The participants run in the same process and compete for the same cores, so the
//! per-core figure (packets per busy worker second) is the one to compare.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use surge_cluster::http::{finish_router, serve};
use surge_cluster::registry::MemoryRegistry;
use surge_cluster::token::{JoinClaims, TokenKey, unix_now};
use surge_sfu::participant::{Participant, ParticipantConfig};
use surge_sfu::{SfuConfig, Shard, ShardDeps};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    // RUST_LOG=surge_sfu::worker=debug shows each worker's counters once a second.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rooms = args.first().copied().unwrap_or(2) as usize;
    let subscribers = args.get(1).copied().unwrap_or(4) as usize;
    let seconds = args.get(2).copied().unwrap_or(10);
    let workers = args.get(3).copied().unwrap_or(1) as usize;
    let scale = args.get(4).copied().unwrap_or(1);

    let mut config = SfuConfig::for_tests("bench");
    config.workers = Some(workers);
    let key = TokenKey::generate();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shard = Shard::start(
        &config,
        ShardDeps {
            registry: Arc::new(MemoryRegistry::new()),
            token_key: key.clone(),
            admin_token: None,
            default_signal_url: format!("http://{addr}"),
        },
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve(
        listener,
        finish_router(shard.router()),
        stop.clone(),
        Duration::from_secs(1),
    ));
    let token = |room: &str, user: &str| {
        let now = unix_now();
        key.issue(&JoinClaims {
            sub: user.to_owned(),
            name: user.to_owned(),
            room: room.to_owned(),
            shard: "bench".to_owned(),
            publish: true,
            subscribe: true,
            iat: now,
            exp: now + 3600,
        })
        .unwrap()
    };
    let mut participants = Vec::new();
    for r in 0..rooms {
        let room = format!("bench-{r}");
        let url = format!("http://{addr}/v1/sfu/rooms/{room}/participants");
        let mut publisher = ParticipantConfig::new(&url, &token(&room, "pub"));
        publisher.layer_bps = publisher.layer_bps.map(|b| b * scale);
        if scale == 0 {
            // Idle sessions only: what keeping them alive costs.
            publisher = publisher.subscriber_only();
        }
        participants.push(Participant::join(publisher).await.unwrap());
        for s in 0..subscribers {
            let mut config =
                ParticipantConfig::new(&url, &token(&room, &format!("sub{s}"))).subscriber_only();
            config.receive_interval = Some(Duration::from_millis(2));
            participants.push(Participant::join(config).await.unwrap());
        }
    }
    // Let ICE, DTLS, negotiation and layer choice settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = shard.status();
    let cpu_before = worker_cpu_seconds();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = shard.status();
    let cpu = worker_cpu_seconds() - cpu_before;
    let elapsed = started.elapsed().as_secs_f64();
    let forwarded = (after.forwarded_packets - before.forwarded_packets) as f64;
    let received = (after.received_packets - before.received_packets) as f64;
    let busy = after.busy_seconds - before.busy_seconds;
    let streams = rooms * subscribers * 2;
    println!("rooms={rooms} subscribers/room={subscribers} workers={workers} window={elapsed:.1}s");
    println!(
        "received {:.0} pkt/s, forwarded {:.0} pkt/s, worker busy {:.2} CPU-s/s",
        received / elapsed,
        forwarded / elapsed,
        busy / elapsed
    );
    if busy > 0.0 {
        println!(
            "forwarded per busy worker-second: {:.0} pkt/s/core; CPU per forwarded stream: {:.2}% of a core",
            forwarded / busy,
            busy / elapsed / streams as f64 * 100.0
        );
    }
    if cpu > 0.0 {
        println!(
            "worker thread CPU {:.2} s/s: forwarded per worker CPU-second {:.0} pkt/s/core",
            cpu / elapsed,
            forwarded / cpu
        );
    }
    let mut layers = [0u64; 3];
    for p in &participants {
        for t in p.stats().receiving("video") {
            if let Some(i) = ["q", "h", "f"]
                .iter()
                .position(|l| Some(*l) == t.layer.as_deref())
            {
                layers[i] += 1;
            }
        }
    }
    println!("subscribers' current video layer q/h/f: {layers:?}");
    drop(participants);
    stop.cancel();
    shard.stop().await;
}

/// User + system CPU seconds of the shard's worker threads, from /proc (Linux).
fn worker_cpu_seconds() -> f64 {
    let mut ticks = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let Some((comm, rest)) = stat.split_once(") ") else {
                continue;
            };
            if !comm.contains("sfu-worker") {
                continue;
            }
            let fields: Vec<&str> = rest.split(' ').collect();
            // After "pid (comm) ": state is field 0, utime 11, stime 12.
            ticks += fields
                .get(11)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            ticks += fields
                .get(12)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    ticks as f64 / 100.0
}
