//! Presence by connection: an open presence stream keeps its user online with no heartbeat,
//! a status set by a heartbeat survives the refreshes, the last stream's end takes the user
//! offline at once (after a short linger that absorbs reloads), a stream on another replica
//! keeps the user online, and a status Redis lost comes back; in memory and on Redis.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use surge_signup_api::presence::{Presence, RedisPresence, Status};
use tokio_util::sync::CancellationToken;

use crate::common::{Db, TestApi, TestDb, random_hex, redis_url};
use crate::presence::{Events, befriend, heartbeat, open_stream};

/// Alice's view of `bob_id` through `GET /v1/presence`.
async fn status_of(api: &TestApi, viewer: &str, bob_id: &str) -> String {
    let (_, list) = api
        .get(&format!("/v1/presence?ids={bob_id}"), Some(viewer))
        .await;
    list["presence"][0]["status"]
        .as_str()
        .unwrap_or("missing")
        .to_owned()
}

/// Waits up to `within` for the next presence event; None when there was none.
async fn next_within(events: &mut Events, within: Duration) -> Option<serde_json::Value> {
    tokio::time::timeout(within, events.next()).await.ok()
}

async fn stream_holds_presence(redis: Option<(String, String)>) {
    let test_db = TestDb::new(Db::Sqlite);
    let mut config = test_db.config();
    // A TTL of 3 s is refreshed every tick (1 s): the user stays online only through them.
    config.presence_ttl_secs = 3;
    config.presence_linger_ms = 200;
    config.presence_coalesce_ms = 0;
    let api = TestApi::start(&config, redis).await;
    let tag = random_hex();
    let (_, alice) = api.user(&format!("alice-{tag}@example.com")).await;
    let bob_email = format!("bob-{tag}@example.com");
    let (bob_id, bob) = api.user(&bob_email).await;
    befriend(&api, &alice, &bob_email, &bob).await;
    let mut alice_view = Events::new(open_stream(&api, &alice).await);
    assert_eq!(alice_view.next().await["status"], "offline", "snapshot");

    // Bob opens his stream and sends no heartbeat: online, and still online past the TTL.
    let bob_stream = open_stream(&api, &bob).await;
    assert_eq!(bob_stream.status(), 200);
    assert_eq!(
        alice_view.next().await,
        json!({"user_id": bob_id, "status": "online"})
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(status_of(&api, &alice, &bob_id).await, "online");
    assert!(
        next_within(&mut alice_view, Duration::from_millis(100))
            .await
            .is_none(),
        "no change while the stream holds bob"
    );

    // A heartbeat sets away; the refreshes keep it away past its TTL.
    assert_eq!(heartbeat(&api, &bob, "away").await.status(), 200);
    assert_eq!(alice_view.next().await["status"], "away");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(status_of(&api, &alice, &bob_id).await, "away");

    // A reload: a second stream opens, the first closes; bob never looks offline.
    let reloaded = open_stream(&api, &bob).await;
    drop(bob_stream);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(status_of(&api, &alice, &bob_id).await, "away");

    // The last stream closes: offline at once (a TTL lapse would also need the sweep, and the
    // stream would not be told before it; here the event is the disconnect's).
    drop(reloaded);
    assert_eq!(
        alice_view.next().await,
        json!({"user_id": bob_id, "status": "offline"})
    );
    assert_eq!(status_of(&api, &alice, &bob_id).await, "offline");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_by_connection_in_memory() {
    stream_holds_presence(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_by_connection_on_redis() {
    stream_holds_presence(Some((redis_url(), format!("test:{}:", random_hex())))).await;
}

/// Two replicas share Redis: bob's stream on one keeps him online after his stream on the
/// other closes; when both are closed he is offline, announced on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_by_connection_across_replicas() {
    let test_db = TestDb::new(Db::Postgres);
    let mut config = test_db.config();
    // A long TTL: offline within the test's bounds can only come from the disconnects.
    config.presence_ttl_secs = 120;
    config.presence_linger_ms = 100;
    config.presence_coalesce_ms = 0;
    let prefix = format!("test:{}:", random_hex());
    let one = TestApi::start(&config, Some((redis_url(), prefix.clone()))).await;
    let two = TestApi::start(&config, Some((redis_url(), prefix))).await;
    let tag = random_hex();
    let (_, alice) = one.user(&format!("alice-{tag}@example.com")).await;
    let bob_email = format!("bob-{tag}@example.com");
    let (bob_id, bob) = one.user(&bob_email).await;
    befriend(&one, &alice, &bob_email, &bob).await;
    let mut alice_view = Events::new(open_stream(&two, &alice).await);
    assert_eq!(alice_view.next().await["status"], "offline", "snapshot");

    let on_one = open_stream(&one, &bob).await;
    assert_eq!(alice_view.next().await["status"], "online");
    let on_two = open_stream(&two, &bob).await;
    assert_eq!(on_two.status(), 200);
    drop(on_one);
    assert!(
        next_within(&mut alice_view, Duration::from_millis(1500))
            .await
            .is_none(),
        "bob's stream on the other replica keeps him online"
    );
    assert_eq!(status_of(&one, &alice, &bob_id).await, "online");
    drop(on_two);
    assert_eq!(
        alice_view.next().await,
        json!({"user_id": bob_id, "status": "offline"})
    );
    one.stop().await;
    two.stop().await;
}

/// The backend's side, on Redis: a status Redis lost is set online again (and returned) by
/// the next refresh; a process that died holding a user leaves a count that keeps the user
/// online only until the TTL lapses, when the sweep announces offline and drops the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_presence_refresh_revives_and_sweep_ends_a_dead_process_hold() {
    let url = redis_url();
    let target = surge_cluster::RedisTarget::parse(&url).unwrap();
    let timeouts = surge_cluster::redis_conn::RedisTimeouts {
        connect: Duration::from_secs(2),
        response: Duration::from_secs(2),
        retries: 1,
        max_delay: Duration::from_secs(1),
    };
    let conn = surge_cluster::RedisConn::lazy(&target, &timeouts).unwrap();
    let prefix = format!("test:{}:", random_hex());
    let shutdown = CancellationToken::new();
    let presence: Arc<dyn Presence> =
        RedisPresence::new(target, conn.clone(), prefix.clone(), shutdown.clone());
    let mut bus = presence.subscribe();
    // Let the pub/sub listener subscribe before anything is published.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let users: Vec<String> = (0..1200).map(|i| format!("user-{i}")).collect();
    let ttl = Duration::from_secs(60);

    // 1,200 users over all buckets, never seen: all revived at once, then none.
    let revived = presence.refresh(&users, ttl).await.unwrap();
    assert_eq!(revived.len(), users.len());
    assert!(presence.refresh(&users, ttl).await.unwrap().is_empty());
    let statuses = presence.statuses(&users).await.unwrap();
    assert!(statuses.iter().all(|s| *s == Status::Online));

    // Two processes hold "held"; one lets go, the other dies without letting go.
    assert!(
        presence
            .connect("held", Duration::from_secs(1))
            .await
            .unwrap()
    );
    assert!(
        !presence
            .connect("held", Duration::from_secs(1))
            .await
            .unwrap()
    );
    assert!(
        !presence.disconnect("held").await.unwrap(),
        "one holder left"
    );
    let ids = ["held".to_owned()];
    assert_eq!(presence.statuses(&ids).await.unwrap(), [Status::Online]);
    // Nobody refreshes it: after the TTL the sweep announces it offline, once.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    presence.sweep().await.unwrap();
    let offline = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let change = bus.recv().await.unwrap();
            if change.user_id == "held" {
                return change.status;
            }
        }
    })
    .await
    .expect("the sweep announces the lapsed user");
    assert_eq!(offline, Status::Offline);
    // The dead process's count went with it: the next holder's disconnect is final.
    assert!(presence.connect("held", ttl).await.unwrap());
    assert!(presence.disconnect("held").await.unwrap());
    assert_eq!(presence.statuses(&ids).await.unwrap(), [Status::Offline]);
    shutdown.cancel();
}
