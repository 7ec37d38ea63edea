//! Per-account login backoff: after a few wrong passwords for one email, further attempts
//! for that email wait, the wait doubling with each failure up to a ceiling, whatever
//! address they come from. The per-address limit cannot stop a botnet that guesses one
//! account's password from many addresses; this does.
//!
//! Failures are counted in this process and, when Redis is configured, in Redis too, so
//! every replica sees the same count; while Redis does not answer the local count alone
//! holds. The key is a digest of the normalised email (unknown emails are throttled the
//! same way as real ones, so the answer says nothing about which accounts exist).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use surge_cluster::redis_conn::RedisConn;

use crate::limits::{Limited, account_key};

/// How the backoff grows.
#[derive(Debug, Clone, Copy)]
pub struct BackoffConfig {
    /// Failures allowed before any wait.
    pub free_failures: u32,
    /// The wait after the first failure beyond the free ones; doubles with each further one.
    pub first_wait: Duration,
    /// The longest wait.
    pub max_wait: Duration,
    /// An email with no failure for this long starts from zero again.
    pub forget_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            free_failures: 5,
            first_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(300),
            forget_after: Duration::from_secs(3600),
        }
    }
}

impl BackoffConfig {
    /// The wait after `failures` consecutive failures.
    fn wait_after(&self, failures: u32) -> Duration {
        let Some(beyond) = failures.checked_sub(self.free_failures + 1) else {
            return Duration::ZERO;
        };
        let factor = 1u32.checked_shl(beyond.min(31)).unwrap_or(u32::MAX);
        self.first_wait
            .checked_mul(factor)
            .unwrap_or(self.max_wait)
            .min(self.max_wait)
    }
}

struct Entry {
    failures: u32,
    blocked_until: Instant,
    last_failure: Instant,
}

/// Most emails tracked in memory; past it, the oldest are forgotten first (the Redis
/// count, when there is one, still holds).
const MAX_LOCAL_ENTRIES: usize = 100_000;

/// Records a failure and answers the wait in milliseconds. Time comes from the Redis
/// server, so replicas with skewed clocks agree.
const FAIL_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local failures = redis.call('HINCRBY', KEYS[1], 'f', 1)
local free = tonumber(ARGV[1])
local wait = 0
if failures > free then
  wait = tonumber(ARGV[2]) * math.pow(2, math.min(failures - free - 1, 30))
  if wait > tonumber(ARGV[3]) then wait = tonumber(ARGV[3]) end
  redis.call('HSET', KEYS[1], 'u', string.format('%.0f', now + wait))
end
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[4]) + wait))
return math.floor(wait)
";

/// Answers how many milliseconds are left to wait (0: go ahead).
const CHECK_LUA: &str = r"
local until_ms = tonumber(redis.call('HGET', KEYS[1], 'u') or '0')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if until_ms > now then return until_ms - now end
return 0
";

struct Shared {
    conn: RedisConn,
    prefix: String,
    fail: redis::Script,
    check: redis::Script,
    down_until: Mutex<Option<Instant>>,
}

/// How long Redis is left alone after a failed command.
const REDIS_BACKOFF: Duration = Duration::from_secs(1);

/// The per-account login backoff.
pub struct LoginBackoff {
    config: BackoffConfig,
    local: Mutex<HashMap<u128, Entry>>,
    shared: Option<Shared>,
}

impl LoginBackoff {
    /// Local only, or local plus Redis when `redis` is given.
    pub fn new(config: BackoffConfig, redis: Option<(RedisConn, String)>) -> Self {
        Self {
            config,
            local: Mutex::new(HashMap::new()),
            shared: redis.map(|(conn, prefix)| Shared {
                conn,
                prefix,
                fail: redis::Script::new(FAIL_LUA),
                check: redis::Script::new(CHECK_LUA),
                down_until: Mutex::new(None),
            }),
        }
    }

    /// Refuses while `email` is in its backoff (before any password is hashed).
    pub async fn check(&self, email: &str) -> Result<(), Limited> {
        let key = account_key(email);
        let now = Instant::now();
        if let Some(entry) = self.lock().get(&key)
            && entry.blocked_until > now
        {
            return Err(Limited {
                retry_after: entry.blocked_until - now,
            });
        }
        let Some(shared) = self.available() else {
            return Ok(());
        };
        let mut conn = shared.conn.clone();
        let result = shared
            .check
            .key(redis_key(shared, key))
            .invoke_async::<u64>(&mut conn)
            .await;
        match result {
            Ok(0) => Ok(()),
            Ok(wait_ms) => Err(Limited {
                retry_after: Duration::from_millis(wait_ms),
            }),
            Err(e) => {
                self.mark_down(shared, &e);
                Ok(())
            }
        }
    }

    /// Counts a wrong password (or an unknown email) for `email`.
    pub async fn failed(&self, email: &str) {
        let key = account_key(email);
        let now = Instant::now();
        {
            let mut local = self.lock();
            if local.len() >= MAX_LOCAL_ENTRIES && !local.contains_key(&key) {
                forget_oldest(&mut local);
            }
            let entry = local.entry(key).or_insert(Entry {
                failures: 0,
                blocked_until: now,
                last_failure: now,
            });
            if now.duration_since(entry.last_failure) > self.config.forget_after {
                entry.failures = 0;
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last_failure = now;
            entry.blocked_until = now + self.config.wait_after(entry.failures);
        }
        metrics::counter!("surge_api_login_failures_total").increment(1);
        let Some(shared) = self.available() else {
            return;
        };
        let mut conn = shared.conn.clone();
        let result = shared
            .fail
            .key(redis_key(shared, key))
            .arg(self.config.free_failures)
            .arg(millis(self.config.first_wait))
            .arg(millis(self.config.max_wait))
            .arg(millis(self.config.forget_after))
            .invoke_async::<u64>(&mut conn)
            .await;
        if let Err(e) = result {
            self.mark_down(shared, &e);
        }
    }

    /// A successful login clears the count for `email`.
    pub async fn succeeded(&self, email: &str) {
        let key = account_key(email);
        self.lock().remove(&key);
        let Some(shared) = self.available() else {
            return;
        };
        let mut conn = shared.conn.clone();
        let result = redis::cmd("DEL")
            .arg(redis_key(shared, key))
            .query_async::<()>(&mut conn)
            .await;
        if let Err(e) = result {
            self.mark_down(shared, &e);
        }
    }

    /// Forgets emails with no failure for the forget period. Call periodically.
    pub fn evict_idle(&self) {
        let now = Instant::now();
        let forget = self.config.forget_after;
        self.lock()
            .retain(|_, e| now.duration_since(e.last_failure) <= forget);
    }

    /// Emails tracked in memory (tests and metrics).
    pub fn local_entries(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u128, Entry>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn available(&self) -> Option<&Shared> {
        let shared = self.shared.as_ref()?;
        let down = shared
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *down {
            Some(until) if Instant::now() < until => None,
            _ => Some(shared),
        }
    }

    fn mark_down(&self, shared: &Shared, e: &redis::RedisError) {
        tracing::debug!(error = %e, "Redis unreachable: login backoff counts locally");
        *shared
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + REDIS_BACKOFF);
    }
}

fn redis_key(shared: &Shared, key: u128) -> String {
    format!("{}lb:{key:032x}", shared.prefix)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn forget_oldest(local: &mut HashMap<u128, Entry>) {
    if let Some(oldest) = local
        .iter()
        .min_by_key(|(_, e)| e.last_failure)
        .map(|(k, _)| *k)
    {
        local.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_after_the_free_failures_up_to_the_ceiling() {
        let c = BackoffConfig::default();
        assert_eq!(c.wait_after(5), Duration::ZERO);
        assert_eq!(c.wait_after(6), Duration::from_secs(1));
        assert_eq!(c.wait_after(7), Duration::from_secs(2));
        assert_eq!(c.wait_after(10), Duration::from_secs(16));
        assert_eq!(c.wait_after(15), Duration::from_secs(300));
        assert_eq!(c.wait_after(u32::MAX), Duration::from_secs(300));
    }

    #[tokio::test]
    async fn failures_for_one_email_throttle_it_alone_and_a_success_clears_them() {
        let backoff = LoginBackoff::new(BackoffConfig::default(), None);
        for _ in 0..5 {
            backoff.check("a@example.com").await.unwrap();
            backoff.failed("a@example.com").await;
        }
        backoff.check("a@example.com").await.unwrap();
        backoff.failed("a@example.com").await;
        let limited = backoff.check("a@example.com").await.unwrap_err();
        assert!(limited.retry_after > Duration::from_millis(500));
        backoff.check("b@example.com").await.unwrap();
        backoff.succeeded("a@example.com").await;
        backoff.check("a@example.com").await.unwrap();
        assert_eq!(backoff.local_entries(), 0);
    }
}
