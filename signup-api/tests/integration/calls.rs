//! Issue 15, calling: ring a contact, accept in one of two tabs, decline, cancel, busy,
//! add people to a call, the ring timeout (exactly once with two replicas sharing Redis,
//! ringing across them), the recent calls, strangers and floods refused.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Db, TestApi, TestDb, assert_error, random_hex, redis_url};
use crate::presence::{Events, befriend, open_stream};

struct User {
    id: String,
    token: String,
    email: String,
}

async fn user(api: &TestApi, name: &str, tag: &str) -> User {
    let email = format!("{name}-{tag}@example.com");
    let (id, token) = api.user(&email).await;
    User { id, token, email }
}

async fn online(api: &TestApi, u: &User) {
    let res = api
        .client
        .put(api.url("/v1/presence"))
        .bearer_auth(&u.token)
        .json(&json!({"status": "online"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn stream(api: &TestApi, u: &User) -> Events {
    let res = open_stream(api, &u.token).await;
    assert_eq!(res.status(), 200);
    Events::new(res)
}

async fn call(api: &TestApi, from: &User, to: &[&User]) -> (StatusCode, Value) {
    let ids: Vec<&str> = to.iter().map(|u| u.id.as_str()).collect();
    api.post("/v1/calls", json!({"callees": ids}), Some(&from.token))
        .await
}

async fn act(api: &TestApi, u: &User, call_id: &str, what: &str) -> (StatusCode, Value) {
    api.post(
        &format!("/v1/calls/{call_id}/{what}"),
        json!({}),
        Some(&u.token),
    )
    .await
}

async fn recent(api: &TestApi, u: &User) -> Vec<Value> {
    let (status, body) = api.get("/v1/calls/recent", Some(&u.token)).await;
    assert_eq!(status, 200, "{body}");
    body["calls"].as_array().unwrap().clone()
}

/// Every `call_update` for `call_id` that arrives within `window`.
async fn updates_within(events: &mut Events, call_id: &str, window: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + window;
    let mut out = Vec::new();
    while let Ok(update) = tokio::time::timeout_at(deadline, events.next_of("call_update")).await {
        if update["call_id"] == call_id {
            out.push(update);
        }
    }
    out
}

/// The next `call_update` about `call_id`.
async fn next_update(events: &mut Events, call_id: &str) -> Value {
    loop {
        let update = events.next_of("call_update").await;
        if update["call_id"] == call_id {
            return update;
        }
    }
}

async fn ring_accept_decline_cancel_busy_and_add(db: Db) {
    let test_db = TestDb::new(db);
    let api = TestApi::start(&test_db.config(), None).await;
    let tag = random_hex();
    let ann = user(&api, "ann", &tag).await;
    let bob = user(&api, "bob", &tag).await;
    let cy = user(&api, "cy", &tag).await;
    let stranger = user(&api, "stranger", &tag).await;
    befriend(&api, &ann.token, &bob.email, &bob.token).await;
    befriend(&api, &ann.token, &cy.email, &cy.token).await;
    befriend(&api, &cy.token, &bob.email, &bob.token).await;
    for u in [&ann, &bob, &cy] {
        online(&api, u).await;
    }
    let mut ann_tab = stream(&api, &ann).await;
    let mut bob_tab = stream(&api, &bob).await;
    let mut bob_other_tab = stream(&api, &bob).await;
    let mut cy_tab = stream(&api, &cy).await;

    // Refused, and nothing created: strangers, nobody, yourself, not a list.
    assert_error(&call(&api, &ann, &[&stranger]).await, 403, "not_a_contact");
    assert_error(
        &call(&api, &ann, &[&bob, &stranger]).await,
        403,
        "not_a_contact",
    );
    assert_error(&call(&api, &ann, &[]).await, 422, "invalid_callees");
    assert_error(&call(&api, &ann, &[&ann]).await, 422, "invalid_callees");
    assert_error(
        &api.post("/v1/calls", json!({"callees": "bob"}), Some(&ann.token))
            .await,
        422,
        "invalid_body",
    );
    assert_error(
        &api.post("/v1/calls", json!({"callees": [bob.id]}), None)
            .await,
        401,
        "invalid_session",
    );
    assert!(recent(&api, &ann).await.is_empty());
    assert_error(
        &act(&api, &bob, "nope", "accept").await,
        404,
        "call_not_found",
    );

    // Ann calls Bob: both of his tabs ring with her name and the room.
    let (status, placed) = call(&api, &ann, &[&bob]).await;
    assert_eq!(status, 201, "{placed}");
    let call_id = placed["call_id"].as_str().unwrap().to_owned();
    let room = placed["room"]["id"].as_str().unwrap().to_owned();
    assert_eq!(placed["callees"][0]["state"], "ringing");
    for tab in [&mut bob_tab, &mut bob_other_tab] {
        let ring = tab.next_of("incoming_call").await;
        assert_eq!(ring["call_id"], call_id.as_str());
        assert_eq!(ring["caller"]["id"], ann.id.as_str());
        assert_eq!(ring["caller"]["name"], "Test User");
        assert_eq!(ring["room"]["id"], room.as_str());
    }
    // A stranger can neither answer it nor hang it up.
    assert_error(
        &act(&api, &stranger, &call_id, "accept").await,
        404,
        "call_not_found",
    );
    assert_error(
        &act(&api, &stranger, &call_id, "hangup").await,
        404,
        "call_not_found",
    );

    // The first tab accepts; the second hears it (and stops ringing), as does Ann.
    let (status, answered) = act(&api, &bob, &call_id, "accept").await;
    assert_eq!(status, 200, "{answered}");
    assert_eq!(answered["room"]["id"], room.as_str());
    assert_error(
        &act(&api, &bob, &call_id, "accept").await,
        409,
        "call_not_ringing",
    );
    let heard = next_update(&mut ann_tab, &call_id).await;
    assert_eq!(heard["state"], "accepted");
    assert_eq!(heard["by"], bob.id.as_str());
    assert_eq!(
        next_update(&mut bob_other_tab, &call_id).await["state"],
        "accepted"
    );

    // Bob is in a call: Cy's call to him is busy, and nothing is created.
    assert_error(&call(&api, &cy, &[&bob]).await, 409, "callee_busy");
    assert!(recent(&api, &cy).await.is_empty());

    // Ann adds Cy to the call: Cy rings into the same room, and declines.
    let (status, added) = api
        .post(
            &format!("/v1/calls/{call_id}/members"),
            json!({"callees": [cy.id]}),
            Some(&ann.token),
        )
        .await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["room"]["id"], room.as_str());
    let ring = cy_tab.next_of("incoming_call").await;
    assert_eq!(ring["room"]["id"], room.as_str());
    // Ringing already: adding again is refused; a stranger cannot add anyone.
    assert_error(
        &api.post(
            &format!("/v1/calls/{call_id}/members"),
            json!({"callees": [cy.id]}),
            Some(&bob.token),
        )
        .await,
        409,
        "already_in_call",
    );
    assert_error(
        &api.post(
            &format!("/v1/calls/{call_id}/members"),
            json!({"callees": [ann.id]}),
            Some(&stranger.token),
        )
        .await,
        404,
        "call_not_found",
    );
    assert_eq!(act(&api, &cy, &call_id, "decline").await.0, 204);
    let heard = next_update(&mut ann_tab, &call_id).await;
    assert_eq!(
        (heard["state"].as_str(), heard["by"].as_str()),
        (Some("declined"), Some(cy.id.as_str()))
    );

    // Bob hangs up: Ann hears it, and Bob is free again. Cy calls him and cancels.
    assert_eq!(act(&api, &bob, &call_id, "hangup").await.0, 204);
    assert_eq!(
        act(&api, &bob, &call_id, "hangup").await.0,
        204,
        "idempotent"
    );
    let heard = next_update(&mut ann_tab, &call_id).await;
    assert_eq!(
        (heard["state"].as_str(), heard["by"].as_str()),
        (Some("ended"), Some(bob.id.as_str()))
    );
    assert_error(
        &api.post(
            &format!("/v1/calls/{call_id}/members"),
            json!({"callees": [ann.id]}),
            Some(&bob.token),
        )
        .await,
        409,
        "not_in_call",
    );
    let (status, second) = call(&api, &cy, &[&bob]).await;
    assert_eq!(status, 201, "{second}");
    let second_id = second["call_id"].as_str().unwrap().to_owned();
    assert_eq!(
        bob_tab.next_of("incoming_call").await["call_id"],
        second_id.as_str()
    );
    let (status, cancelled) = act(&api, &cy, &second_id, "cancel").await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["cancelled"], json!([bob.id]));
    assert_eq!(
        next_update(&mut bob_tab, &second_id).await["state"],
        "cancelled"
    );
    assert_error(
        &act(&api, &bob, &second_id, "accept").await,
        409,
        "call_not_ringing",
    );

    // The recent calls, newest first, from each side.
    let bobs = recent(&api, &bob).await;
    let lines: Vec<(&str, &str, &str)> = bobs
        .iter()
        .map(|c| {
            (
                c["direction"].as_str().unwrap(),
                c["peer"]["id"].as_str().unwrap(),
                c["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("incoming", cy.id.as_str(), "missed"),
            ("incoming", ann.id.as_str(), "answered")
        ]
    );
    let anns = recent(&api, &ann).await;
    let outcomes: Vec<&str> = anns
        .iter()
        .map(|c| c["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["declined", "answered"], "{anns:?}");
    assert!(anns.iter().all(|c| c["direction"] == "outgoing"));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_ring_answer_decline_cancel_busy_and_add_on_sqlite() {
    ring_accept_decline_cancel_busy_and_add(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_ring_answer_decline_cancel_busy_and_add_on_postgres() {
    ring_accept_decline_cancel_busy_and_add(Db::Postgres).await;
}

/// Two replicas on one database and one Redis: the caller on one, the callee's tab on the
/// other. Ringing and answers cross over; an unanswered ring times out exactly once though
/// both replicas sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringing_crosses_replicas_and_times_out_exactly_once_on_redis() {
    let test_db = TestDb::new(Db::Postgres);
    let mut config = test_db.config();
    config.ring_timeout_ms = 1_000;
    let redis = Some((redis_url(), format!("test:{}:", random_hex())));
    let one = TestApi::start(&config, redis.clone()).await;
    let two = TestApi::start(&config, redis).await;
    let tag = random_hex();
    let ann = user(&one, "ann", &tag).await;
    let bob = user(&one, "bob", &tag).await;
    befriend(&one, &ann.token, &bob.email, &bob.token).await;
    let mut ann_tab = stream(&one, &ann).await;
    let mut bob_tab = stream(&two, &bob).await;

    // Answered across replicas.
    let placing = Instant::now();
    let (status, placed) = call(&one, &ann, &[&bob]).await;
    assert_eq!(status, 201, "{placed}");
    let first = placed["call_id"].as_str().unwrap().to_owned();
    assert_eq!(
        bob_tab.next_of("incoming_call").await["call_id"],
        first.as_str()
    );
    println!(
        "POST /v1/calls on one replica -> incoming_call on the other: {:?}",
        placing.elapsed()
    );
    assert_eq!(act(&two, &bob, &first, "accept").await.0, 200);
    assert_eq!(next_update(&mut ann_tab, &first).await["state"], "accepted");
    assert_eq!(act(&two, &bob, &first, "hangup").await.0, 204);
    assert_eq!(next_update(&mut ann_tab, &first).await["state"], "ended");

    // Nobody answers: one no_answer each, whichever replica swept it.
    let (status, placed) = call(&one, &ann, &[&bob]).await;
    assert_eq!(status, 201, "{placed}");
    let second = placed["call_id"].as_str().unwrap().to_owned();
    let rang = Instant::now();
    assert_eq!(
        bob_tab.next_of("incoming_call").await["call_id"],
        second.as_str()
    );
    let heard = next_update(&mut ann_tab, &second).await;
    let after = rang.elapsed();
    println!("no answer announced {after:?} after the ring (timeout 1 s)");
    assert_eq!(heard["state"], "no_answer");
    assert_eq!(heard["by"], bob.id.as_str());
    assert!(after >= Duration::from_millis(900), "{after:?}");
    assert_eq!(
        next_update(&mut bob_tab, &second).await["state"],
        "no_answer"
    );
    // Several sweep periods of both replicas later, no second announcement.
    let more = updates_within(&mut ann_tab, &second, Duration::from_secs(2)).await;
    assert!(more.is_empty(), "announced again: {more:?}");
    let more = updates_within(&mut bob_tab, &second, Duration::from_millis(200)).await;
    assert!(more.is_empty(), "announced again: {more:?}");
    assert_error(
        &act(&two, &bob, &second, "accept").await,
        409,
        "call_not_ringing",
    );

    // A missed call for Bob, a no-answer for Ann.
    let bobs = recent(&two, &bob).await;
    assert_eq!(bobs[0]["call_id"], second.as_str());
    assert_eq!(bobs[0]["outcome"], "missed");
    assert_eq!(bobs[0]["peer"]["id"], ann.id.as_str());
    let anns = recent(&one, &ann).await;
    assert_eq!(anns[0]["outcome"], "no_answer");
    assert_eq!(anns[1]["outcome"], "answered");

    // A tab opened while a call rings still rings.
    let (_, placed) = call(&two, &ann, &[&bob]).await;
    let third = placed["call_id"].as_str().unwrap().to_owned();
    let mut late_tab = stream(&one, &bob).await;
    assert_eq!(
        late_tab.next_of("incoming_call").await["call_id"],
        third.as_str()
    );
    two.stop().await;
    one.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringing_floods_are_rate_limited_per_account() {
    let test_db = TestDb::new(Db::Sqlite);
    let mut config = test_db.config();
    config.calls_per_account_per_min = 1;
    config.calls_per_account_burst = 2;
    let api = TestApi::start(&config, None).await;
    let tag = random_hex();
    let ann = user(&api, "ann", &tag).await;
    let bob = user(&api, "bob", &tag).await;
    befriend(&api, &ann.token, &bob.email, &bob.token).await;
    for _ in 0..2 {
        let (status, placed) = call(&api, &ann, &[&bob]).await;
        assert_eq!(status, 201, "{placed}");
        let id = placed["call_id"].as_str().unwrap();
        assert_eq!(act(&api, &ann, id, "hangup").await.0, 204);
    }
    let res = api
        .client
        .post(api.url("/v1/calls"))
        .bearer_auth(&ann.token)
        .json(&json!({"callees": [bob.id]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Bob is not limited by Ann's flood.
    let (status, body) = call(&api, &bob, &[&ann]).await;
    assert_eq!(status, 201, "{body}");
    api.stop().await;
}
