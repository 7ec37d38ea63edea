//! Rate-limit checks per second, the first lines of the signup path: the client key
//! (IPv6 by /64), the local governor check (one client, and a spray of 100,000 clients),
//! and the shared GCRA check in Redis (`$SURGE_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379/`; skipped when Redis cannot be reached), one at a time and 64
//! in flight as a busy replica has them.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use surge_signup_api::limits::{Action, Limits, LimitsConfig, Rate, client_key};
use tokio::runtime::Runtime;

const IN_FLIGHT: usize = 64;

fn generous() -> LimitsConfig {
    // Rates high enough that the benchmark measures the check, not refusals.
    LimitsConfig {
        signup_per_ip: Rate {
            per_minute: u32::MAX / 2,
            burst: 1_000_000,
        },
        login_per_ip: Rate {
            per_minute: u32::MAX / 2,
            burst: 1_000_000,
        },
        signup_global: Rate {
            per_minute: u32::MAX / 2,
            burst: 1_000_000,
        },
        create_room_per_account: Rate::OFF,
        join_per_account: Rate::OFF,
        heartbeat_per_account: Rate::OFF,
        contact_request_per_account: Rate::OFF,
        stream_ticket_per_account: Rate::OFF,
        ring_per_account: Rate::OFF,
    }
}

fn local(c: &mut Criterion) {
    let mut group = c.benchmark_group("rate_limit_local");
    group.throughput(Throughput::Elements(1));
    let v6: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap_or(Ipv6Addr::LOCALHOST);
    group.bench_function("client_key_ipv6", |b| {
        b.iter(|| client_key(black_box(Some(IpAddr::V6(v6)))))
    });
    let limits = Limits::new(generous(), None);
    group.bench_function("governor_one_client", |b| {
        b.iter(|| limits.check_local(Action::Signup, black_box(42)))
    });
    let n = AtomicU64::new(0);
    group.bench_function("governor_100k_clients", |b| {
        b.iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed) % 100_000;
            let ip = IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 + i as u32));
            limits.check_local(Action::Signup, client_key(Some(ip)))
        })
    });
    group.finish();
}

fn shared(c: &mut Criterion) {
    let url =
        std::env::var("SURGE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let Ok(rt) = Runtime::new() else { return };
    let prefix = format!("bench:{}:", std::process::id());
    // The connection manager spawns its driver: create it inside the runtime.
    let _entered = rt.enter();
    let Ok(limits) = Limits::with_redis_url(generous(), &url, &prefix) else {
        eprintln!("skipping the Redis rate-limit benches: bad URL {url}");
        return;
    };
    let ip = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    // Probe: a check that takes the full timeout means Redis is not there.
    let started = Instant::now();
    let _ = rt.block_on(limits.check(Action::Signup, ip));
    if started.elapsed() > Duration::from_millis(250) {
        eprintln!("skipping the Redis rate-limit benches: {url} does not answer");
        return;
    }
    let mut group = c.benchmark_group("rate_limit_redis");
    group.throughput(Throughput::Elements(1));
    group.bench_function("gcra_ip_and_global_sequential", |b| {
        b.iter(|| rt.block_on(limits.check(Action::Signup, ip)))
    });
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));
    group.bench_function("gcra_ip_and_global_64_in_flight", |b| {
        b.iter(|| {
            rt.block_on(async {
                let checks = (0..IN_FLIGHT).map(|i| {
                    let limits = limits.clone();
                    let ip = Some(IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 + i as u32)));
                    async move { limits.check(Action::Signup, ip).await }
                });
                futures_join_all(checks).await
            })
        })
    });
    group.finish();
}

/// `futures::future::join_all` without adding the crate: spawn and await.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> usize
where
    F: std::future::Future<Output = Result<(), surge_signup_api::limits::Limited>> + Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut ok = 0;
    for h in handles {
        if matches!(h.await, Ok(Ok(()))) {
            ok += 1;
        }
    }
    ok
}

criterion_group!(benches, local, shared);
criterion_main!(benches);
