//! Rooms: create, look up, and join (placement on an SFU shard plus a join token).

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use surge_cluster::http::HttpError;
use surge_cluster::{JoinClaims, PlacementError};

use super::auth::Session;
use super::{AppState, invalid, now_secs, store_error};
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

fn new_room_id() -> String {
    let bytes: [u8; ID_LEN] = rand::random();
    bytes
        .iter()
        .map(|b| char::from(ID_ALPHABET[usize::from(*b) % ID_ALPHABET.len()]))
        .collect()
}

fn valid_room_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn room_not_found() -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, "room_not_found", "no such room")
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
            HttpError::bad_request("invalid_body", e.body_text())
        }
    })?;
    let req: CreateRoomRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CreateRoomRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            if e.is_data() {
                HttpError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    format!("the JSON body does not have the expected fields: {e}"),
                )
            } else {
                HttpError::bad_request("malformed_json", "the request body is not valid JSON")
            }
        })?
    };
    let name = match req.name.as_deref() {
        Some(raw) if !raw.trim().is_empty() => validate::room_name(raw).map_err(invalid)?,
        _ => "Untitled room".to_owned(),
    };
    let room = Room {
        id: new_room_id(),
        name,
    };
    state
        .store
        .insert_room(&room, &session.account.id, now_secs())
        .await
        .map_err(store_error)?;
    Ok((StatusCode::CREATED, Json(room)))
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
        .room(&id)
        .await
        .map_err(store_error)?
        .map(Json)
        .ok_or_else(room_not_found)
}

#[derive(Serialize)]
pub(crate) struct JoinResponse {
    room: String,
    shard: String,
    signal_url: String,
    token: String,
    expires_at: u64,
}

/// `POST /v1/rooms/{id}/join`.
pub(crate) async fn join(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Json<JoinResponse>, HttpError> {
    if !valid_room_id(&id) {
        return Err(room_not_found());
    }
    let room = state
        .store
        .room(&id)
        .await
        .map_err(store_error)?
        .ok_or_else(room_not_found)?;
    let shard = state.placer.place(&room.id).await.map_err(|e| match e {
        PlacementError::NoCapacity => HttpError::unavailable(
            "no_capacity",
            "no call server has room for this call right now; retry shortly",
            Duration::from_secs(5),
        ),
        other => {
            tracing::warn!(error = %other, "shard registry unavailable");
            HttpError::unavailable(
                "registry_unavailable",
                "call placement is unavailable; retry shortly",
                Duration::from_secs(2),
            )
        }
    })?;
    let iat = surge_cluster::token::unix_now();
    let exp = iat + state.settings.join_ttl.as_secs();
    let token = state
        .token_key
        .issue(&JoinClaims {
            sub: session.account.id.clone(),
            name: session.account.display_name.clone(),
            room: room.id.clone(),
            shard: shard.id.clone(),
            publish: true,
            subscribe: true,
            iat,
            exp,
        })
        .map_err(HttpError::internal)?;
    let signal_url = format!(
        "{}/v1/sfu/rooms/{}/participants",
        shard.signal_url.trim_end_matches('/'),
        room.id
    );
    metrics::counter!("surge_api_room_joins_total").increment(1);
    Ok(Json(JoinResponse {
        room: room.id,
        shard: shard.id,
        signal_url,
        token,
        expires_at: exp,
    }))
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
