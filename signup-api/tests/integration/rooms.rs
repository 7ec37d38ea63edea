//! Rooms: create and look up; joining without any shard is 503 no_capacity (relayed joins
//! are in `participants`).

use std::sync::Arc;

use serde_json::json;
use surge_cluster::MemoryRegistry;

use crate::common::{Db, TestApi, TestDb, assert_error, random_hex};

#[tokio::test]
async fn create_and_get_a_room() {
    let test_db = TestDb::new(Db::Postgres);
    let api = TestApi::start(&test_db.config(), None).await;
    let (_, token) = api
        .user(&format!("room-{}@example.com", random_hex()))
        .await;
    let (status, room) = api
        .post("/v1/rooms", json!({"name": " Standup "}), Some(&token))
        .await;
    assert_eq!(status, 201, "{room}");
    assert_eq!(room["name"], "Standup");
    let id = room["id"].as_str().unwrap().to_owned();
    let (status, got) = api.get(&format!("/v1/rooms/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(got, room);
    // No body at all is fine too.
    let res = api
        .client
        .post(api.url("/v1/rooms"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_error(
        &api.get("/v1/rooms/nope", None).await,
        404,
        "room_not_found",
    );
    assert_error(
        &api.post("/v1/rooms", json!({}), None).await,
        401,
        "invalid_session",
    );
    assert_error(
        &api.post("/v1/rooms", json!({"name": "a\u{0000}b"}), Some(&token))
            .await,
        422,
        "invalid_room_name",
    );
    api.stop().await;
}

#[tokio::test]
async fn joining_without_any_shard_is_503_no_capacity() {
    let test_db = TestDb::new(Db::Sqlite);
    let api = TestApi::start_with(&test_db.config(), None, Arc::new(MemoryRegistry::new())).await;
    let (_, token) = api
        .user(&format!("nocap-{}@example.com", random_hex()))
        .await;
    let (_, room) = api.post("/v1/rooms", json!({}), Some(&token)).await;
    let res = api
        .client
        .post(api.url(&format!(
            "/v1/rooms/{}/participants",
            room["id"].as_str().unwrap()
        )))
        .bearer_auth(&token)
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_capacity");
    api.stop().await;
}

/// One account creating rooms as fast as it can is stopped past its burst (on every
/// replica: the limit is shared through Redis), while another account is not affected.
#[tokio::test]
async fn room_creation_is_rate_limited_per_account_across_replicas() {
    let test_db = TestDb::new(Db::Postgres);
    let mut config = test_db.config();
    config.rooms_per_account_per_min = 1;
    config.rooms_per_account_burst = 3;
    let prefix = format!("surge-test-{}:", random_hex());
    let redis = Some((crate::common::redis_url(), prefix));
    let first = TestApi::start(&config, redis.clone()).await;
    let second = TestApi::start(&config, redis).await;
    let (_, greedy) = first
        .user(&format!("greedy-{}@example.com", random_hex()))
        .await;
    let (_, other) = first
        .user(&format!("other-{}@example.com", random_hex()))
        .await;
    for api in [&first, &second, &first] {
        let (status, body) = api.post("/v1/rooms", json!({}), Some(&greedy)).await;
        assert_eq!(status, 201, "{body}");
    }
    for api in [&second, &first] {
        let res = api
            .client
            .post(api.url("/v1/rooms"))
            .bearer_auth(&greedy)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 429);
        assert!(res.headers().contains_key("retry-after"));
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
    }
    let (status, body) = second.post("/v1/rooms", json!({}), Some(&other)).await;
    assert_eq!(status, 201, "another account is not affected: {body}");
    first.stop().await;
    second.stop().await;
}
