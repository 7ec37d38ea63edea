//! Presence: who is online, away or busy. A heartbeat sets a status for a TTL; a user whose
//! heartbeats stop is offline once it passes. Changes (including going offline) are
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
//! `P presence:{pn}:expiry` (sorted set, user → expiry) and publishes on the channel
//! `P presence:{pn}:changes`; notices go on `P presence:notices`. A bucket's keys and
//! channel share a hash tag, so on Redis Cluster each script (which publishes from inside)
//! stays in one slot while the buckets spread users over the cluster's masters. On a
//! cluster the channels are sharded (`SPUBLISH`/`SSUBSCRIBE`): a message goes to its slot's
//! shard only, not to every node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use surge_cluster::redis_conn::{self, RedisConn, RedisTarget};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod coalesce;
mod streams;

pub use coalesce::Coalescer;
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

    fn parse(s: &str) -> Option<Self> {
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
    /// Finds users whose TTL passed and announces them offline. Called periodically.
    async fn sweep(&self) -> Result<(), PresenceError>;
    /// The bus of changes.
    fn subscribe(&self) -> broadcast::Receiver<Change>;
    /// The bus of notices.
    fn notices(&self) -> broadcast::Receiver<Notice>;
}

const BUS_CAPACITY: usize = 4096;

/// Presence in this process's memory.
pub struct MemoryPresence {
    users: Mutex<HashMap<String, (Status, Instant)>>,
    bus: broadcast::Sender<Change>,
    notices: broadcast::Sender<Notice>,
}

impl Default for MemoryPresence {
    fn default() -> Self {
        Self {
            users: Mutex::new(HashMap::new()),
            bus: broadcast::channel(BUS_CAPACITY).0,
            notices: broadcast::channel(BUS_CAPACITY).0,
        }
    }
}

impl MemoryPresence {
    fn announce(&self, user_id: &str, status: Status) {
        let _ = self.bus.send(Change {
            user_id: user_id.to_owned(),
            status,
        });
    }
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn heartbeat(
        &self,
        user: &str,
        status: Status,
        ttl: Duration,
    ) -> Result<bool, PresenceError> {
        let now = Instant::now();
        let old = self
            .users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(user.to_owned(), (status, now + ttl));
        let was = old.filter(|(_, until)| *until > now).map(|(s, _)| s);
        Ok(was != Some(status))
    }

    async fn publish(&self, change: &Change) -> Result<(), PresenceError> {
        self.announce(&change.user_id, change.status);
        Ok(())
    }

    async fn notify(&self, notice: &Notice) -> Result<(), PresenceError> {
        let _ = self.notices.send(notice.clone());
        Ok(())
    }

    async fn clear(&self, user: &str) -> Result<(), PresenceError> {
        let old = self
            .users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(user);
        if old.is_some() {
            self.announce(user, Status::Offline);
        }
        Ok(())
    }

    async fn statuses(&self, users: &[String]) -> Result<Vec<Status>, PresenceError> {
        let now = Instant::now();
        let map = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(users
            .iter()
            .map(|u| match map.get(u) {
                Some((status, until)) if *until > now => *status,
                _ => Status::Offline,
            })
            .collect())
    }

    async fn sweep(&self) -> Result<(), PresenceError> {
        let now = Instant::now();
        let mut gone = Vec::new();
        self.users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|user, (_, until)| {
                let alive = *until > now;
                if !alive {
                    gone.push(user.clone());
                }
                alive
            });
        for user in gone {
            self.announce(&user, Status::Offline);
        }
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.bus.subscribe()
    }

    fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }
}

/// Sets the status key and records its expiry in the sorted set; answers 1 when the status
/// changed. KEYS: status key, expiry zset. ARGV: user, status, ttl ms.
const HEARTBEAT_LUA: &str = r"
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
if old ~= ARGV[2] then return 1 end
return 0
";

/// Removes the status key and announces offline. KEYS: status key, expiry zset.
/// ARGV: user, channel, publish command (`PUBLISH`, or `SPUBLISH` on a cluster).
const CLEAR_LUA: &str = r"
local existed = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if existed == 1 then redis.call(ARGV[3], ARGV[2], ARGV[1] .. ' offline') end
return existed
";

/// Announces offline the users whose expiry passed; ZREM makes each announcement happen
/// once even with several replicas sweeping. KEYS: expiry zset. ARGV: channel, status key
/// prefix, batch size, publish command. The status keys it reads are not declared in
/// KEYS, but they carry the expiry set's hash tag, so they are in its slot.
const SWEEP_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, user in ipairs(expired) do
  redis.call('ZREM', KEYS[1], user)
  if redis.call('EXISTS', ARGV[2] .. user) == 0 then
    redis.call(ARGV[4], ARGV[1], user .. ' offline')
  end
end
return #expired
";

/// Presence buckets (see the module docs): enough to spread over the masters of any
/// sensible cluster, few enough that a sweep (one script per bucket) stays cheap.
pub const BUCKETS: u32 = 16;

/// The bucket of `user` (FNV-1a, the same on every replica).
fn bucket(user: &str) -> u32 {
    let hash = user.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash % BUCKETS
}

/// The channel that carries `user`'s status changes, for the deployment's key `prefix`
/// (tests listen on it; see the module docs).
pub fn changes_channel(prefix: &str, user: &str) -> String {
    bucket_channel(prefix, bucket(user))
}

fn bucket_channel(prefix: &str, bucket: u32) -> String {
    format!("{prefix}presence:{{p{bucket}}}:changes")
}

/// Presence in Redis (one server or a cluster), shared by replicas.
pub struct RedisPresence {
    conn: RedisConn,
    /// Publish with `SPUBLISH` (a cluster) rather than `PUBLISH`.
    sharded: bool,
    prefix: String,
    heartbeat: redis::Script,
    clear: redis::Script,
    sweep: redis::Script,
    bus: broadcast::Sender<Change>,
    notices: broadcast::Sender<Notice>,
}

impl RedisPresence {
    /// Uses `conn` for commands and starts the pub/sub listener (on its own connection to
    /// `target`) that feeds the local bus until `shutdown`.
    pub fn new(
        target: RedisTarget,
        conn: RedisConn,
        prefix: String,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let bus = broadcast::channel(BUS_CAPACITY).0;
        let notices = broadcast::channel(BUS_CAPACITY).0;
        let this = Arc::new(Self {
            conn,
            sharded: target.is_cluster(),
            prefix,
            heartbeat: redis::Script::new(HEARTBEAT_LUA),
            clear: redis::Script::new(CLEAR_LUA),
            sweep: redis::Script::new(SWEEP_LUA),
            bus: bus.clone(),
            notices: notices.clone(),
        });
        let channels = Channels {
            changes: (0..BUCKETS)
                .map(|b| bucket_channel(&this.prefix, b))
                .collect(),
            notices: this.notice_channel(),
        };
        tokio::spawn(listen(target, channels, bus, notices, shutdown));
        this
    }

    fn key(&self, user: &str) -> String {
        format!("{}{user}", self.key_prefix(bucket(user)))
    }
    fn key_prefix(&self, bucket: u32) -> String {
        format!("{}presence:{{p{bucket}}}:u:", self.prefix)
    }
    fn expiry_key(&self, bucket: u32) -> String {
        format!("{}presence:{{p{bucket}}}:expiry", self.prefix)
    }
    fn notice_channel(&self) -> String {
        format!("{}presence:notices", self.prefix)
    }
    fn publish_command(&self) -> &'static str {
        redis_conn::publish_command(self.sharded)
    }
}

fn unavailable(e: redis::RedisError) -> PresenceError {
    PresenceError::Unavailable(e.to_string())
}

#[async_trait]
impl Presence for RedisPresence {
    async fn heartbeat(
        &self,
        user: &str,
        status: Status,
        ttl: Duration,
    ) -> Result<bool, PresenceError> {
        let mut conn = self.conn.clone();
        self.heartbeat
            .key(self.key(user))
            .key(self.expiry_key(bucket(user)))
            .arg(user)
            .arg(status.as_str())
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|changed| changed == 1)
            .map_err(unavailable)
    }

    async fn publish(&self, change: &Change) -> Result<(), PresenceError> {
        let mut conn = self.conn.clone();
        redis::cmd(self.publish_command())
            .arg(changes_channel(&self.prefix, &change.user_id))
            .arg(format!("{} {}", change.user_id, change.status.as_str()))
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn notify(&self, notice: &Notice) -> Result<(), PresenceError> {
        let payload =
            serde_json::to_string(notice).map_err(|e| PresenceError::Unavailable(e.to_string()))?;
        let mut conn = self.conn.clone();
        let sent = redis::cmd(self.publish_command())
            .arg(self.notice_channel())
            .arg(payload)
            .query_async::<i64>(&mut conn)
            .await;
        if let Err(e) = sent {
            // This process's own streams still hear it; other replicas' do not until Redis
            // is back (a logout then ends those streams at their next reconnect).
            let _ = self.notices.send(notice.clone());
            return Err(unavailable(e));
        }
        Ok(())
    }

    async fn clear(&self, user: &str) -> Result<(), PresenceError> {
        let mut conn = self.conn.clone();
        self.clear
            .key(self.key(user))
            .key(self.expiry_key(bucket(user)))
            .arg(user)
            .arg(changes_channel(&self.prefix, user))
            .arg(self.publish_command())
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn statuses(&self, users: &[String]) -> Result<Vec<Status>, PresenceError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let keys: Vec<String> = users.iter().map(|u| self.key(u)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(values
            .into_iter()
            .map(|v| {
                v.as_deref()
                    .and_then(Status::parse)
                    .unwrap_or(Status::Offline)
            })
            .collect())
    }

    async fn sweep(&self) -> Result<(), PresenceError> {
        // One script per bucket, sent concurrently (one round trip in all: the connection
        // pipelines them; on a cluster each goes to its bucket's master).
        let sweeps = (0..BUCKETS).map(|b| {
            let mut conn = self.conn.clone();
            let mut invocation = self.sweep.prepare_invoke();
            invocation
                .key(self.expiry_key(b))
                .arg(bucket_channel(&self.prefix, b))
                .arg(self.key_prefix(b))
                .arg(1000)
                .arg(self.publish_command());
            async move { invocation.invoke_async::<i64>(&mut conn).await }
        });
        // Every bucket is swept even when one fails (a master failing over must not hold
        // back the others' offline notices); the first failure is reported.
        futures::future::join_all(sweeps)
            .await
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), |e| Err(unavailable(e)))
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.bus.subscribe()
    }

    fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }
}

/// The pub/sub channels the listener follows.
struct Channels {
    changes: Vec<String>,
    notices: String,
}

/// Forwards the pub/sub channels to the local buses, reconnecting and resubscribing (with
/// jittered backoff, so replicas do not reconnect in lockstep) whenever the connection drops.
async fn listen(
    target: RedisTarget,
    channels: Channels,
    bus: broadcast::Sender<Change>,
    notices: broadcast::Sender<Notice>,
    shutdown: CancellationToken,
) {
    let channel = &channels.notices;
    let all: Vec<String> = channels
        .changes
        .iter()
        .chain(std::iter::once(&channels.notices))
        .cloned()
        .collect();
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = redis_conn::subscribe(&target, &all, &crate::limits::REDIS_TIMEOUTS);
        let attempt = tokio::select! {
            () = shutdown.cancelled() => return,
            r = connected => r,
        };
        match attempt {
            Ok(mut messages) => {
                tracing::debug!(%channel, "presence pub/sub subscribed");
                backoff = Duration::from_millis(100);
                loop {
                    let message = tokio::select! {
                        () = shutdown.cancelled() => return,
                        m = messages.next() => m,
                    };
                    let Some(message) = message else { break };
                    let Ok(payload) = String::from_utf8(message.payload) else {
                        continue;
                    };
                    if message.channel == channels.notices {
                        if let Ok(notice) = serde_json::from_str::<Notice>(&payload) {
                            let _ = notices.send(notice);
                        }
                        continue;
                    }
                    if let Some((user, status)) = payload.rsplit_once(' ')
                        && let Some(status) = Status::parse(status)
                    {
                        let _ = bus.send(Change {
                            user_id: user.to_owned(),
                            status,
                        });
                    }
                }
                tracing::warn!(%channel, "presence pub/sub connection lost; resubscribing");
            }
            Err(e) => {
                tracing::debug!(error = %e, "presence pub/sub cannot connect yet");
            }
        }
        metrics::counter!("surge_api_presence_resubscribe_total").increment(1);
        let jitter = Duration::from_millis(rand::random::<u64>() % 250);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff + jitter) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

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
        if !self.presence.heartbeat(user, status, ttl).await? {
            return Ok(());
        }
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
        // A change folded into this user's window is compared against offline from now on.
        self.coalescer()
            .published(user, Status::Offline, Instant::now());
        Ok(())
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
