//! Contacts are requests that the other side accepts. Asking (`POST /v1/contacts`) answers
//! `202` whatever the email: a pending request is kept by email whether or not an account
//! has it, so the answer, the pending count and its cap say nothing about who is
//! registered. The look-up is rate-limited per account. The recipient lists requests
//! (`GET /v1/contacts`), accepts or declines them; either side can remove the contact
//! later. Only accepted contacts see each other's presence. Each change is pushed to the
//! streams of both sides as a notice.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use surge_cluster::ErrorCode;
use surge_cluster::http::{ApiJson, HttpError};

use super::auth::Session;
use super::{AppState, invalid, limited, notify, now_secs, store_error};
use crate::limits::Action;
use crate::presence::{ContactChange, Notice, Status};
use crate::store::{Account, RequestOutcome};
use crate::validate;

#[derive(Deserialize)]
pub(crate) struct ContactRequest {
    email: String,
}

/// The one answer to a contact request, whatever happened.
#[derive(Serialize)]
pub(crate) struct Requested {
    email: String,
    state: &'static str,
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

pub(crate) async fn status_of(state: &AppState, ids: &[String]) -> Vec<Status> {
    // Presence is a nicety here: when its store is down contacts still list, as offline.
    match state.presence.statuses(ids).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "presence unavailable while listing contacts");
            vec![Status::Offline; ids.len()]
        }
    }
}

fn contacts_notice(account: &str, other: &str, change: ContactChange) -> Notice {
    Notice::Contacts {
        account: account.to_owned(),
        other: other.to_owned(),
        change,
    }
}

/// Both sides' streams learn that the two are contacts now (or no longer).
async fn notify_pair(state: &AppState, a: &str, b: &str, change: ContactChange) {
    notify(state, contacts_notice(a, b, change)).await;
    notify(state, contacts_notice(b, a, change)).await;
}

/// `POST /v1/contacts`: ask the owner of an email to be contacts. `202` in every case.
pub(crate) async fn request(
    State(state): State<AppState>,
    session: Session,
    ApiJson(req): ApiJson<ContactRequest>,
) -> Result<(StatusCode, Json<Requested>), HttpError> {
    let email = validate::email(&req.email).map_err(invalid)?;
    if email == session.account.email {
        return Err(HttpError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::CannotAddSelf,
            "you cannot add yourself as a contact",
        ));
    }
    state
        .limits
        .check_account(Action::ContactRequest, &session.account.id)
        .await
        .map_err(limited)?;
    let me = &session.account;
    let outcome = state
        .store
        .request_contact(
            me,
            &email,
            now_secs(),
            state.settings.max_pending_contact_requests,
        )
        .await
        .map_err(store_error)?;
    // Notified after answering, so the answer's timing does not depend on whether there
    // was someone to notify.
    let notifier = state.clone();
    let me_id = me.id.clone();
    tokio::spawn(async move {
        match outcome {
            RequestOutcome::Pending {
                recipient: Some(recipient),
            } => {
                notify(
                    &notifier,
                    contacts_notice(&recipient, &me_id, ContactChange::Requested),
                )
                .await;
            }
            RequestOutcome::Connected { other } => {
                notify_pair(&notifier, &me_id, &other, ContactChange::Added).await;
            }
            RequestOutcome::Pending { recipient: None } | RequestOutcome::AlreadyContacts => {}
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(Requested {
            email,
            state: "requested",
        }),
    ))
}

#[derive(Serialize)]
pub(crate) struct IncomingView {
    user_id: String,
    email: String,
    display_name: String,
    created_at: i64,
}

#[derive(Serialize)]
pub(crate) struct OutgoingView {
    email: String,
    created_at: i64,
}

#[derive(Serialize)]
pub(crate) struct ContactList {
    contacts: Vec<ContactView>,
    incoming: Vec<IncomingView>,
    outgoing: Vec<OutgoingView>,
}

/// `GET /v1/contacts`: accepted contacts with their presence, requests to answer, and the
/// caller's own requests still pending.
pub(crate) async fn list(
    State(state): State<AppState>,
    session: Session,
) -> Result<Json<ContactList>, HttpError> {
    let me = &session.account;
    let contacts = state.store.contacts(&me.id).await.map_err(store_error)?;
    let incoming = state
        .store
        .incoming_requests(&me.email)
        .await
        .map_err(store_error)?;
    let outgoing = state
        .store
        .outgoing_requests(&me.id)
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
        incoming: incoming
            .into_iter()
            .map(|r| IncomingView {
                user_id: r.from.id,
                email: r.from.email,
                display_name: r.from.display_name,
                created_at: r.created_at,
            })
            .collect(),
        outgoing: outgoing
            .into_iter()
            .map(|r| OutgoingView {
                email: r.email,
                created_at: r.created_at,
            })
            .collect(),
    }))
}

fn no_request() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::ContactRequestNotFound,
        "no pending contact request from this user",
    )
}

/// User ids are UUIDs; anything much longer cannot be one and is not looked up.
fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64
}

/// `POST /v1/contacts/requests/{user_id}/accept`: the two become contacts.
pub(crate) async fn accept(
    State(state): State<AppState>,
    session: Session,
    Path(from_id): Path<String>,
) -> Result<Json<ContactView>, HttpError> {
    if !plausible_id(&from_id) {
        return Err(no_request());
    }
    let me = &session.account;
    let accepted = state
        .store
        .accept_request(me, &from_id, now_secs())
        .await
        .map_err(store_error)?;
    if !accepted {
        return Err(no_request());
    }
    notify_pair(&state, &me.id, &from_id, ContactChange::Added).await;
    let contact = state
        .store
        .contacts(&me.id)
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|c| c.id == from_id)
        // Removed again between the two statements: it was accepted all the same.
        .ok_or_else(no_request)?;
    let status = status_of(&state, std::slice::from_ref(&contact.id)).await;
    Ok(Json(view(
        contact,
        status.first().copied().unwrap_or(Status::Offline),
    )))
}

/// `DELETE /v1/contacts/requests/{user_id}`: decline. The sender is not told; the request
/// only leaves their pending list.
pub(crate) async fn decline(
    State(state): State<AppState>,
    session: Session,
    Path(from_id): Path<String>,
) -> Result<StatusCode, HttpError> {
    if !plausible_id(&from_id) {
        return Err(no_request());
    }
    let declined = state
        .store
        .delete_request(&from_id, &session.account.email)
        .await
        .map_err(store_error)?;
    if declined {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_request())
    }
}

/// `DELETE /v1/contacts/outgoing/{email}`: withdraw one's own pending request.
pub(crate) async fn withdraw(
    State(state): State<AppState>,
    session: Session,
    Path(email): Path<String>,
) -> Result<StatusCode, HttpError> {
    let email = validate::email(&email).map_err(invalid)?;
    let withdrawn = state
        .store
        .delete_request(&session.account.id, &email)
        .await
        .map_err(store_error)?;
    if withdrawn {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(HttpError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::ContactRequestNotFound,
            "no pending contact request of yours to this email",
        ))
    }
}

/// `DELETE /v1/contacts/{user_id}`: end a contact, both ways (idempotent). Each side stops
/// seeing the other's presence at once.
pub(crate) async fn remove(
    State(state): State<AppState>,
    session: Session,
    Path(contact_id): Path<String>,
) -> Result<StatusCode, HttpError> {
    if plausible_id(&contact_id)
        && state
            .store
            .remove_contact(&session.account.id, &contact_id)
            .await
            .map_err(store_error)?
    {
        notify_pair(
            &state,
            &session.account.id,
            &contact_id,
            ContactChange::Removed,
        )
        .await;
    }
    Ok(StatusCode::NO_CONTENT)
}
