//! Calling (issue 15): ring contacts into a new room, answer, decline, cancel, hang up,
//! add people to a call, and the recent calls.
//!
//! Only accepted contacts can ring each other. Ringing travels over the presence streams
//! as notices (`incoming_call` to the callee's tabs, `call_update` to the caller and to the
//! callee's other tabs), so it reaches every replica through Redis pub/sub, or the
//! in-memory bus on one process. The database holds each ring's state; every change is a
//! conditional UPDATE from the state it leaves, so the first tab to accept wins and the
//! others get 409 `call_not_ringing`. The ring timeout is in [`crate::ringing`].
//!
//! Busy: a callee is busy when their presence is `busy`, or when they are online (or away)
//! and in a call they answered (or started) less than [`CALL_MAX_AGE`] ago and have not
//! hung up. Presence guards against a tab that vanished without hanging up: its user goes
//! offline when the heartbeats stop, and an offline user is rung (and misses the call)
//! rather than reported busy.

use std::collections::HashSet;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use surge_cluster::ErrorCode;
use surge_cluster::http::{ApiJson, HttpError};

use super::auth::Session;
use super::{AppState, limited, now_ms, now_secs, store_error};
use crate::limits::Action;
use crate::presence::notify;
use crate::presence::{Notice, Status};
use crate::ringing::{count, update};
use crate::store::{Account, CallRecord, Direction, LegState, NewLeg, RecentCall, Room};

/// Most people one call (or one add-to-call) rings at once.
const MAX_CALLEES: usize = 8;

/// Lines of the recent-calls list.
const RECENT_LIMIT: u32 = 50;

/// A call answered longer ago than this no longer makes anyone busy, hung up or not.
const CALL_MAX_AGE: Duration = Duration::from_secs(12 * 3600);

#[derive(Deserialize)]
pub(crate) struct CallRequest {
    callees: Vec<String>,
}

#[derive(Serialize)]
pub(crate) struct CalleeView {
    user_id: String,
    display_name: String,
    /// `ringing` or `busy`.
    state: LegState,
}

#[derive(Serialize)]
pub(crate) struct CallView {
    call_id: String,
    room: Room,
    callees: Vec<CalleeView>,
}

#[derive(Serialize)]
pub(crate) struct Answered {
    call_id: String,
    room: Room,
}

#[derive(Serialize)]
pub(crate) struct Cancelled {
    cancelled: Vec<String>,
}

fn invalid_callees(why: &str) -> HttpError {
    HttpError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidCallees,
        format!("callees must be 1 to {MAX_CALLEES} user ids of your contacts: {why}"),
    )
}

fn call_not_found() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::CallNotFound,
        "no such call of yours",
    )
}

fn not_ringing() -> HttpError {
    HttpError::new(
        StatusCode::CONFLICT,
        ErrorCode::CallNotRinging,
        "this call no longer rings for you: answered elsewhere, cancelled, or not answered in time",
    )
}

fn all_busy() -> HttpError {
    HttpError::new(
        StatusCode::CONFLICT,
        ErrorCode::CalleeBusy,
        "everyone you called is in another call; try again later",
    )
}

/// User ids are UUIDs; anything much longer cannot be one and is not looked up.
fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64
}

/// The callees, deduplicated in order; refused when empty, too many, or yourself.
fn callee_ids(raw: &[String], me: &str) -> Result<Vec<String>, HttpError> {
    if raw.is_empty() {
        return Err(invalid_callees("none given"));
    }
    if raw.len() > MAX_CALLEES {
        return Err(invalid_callees("too many"));
    }
    if !raw.iter().all(|id| plausible_id(id)) {
        return Err(invalid_callees("not a user id"));
    }
    if raw.iter().any(|id| id == me) {
        return Err(invalid_callees("you cannot call yourself"));
    }
    let mut seen = HashSet::new();
    Ok(raw.iter().filter(|id| seen.insert(*id)).cloned().collect())
}

/// The accounts of `ids`, all of whom must be `me`'s accepted contacts (403 otherwise,
/// naming none: the answer does not say which ids exist).
async fn contacts_among(
    state: &AppState,
    me: &str,
    ids: &[String],
) -> Result<Vec<Account>, HttpError> {
    let contacts = state.store.contacts(me).await.map_err(store_error)?;
    ids.iter()
        .map(|id| {
            contacts
                .iter()
                .find(|c| &c.id == id)
                .cloned()
                .ok_or_else(|| {
                    HttpError::new(
                        StatusCode::FORBIDDEN,
                        ErrorCode::NotAContact,
                        "you can only call your accepted contacts",
                    )
                })
        })
        .collect()
}

/// Whether each of `people` is busy (see the module's notes).
async fn busy(state: &AppState, people: &[Account]) -> Result<Vec<bool>, HttpError> {
    let ids: Vec<String> = people.iter().map(|p| p.id.clone()).collect();
    // Presence down: assume online, so the calls in the database alone decide.
    let statuses = state
        .presence
        .statuses(&ids)
        .await
        .unwrap_or_else(|_| vec![Status::Online; ids.len()]);
    let since = now_ms().saturating_sub(i64::try_from(CALL_MAX_AGE.as_millis()).unwrap_or(0));
    let mut out = Vec::with_capacity(ids.len());
    for (id, status) in ids.iter().zip(statuses) {
        out.push(match status {
            Status::Busy => true,
            Status::Offline => false,
            Status::Online | Status::Away => {
                state.store.in_call(id, since).await.map_err(store_error)?
            }
        });
    }
    Ok(out)
}

/// The legs for `people` rung by `me` now.
fn legs(state: &AppState, me: &str, people: &[Account], busy: &[bool], now: i64) -> Vec<NewLeg> {
    let until =
        now.saturating_add(i64::try_from(state.settings.ring_timeout.as_millis()).unwrap_or(0));
    people
        .iter()
        .zip(busy)
        .map(|(p, busy)| NewLeg {
            user_id: p.id.clone(),
            invited_by: Some(me.to_owned()),
            state: if *busy {
                LegState::Busy
            } else {
                LegState::Ringing
            },
            created_ms: now,
            ring_until_ms: until,
        })
        .collect()
}

/// Rings the callees who are not busy, and tells `me`'s tabs about the busy ones.
async fn ring(
    state: &AppState,
    call: &CallRecord,
    me: &Account,
    people: &[Account],
    busy: &[bool],
) {
    for (p, busy) in people.iter().zip(busy) {
        if *busy {
            count(LegState::Busy);
            notify(
                state.presence.as_ref(),
                update(&me.id, &call.id, LegState::Busy, &p.id),
            )
            .await;
        } else {
            count(LegState::Ringing);
            notify(
                state.presence.as_ref(),
                Notice::IncomingCall {
                    callee: p.id.clone(),
                    call_id: call.id.clone(),
                    caller_id: me.id.clone(),
                    caller_name: me.display_name.clone(),
                    room_id: call.room_id.clone(),
                },
            )
            .await;
        }
    }
}

fn view(call: &CallRecord, room: Room, people: Vec<Account>, busy: &[bool]) -> CallView {
    CallView {
        call_id: call.id.clone(),
        room,
        callees: people
            .into_iter()
            .zip(busy)
            .map(|(p, busy)| CalleeView {
                user_id: p.id,
                display_name: p.display_name,
                state: if *busy {
                    LegState::Busy
                } else {
                    LegState::Ringing
                },
            })
            .collect(),
    }
}

/// A call's room is named after its caller (cut to a room name's length).
fn room_name(caller: &str) -> String {
    let name: String = format!("{caller}'s call").chars().take(64).collect();
    crate::validate::room_name(&name).unwrap_or_else(|_| "Call".to_owned())
}

/// `POST /v1/calls` `{callees: [user_id…]}`: a new room, with the callees rung into it.
pub(crate) async fn start(
    State(state): State<AppState>,
    session: Session,
    ApiJson(req): ApiJson<CallRequest>,
) -> Result<(StatusCode, Json<CallView>), HttpError> {
    let me = &session.account;
    let ids = callee_ids(&req.callees, &me.id)?;
    state
        .limits
        .check_account(Action::Ring, &me.id)
        .await
        .map_err(limited)?;
    let people = contacts_among(&state, &me.id, &ids).await?;
    let busy = busy(&state, &people).await?;
    if busy.iter().all(|b| *b) {
        // Nothing is created: no room, no call, no missed call.
        for p in &people {
            count(LegState::Busy);
            tracing::debug!(callee = %p.id, "callee busy");
        }
        return Err(all_busy());
    }
    let now = now_secs();
    let room = Room {
        id: super::rooms::new_room_id(),
        name: room_name(&me.display_name),
        expires_at: now.saturating_add(super::rooms::ttl_secs(&state)),
    };
    state
        .store
        .insert_room(&room, &me.id, now, state.settings.max_rooms_per_account)
        .await
        .map_err(store_error)?;
    let now = now_ms();
    let call = CallRecord {
        id: uuid::Uuid::new_v4().to_string(),
        room_id: room.id.clone(),
        caller_id: me.id.clone(),
        created_ms: now,
    };
    let mut all = vec![NewLeg {
        user_id: me.id.clone(),
        invited_by: None,
        state: LegState::Accepted,
        created_ms: now,
        ring_until_ms: now,
    }];
    all.extend(legs(&state, &me.id, &people, &busy, now));
    state
        .store
        .insert_call(&call, &all)
        .await
        .map_err(store_error)?;
    ring(&state, &call, me, &people, &busy).await;
    Ok((StatusCode::CREATED, Json(view(&call, room, people, &busy))))
}

/// The call `id`, 404 when there is none.
async fn find(state: &AppState, id: &str) -> Result<CallRecord, HttpError> {
    if !plausible_id(id) {
        return Err(call_not_found());
    }
    state
        .store
        .call(id)
        .await
        .map_err(store_error)?
        .ok_or_else(call_not_found)
}

/// The call `id`, if `account` was ever rung into it or placed it (to anyone else it does
/// not exist: `call_not_found`, the same answer as for an unknown id).
async fn find_as_member(
    state: &AppState,
    id: &str,
    account: &str,
) -> Result<CallRecord, HttpError> {
    let call = find(state, id).await?;
    match state.store.member_state(&call.id, account).await {
        Ok(Some(_)) => Ok(call),
        Ok(None) => Err(call_not_found()),
        Err(e) => Err(store_error(e)),
    }
}

/// Accepts or declines the caller's ring; both the one who rang and the callee's other
/// tabs hear it.
async fn answer(
    state: &AppState,
    session: &Session,
    id: &str,
    accept: bool,
) -> Result<CallRecord, HttpError> {
    let call = find(state, id).await?;
    let me = &session.account.id;
    let Some(invited_by) = state
        .store
        .answer(&call.id, me, accept, now_ms())
        .await
        .map_err(store_error)?
    else {
        return Err(match state.store.member_state(&call.id, me).await {
            Ok(Some(_)) => not_ringing(),
            Ok(None) => call_not_found(),
            Err(e) => store_error(e),
        });
    };
    let outcome = if accept {
        LegState::Accepted
    } else {
        LegState::Declined
    };
    count(outcome);
    if let Some(by) = invited_by {
        notify(state.presence.as_ref(), update(&by, &call.id, outcome, me)).await;
    }
    notify(state.presence.as_ref(), update(me, &call.id, outcome, me)).await;
    Ok(call)
}

/// `POST /v1/calls/{id}/accept`: join the call; the answer names its room.
pub(crate) async fn accept(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Json<Answered>, HttpError> {
    let call = answer(&state, &session, &id, true).await?;
    let room = state
        .store
        .room(&call.room_id, now_secs())
        .await
        .map_err(store_error)?
        .ok_or_else(super::rooms::room_not_found)?;
    Ok(Json(Answered {
        call_id: call.id,
        room,
    }))
}

/// `POST /v1/calls/{id}/decline`.
pub(crate) async fn decline(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<StatusCode, HttpError> {
    answer(&state, &session, &id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stops the rings `me` started in `call`; the callees' tabs stop ringing.
async fn cancel_rings(
    state: &AppState,
    call: &CallRecord,
    me: &str,
) -> Result<Vec<String>, HttpError> {
    let stopped = state
        .store
        .cancel_rings(&call.id, me, now_ms())
        .await
        .map_err(store_error)?;
    for callee in &stopped {
        count(LegState::Cancelled);
        notify(
            state.presence.as_ref(),
            update(callee, &call.id, LegState::Cancelled, me),
        )
        .await;
        notify(
            state.presence.as_ref(),
            update(me, &call.id, LegState::Cancelled, callee),
        )
        .await;
    }
    Ok(stopped)
}

/// `POST /v1/calls/{id}/cancel`: stop ringing the people you rang that have not answered
/// (you stay in the call). Answers the callees whose ring stopped.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Json<Cancelled>, HttpError> {
    let me = &session.account.id;
    let call = find_as_member(&state, &id, me).await?;
    let cancelled = cancel_rings(&state, &call, me).await?;
    Ok(Json(Cancelled { cancelled }))
}

/// `POST /v1/calls/{id}/hangup`: leave the call (the rings you started stop). Idempotent.
/// Those still in the call hear `ended` by you.
pub(crate) async fn hangup(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<StatusCode, HttpError> {
    let me = &session.account.id;
    let call = find_as_member(&state, &id, me).await?;
    cancel_rings(&state, &call, me).await?;
    let left = state
        .store
        .leave_call(&call.id, me, now_ms())
        .await
        .map_err(store_error)?;
    if left {
        let members = state
            .store
            .call_members(&call.id)
            .await
            .map_err(store_error)?;
        for member in members.iter().chain([me]) {
            notify(
                state.presence.as_ref(),
                update(member, &call.id, LegState::Ended, me),
            )
            .await;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/calls/{id}/members` `{callees: [user_id…]}`: ring more of your contacts into
/// a call you are in (its room).
pub(crate) async fn add(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CallRequest>,
) -> Result<Json<CallView>, HttpError> {
    let me = &session.account;
    let ids = callee_ids(&req.callees, &me.id)?;
    let call = find(&state, &id).await?;
    match state
        .store
        .member_state(&call.id, &me.id)
        .await
        .map_err(store_error)?
    {
        Some(LegState::Accepted) => {}
        Some(_) => {
            return Err(HttpError::new(
                StatusCode::CONFLICT,
                ErrorCode::NotInCall,
                "only someone in the call can add people to it",
            ));
        }
        None => return Err(call_not_found()),
    }
    state
        .limits
        .check_account(Action::Ring, &me.id)
        .await
        .map_err(limited)?;
    let mut people = contacts_among(&state, &me.id, &ids).await?;
    let mut already = HashSet::new();
    for p in &people {
        let live = matches!(
            state
                .store
                .member_state(&call.id, &p.id)
                .await
                .map_err(store_error)?,
            Some(LegState::Ringing | LegState::Accepted)
        );
        if live {
            already.insert(p.id.clone());
        }
    }
    people.retain(|p| !already.contains(&p.id));
    if people.is_empty() {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            ErrorCode::AlreadyInCall,
            "everyone you asked for is already ringing or in this call",
        ));
    }
    let busy = busy(&state, &people).await?;
    if busy.iter().all(|b| *b) {
        return Err(all_busy());
    }
    let room = state
        .store
        .room(&call.room_id, now_secs())
        .await
        .map_err(store_error)?
        .ok_or_else(super::rooms::room_not_found)?;
    let legs = legs(&state, &me.id, &people, &busy, now_ms());
    state
        .store
        .add_legs(&call.id, &legs)
        .await
        .map_err(store_error)?;
    ring(&state, &call, me, &people, &busy).await;
    Ok(Json(view(&call, room, people, &busy)))
}

#[derive(Serialize)]
pub(crate) struct Peer {
    id: String,
    name: String,
}

#[derive(Serialize)]
pub(crate) struct RecentView {
    call_id: String,
    room_id: String,
    direction: Direction,
    peer: Peer,
    /// The ring's state as stored.
    state: LegState,
    /// What the list shows: `answered`, `missed` (incoming, not answered), `declined`,
    /// `busy`, `no_answer`, `cancelled` (outgoing) or `ringing`.
    outcome: &'static str,
    /// Unix seconds.
    at: i64,
}

fn outcome(call: &RecentCall) -> &'static str {
    if call.answered {
        return "answered";
    }
    match (call.direction, call.state) {
        (_, LegState::Ringing) => "ringing",
        (_, LegState::Declined) => "declined",
        (Direction::Incoming, _) => "missed",
        (Direction::Outgoing, state) => state.as_str(),
    }
}

#[derive(Serialize)]
pub(crate) struct RecentList {
    calls: Vec<RecentView>,
}

/// `GET /v1/calls/recent`: your latest rings, both ways, newest first.
pub(crate) async fn recent(
    State(state): State<AppState>,
    session: Session,
) -> Result<Json<RecentList>, HttpError> {
    let calls = state
        .store
        .recent_calls(&session.account.id, RECENT_LIMIT)
        .await
        .map_err(store_error)?;
    Ok(Json(RecentList {
        calls: calls
            .into_iter()
            .map(|c| RecentView {
                outcome: outcome(&c),
                call_id: c.call_id,
                room_id: c.room_id,
                direction: c.direction,
                peer: Peer {
                    id: c.peer.id,
                    name: c.peer.display_name,
                },
                state: c.state,
                at: c.created_ms / 1000,
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callees_are_checked_and_deduplicated() {
        let ids = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            callee_ids(&ids(&["b", "c", "b"]), "a").ok(),
            Some(ids(&["b", "c"]))
        );
        assert!(callee_ids(&[], "a").is_err());
        assert!(callee_ids(&ids(&["a"]), "a").is_err());
        assert!(callee_ids(&ids(&[""]), "a").is_err());
        assert!(callee_ids(&vec!["x".to_owned(); MAX_CALLEES + 1], "a").is_err());
    }

    #[test]
    fn room_names_fit() {
        assert_eq!(room_name("Ann"), "Ann's call");
        assert_eq!(room_name(&"x".repeat(100)).chars().count(), 64);
    }
}
