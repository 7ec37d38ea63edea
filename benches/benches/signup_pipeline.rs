//! The signup pipeline without the password hash: what each signup costs besides Argon2.
//!
//! - `validate`: email normalisation and checks, password length, display name.
//! - `http_signup_sqlite`: a whole `POST /v1/accounts` through the router in-process
//!   (JSON, validation, local limits, duplicate check, the hashing pool's admission and
//!   queue hop, the SQLite insert with synchronous=FULL), with Argon2 at its minimum cost
//!   (8 KiB, 1 pass) so hashing is negligible.
//! - `http_duplicate`: a signup refused `409` before any hashing (the retry-storm path).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use surge_cluster::{MemoryRegistry, TokenSigner};
use surge_signup_api::{Api, ApiConfig, ApiDeps, validate};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

fn validate_fields(c: &mut Criterion) {
    let mut group = c.benchmark_group("signup_pipeline");
    group.throughput(Throughput::Elements(1));
    group.bench_function("validate", |b| {
        b.iter(|| {
            let email = validate::email(black_box("  Ada.Lovelace+surge@Example.COM ")).ok();
            let password = validate::password(black_box("correct horse battery")).ok();
            let name = validate::display_name(black_box(" Ada Lovelace ")).ok();
            (email, password, name)
        })
    });
    group.finish();
}

fn signup_request(email: &str) -> Request<Body> {
    let body = format!(
        r#"{{"email":"{email}","password":"correct horse battery","display_name":"Bench"}}"#
    );
    Request::post("/v1/accounts")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

fn http(c: &mut Criterion) {
    let Ok(rt) = Runtime::new() else { return };
    let Ok(dir) = tempfile::tempdir() else { return };
    let mut config =
        ApiConfig::with_database(format!("sqlite://{}/data/surge.db", dir.path().display()));
    config.argon2_memory_kib = 8;
    config.argon2_iterations = 1;
    config.signup_ip_per_min = 0;
    config.latency_budget_ms = 60_000;
    let shutdown = CancellationToken::new();
    let api = rt.block_on(Api::start(
        &config,
        ApiDeps {
            registry: Arc::new(MemoryRegistry::new()),
            token_key: TokenSigner::generate(),
            redis_url: None,
            redis_prefix: "bench:".into(),
            shutdown: shutdown.clone(),
        },
    ));
    let Ok(api) = api else {
        eprintln!("skipping the HTTP signup benches: the API did not start");
        return;
    };
    let router = surge_cluster::http::finish_router(api.router());
    let n = AtomicU64::new(0);
    let mut group = c.benchmark_group("signup_pipeline");
    group.throughput(Throughput::Elements(1));
    group.bench_function("http_signup_sqlite", |b| {
        b.iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            let request = signup_request(&format!("bench{i}@example.com"));
            let status = rt
                .block_on(router.clone().oneshot(request))
                .map(|r| r.status().as_u16());
            assert_eq!(status, Ok(201));
        })
    });
    group.bench_function("http_duplicate", |b| {
        b.iter(|| {
            let status = rt
                .block_on(router.clone().oneshot(signup_request("bench0@example.com")))
                .map(|r| r.status().as_u16());
            assert_eq!(status, Ok(409));
        })
    });
    group.finish();
    shutdown.cancel();
    rt.block_on(api.stop());
}

criterion_group!(benches, validate_fields, http);
criterion_main!(benches);
