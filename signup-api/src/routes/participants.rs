//! Joining and leaving a call, relayed to the room's shard.
//!
//! `POST /v1/rooms/{id}/participants` takes the SDP offer from a logged-in user, places the
//! room, mints the join token itself and relays the offer to the shard over the cluster
//! network; the answer comes back on the same origin the page was loaded from. Media then
//! flows straight to the shard over UDP. A shard that cannot be reached loses the room at
//! once (the next shard is tried in the same request), and a draining shard that no longer
//! hosts the room hands it on; every other refusal of the shard passes through with its code.
//!
//! When TURN is configured the answer carries short-lived TURN credentials beside the SDP, as
//! WHIP's `Link: <turn:…>; rel="ice-server"` headers; `GET /v1/ice-servers` gives the same in
//! JSON before the join, so a client can gather relay candidates while the user is still on
//! the pre-join screen.

use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use surge_cluster::ErrorCode;
use surge_cluster::http::HttpError;
use surge_cluster::{JoinClaims, PlacementError, ShardInfo};

use super::auth::Session;
use super::rooms::{room_for_join, room_not_found, valid_room_id};
use super::{AppState, limited};
use crate::limits::Action;
use crate::shards::{RelayError, ShardAnswer};
use crate::turn::{self, IceServer};

/// Statuses of a shard's refusal that mean the same to the client as they do to the shard;
/// anything else is the cluster's problem (a misconfigured key, a bug) and becomes a 502.
const PASSED_THROUGH: [u16; 5] = [400, 409, 413, 415, 503];

fn joined(outcome: &'static str) {
    metrics::counter!("surge_api_room_joins_total", "outcome" => outcome).increment(1);
}

fn placement_error(e: PlacementError) -> HttpError {
    match e {
        PlacementError::NoCapacity => HttpError::unavailable(
            ErrorCode::NoCapacity,
            "no call server has room for this call right now; retry shortly",
            Duration::from_secs(5),
        ),
        other => {
            tracing::warn!(error = %other, "shard registry unavailable");
            HttpError::unavailable(
                ErrorCode::RegistryUnavailable,
                "call placement is unavailable; retry shortly",
                Duration::from_secs(2),
            )
        }
    }
}

fn shard_unavailable(retry: Duration) -> HttpError {
    HttpError::unavailable(
        ErrorCode::ShardUnavailable,
        "the call server for this room did not answer; retry shortly",
        retry,
    )
}

fn shard_error(shard: &ShardInfo, answer: &ShardAnswer) -> HttpError {
    tracing::error!(
        shard = %shard.id,
        status = answer.status,
        body = %String::from_utf8_lossy(&answer.body),
        "the shard refused a relayed request unexpectedly"
    );
    HttpError::new(
        StatusCode::BAD_GATEWAY,
        ErrorCode::ShardError,
        "the call server refused the request; it has been logged",
    )
}

fn participant_not_found() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::ParticipantNotFound,
        "no such participant in this room",
    )
}

/// A join token for `session`'s user in `room` on `shard`, minted by the API itself.
fn mint(
    state: &AppState,
    session: &Session,
    room: &str,
    shard: &ShardInfo,
) -> Result<String, HttpError> {
    let iat = surge_cluster::token::unix_now();
    state
        .token_key
        .issue(&JoinClaims {
            sub: session.account.id.clone(),
            name: session.account.display_name.clone(),
            room: room.to_owned(),
            shard: shard.id.clone(),
            publish: true,
            subscribe: true,
            iat,
            exp: iat + state.settings.join_ttl.as_secs(),
            jti: surge_cluster::token::new_jti(),
        })
        .map_err(HttpError::internal)
}

/// The offer's cheap checks, before any placement: a bad request changes nothing.
fn offer(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Bytes, HttpError> {
    surge_cluster::http::require_sdp(headers)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            surge_cluster::http::payload_too_large()
        } else {
            HttpError::bad_request(ErrorCode::InvalidSdp, e.body_text())
        }
    })?;
    if !std::str::from_utf8(&body).is_ok_and(|sdp| sdp.starts_with("v=0")) {
        return Err(HttpError::bad_request(
            ErrorCode::InvalidSdp,
            "the body is not an SDP offer (it must start with v=0)",
        ));
    }
    Ok(body)
}

/// `POST /v1/rooms/{id}/participants` with the SDP offer: `201` + the SDP answer and
/// `Location: /v1/rooms/{id}/participants/{participant}`.
pub(crate) async fn join(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    if !valid_room_id(&id) {
        return Err(room_not_found());
    }
    let offer = offer(&headers, body)?;
    state
        .limits
        .check_account(Action::Join, &session.account.id)
        .await
        .map_err(limited)?;
    // Join time as the API sees it: placement, the relay to the shard and the shard's
    // answer, for admitted joins (a refusal by the limits costs nothing to time).
    let started = Instant::now();
    let room = room_for_join(&state, &id).await?;
    let mut shard = state
        .placer
        .place(&room.id)
        .await
        .map_err(placement_error)?;
    // One try on the room's shard, and one more on its new home when that shard is gone
    // (or draining without the room): the client never waits for the registry to notice.
    for last_try in [false, true] {
        let token = mint(&state, &session, &room.id, &shard)?;
        match state
            .shards
            .join(&shard, &room.id, &token, offer.clone())
            .await
        {
            // The room closed on its draining shard since it was pinned: it goes elsewhere.
            Ok(answer)
                if !last_try
                    && answer.status == 503
                    && answer.code().as_deref() == Some("draining") => {}
            Ok(answer) => {
                let mut response = relay_join_answer(&room.id, &shard, answer)?;
                if response.status() == StatusCode::CREATED {
                    add_ice_server_links(&mut response, &ice_servers(&state, &session));
                    metrics::histogram!(surge_cluster::telemetry::ROOM_JOIN_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                }
                return Ok(response);
            }
            Err(RelayError::Unreachable(e)) => {
                tracing::warn!(shard = %shard.id, room = %room.id, error = %e, "shard unreachable; moving the room");
                metrics::counter!("surge_api_shard_unreachable_total").increment(1);
                if last_try {
                    joined("shard_unavailable");
                    return Err(shard_unavailable(Duration::from_secs(1)));
                }
            }
            Err(e) => {
                tracing::warn!(shard = %shard.id, room = %room.id, error = %e, "relayed join failed");
                joined("shard_unavailable");
                return Err(shard_unavailable(Duration::from_secs(2)));
            }
        }
        shard = state
            .placer
            .replace(&room.id, &shard.id)
            .await
            .map_err(placement_error)?;
    }
    Err(shard_unavailable(Duration::from_secs(1)))
}

fn relay_join_answer(
    room: &str,
    shard: &ShardInfo,
    answer: ShardAnswer,
) -> Result<Response, HttpError> {
    let participant = answer
        .location
        .as_deref()
        .and_then(|l| l.rsplit('/').next())
        .filter(|p| valid_participant_id(p));
    match (answer.status, participant) {
        (201, Some(participant)) => {
            joined("joined");
            let location = format!("/v1/rooms/{room}/participants/{participant}");
            Ok(surge_cluster::http::sdp_created(answer.body, &location))
        }
        (status, _) if PASSED_THROUGH.contains(&status) && answer.code().is_some() => {
            joined("refused");
            Ok(passed_through(answer))
        }
        _ => {
            joined("shard_error");
            Err(shard_error(shard, &answer))
        }
    }
}

/// The shard's JSON error as it sent it, with its `Retry-After`.
fn passed_through(answer: ShardAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(value) = answer
        .retry_after
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert(header::RETRY_AFTER, value);
    }
    response
}

/// The ICE servers for `session`'s user, with TURN credentials minted now.
fn ice_servers(state: &AppState, session: &Session) -> Vec<IceServer> {
    state
        .turn
        .ice_servers(&session.account.id, surge_cluster::token::unix_now())
}

fn add_ice_server_links(response: &mut Response, servers: &[IceServer]) {
    let headers = response.headers_mut();
    for link in turn::link_headers(servers) {
        // Our own URLs and base64/decimal credentials: always a valid header value.
        if let Ok(value) = HeaderValue::from_str(&link) {
            headers.append(header::LINK, value);
        }
    }
}

#[derive(Serialize)]
pub(crate) struct IceServers {
    ice_servers: Vec<IceServer>,
}

/// `GET /v1/ice-servers`: the TURN/STUN servers for the logged-in user (empty when none is
/// configured), for a connection prepared before the join. Not cacheable: the credentials
/// are the user's and expire.
pub(crate) async fn ice_servers_route(
    State(state): State<AppState>,
    session: Session,
) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(IceServers {
            ice_servers: ice_servers(&state, &session),
        }),
    )
}

/// Participant ids are the shard's 64-bit ids in 16 hex digits.
fn valid_participant_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `DELETE /v1/rooms/{id}/participants/{participant}`: the logged-in user leaves; a user can
/// remove only their own participants (the shard checks the user the API names).
pub(crate) async fn leave(
    State(state): State<AppState>,
    session: Session,
    Path((id, participant)): Path<(String, String)>,
) -> Result<StatusCode, HttpError> {
    ask_shard(&state, &session, &id, &participant, reqwest::Method::DELETE).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn session_gone() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::SessionGone,
        "the call server has no such session of yours; rejoin the room",
    )
}

/// `PATCH /v1/rooms/{id}/participants/{participant}` with an SDP offer carrying new ICE
/// credentials (as WHIP restarts ICE): `200` + the SDP answer; the participant keeps its id,
/// tracks and subscriptions. `404 session_gone` (its session, or its shard, is gone): rejoin.
pub(crate) async fn restart(
    State(state): State<AppState>,
    session: Session,
    Path((id, participant)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    if !valid_room_id(&id) || !valid_participant_id(&participant) {
        return Err(session_gone());
    }
    let offer = offer(&headers, body)?;
    let Some(shard) = state.placer.current(&id).await.map_err(placement_error)? else {
        return Err(session_gone());
    };
    let token = mint(&state, &session, &id, &shard)?;
    match state
        .shards
        .restart(&shard, &id, &participant, &token, offer)
        .await
    {
        Ok(answer) if answer.status == 200 => {
            let mut response = (StatusCode::OK, answer.body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            Ok(response)
        }
        // Its session or its worker is gone: either way, the client rejoins.
        Ok(answer) if answer.status == 404 => Err(session_gone()),
        Ok(answer) if PASSED_THROUGH.contains(&answer.status) && answer.code().is_some() => {
            Ok(passed_through(answer))
        }
        Ok(answer) => Err(shard_error(&shard, &answer)),
        Err(RelayError::Unreachable(_)) => Err(session_gone()),
        Err(e) => {
            tracing::warn!(shard = %shard.id, room = %id, error = %e, "relayed ICE restart failed");
            Err(shard_unavailable(Duration::from_secs(2)))
        }
    }
}

#[derive(Serialize)]
pub(crate) struct Present {
    room: String,
    participant: String,
}

/// `GET /v1/rooms/{id}/participants/{participant}`: `200` while the call server still has
/// this participant of the logged-in user, `404 participant_not_found` once it (or its
/// server) is gone. A client whose media stopped asks, to rejoin at once when its server
/// died instead of waiting out what may be a network blip on its side.
pub(crate) async fn present(
    State(state): State<AppState>,
    session: Session,
    Path((id, participant)): Path<(String, String)>,
) -> Result<Json<Present>, HttpError> {
    ask_shard(&state, &session, &id, &participant, reqwest::Method::GET).await?;
    Ok(Json(Present {
        room: id,
        participant,
    }))
}

/// Relays a request about one participant to the room's shard; `Ok` when the shard has
/// it (and did what was asked), `404 participant_not_found` when it or its shard is gone.
async fn ask_shard(
    state: &AppState,
    session: &Session,
    id: &str,
    participant: &str,
    method: reqwest::Method,
) -> Result<(), HttpError> {
    if !valid_room_id(id) || !valid_participant_id(participant) {
        return Err(participant_not_found());
    }
    // Rooms move only when their shard is gone, so the room's shard is the participant's;
    // a participant of a shard that is gone is gone with it.
    let Some(shard) = state.placer.current(id).await.map_err(placement_error)? else {
        return Err(participant_not_found());
    };
    let token = mint(state, session, id, &shard)?;
    match state
        .shards
        .participant(method, &shard, id, participant, &token)
        .await
    {
        Ok(answer) if answer.status == 204 => Ok(()),
        Ok(answer) if answer.status == 404 => Err(participant_not_found()),
        Ok(answer) => Err(shard_error(&shard, &answer)),
        Err(RelayError::Unreachable(_)) => Err(participant_not_found()),
        Err(e) => {
            tracing::warn!(shard = %shard.id, room = %id, error = %e, "relayed request failed");
            Err(shard_unavailable(Duration::from_secs(2)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_ids_are_sixteen_hex_digits() {
        assert!(valid_participant_id("00ff00ff00ff00ff"));
        assert!(!valid_participant_id("00ff00ff00ff00f"));
        assert!(!valid_participant_id("00ff00ff00ff00fg"));
        assert!(!valid_participant_id("../../v1/sfu/dra"));
    }
}
