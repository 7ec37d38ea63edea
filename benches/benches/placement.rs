//! Room placement decisions per second: the pure rendezvous choice, and `Placer::place`
//! through the in-memory registry and through Redis (`$SURGE_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379/`; the Redis groups are skipped when it cannot be reached).
//!
//! Two paths matter: a room already pinned to a live shard (every join after the first:
//! two reads) and a new room (two reads and the compare-and-set pin). "concurrent" keeps 64
//! placements in flight, as an API replica under a burst does.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use surge_cluster::placement::{Placer, choose_shard};
use surge_cluster::registry::{MemoryRegistry, ShardInfo, ShardRegistry};
use tokio::runtime::Runtime;

const SHARDS: usize = 3;
const IN_FLIGHT: usize = 64;

fn shard(i: usize) -> ShardInfo {
    let mut shard = ShardInfo::new(
        format!("sfu-{i}"),
        format!("http://10.0.0.{i}:8080"),
        format!("10.0.0.{i}:5000"),
        100_000,
        100_000,
    );
    shard.load.participants = (i as u32 * 37) % 500;
    shard
}

fn choose(c: &mut Criterion) {
    let mut group = c.benchmark_group("placement/choose_shard");
    group.throughput(Throughput::Elements(1));
    for n in [3, 16, 128] {
        let shards: Vec<ShardInfo> = (0..n).map(shard).collect();
        let mut i = 0u64;
        group.bench_with_input(BenchmarkId::from_parameter(n), &shards, |b, shards| {
            b.iter(|| {
                i += 1;
                black_box(choose_shard(&format!("room-{i}"), shards));
            });
        });
    }
    group.finish();
}

/// Unique room names across benchmark runs in one process.
static NEXT_ROOM: AtomicU64 = AtomicU64::new(0);

fn new_room() -> String {
    format!("bench-room-{}", NEXT_ROOM.fetch_add(1, Ordering::Relaxed))
}

fn bench_backend(c: &mut Criterion, rt: &Runtime, name: &str, registry: Arc<dyn ShardRegistry>) {
    rt.block_on(async {
        for i in 0..SHARDS {
            registry
                .heartbeat(&shard(i), Duration::from_secs(600))
                .await
                .expect("registering the benchmark shards");
        }
    });
    // Short pins: what the benchmark leaves in Redis expires by itself.
    let placer = Placer::new(registry.clone()).with_pin_ttl(Duration::from_secs(10));
    rt.block_on(placer.place("hot-room"))
        .expect("first placement");

    let mut group = c.benchmark_group(format!("placement/{name}"));
    group.throughput(Throughput::Elements(1));
    group.bench_function("pinned_room", |b| {
        b.iter(|| rt.block_on(placer.place("hot-room")).expect("placement"));
    });
    group.bench_function("new_room", |b| {
        b.iter(|| rt.block_on(placer.place(&new_room())).expect("placement"));
    });
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));
    for (label, fresh) in [("concurrent_pinned", false), ("concurrent_new", true)] {
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let batch = (0..IN_FLIGHT).map(|_| {
                            let placer = placer.clone();
                            tokio::spawn(async move {
                                let room = if fresh { new_room() } else { "hot-room".into() };
                                placer.place(&room).await.map(|_| ())
                            })
                        });
                        for result in futures_join(batch).await {
                            result.expect("placement");
                        }
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
    rt.block_on(async {
        for i in 0..SHARDS {
            let _ = registry.deregister(&shard(i).id).await;
        }
    });
}

async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let handles: Vec<_> = handles.collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("placement task"));
    }
    out
}

fn placer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    bench_backend(c, &rt, "memory", Arc::new(MemoryRegistry::new()));

    let url =
        std::env::var("SURGE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let prefix = format!("surge-bench:{}:", std::process::id());
    match rt.block_on(surge_cluster::registry::connect(Some(&url), &prefix)) {
        Ok(registry) => bench_backend(c, &rt, "redis", registry),
        Err(e) => eprintln!("skipping the Redis placement benchmarks: {e}"),
    }
}

criterion_group!(benches, choose, placer);
criterion_main!(benches);
