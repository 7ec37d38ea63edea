//! The HTTP surface: shared state, error mapping, and one module per area.

mod accounts;
mod auth;
mod calls;
mod contacts;
mod openapi;
mod participants;
mod presence;
mod rooms;
mod web;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use surge_cluster::ErrorCode;
use surge_cluster::client_addr::TrustedProxies;
use surge_cluster::http::HttpError;
use surge_cluster::{Placer, TokenSigner};
use tokio_util::sync::CancellationToken;

use crate::hashing::{Busy, HashPool};
use crate::limits::{Limited, Limits};
use crate::login_backoff::LoginBackoff;
use crate::presence::{Connections, Presence, PresenceError, Publisher, StreamSlots};
use crate::shards::ShardClient;
use crate::store::{Store, StoreError};
use crate::tickets::Tickets;
use crate::validate::InvalidInput;

/// Durations the handlers need.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub session_ttl: Duration,
    pub presence_ttl: Duration,
    pub join_ttl: Duration,
    /// A room unused for this long expires (its link stops working).
    pub room_ttl: Duration,
    /// Most live rooms one account may have.
    pub max_rooms_per_account: u32,
    /// How long a presence-stream ticket stays redeemable.
    pub ticket_ttl: Duration,
    /// Unanswered contact requests one account may have out.
    pub max_pending_contact_requests: u32,
    /// How long a call rings before it is missed.
    pub ring_timeout: Duration,
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState(pub Arc<Inner>);

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub hasher: HashPool,
    pub limits: Limits,
    pub login_backoff: Arc<LoginBackoff>,
    pub presence: Arc<dyn Presence>,
    pub publisher: Arc<Publisher>,
    /// The users whose presence streams this process holds (online while they do).
    pub connections: Arc<Connections>,
    pub tickets: Arc<dyn Tickets>,
    pub streams: StreamSlots,
    pub placer: Placer,
    pub shards: ShardClient,
    pub token_key: TokenSigner,
    pub turn: crate::turn::Turn,
    pub settings: Settings,
    pub shutdown: CancellationToken,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The API's routes (without `/healthz` and friends, which the binary adds). Handlers see
/// the client's real address behind `proxies`.
pub(crate) fn router(state: AppState, proxies: TrustedProxies) -> Router {
    Router::new()
        .route("/v1/accounts", post(accounts::signup))
        .route("/v1/sessions", post(accounts::login))
        .route("/v1/sessions/current", delete(accounts::logout))
        .route("/v1/me", get(accounts::me))
        .route(
            "/v1/presence",
            axum::routing::put(presence::heartbeat).get(presence::statuses),
        )
        .route("/v1/presence/tickets", post(presence::ticket))
        .route("/v1/presence/stream", get(presence::stream))
        .route("/v1/contacts", post(contacts::request).get(contacts::list))
        .route("/v1/contacts/{user_id}", delete(contacts::remove))
        .route(
            "/v1/contacts/requests/{user_id}/accept",
            post(contacts::accept),
        )
        .route("/v1/contacts/requests/{user_id}", delete(contacts::decline))
        .route("/v1/contacts/outgoing/{email}", delete(contacts::withdraw))
        .route("/v1/calls", post(calls::start))
        .route("/v1/calls/recent", get(calls::recent))
        .route("/v1/calls/{id}/accept", post(calls::accept))
        .route("/v1/calls/{id}/decline", post(calls::decline))
        .route("/v1/calls/{id}/cancel", post(calls::cancel))
        .route("/v1/calls/{id}/hangup", post(calls::hangup))
        .route("/v1/calls/{id}/members", post(calls::add))
        .route("/v1/ice-servers", get(participants::ice_servers_route))
        .route("/v1/rooms", post(rooms::create))
        .route("/v1/rooms/{id}", get(rooms::get))
        .route("/v1/rooms/{id}/participants", post(participants::join))
        .route(
            "/v1/rooms/{id}/participants/{participant}",
            delete(participants::leave)
                .get(participants::present)
                .patch(participants::restart),
        )
        .route("/openapi.json", get(openapi::document))
        .merge(web::routes())
        .with_state(state)
        .layer(proxies.layer())
}

pub(crate) fn store_error(e: StoreError) -> HttpError {
    match e {
        StoreError::EmailTaken => HttpError::new(
            StatusCode::CONFLICT,
            ErrorCode::EmailTaken,
            "an account with this email already exists",
        ),
        StoreError::IdempotencyKeyTaken => HttpError::new(
            StatusCode::CONFLICT,
            ErrorCode::IdempotencyConflict,
            "another request with this Idempotency-Key is in progress",
        ),
        StoreError::TooManyRooms => HttpError::new(
            StatusCode::CONFLICT,
            ErrorCode::TooManyRooms,
            "this account has as many rooms as it may; unused rooms expire",
        ),
        StoreError::TooManyPendingRequests => HttpError::new(
            StatusCode::CONFLICT,
            ErrorCode::TooManyContactRequests,
            "you have as many unanswered contact requests as you may; withdraw one or wait for answers",
        ),
        StoreError::Unavailable(e) => {
            tracing::warn!(error = %e, "database unavailable");
            metrics::counter!("surge_api_database_unavailable_total").increment(1);
            HttpError::unavailable(
                ErrorCode::DatabaseUnavailable,
                "the database is not answering; retry shortly",
                StoreError::RETRY_AFTER,
            )
        }
        other => HttpError::internal(other),
    }
}

pub(crate) fn invalid(e: InvalidInput) -> HttpError {
    HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string())
}

pub(crate) fn limited(l: Limited) -> HttpError {
    HttpError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
        "too many requests from this client; retry later",
    )
    .with_retry_after(l.retry_after)
}

pub(crate) fn login_throttled(l: Limited) -> HttpError {
    HttpError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::LoginThrottled,
        "too many wrong passwords for this account; retry later",
    )
    .with_retry_after(l.retry_after)
}

/// A notice to every replica's streams (best effort: [`crate::presence::notify`]).
pub(crate) async fn notify(state: &AppState, notice: crate::presence::Notice) {
    crate::presence::notify(state.presence.as_ref(), notice).await;
}

pub(crate) fn busy(b: Busy) -> HttpError {
    HttpError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Overloaded,
        "the service is at capacity; retry later",
    )
    .with_retry_after(b.retry_after)
}

pub(crate) fn presence_error(e: PresenceError) -> HttpError {
    tracing::warn!(error = %e, "presence store unavailable");
    HttpError::unavailable(
        ErrorCode::PresenceUnavailable,
        "presence is not available right now; retry shortly",
        Duration::from_secs(1),
    )
}

pub(crate) use crate::now_ms;

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> i64 {
    i64::try_from(surge_cluster::token::unix_now()).unwrap_or(i64::MAX)
}
