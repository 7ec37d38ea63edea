//! Tables that would grow without bound: expired sessions, old idempotency keys and unused
//! rooms are purged in batches through indexes, and an account's live rooms are capped.

use std::time::Duration;

use serde_json::json;
use surge_signup_api::store::{self, Account, PURGE_BATCH, Room, StoredResponse};

use crate::common::{Db, TestApi, TestDb, assert_error, random_hex};

fn now() -> i64 {
    i64::try_from(surge_cluster::token::unix_now()).unwrap()
}

async fn purges_in_batches(db: Db) {
    let test_db = TestDb::new(db);
    let api = TestApi::start(&test_db.config(), None).await;
    let (user, _) = api
        .user(&format!("purge-{}@example.com", random_hex()))
        .await;
    let store = api.api.as_ref().unwrap().store();
    let now = now();
    // More expired sessions than one batch, and some that are still live.
    let expired = u64::from(PURGE_BATCH) + 250;
    for i in 0..expired {
        store
            .insert_session(&format!("expired-{i}"), &user, now - 10, now - 100)
            .await
            .unwrap();
    }
    for i in 0..3 {
        store
            .insert_session(&format!("live-{i}"), &user, now + 3600, now)
            .await
            .unwrap();
    }
    // Idempotency keys: one from two days ago, one from now.
    for (key, created_at) in [("old-key", now - 2 * 24 * 3600), ("new-key", now)] {
        let account = Account {
            id: format!("acct-{key}"),
            email: format!("{key}-{}@example.com", random_hex()),
            display_name: "K".into(),
            created_at,
        };
        let response = StoredResponse {
            fingerprint: "f".into(),
            status: 201,
            body: "{}".into(),
        };
        store
            .insert_account(&account, "$argon2id$x", Some((key, &response)))
            .await
            .unwrap();
    }
    // Rooms: one past its expiry, one live.
    for (id, expires_at) in [("roomgone", now - 1), ("roomlive", now + 3600)] {
        let room = Room {
            id: id.into(),
            name: id.into(),
            expires_at,
        };
        store
            .insert_room(&room, &user, now - 100, 50)
            .await
            .unwrap();
    }
    assert!(
        store.room("roomgone", now).await.unwrap().is_none(),
        "expired rooms are gone at once"
    );
    let purged = store::purge_expired(store.as_ref(), now, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(purged.sessions, expired);
    assert_eq!(purged.idempotency_keys, 1);
    assert_eq!(purged.rooms, 1);
    assert!(
        store
            .idempotent_response("new-key")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .idempotent_response("old-key")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.room("roomlive", now).await.unwrap().is_some());
    // Nothing left to purge: a second round deletes nothing.
    let again = store::purge_expired(store.as_ref(), now, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(again.total(), 0);
    api.stop().await;
}

#[tokio::test]
async fn purges_run_in_batches_and_keep_what_is_live_sqlite() {
    purges_in_batches(Db::Sqlite).await;
}

#[tokio::test]
async fn purges_run_in_batches_and_keep_what_is_live_postgres() {
    purges_in_batches(Db::Postgres).await;
}

/// The purge statements find their rows through an index (SQLite's plan says so), not by
/// scanning the whole table.
#[tokio::test]
async fn purges_use_an_index() {
    let test_db = TestDb::new(Db::Sqlite);
    let api = TestApi::start(&test_db.config(), None).await;
    let pool = sqlx::SqlitePool::connect(&test_db.url).await.unwrap();
    for (query, index) in [
        (
            "EXPLAIN QUERY PLAN SELECT token_hash FROM sessions WHERE expires_at <= 1 LIMIT 1000",
            "sessions_expires_at",
        ),
        (
            "EXPLAIN QUERY PLAN SELECT idem_key FROM idempotency_keys WHERE created_at <= 1 LIMIT 1000",
            "idempotency_keys_created_at",
        ),
        (
            "EXPLAIN QUERY PLAN SELECT id FROM rooms WHERE expires_at > 0 AND expires_at <= 1 LIMIT 1000",
            "rooms_expires_at",
        ),
    ] {
        let rows: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(query).fetch_all(&pool).await.unwrap();
        let plan: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
        assert!(plan.iter().any(|d| d.contains(index)), "{query}: {plan:?}");
    }
    pool.close().await;
    api.stop().await;
}

async fn rooms_are_capped(db: Db) {
    let test_db = TestDb::new(db);
    let mut config = test_db.config();
    config.max_rooms_per_account = 3;
    config.rooms_per_account_per_min = 0;
    let api = TestApi::start(&config, None).await;
    let (user, token) = api.user(&format!("cap-{}@example.com", random_hex())).await;
    let (_, other) = api
        .user(&format!("other-{}@example.com", random_hex()))
        .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, room) = api
            .post("/v1/rooms", json!({"name": format!("r{i}")}), Some(&token))
            .await;
        assert_eq!(status, 201, "{room}");
        assert!(room["expires_at"].as_i64().unwrap() > now());
        ids.push(room["id"].as_str().unwrap().to_owned());
    }
    assert_error(
        &api.post("/v1/rooms", json!({}), Some(&token)).await,
        409,
        "too_many_rooms",
    );
    // Nothing was created by the refused request, and another account is not affected.
    let (status, body) = api.post("/v1/rooms", json!({}), Some(&other)).await;
    assert_eq!(status, 201, "{body}");
    // Once the account's rooms have expired, its slots are free again.
    let store = api.api.as_ref().unwrap().store();
    let later = now() + i64::try_from(config.room_ttl_secs).unwrap() + 10;
    for id in &ids {
        assert!(store.room(id, later).await.unwrap().is_none());
    }
    let room = Room {
        id: format!("later{}", random_hex()),
        name: "later".into(),
        expires_at: later + 3600,
    };
    store.insert_room(&room, &user, later, 3).await.unwrap();
    // Using a room pushes its expiry back.
    store.extend_room(&ids[0], later + 100).await.unwrap();
    assert!(store.room(&ids[0], later).await.unwrap().is_some());
    api.stop().await;
}

#[tokio::test]
async fn an_account_cannot_hold_more_than_its_rooms_sqlite() {
    rooms_are_capped(Db::Sqlite).await;
}

#[tokio::test]
async fn an_account_cannot_hold_more_than_its_rooms_postgres() {
    rooms_are_capped(Db::Postgres).await;
}
