//! The SQL implementations of [`Store`]: PostgreSQL and SQLite, from one macro.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use super::{
    Account, CallRecord, Credentials, Direction, ExpiredRing, IncomingRequest, LegState, NewLeg,
    OutgoingRequest, RecentCall, RequestOutcome, Ringing, Room, Store, StoreError, StoredResponse,
    Table,
};

/// The schema, applied in order; each entry runs once (recorded in `surge_migrations`).
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/0001_accounts.sql")),
    (2, include_str!("../../migrations/0002_housekeeping.sql")),
    (
        3,
        include_str!("../../migrations/0003_contact_requests.sql"),
    ),
    (4, include_str!("../../migrations/0004_calls.sql")),
];

/// How long a request waits for a database connection before answering 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a write waits for SQLite's single writer connection.
const SQLITE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            // The only unique constraints a write can hit are the account email and the
            // idempotency key; the callers tell them apart by statement.
            StoreError::EmailTaken
        }
        sqlx::Error::Decode(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnIndexOutOfBounds { .. } => StoreError::Other(e),
        _ => StoreError::Unavailable(e),
    }
}

fn key_taken(e: sqlx::Error) -> StoreError {
    match classify(e) {
        StoreError::EmailTaken => StoreError::IdempotencyKeyTaken,
        other => other,
    }
}

type AccountRow = (String, String, String, i64);

fn account((id, email, display_name, created_at): AccountRow) -> Account {
    Account {
        id,
        email,
        display_name,
        created_at,
    }
}

/// PostgreSQL, for a cluster.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

/// SQLite in WAL mode, embedded. Writes go through a one-connection pool (SQLite allows
/// one writer at a time; queueing them here beats `SQLITE_BUSY` retries), reads through
/// several.
#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// An in-memory database: `reader` is `writer`.
    shared_pool: bool,
}

/// Connections of `size` not idle.
fn busy(size: u32, idle: usize) -> u32 {
    size.saturating_sub(u32::try_from(idle).unwrap_or(u32::MAX))
}

impl PgStore {
    fn writer(&self) -> &PgPool {
        &self.pool
    }
    fn reader(&self) -> &PgPool {
        &self.pool
    }
    fn in_use(&self) -> u32 {
        busy(self.pool.size(), self.pool.num_idle())
    }
}

impl SqliteStore {
    fn writer(&self) -> &SqlitePool {
        &self.writer
    }
    fn reader(&self) -> &SqlitePool {
        &self.reader
    }
    fn in_use(&self) -> u32 {
        let writer = busy(self.writer.size(), self.writer.num_idle());
        if self.shared_pool {
            return writer;
        }
        writer + busy(self.reader.size(), self.reader.num_idle())
    }
}

/// Applies the migrations not yet recorded, inside the open transaction `$tx`. A macro
/// because the SQL and the steps are the same for both databases and only the
/// transaction's type differs.
macro_rules! apply_migrations {
    ($tx:ident) => {
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS surge_migrations (version BIGINT PRIMARY KEY)")
            .execute(&mut *$tx)
            .await
            .map_err(classify)?;
        for (version, sql) in MIGRATIONS {
            let done: Option<(i64,)> =
                sqlx::query_as("SELECT version FROM surge_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *$tx)
                    .await
                    .map_err(classify)?;
            if done.is_none() {
                sqlx::raw_sql(*sql)
                    .execute(&mut *$tx)
                    .await
                    .map_err(classify)?;
                sqlx::query("INSERT INTO surge_migrations (version) VALUES ($1)")
                    .bind(version)
                    .execute(&mut *$tx)
                    .await
                    .map_err(classify)?;
            }
        }
    };
}

/// Opens the database at `url` (`sqlite://…` or `postgres://…`), creating the SQLite file
/// and its directory when missing, and applies the migrations. `schema` puts every table
/// in a PostgreSQL schema of that name (created when missing).
pub async fn connect(
    url: &str,
    schema: Option<&str>,
    max_connections: u32,
) -> Result<Box<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::Other)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a 201 means the account survives a power cut, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(e.into()))?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // Writes queue here for the one connection; a local file does not "go down",
            // so waiting longer only absorbs bursts (hashing already paces signups).
            .acquire_timeout(SQLITE_WRITE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(StoreError::Unavailable)?;
        // An in-memory database exists only inside its one connection: reads share it.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options.read_only(true))
                .await
                .map_err(StoreError::Unavailable)?
        };
        let store = SqliteStore {
            writer: writer.clone(),
            reader,
            shared_pool: in_memory,
        };
        // One writer connection: nothing else can race the migrations.
        let mut tx = writer.begin().await.map_err(classify)?;
        apply_migrations!(tx);
        tx.commit().await.map_err(classify)?;
        Ok(Box::new(store))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let mut options = PgConnectOptions::from_str(url).map_err(StoreError::Other)?;
        if let Some(schema) = schema {
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(StoreError::Unavailable)?;
        if let Some(schema) = schema {
            // Identifiers cannot be bound; only plain names are accepted.
            if !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(StoreError::Other(sqlx::Error::Configuration(
                    format!("schema name {schema:?} must be letters, digits and _").into(),
                )));
            }
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .execute(&pool)
            .await
            .map_err(classify)?;
        }
        let mut tx = pool.begin().await.map_err(classify)?;
        // Replicas starting together must not race each other through the migrations.
        sqlx::query("SELECT pg_advisory_xact_lock(7417)")
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        apply_migrations!(tx);
        tx.commit().await.map_err(classify)?;
        Ok(Box::new(PgStore { pool }))
    } else {
        Err(StoreError::Other(sqlx::Error::Configuration(
            format!("unsupported database URL {url:?}: use sqlite://PATH or postgres://…").into(),
        )))
    }
}

/// Makes `$a` and `$b` each other's contacts (idempotent), inside the open transaction
/// `$tx` (a macro for the same reason as [`apply_migrations`]).
macro_rules! connect_both_ways {
    ($tx:ident, $a:expr, $b:expr, $now:expr) => {
        for (owner, contact) in [($a, $b), ($b, $a)] {
            sqlx::query(
                "INSERT INTO contacts (owner_id, contact_id, created_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (owner_id, contact_id) DO NOTHING",
            )
            .bind(owner)
            .bind(contact)
            .bind($now)
            .execute(&mut *$tx)
            .await
            .map_err(classify)?;
        }
    };
}

/// Inserts `$legs` into the call `$call_id` inside the open transaction `$tx`.
macro_rules! insert_legs {
    ($tx:ident, $call_id:expr, $legs:expr) => {
        for leg in $legs {
            let answered = (leg.state == LegState::Accepted).then_some(leg.created_ms);
            let ended = matches!(leg.state, LegState::Busy).then_some(leg.created_ms);
            sqlx::query(
                "INSERT INTO call_members (id, call_id, user_id, invited_by, state, created_ms, \
                 ring_until_ms, answered_ms, ended_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(uuid::Uuid::new_v4().to_string())
            .bind($call_id)
            .bind(&leg.user_id)
            .bind(leg.invited_by.as_deref())
            .bind(leg.state.as_str())
            .bind(leg.created_ms)
            .bind(leg.ring_until_ms)
            .bind(answered)
            .bind(ended)
            .execute(&mut *$tx)
            .await
            .map_err(classify)?;
        }
    };
}

type RecentRow = (
    String,
    String,
    String,
    i64,
    Option<i64>,
    String,
    String,
    String,
    i64,
);

fn recent(direction: Direction, row: RecentRow) -> RecentCall {
    let (call_id, room_id, state, created_ms, answered_ms, id, email, name, joined) = row;
    RecentCall {
        call_id,
        room_id,
        direction,
        peer: account((id, email, name, joined)),
        state: LegState::parse(&state),
        created_ms,
        answered: answered_ms.is_some(),
    }
}

/// One body for both databases: the SQL is identical, only the pool type differs.
macro_rules! sql_store {
    ($store:ty) => {
        #[async_trait]
        impl Store for $store {
            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1")
                    .execute(self.reader())
                    .await
                    .map(|_| ())
                    .map_err(classify)
            }

            async fn insert_account(
                &self,
                account: &Account,
                password_hash: &str,
                idempotency: Option<(&str, &StoredResponse)>,
            ) -> Result<(), StoreError> {
                let mut tx = self.writer().begin().await.map_err(classify)?;
                // The key goes first: a concurrent retry with the same key blocks on it
                // and then fails on it, whatever the email does.
                if let Some((key, response)) = idempotency {
                    sqlx::query(
                        "INSERT INTO idempotency_keys (idem_key, fingerprint, status, body, created_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(key)
                    .bind(&response.fingerprint)
                    .bind(i32::from(response.status))
                    .bind(&response.body)
                    .bind(account.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(key_taken)?;
                }
                sqlx::query(
                    "INSERT INTO accounts (id, email, display_name, password_hash, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&account.id)
                .bind(&account.email)
                .bind(&account.display_name)
                .bind(password_hash)
                .bind(account.created_at)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
                tx.commit().await.map_err(classify)
            }

            async fn idempotent_response(
                &self,
                key: &str,
            ) -> Result<Option<StoredResponse>, StoreError> {
                // From the writer: a retry must see what a just-finished request wrote.
                let row: Option<(String, i32, String)> = sqlx::query_as(
                    "SELECT fingerprint, status, body FROM idempotency_keys WHERE idem_key = $1",
                )
                .bind(key)
                .fetch_optional(self.writer())
                .await
                .map_err(classify)?;
                Ok(row.map(|(fingerprint, status, body)| StoredResponse {
                    fingerprint,
                    status: u16::try_from(status).unwrap_or(500),
                    body,
                }))
            }

            async fn email_exists(&self, email: &str) -> Result<bool, StoreError> {
                let row: Option<(String,)> =
                    sqlx::query_as("SELECT id FROM accounts WHERE email = $1")
                        .bind(email)
                        .fetch_optional(self.reader())
                        .await
                        .map_err(classify)?;
                Ok(row.is_some())
            }

            async fn credentials(&self, email: &str) -> Result<Option<Credentials>, StoreError> {
                let row: Option<(String, String, String, i64, String)> = sqlx::query_as(
                    "SELECT id, email, display_name, created_at, password_hash \
                     FROM accounts WHERE email = $1",
                )
                .bind(email)
                .fetch_optional(self.reader())
                .await
                .map_err(classify)?;
                Ok(row.map(|(id, email, display_name, created_at, password_hash)| {
                    Credentials {
                        account: account((id, email, display_name, created_at)),
                        password_hash,
                    }
                }))
            }

            async fn account_by_email(&self, email: &str) -> Result<Option<Account>, StoreError> {
                let row: Option<AccountRow> = sqlx::query_as(
                    "SELECT id, email, display_name, created_at FROM accounts WHERE email = $1",
                )
                .bind(email)
                .fetch_optional(self.reader())
                .await
                .map_err(classify)?;
                Ok(row.map(account))
            }

            async fn insert_session(
                &self,
                token_hash: &str,
                account_id: &str,
                expires_at: i64,
                now: i64,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO sessions (token_hash, account_id, expires_at, created_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(token_hash)
                .bind(account_id)
                .bind(expires_at)
                .bind(now)
                .execute(self.writer())
                .await
                .map(|_| ())
                .map_err(classify)
            }

            async fn session_account(
                &self,
                token_hash: &str,
                now: i64,
            ) -> Result<Option<Account>, StoreError> {
                let row: Option<AccountRow> = sqlx::query_as(
                    "SELECT a.id, a.email, a.display_name, a.created_at \
                     FROM sessions s JOIN accounts a ON a.id = s.account_id \
                     WHERE s.token_hash = $1 AND s.expires_at > $2",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(self.reader())
                .await
                .map_err(classify)?;
                Ok(row.map(account))
            }

            async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                    .bind(token_hash)
                    .execute(self.writer())
                    .await
                    .map(|_| ())
                    .map_err(classify)
            }

            async fn purge_batch(
                &self,
                table: Table,
                cutoff: i64,
                limit: u32,
            ) -> Result<u64, StoreError> {
                // DELETE … LIMIT is not standard SQL; a keyed subquery works on both.
                let sql = match table {
                    Table::Sessions => {
                        "DELETE FROM sessions WHERE token_hash IN \
                         (SELECT token_hash FROM sessions WHERE expires_at <= $1 LIMIT $2)"
                    }
                    Table::IdempotencyKeys => {
                        "DELETE FROM idempotency_keys WHERE idem_key IN \
                         (SELECT idem_key FROM idempotency_keys WHERE created_at <= $1 LIMIT $2)"
                    }
                    Table::Rooms => {
                        "DELETE FROM rooms WHERE id IN \
                         (SELECT id FROM rooms WHERE expires_at > 0 AND expires_at <= $1 LIMIT $2)"
                    }
                    // Their members go with them (ON DELETE CASCADE).
                    Table::Calls => {
                        "DELETE FROM calls WHERE id IN \
                         (SELECT id FROM calls WHERE created_ms <= $1 LIMIT $2)"
                    }
                };
                sqlx::query(sql)
                    .bind(cutoff)
                    .bind(i64::from(limit))
                    .execute(self.writer())
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(classify)
            }

            async fn date_undated_rooms(&self, expires_at: i64) -> Result<u64, StoreError> {
                sqlx::query("UPDATE rooms SET expires_at = $1 WHERE expires_at = 0")
                    .bind(expires_at)
                    .execute(self.writer())
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(classify)
            }

            async fn request_contact(
                &self,
                from: &Account,
                to_email: &str,
                now: i64,
                max_pending: u32,
            ) -> Result<RequestOutcome, StoreError> {
                let mut tx = self.writer().begin().await.map_err(classify)?;
                let recipient: Option<(String,)> =
                    sqlx::query_as("SELECT id FROM accounts WHERE email = $1")
                        .bind(to_email)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(classify)?;
                let recipient = recipient.map(|(id,)| id);
                // The same statements run without a recipient (an id that matches nothing),
                // so the time taken does not tell whether the email has an account.
                let other = recipient.clone().unwrap_or_default();
                let already: Option<(String,)> = sqlx::query_as(
                    "SELECT contact_id FROM contacts WHERE owner_id = $1 AND contact_id = $2",
                )
                .bind(&from.id)
                .bind(&other)
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
                if already.is_some() {
                    tx.rollback().await.map_err(classify)?;
                    return Ok(RequestOutcome::AlreadyContacts);
                }
                let asked_first = sqlx::query(
                    "DELETE FROM contact_requests WHERE from_id = $1 AND to_email = $2",
                )
                .bind(&other)
                .bind(&from.email)
                .execute(&mut *tx)
                .await
                .map_err(classify)?
                .rows_affected();
                if asked_first > 0 {
                    connect_both_ways!(tx, from.id.as_str(), other.as_str(), now);
                    sqlx::query("DELETE FROM contact_requests WHERE from_id = $1 AND to_email = $2")
                        .bind(&from.id)
                        .bind(to_email)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                    tx.commit().await.map_err(classify)?;
                    return Ok(RequestOutcome::Connected { other });
                }
                let (pending, this_one): (i64, i64) = sqlx::query_as(
                    "SELECT COUNT(*), COUNT(CASE WHEN to_email = $2 THEN 1 END) \
                     FROM contact_requests WHERE from_id = $1",
                )
                .bind(&from.id)
                .bind(to_email)
                .fetch_one(&mut *tx)
                .await
                .map_err(classify)?;
                if this_one == 0 && pending >= i64::from(max_pending) {
                    tx.rollback().await.map_err(classify)?;
                    return Err(StoreError::TooManyPendingRequests);
                }
                sqlx::query(
                    "INSERT INTO contact_requests (from_id, to_email, created_at) \
                     VALUES ($1, $2, $3) ON CONFLICT (from_id, to_email) DO NOTHING",
                )
                .bind(&from.id)
                .bind(to_email)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
                tx.commit().await.map_err(classify)?;
                Ok(RequestOutcome::Pending { recipient })
            }

            async fn incoming_requests(
                &self,
                email: &str,
            ) -> Result<Vec<IncomingRequest>, StoreError> {
                let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
                    "SELECT a.id, a.email, a.display_name, a.created_at, r.created_at \
                     FROM contact_requests r JOIN accounts a ON a.id = r.from_id \
                     WHERE r.to_email = $1 ORDER BY r.created_at, a.email",
                )
                .bind(email)
                .fetch_all(self.reader())
                .await
                .map_err(classify)?;
                Ok(rows
                    .into_iter()
                    .map(|(id, email, display_name, joined, created_at)| IncomingRequest {
                        from: account((id, email, display_name, joined)),
                        created_at,
                    })
                    .collect())
            }

            async fn outgoing_requests(
                &self,
                from_id: &str,
            ) -> Result<Vec<OutgoingRequest>, StoreError> {
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT to_email, created_at FROM contact_requests \
                     WHERE from_id = $1 ORDER BY created_at, to_email",
                )
                .bind(from_id)
                .fetch_all(self.reader())
                .await
                .map_err(classify)?;
                Ok(rows
                    .into_iter()
                    .map(|(email, created_at)| OutgoingRequest { email, created_at })
                    .collect())
            }

            async fn accept_request(
                &self,
                me: &Account,
                from_id: &str,
                now: i64,
            ) -> Result<bool, StoreError> {
                let mut tx = self.writer().begin().await.map_err(classify)?;
                let found = sqlx::query(
                    "DELETE FROM contact_requests WHERE from_id = $1 AND to_email = $2",
                )
                .bind(from_id)
                .bind(&me.email)
                .execute(&mut *tx)
                .await
                .map_err(classify)?
                .rows_affected();
                if found == 0 {
                    tx.rollback().await.map_err(classify)?;
                    return Ok(false);
                }
                connect_both_ways!(tx, me.id.as_str(), from_id, now);
                // A request the other way is answered too.
                sqlx::query(
                    "DELETE FROM contact_requests WHERE from_id = $1 \
                     AND to_email = (SELECT email FROM accounts WHERE id = $2)",
                )
                .bind(&me.id)
                .bind(from_id)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
                tx.commit().await.map_err(classify)?;
                Ok(true)
            }

            async fn delete_request(
                &self,
                from_id: &str,
                to_email: &str,
            ) -> Result<bool, StoreError> {
                sqlx::query("DELETE FROM contact_requests WHERE from_id = $1 AND to_email = $2")
                    .bind(from_id)
                    .bind(to_email)
                    .execute(self.writer())
                    .await
                    .map(|r| r.rows_affected() > 0)
                    .map_err(classify)
            }

            async fn remove_contact(
                &self,
                owner_id: &str,
                contact_id: &str,
            ) -> Result<bool, StoreError> {
                sqlx::query(
                    "DELETE FROM contacts WHERE (owner_id = $1 AND contact_id = $2) \
                     OR (owner_id = $2 AND contact_id = $1)",
                )
                .bind(owner_id)
                .bind(contact_id)
                .execute(self.writer())
                .await
                .map(|r| r.rows_affected() > 0)
                .map_err(classify)
            }

            async fn contacts(&self, owner_id: &str) -> Result<Vec<Account>, StoreError> {
                let rows: Vec<AccountRow> = sqlx::query_as(
                    "SELECT a.id, a.email, a.display_name, a.created_at \
                     FROM contacts c JOIN accounts a ON a.id = c.contact_id \
                     WHERE c.owner_id = $1 ORDER BY c.created_at, a.email",
                )
                .bind(owner_id)
                .fetch_all(self.reader())
                .await
                .map_err(classify)?;
                Ok(rows.into_iter().map(account).collect())
            }

            async fn insert_room(
                &self,
                room: &Room,
                created_by: &str,
                now: i64,
                max_live: u32,
            ) -> Result<(), StoreError> {
                // One statement: the count and the insert cannot be split by another
                // request of the same account on SQLite; on PostgreSQL two racing
                // requests can overshoot by one, which the per-account rate bounds.
                let inserted = sqlx::query(
                    "INSERT INTO rooms (id, name, created_by, created_at, expires_at) \
                     SELECT $1, $2, $3, $4, $5 WHERE \
                     (SELECT COUNT(*) FROM rooms WHERE created_by = $3 \
                      AND (expires_at = 0 OR expires_at > $4)) < $6",
                )
                .bind(&room.id)
                .bind(&room.name)
                .bind(created_by)
                .bind(now)
                .bind(room.expires_at)
                .bind(i64::from(max_live))
                .execute(self.writer())
                .await
                .map_err(classify)?;
                if inserted.rows_affected() == 0 {
                    return Err(StoreError::TooManyRooms);
                }
                Ok(())
            }

            async fn room(&self, id: &str, now: i64) -> Result<Option<Room>, StoreError> {
                let row: Option<(String, String, i64)> = sqlx::query_as(
                    "SELECT id, name, expires_at FROM rooms \
                     WHERE id = $1 AND (expires_at = 0 OR expires_at > $2)",
                )
                .bind(id)
                .bind(now)
                .fetch_optional(self.reader())
                .await
                .map_err(classify)?;
                Ok(row.map(|(id, name, expires_at)| Room {
                    id,
                    name,
                    expires_at,
                }))
            }

            async fn extend_room(&self, id: &str, expires_at: i64) -> Result<(), StoreError> {
                sqlx::query("UPDATE rooms SET expires_at = $1 WHERE id = $2 AND expires_at < $1")
                    .bind(expires_at)
                    .bind(id)
                    .execute(self.writer())
                    .await
                    .map(|_| ())
                    .map_err(classify)
            }

            async fn insert_call(
                &self,
                call: &CallRecord,
                legs: &[NewLeg],
            ) -> Result<(), StoreError> {
                let mut tx = self.writer().begin().await.map_err(classify)?;
                sqlx::query(
                    "INSERT INTO calls (id, room_id, caller_id, created_ms) VALUES ($1, $2, $3, $4)",
                )
                .bind(&call.id)
                .bind(&call.room_id)
                .bind(&call.caller_id)
                .bind(call.created_ms)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
                insert_legs!(tx, &call.id, legs);
                tx.commit().await.map_err(classify)
            }

            async fn add_legs(&self, call_id: &str, legs: &[NewLeg]) -> Result<(), StoreError> {
                let mut tx = self.writer().begin().await.map_err(classify)?;
                insert_legs!(tx, call_id, legs);
                tx.commit().await.map_err(classify)
            }

            async fn call(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
                let row: Option<(String, String, String, i64)> = sqlx::query_as(
                    "SELECT id, room_id, caller_id, created_ms FROM calls WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(self.reader())
                .await
                .map_err(classify)?;
                Ok(row.map(|(id, room_id, caller_id, created_ms)| CallRecord {
                    id,
                    room_id,
                    caller_id,
                    created_ms,
                }))
            }

            async fn member_state(
                &self,
                call_id: &str,
                user_id: &str,
            ) -> Result<Option<LegState>, StoreError> {
                let row: Option<(String,)> = sqlx::query_as(
                    "SELECT state FROM call_members WHERE call_id = $1 AND user_id = $2 \
                     ORDER BY created_ms DESC LIMIT 1",
                )
                .bind(call_id)
                .bind(user_id)
                .fetch_optional(self.reader())
                .await
                .map_err(classify)?;
                Ok(row.map(|(s,)| LegState::parse(&s)))
            }

            async fn answer(
                &self,
                call_id: &str,
                user_id: &str,
                accept: bool,
                now_ms: i64,
            ) -> Result<Option<Option<String>>, StoreError> {
                let sql = if accept {
                    "UPDATE call_members SET state = 'accepted', answered_ms = $3 \
                     WHERE call_id = $1 AND user_id = $2 AND state = 'ringing' RETURNING invited_by"
                } else {
                    "UPDATE call_members SET state = 'declined', ended_ms = $3 \
                     WHERE call_id = $1 AND user_id = $2 AND state = 'ringing' RETURNING invited_by"
                };
                let rows: Vec<(Option<String>,)> = sqlx::query_as(sql)
                    .bind(call_id)
                    .bind(user_id)
                    .bind(now_ms)
                    .fetch_all(self.writer())
                    .await
                    .map_err(classify)?;
                Ok(rows.into_iter().next().map(|(by,)| by))
            }

            async fn leave_call(
                &self,
                call_id: &str,
                user_id: &str,
                now_ms: i64,
            ) -> Result<bool, StoreError> {
                sqlx::query(
                    "UPDATE call_members SET state = 'ended', ended_ms = $3 \
                     WHERE call_id = $1 AND user_id = $2 AND state = 'accepted'",
                )
                .bind(call_id)
                .bind(user_id)
                .bind(now_ms)
                .execute(self.writer())
                .await
                .map(|r| r.rows_affected() > 0)
                .map_err(classify)
            }

            async fn cancel_rings(
                &self,
                call_id: &str,
                invited_by: &str,
                now_ms: i64,
            ) -> Result<Vec<String>, StoreError> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "UPDATE call_members SET state = 'cancelled', ended_ms = $3 \
                     WHERE call_id = $1 AND invited_by = $2 AND state = 'ringing' RETURNING user_id",
                )
                .bind(call_id)
                .bind(invited_by)
                .bind(now_ms)
                .fetch_all(self.writer())
                .await
                .map_err(classify)?;
                Ok(rows.into_iter().map(|(u,)| u).collect())
            }

            async fn expire_rings(
                &self,
                now_ms: i64,
                limit: u32,
            ) -> Result<Vec<ExpiredRing>, StoreError> {
                // The outer `state = 'ringing'` is re-checked on the row itself: a replica
                // sweeping at the same moment (or an answer) that changed it first wins.
                let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
                    "UPDATE call_members SET state = 'no_answer', ended_ms = $1 \
                     WHERE state = 'ringing' AND id IN (SELECT id FROM call_members \
                     WHERE state = 'ringing' AND ring_until_ms <= $1 LIMIT $2) \
                     RETURNING call_id, user_id, invited_by",
                )
                .bind(now_ms)
                .bind(i64::from(limit))
                .fetch_all(self.writer())
                .await
                .map_err(classify)?;
                Ok(rows
                    .into_iter()
                    .map(|(call_id, user_id, invited_by)| ExpiredRing {
                        call_id,
                        user_id,
                        invited_by,
                    })
                    .collect())
            }

            async fn in_call(&self, user_id: &str, since_ms: i64) -> Result<bool, StoreError> {
                let row: Option<(String,)> = sqlx::query_as(
                    "SELECT call_id FROM call_members WHERE user_id = $1 \
                     AND state = 'accepted' AND answered_ms > $2 LIMIT 1",
                )
                .bind(user_id)
                .bind(since_ms)
                .fetch_optional(self.reader())
                .await
                .map_err(classify)?;
                Ok(row.is_some())
            }

            async fn call_members(&self, call_id: &str) -> Result<Vec<String>, StoreError> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT DISTINCT user_id FROM call_members \
                     WHERE call_id = $1 AND state = 'accepted'",
                )
                .bind(call_id)
                .fetch_all(self.reader())
                .await
                .map_err(classify)?;
                Ok(rows.into_iter().map(|(u,)| u).collect())
            }

            async fn ringing_for(
                &self,
                user_id: &str,
                now_ms: i64,
            ) -> Result<Vec<Ringing>, StoreError> {
                let rows: Vec<(String, String, String, String, String, i64)> = sqlx::query_as(
                    "SELECT m.call_id, c.room_id, a.id, a.email, a.display_name, a.created_at \
                     FROM call_members m JOIN calls c ON c.id = m.call_id \
                     JOIN accounts a ON a.id = m.invited_by \
                     WHERE m.user_id = $1 AND m.state = 'ringing' AND m.ring_until_ms > $2 \
                     ORDER BY m.created_ms",
                )
                .bind(user_id)
                .bind(now_ms)
                .fetch_all(self.reader())
                .await
                .map_err(classify)?;
                Ok(rows
                    .into_iter()
                    .map(|(call_id, room_id, id, email, name, joined)| Ringing {
                        call_id,
                        room_id,
                        from: account((id, email, name, joined)),
                    })
                    .collect())
            }

            async fn recent_calls(
                &self,
                user_id: &str,
                limit: u32,
            ) -> Result<Vec<RecentCall>, StoreError> {
                let incoming: Vec<RecentRow> = sqlx::query_as(
                    "SELECT m.call_id, c.room_id, m.state, m.created_ms, m.answered_ms, \
                     a.id, a.email, a.display_name, a.created_at \
                     FROM call_members m JOIN calls c ON c.id = m.call_id \
                     JOIN accounts a ON a.id = m.invited_by \
                     WHERE m.user_id = $1 ORDER BY m.created_ms DESC LIMIT $2",
                )
                .bind(user_id)
                .bind(i64::from(limit))
                .fetch_all(self.reader())
                .await
                .map_err(classify)?;
                let outgoing: Vec<RecentRow> = sqlx::query_as(
                    "SELECT m.call_id, c.room_id, m.state, m.created_ms, m.answered_ms, \
                     a.id, a.email, a.display_name, a.created_at \
                     FROM call_members m JOIN calls c ON c.id = m.call_id \
                     JOIN accounts a ON a.id = m.user_id \
                     WHERE m.invited_by = $1 ORDER BY m.created_ms DESC LIMIT $2",
                )
                .bind(user_id)
                .bind(i64::from(limit))
                .fetch_all(self.reader())
                .await
                .map_err(classify)?;
                let mut calls: Vec<RecentCall> = incoming
                    .into_iter()
                    .map(|r| recent(Direction::Incoming, r))
                    .chain(outgoing.into_iter().map(|r| recent(Direction::Outgoing, r)))
                    .collect();
                calls.sort_by(|a, b| b.created_ms.cmp(&a.created_ms));
                calls.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
                Ok(calls)
            }

            async fn count_accounts(&self) -> Result<i64, StoreError> {
                let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM accounts")
                    .fetch_one(self.reader())
                    .await
                    .map_err(classify)?;
                Ok(n)
            }

            fn connections_in_use(&self) -> u32 {
                self.in_use()
            }
        }
    };
}

sql_store!(PgStore);
sql_store!(SqliteStore);
