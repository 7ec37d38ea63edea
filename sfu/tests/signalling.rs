//! The join endpoint's refusals, limits and draining, over real HTTP.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{ADMIN, TestShard};
use surge_cluster::token::{JoinClaims, TokenSigner};
use surge_participant::{Participant, ParticipantConfig, ParticipantError};
use surge_sfu_proto::protocol::{EndReason, ServerMessage};

async fn post(
    url: &str,
    token: Option<&str>,
    content_type: &str,
    body: &str,
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or_default();
    (status, body, headers)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hs256(claims: &JoinClaims, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn alg_none(claims: &JoinClaims) -> String {
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.", b64(&serde_json::to_vec(claims).unwrap()))
}

#[tokio::test]
async fn bad_tokens_are_refused_with_their_code() {
    let shard = TestShard::start().await;
    let url = shard.url("room-a");
    let mut expired = shard.claims("room-a", "u");
    expired.exp = 1_000;
    expired.iat = 900;
    let mut wrong_shard = shard.claims("room-a", "u");
    wrong_shard.shard = "another".into();
    let cases = [
        (None, "token_malformed"),
        (Some("not.a.jwt".to_owned()), "token_malformed"),
        (
            Some(
                TokenSigner::generate()
                    .issue(&shard.claims("room-a", "u"))
                    .unwrap(),
            ),
            "token_invalid",
        ),
        (Some(shard.key.issue(&expired).unwrap()), "token_expired"),
        (
            Some(shard.key.issue(&wrong_shard).unwrap()),
            "token_wrong_shard",
        ),
        (Some(shard.token("room-b", "u")), "token_wrong_room"),
        // HS256, even with the shard's own public key as the secret (algorithm confusion).
        (
            Some(hs256(
                &shard.claims("room-a", "u"),
                shard.key.public_key_pem().as_bytes(),
            )),
            "token_invalid",
        ),
        (
            Some(alg_none(&shard.claims("room-a", "u"))),
            "token_malformed",
        ),
    ];
    for (token, code) in cases {
        let (status, body, _) = post(&url, token.as_deref(), "application/sdp", "v=0\r\n").await;
        assert_eq!(status, 401, "{code}: {body}");
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    assert_eq!(shard.shard.status().participants, 0);
    shard.stop().await;
}

#[tokio::test]
async fn malformed_sdp_is_a_400_and_changes_nothing() {
    let shard = TestShard::start().await;
    for body in [
        "",
        "hello",
        "v=0\r\nm=video banana\r\n",
        &"a".repeat(10_000),
    ] {
        let token = shard.token("room", "u");
        let (status, json, _) =
            post(&shard.url("room"), Some(&token), "application/sdp", body).await;
        assert_eq!(status, 400, "{json}");
        assert_eq!(json["error"]["code"], "invalid_sdp");
    }
    let token = shard.token("room", "u");
    let (status, json, _) = post(&shard.url("room"), Some(&token), "application/json", "{}").await;
    assert_eq!(status, 415, "{json}");
    assert_eq!(json["error"]["code"], "unsupported_media_type");
    let status = shard.shard.status();
    assert_eq!((status.rooms, status.participants), (0, 0));
    shard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_room_is_a_409_and_a_full_shard_a_503() {
    let shard = TestShard::start_with(|c| {
        c.max_room_participants = 2;
        c.max_participants = 3;
    })
    .await;
    let a = shard.join("small", "a").await;
    let b = shard.join("small", "b").await;
    match Participant::join(shard.config("small", "c")).await {
        Err(ParticipantError::Refused { status, code }) => {
            assert_eq!((status, code.as_str()), (409, "room_full"));
        }
        other => panic!("expected room_full, got {:?}", other.map(|_| ())),
    }
    let c = shard.join("other", "c").await;
    match Participant::join(shard.config("third", "d")).await {
        Err(ParticipantError::Refused { status, code }) => {
            assert_eq!((status, code.as_str()), (503, "shard_full"));
        }
        other => panic!("expected shard_full, got {:?}", other.map(|_| ())),
    }
    assert_eq!(shard.shard.status().participants, 3);
    for p in [a, b, c] {
        p.leave().await.unwrap();
    }
    assert_eq!(shard.shard.status().participants, 0);
    shard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_shard_keeps_its_rooms_open_refuses_new_ones_and_drains_when_empty() {
    let shard = TestShard::start().await;
    let a = shard.join("d", "a").await;
    let client = reqwest::Client::new();
    let drain = format!("http://{}/v1/sfu/drain", shard.addr);
    let refused = client
        .post(&drain)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert!((shard.shard.ready_gate())().is_ok());
    let accepted = client.post(&drain).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(accepted.status().as_u16(), 202);
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        shard.shard.drain_requested(),
    )
    .await
    .unwrap();
    let ready = (shard.shard.ready_gate())();
    assert!(
        ready.unwrap_err().contains("draining"),
        "a draining shard leaves the pool of new work"
    );
    // A room it does not host: refused, so the API places it elsewhere.
    let (status, body, headers) = post(
        &shard.url("elsewhere"),
        Some(&shard.token("elsewhere", "b")),
        "application/sdp",
        "v=0\r\n",
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "draining");
    assert!(headers.contains_key("retry-after"));
    // The room it hosts: a late joiner lands with the others.
    let b = shard.join("d", "b").await;
    let status: serde_json::Value = client
        .get(format!("http://{}/v1/sfu/status", shard.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "draining");
    assert_eq!(status["participants"], 2);
    // The call goes on until it ends; then the shard is drained, and the closed room is
    // not reopened here.
    a.leave().await.unwrap();
    b.leave().await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), shard.shard.drained())
        .await
        .unwrap();
    match Participant::join(shard.config("d", "c")).await {
        Err(ParticipantError::Refused { status, code }) => {
            assert_eq!((status, code.as_str()), (503, "draining"));
        }
        other => panic!("expected draining, got {:?}", other.map(|_| ())),
    }
    shard.stop().await;
}

/// What a browser needs from the answer: ICE-lite, a 127.0.0.1 host candidate, the passive
/// DTLS role, and `a=rid:… recv` + `a=simulcast:recv` so it sends three layers.
#[tokio::test]
async fn the_answer_asks_for_simulcast_and_is_ice_lite() {
    use str0m::media::{Direction, MediaKind, Simulcast, SimulcastLayer};
    let shard = TestShard::start().await;
    let mut rtc = str0m::Rtc::new(std::time::Instant::now());
    rtc.add_local_candidate(
        str0m::Candidate::host("127.0.0.1:5000".parse().unwrap(), "udp").unwrap(),
    );
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let mut simulcast = Simulcast::new();
    for rid in ["q", "h", "f"] {
        simulcast.send.push(SimulcastLayer::new(rid));
    }
    change.add_media(
        MediaKind::Video,
        Direction::SendRecv,
        None,
        None,
        Some(simulcast),
    );
    change.add_channel("surge".into());
    let (offer, _pending) = change.apply().unwrap();
    let response = reqwest::Client::new()
        .post(shard.url("browser"))
        .bearer_auth(shard.token("browser", "u"))
        .header("content-type", "application/sdp")
        .body(offer.to_sdp_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("/v1/sfu/rooms/browser/participants/"),
        "{location}"
    );
    assert_eq!(response.headers()["content-type"], "application/sdp");
    let answer = response.text().await.unwrap();
    for needle in [
        "a=ice-lite",
        "a=setup:passive",
        "a=simulcast:recv q;h;f",
        "a=rid:q recv",
        "a=rid:f recv",
        "127.0.0.1",
        "m=application",
    ] {
        assert!(answer.contains(needle), "{needle} missing in\n{answer}");
    }
    let delete = |token: String| {
        reqwest::Client::new()
            .delete(format!("http://{}{location}", shard.addr))
            .bearer_auth(token)
            .send()
    };
    // Someone else's token cannot remove this participant.
    let refused = delete(shard.token("browser", "intruder")).await.unwrap();
    assert_eq!(refused.status().as_u16(), 404);
    // A call outlasts its join token: leaving works with the expired token.
    let mut expired = shard.claims("browser", "u");
    expired.exp = 1_000;
    expired.iat = 900;
    let deleted = delete(shard.key.issue(&expired).unwrap()).await.unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    assert_eq!(shard.shard.status().participants, 0);
    shard.stop().await;
}

/// Signalling is cluster-internal (browsers reach only the API, which relays): no CORS.
#[tokio::test]
async fn signalling_answers_no_cross_origin_requests() {
    let shard = TestShard::start().await;
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, shard.url("cors"))
        .header("origin", "http://api.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 405);
    assert!(
        !preflight
            .headers()
            .contains_key("access-control-allow-origin")
    );
    let (_, _, headers) = post(&shard.url("cors"), None, "application/sdp", "v=0\r\n").await;
    assert!(!headers.contains_key("access-control-allow-origin"));
    shard.stop().await;
}

/// A join token opens one join: the same token again (captured on the cluster network, or
/// from a log) is refused, even after the first session left, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_join_token_is_refused() {
    let shard = TestShard::start().await;
    let token = shard.token("room", "u");
    let first = Participant::join(ParticipantConfig::new(&shard.url("room"), &token))
        .await
        .unwrap();
    for _ in 0..3 {
        match Participant::join(ParticipantConfig::new(&shard.url("room"), &token)).await {
            Err(ParticipantError::Refused { status, code }) => {
                assert_eq!((status, code.as_str()), (401, "token_replayed"));
            }
            other => panic!("a replay was admitted: {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(shard.shard.status().participants, 1);
    first.leave().await.unwrap();
    let (status, body, _) = post(
        &shard.url("room"),
        Some(&token),
        "application/sdp",
        "v=0\r\n",
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("token_replayed"))
    );
    // The shard is healthy: a fresh token joins.
    let again = shard.join("room", "u").await;
    assert_eq!(shard.shard.status().participants, 1);
    again.leave().await.unwrap();
    shard.stop().await;
}

/// One session per user per room, over real HTTP and UDP: the second join of a user ends
/// the first (told `ended`/`replaced`), and the others see it leave and the new one join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_join_of_the_same_user_replaces_the_first() {
    let shard = TestShard::start().await;
    let other = shard.join("room", "bob").await;
    let first = shard.join("room", "alice").await;
    let first_id = first.stats().participant_id.unwrap();
    // Connected first, so that it can be told (a session replaced before its data channel
    // opened just ends).
    common::wait_for(&first, Duration::from_secs(30), |s| {
        s.messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Welcome { .. }))
    })
    .await;
    let second = shard.join("room", "alice").await;
    let second_id = second.stats().participant_id.unwrap();
    assert_ne!(first_id, second_id);
    let told = common::wait_for(&first, Duration::from_secs(30), |s| {
        s.messages.iter().any(|m| {
            matches!(
                m,
                ServerMessage::Ended {
                    reason: EndReason::Replaced
                }
            )
        })
    })
    .await;
    assert!(
        told.messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Ended { .. })),
        "{:?}",
        told.messages
    );
    let seen = common::wait_for(&other, Duration::from_secs(30), |s| {
        let left = s.messages.iter().any(
            |m| matches!(m, ServerMessage::Left { participant_id } if participant_id.to_string() == first_id),
        );
        let joined = s.messages.iter().any(
            |m| matches!(m, ServerMessage::Joined { participant } if participant.id.to_string() == second_id),
        );
        left && joined
    })
    .await;
    assert!(
        seen.messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Left { .. })),
        "{:?}",
        seen.messages
    );
    assert_eq!(shard.shard.status().participants, 2);
    // The replaced session cannot be left twice; the new one leaves normally.
    assert!(first.leave().await.is_err());
    second.leave().await.unwrap();
    other.leave().await.unwrap();
    assert_eq!(shard.shard.status().participants, 0);
    shard.stop().await;
}
