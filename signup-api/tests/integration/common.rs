//! Test harness: an API served on a loopback port, on SQLite (temp dir), PostgreSQL (own
//! schema) and optionally Redis (own key prefix), with cheap Argon2 parameters.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use surge_cluster::health::Health;
use surge_cluster::{MemoryRegistry, ShardInfo, ShardRegistry, TokenSigner};
use surge_signup_api::{Api, ApiConfig, ApiDeps};
use tokio_util::sync::CancellationToken;

pub fn redis_url() -> String {
    std::env::var("SURGE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

pub fn postgres_url() -> String {
    std::env::var("SURGE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 6]>())
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The database of one test: a SQLite file in a temp dir, or a fresh PostgreSQL schema.
pub struct TestDb {
    pub url: String,
    pub schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn new(db: Db) -> Self {
        match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                Self {
                    url: format!("sqlite://{}/data/surge.db", dir.path().display()),
                    schema: None,
                    _dir: Some(dir),
                }
            }
            Db::Postgres => Self {
                url: postgres_url(),
                schema: Some(format!("t_{}", random_hex())),
                _dir: None,
            },
        }
    }

    /// The defaults on this database, with Argon2 made cheap so floods run in seconds,
    /// per-IP limits off (every test client is 127.0.0.1) and a generous latency budget.
    pub fn config(&self) -> ApiConfig {
        let mut c = ApiConfig::with_database(self.url.clone());
        c.database_schema = self.schema.clone();
        c.argon2_memory_kib = 64;
        c.argon2_iterations = 1;
        c.hash_threads = 2;
        c.latency_budget_ms = 60_000;
        c.signup_ip_per_min = 0;
        c.login_ip_per_min = 0;
        c
    }
}

/// The admin token of every test API (for `/v1/admin/status`).
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// One running API.
pub struct TestApi {
    pub base: String,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub api: Option<Api>,
    pub token_key: TokenSigner,
    /// Readiness and the dependencies' last checks; `check_now` refreshes them.
    pub health: Health,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub fn shard(id: &str) -> ShardInfo {
    ShardInfo::new(id, "http://127.0.0.1:9", "127.0.0.1:9", 100, 1000)
}

impl TestApi {
    /// Starts an API with one live shard in a memory registry.
    pub async fn start(config: &ApiConfig, redis: Option<(String, String)>) -> Self {
        let registry = Arc::new(MemoryRegistry::new());
        registry
            .heartbeat(&shard("shard-a"), Duration::from_secs(3600))
            .await
            .unwrap();
        Self::start_with(config, redis, registry).await
    }

    pub async fn start_with(
        config: &ApiConfig,
        redis: Option<(String, String)>,
        registry: Arc<dyn ShardRegistry>,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let token_key = TokenSigner::generate();
        let (redis_url, redis_prefix) = match redis {
            Some((url, prefix)) => (Some(url), prefix),
            None => (None, "unused:".into()),
        };
        let api = Api::start(
            config,
            ApiDeps {
                registry,
                token_key: token_key.clone(),
                redis_url,
                redis_prefix,
                shutdown: shutdown.clone(),
            },
        )
        .await
        .unwrap();
        let listener = surge_cluster::http::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Health::new(Vec::new(), api.dependencies());
        let router = surge_cluster::http::finish_router(
            api.router()
                .merge(surge_cluster::http::ops_routes(health.clone()))
                .merge(surge_cluster::admin::status_router(
                    health.clone(),
                    Some(ADMIN_TOKEN.into()),
                )),
        );
        let server = tokio::spawn(surge_cluster::http::serve(
            listener,
            router,
            shutdown.clone(),
            Duration::from_secs(5),
        ));
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            shutdown,
            api: Some(api),
            token_key,
            health,
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn accounts(&self) -> i64 {
        self.api
            .as_ref()
            .unwrap()
            .store()
            .count_accounts()
            .await
            .unwrap()
    }

    /// POST JSON, returning status, body and the Retry-After header.
    pub async fn post(&self, path: &str, body: Value, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.client.post(self.url(path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Checks the dependencies now; returns the one called `name` from the admin status.
    pub async fn dependency(&self, name: &str) -> Value {
        self.health.check_now().await;
        let status: Value = self
            .client
            .get(self.url("/v1/admin/status"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(status["ready"], true, "{status}");
        status["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no dependency {name} in {status}"))
    }

    pub async fn signup(&self, email: &str) -> (StatusCode, Value) {
        self.post(
            "/v1/accounts",
            json!({"email": email, "password": "correct horse battery", "display_name": "Test User"}),
            None,
        )
        .await
    }

    /// Signs up and logs in; returns (user id, session token).
    pub async fn user(&self, email: &str) -> (String, String) {
        let (status, body) = self.signup(email).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = self
            .post(
                "/v1/sessions",
                json!({"email": email, "password": "correct horse battery"}),
                None,
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["user"]["id"].as_str().unwrap().to_owned(),
            body["token"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
        if let Some(api) = self.api.take() {
            api.stop().await;
        }
    }
}

/// Asserts an error answer's status and code.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
}
