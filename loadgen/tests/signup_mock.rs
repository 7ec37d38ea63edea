#![allow(clippy::unwrap_used)]
//! A short signup run against a scripted API on loopback: checks the client's side of the
//! contract (Retry-After honoured, statuses classified, follow-ups sent) and the report,
//! independently of how the real API behaves today.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use serde_json::{Value, json};
use surge_loadgen::report;
use surge_loadgen::signup::{self, SignupArgs};

#[derive(Default)]
struct Mock {
    emails: Mutex<HashSet<String>>,
    requests: AtomicU64,
    logins: AtomicU64,
    heartbeats: AtomicU64,
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": code}})),
    )
        .into_response()
}

async fn accounts(State(m): State<Arc<Mock>>, Json(body): Json<Value>) -> Response {
    let n = m.requests.fetch_add(1, Ordering::Relaxed);
    // Every fourth request is shed, as an overloaded API would.
    if n % 4 == 3 {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "overloaded");
        r.headers_mut().insert("retry-after", "1".parse().unwrap());
        return r;
    }
    let email = body["email"].as_str().unwrap_or_default().to_owned();
    let password = body["password"].as_str().unwrap_or_default();
    let parts: Vec<&str> = email.split('@').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_email");
    }
    if password.len() < 10 {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "weak_password");
    }
    if !m.emails.lock().unwrap().insert(email.clone()) {
        return error(StatusCode::CONFLICT, "email_taken");
    }
    (StatusCode::CREATED, Json(json!({"id": n, "email": email}))).into_response()
}

async fn sessions(State(m): State<Arc<Mock>>, Json(_): Json<Value>) -> Response {
    m.logins.fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::CREATED,
        Json(json!({"token": "t0ken", "expires_at": 0})),
    )
        .into_response()
}

async fn presence(State(m): State<Arc<Mock>>, headers: HeaderMap) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer t0ken") {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    m.heartbeats.fetch_add(1, Ordering::Relaxed);
    (StatusCode::OK, Json(json!({"status": "online"}))).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_run_against_a_scripted_api() {
    let mock = Arc::new(Mock::default());
    let app = Router::new()
        .route("/v1/accounts", post(accounts))
        .route("/v1/sessions", post(sessions))
        .route("/v1/presence", put(presence))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut args = SignupArgs::new(format!("http://{addr}"));
    args.rate = Some(40.0);
    args.duration = Some(Duration::from_secs(3));
    args.duplicate_share = 0.1;
    args.invalid_share = 0.1;
    args.login_share = 0.5;
    args.heartbeats = 2;
    args.heartbeat_interval = Duration::from_millis(200);
    args.source_ips = surge_loadgen::client::SourceIps::count(3);
    args.seed = Some(42);
    let r = signup::run(&args, true).await.unwrap();

    let o = &r.outcomes;
    // 120 arrivals expected (sigma ~11).
    assert!((60..=180).contains(&o.offered), "{o:?}");
    assert!(
        o.created_first_try > 0 && o.created_after_retry > 0,
        "{o:?}"
    );
    assert!(o.refused_as_expected > 0, "{o:?}");
    assert_eq!(o.unexpected, 0, "{o:?}");
    assert_eq!(o.failed + o.unfinished + o.dropped_by_loadgen, 0, "{o:?}");
    assert!(r.status_mix.get("429") > 0 && r.status_mix.get("201") > 0);
    assert!(r.error_codes.get("429 overloaded") > 0);
    assert!(r.error_codes.get("422 invalid_email") + r.error_codes.get("422 weak_password") > 0);
    // Retries waited for Retry-After (1 s, plus jitter) from the shed answer.
    assert!(
        r.eventual_created.max_ms >= 1000.0,
        "{:?}",
        r.eventual_created
    );
    assert!(r.latency.accepted.count > 0 && r.latency.rejected.count > 0);
    assert!(r.shed_share > 0.1 && r.shed_share < 0.4, "{}", r.shed_share);
    assert!(mock.logins.load(Ordering::Relaxed) > 0);
    assert!(mock.heartbeats.load(Ordering::Relaxed) > 0);
    assert_eq!(r.follow_ups.heartbeat_status.get("401"), 0);
    assert!(r.verdict.pass, "{}", r.verdict.line);
    assert!(r.verdict.line.starts_with("PASS"));
    assert!(!r.timeline.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let written = report::write(dir.path(), &r, &report::signup_page(&r)).unwrap();
    let html = std::fs::read_to_string(&written.html).unwrap();
    for needle in [
        "<svg",
        "Throughput over time",
        "Latency over time",
        "Status mix",
        "p99.9",
        "PASS",
    ] {
        assert!(html.contains(needle), "report.html lacks {needle}");
    }
    assert!(!html.contains("<script"), "the report is static");
    let json: Value = serde_json::from_slice(&std::fs::read(&written.json).unwrap()).unwrap();
    assert_eq!(json["outcomes"]["offered"], o.offered);
    assert!(json["timeline"].as_array().is_some_and(|t| !t.is_empty()));
    let back: signup::SignupResult = serde_json::from_value(json).unwrap();
    assert_eq!(back.outcomes.offered, o.offered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_fails_the_verdict() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut args = SignupArgs::new(format!("http://127.0.0.1:{port}"));
    args.rate = Some(20.0);
    args.duration = Some(Duration::from_secs(1));
    args.seed = Some(1);
    let r = signup::run(&args, true).await.unwrap();
    assert!(!r.verdict.pass);
    assert!(r.verdict.line.starts_with("FAIL"));
    assert!(r.status_mix.get("transport_error") > 0);
    assert_eq!(r.outcomes.failed, r.outcomes.offered);
}
