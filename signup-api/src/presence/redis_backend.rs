//! Presence in Redis (one server or a cluster), shared by replicas; the layout is in the
//! parent module's docs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use surge_cluster::redis_conn::{self, RedisConn, RedisTarget};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{BUS_CAPACITY, Change, Notice, Presence, PresenceError, Status};

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
/// once even with several replicas sweeping. A lapsed user's connection count goes too: no
/// process refreshed it for a whole TTL, so no live process holds its stream (a count left
/// by a process that died ends here). KEYS: expiry zset. ARGV: channel, status key prefix,
/// batch size, publish command, connection-count hash. The other keys it touches are not
/// declared in KEYS, but they carry the expiry set's hash tag, so they are in its slot.
const SWEEP_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, user in ipairs(expired) do
  redis.call('ZREM', KEYS[1], user)
  if redis.call('EXISTS', ARGV[2] .. user) == 0 then
    redis.call(ARGV[4], ARGV[1], user .. ' offline')
    redis.call('HDEL', ARGV[5], user)
  end
end
return #expired
";

/// A process took its first stream of a user: counts the process in the user's connection
/// count and extends the status (keeping it: an `away` set by a heartbeat stays away), or
/// sets `online` when there was none; answers 1 when the status changed.
/// KEYS: status key, expiry zset, connection-count hash. ARGV: user, ttl ms.
const CONNECT_LUA: &str = r"
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
local changed = 0
if redis.call('PEXPIRE', KEYS[1], ARGV[2]) == 0 then
  redis.call('SET', KEYS[1], 'online', 'PX', ARGV[2])
  changed = 1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
return changed
";

/// A process let go of its last stream of a user: when no process holds one any more, the
/// user is offline at once (announced, as a logout); answers 1 when it went offline. KEYS: status key, expiry zset,
/// connection-count hash. ARGV: user, channel, publish command.
const DISCONNECT_LUA: &str = r"
if redis.call('HINCRBY', KEYS[3], ARGV[1], -1) > 0 then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
local existed = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if existed == 1 then redis.call(ARGV[3], ARGV[2], ARGV[1] .. ' offline') end
return existed
";

/// Extends the statuses of users connected to the calling process, keeping each status; a
/// user whose status lapsed (Redis lost it, or a failover) is set online again and returned.
/// One call per bucket and batch: the whole batch costs one round trip. KEYS: expiry zset.
/// ARGV: status key prefix, ttl ms, then the users. The status keys carry the expiry set's
/// hash tag, so they are in its slot.
const REFRESH_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local revived = {}
local expiries = {}
for i = 3, #ARGV do
  local user = ARGV[i]
  if redis.call('PEXPIRE', ARGV[1] .. user, ttl) == 0 then
    redis.call('SET', ARGV[1] .. user, 'online', 'PX', ttl)
    revived[#revived + 1] = user
  end
  expiries[#expiries + 1] = now + ttl
  expiries[#expiries + 1] = user
end
if #expiries > 0 then redis.call('ZADD', KEYS[1], unpack(expiries)) end
return revived
";

/// Users per refresh script: bounds one script's time inside Redis (and Lua's `unpack`).
const REFRESH_BATCH: usize = 500;

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
    connect: redis::Script,
    disconnect: redis::Script,
    refresh: redis::Script,
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
            connect: redis::Script::new(CONNECT_LUA),
            disconnect: redis::Script::new(DISCONNECT_LUA),
            refresh: redis::Script::new(REFRESH_LUA),
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
    fn connections_key(&self, bucket: u32) -> String {
        format!("{}presence:{{p{bucket}}}:conns", self.prefix)
    }
    fn notice_channel(&self) -> String {
        format!("{}presence:notices", self.prefix)
    }
    fn publish_command(&self) -> &'static str {
        redis_conn::publish_command(self.sharded)
    }
}

/// A TTL as Redis's `PX` takes it (at least 1 ms).
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
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
            .arg(ttl_ms(ttl))
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
                .arg(self.publish_command())
                .arg(self.connections_key(b));
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

    async fn connect(&self, user: &str, ttl: Duration) -> Result<bool, PresenceError> {
        let b = bucket(user);
        let mut conn = self.conn.clone();
        self.connect
            .key(self.key(user))
            .key(self.expiry_key(b))
            .key(self.connections_key(b))
            .arg(user)
            .arg(ttl_ms(ttl))
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|changed| changed == 1)
            .map_err(unavailable)
    }

    async fn disconnect(&self, user: &str) -> Result<bool, PresenceError> {
        let b = bucket(user);
        let mut conn = self.conn.clone();
        self.disconnect
            .key(self.key(user))
            .key(self.expiry_key(b))
            .key(self.connections_key(b))
            .arg(user)
            .arg(bucket_channel(&self.prefix, b))
            .arg(self.publish_command())
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|offline| offline == 1)
            .map_err(unavailable)
    }

    async fn refresh(&self, users: &[String], ttl: Duration) -> Result<Vec<String>, PresenceError> {
        let mut by_bucket: Vec<Vec<&str>> = vec![Vec::new(); BUCKETS as usize];
        for user in users {
            by_bucket[bucket(user) as usize].push(user);
        }
        let ttl = ttl_ms(ttl);
        // All batches at once: the connection pipelines them (on a cluster each goes to its
        // bucket's master), so a process's refresh is one round trip whatever its size.
        let calls = (0..BUCKETS).zip(&by_bucket).flat_map(|(b, members)| {
            members.chunks(REFRESH_BATCH).map(move |batch| {
                let mut conn = self.conn.clone();
                let mut invocation = self.refresh.prepare_invoke();
                invocation
                    .key(self.expiry_key(b))
                    .arg(self.key_prefix(b))
                    .arg(ttl);
                for user in batch {
                    invocation.arg(*user);
                }
                async move { invocation.invoke_async::<Vec<String>>(&mut conn).await }
            })
        });
        let mut revived = Vec::new();
        let mut first_error = None;
        // A bucket whose master is failing over must not hold back the others' refreshes.
        for result in futures::future::join_all(calls).await {
            match result {
                Ok(users) => revived.extend(users),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if revived.is_empty() => Err(unavailable(e)),
            Some(e) => {
                tracing::debug!(error = %e, "part of a presence refresh failed");
                Ok(revived)
            }
            None => Ok(revived),
        }
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
