//! The system of record: accounts, sessions, contacts, rooms and idempotency keys.
//!
//! One small trait, [`Store`], with one implementation per database (PostgreSQL for a
//! cluster, SQLite embedded). Both run the very same SQL text (`$N` placeholders work on
//! both), generated from one macro so the two can never drift apart.

mod calls;
mod sql;

use std::time::Duration;

use async_trait::async_trait;

pub use calls::{CallRecord, Direction, ExpiredRing, LegState, NewLeg, RecentCall, Ringing};
pub use sql::{PgStore, SqliteStore, connect};

/// An account as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    pub id: String,
    pub email: String,
    pub display_name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// An account with its password hash, for logins only.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub account: Account,
    pub password_hash: String,
}

/// A stored answer to a signup made with an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// Digest of the request fields, so a key reused for another request is refused.
    pub fingerprint: String,
    pub status: u16,
    pub body: String,
}

/// A room's record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Room {
    pub id: String,
    pub name: String,
    /// Unix seconds after which the room's link stops working unless it is used again.
    pub expires_at: i64,
}

/// Rows the housekeeping purged, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub sessions: u64,
    pub idempotency_keys: u64,
    pub rooms: u64,
    pub calls: u64,
}

impl Purged {
    pub fn total(&self) -> u64 {
        self.sessions + self.idempotency_keys + self.rooms + self.calls
    }
}

/// How long calls stay in the recent-calls lists.
pub const CALL_HISTORY_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Rows one purge statement deletes at most: a long backlog is purged in short
/// statements that never hold the tables (or SQLite's one writer) for long.
pub const PURGE_BATCH: u32 = 1_000;

/// How long a signup's idempotency key is remembered: clients retry within minutes.
pub const IDEMPOTENCY_KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Purges expired sessions, idempotency keys older than [`IDEMPOTENCY_KEY_TTL`] and rooms
/// past their expiry, each in batches of [`PURGE_BATCH`] rows until none is left. Rooms
/// from before expiry existed get `room_ttl` from now.
pub async fn purge_expired(
    store: &dyn Store,
    now: i64,
    room_ttl: Duration,
) -> Result<Purged, StoreError> {
    let mut purged = Purged::default();
    let ttl = i64::try_from(room_ttl.as_secs()).unwrap_or(i64::MAX);
    store.date_undated_rooms(now.saturating_add(ttl)).await?;
    let key_cutoff = now.saturating_sub(IDEMPOTENCY_KEY_TTL.as_secs().cast_signed());
    for (table, counter) in [
        (Table::Sessions, &mut purged.sessions),
        (Table::IdempotencyKeys, &mut purged.idempotency_keys),
        (Table::Rooms, &mut purged.rooms),
        (Table::Calls, &mut purged.calls),
    ] {
        let cutoff = match table {
            Table::IdempotencyKeys => key_cutoff,
            Table::Calls => now
                .saturating_sub(CALL_HISTORY_TTL.as_secs().cast_signed())
                .saturating_mul(1000),
            Table::Sessions | Table::Rooms => now,
        };
        loop {
            let n = store.purge_batch(table, cutoff, PURGE_BATCH).await?;
            *counter += n;
            metrics::counter!("surge_api_purged_rows_total", "table" => table.name()).increment(n);
            if n < u64::from(PURGE_BATCH) {
                break;
            }
            // Let other statements (and SQLite's one writer) in between batches.
            tokio::task::yield_now().await;
        }
    }
    Ok(purged)
}

/// A table the housekeeping purges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Rows with `expires_at <= cutoff`.
    Sessions,
    /// Rows with `created_at <= cutoff`.
    IdempotencyKeys,
    /// Rows with `0 < expires_at <= cutoff`.
    Rooms,
    /// Calls (and their members) with `created_ms <= cutoff` (milliseconds).
    Calls,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Self::Sessions => "sessions",
            Self::IdempotencyKeys => "idempotency_keys",
            Self::Rooms => "rooms",
            Self::Calls => "calls",
        }
    }
}

/// What a contact request did. The HTTP answer is the same for every outcome; the
/// outcome only decides whom to notify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Stored (or was already pending); `recipient` is the account with that email, if any.
    Pending { recipient: Option<String> },
    /// The other side had asked first: the two are contacts now.
    Connected { other: String },
    /// They were contacts already; nothing changed.
    AlreadyContacts,
}

/// A contact request someone sent the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingRequest {
    pub from: Account,
    /// Unix seconds.
    pub created_at: i64,
}

/// A contact request the caller sent, not yet answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRequest {
    pub email: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another account already has this email.
    #[error("the email is already registered")]
    EmailTaken,
    /// Another request already used this idempotency key.
    #[error("the idempotency key is already used")]
    IdempotencyKeyTaken,
    /// The account already has as many live rooms as it may.
    #[error("the account has too many rooms")]
    TooManyRooms,
    /// The account has as many unanswered contact requests out as it may.
    #[error("too many pending contact requests")]
    TooManyPendingRequests,
    /// The database did not answer; the client may retry later.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: a bug or a schema mismatch.
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
}

impl StoreError {
    /// How long a client should wait before retrying when the database is down.
    pub const RETRY_AFTER: Duration = Duration::from_secs(2);
}

/// The persistence the API needs. Every method is one short statement or transaction; no
/// method is ever called while a password hash is being computed.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Does the database answer?
    async fn ping(&self) -> Result<(), StoreError>;
    /// Creates an account, and in the same transaction records the signup's answer under
    /// `idempotency` when given, so a retry can never create a second account.
    async fn insert_account(
        &self,
        account: &Account,
        password_hash: &str,
        idempotency: Option<(&str, &StoredResponse)>,
    ) -> Result<(), StoreError>;
    /// The answer recorded for an idempotency key.
    async fn idempotent_response(&self, key: &str) -> Result<Option<StoredResponse>, StoreError>;
    /// Whether an account uses `email` (normalised).
    async fn email_exists(&self, email: &str) -> Result<bool, StoreError>;
    async fn credentials(&self, email: &str) -> Result<Option<Credentials>, StoreError>;
    async fn account_by_email(&self, email: &str) -> Result<Option<Account>, StoreError>;
    async fn insert_session(
        &self,
        token_hash: &str,
        account_id: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError>;
    /// The account behind a live session.
    async fn session_account(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<Account>, StoreError>;
    async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError>;
    /// Deletes at most `limit` rows of `table` that expired by `cutoff` (see [`Table`]);
    /// returns how many. Each table has an index on the column compared.
    async fn purge_batch(&self, table: Table, cutoff: i64, limit: u32) -> Result<u64, StoreError>;
    /// Gives rooms created before expiry existed (`expires_at = 0`) this expiry.
    async fn date_undated_rooms(&self, expires_at: i64) -> Result<u64, StoreError>;
    /// `from` asks the owner of `to_email` to be contacts: stored as pending (at most
    /// `max_pending` per sender, else [`StoreError::TooManyPendingRequests`]), or, when the
    /// other side had already asked `from`, the two become contacts at once. The same
    /// statements run whether or not `to_email` has an account.
    async fn request_contact(
        &self,
        from: &Account,
        to_email: &str,
        now: i64,
        max_pending: u32,
    ) -> Result<RequestOutcome, StoreError>;
    /// Requests sent to `email`, oldest first.
    async fn incoming_requests(&self, email: &str) -> Result<Vec<IncomingRequest>, StoreError>;
    /// Requests `from_id` sent that are still pending, oldest first.
    async fn outgoing_requests(&self, from_id: &str) -> Result<Vec<OutgoingRequest>, StoreError>;
    /// `me` accepts `from_id`'s request: both become contacts. False when there was no
    /// such request.
    async fn accept_request(
        &self,
        me: &Account,
        from_id: &str,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Deletes the pending request from `from_id` to `to_email` (declined by its
    /// recipient or withdrawn by its sender); whether there was one.
    async fn delete_request(&self, from_id: &str, to_email: &str) -> Result<bool, StoreError>;
    /// Ends the contact between the two, both ways. False when they were not contacts.
    async fn remove_contact(&self, owner_id: &str, contact_id: &str) -> Result<bool, StoreError>;
    /// `owner_id`'s accepted contacts.
    async fn contacts(&self, owner_id: &str) -> Result<Vec<Account>, StoreError>;
    /// Creates a room unless `created_by` already has `max_live` rooms that have not
    /// expired by `now` ([`StoreError::TooManyRooms`]).
    async fn insert_room(
        &self,
        room: &Room,
        created_by: &str,
        now: i64,
        max_live: u32,
    ) -> Result<(), StoreError>;
    /// A room that has not expired by `now` (rooms from before expiry existed count as
    /// live).
    async fn room(&self, id: &str, now: i64) -> Result<Option<Room>, StoreError>;
    /// Moves a room's expiry to `expires_at` (when it is used).
    async fn extend_room(&self, id: &str, expires_at: i64) -> Result<(), StoreError>;
    /// Records a new call and its first members (the caller and the callees), at once.
    async fn insert_call(&self, call: &CallRecord, legs: &[NewLeg]) -> Result<(), StoreError>;
    /// Adds members to a call (add-to-call).
    async fn add_legs(&self, call_id: &str, legs: &[NewLeg]) -> Result<(), StoreError>;
    /// The call `id`.
    async fn call(&self, id: &str) -> Result<Option<CallRecord>, StoreError>;
    /// `user_id`'s latest state in the call, if they were ever in it.
    async fn member_state(
        &self,
        call_id: &str,
        user_id: &str,
    ) -> Result<Option<LegState>, StoreError>;
    /// `user_id` answers their ringing leg (accepted or declined); `None` when it was not
    /// ringing any more (answered by another tab, cancelled, timed out). `Some(invited_by)`.
    async fn answer(
        &self,
        call_id: &str,
        user_id: &str,
        accept: bool,
        now_ms: i64,
    ) -> Result<Option<Option<String>>, StoreError>;
    /// `user_id` leaves the call they were in; whether they were in it.
    async fn leave_call(
        &self,
        call_id: &str,
        user_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Stops the rings `invited_by` started in the call; the callees whose ring stopped.
    async fn cancel_rings(
        &self,
        call_id: &str,
        invited_by: &str,
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// Ends (as `NoAnswer`) at most `limit` rings whose time passed by `now_ms`. Each ring
    /// is returned by exactly one caller, however many replicas sweep at once.
    async fn expire_rings(&self, now_ms: i64, limit: u32) -> Result<Vec<ExpiredRing>, StoreError>;
    /// Whether `user_id` is in a call they joined (or started) after `since_ms`.
    async fn in_call(&self, user_id: &str, since_ms: i64) -> Result<bool, StoreError>;
    /// Who is in the call now (accepted and not left).
    async fn call_members(&self, call_id: &str) -> Result<Vec<String>, StoreError>;
    /// The calls ringing for `user_id` now.
    async fn ringing_for(&self, user_id: &str, now_ms: i64) -> Result<Vec<Ringing>, StoreError>;
    /// `user_id`'s latest `limit` rings, both ways, newest first.
    async fn recent_calls(&self, user_id: &str, limit: u32) -> Result<Vec<RecentCall>, StoreError>;
    /// Number of accounts (tests and reports).
    async fn count_accounts(&self) -> Result<i64, StoreError>;
    /// Database connections checked out of the pools right now (tests and metrics).
    fn connections_in_use(&self) -> u32;
}
