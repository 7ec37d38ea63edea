//! Presence heartbeats and queries, contacts, and the SSE stream of the contacts' presence.

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use surge_cluster::ErrorCode;
use surge_cluster::http::{ApiJson, HttpError};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::auth::Session;
use super::{AppState, invalid, now_secs, presence_error, store_error};
use crate::presence::{Change, Status};
use crate::store::Account;
use crate::validate;

#[derive(Deserialize)]
pub(crate) struct HeartbeatRequest {
    status: String,
}

#[derive(Serialize)]
pub(crate) struct HeartbeatResponse {
    status: Status,
    ttl_secs: u64,
}

/// `PUT /v1/presence`.
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    session: Session,
    ApiJson(req): ApiJson<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, HttpError> {
    let status = match req.status.as_str() {
        "online" => Status::Online,
        "away" => Status::Away,
        "busy" => Status::Busy,
        _ => {
            return Err(HttpError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidStatus,
                "status must be online, away or busy",
            ));
        }
    };
    let ttl = state.settings.presence_ttl;
    state
        .presence
        .heartbeat(&session.account.id, status, ttl)
        .await
        .map_err(presence_error)?;
    Ok(Json(HeartbeatResponse {
        status,
        ttl_secs: ttl.as_secs(),
    }))
}

#[derive(Deserialize)]
pub(crate) struct IdsQuery {
    #[serde(default)]
    ids: String,
}

#[derive(Serialize)]
pub(crate) struct PresenceList {
    presence: Vec<Change>,
}

/// Most ids one presence query may ask for.
const MAX_IDS: usize = 200;

/// `GET /v1/presence?ids=a,b`.
pub(crate) async fn statuses(
    State(state): State<AppState>,
    _session: Session,
    Query(query): Query<IdsQuery>,
) -> Result<Json<PresenceList>, HttpError> {
    let ids: Vec<String> = query
        .ids
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if ids.len() > MAX_IDS || ids.iter().any(|id| id.len() > 64) {
        return Err(HttpError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidIds,
            format!("ids must be at most {MAX_IDS} user ids separated by commas"),
        ));
    }
    let statuses = state
        .presence
        .statuses(&ids)
        .await
        .map_err(presence_error)?;
    Ok(Json(PresenceList {
        presence: ids
            .into_iter()
            .zip(statuses)
            .map(|(user_id, status)| Change { user_id, status })
            .collect(),
    }))
}

#[derive(Deserialize)]
pub(crate) struct AddContactRequest {
    email: String,
}

#[derive(Serialize)]
pub(crate) struct ContactView {
    user_id: String,
    email: String,
    display_name: String,
    status: Status,
}

fn view(account: Account, status: Status) -> ContactView {
    ContactView {
        user_id: account.id,
        email: account.email,
        display_name: account.display_name,
        status,
    }
}

async fn status_of(state: &AppState, ids: &[String]) -> Vec<Status> {
    // Presence is a nicety here: when its store is down contacts still list, as offline.
    match state.presence.statuses(ids).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "presence unavailable while listing contacts");
            vec![Status::Offline; ids.len()]
        }
    }
}

/// `POST /v1/contacts`.
pub(crate) async fn add_contact(
    State(state): State<AppState>,
    session: Session,
    ApiJson(req): ApiJson<AddContactRequest>,
) -> Result<(StatusCode, Json<ContactView>), HttpError> {
    let email = validate::email(&req.email).map_err(invalid)?;
    let contact = state
        .store
        .account_by_email(&email)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            HttpError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::UserNotFound,
                "no account has this email",
            )
        })?;
    if contact.id == session.account.id {
        return Err(HttpError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::CannotAddSelf,
            "you cannot add yourself as a contact",
        ));
    }
    state
        .store
        .add_contact(&session.account.id, &contact.id, now_secs())
        .await
        .map_err(store_error)?;
    let status = status_of(&state, std::slice::from_ref(&contact.id)).await;
    Ok((
        StatusCode::CREATED,
        Json(view(
            contact,
            status.first().copied().unwrap_or(Status::Offline),
        )),
    ))
}

#[derive(Serialize)]
pub(crate) struct ContactList {
    contacts: Vec<ContactView>,
}

/// `GET /v1/contacts`.
pub(crate) async fn contacts(
    State(state): State<AppState>,
    session: Session,
) -> Result<Json<ContactList>, HttpError> {
    let contacts = state
        .store
        .contacts(&session.account.id)
        .await
        .map_err(store_error)?;
    let ids: Vec<String> = contacts.iter().map(|c| c.id.clone()).collect();
    let statuses = status_of(&state, &ids).await;
    Ok(Json(ContactList {
        contacts: contacts
            .into_iter()
            .zip(statuses)
            .map(|(c, s)| view(c, s))
            .collect(),
    }))
}

/// How often the stream re-reads the caller's contacts, so a contact added after the
/// stream opened shows up without reconnecting.
const CONTACTS_REFRESH: Duration = Duration::from_secs(5);
/// SSE comment lines that keep proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn event(change: &Change) -> Option<Event> {
    Event::default().event("presence").json_data(change).ok()
}

/// `GET /v1/presence/stream`: an initial snapshot of every contact, then each change. It
/// ends when the client leaves or the server shuts down.
pub(crate) async fn stream(
    State(state): State<AppState>,
    session: Session,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, HttpError> {
    // Subscribe before reading the snapshot, so no change falls between the two.
    let bus = state.presence.subscribe();
    let contacts = state
        .store
        .contacts(&session.account.id)
        .await
        .map_err(store_error)?;
    let (tx, rx) = mpsc::channel::<Event>(64);
    metrics::gauge!("surge_api_presence_streams").increment(1.0);
    tokio::spawn(feed(state, session.account.id, contacts, bus, tx));
    let events = ReceiverStream::new(rx).map(Ok);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

async fn snapshot(state: &AppState, ids: Vec<String>, tx: &mpsc::Sender<Event>) -> bool {
    let statuses = status_of(state, &ids).await;
    for (user_id, status) in ids.into_iter().zip(statuses) {
        if let Some(e) = event(&Change { user_id, status })
            && tx.send(e).await.is_err()
        {
            return false;
        }
    }
    true
}

async fn feed(
    state: AppState,
    owner: String,
    contacts: Vec<Account>,
    mut bus: broadcast::Receiver<Change>,
    tx: mpsc::Sender<Event>,
) {
    let mut known: HashSet<String> = contacts.into_iter().map(|c| c.id).collect();
    let mut refresh = tokio::time::interval(CONTACTS_REFRESH);
    refresh.tick().await;
    if snapshot(&state, known.iter().cloned().collect(), &tx).await {
        loop {
            tokio::select! {
                () = state.shutdown.cancelled() => break,
                () = tx.closed() => break,
                received = bus.recv() => match received {
                    Ok(change) => {
                        if known.contains(&change.user_id)
                            && let Some(e) = event(&change)
                            && tx.send(e).await.is_err()
                        {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // Too slow to follow every change: resend the whole picture.
                        tracing::debug!(missed, "presence stream lagged; resending snapshot");
                        if !snapshot(&state, known.iter().cloned().collect(), &tx).await {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = refresh.tick() => {
                    if let Ok(now) = state.store.contacts(&owner).await {
                        let added: Vec<String> = now
                            .iter()
                            .filter(|c| !known.contains(&c.id))
                            .map(|c| c.id.clone())
                            .collect();
                        known.extend(added.iter().cloned());
                        if !added.is_empty() && !snapshot(&state, added, &tx).await {
                            break;
                        }
                    }
                }
            }
        }
    }
    metrics::gauge!("surge_api_presence_streams").decrement(1.0);
}
