//! Password guessing against one account from many addresses: the per-account backoff
//! holds across replicas (through Redis) and on one process alone (no Redis).

use std::time::Duration;

use serde_json::json;

use crate::common::{Db, TestApi, TestDb, assert_error, random_hex, redis_url};

/// A login for `email` with `password`, from the client address `from` (the test client
/// is the trusted proxy that says so in `X-Forwarded-For`).
async fn login_from(
    api: &TestApi,
    email: &str,
    password: &str,
    from: &str,
) -> (reqwest::StatusCode, serde_json::Value, Option<u64>) {
    let res = api
        .client
        .post(api.url("/v1/sessions"))
        .header("x-forwarded-for", from)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (status, res.json().await.unwrap(), retry_after)
}

fn config(db: &TestDb) -> surge_signup_api::ApiConfig {
    let mut config = db.config();
    config.trusted_proxies = "127.0.0.1".parse().unwrap();
    // Each address may try only twice: the per-address limit alone would let a botnet
    // with many addresses guess on for ever.
    config.login_ip_per_min = 1;
    config.login_ip_burst = 2;
    config
}

async fn guessing_is_throttled(a: &TestApi, b: &TestApi) {
    let victim = format!("victim-{}@example.com", random_hex());
    let bystander = format!("bystander-{}@example.com", random_hex());
    a.user(&victim).await;
    a.user(&bystander).await;
    // Five free failures and a sixth that starts the wait, each from a new address,
    // alternating replicas.
    for i in 0..6 {
        let api = if i % 2 == 0 { a } else { b };
        let (status, body, _) =
            login_from(api, &victim, "wrong guess", &format!("203.0.113.{}", i + 1)).await;
        assert_eq!(status, 401, "attempt {i}: {body}");
    }
    // Now every attempt waits, from any address, on any replica, even with the right
    // password, and costs no hash.
    for (api, from) in [(a, "198.51.100.1"), (b, "198.51.100.2")] {
        let (status, body, retry_after) =
            login_from(api, &victim, "correct horse battery", from).await;
        assert_error(&(status, body), 429, "login_throttled");
        assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    }
    // Another account is not affected.
    let (status, body, _) =
        login_from(b, &bystander, "correct horse battery", "198.51.100.3").await;
    assert_eq!(status, 201, "{body}");
    // After the wait, the owner gets in, and that clears the count.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, body, _) = login_from(a, &victim, "correct horse battery", "198.51.100.4").await;
    assert_eq!(status, 201, "{body}");
    let (status, body, _) = login_from(b, &victim, "wrong guess", "198.51.100.5").await;
    assert_error(&(status, body), 401, "invalid_credentials");
}

#[tokio::test]
async fn password_guessing_from_many_addresses_is_throttled_per_account_across_replicas() {
    let db = TestDb::new(Db::Postgres);
    let config = config(&db);
    let prefix = format!("test:{}:", random_hex());
    let a = TestApi::start(&config, Some((redis_url(), prefix.clone()))).await;
    let b = TestApi::start(&config, Some((redis_url(), prefix))).await;
    guessing_is_throttled(&a, &b).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn password_guessing_is_throttled_without_redis() {
    let db = TestDb::new(Db::Sqlite);
    let api = TestApi::start(&config(&db), None).await;
    guessing_is_throttled(&api, &api).await;
    api.stop().await;
}

#[tokio::test]
async fn unknown_emails_are_throttled_like_real_ones() {
    let db = TestDb::new(Db::Sqlite);
    let api = TestApi::start(&config(&db), None).await;
    let nobody = format!("nobody-{}@example.com", random_hex());
    for i in 0..6 {
        let (status, body, _) =
            login_from(&api, &nobody, "guess", &format!("203.0.113.{}", i + 1)).await;
        assert_error(&(status, body), 401, "invalid_credentials");
    }
    let (status, body, _) = login_from(&api, &nobody, "guess", "198.51.100.9").await;
    assert_error(&(status, body), 429, "login_throttled");
    api.stop().await;
}
