//! Signup, login, logout and `/v1/me`.
//!
//! A signup passes, cheapest first: the body limit and JSON parsing (the router), field
//! validation, the local then shared rate limits, a first overload check (no database
//! work before it), an idempotency replay, a duplicate-email check, and admission to the
//! hashing pool; only then is the password hashed, and only after that is a database
//! connection taken to write the account.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use surge_cluster::ErrorCode;
use surge_cluster::client_addr::ClientIp;
use surge_cluster::http::{ApiJson, HttpError};

use super::auth::{Session, new_token};
use super::{AppState, busy, invalid, limited, login_throttled, now_secs, store_error};
use crate::hashing::Lane;
use crate::limits::Action;
use crate::store::{Account, StoreError, StoredResponse};
use crate::validate;

#[derive(Deserialize)]
pub(crate) struct SignupRequest {
    email: String,
    password: String,
    display_name: String,
}

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 128;

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, HttpError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default().trim();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(HttpError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidIdempotencyKey,
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        ));
    }
    Ok(Some(key.to_owned()))
}

/// What identifies "the same request" for a key. The password is left out on purpose: a
/// fast digest of it in the database would undo the point of Argon2.
fn fingerprint(email: &str, display_name: &str) -> String {
    let mut h = Sha256::new();
    h.update(email.as_bytes());
    h.update([0]);
    h.update(display_name.as_bytes());
    hex::encode(h.finalize())
}

fn replay(stored: &StoredResponse, fingerprint: &str) -> Response {
    if stored.fingerprint != fingerprint {
        return HttpError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was used for a different request",
        )
        .into_response();
    }
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::CREATED);
    let mut response = (status, stored.body.clone()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

fn outcome(name: &'static str) {
    metrics::counter!("surge_api_signups_total", "outcome" => name).increment(1);
}

/// `POST /v1/accounts`.
pub(crate) async fn signup(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SignupRequest>,
) -> Result<Response, HttpError> {
    let email = validate::email(&req.email).map_err(invalid)?;
    validate::password(&req.password).map_err(invalid)?;
    let display_name = validate::display_name(&req.display_name).map_err(invalid)?;
    let key = idempotency_key(&headers)?;
    state
        .limits
        .check(Action::Signup, client)
        .await
        .inspect_err(|_| outcome("rate_limited"))
        .map_err(limited)?;
    let print = fingerprint(&email, &display_name);
    let stored_for = |key: &Option<String>| {
        let state = state.clone();
        let key = key.clone();
        async move {
            match key {
                Some(k) => state
                    .store
                    .idempotent_response(&k)
                    .await
                    .map_err(store_error),
                None => Ok(None),
            }
        }
    };
    // Before any database work, the idempotency lookup included: a flood beyond the
    // hashing capacity is refused here at the cost of a lock and a few arithmetic
    // operations (the real admission follows). A retry of a request that already
    // succeeded gets its stored answer once the flood lets it through.
    state
        .hasher
        .check(Lane::Signup)
        .inspect_err(|_| outcome("overloaded"))
        .map_err(busy)?;
    if let Some(stored) = stored_for(&key).await? {
        outcome("replayed");
        return Ok(replay(&stored, &print));
    }
    // Duplicates are refused before any hashing: the answer is public anyway (409), and
    // a flood of retries must not cost a hash each. The unique index stays the real guard.
    if state
        .store
        .email_exists(&email)
        .await
        .map_err(store_error)?
    {
        if let Some(stored) = stored_for(&key).await? {
            outcome("replayed");
            return Ok(replay(&stored, &print));
        }
        outcome("email_taken");
        return Err(store_error(StoreError::EmailTaken));
    }
    let hash = state
        .hasher
        .hash(req.password)
        .await
        .inspect_err(|_| outcome("overloaded"))
        .map_err(busy)?
        .map_err(HttpError::internal)?;
    let account = Account {
        id: uuid::Uuid::new_v4().to_string(),
        email,
        display_name,
        created_at: now_secs(),
    };
    let body = serde_json::to_string(&account).map_err(HttpError::internal)?;
    let stored = StoredResponse {
        fingerprint: print.clone(),
        status: StatusCode::CREATED.as_u16(),
        body: body.clone(),
    };
    let idempotency = key.as_deref().map(|k| (k, &stored));
    match state
        .store
        .insert_account(&account, &hash, idempotency)
        .await
    {
        Ok(()) => {
            outcome("created");
            let mut response = (StatusCode::CREATED, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(response)
        }
        Err(StoreError::EmailTaken | StoreError::IdempotencyKeyTaken) => {
            // A concurrent request won: the same key gets its answer, anyone else a 409.
            if let Some(stored) = stored_for(&key).await? {
                outcome("replayed");
                return Ok(replay(&stored, &print));
            }
            outcome("email_taken");
            Err(store_error(StoreError::EmailTaken))
        }
        Err(e) => {
            outcome("database_unavailable");
            Err(store_error(e))
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Serialize)]
struct UserView<'a> {
    id: &'a str,
    email: &'a str,
    display_name: &'a str,
}

#[derive(Serialize)]
struct LoginResponse<'a> {
    token: String,
    expires_at: i64,
    user: UserView<'a>,
}

fn invalid_credentials() -> HttpError {
    HttpError::unauthorized(ErrorCode::InvalidCredentials, "wrong email or password")
}

/// `POST /v1/sessions`: unknown email and wrong password give the same answer after the
/// same work (a verification against a dummy hash).
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, HttpError> {
    state
        .limits
        .check(Action::Login, client)
        .await
        .map_err(limited)?;
    // A malformed email or an over-long password cannot match any account; answering at
    // once reveals nothing about which accounts exist.
    let Ok(email) = validate::email(&req.email) else {
        return Err(invalid_credentials());
    };
    if req.password.is_empty() || req.password.len() > validate::MAX_PASSWORD_BYTES {
        return Err(invalid_credentials());
    }
    // Before any hashing: a botnet guessing one account's password from many addresses
    // gets the same doubling wait as one address would.
    state
        .login_backoff
        .check(&email)
        .await
        .inspect_err(|_| {
            metrics::counter!("surge_api_logins_total", "outcome" => "throttled").increment(1);
        })
        .map_err(login_throttled)?;
    state
        .hasher
        .check(crate::hashing::Lane::Login)
        .map_err(busy)?;
    let credentials = state.store.credentials(&email).await.map_err(store_error)?;
    let (account, phc) = match credentials {
        Some(c) => (Some(c.account), Some(c.password_hash)),
        None => (None, None),
    };
    let ok = state.hasher.verify(req.password, phc).await.map_err(busy)?;
    let Some(account) = account.filter(|_| ok) else {
        state.login_backoff.failed(&email).await;
        metrics::counter!("surge_api_logins_total", "outcome" => "refused").increment(1);
        return Err(invalid_credentials());
    };
    state.login_backoff.succeeded(&email).await;
    let (token, digest) = new_token();
    let now = now_secs();
    let ttl = i64::try_from(state.settings.session_ttl.as_secs()).unwrap_or(i64::MAX);
    let expires_at = now.saturating_add(ttl);
    state
        .store
        .insert_session(&digest, &account.id, expires_at, now)
        .await
        .map_err(store_error)?;
    metrics::counter!("surge_api_logins_total", "outcome" => "ok").increment(1);
    Ok((
        StatusCode::CREATED,
        Json(LoginResponse {
            token,
            expires_at,
            user: UserView {
                id: &account.id,
                email: &account.email,
                display_name: &account.display_name,
            },
        }),
    )
        .into_response())
}

/// `DELETE /v1/sessions/current`.
pub(crate) async fn logout(
    State(state): State<AppState>,
    session: Session,
) -> Result<StatusCode, HttpError> {
    state
        .store
        .delete_session(&session.token_digest)
        .await
        .map_err(store_error)?;
    if let Err(e) = state.publisher.clear(&session.account.id).await {
        tracing::debug!(error = %e, "could not clear presence at logout; it will expire");
    }
    // The session's presence streams end, on whichever replica they are.
    super::notify(
        &state,
        crate::presence::Notice::SessionEnded {
            session: session.token_digest.clone(),
        },
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/me`.
pub(crate) async fn me(session: Session) -> Json<Account> {
    Json(session.account)
}
