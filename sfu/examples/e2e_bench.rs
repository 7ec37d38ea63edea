//! End-to-end forwarding benchmark (not a test): an in-process shard and real str0m
//! participants over loopback UDP. M rooms, each with one publisher (three VP8 simulcast
//! layers + Opus) and N subscribers; reports forwarded RTP packets per second and per
//! busy worker-CPU-second (SRTP included), and the CPU cost per forwarded stream.
//!
//! `cargo run --release -p surge-sfu --example e2e_bench -- [rooms] [subscribers] [seconds] [workers] [rate×]`
//!
//! `rate×` multiplies the publishers' layer bitrates (0: publishers send nothing, which
//! measures what idle sessions cost). The shard is the one the tests use (`tests/common`).
//!
//! The participants run in the same process and compete for the same cores, so the
//! per-core figure (packets per busy worker second) is the one to compare.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use surge_participant::Participant;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/thread_cpu.rs"]
mod thread_cpu;

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rooms = args.first().copied().unwrap_or(2) as usize;
    let subscribers = args.get(1).copied().unwrap_or(4) as usize;
    let seconds = args.get(2).copied().unwrap_or(10);
    let workers = args.get(3).copied().unwrap_or(1) as usize;
    let scale = args.get(4).copied().unwrap_or(1);

    // RUST_LOG=surge_sfu::worker=debug shows each worker's counters once a second.
    let bench = common::TestShard::start_with(|c| c.workers = Some(workers)).await;
    let mut participants = Vec::new();
    for r in 0..rooms {
        let room = format!("bench-{r}");
        let mut publisher = bench.config(&room, "pub");
        publisher.layer_bps = publisher.layer_bps.map(|b| b * scale);
        if scale == 0 {
            // Idle sessions only: what keeping them alive costs.
            publisher = publisher.subscriber_only();
        }
        participants.push(Participant::join(publisher).await.unwrap());
        for s in 0..subscribers {
            let mut config = bench.config(&room, &format!("sub{s}")).subscriber_only();
            config.receive_interval = Some(Duration::from_millis(2));
            participants.push(Participant::join(config).await.unwrap());
        }
    }
    // Let ICE, DTLS, negotiation and layer choice settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = bench.shard.status();
    let cpu_before = thread_cpu::threads_named("sfu-worker");
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = bench.shard.status();
    let cpu = thread_cpu::threads_named("sfu-worker") - cpu_before;
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
    bench.stop().await;
}
