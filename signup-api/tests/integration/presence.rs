//! Presence: heartbeat, expiry, contacts, and the SSE stream (opened with a ticket) showing
//! a contact go online and then offline when its heartbeats stop; in memory and on Redis.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::{Db, TestApi, TestDb, random_hex, redis_url};

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
        self.next_of("presence").await
    }

    /// Everything left in the stream until it ends.
    pub async fn rest(&mut self) -> String {
        let mut rest = std::mem::take(&mut self.buffer);
        while let Some(Ok(chunk)) = self.body.next().await {
            rest.push_str(&String::from_utf8_lossy(&chunk));
        }
        rest
    }

    /// Whether the stream has ended (the server closed it) within `wait`.
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, async {
            while let Some(Ok(_)) = self.body.next().await {}
        })
        .await
        .is_ok()
    }

    /// The next event called `name`'s data; panics after a generous 30 s.
    pub async fn next_of(&mut self, name: &str) -> Value {
        let wanted = format!("event: {name}");
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let frame: String = self.buffer.drain(..end + 2).collect();
                    if frame.lines().any(|l| l == wanted)
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
        .unwrap_or_else(|_| panic!("a {name} event within 30 s"))
    }
}

/// Gets a single-use ticket with `token` and opens the presence stream with it.
pub async fn open_stream(api: &TestApi, token: &str) -> reqwest::Response {
    let (status, ticket) = api
        .post("/v1/presence/tickets", json!({}), Some(token))
        .await;
    assert_eq!(status, 201, "{ticket}");
    let ticket = ticket["ticket"].as_str().unwrap();
    api.client
        .get(api.url(&format!("/v1/presence/stream?ticket={ticket}")))
        .send()
        .await
        .unwrap()
}

/// `a` asks `b` (by email) and `b` accepts: they are contacts.
pub async fn befriend(api: &TestApi, a: &str, b_email: &str, b: &str) {
    let (status, body) = api
        .post("/v1/contacts", json!({"email": b_email}), Some(a))
        .await;
    assert_eq!(status, 202, "{body}");
    let (_, list) = api.get("/v1/contacts", Some(b)).await;
    let from = list["incoming"][0]["user_id"].as_str().unwrap().to_owned();
    let (status, body) = api
        .post(
            &format!("/v1/contacts/requests/{from}/accept"),
            json!({}),
            Some(b),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

pub(crate) async fn heartbeat(api: &TestApi, token: &str, status: &str) -> reqwest::Response {
    api.client
        .put(api.url("/v1/presence"))
        .bearer_auth(token)
        .json(&json!({"status": status}))
        .send()
        .await
        .unwrap()
}

async fn presence_flow(redis: Option<(String, String)>) {
    let test_db = TestDb::new(Db::Sqlite);
    let mut config = test_db.config();
    config.presence_ttl_secs = 3;
    let api = TestApi::start(&config, redis).await;
    let tag = random_hex();
    let alice_email = format!("alice-{tag}@example.com");
    let (alice_id, alice) = api.user(&alice_email).await;
    let bob_email = format!("bob-{tag}@example.com");
    let (bob_id, bob) = api.user(&bob_email).await;
    // Asking is not being a contact: the stream shows nobody yet.
    let (status, answer) = api
        .post(
            "/v1/contacts",
            json!({"email": bob_email.to_uppercase()}),
            Some(&alice),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let res = open_stream(&api, &alice).await;
    assert_eq!(res.status(), 200);
    let mut events = Events::new(res);
    assert_eq!(heartbeat(&api, &bob, "online").await.status(), 200);
    let (_, list) = api
        .get(
            &format!("/v1/presence?ids={bob_id},unknown-user"),
            Some(&alice),
        )
        .await;
    assert_eq!(
        list,
        json!({"presence": []}),
        "no presence before acceptance"
    );
    // Bob accepts: alice's stream hears of it (no polling) and shows bob online.
    let (status, contact) = api
        .post(
            &format!("/v1/contacts/requests/{alice_id}/accept"),
            json!({}),
            Some(&bob),
        )
        .await;
    assert_eq!(status, 200, "{contact}");
    assert_eq!(contact["user_id"], alice_id.as_str());
    assert_eq!(
        events.next_of("contacts").await,
        json!({"user_id": bob_id, "change": "added"})
    );
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
        json!({"presence": [{"user_id": bob_id, "status": "online"}]})
    );
    let body: Value = heartbeat(&api, &bob, "busy").await.json().await.unwrap();
    assert_eq!(body, json!({"status": "busy", "ttl_secs": 3}));
    assert_eq!(
        events.next().await,
        json!({"user_id": bob_id, "status": "busy"})
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
    // Bob removes alice: her stream is told, and no longer carries his presence.
    let res = api
        .client
        .delete(api.url(&format!("/v1/contacts/{alice_id}")))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        events.next_of("contacts").await,
        json!({"user_id": bob_id, "change": "removed"})
    );
    assert_eq!(heartbeat(&api, &bob, "online").await.status(), 200);
    let (_, list) = api
        .get(&format!("/v1/presence?ids={bob_id}"), Some(&alice))
        .await;
    assert_eq!(list, json!({"presence": []}));
    let (_, contacts) = api.get("/v1/contacts", Some(&alice)).await;
    assert_eq!(contacts["contacts"], json!([]));

    assert_eq!(heartbeat(&api, &bob, "invisible").await.status(), 422);
    // The stream ends when the server shuts down, and never carried bob's last change.
    api.shutdown.cancel();
    let rest = tokio::time::timeout(Duration::from_secs(10), events.rest())
        .await
        .expect("the stream ends at shutdown");
    assert!(
        !rest.contains("\"online\""),
        "a removed contact's presence reached the stream: {rest}"
    );
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
    // This test heartbeats in a loop until Redis is back: no limit, no coalescing.
    config.heartbeats_per_account_per_min = 0;
    config.presence_coalesce_ms = 0;
    let api = TestApi::start(&config, Some((redis.url(), "restart:".into()))).await;
    let tag = random_hex();
    let (_, alice) = api.user(&format!("alice-{tag}@example.com")).await;
    let bob_email = format!("bob-{tag}@example.com");
    let (bob_id, bob) = api.user(&bob_email).await;
    befriend(&api, &alice, &bob_email, &bob).await;
    let res = open_stream(&api, &alice).await;
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
