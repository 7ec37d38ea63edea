//! Shared limits through Redis: two replicas share one budget; a Redis that dies mid-run
//! leaves the API on local limits, and shared limits resume when it is back.

use std::time::Duration;

use serde_json::json;

use crate::common::{Db, TestApi, TestDb, random_hex, redis_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_rate_budget() {
    let test_db = TestDb::new(Db::Postgres);
    let mut config = test_db.config();
    // Each replica alone would allow 5 (its local governor); together only 5 too.
    config.signup_ip_per_min = 1;
    config.signup_ip_burst = 5;
    let prefix = format!("test:{}:", random_hex());
    let a = TestApi::start(&config, Some((redis_url(), prefix.clone()))).await;
    let b = TestApi::start(&config, Some((redis_url(), prefix))).await;
    let tag = random_hex();
    let mut created = 0;
    let mut limited = 0;
    for i in 0..10 {
        let api = if i % 2 == 0 { &a } else { &b };
        let res = api
            .client
            .post(api.url("/v1/accounts"))
            .json(&json!({"email": format!("share{i}-{tag}@example.com"), "password": "correct horse battery", "display_name": "S"}))
            .send()
            .await
            .unwrap();
        match res.status().as_u16() {
            201 => created += 1,
            429 => {
                let retry: u64 = res.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(retry >= 1);
                let body: serde_json::Value = res.json().await.unwrap();
                assert_eq!(body["error"]["code"], "rate_limited");
                limited += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((created, limited), (5, 5));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_global_signup_rate() {
    let test_db = TestDb::new(Db::Sqlite);
    let mut config = test_db.config();
    // Per-IP limits off; all signups together: a burst of 3, then 1 a minute.
    config.signup_global_per_min = 1;
    config.signup_global_burst = 3;
    let prefix = format!("test:{}:", random_hex());
    let a = TestApi::start(&config, Some((redis_url(), prefix.clone()))).await;
    let b = TestApi::start(&config, Some((redis_url(), prefix))).await;
    let tag = random_hex();
    let mut created = 0;
    for i in 0..8 {
        let api = if i % 2 == 0 { &a } else { &b };
        let (status, body) = api.signup(&format!("global{i}-{tag}@example.com")).await;
        match status.as_u16() {
            201 => created += 1,
            429 => assert_eq!(body["error"]["code"], "rate_limited"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created, 3, "one global budget across both replicas");
    a.stop().await;
    b.stop().await;
}

/// A Redis of our own on a free loopback port.
pub struct OwnRedis {
    port: u16,
    child: tokio::process::Child,
}

impl OwnRedis {
    pub async fn start(port: u16) -> Self {
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed");
        let this = Self { port, child };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return this;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn key_exists(url: &str, key: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(&mut conn)
        .await
        .is_ok_and(|n| n == 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_then_back() {
    let port = free_port();
    let redis = OwnRedis::start(port).await;
    let url = redis.url();
    let test_db = TestDb::new(Db::Sqlite);
    let mut config = test_db.config();
    config.signup_ip_per_min = 1;
    config.signup_ip_burst = 4;
    config.login_ip_per_min = 600;
    config.login_ip_burst = 100;
    let prefix = "own:".to_owned();
    let api = TestApi::start(&config, Some((url.clone(), prefix.clone()))).await;
    let tag = random_hex();
    let ip_key = format!(
        "{prefix}rl:{{signup}}:ip:{:032x}",
        u32::from_be_bytes([127, 0, 0, 1])
    );
    assert_eq!(api.signup(&format!("r0-{tag}@example.com")).await.0, 201);
    assert!(
        key_exists(&url, &ip_key).await,
        "the shared limit is in use"
    );

    redis.kill().await;
    // Signups continue on local limits: 3 more fit the local burst of 4, then 429.
    for i in 1..4 {
        let (status, body) = api.signup(&format!("r{i}-{tag}@example.com")).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = api.signup(&format!("r9-{tag}@example.com")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let (status, _) = api.get("/readyz", None).await;
    assert_eq!(
        status, 200,
        "a Redis outage does not take the API out of the Service"
    );
    let redis_dep = api.dependency("redis").await;
    assert_eq!(redis_dep["up"], false, "{redis_dep}");
    assert!(redis_dep["error"].as_str().is_some_and(|e| !e.is_empty()));

    let redis = OwnRedis::start(port).await;
    // Shared limits resume by themselves: a login's shared key appears in the new Redis.
    let login_key = format!(
        "{prefix}rl:login:ip:{:032x}",
        u32::from_be_bytes([127, 0, 0, 1])
    );
    let mut resumed = false;
    for _ in 0..60 {
        let (status, _) = api
            .post(
                "/v1/sessions",
                json!({"email": format!("r0-{tag}@example.com"), "password": "correct horse battery"}),
                None,
            )
            .await;
        assert_eq!(status, 201);
        if key_exists(&url, &login_key).await {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(resumed, "shared limits resumed after Redis came back");
    let mut up = false;
    for _ in 0..20 {
        if api.dependency("redis").await["up"] == true {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(up, "the status shows Redis up again");
    api.stop().await;
    redis.kill().await;
}
