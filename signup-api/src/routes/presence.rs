//! Presence heartbeats and queries, and the SSE stream of the contacts' presence.
//!
//! An open stream keeps its user online (see [`crate::presence::Connections`]); heartbeats
//! set a status (away, busy) or keep a client without a stream online.
//!
//! Presence is visible only between accepted contacts. Heartbeats are rate-limited per
//! account and their changes coalesced ([`crate::presence::Publisher`]). The stream is
//! opened with a single-use ticket (never the session token, which would land in access
//! logs), holds a slot (per account and per process), reads the contacts once and then
//! follows notices: contacts added or removed, and the session's logout, which ends it.

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
use super::{AppState, limited, now_secs, presence_error, store_error};
use crate::limits::Action;
use crate::presence::{Change, ContactChange, Held, Notice, Status, StreamRefused, StreamSlot};
use crate::store::{LegState, Ringing};
use crate::tickets::{self, Ticket, TicketError};

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
    state
        .limits
        .check_account(Action::Heartbeat, &session.account.id)
        .await
        .map_err(limited)?;
    let ttl = state.settings.presence_ttl;
    state
        .publisher
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

/// `GET /v1/presence?ids=a,b`: the statuses of those of `ids` who are the caller's
/// accepted contacts (or the caller); the other ids are left out of the answer.
pub(crate) async fn statuses(
    State(state): State<AppState>,
    session: Session,
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
    let visible: HashSet<String> = state
        .store
        .contacts(&session.account.id)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|c| c.id)
        .chain([session.account.id.clone()])
        .collect();
    let mut seen = HashSet::new();
    let ids: Vec<String> = ids
        .into_iter()
        .filter(|id| visible.contains(id) && seen.insert(id.clone()))
        .collect();
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

#[derive(Serialize)]
pub(crate) struct TicketView {
    ticket: String,
    expires_in_secs: u64,
}

fn ticket_store_error(e: TicketError) -> HttpError {
    tracing::warn!(error = %e, "ticket store unavailable");
    HttpError::unavailable(
        ErrorCode::PresenceUnavailable,
        "presence is not available right now; retry shortly",
        Duration::from_secs(1),
    )
}

/// `POST /v1/presence/tickets`: a single-use ticket for opening the stream.
pub(crate) async fn ticket(
    State(state): State<AppState>,
    session: Session,
) -> Result<(StatusCode, Json<TicketView>), HttpError> {
    state
        .limits
        .check_account(Action::StreamTicket, &session.account.id)
        .await
        .map_err(limited)?;
    let (ticket, digest) = tickets::new_ticket();
    let ttl = state.settings.ticket_ttl;
    state
        .tickets
        .issue(
            &digest,
            &Ticket {
                account_id: session.account.id,
                session: session.token_digest,
            },
            ttl,
        )
        .await
        .map_err(ticket_store_error)?;
    Ok((
        StatusCode::CREATED,
        Json(TicketView {
            ticket,
            expires_in_secs: ttl.as_secs(),
        }),
    ))
}

#[derive(Deserialize)]
pub(crate) struct StreamQuery {
    ticket: Option<String>,
}

fn invalid_ticket() -> HttpError {
    HttpError::unauthorized(
        ErrorCode::InvalidTicket,
        "missing, used or expired stream ticket; get a new one from POST /v1/presence/tickets",
    )
}

/// How long a refused stream is told to wait.
const STREAM_RETRY_AFTER: Duration = Duration::from_secs(5);

fn refused(r: StreamRefused) -> HttpError {
    metrics::counter!("surge_api_presence_streams_refused_total", "reason" => match r {
        StreamRefused::PerAccount => "per_account",
        StreamRefused::Total => "total",
    })
    .increment(1);
    match r {
        StreamRefused::PerAccount => HttpError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyStreams,
            "this account has as many presence streams open as it may; close one",
        )
        .with_retry_after(STREAM_RETRY_AFTER),
        StreamRefused::Total => HttpError::unavailable(
            ErrorCode::StreamCapacity,
            "this server holds as many presence streams as it may; retry shortly",
            STREAM_RETRY_AFTER,
        ),
    }
}

/// SSE comment lines that keep proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn event(change: &Change) -> Option<Event> {
    Event::default().event("presence").json_data(change).ok()
}

/// The `contacts` event: the client re-reads `GET /v1/contacts`.
#[derive(Serialize)]
struct ContactsEvent<'a> {
    user_id: &'a str,
    change: &'a str,
}

fn contacts_event(user_id: &str, change: &str) -> Option<Event> {
    Event::default()
        .event("contacts")
        .json_data(ContactsEvent { user_id, change })
        .ok()
}

/// The `incoming_call` event: ring, with Accept and Decline.
#[derive(Serialize)]
struct IncomingCallEvent<'a> {
    call_id: &'a str,
    caller: Person<'a>,
    room: RoomRef<'a>,
}

#[derive(Serialize)]
struct Person<'a> {
    id: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct RoomRef<'a> {
    id: &'a str,
}

fn incoming_call_event(
    call_id: &str,
    caller_id: &str,
    caller_name: &str,
    room_id: &str,
) -> Option<Event> {
    Event::default()
        .event("incoming_call")
        .json_data(IncomingCallEvent {
            call_id,
            caller: Person {
                id: caller_id,
                name: caller_name,
            },
            room: RoomRef { id: room_id },
        })
        .ok()
}

/// The `call_update` event: a ring was answered, declined, timed out or cancelled.
#[derive(Serialize)]
struct CallUpdateEvent<'a> {
    call_id: &'a str,
    state: LegState,
    by: &'a str,
}

fn call_update_event(call_id: &str, state: LegState, by: &str) -> Option<Event> {
    Event::default()
        .event("call_update")
        .json_data(CallUpdateEvent { call_id, state, by })
        .ok()
}

fn change_name(change: ContactChange) -> &'static str {
    match change {
        ContactChange::Added => "added",
        ContactChange::Removed => "removed",
        ContactChange::Requested => "requested",
    }
}

/// `GET /v1/presence/stream?ticket=…`: an initial snapshot of every contact, then each
/// change (`presence` events) and each change of the contact list (`contacts` events);
/// calls ring over it too (`incoming_call` and `call_update` events, see `calls`). It
/// ends when the client leaves, the session logs out, or the server shuts down.
///
/// Cheapest first: the ticket (no database), the slot (no database); only a stream that
/// will be served reads the database, three times (session, contacts, calls ringing now),
/// and never again while it runs.
pub(crate) async fn stream(
    State(state): State<AppState>,
    Query(query): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, HttpError> {
    let text = query.ticket.unwrap_or_default();
    if !tickets::plausible(&text) {
        return Err(invalid_ticket());
    }
    let ticket = state
        .tickets
        .redeem(&tickets::ticket_digest(&text))
        .await
        .map_err(ticket_store_error)?
        .ok_or_else(invalid_ticket)?;
    let slot = state.streams.acquire(&ticket.account_id).map_err(refused)?;
    // Subscribe before reading the snapshot, so no change falls between the two.
    let bus = state.presence.subscribe();
    let notices = state.presence.notices();
    // The session may have logged out since the ticket was issued.
    let account = state
        .store
        .session_account(&ticket.session, now_secs())
        .await
        .map_err(store_error)?
        .filter(|a| a.id == ticket.account_id)
        .ok_or_else(|| {
            HttpError::unauthorized(ErrorCode::InvalidSession, "the session has ended")
        })?;
    let contacts = state
        .store
        .contacts(&account.id)
        .await
        .map_err(store_error)?;
    // Best effort: a stream without them still rings for the calls that come next.
    let ringing = state
        .store
        .ringing_for(&account.id, super::now_ms())
        .await
        .unwrap_or_else(|e| {
            tracing::debug!(error = %e, "could not read the calls ringing for a new stream");
            Vec::new()
        });
    // The stream holds its user online (presence by connection) for as long as it lasts.
    let held = state.connections.hold(&account.id).await;
    let (tx, rx) = mpsc::channel::<Event>(64);
    let feed = Feed {
        state,
        owner: account.id,
        session: ticket.session,
        known: contacts.into_iter().map(|c| c.id).collect(),
        tx,
        _slot: slot,
        _held: held,
    };
    tokio::spawn(feed.run(bus, notices, ringing));
    let events = ReceiverStream::new(rx).map(Ok);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// One stream's task: owns its slot (freed when it ends) and its view of the contacts.
struct Feed {
    state: AppState,
    owner: String,
    /// The session's token digest: its logout ends the stream.
    session: String,
    known: HashSet<String>,
    tx: mpsc::Sender<Event>,
    _slot: StreamSlot,
    _held: Held,
}

/// Whether the stream goes on.
enum Flow {
    Continue,
    End,
}

impl Feed {
    async fn send(&self, event: Option<Event>) -> Flow {
        let Some(e) = event else {
            return Flow::Continue;
        };
        if self.tx.send(e).await.is_err() {
            Flow::End
        } else {
            Flow::Continue
        }
    }

    async fn snapshot(&self, ids: Vec<String>) -> Flow {
        let statuses = super::contacts::status_of(&self.state, &ids).await;
        for (user_id, status) in ids.into_iter().zip(statuses) {
            if let Flow::End = self.send(event(&Change { user_id, status })).await {
                return Flow::End;
            }
        }
        Flow::Continue
    }

    async fn on_notice(&mut self, notice: Notice) -> Flow {
        match notice {
            Notice::SessionEnded { session } if session == self.session => Flow::End,
            Notice::Contacts {
                account,
                other,
                change,
            } if account == self.owner => {
                match change {
                    ContactChange::Added => {
                        self.known.insert(other.clone());
                    }
                    ContactChange::Removed => {
                        self.known.remove(&other);
                    }
                    ContactChange::Requested => {}
                }
                if let Flow::End = self.send(contacts_event(&other, change_name(change))).await {
                    return Flow::End;
                }
                if change == ContactChange::Added {
                    return self.snapshot(vec![other]).await;
                }
                Flow::Continue
            }
            Notice::IncomingCall {
                callee,
                call_id,
                caller_id,
                caller_name,
                room_id,
            } if callee == self.owner => {
                self.send(incoming_call_event(
                    &call_id,
                    &caller_id,
                    &caller_name,
                    &room_id,
                ))
                .await
            }
            Notice::CallUpdate {
                to,
                call_id,
                state,
                by,
            } if to == self.owner => self.send(call_update_event(&call_id, state, &by)).await,
            _ => Flow::Continue,
        }
    }

    /// Calls that rang before the stream opened (a tab opened, or reconnected, mid-ring).
    async fn ringing(&self, calls: Vec<Ringing>) -> Flow {
        for call in calls {
            let event = incoming_call_event(
                &call.call_id,
                &call.from.id,
                &call.from.display_name,
                &call.room_id,
            );
            if let Flow::End = self.send(event).await {
                return Flow::End;
            }
        }
        Flow::Continue
    }

    /// Missed notices: read the contacts again (the only database read after the start,
    /// and only when this stream fell behind the bus).
    async fn resync(&mut self) -> Flow {
        match self.state.store.contacts(&self.owner).await {
            Ok(contacts) => {
                self.known = contacts.into_iter().map(|c| c.id).collect();
                if let Flow::End = self.send(contacts_event("", "resync")).await {
                    return Flow::End;
                }
                self.snapshot(self.known.iter().cloned().collect()).await
            }
            Err(e) => {
                tracing::debug!(error = %e, "presence stream could not resync; ending it");
                Flow::End
            }
        }
    }

    async fn run(
        mut self,
        mut bus: broadcast::Receiver<Change>,
        mut notices: broadcast::Receiver<Notice>,
        ringing: Vec<Ringing>,
    ) {
        if let Flow::End = self.snapshot(self.known.iter().cloned().collect()).await {
            return;
        }
        if let Flow::End = self.ringing(ringing).await {
            return;
        }
        let shutdown = self.state.shutdown.clone();
        loop {
            let flow = tokio::select! {
                () = shutdown.cancelled() => Flow::End,
                () = self.tx.closed() => Flow::End,
                received = notices.recv() => match received {
                    Ok(notice) => self.on_notice(notice).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "presence stream missed notices; resyncing");
                        self.resync().await
                    }
                    Err(broadcast::error::RecvError::Closed) => Flow::End,
                },
                received = bus.recv() => match received {
                    Ok(change) if self.known.contains(&change.user_id) => {
                        self.send(event(&change)).await
                    }
                    Ok(_) => Flow::Continue,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // Too slow to follow every change: resend the whole picture.
                        tracing::debug!(missed, "presence stream lagged; resending snapshot");
                        self.snapshot(self.known.iter().cloned().collect()).await
                    }
                    Err(broadcast::error::RecvError::Closed) => Flow::End,
                },
            };
            if let Flow::End = flow {
                return;
            }
        }
    }
}
