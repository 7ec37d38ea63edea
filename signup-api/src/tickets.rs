//! Presence-stream tickets: a browser's `EventSource` cannot send an `Authorization`
//! header, and a session token in the URL would land in access logs. So the client first
//! asks for a ticket with its bearer token (`POST /v1/presence/tickets`) and opens the
//! stream with `?ticket=`. A ticket is 256 random bits, lives a few seconds, and is
//! redeemed at most once (taken out of the store atomically), so a URL copied from a log is
//! worthless. Only its SHA-256 digest is stored.
//!
//! Two backends behind one trait: in memory (`surge up`) and Redis (any replica can redeem
//! a ticket another one issued).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use surge_cluster::redis_conn::RedisConn;
use tokio::time::Instant;

/// What a ticket stands for: the session that asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub account_id: String,
    /// The session token's digest, so the stream ends when that session logs out.
    pub session: String,
}

/// The ticket store could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    #[error("ticket store unavailable: {0}")]
    Unavailable(String),
}

/// A fresh ticket (handed to the client) and the digest it is stored under.
pub fn new_ticket() -> (String, String) {
    let ticket = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let digest = ticket_digest(&ticket);
    (ticket, digest)
}

/// The digest a ticket is stored under.
pub fn ticket_digest(ticket: &str) -> String {
    hex::encode(Sha256::digest(ticket.as_bytes()))
}

/// Whether `text` has the shape of a ticket we issue (43 base64url characters).
pub fn plausible(text: &str) -> bool {
    text.len() == 43
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Where tickets live until redeemed or expired.
#[async_trait]
pub trait Tickets: Send + Sync + 'static {
    /// Stores `ticket` under `digest` for `ttl`.
    async fn issue(&self, digest: &str, ticket: &Ticket, ttl: Duration) -> Result<(), TicketError>;
    /// Takes the ticket out: the first caller gets it, every later one (and any caller after
    /// the TTL) gets `None`.
    async fn redeem(&self, digest: &str) -> Result<Option<Ticket>, TicketError>;
}

/// Expired tickets are dropped once the map holds more than this many (amortised: tickets
/// are rate-limited per account, so the map stays small).
const MEMORY_PURGE_ABOVE: usize = 1024;

/// Tickets in this process's memory.
#[derive(Default)]
pub struct MemoryTickets {
    tickets: Mutex<HashMap<String, (Ticket, Instant)>>,
}

#[async_trait]
impl Tickets for MemoryTickets {
    async fn issue(&self, digest: &str, ticket: &Ticket, ttl: Duration) -> Result<(), TicketError> {
        let now = Instant::now();
        let mut map = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() > MEMORY_PURGE_ABOVE {
            map.retain(|_, (_, until)| *until > now);
        }
        map.insert(digest.to_owned(), (ticket.clone(), now + ttl));
        Ok(())
    }

    async fn redeem(&self, digest: &str) -> Result<Option<Ticket>, TicketError> {
        let now = Instant::now();
        let taken = self
            .tickets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(digest);
        Ok(taken.filter(|(_, until)| *until > now).map(|(t, _)| t))
    }
}

/// Tickets in Redis: a key with a TTL, taken with `GETDEL` (atomic: two replicas redeeming
/// the same ticket at once cannot both get it).
pub struct RedisTickets {
    conn: RedisConn,
    prefix: String,
}

impl RedisTickets {
    pub fn new(conn: RedisConn, prefix: &str) -> Self {
        Self {
            conn,
            prefix: format!("{prefix}ticket:"),
        }
    }
}

fn unavailable(e: redis::RedisError) -> TicketError {
    TicketError::Unavailable(e.to_string())
}

#[async_trait]
impl Tickets for RedisTickets {
    async fn issue(&self, digest: &str, ticket: &Ticket, ttl: Duration) -> Result<(), TicketError> {
        let value =
            serde_json::to_string(ticket).map_err(|e| TicketError::Unavailable(e.to_string()))?;
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(format!("{}{digest}", self.prefix))
            .arg(value)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn redeem(&self, digest: &str) -> Result<Option<Ticket>, TicketError> {
        let mut conn = self.conn.clone();
        let value: Option<String> = redis::cmd("GETDEL")
            .arg(format!("{}{digest}", self.prefix))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        // A value we cannot read is treated as no ticket: it was not written by us.
        Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn memory_tickets_are_single_use_and_expire() {
        let store = MemoryTickets::default();
        let ticket = Ticket {
            account_id: "a".into(),
            session: "s".into(),
        };
        let (text, digest) = new_ticket();
        assert!(plausible(&text));
        assert!(!plausible("short"));
        store
            .issue(&digest, &ticket, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(store.redeem(&digest).await.unwrap(), Some(ticket.clone()));
        assert_eq!(store.redeem(&digest).await.unwrap(), None, "used twice");
        let (_, late) = new_ticket();
        store
            .issue(&late, &ticket, Duration::from_secs(30))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(store.redeem(&late).await.unwrap(), None, "expired");
    }
}
