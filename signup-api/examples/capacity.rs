//! Capacity measurement (issue 4's benchmark; not a test): on this machine, in one run,
//!
//! 1. raw Argon2id hashes per second on all cores (one thread per core, each reusing its
//!    memory, the API's parameters);
//! 2. signups per second through the whole API (HTTP, validation, limits, idempotency and
//!    duplicate checks, the hashing pool, SQLite with synchronous=FULL), offered open-loop
//!    at 1.5× the raw rate so the API is saturated;
//! 3. the same at 10× the raw rate: goodput, how fast the 429s come back, and p99 latency
//!    of the accepted signups against the budget plus one hash time.
//!
//! Run: `cargo run -p surge-signup-api --example capacity -- [SECONDS_PER_PHASE]`
//! (dependencies, Argon2 included, are optimised even in the dev profile; add
//! `--release` for a fully optimised build). The load generator shares the machine with
//! the API, so the figures are a floor.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use surge_cluster::{MemoryRegistry, TokenSigner};
use surge_signup_api::hashing::HashParams;
use surge_signup_api::{Api, ApiConfig, ApiDeps};
use tokio_util::sync::CancellationToken;

fn raw_hash_rate(params: HashParams, threads: usize, secs: f64) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let count = count.clone();
            std::thread::spawn(move || {
                let p = Params::new(params.m_kib, params.t, params.p, Some(32)).unwrap();
                let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
                let mut memory = vec![Block::default(); argon2.params().block_count()];
                let mut out = [0u8; 32];
                while Instant::now() < deadline {
                    let salt: [u8; 16] = rand::random();
                    argon2
                        .hash_password_into_with_memory(
                            b"correct horse battery",
                            &salt,
                            &mut out,
                            &mut memory,
                        )
                        .unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

#[derive(Default)]
struct Results {
    /// (status, latency) of every request.
    samples: Vec<(u16, Duration)>,
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

/// Offers `rate` signups per second for `secs`, open-loop (arrivals on a schedule, never
/// waiting for answers), and waits for every answer.
async fn offer(base: &str, rate: f64, secs: f64, tag: &str) -> (Results, Duration) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .build()
        .unwrap();
    let results = Arc::new(Mutex::new(Results::default()));
    let total = (rate * secs) as u64;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let client = client.clone();
        let url = format!("{base}/v1/accounts");
        let results = results.clone();
        let email = format!("cap-{tag}-{i}@example.com");
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let status = client
                .post(url)
                .json(&serde_json::json!({"email": email, "password": "correct horse battery", "display_name": "Capacity"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            results.lock().unwrap().samples.push((status, sent.elapsed()));
        }));
    }
    let offered_for = started.elapsed();
    for t in tasks {
        let _ = t.await;
    }
    let results = std::mem::take(&mut *results.lock().unwrap());
    (results, offered_for)
}

fn report(name: &str, results: &Results, offered_for: Duration, capacity: f64) {
    let mut ok: Vec<Duration> = Vec::new();
    let mut rejected: Vec<Duration> = Vec::new();
    let mut other = 0;
    for (status, latency) in &results.samples {
        match status {
            201 => ok.push(*latency),
            429 => rejected.push(*latency),
            _ => other += 1,
        }
    }
    ok.sort();
    rejected.sort();
    let goodput = ok.len() as f64 / offered_for.as_secs_f64();
    println!(
        "{name}: offered {} in {:.1} s; 201: {} ({goodput:.1}/s = {:.0}% of raw capacity), 429: {}, other: {other}",
        results.samples.len(),
        offered_for.as_secs_f64(),
        ok.len(),
        100.0 * goodput / capacity,
        rejected.len()
    );
    println!(
        "  accepted latency p50 {:?} p99 {:?} max {:?}",
        percentile(&ok, 0.5),
        percentile(&ok, 0.99),
        ok.last().copied().unwrap_or_default()
    );
    if !rejected.is_empty() {
        println!(
            "  429 latency p50 {:?} p99 {:?} max {:?}",
            percentile(&rejected, 0.5),
            percentile(&rejected, 0.99),
            rejected.last().copied().unwrap_or_default()
        );
    }
}

#[tokio::main]
async fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let params = HashParams::OWASP;
    let raw = raw_hash_rate(params, threads, secs.min(5.0));
    let hash_time = Duration::from_secs_f64(threads as f64 / raw);
    println!(
        "raw Argon2id (m={} KiB, t={}, p={}) on {threads} threads: {raw:.1} hashes/s ({hash_time:?} per hash per thread)",
        params.m_kib, params.t, params.p
    );

    let dir = tempfile::tempdir().unwrap();
    let mut config =
        ApiConfig::with_database(format!("sqlite://{}/data/surge.db", dir.path().display()));
    config.signup_ip_per_min = 0;
    config.login_ip_per_min = 0;
    let budget = Duration::from_millis(config.latency_budget_ms);
    let shutdown = CancellationToken::new();
    let api = Api::start(
        &config,
        ApiDeps {
            registry: Arc::new(MemoryRegistry::new()),
            token_key: TokenSigner::generate(),
            redis_url: None,
            redis_prefix: "cap:".into(),
            shutdown: shutdown.clone(),
        },
    )
    .await
    .unwrap();
    let listener = surge_cluster::http::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = surge_cluster::http::finish_router(api.router());
    let server = tokio::spawn(surge_cluster::http::serve(
        listener,
        router,
        shutdown.clone(),
        Duration::from_secs(5),
    ));

    let (saturated, for1) = offer(&base, raw * 1.5, secs, "sat").await;
    report("saturated (1.5x raw)", &saturated, for1, raw);
    let (flood, for10) = offer(&base, raw * 10.0, secs, "flood").await;
    report("flood (10x raw)", &flood, for10, raw);
    println!(
        "  target: accepted p99 under budget + one hash = {:?}",
        budget + hash_time
    );
    // The machine may be shared: measure the raw rate again and compare with both.
    let raw_after = raw_hash_rate(params, threads, secs.min(5.0));
    let api_rate =
        saturated.samples.iter().filter(|(s, _)| *s == 201).count() as f64 / for1.as_secs_f64();
    println!(
        "raw Argon2id again: {raw_after:.1} hashes/s; API saturated {api_rate:.1} signups/s = {:.0}% of the mean raw rate",
        200.0 * api_rate / (raw + raw_after)
    );
    println!(
        "accounts in the database: {}",
        api.store().count_accounts().await.unwrap()
    );
    shutdown.cancel();
    let _ = server.await;
    api.stop().await;
}
