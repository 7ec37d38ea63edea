//! Joining and leaving through the API, which relays to the room's shard. The shards here
//! are stand-ins on loopback that check the join token the API minted and answer as a
//! shard would (or refuse, or are gone), so every relay rule is exercised without media.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use serde_json::json;
use surge_cluster::{
    JoinClaims, MemoryRegistry, ShardInfo, ShardRegistry, TokenSigner, TokenVerifier,
};
use tokio_util::sync::CancellationToken;

use crate::common::{Db, TestApi, TestDb, assert_error, random_hex};

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
const ANSWER: &str = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
const PARTICIPANT: &str = "00000000000000ab";

/// How a stand-in shard answers joins.
#[derive(Clone)]
enum Mode {
    Answer,
    /// Status, code and Retry-After of a refusal.
    Refuse(u16, &'static str, Option<&'static str>),
    /// Draining: joins only to the rooms in `hosted`.
    Draining,
}

struct Seen {
    mode: Mode,
    hosted: HashSet<String>,
    joins: Vec<(JoinClaims, String)>,
    leaves: Vec<(JoinClaims, String)>,
    restarts: Vec<(JoinClaims, String, String)>,
}

struct FakeShard {
    id: String,
    url: String,
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
}

#[derive(Clone)]
struct FakeState {
    id: String,
    key: TokenVerifier,
    seen: Arc<Mutex<Seen>>,
}

fn claims(state: &FakeState, headers: &HeaderMap, room: &str) -> Option<JoinClaims> {
    let token = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    state
        .key
        .verify(
            token,
            &state.id,
            Some(room),
            surge_cluster::token::unix_now(),
        )
        .ok()
}

fn refusal(status: u16, code: &str, retry_after: Option<&str>) -> Response {
    let body = json!({"error": {"code": code, "message": "refused by the stand-in"}});
    let mut response = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    if let Some(r) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", r.parse().unwrap());
    }
    response
}

async fn fake_join(
    State(state): State<FakeState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(claims) = claims(&state, &headers, &room) else {
        return refusal(401, "token_invalid", None);
    };
    let mut seen = state.seen.lock().unwrap();
    seen.joins
        .push((claims, String::from_utf8_lossy(&body).into_owned()));
    match seen.mode.clone() {
        Mode::Refuse(status, code, retry) => refusal(status, code, retry),
        Mode::Draining if !seen.hosted.contains(&room) => refusal(503, "draining", Some("5")),
        Mode::Answer | Mode::Draining => {
            seen.hosted.insert(room.clone());
            (
                StatusCode::CREATED,
                [
                    ("content-type", "application/sdp".to_owned()),
                    (
                        "location",
                        format!("/v1/sfu/rooms/{room}/participants/{PARTICIPANT}"),
                    ),
                ],
                ANSWER,
            )
                .into_response()
        }
    }
}

async fn fake_leave(
    State(state): State<FakeState>,
    Path((room, participant)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(claims) = claims(&state, &headers, &room) else {
        return refusal(401, "token_invalid", None);
    };
    state
        .seen
        .lock()
        .unwrap()
        .leaves
        .push((claims, participant.clone()));
    if participant == PARTICIPANT {
        StatusCode::NO_CONTENT.into_response()
    } else {
        refusal(404, "not_found", None)
    }
}

async fn fake_present(
    State(state): State<FakeState>,
    Path((room, participant)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if claims(&state, &headers, &room).is_none() {
        return refusal(401, "token_invalid", None);
    }
    let hosted = state.seen.lock().unwrap().hosted.contains(&room);
    if hosted && participant == PARTICIPANT {
        StatusCode::NO_CONTENT.into_response()
    } else {
        refusal(404, "not_found", None)
    }
}

/// An ICE restart: the answer for the one participant there is, unless the offer keeps its
/// credentials (`a=ice-ufrag:same`).
async fn fake_restart(
    State(state): State<FakeState>,
    Path((room, participant)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(claims) = claims(&state, &headers, &room) else {
        return refusal(401, "token_invalid", None);
    };
    let offer = String::from_utf8_lossy(&body).into_owned();
    if participant != PARTICIPANT {
        return refusal(404, "session_gone", None);
    }
    if offer.contains("a=ice-ufrag:same") {
        return refusal(400, "ice_restart_required", None);
    }
    state
        .seen
        .lock()
        .unwrap()
        .restarts
        .push((claims, participant, offer));
    (
        StatusCode::OK,
        [("content-type", "application/sdp")],
        ANSWER,
    )
        .into_response()
}

impl FakeShard {
    async fn start(id: &str, key: &TokenSigner, registry: &MemoryRegistry) -> Self {
        let seen = Arc::new(Mutex::new(Seen {
            mode: Mode::Answer,
            hosted: HashSet::new(),
            joins: Vec::new(),
            leaves: Vec::new(),
            restarts: Vec::new(),
        }));
        let state = FakeState {
            id: id.to_owned(),
            key: key.verifier(),
            seen: seen.clone(),
        };
        let router = Router::new()
            .route("/v1/sfu/rooms/{room}/participants", post(fake_join))
            .route(
                "/v1/sfu/rooms/{room}/participants/{participant}",
                delete(fake_leave).get(fake_present).patch(fake_restart),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let serving = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(serving.cancelled_owned())
                .await
        });
        let shard = Self {
            id: id.to_owned(),
            url,
            seen,
            stop,
        };
        shard.heartbeat(registry).await;
        shard
    }

    async fn heartbeat(&self, registry: &MemoryRegistry) {
        registry
            .heartbeat(
                &ShardInfo::new(&self.id, &self.url, "127.0.0.1:9", 100, 1000),
                Duration::from_secs(3600),
            )
            .await
            .unwrap();
    }

    fn set_mode(&self, mode: Mode) {
        self.seen.lock().unwrap().mode = mode;
    }

    fn joins(&self) -> usize {
        self.seen.lock().unwrap().joins.len()
    }
}

struct Setup {
    api: TestApi,
    /// Kept alive: a SQLite database lives in a temporary directory.
    _db: TestDb,
    registry: Arc<MemoryRegistry>,
    token: String,
    user_id: String,
    room: String,
}

async fn setup(db: Db) -> Setup {
    let test_db = TestDb::new(db);
    let registry = Arc::new(MemoryRegistry::new());
    let api = TestApi::start_with(&test_db.config(), None, registry.clone()).await;
    let (user_id, token) = api
        .user(&format!("caller-{}@example.com", random_hex()))
        .await;
    let (status, room) = api
        .post("/v1/rooms", json!({"name": "Relay"}), Some(&token))
        .await;
    assert_eq!(status, 201, "{room}");
    Setup {
        api,
        _db: test_db,
        registry,
        token,
        user_id,
        room: room["id"].as_str().unwrap().to_owned(),
    }
}

/// POSTs `body` as `content_type` to the room's participants; status, headers and body.
async fn join(
    api: &TestApi,
    room: &str,
    token: Option<&str>,
    content_type: &str,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = api
        .client
        .post(api.url(&format!("/v1/rooms/{room}/participants")))
        .header("content-type", content_type)
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// `method` on the room's participant `pid` through the API: status and body.
async fn on_participant(
    s: &Setup,
    method: reqwest::Method,
    pid: &str,
    token: Option<&str>,
) -> (u16, String) {
    let url = s
        .api
        .url(&format!("/v1/rooms/{}/participants/{pid}", s.room));
    let mut request = s.api.client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn code(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body).unwrap()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_offer_goes_to_the_shard_and_the_answer_comes_back() {
    let s = setup(Db::Postgres).await;
    let shard = FakeShard::start("shard-a", &s.api.token_key, &s.registry).await;
    let (status, headers, body) =
        join(&s.api, &s.room, Some(&s.token), "application/sdp", OFFER).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body, ANSWER);
    assert_eq!(headers["content-type"], "application/sdp");
    assert_eq!(
        headers["location"],
        format!("/v1/rooms/{}/participants/{PARTICIPANT}", s.room)
    );
    {
        let seen = shard.seen.lock().unwrap();
        let (claims, offer) = &seen.joins[0];
        assert_eq!(offer, OFFER, "the offer is relayed unchanged");
        assert_eq!(
            claims.sub, s.user_id,
            "the API minted the token for this user"
        );
        assert_eq!(claims.name, "Test User");
        assert_eq!(claims.shard, "shard-a");
    }

    // Still there? (A client whose media stopped asks before it waits out a blip.)
    use reqwest::Method;
    let token = Some(s.token.as_str());
    let (status, body) = on_participant(&s, Method::GET, PARTICIPANT, token).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = on_participant(&s, Method::GET, "00000000000000cd", token).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (404, "participant_not_found")
    );

    // Leaving: the API tells the shard which user leaves.
    let (status, body) = on_participant(&s, Method::DELETE, PARTICIPANT, token).await;
    assert_eq!(status, 204, "{body}");
    let leaver = shard.seen.lock().unwrap().leaves[0].clone();
    assert_eq!(
        (leaver.0.sub.as_str(), leaver.1.as_str()),
        (s.user_id.as_str(), PARTICIPANT)
    );

    // Someone else's or an unknown participant, a malformed id, no session.
    for pid in ["00000000000000cd", "..%2f..%2fdrain"] {
        let (status, body) = on_participant(&s, Method::DELETE, pid, token).await;
        assert_eq!(
            (status, code(&body).as_str()),
            (404, "participant_not_found"),
            "{pid}"
        );
    }
    let (status, _) = on_participant(&s, Method::DELETE, PARTICIPANT, None).await;
    assert_eq!(status, 401);
    assert_eq!(
        shard.seen.lock().unwrap().leaves.len(),
        2,
        "only valid ids reached the shard"
    );
    s.api.stop().await;
}

#[tokio::test]
async fn refusals_of_the_shard_pass_through_with_their_codes() {
    let s = setup(Db::Sqlite).await;
    let shard = FakeShard::start("shard-a", &s.api.token_key, &s.registry).await;
    for (mode, status, want) in [
        (Mode::Refuse(409, "room_full", None), 409, "room_full"),
        (Mode::Refuse(400, "invalid_sdp", None), 400, "invalid_sdp"),
        (
            Mode::Refuse(503, "shard_full", Some("5")),
            503,
            "shard_full",
        ),
        // A refused token is the cluster's fault (keys that differ), not the client's.
        (Mode::Refuse(401, "token_invalid", None), 502, "shard_error"),
        (Mode::Refuse(500, "internal", None), 502, "shard_error"),
    ] {
        shard.set_mode(mode);
        let (got, headers, body) =
            join(&s.api, &s.room, Some(&s.token), "application/sdp", OFFER).await;
        assert_eq!((got, code(&body).as_str()), (status, want), "{body}");
        if want == "shard_full" {
            assert_eq!(headers["retry-after"], "5");
        }
    }
    s.api.stop().await;
}

#[tokio::test]
async fn bad_join_requests_change_nothing() {
    let s = setup(Db::Sqlite).await;
    let shard = FakeShard::start("shard-a", &s.api.token_key, &s.registry).await;
    let room = s.room.as_str();
    let token = Some(s.token.as_str());
    for (room, token, content_type, body, status, want) in [
        (
            room,
            token,
            "application/json",
            OFFER,
            415,
            "unsupported_media_type",
        ),
        (room, token, "application/sdp", "hello", 400, "invalid_sdp"),
        (room, token, "application/sdp", "", 400, "invalid_sdp"),
        (room, None, "application/sdp", OFFER, 401, "invalid_session"),
        (
            "no-such-room",
            token,
            "application/sdp",
            OFFER,
            404,
            "room_not_found",
        ),
        ("../etc", token, "application/sdp", OFFER, 404, "not_found"),
    ] {
        let (got, _, text) = join(&s.api, room, token, content_type, body).await;
        assert_eq!(got, status, "{room} {content_type} {body:?}: {text}");
        if want != "not_found" {
            assert_eq!(code(&text), want, "{text}");
        }
    }
    let big = format!("{OFFER}{}", "a=x\r\n".repeat(20_000));
    let (got, _, text) = join(&s.api, room, token, "application/sdp", &big).await;
    assert_eq!((got, code(&text).as_str()), (413, "payload_too_large"));
    assert_eq!(shard.joins(), 0, "nothing reached the shard");
    assert_eq!(
        s.registry.room_pin(room).await.unwrap(),
        None,
        "and nothing was placed"
    );
    s.api.stop().await;
}

#[tokio::test]
async fn an_unreachable_shard_loses_its_room_in_the_same_request() {
    let s = setup(Db::Sqlite).await;
    let a = FakeShard::start("shard-a", &s.api.token_key, &s.registry).await;
    let b = FakeShard::start("shard-b", &s.api.token_key, &s.registry).await;
    let (status, _, _) = join(&s.api, &s.room, Some(&s.token), "application/sdp", OFFER).await;
    assert_eq!(status, 201);
    let home = s.registry.room_pin(&s.room).await.unwrap().unwrap();
    let (dead, other) = if home == "shard-a" {
        (&a, &b)
    } else {
        (&b, &a)
    };
    // Killed: the registry still lists it for a while, but nobody answers there.
    dead.stop.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _, body) = join(&s.api, &s.room, Some(&s.token), "application/sdp", OFFER).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        other.joins(),
        1,
        "the join landed on the other shard at once"
    );
    assert_eq!(
        s.registry.room_pin(&s.room).await.unwrap().as_deref(),
        Some(other.id.as_str()),
        "the room moved for every replica"
    );
    // With no shard left to answer, the client is told to retry.
    other.stop.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, headers, body) =
        join(&s.api, &s.room, Some(&s.token), "application/sdp", OFFER).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (503, "shard_unavailable"),
        "{body}"
    );
    assert!(headers.contains_key("retry-after"));
    // A participant whose shard died learns at once that it is gone.
    let (status, _) = on_participant(&s, reqwest::Method::GET, PARTICIPANT, Some(&s.token)).await;
    assert_eq!(status, 404);
    s.api.stop().await;
}

#[tokio::test]
async fn a_draining_shard_keeps_its_meetings_and_hands_on_closed_rooms() {
    let s = setup(Db::Sqlite).await;
    let a = FakeShard::start("shard-a", &s.api.token_key, &s.registry).await;
    let (status, _, _) = join(&s.api, &s.room, Some(&s.token), "application/sdp", OFFER).await;
    assert_eq!(status, 201);
    let b = FakeShard::start("shard-b", &s.api.token_key, &s.registry).await;
    // shard-a drains (a rolling update): its meeting stays together there.
    assert!(s.registry.request_drain("shard-a").await.unwrap());
    a.set_mode(Mode::Draining);
    let (status, _, _) = join(&s.api, &s.room, Some(&s.token), "application/sdp", OFFER).await;
    assert_eq!(status, 201);
    assert_eq!(
        (a.joins(), b.joins()),
        (2, 0),
        "the rejoin landed with the others"
    );
    // The meeting ended on shard-a; the next join to the room starts it on shard-b.
    a.seen.lock().unwrap().hosted.clear();
    let (status, _, body) = join(&s.api, &s.room, Some(&s.token), "application/sdp", OFFER).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!((a.joins(), b.joins()), (3, 1));
    assert_eq!(
        s.registry.room_pin(&s.room).await.unwrap().as_deref(),
        Some("shard-b")
    );
    // New rooms never go to the draining shard.
    for i in 0..5 {
        let (_, room) = s
            .api
            .post(
                "/v1/rooms",
                json!({"name": format!("new {i}")}),
                Some(&s.token),
            )
            .await;
        let id = room["id"].as_str().unwrap();
        let (status, _, _) = join(&s.api, id, Some(&s.token), "application/sdp", OFFER).await;
        assert_eq!(status, 201);
        assert_eq!(
            s.registry.room_pin(id).await.unwrap().as_deref(),
            Some("shard-b")
        );
    }
    assert_error(
        &s.api
            .post(
                &format!("/v1/rooms/{}/participants", s.room),
                json!({}),
                Some(&s.token),
            )
            .await,
        415,
        "unsupported_media_type",
    );
    s.api.stop().await;
}

/// `PATCH` with `body` as `content_type` on the room's participant `pid`: status and body.
async fn patch(
    s: &Setup,
    pid: &str,
    token: Option<&str>,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    let url = s
        .api
        .url(&format!("/v1/rooms/{}/participants/{pid}", s.room));
    let mut request = s
        .api
        .client
        .patch(url)
        .header("content-type", content_type)
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn an_ice_restart_is_relayed_to_the_participants_shard() {
    let s = setup(Db::Sqlite).await;
    let token = Some(s.token.as_str());
    // Before the room has a shard, there is no session to restart.
    let (status, body) = patch(&s, PARTICIPANT, token, "application/sdp", OFFER).await;
    assert_eq!((status, code(&body).as_str()), (404, "session_gone"));

    let shard = FakeShard::start("shard-r", &s.api.token_key, &s.registry).await;
    let (status, _, body) = join(&s.api, &s.room, token, "application/sdp", OFFER).await;
    assert_eq!(status, 201, "{body}");

    let restart_offer = format!("{OFFER}a=ice-ufrag:new1\r\n");
    let (status, body) = patch(&s, PARTICIPANT, token, "application/sdp", &restart_offer).await;
    assert_eq!((status, body.as_str()), (200, ANSWER));
    {
        let seen = shard.seen.lock().unwrap();
        let (claims, pid, offer) = &seen.restarts[0];
        assert_eq!(
            (claims.sub.as_str(), pid.as_str()),
            (s.user_id.as_str(), PARTICIPANT)
        );
        assert_eq!(offer, &restart_offer, "the offer is relayed unchanged");
    }

    // Refusals: the shard's pass through; the cheap checks never reach it.
    let same = format!("{OFFER}a=ice-ufrag:same\r\n");
    for (pid, token, content_type, body, want) in [
        (
            PARTICIPANT,
            token,
            "application/sdp",
            same.as_str(),
            (400, "ice_restart_required"),
        ),
        (
            "00000000000000cd",
            token,
            "application/sdp",
            OFFER,
            (404, "session_gone"),
        ),
        (
            "..%2f..%2fdrain",
            token,
            "application/sdp",
            OFFER,
            (404, "session_gone"),
        ),
        (
            PARTICIPANT,
            token,
            "application/json",
            "{}",
            (415, "unsupported_media_type"),
        ),
        (
            PARTICIPANT,
            token,
            "application/sdp",
            "not sdp",
            (400, "invalid_sdp"),
        ),
        (
            PARTICIPANT,
            None,
            "application/sdp",
            OFFER,
            (401, "invalid_session"),
        ),
    ] {
        let (status, got) = patch(&s, pid, token, content_type, body).await;
        assert_eq!(
            (status, code(&got).as_str()),
            want,
            "{pid} {content_type} {body}: {got}"
        );
    }
    assert_eq!(shard.seen.lock().unwrap().restarts.len(), 1);
}
