//! Presence: who is online, away or busy. A user with an open presence stream is online
//! while the stream lasts ([`Connections`]: the process holding it refreshes the TTLs of all
//! its connected users in batches, one round trip per tick, and the user is offline at once
//! when the last process lets go). A client without a stream keeps a status with heartbeats
//! instead; a heartbeat also sets a connected user's status (away, busy), which the
//! refreshes then keep. A status whose TTL passes is offline. Changes (including going offline) are
//! published on a local broadcast bus that the SSE streams read; a [`Publisher`] coalesces
//! a flapping user's changes. Besides changes, the bus carries [`Notice`]s: a contact added
//! or removed, a contact request, a session logged out, a call ringing or answered; streams
//! react to them instead of polling the database.
//!
//! Two backends behind one trait: in memory (one process) and Redis (replicas share it).
//! In Redis a user's status is a key with a TTL, and a sorted set by expiry time lets a
//! sweeper on any replica find the users who just went silent and announce them offline
//! exactly once (keyspace notifications are lossy and late, so they are not used).
//! Changes travel between replicas over pub/sub on a dedicated connection that
//! resubscribes after a reconnect.
//!
//! Redis layout (prefix `P`): users fall into [`BUCKETS`] buckets by a hash of their id;
//! bucket `n` holds `P presence:{pn}:u:<user>` (the status, with a PX TTL),
//! `P presence:{pn}:expiry` (sorted set, user → expiry), `P presence:{pn}:conns` (hash,
//! user → how many processes hold a stream of the user) and publishes on the channel
//! `P presence:{pn}:changes`; notices go on `P presence:notices`. A bucket's keys and
//! channel share a hash tag, so on Redis Cluster each script (which publishes from inside)
//! stays in one slot while the buckets spread users over the cluster's masters. On a
//! cluster the channels are sharded (`SPUBLISH`/`SSUBSCRIBE`): a message goes to its slot's
//! shard only, not to every node.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod coalesce;
mod connections;
mod memory;
mod redis_backend;
mod streams;

pub use coalesce::Coalescer;
pub use connections::{Connections, Held};
pub use memory::MemoryPresence;
pub use redis_backend::{BUCKETS, RedisPresence, changes_channel};
pub use streams::{StreamRefused, StreamSlot, StreamSlots};

/// A user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Online,
    Away,
    Busy,
    Offline,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Away => "away",
            Self::Busy => "busy",
            Self::Offline => "offline",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "online" => Some(Self::Online),
            "away" => Some(Self::Away),
            "busy" => Some(Self::Busy),
            "offline" => Some(Self::Offline),
            _ => None,
        }
    }
}

/// A user's status changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub user_id: String,
    pub status: Status,
}

/// How someone's contacts changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContactChange {
    /// A request was accepted (on either side): the two are contacts now.
    Added,
    /// One of the two removed the other.
    Removed,
    /// Someone asked to be a contact.
    Requested,
}

/// Something the streams react to besides a presence change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// `account`'s contacts or contact requests changed; `other` is the other side.
    Contacts {
        account: String,
        other: String,
        change: ContactChange,
    },
    /// The session with this token digest logged out: its streams end.
    SessionEnded { session: String },
    /// `caller_id` rings `callee` into the room `room_id` (issue 15).
    IncomingCall {
        callee: String,
        call_id: String,
        caller_id: String,
        caller_name: String,
        room_id: String,
    },
    /// A ring of `call_id` changed state (`by` did it, or was its subject); for `to`'s
    /// streams: the caller's, and the callee's other tabs.
    CallUpdate {
        to: String,
        call_id: String,
        state: crate::store::LegState,
        by: String,
    },
}

/// The presence backend could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    #[error("presence store unavailable: {0}")]
    Unavailable(String),
}

/// Sends `notice` to every replica's streams. Best effort: the database holds the truth, and
/// a stream that missed a notice catches up at its next reconnect.
pub async fn notify(presence: &dyn Presence, notice: Notice) {
    if let Err(e) = presence.notify(&notice).await {
        tracing::debug!(error = %e, "could not publish a presence notice");
    }
}

/// Where presence lives.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Sets `user`'s status for `ttl`; answers whether it changed (an expired status counts
    /// as offline). Publishing the change is the caller's ([`Publisher`]).
    async fn heartbeat(
        &self,
        user: &str,
        status: Status,
        ttl: Duration,
    ) -> Result<bool, PresenceError>;
    /// Tells every stream (on every replica) about `change`.
    async fn publish(&self, change: &Change) -> Result<(), PresenceError>;
    /// Tells every stream (on every replica) about `notice`.
    async fn notify(&self, notice: &Notice) -> Result<(), PresenceError>;
    /// Marks `user` offline at once (logout).
    async fn clear(&self, user: &str) -> Result<(), PresenceError>;
    /// Statuses of `users`, in order; unknown or expired users are offline.
    async fn statuses(&self, users: &[String]) -> Result<Vec<Status>, PresenceError>;
    /// A process took its first presence stream of `user` (presence by connection): counts
    /// the process as holding `user`, and extends `user`'s status by `ttl`, keeping it, or
    /// sets it online when it had none. Answers whether it changed (the caller publishes it).
    async fn connect(&self, user: &str, ttl: Duration) -> Result<bool, PresenceError>;
    /// A process let go of its last stream of `user`: once no process holds one, `user` is
    /// offline at once (announced here, as by [`Self::clear`]). Answers whether it went
    /// offline.
    async fn disconnect(&self, user: &str) -> Result<bool, PresenceError>;
    /// Extends by `ttl` the statuses of `users`, whose streams this process holds, keeping
    /// each status; a user whose status had lapsed is set online again and returned (the
    /// caller publishes those). A partial failure still answers the users it revived (and
    /// logs the failure); it is an error only when it revived none.
    async fn refresh(&self, users: &[String], ttl: Duration) -> Result<Vec<String>, PresenceError>;
    /// Finds users whose TTL passed and announces them offline. Called periodically.
    async fn sweep(&self) -> Result<(), PresenceError>;
    /// The bus of changes.
    fn subscribe(&self) -> broadcast::Receiver<Change>;
    /// The bus of notices.
    fn notices(&self) -> broadcast::Receiver<Notice>;
}

const BUS_CAPACITY: usize = 4096;

/// Sets statuses and publishes their changes, coalesced per user (see [`Coalescer`]): with
/// a window of one second, a user flapping a hundred times a second costs every replica and
/// every stream two messages a second, not a hundred.
pub struct Publisher {
    presence: Arc<dyn Presence>,
    coalescer: Mutex<Coalescer>,
    window: Duration,
}

impl Publisher {
    pub fn new(presence: Arc<dyn Presence>, window: Duration) -> Self {
        Self {
            presence,
            coalescer: Mutex::new(Coalescer::new(window)),
            window,
        }
    }

    fn coalescer(&self) -> std::sync::MutexGuard<'_, Coalescer> {
        self.coalescer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A heartbeat: sets `user`'s status for `ttl` and publishes a change now, or at the end
    /// of the user's window when one was published within it.
    pub async fn heartbeat(
        &self,
        user: &str,
        status: Status,
        ttl: Duration,
    ) -> Result<(), PresenceError> {
        if self.presence.heartbeat(user, status, ttl).await? {
            self.announce(user, status).await?;
        }
        Ok(())
    }

    /// Publishes that `user`'s status changed to `status`: now, or at the end of the user's
    /// window when one was published within it.
    pub async fn announce(&self, user: &str, status: Status) -> Result<(), PresenceError> {
        if self.coalescer().changed(user, status, Instant::now()) {
            self.presence
                .publish(&Change {
                    user_id: user.to_owned(),
                    status,
                })
                .await?;
        } else {
            metrics::counter!("surge_api_presence_changes_coalesced_total").increment(1);
        }
        Ok(())
    }

    /// Marks `user` offline at once (logout), bypassing the window.
    pub async fn clear(&self, user: &str) -> Result<(), PresenceError> {
        self.presence.clear(user).await?;
        self.published_offline(user);
        Ok(())
    }

    /// This process let go of `user`'s last stream ([`Presence::disconnect`]): offline at
    /// once, bypassing the window, when no other process holds one.
    pub async fn disconnect(&self, user: &str) -> Result<(), PresenceError> {
        if self.presence.disconnect(user).await? {
            self.published_offline(user);
        }
        Ok(())
    }

    fn published_offline(&self, user: &str) {
        // A change folded into this user's window is compared against offline from now on.
        self.coalescer()
            .published(user, Status::Offline, Instant::now());
    }

    /// Publishes the latest status of each user whose window ended with changes held back
    /// (skipped when it ended where it started).
    pub async fn flush(&self) -> Result<(), PresenceError> {
        let due = self.coalescer().due(Instant::now());
        if due.is_empty() {
            return Ok(());
        }
        let users: Vec<String> = due.iter().map(|(user, _)| user.clone()).collect();
        let statuses = self.presence.statuses(&users).await?;
        for ((user_id, last), status) in due.into_iter().zip(statuses) {
            if status != last {
                self.presence
                    .publish(&Change {
                        user_id: user_id.clone(),
                        status,
                    })
                    .await?;
            }
            self.coalescer().published(&user_id, status, Instant::now());
        }
        Ok(())
    }

    /// Runs [`Self::flush`] a few times per window until `shutdown` (nothing to do without
    /// a window).
    pub fn spawn_flusher(self: Arc<Self>, shutdown: CancellationToken) {
        if self.window.is_zero() {
            return;
        }
        let every = (self.window / 4).max(Duration::from_millis(20));
        crate::every::spawn_every(Duration::ZERO, every, shutdown, move || {
            let me = self.clone();
            async move {
                if let Err(e) = me.flush().await {
                    tracing::debug!(error = %e, "presence flush failed; retrying next tick");
                }
            }
        });
    }
}

/// Runs `presence.sweep()` every `every` until `shutdown`.
pub fn spawn_sweeper(presence: Arc<dyn Presence>, every: Duration, shutdown: CancellationToken) {
    crate::every::spawn_every(Duration::ZERO, every, shutdown, move || {
        let presence = presence.clone();
        async move {
            if let Err(e) = presence.sweep().await {
                tracing::debug!(error = %e, "presence sweep failed; retrying next tick");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn memory_presence_expires_and_announces() {
        let p: Arc<dyn Presence> = Arc::new(MemoryPresence::default());
        let publisher = Publisher::new(p.clone(), Duration::ZERO);
        let mut rx = p.subscribe();
        let ttl = Duration::from_secs(10);
        publisher
            .heartbeat("u1", Status::Online, ttl)
            .await
            .unwrap();
        publisher
            .heartbeat("u1", Status::Online, ttl)
            .await
            .unwrap();
        publisher.heartbeat("u1", Status::Busy, ttl).await.unwrap();
        let ids = vec!["u1".to_owned(), "u2".to_owned()];
        assert_eq!(
            p.statuses(&ids).await.unwrap(),
            vec![Status::Busy, Status::Offline]
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(
            p.statuses(&ids).await.unwrap(),
            vec![Status::Offline, Status::Offline]
        );
        p.sweep().await.unwrap();
        let got: Vec<Status> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| c.status)
            .collect();
        // A repeated heartbeat with the same status is not a change.
        assert_eq!(got, vec![Status::Online, Status::Busy, Status::Offline]);
    }

    #[tokio::test(start_paused = true)]
    async fn flapping_is_coalesced_and_the_last_status_wins() {
        let p: Arc<dyn Presence> = Arc::new(MemoryPresence::default());
        let publisher = Publisher::new(p.clone(), Duration::from_secs(1));
        let mut rx = p.subscribe();
        let ttl = Duration::from_secs(30);
        for i in 0..101 {
            let status = [Status::Online, Status::Busy, Status::Away][i % 3];
            publisher.heartbeat("u1", status, ttl).await.unwrap();
            tokio::time::advance(Duration::from_millis(5)).await;
        }
        publisher.flush().await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        publisher.flush().await.unwrap();
        let got: Vec<Status> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| c.status)
            .collect();
        // 101 changes: the first at once, the rest folded into one with the last status.
        assert_eq!(got, vec![Status::Online, Status::Busy]);
        // A logout goes out at once, and a login right after is not swallowed.
        publisher.clear("u1").await.unwrap();
        publisher
            .heartbeat("u1", Status::Online, ttl)
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        publisher.flush().await.unwrap();
        let got: Vec<Status> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| c.status)
            .collect();
        assert_eq!(got, vec![Status::Offline, Status::Online]);
    }
}
