//! HTTP signalling (see `docs/signalling.md`): WHIP-style join and leave, drain, status.
//! Everything after the join (renegotiation, room events) flows over the `surge` data
//! channel and is handled by the worker that owns the participant.
//!
//! This listener is cluster-internal: browsers and the loadgen talk to the API, which
//! relays joins and leaves here (so there is no CORS, and no TLS of its own).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use str0m::change::SdpOffer;
use surge_cluster::ErrorCode;
use surge_cluster::admin::AdminToken;
use surge_cluster::http::{ApiJson, HttpError};
use surge_cluster::token::{JoinClaims, unix_now};

use crate::commands::{Command, JoinRequest, LeaveRequest, RestartRequest, WorkerHandle};
use crate::metrics_names as m;
use crate::shared::Shared;
use surge_sfu_proto::{JoinRefusal, RestartRefusal};

/// Clients told to come back later wait this long (drain, full shard).
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// A worker that does not answer a join within this is treated as overloaded.
const WORKER_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/sfu/rooms/{room}/participants", post(join))
        .route(
            "/v1/sfu/rooms/{room}/participants/{participant}",
            delete(leave).get(present).patch(restart),
        )
        .route("/v1/sfu/drain", post(drain))
        .route("/v1/sfu/status", get(status))
        .with_state(shared)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn refuse(error: HttpError) -> HttpError {
    metrics::counter!(m::JOINS_REFUSED, "code" => error.code.as_str()).increment(1);
    error
}

/// Checks the bearer join token for `room` on this shard. `at` is the time its expiry is
/// judged at; `None` skips expiry (leaving a call that outlasted its token).
fn verify(
    shared: &Shared,
    headers: &HeaderMap,
    room: &str,
    at: Option<u64>,
) -> Result<JoinClaims, HttpError> {
    let Some(token) = bearer(headers) else {
        return Err(refuse(HttpError::unauthorized(
            ErrorCode::TokenMalformed,
            "expected Authorization: Bearer <join token>",
        )));
    };
    let verified = match at {
        Some(now) => shared
            .token_key
            .verify(token, &shared.shard_id, Some(room), now),
        None => shared
            .token_key
            .verify_ignoring_expiry(token, &shared.shard_id, Some(room)),
    };
    verified.map_err(|e| refuse(HttpError::unauthorized(e.code(), e.to_string())))
}

fn draining() -> HttpError {
    refuse(HttpError::unavailable(
        ErrorCode::Draining,
        "this shard is draining and takes no new rooms; ask the API for another",
        RETRY_AFTER,
    ))
}

fn shard_full() -> HttpError {
    refuse(HttpError::unavailable(
        ErrorCode::ShardFull,
        "this shard hosts as many participants or rooms as it may",
        RETRY_AFTER,
    ))
}

/// A join for a room whose worker failed: the shard is about to exit and be restarted;
/// the API places the room again.
fn worker_failed_join() -> HttpError {
    refuse(HttpError::unavailable(
        ErrorCode::WorkerUnavailable,
        "the media worker for this room failed; the shard is restarting",
        RETRY_AFTER,
    ))
}

async fn join(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    // A draining shard keeps admitting joins to the rooms it hosts (a meeting stays
    // together during an update); the worker has the final word if the room just closed.
    if shared.occupancy.is_draining() && !shared.occupancy.hosts(&room) {
        return Err(draining());
    }
    let now = unix_now();
    let claims = verify(&shared, &headers, &room, Some(now))?;
    // Burnt on first sight, before the offer is looked at: a replay races nothing, and a
    // refused join costs the API one fresh token (it mints one per try anyway).
    shared
        .used_tokens
        .first_use(&claims.jti, claims.exp, now)
        .map_err(|e| refuse(HttpError::unauthorized(e.code(), e.to_string())))?;
    let offer = sdp_offer(&headers, &body).map_err(refuse)?;
    let participant: u64 = rand::random();
    let participant_id = format!("{participant:016x}");
    let (reply, answer) = tokio::sync::oneshot::channel();
    let worker = shared.worker_for(&room);
    if worker.has_failed() {
        return Err(worker_failed_join());
    }
    let request = JoinRequest {
        room: room.clone(),
        participant,
        claims,
        offer,
        reply,
    };
    if worker
        .commands
        .send(Command::Join(Box::new(request)))
        .is_err()
    {
        if worker.has_failed() {
            return Err(worker_failed_join());
        }
        return Err(HttpError::unavailable(
            ErrorCode::Stopping,
            "this shard is stopping",
            RETRY_AFTER,
        ));
    }
    worker.waker.wake();
    let answer = match tokio::time::timeout(WORKER_ANSWER_TIMEOUT, answer).await {
        Ok(Ok(Ok(answer))) => answer,
        outcome => {
            // The switchboard took no slot for a refused join.
            return Err(match outcome {
                Ok(Ok(Err(JoinRefusal::RoomFull))) => refuse(HttpError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::RoomFull,
                    format!(
                        "the room has {} participants, its limit",
                        shared.occupancy.limits.max_room_participants
                    ),
                )),
                Ok(Ok(Err(JoinRefusal::ShardFull))) => shard_full(),
                Ok(Ok(Err(JoinRefusal::Draining))) => draining(),
                Ok(Ok(Err(JoinRefusal::InvalidSdp(why)))) => refuse(HttpError::bad_request(
                    ErrorCode::InvalidSdp,
                    format!("the SDP offer cannot be accepted: {why}"),
                )),
                _ => worker_timeout(),
            });
        }
    };
    let location = format!("/v1/sfu/rooms/{room}/participants/{participant_id}");
    Ok(surge_cluster::http::sdp_created(
        answer.to_sdp_string(),
        &location,
    ))
}

async fn leave(
    State(shared): State<Arc<Shared>>,
    Path((room, participant)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, HttpError> {
    // The participant id in the path plus a validly signed token for this room and user
    // identify the leaver; the join token's short expiry must not trap people in a call.
    ask_worker(&shared, room, &participant, &headers, Command::Leave).await
}

/// The SDP offer of a request body (`Content-Type: application/sdp`).
fn sdp_offer(headers: &HeaderMap, body: &[u8]) -> Result<SdpOffer, HttpError> {
    surge_cluster::http::require_sdp(headers)?;
    std::str::from_utf8(body)
        .ok()
        .and_then(|sdp| SdpOffer::from_sdp_string(sdp).ok())
        .ok_or_else(|| {
            HttpError::bad_request(ErrorCode::InvalidSdp, "the body is not a valid SDP offer")
        })
}

fn worker_timeout() -> HttpError {
    HttpError::unavailable(
        ErrorCode::WorkerUnavailable,
        "the media worker did not answer in time",
        RETRY_AFTER,
    )
}

fn session_gone() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::SessionGone,
        "this shard has no such session of yours; rejoin the room",
    )
}

/// `PATCH` with an SDP offer carrying new ICE credentials (WHIP's ICE restart, RFC 9725
/// §4.4): `200` + the SDP answer, and the participant keeps its id, tracks and
/// subscriptions. `404 session_gone` tells the client to rejoin.
async fn restart(
    State(shared): State<Arc<Shared>>,
    Path((room, participant)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let claims = verify(&shared, &headers, &room, None)?;
    let Ok(participant) = u64::from_str_radix(&participant, 16) else {
        return Err(session_gone());
    };
    let offer = sdp_offer(&headers, &body)?;
    let worker = shared.worker_for(&room);
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = RestartRequest {
        room,
        participant,
        user: claims.sub,
        offer,
        reply,
    };
    match hand_to_worker(worker, Command::Restart(Box::new(request)), answer).await? {
        Handed::Answered(Ok(answer)) => {
            metrics::counter!(m::ICE_RESTARTS, "outcome" => "restarted").increment(1);
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/sdp")],
                answer.to_sdp_string(),
            )
                .into_response())
        }
        Handed::Answered(Err(refusal)) => {
            metrics::counter!(m::ICE_RESTARTS, "outcome" => "refused").increment(1);
            Err(match refusal {
                RestartRefusal::SameCredentials => HttpError::bad_request(
                    ErrorCode::IceRestartRequired,
                    "the offer keeps the session's ICE credentials; restart ICE (new ice-ufrag and ice-pwd)",
                ),
                RestartRefusal::InvalidSdp(why) => HttpError::bad_request(
                    ErrorCode::InvalidSdp,
                    format!("the SDP offer cannot be accepted: {why}"),
                ),
                _ => session_gone(),
            })
        }
        Handed::Refused => Err(session_gone()),
        Handed::Late => Err(worker_timeout()),
    }
}

/// `204` while the token's user has this participant in the room: a client whose media
/// stopped asks (through the API) whether its shard still has it, to rejoin at once when
/// the shard is gone instead of waiting out a network blip.
async fn present(
    State(shared): State<Arc<Shared>>,
    Path((room, participant)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, HttpError> {
    ask_worker(&shared, room, &participant, &headers, Command::Lookup).await
}

/// Sends a request about one participant of `room` to its worker; `204` when it is there.
async fn ask_worker(
    shared: &Shared,
    room: String,
    participant: &str,
    headers: &HeaderMap,
    command: fn(LeaveRequest) -> Command,
) -> Result<StatusCode, HttpError> {
    let claims = verify(shared, headers, &room, None)?;
    let Ok(participant) = u64::from_str_radix(participant, 16) else {
        return Err(HttpError::not_found("no such participant in this room"));
    };
    let worker = shared.worker_for(&room);
    let (reply, done) = tokio::sync::oneshot::channel();
    let request = LeaveRequest {
        room,
        participant,
        user: claims.sub,
        reply,
    };
    match hand_to_worker(worker, command(request), done).await? {
        Handed::Answered(true) => Ok(StatusCode::NO_CONTENT),
        Handed::Refused => Err(HttpError::not_found("no such participant")),
        _ => Err(HttpError::not_found("no such participant in this room")),
    }
}

/// What became of a command handed to a worker.
enum Handed<T> {
    /// Its reply.
    Answered(T),
    /// The worker takes no more commands (it is stopping).
    Refused,
    /// No reply within [`WORKER_ANSWER_TIMEOUT`].
    Late,
}

/// Hands `command` to `worker` and waits for its reply on `reply`. A worker that failed
/// ended its participants' calls: that is an error of its own, with the reason.
async fn hand_to_worker<T>(
    worker: &WorkerHandle,
    command: Command,
    reply: tokio::sync::oneshot::Receiver<T>,
) -> Result<Handed<T>, HttpError> {
    if worker.has_failed() {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::WorkerFailed,
            "the media worker hosting this participant failed and the call ended; rejoin",
        ));
    }
    if worker.commands.send(command).is_err() {
        return Ok(Handed::Refused);
    }
    worker.waker.wake();
    Ok(
        match tokio::time::timeout(WORKER_ANSWER_TIMEOUT, reply).await {
            Ok(Ok(answer)) => Handed::Answered(answer),
            _ => Handed::Late,
        },
    )
}

async fn drain(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    // The same check as the API's admin routes: an empty token disables the endpoint.
    let Some(admin) = AdminToken::new(shared.admin_token.as_deref()) else {
        return Err(HttpError::not_found(
            "the admin endpoints are disabled (no admin token configured)",
        ));
    };
    if !admin.permits(&headers) {
        return Ok(surge_cluster::admin::unauthorized());
    }
    shared.begin_drain();
    Ok((StatusCode::ACCEPTED, ApiJson(shared.status())).into_response())
}

async fn status(State(shared): State<Arc<Shared>>) -> ApiJson<crate::ShardStatus> {
    ApiJson(shared.status())
}
