//! The system of record: accounts, sessions, contacts, rooms and idempotency keys.
//!
//! One small trait, [`Store`], with one implementation per database (PostgreSQL for a
//! cluster, SQLite embedded). Both run the very same SQL text (`$N` placeholders work on
//! both), generated from one macro so the two can never drift apart.

mod sql;

use std::time::Duration;

use async_trait::async_trait;

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
    /// Deletes sessions that expired before `now`; returns how many.
    async fn delete_expired_sessions(&self, now: i64) -> Result<u64, StoreError>;
    /// Adds `contact_id` to `owner_id`'s contacts (idempotent).
    async fn add_contact(
        &self,
        owner_id: &str,
        contact_id: &str,
        now: i64,
    ) -> Result<(), StoreError>;
    async fn contacts(&self, owner_id: &str) -> Result<Vec<Account>, StoreError>;
    async fn insert_room(&self, room: &Room, created_by: &str, now: i64) -> Result<(), StoreError>;
    async fn room(&self, id: &str) -> Result<Option<Room>, StoreError>;
    /// Number of accounts (tests and reports).
    async fn count_accounts(&self) -> Result<i64, StoreError>;
}
