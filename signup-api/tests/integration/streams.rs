//! Issue 14, presence streams and heartbeats, performed as attacks: stream tickets that are
//! replayed or stale, a session token in the stream URL, one session opening 5,000 streams
//! (refused past its cap while the database pool stays free and another user is served),
//! logout ending a stream on another replica, heartbeat floods, and a flapping status.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use crate::common::{Db, TestApi, TestDb, assert_error, random_hex, redis_url};
use crate::presence::{Events, befriend, open_stream};

async fn ticket(api: &TestApi, token: &str) -> String {
    let (status, body) = api
        .post("/v1/presence/tickets", json!({}), Some(token))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["expires_in_secs"], 1);
    body["ticket"].as_str().unwrap().to_owned()
}

async fn get_stream(api: &TestApi, query: &str) -> (reqwest::StatusCode, serde_json::Value) {
    let res = api
        .client
        .get(api.url(&format!("/v1/presence/stream{query}")))
        .send()
        .await
        .unwrap();
    let status = res.status();
    if status == 200 {
        return (status, serde_json::Value::Null);
    }
    (status, res.json().await.unwrap())
}

async fn tickets_are_single_use_and_short_lived(redis: Option<(String, String)>) {
    let test_db = TestDb::new(Db::Postgres);
    let mut config = test_db.config();
    config.presence_ticket_ttl_secs = 1;
    let api = TestApi::start(&config, redis.clone()).await;
    // A second replica on the same database and Redis (the in-memory case: its own memory).
    let other = TestApi::start(&config, redis.clone()).await;
    let (_, alice) = api
        .user(&format!("alice-{}@example.com", random_hex()))
        .await;

    // The session token itself is no longer taken in the URL, nor is a missing ticket.
    assert_error(
        &get_stream(&api, &format!("?token={alice}")).await,
        401,
        "invalid_ticket",
    );
    assert_error(&get_stream(&api, "").await, 401, "invalid_ticket");
    assert_error(
        &get_stream(&api, &format!("?ticket={alice}")).await,
        401,
        "invalid_ticket",
    );
    // A ticket opens one stream, once.
    let t = ticket(&api, &alice).await;
    let first = api
        .client
        .get(api.url(&format!("/v1/presence/stream?ticket={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert_error(
        &get_stream(&api, &format!("?ticket={t}")).await,
        401,
        "invalid_ticket",
    );
    // Replayed on another replica: refused there too when they share Redis.
    if redis.is_some() {
        assert_error(
            &get_stream(&other, &format!("?ticket={t}")).await,
            401,
            "invalid_ticket",
        );
        // And a fresh ticket from one replica opens the stream on the other.
        let t = ticket(&api, &alice).await;
        assert_eq!(get_stream(&other, &format!("?ticket={t}")).await.0, 200);
    }
    // A ticket left unused past its TTL is dead.
    let stale = ticket(&api, &alice).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_error(
        &get_stream(&api, &format!("?ticket={stale}")).await,
        401,
        "invalid_ticket",
    );
    // The service is fine: a new ticket works.
    let t = ticket(&api, &alice).await;
    assert_eq!(get_stream(&api, &format!("?ticket={t}")).await.0, 200);
    drop(first);
    other.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_tickets_are_single_use_and_expire_in_memory() {
    tickets_are_single_use_and_short_lived(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_tickets_are_single_use_and_expire_on_redis() {
    tickets_are_single_use_and_short_lived(Some((redis_url(), format!("test:{}:", random_hex()))))
        .await;
}

/// How many stream requests the attacking session makes.
const ATTEMPTS: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_opening_5000_streams_is_refused_past_the_cap_and_logout_ends_them() {
    let test_db = TestDb::new(Db::Postgres);
    let mut config = test_db.config();
    // A small pool, so a stream that held (or queued for) a connection would show.
    config.database_max_connections = 4;
    config.presence_streams_per_account = 8;
    config.presence_streams_max = 12;
    // The attack gets all the tickets it asks for: the stream cap is what is under test.
    config.stream_tickets_per_account_per_min = 0;
    let redis = Some((redis_url(), format!("test:{}:", random_hex())));
    let api = TestApi::start(&config, redis.clone()).await;
    let replica = TestApi::start(&config, redis).await;
    let tag = random_hex();
    let (_, mallory) = api.user(&format!("mallory-{tag}@example.com")).await;
    let carol_email = format!("carol-{tag}@example.com");
    let (_, carol) = api.user(&carol_email).await;
    let dave_email = format!("dave-{tag}@example.com");
    let (_, dave) = api.user(&dave_email).await;
    befriend(&api, &carol, &dave_email, &dave).await;

    // Carol keeps using the service while the attack runs.
    let attack_over = Arc::new(AtomicBool::new(false));
    let watcher = {
        let client = api.client.clone();
        let url = api.url("/v1/contacts");
        let carol = carol.clone();
        let attack_over = attack_over.clone();
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut answered = 0u32;
            while !attack_over.load(Ordering::Relaxed) {
                let started = Instant::now();
                let res = client.get(&url).bearer_auth(&carol).send().await.unwrap();
                assert_eq!(res.status(), 200, "carol was refused during the attack");
                slowest = slowest.max(started.elapsed());
                answered += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (answered, slowest)
        })
    };

    let started = Instant::now();
    let results: Vec<(u16, String, Option<reqwest::Response>)> = futures::stream::iter(0..ATTEMPTS)
        .map(|_| {
            let api = &api;
            let mallory = &mallory;
            async move {
                let res = open_stream(api, mallory).await;
                let status = res.status().as_u16();
                if status == 200 {
                    return (status, String::new(), Some(res));
                }
                let body: serde_json::Value = res.json().await.unwrap();
                (
                    status,
                    body["error"]["code"].as_str().unwrap().to_owned(),
                    None,
                )
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let attack_time = started.elapsed();
    attack_over.store(true, Ordering::Relaxed);
    let (carol_answered, carol_slowest) = watcher.await.unwrap();
    assert!(carol_answered > 0);
    let mut open = Vec::new();
    let mut refused = 0;
    for (status, code, res) in results {
        match res {
            Some(res) => open.push(Events::new(res)),
            None => {
                assert_eq!((status, code.as_str()), (429, "too_many_streams"));
                refused += 1;
            }
        }
    }
    assert_eq!(open.len(), 8, "exactly the per-account cap is served");
    assert_eq!(refused, ATTEMPTS - 8);
    // Carol is still served at once, and the open streams hold no database connection.
    let started = Instant::now();
    let (status, body) = api.get("/v1/contacts", Some(&carol)).await;
    assert_eq!(status, 200, "{body}");
    let carol_after = started.elapsed();
    let store = api.api.as_ref().unwrap().store();
    let mut in_use = store.connections_in_use();
    for _ in 0..50 {
        if in_use == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        in_use = store.connections_in_use();
    }
    assert_eq!(in_use, 0, "open streams must not hold database connections");
    println!(
        "{ATTEMPTS} stream requests in {attack_time:?}: 8 served, {refused} refused; \
         carol: {carol_answered} answers during the attack, slowest {carol_slowest:?}, \
         {carol_after:?} after it"
    );

    // The process-wide cap: dave fills the remaining 4 slots, the next is 503.
    let mut dave_streams = Vec::new();
    for _ in 0..4 {
        let res = open_stream(&api, &dave).await;
        assert_eq!(res.status(), 200);
        dave_streams.push(res);
    }
    let res = open_stream(&api, &dave).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "stream_capacity");

    // Mallory logs out on the other replica: every one of her streams ends here.
    let res = replica
        .client
        .delete(replica.url("/v1/sessions/current"))
        .bearer_auth(&mallory)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    for events in &mut open {
        assert!(
            events.ends_within(Duration::from_secs(10)).await,
            "a stream outlived its session's logout"
        );
    }
    // Their slots are free again: dave opens more (up to his own cap of 8).
    for _ in 0..4 {
        let mut ok = false;
        for _ in 0..50 {
            let res = open_stream(&api, &dave).await;
            if res.status() == 200 {
                dave_streams.push(res);
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "slots were not freed after logout");
    }
    // A ticket of the logged-out session is refused (401), as is a new ticket request.
    let (status, _) = api
        .post("/v1/presence/tickets", json!({}), Some(&mallory))
        .await;
    assert_eq!(status, 401);
    drop(dave_streams);
    replica.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_outliving_its_session_opens_nothing() {
    let test_db = TestDb::new(Db::Sqlite);
    let api = TestApi::start(&test_db.config(), None).await;
    let (_, alice) = api
        .user(&format!("alice-{}@example.com", random_hex()))
        .await;
    let (status, body) = api
        .post("/v1/presence/tickets", json!({}), Some(&alice))
        .await;
    assert_eq!(status, 201, "{body}");
    let t = body["ticket"].as_str().unwrap().to_owned();
    let res = api
        .client
        .delete(api.url("/v1/sessions/current"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_error(
        &get_stream(&api, &format!("?ticket={t}")).await,
        401,
        "invalid_session",
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_floods_are_limited_per_account() {
    let test_db = TestDb::new(Db::Sqlite);
    let mut config = test_db.config();
    config.heartbeats_per_account_per_min = 1;
    config.heartbeats_per_account_burst = 5;
    let api = TestApi::start(
        &config,
        Some((redis_url(), format!("test:{}:", random_hex()))),
    )
    .await;
    let tag = random_hex();
    let (_, bob) = api.user(&format!("bob-{tag}@example.com")).await;
    let (_, carol) = api.user(&format!("carol-{tag}@example.com")).await;
    let beat = |token: &str| {
        api.client
            .put(api.url("/v1/presence"))
            .bearer_auth(token)
            .json(&json!({"status": "online"}))
            .send()
    };
    for _ in 0..5 {
        assert_eq!(beat(&bob).await.unwrap().status(), 200);
    }
    let mut limited = 0;
    for _ in 0..50 {
        let res = beat(&bob).await.unwrap();
        assert_eq!(res.status(), 429);
        let retry: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry >= 1, "{retry}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
        limited += 1;
    }
    assert_eq!(limited, 50);
    // Another account is not affected, and bob's status stands.
    assert_eq!(beat(&carol).await.unwrap().status(), 200);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_status_is_coalesced_before_it_reaches_the_replicas() {
    let test_db = TestDb::new(Db::Sqlite);
    let mut config = test_db.config();
    config.heartbeats_per_account_per_min = 0;
    config.presence_coalesce_ms = 1000;
    let prefix = format!("test:{}:", random_hex());
    let api = TestApi::start(&config, Some((redis_url(), prefix.clone()))).await;
    let tag = random_hex();
    let (_, alice) = api.user(&format!("alice-{tag}@example.com")).await;
    let bob_email = format!("bob-{tag}@example.com");
    let (bob_id, bob) = api.user(&bob_email).await;
    befriend(&api, &alice, &bob_email, &bob).await;
    let mut events = Events::new(open_stream(&api, &alice).await);
    assert_eq!(events.next().await["status"], "offline");

    // What every replica receives: the Redis channel itself (sharded on a cluster).
    let target = surge_cluster::RedisTarget::parse(&redis_url()).unwrap();
    let timeouts = surge_cluster::RedisTimeouts {
        connect: Duration::from_secs(2),
        response: Duration::from_secs(2),
        retries: 1,
        max_delay: Duration::from_secs(1),
    };
    let channel = surge_signup_api::presence::changes_channel(&prefix, &bob_id);
    let mut messages = surge_cluster::redis_conn::subscribe(&target, &[channel], &timeouts)
        .await
        .unwrap();

    let statuses = ["online", "busy", "away"];
    let flaps = 60;
    let started = Instant::now();
    for i in 0..flaps {
        let res = crate::presence::heartbeat(&api, &bob, statuses[i % 3]).await;
        assert_eq!(res.status(), 200);
    }
    let flapping = started.elapsed();
    let last = statuses[(flaps - 1) % 3];
    // Collect until the last status has gone out and a quiet window followed.
    let mut published = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(3), messages.next()).await;
        let Ok(Some(message)) = next else { break };
        published.push(String::from_utf8(message.payload).unwrap());
    }
    let windows = flapping.as_secs_f64().ceil() as usize + 1;
    println!(
        "{flaps} status changes in {flapping:?}: {} publications: {published:?}",
        published.len()
    );
    assert!(
        published.len() <= windows + 1,
        "{flaps} changes over {windows} windows gave {} publications",
        published.len()
    );
    assert_eq!(
        published.last().map(String::as_str),
        Some(format!("{bob_id} {last}").as_str())
    );
    // The stream ends on the last status.
    let mut seen = Vec::new();
    while let Ok(event) = tokio::time::timeout(Duration::from_millis(500), events.next()).await {
        seen.push(event["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.last().map(String::as_str), Some(last), "{seen:?}");
    assert!(seen.len() <= published.len(), "{seen:?}");
    api.stop().await;
}
