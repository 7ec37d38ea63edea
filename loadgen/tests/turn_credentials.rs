#![allow(clippy::unwrap_used)]
//! TURN (issue 13): an API with `--turn-urls`/`--turn-secret` hands each joiner short-lived
//! TURN REST credentials, before the join (`GET /v1/ice-servers`) and beside the SDP answer
//! (WHIP `Link` headers), which a str0m participant reads. An API without TURN hands none.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use surge_cluster::{MemoryRegistry, ShardRegistry, TokenSigner};
use surge_participant::{Participant, ParticipantConfig};
use surge_signup_api::turn::{TurnSecret, credential};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "test-turn-secret-0123456789";
const TURN_UDP: &str = "turn:127.0.0.1:3478?transport=udp";
const TURN_TCP: &str = "turn:127.0.0.1:3478?transport=tcp";

fn unix_now() -> u64 {
    surge_cluster::token::unix_now()
}

/// Signs a user up and logs in; returns the session token.
async fn session(http: &reqwest::Client, base: &str, email: &str) -> String {
    let password = "violet-Harbor-47-quietly-Tunes!";
    let r = http
        .post(format!("{base}/v1/accounts"))
        .json(&json!({"email": email, "password": password, "display_name": "Turn Tester"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r: Value = http
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["token"].as_str().unwrap().to_owned()
}

/// Checks one TURN entry: the expiry lies about `ttl` ahead, the user part is opaque, the
/// credential is the HMAC coturn computes.
fn assert_turn_credentials(username: &str, password: &str, account_email: &str, ttl: u64) {
    let (expiry, user) = username.split_once(':').unwrap();
    let expiry: u64 = expiry.parse().unwrap();
    let now = unix_now();
    assert!(
        (now + ttl - 60..=now + ttl + 5).contains(&expiry),
        "{expiry} vs {now}"
    );
    assert_eq!(user.len(), 16);
    assert!(user.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!username.contains(account_email));
    assert_eq!(password, credential(&TurnSecret::new(SECRET), username));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_carry_turn_credentials_that_a_participant_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::cheap_api_config(dir.path());
    config.signup_ip_per_min = 0;
    config.login_ip_per_min = 0;
    config.turn_urls = vec![TURN_UDP.into(), TURN_TCP.into()];
    config.turn_secret = Some(TurnSecret::new(SECRET));
    config.turn_credential_ttl_secs = 600;
    let registry = Arc::new(MemoryRegistry::new());
    let key = TokenSigner::generate();
    let (shard, stop_shard) = common::serve_shard("shard-t", registry.clone(), &key).await;
    for _ in 0..100 {
        if !registry.live_shards().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shutdown = CancellationToken::new();
    let api = common::start_api(&config, registry.clone(), key, shutdown.clone()).await;
    let (listener, base) = common::listen().await;
    let stop_api = CancellationToken::new();
    common::serve(listener, api.router(), Vec::new(), stop_api.clone());

    let http = reqwest::Client::new();
    let email = "turn-tester@example.com";
    let token = session(&http, &base, email).await;

    // Before the join: JSON, not cacheable.
    assert_eq!(
        http.get(format!("{base}/v1/ice-servers"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = http
        .get(format!("{base}/v1/ice-servers"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    let servers = body["ice_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{body}");
    assert_eq!(servers[0]["urls"], json!([TURN_UDP, TURN_TCP]));
    assert_turn_credentials(
        servers[0]["username"].as_str().unwrap(),
        servers[0]["credential"].as_str().unwrap(),
        email,
        600,
    );

    // Beside the SDP answer: the participant reads the Link headers.
    let room: Value = http
        .post(format!("{base}/v1/rooms"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let room = room["id"].as_str().unwrap();
    let signal_url = format!("{base}/v1/rooms/{room}/participants");
    let participant = Participant::join(ParticipantConfig::new(&signal_url, &token))
        .await
        .unwrap();
    let servers = participant.ice_servers();
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(servers[0].urls, [TURN_UDP, TURN_TCP]);
    assert_turn_credentials(
        servers[0].username.as_deref().unwrap(),
        servers[0].credential.as_deref().unwrap(),
        email,
        600,
    );
    participant.leave().await.unwrap();

    stop_api.cancel();
    shutdown.cancel();
    api.stop().await;
    stop_shard.cancel();
    shard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_turn_there_are_no_ice_servers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::cheap_api_config(dir.path());
    config.signup_ip_per_min = 0;
    config.login_ip_per_min = 0;
    let registry = Arc::new(MemoryRegistry::new());
    let shutdown = CancellationToken::new();
    let api = common::start_api(&config, registry, TokenSigner::generate(), shutdown.clone()).await;
    let (listener, base) = common::listen().await;
    let stop_api = CancellationToken::new();
    common::serve(listener, api.router(), Vec::new(), stop_api.clone());
    let http = reqwest::Client::new();
    let token = session(&http, &base, "no-turn@example.com").await;
    let body: Value = http
        .get(format!("{base}/v1/ice-servers"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"ice_servers": []}));
    stop_api.cancel();
    shutdown.cancel();
    api.stop().await;
}

#[tokio::test]
async fn turn_urls_without_a_secret_do_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::cheap_api_config(dir.path());
    config.turn_urls = vec![TURN_UDP.into()];
    let started = surge_signup_api::Api::start(
        &config,
        surge_signup_api::ApiDeps {
            registry: Arc::new(MemoryRegistry::new()),
            token_key: TokenSigner::generate(),
            redis_url: None,
            redis_prefix: "unused:".into(),
            shutdown: CancellationToken::new(),
        },
    )
    .await;
    let err = started.err().unwrap().to_string();
    assert!(err.contains("--turn-secret"), "{err}");
}
