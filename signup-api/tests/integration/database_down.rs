//! A database that stops answering: 503 + Retry-After (the API stays ready and says so on
//! its admin status), nothing half-made, and service resumes by itself when it is back. PostgreSQL is reached through a TCP proxy the test
//! can cut.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::common::{TestApi, TestDb, random_hex};

/// Forwards connections to PostgreSQL while `up`; cutting it drops every open connection.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    cut: std::sync::Mutex<CancellationToken>,
}

impl Proxy {
    async fn start(target: String) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let this = Arc::new(Self {
            port: listener.local_addr().unwrap().port(),
            up: Arc::new(AtomicBool::new(true)),
            cut: std::sync::Mutex::new(CancellationToken::new()),
        });
        let proxy = this.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !proxy.up.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused-ish
                }
                let cut = proxy.cut.lock().unwrap().clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = cut.cancelled() => {}
                    }
                });
            }
        });
        this
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            let mut cut = self.cut.lock().unwrap();
            cut.cancel();
            *cut = CancellationToken::new();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_is_503_then_recovers() {
    let mut test_db = TestDb::new(crate::common::Db::Postgres);
    let real: reqwest::Url = test_db.url.parse().unwrap();
    let target = format!(
        "{}:{}",
        real.host_str().unwrap_or("127.0.0.1"),
        real.port().unwrap_or(5432)
    );
    let proxy = Proxy::start(target).await;
    let mut via = real.clone();
    via.set_host(Some("127.0.0.1")).unwrap();
    via.set_port(Some(proxy.port)).unwrap();
    test_db.url = via.to_string();
    let api = TestApi::start(&test_db.config(), None).await;
    let tag = random_hex();
    assert_eq!(
        api.signup(&format!("before-{tag}@example.com")).await.0,
        201
    );

    proxy.set_up(false);
    let res = api
        .client
        .post(api.url("/v1/accounts"))
        .json(&serde_json::json!({"email": format!("during-{tag}@example.com"), "password": "correct horse battery", "display_name": "D"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "database_unavailable");
    // Still ready: it answers, with a JSON 503 where the database is needed.
    assert_eq!(api.get("/readyz", None).await.0, 200);
    let database = api.dependency("database").await;
    assert_eq!(database["up"], false, "{database}");
    let res = api
        .client
        .post(api.url("/v1/sessions"))
        .json(&serde_json::json!({"email": format!("before-{tag}@example.com"), "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503, "logins need the database too");
    assert!(res.headers().contains_key("retry-after"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "database_unavailable");

    proxy.set_up(true);
    let mut recovered = false;
    for _ in 0..40 {
        if api.signup(&format!("after-{tag}@example.com")).await.0 == 201 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(recovered, "signups work again once the database is back");
    assert_eq!(api.dependency("database").await["up"], true);
    // Nothing half-made: the refused signup does not exist.
    assert_eq!(api.accounts().await, 2);
    assert_eq!(
        api.signup(&format!("during-{tag}@example.com")).await.0,
        201,
        "the email refused with 503 was never written"
    );
    api.stop().await;
}
