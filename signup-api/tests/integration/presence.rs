//! Presence: heartbeat, expiry, contacts, and the SSE stream showing a contact go online
//! and then offline when its heartbeats stop; in memory and on Redis.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::{Db, TestApi, TestDb, assert_error, random_hex, redis_url};

/// Reads SSE `presence` events from a response body.
pub struct Events {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl Events {
    pub fn new(res: reqwest::Response) -> Self {
        Self {
            body: Box::pin(res.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next presence event's data; panics after a generous 30 s.
    pub async fn next(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let frame: String = self.buffer.drain(..end + 2).collect();
                    if frame.lines().any(|l| l == "event: presence")
                        && let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: "))
                    {
                        return serde_json::from_str(data).unwrap();
                    }
                    continue;
                }
                let chunk = self.body.next().await.expect("stream open").unwrap();
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("a presence event within 30 s")
    }
}

async fn presence_flow(redis: Option<(String, String)>) {
    let test_db = TestDb::new(Db::Sqlite);
    let mut config = test_db.config();
    config.presence_ttl_secs = 3;
    let api = TestApi::start(&config, redis).await;
    let tag = random_hex();
    let (_, alice) = api.user(&format!("alice-{tag}@example.com")).await;
    let bob_email = format!("bob-{tag}@example.com");
    let (bob_id, bob) = api.user(&bob_email).await;
    let (status, contact) = api
        .post(
            "/v1/contacts",
            json!({"email": bob_email.to_uppercase()}),
            Some(&alice),
        )
        .await;
    assert_eq!(status, 201, "{contact}");
    assert_eq!(contact["user_id"], bob_id.as_str());
    assert_eq!(contact["status"], "offline");
    assert_error(
        &api.post(
            "/v1/contacts",
            json!({"email": "ghost@example.com"}),
            Some(&alice),
        )
        .await,
        404,
        "user_not_found",
    );
    // EventSource style: the token in the query.
    let res = api
        .client
        .get(api.url(&format!("/v1/presence/stream?token={alice}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut events = Events::new(res);
    assert_eq!(
        events.next().await,
        json!({"user_id": bob_id, "status": "offline"})
    );

    let req = api
        .client
        .put(api.url("/v1/presence"))
        .bearer_auth(&bob)
        .json(&json!({"status": "online"}))
        .send()
        .await
        .unwrap();
    assert_eq!(req.status(), 200);
    let body: Value = req.json().await.unwrap();
    assert_eq!(body, json!({"status": "online", "ttl_secs": 3}));
    assert_eq!(
        events.next().await,
        json!({"user_id": bob_id, "status": "online"})
    );
    let (_, list) = api
        .get(
            &format!("/v1/presence?ids={bob_id},unknown-user"),
            Some(&alice),
        )
        .await;
    assert_eq!(
        list,
        json!({"presence": [{"user_id": bob_id, "status": "online"}, {"user_id": "unknown-user", "status": "offline"}]})
    );
    // Bob's heartbeats stop: after the TTL he is offline, and the stream says so.
    assert_eq!(
        events.next().await,
        json!({"user_id": bob_id, "status": "offline"})
    );
    let (_, list) = api
        .get(&format!("/v1/presence?ids={bob_id}"), Some(&alice))
        .await;
    assert_eq!(list["presence"][0]["status"], "offline");
    let (_, contacts) = api.get("/v1/contacts", Some(&alice)).await;
    assert_eq!(contacts["contacts"][0]["user_id"], bob_id.as_str());

    let bad = api
        .client
        .put(api.url("/v1/presence"))
        .bearer_auth(&bob)
        .json(&json!({"status": "invisible"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    // The stream ends when the server shuts down.
    api.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), async {
        while events.body.next().await.is_some() {}
    })
    .await
    .expect("the stream ends at shutdown");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_in_memory() {
    presence_flow(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_on_redis() {
    presence_flow(Some((redis_url(), format!("test:{}:", random_hex())))).await;
}

/// The pub/sub connection resubscribes by itself: after Redis restarts, a contact's
/// heartbeat reaches the SSE stream again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_stream_survives_a_redis_restart() {
    use crate::redis_limits::{OwnRedis, free_port};
    let port = free_port();
    let redis = OwnRedis::start(port).await;
    let test_db = TestDb::new(Db::Sqlite);
    let mut config = test_db.config();
    config.presence_ttl_secs = 30;
    let api = TestApi::start(&config, Some((redis.url(), "restart:".into()))).await;
    let tag = random_hex();
    let (_, alice) = api.user(&format!("alice-{tag}@example.com")).await;
    let bob_email = format!("bob-{tag}@example.com");
    let (bob_id, bob) = api.user(&bob_email).await;
    let (status, _) = api
        .post("/v1/contacts", json!({"email": bob_email}), Some(&alice))
        .await;
    assert_eq!(status, 201);
    let res = api
        .client
        .get(api.url("/v1/presence/stream"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    let mut events = Events::new(res);
    assert_eq!(events.next().await["status"], "offline");
    redis.kill().await;
    let redis = OwnRedis::start(port).await;
    // Heartbeat until the store answers again (503 presence_unavailable meanwhile) and
    // the listener has resubscribed; each status differs so each one is a change.
    let statuses = ["online", "away", "busy"];
    let mut seen = None;
    for i in 0..60 {
        let status = statuses[i % 3];
        let res = api
            .client
            .put(api.url("/v1/presence"))
            .bearer_auth(&bob)
            .json(&json!({"status": status}))
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            let got = tokio::time::timeout(Duration::from_millis(500), events.next()).await;
            if let Ok(event) = got {
                assert_eq!(event["user_id"], bob_id.as_str());
                seen = Some(event);
                break;
            }
        } else {
            assert_eq!(res.status(), 503);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        seen.is_some(),
        "presence changes flow again after Redis restarted"
    );
    api.stop().await;
    redis.kill().await;
}
