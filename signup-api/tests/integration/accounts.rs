//! Signup floods, idempotency, login/logout, restart durability.

use std::collections::HashMap;

use serde_json::json;
use surge_signup_api::{Api, ApiDeps};

use crate::common::{Db, TestApi, TestDb, assert_error, random_hex};

/// 1,000 concurrent signups of which 200 reuse an email: exactly 800 accounts, 200 409s,
/// no 5xx.
async fn flood(db: Db) {
    let test_db = TestDb::new(db);
    let api = TestApi::start(&test_db.config(), None).await;
    let tag = random_hex();
    let emails: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                "user{}-{tag}@example.com",
                if i < 800 { i } else { i - 800 }
            )
        })
        .collect();
    let requests = emails.iter().map(|email| {
        let client = api.client.clone();
        let url = api.url("/v1/accounts");
        let email = email.clone();
        async move {
            client
                .post(url)
                .json(&json!({"email": email, "password": "correct horse battery", "display_name": "Flood"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    });
    let statuses = futures::future::join_all(requests).await;
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for s in statuses {
        *counts.entry(s).or_default() += 1;
    }
    assert_eq!(counts.get(&201), Some(&800), "{counts:?}");
    assert_eq!(counts.get(&409), Some(&200), "{counts:?}");
    assert_eq!(api.accounts().await, 800);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flood_of_1000_signups_with_200_duplicates_sqlite() {
    flood(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flood_of_1000_signups_with_200_duplicates_postgres() {
    flood(Db::Postgres).await;
}

/// The same Idempotency-Key retried concurrently: one account, identical answers.
async fn idempotency(db: Db) {
    let test_db = TestDb::new(db);
    let api = TestApi::start(&test_db.config(), None).await;
    let email = format!("idem-{}@example.com", random_hex());
    let key = format!("key-{}", random_hex());
    let requests = (0..20).map(|_| {
        let client = api.client.clone();
        let url = api.url("/v1/accounts");
        let (email, key) = (email.clone(), key.clone());
        async move {
            let r = client
                .post(url)
                .header("Idempotency-Key", key)
                .json(&json!({"email": email, "password": "correct horse battery", "display_name": "Idem"}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    });
    let answers = futures::future::join_all(requests).await;
    let first = answers[0].clone();
    assert_eq!(first.0, 201, "{}", first.1);
    for answer in &answers {
        assert_eq!(answer, &first);
    }
    assert_eq!(api.accounts().await, 1);
    // The same key for another request is refused, and writes nothing.
    let res = api
        .client
        .post(api.url("/v1/accounts"))
        .header("Idempotency-Key", &key)
        .json(&json!({"email": format!("other-{}@example.com", random_hex()), "password": "correct horse battery", "display_name": "Idem"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    assert_eq!(api.accounts().await, 1);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_signup_under_concurrency_sqlite() {
    idempotency(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_signup_under_concurrency_postgres() {
    idempotency(Db::Postgres).await;
}

async fn login_logout(db: Db) {
    let test_db = TestDb::new(db);
    let api = TestApi::start(&test_db.config(), None).await;
    let email = format!("Ada-{}@Example.com", random_hex());
    let (id, token) = api.user(&email).await;
    let me = api.get("/v1/me", Some(&token)).await;
    assert_eq!(me.0, 200);
    assert_eq!(me.1["id"], id.as_str());
    assert_eq!(me.1["email"], email.to_lowercase());
    // Wrong password and unknown email: one answer.
    let wrong = api
        .post(
            "/v1/sessions",
            json!({"email": email, "password": "wrong password!"}),
            None,
        )
        .await;
    assert_error(&wrong, 401, "invalid_credentials");
    let unknown = api
        .post(
            "/v1/sessions",
            json!({"email": "nobody@example.com", "password": "wrong password!"}),
            None,
        )
        .await;
    assert_error(&unknown, 401, "invalid_credentials");
    assert_eq!(wrong.1, unknown.1);
    let res = api
        .client
        .delete(api.url("/v1/sessions/current"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_error(
        &api.get("/v1/me", Some(&token)).await,
        401,
        "invalid_session",
    );
    api.stop().await;
}

#[tokio::test]
async fn login_me_logout_sqlite() {
    login_logout(Db::Sqlite).await;
}

#[tokio::test]
async fn login_me_logout_postgres() {
    login_logout(Db::Postgres).await;
}

/// `surge up` restarted on the same data directory keeps its accounts.
#[tokio::test]
async fn accounts_survive_a_restart_on_the_same_sqlite_file() {
    let test_db = TestDb::new(Db::Sqlite);
    let config = test_db.config();
    let api = TestApi::start(&config, None).await;
    let email = format!("keep-{}@example.com", random_hex());
    assert_eq!(api.signup(&email).await.0, 201);
    api.stop().await;
    let api = TestApi::start(&config, None).await;
    assert_eq!(api.accounts().await, 1);
    assert_error(&api.signup(&email).await, 409, "email_taken");
    let login = api
        .post(
            "/v1/sessions",
            json!({"email": email, "password": "correct horse battery"}),
            None,
        )
        .await;
    assert_eq!(login.0, 201, "{}", login.1);
    api.stop().await;
}

/// An unreachable database is one clear line at start.
#[tokio::test]
async fn unreachable_database_is_one_line_at_start() {
    let config = surge_signup_api::ApiConfig::with_database(
        "postgres://postgres:hunter2@127.0.0.1:1/nothing",
    );
    let err = Api::start(
        &config,
        ApiDeps {
            registry: std::sync::Arc::new(surge_cluster::MemoryRegistry::new()),
            token_key: surge_cluster::TokenSigner::generate(),
            redis_url: None,
            redis_prefix: "x:".into(),
            shutdown: tokio_util::sync::CancellationToken::new(),
        },
    )
    .await
    .err()
    .expect("start fails");
    let line = format!("{err:#}");
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("127.0.0.1:1"), "{line}");
    assert!(!line.contains("hunter2"), "{line}");
}

/// A signup flood beyond the hashing capacity: every refusal is a 429 `overloaded` with
/// Retry-After (never a 5xx, never a timeout), and a login during the flood still gets
/// through on its reserved share.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_is_429_with_retry_after_and_logins_keep_their_share() {
    let test_db = TestDb::new(Db::Sqlite);
    let mut config = test_db.config();
    config.argon2_memory_kib = 8192;
    config.argon2_iterations = 2;
    config.hash_threads = 1;
    config.latency_budget_ms = 200;
    let api = TestApi::start(&config, None).await;
    let tag = random_hex();
    let email = format!("existing-{tag}@example.com");
    assert_eq!(api.signup(&email).await.0, 201);
    let signups = (0..300).map(|i| {
        let client = api.client.clone();
        let url = api.url("/v1/accounts");
        let tag = tag.clone();
        async move {
            let r = client
                .post(url)
                .json(&json!({"email": format!("f{i}-{tag}@example.com"), "password": "correct horse battery", "display_name": "F"}))
                .send()
                .await
                .unwrap();
            let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (status, retry, body["error"]["code"].as_str().map(str::to_owned))
        }
    });
    let login = async {
        api.post(
            "/v1/sessions",
            json!({"email": email, "password": "correct horse battery"}),
            None,
        )
        .await
    };
    let (results, login) = tokio::join!(futures::future::join_all(signups), login);
    assert_eq!(login.0, 201, "login during the flood: {}", login.1);
    let mut created = 0;
    let mut overloaded = 0;
    for (status, retry, code) in results {
        match status {
            201 => created += 1,
            429 => {
                assert_eq!(code.as_deref(), Some("overloaded"));
                assert!(retry.is_some_and(|s| s >= 1));
                overloaded += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        created >= 1 && overloaded >= 1,
        "{created} created, {overloaded} refused"
    );
    assert_eq!(api.accounts().await, 1 + created);
    api.stop().await;
}

/// `sqlite::memory:` works too (reads share the one connection that holds the data).
#[tokio::test]
async fn in_memory_sqlite_works() {
    let mut config = surge_signup_api::ApiConfig::with_database("sqlite::memory:");
    config.argon2_memory_kib = 64;
    config.argon2_iterations = 1;
    config.signup_ip_per_min = 0;
    config.login_ip_per_min = 0;
    let api = TestApi::start(&config, None).await;
    let (_, token) = api.user("mem@example.com").await;
    assert_eq!(api.get("/v1/me", Some(&token)).await.0, 200);
    assert_eq!(api.accounts().await, 1);
    api.stop().await;
}
