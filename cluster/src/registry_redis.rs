//! The cluster's shard registry on Redis.
//!
//! Layout, every key under the deployment's prefix `P`:
//!
//! - `P{registry}:shards` — hash, shard id → the shard's JSON [`ShardInfo`];
//! - `P{registry}:deadlines` — sorted set, shard id → the moment (Redis's clock, ms) its
//!   entry expires unless heartbeated again;
//! - `P{registry}:drains` — hash, shard id → when an operator asked it to drain;
//! - `P{registry}:pinned:<shard>` — sorted set, room → when its pin expires: how many
//!   rooms are placed on a shard, for even placement (an approximate count: a room moved
//!   away stays counted on its old shard until its pin there would have expired);
//! - `Ppin:<room>` — string, the shard a room is pinned to, with a PX TTL.
//!
//! Liveness is judged by Redis's own clock (`TIME` inside the scripts), never by the
//! caller's, so clock skew between nodes cannot make shards flap. The registry keys (and
//! the pinned-room indexes) share the `{registry}` hash tag, so the scripts and the atomic
//! pipeline that touch several of them stay in one slot on Redis Cluster; pins carry no
//! common tag and spread over the cluster (refreshing them is then one concurrent command
//! per pin instead of one pipeline, since a cluster pipeline stays within one slot). The
//! prefix must not contain `{`: it would become the hash tag.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncCommands, Script};

use crate::redis_conn::{RedisConn, RedisTarget, RedisTimeouts};

use crate::registry::{RegistryError, SCHEMA_VERSION, ShardInfo, ShardRegistry, ShardState};

/// Room pins refreshed per pipelined round trip.
const REFRESH_BATCH: usize = 256;

/// Distinct unreadable entries remembered as already logged.
const MAX_REPORTED: usize = 1024;

/// Registers or refreshes a shard. A shard whose previous entry had already expired (or
/// never existed) is a new incarnation, so a drain request left for its predecessor is
/// dropped. Returns 1 when a drain request stands.
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prev = redis.call('ZSCORE', KEYS[2], ARGV[1])
if (not prev) or tonumber(prev) <= now then
  redis.call('HDEL', KEYS[3], ARGV[1])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return redis.call('HEXISTS', KEYS[3], ARGV[1])
";

/// Drops expired shards (and their drain requests), then returns
/// `[id, json, drain_requested, ...]` for every live one.
const LIVE_SHARDS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #dead > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('HDEL', KEYS[1], unpack(dead))
  redis.call('HDEL', KEYS[3], unpack(dead))
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf')
local out = {}
for _, id in ipairs(ids) do
  local v = redis.call('HGET', KEYS[1], id)
  if v then
    out[#out + 1] = id
    out[#out + 1] = v
    out[#out + 1] = redis.call('HEXISTS', KEYS[3], id)
  end
end
return out
";

/// Records a drain request for a live shard; 0 when the shard is unknown or gone.
const REQUEST_DRAIN: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = redis.call('ZSCORE', KEYS[2], ARGV[1])
if (not deadline) or tonumber(deadline) <= now then
  return 0
end
redis.call('HSET', KEYS[3], ARGV[1], now)
return 1
";

/// The room-pin compare-and-set: pin to ARGV[1] when unpinned, or when ARGV[3] is '1' and
/// the pin is ARGV[4] (a shard found dead or draining). Returns the pin that holds.
const PIN_ROOM: &str = r"
local cur = redis.call('GET', KEYS[1])
if (not cur) or (ARGV[3] == '1' and cur == ARGV[4]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return cur
";

/// Extends a pin to at least ARGV[2] ms, only while it still names shard ARGV[1].
const REFRESH_PIN: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
  return 1
end
return 0
";

/// Adds rooms (ARGV[2..]) to a shard's pinned-room index with an expiry ARGV[1] ms from
/// now (never shortening one), dropping expired members.
const INDEX_PINS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'GT', now + ttl, ARGV[i])
end
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
";

/// Live members of each pinned-room index in KEYS.
const PINNED_COUNTS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('ZCOUNT', key, '(' .. now, '+inf')
end
return out
";

struct Keys {
    shards: String,
    deadlines: String,
    drains: String,
    pinned_prefix: String,
    pin_prefix: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            shards: format!("{prefix}{{registry}}:shards"),
            deadlines: format!("{prefix}{{registry}}:deadlines"),
            drains: format!("{prefix}{{registry}}:drains"),
            pinned_prefix: format!("{prefix}{{registry}}:pinned:"),
            pin_prefix: format!("{prefix}pin:"),
        }
    }

    fn pin(&self, room: &str) -> String {
        format!("{}{room}", self.pin_prefix)
    }

    fn pinned(&self, shard: &str) -> String {
        format!("{}{shard}", self.pinned_prefix)
    }
}

struct Scripts {
    heartbeat: Script,
    live_shards: Script,
    request_drain: Script,
    pin_room: Script,
    refresh_pin: Script,
    index_pins: Script,
    pinned_counts: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            heartbeat: Script::new(HEARTBEAT),
            live_shards: Script::new(LIVE_SHARDS),
            request_drain: Script::new(REQUEST_DRAIN),
            pin_room: Script::new(PIN_ROOM),
            refresh_pin: Script::new(REFRESH_PIN),
            index_pins: Script::new(INDEX_PINS),
            pinned_counts: Script::new(PINNED_COUNTS),
        }
    }
}

/// The shard registry shared by every node of a cluster, on one Redis or a Redis Cluster.
pub struct RedisRegistry {
    conn: RedisConn,
    keys: Keys,
    scripts: Scripts,
    /// Entries already reported as unreadable, so a bad entry is logged once at WARN
    /// rather than on every placement.
    reported: Mutex<HashSet<(String, u64)>>,
}

fn unavailable(op: &'static str, e: redis::RedisError) -> RegistryError {
    metrics::counter!("surge_registry_errors_total", "op" => op).increment(1);
    RegistryError::Unavailable(format!("Redis {op} failed: {e}"))
}

fn ttl_ms(ttl: Duration) -> u64 {
    // PX 0 is an error in Redis; a zero TTL means "expire as soon as possible".
    (ttl.as_millis() as u64).max(1)
}

impl RedisRegistry {
    /// Connects to the Redis at `url`, keeping every key under `prefix`. Fails once, with
    /// one clear error, when Redis cannot be reached now; later outages surface as
    /// [`RegistryError::Unavailable`] on the calls they affect while the connection is
    /// re-established in the background.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, RegistryError> {
        let target = RedisTarget::parse(url)
            .map_err(|e| RegistryError::Invalid(format!("the Redis URL is not valid: {e}")))?;
        let timeouts = RedisTimeouts {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(2),
            retries: 2,
            max_delay: Duration::from_secs(2),
        };
        let mut conn = RedisConn::connect(&target, &timeouts).await.map_err(|e| {
            RegistryError::Unavailable(format!("cannot reach Redis for the shard registry: {e}"))
        })?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| RegistryError::Unavailable(format!("Redis did not answer PING: {e}")))?;
        Ok(Self {
            conn,
            keys: Keys::new(prefix),
            scripts: Scripts::new(),
            reported: Mutex::new(HashSet::new()),
        })
    }

    /// [`ShardRegistry::refresh_pins`] on a cluster: the pins live in many slots, so each
    /// is its own command, sent concurrently (the connection pipelines them on the wire).
    async fn refresh_pins_spread(
        &self,
        conn: &mut RedisConn,
        shard: &str,
        rooms: &[String],
        ttl: u64,
    ) -> Result<(), RegistryError> {
        for batch in rooms.chunks(REFRESH_BATCH) {
            let mut index = self.scripts.index_pins.prepare_invoke();
            index.key(self.keys.pinned(shard)).arg(ttl);
            for room in batch {
                index.arg(room);
            }
            let () = index
                .invoke_async::<i64>(conn)
                .await
                .map(drop)
                .map_err(|e| unavailable("refresh_pins", e))?;
            let refreshes = batch.iter().map(|room| {
                let mut conn = conn.clone();
                let mut invocation = self.scripts.refresh_pin.prepare_invoke();
                invocation.key(self.keys.pin(room)).arg(shard).arg(ttl);
                async move { invocation.invoke_async::<i64>(&mut conn).await }
            });
            // Every pin gets its refresh even when one slot's master fails; the first
            // failure is reported.
            if let Some(e) = futures::future::join_all(refreshes)
                .await
                .into_iter()
                .find_map(Result::err)
            {
                return Err(unavailable("refresh_pins", e));
            }
        }
        Ok(())
    }

    /// Parses one entry; `None` (logged) when it is not a current-version `ShardInfo` for
    /// the id it is stored under.
    fn parse_entry(&self, id: &str, raw: &[u8]) -> Option<ShardInfo> {
        let parsed = serde_json::from_slice::<serde_json::Value>(raw)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|value| {
                let version = value.get("version").and_then(serde_json::Value::as_u64);
                if version != Some(u64::from(SCHEMA_VERSION)) {
                    return Err(format!(
                        "schema version {version:?}, this node reads {SCHEMA_VERSION}"
                    ));
                }
                serde_json::from_value::<ShardInfo>(value)
                    .map_err(|e| format!("does not parse: {e}"))
            })
            .and_then(|info| {
                if info.id == id {
                    Ok(info)
                } else {
                    Err(format!("is stored under id {id:?} but names {:?}", info.id))
                }
            });
        match parsed {
            Ok(info) => Some(info),
            Err(reason) => {
                self.report_skipped(id, raw, &reason);
                None
            }
        }
    }

    fn report_skipped(&self, id: &str, raw: &[u8], reason: &str) {
        metrics::counter!("surge_registry_entries_skipped_total").increment(1);
        let fingerprint = crate::registry::fingerprint(raw);
        let first = {
            let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
            if reported.len() >= MAX_REPORTED {
                // Bounded memory whatever gets written into Redis; the cost is that old
                // bad entries are reported again once.
                reported.clear();
            }
            reported.insert((id.to_owned(), fingerprint))
        };
        if first {
            tracing::warn!(
                shard = id,
                reason,
                "skipping an unreadable shard registry entry"
            );
        } else {
            tracing::debug!(
                shard = id,
                reason,
                "skipping an unreadable shard registry entry"
            );
        }
    }
}

#[async_trait]
impl ShardRegistry for RedisRegistry {
    async fn heartbeat(&self, info: &ShardInfo, ttl: Duration) -> Result<bool, RegistryError> {
        let json = serde_json::to_string(info)
            .map_err(|e| RegistryError::Invalid(format!("cannot encode the shard entry: {e}")))?;
        let mut conn = self.conn.clone();
        let drain: i64 = self
            .scripts
            .heartbeat
            .key(&self.keys.shards)
            .key(&self.keys.deadlines)
            .key(&self.keys.drains)
            .arg(&info.id)
            .arg(json)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable("heartbeat", e))?;
        Ok(drain == 1)
    }

    async fn deregister(&self, id: &str) -> Result<(), RegistryError> {
        let mut conn = self.conn.clone();
        let () = redis::pipe()
            .atomic()
            .hdel(&self.keys.shards, id)
            .ignore()
            .zrem(&self.keys.deadlines, id)
            .ignore()
            .hdel(&self.keys.drains, id)
            .ignore()
            .del(self.keys.pinned(id))
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable("deregister", e))?;
        Ok(())
    }

    async fn live_shards(&self) -> Result<Vec<ShardInfo>, RegistryError> {
        let mut conn = self.conn.clone();
        let flat: Vec<redis::Value> = self
            .scripts
            .live_shards
            .key(&self.keys.shards)
            .key(&self.keys.deadlines)
            .key(&self.keys.drains)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable("live_shards", e))?;
        let mut shards = Vec::with_capacity(flat.len() / 3);
        for triple in flat.chunks_exact(3) {
            let (redis::Value::BulkString(id), redis::Value::BulkString(raw), drain) =
                (&triple[0], &triple[1], &triple[2])
            else {
                continue;
            };
            let id = String::from_utf8_lossy(id);
            if let Some(mut info) = self.parse_entry(&id, raw) {
                if matches!(drain, redis::Value::Int(1)) {
                    info.state = ShardState::Draining;
                }
                shards.push(info);
            }
        }
        shards.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(shards)
    }

    async fn request_drain(&self, id: &str) -> Result<bool, RegistryError> {
        let mut conn = self.conn.clone();
        let known: i64 = self
            .scripts
            .request_drain
            .key(&self.keys.shards)
            .key(&self.keys.deadlines)
            .key(&self.keys.drains)
            .arg(id)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable("request_drain", e))?;
        Ok(known == 1)
    }

    async fn room_pin(&self, room: &str) -> Result<Option<String>, RegistryError> {
        let mut conn = self.conn.clone();
        conn.get(self.keys.pin(room))
            .await
            .map_err(|e| unavailable("room_pin", e))
    }

    async fn pin_room(
        &self,
        room: &str,
        shard: &str,
        replace: Option<&str>,
        ttl: Duration,
    ) -> Result<String, RegistryError> {
        let mut conn = self.conn.clone();
        let winner: String = self
            .scripts
            .pin_room
            .key(self.keys.pin(room))
            .arg(shard)
            .arg(ttl_ms(ttl))
            .arg(if replace.is_some() { "1" } else { "0" })
            .arg(replace.unwrap_or_default())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable("pin_room", e))?;
        if winner == shard {
            // A separate step: the pin and the index live in different slots on Redis
            // Cluster. Losing it only makes the count a little low for a while.
            let indexed: Result<i64, _> = self
                .scripts
                .index_pins
                .key(self.keys.pinned(shard))
                .arg(ttl_ms(ttl))
                .arg(room)
                .invoke_async(&mut conn)
                .await;
            if let Err(e) = indexed {
                tracing::debug!(%e, "could not index a new pin");
            }
        }
        Ok(winner)
    }

    async fn refresh_pins(
        &self,
        shard: &str,
        rooms: &[String],
        ttl: Duration,
    ) -> Result<(), RegistryError> {
        let mut conn = self.conn.clone();
        let ttl = ttl_ms(ttl);
        if conn.is_cluster() {
            return self.refresh_pins_spread(&mut conn, shard, rooms, ttl).await;
        }
        for batch in rooms.chunks(REFRESH_BATCH) {
            // Loading the script in the same pipeline keeps it working after a Redis
            // restart flushed the script cache.
            let mut pipe = redis::pipe();
            pipe.load_script(&self.scripts.refresh_pin).ignore();
            pipe.load_script(&self.scripts.index_pins).ignore();
            let mut index = self.scripts.index_pins.prepare_invoke();
            index.key(self.keys.pinned(shard)).arg(ttl);
            for room in batch {
                index.arg(room);
            }
            pipe.invoke_script(&index).ignore();
            let invocations: Vec<_> = batch
                .iter()
                .map(|room| {
                    let mut invocation = self.scripts.refresh_pin.prepare_invoke();
                    invocation.key(self.keys.pin(room)).arg(shard).arg(ttl);
                    invocation
                })
                .collect();
            for invocation in &invocations {
                pipe.invoke_script(invocation).ignore();
            }
            let () = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable("refresh_pins", e))?;
        }
        Ok(())
    }

    async fn pinned_rooms(&self, shards: &[String]) -> Result<Vec<u32>, RegistryError> {
        if shards.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.pinned_counts.prepare_invoke();
        for shard in shards {
            invocation.key(self.keys.pinned(shard));
        }
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable("pinned_rooms", e))
    }
}
