//! Rooms: create and look up (joining is in `participants`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use surge_cluster::ErrorCode;
use surge_cluster::http::HttpError;

use super::auth::Session;
use super::{AppState, invalid, limited, now_secs, store_error};
use crate::limits::Action;
use crate::store::Room;
use crate::validate;

#[derive(Deserialize, Default)]
struct CreateRoomRequest {
    #[serde(default)]
    name: Option<String>,
}

/// Room ids: 12 characters from an alphabet without look-alikes (easy to read aloud and
/// type from a link); 31^12 ≈ 2^59, unguessable enough for a link that opens a call.
const ID_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
const ID_LEN: usize = 12;

pub(crate) fn new_room_id() -> String {
    let bytes: [u8; ID_LEN] = rand::random();
    bytes
        .iter()
        .map(|b| char::from(ID_ALPHABET[usize::from(*b) % ID_ALPHABET.len()]))
        .collect()
}

pub(crate) fn valid_room_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) fn room_not_found() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::RoomNotFound,
        "no such room",
    )
}

/// `POST /v1/rooms` with an optional `{name}` body (an empty body is fine).
pub(crate) async fn create(
    State(state): State<AppState>,
    session: Session,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Room>), HttpError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            surge_cluster::http::payload_too_large()
        } else {
            HttpError::bad_request(ErrorCode::InvalidBody, e.body_text())
        }
    })?;
    let req: CreateRoomRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CreateRoomRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            if e.is_data() {
                HttpError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::InvalidBody,
                    format!("the JSON body does not have the expected fields: {e}"),
                )
            } else {
                HttpError::bad_request(
                    ErrorCode::MalformedJson,
                    "the request body is not valid JSON",
                )
            }
        })?
    };
    let name = match req.name.as_deref() {
        Some(raw) if !raw.trim().is_empty() => validate::room_name(raw).map_err(invalid)?,
        _ => "Untitled room".to_owned(),
    };
    state
        .limits
        .check_account(Action::CreateRoom, &session.account.id)
        .await
        .map_err(limited)?;
    let now = now_secs();
    let room = Room {
        id: new_room_id(),
        name,
        expires_at: now.saturating_add(ttl_secs(&state)),
    };
    state
        .store
        .insert_room(
            &room,
            &session.account.id,
            now,
            state.settings.max_rooms_per_account,
        )
        .await
        .map_err(store_error)?;
    Ok((StatusCode::CREATED, Json(room)))
}

pub(crate) fn ttl_secs(state: &AppState) -> i64 {
    i64::try_from(state.settings.room_ttl.as_secs()).unwrap_or(i64::MAX)
}

/// A used room's expiry is pushed back at most once an hour, so joins rarely write.
const EXTEND_GRANULARITY_SECS: i64 = 3600;

/// The live room `id` for a join: 404 when it does not exist or has expired; using it
/// pushes its expiry back by the room lifetime.
pub(crate) async fn room_for_join(state: &AppState, id: &str) -> Result<Room, HttpError> {
    let now = now_secs();
    let mut room = state
        .store
        .room(id, now)
        .await
        .map_err(store_error)?
        .ok_or_else(room_not_found)?;
    let renewed = now.saturating_add(ttl_secs(state));
    if renewed - room.expires_at >= EXTEND_GRANULARITY_SECS {
        // Best effort: a failed write costs the room an hour of lifetime, not the join.
        match state.store.extend_room(id, renewed).await {
            Ok(()) => room.expires_at = renewed,
            Err(e) => tracing::debug!(error = %e, "could not extend a room's expiry"),
        }
    }
    Ok(room)
}

/// `GET /v1/rooms/{id}`: public, so a join link can show the room's name before login.
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Room>, HttpError> {
    if !valid_room_id(&id) {
        return Err(room_not_found());
    }
    state
        .store
        .room(&id, now_secs())
        .await
        .map_err(store_error)?
        .map(Json)
        .ok_or_else(room_not_found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_are_link_safe() {
        let id = new_room_id();
        assert_eq!(id.len(), ID_LEN);
        assert!(valid_room_id(&id));
        assert_ne!(id, new_room_id());
        assert!(!valid_room_id("../etc"));
        assert!(!valid_room_id(""));
    }
}
