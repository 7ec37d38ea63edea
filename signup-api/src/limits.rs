//! Rate limits, cheapest first: a local per-IP limit in this process (governor), then a
//! per-IP limit and a global signup rate shared by every replica through Redis (GCRA in one
//! Lua script). When Redis does not answer the shared check is skipped (logged once,
//! counted) and the local limits alone hold until Redis is back; no request waits on a
//! dead Redis for more than its short response timeout, and for a second after a failure
//! Redis is not even asked. On Redis Cluster the same holds while a failed master's replica
//! takes over: the checks that fail in between fall back to the local limits.
//!
//! Keys: `Prl:<action>:<ip|acct>:<hex>` (one per client or account) and, for signups,
//! `Prl:{signup}:ip:<hex>` and `Prl:{signup}:global`: a signup checks its client's key and
//! the global one in one script, so both carry the `{signup}` hash tag and share a slot on
//! Redis Cluster (every signup hits the global key's slot anyway).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use surge_cluster::redis_conn::{RedisConn, RedisTarget, RedisTimeouts, RedisUrlError};

/// A rate: `per_minute` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const OFF: Self = Self {
        per_minute: 0,
        burst: 0,
    };

    fn quota(self) -> Option<Quota> {
        let per_minute = NonZeroU32::new(self.per_minute)?;
        let burst = NonZeroU32::new(self.burst.max(1))?;
        Some(Quota::per_minute(per_minute).allow_burst(burst))
    }

    /// Microseconds between two requests at the sustained rate.
    fn interval_us(self) -> u64 {
        60_000_000 / u64::from(self.per_minute.max(1))
    }
}

/// What is being limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Per client address.
    Signup,
    /// Per client address.
    Login,
    /// Per account: rooms it creates.
    CreateRoom,
    /// Per account: joins (and rejoins) it makes.
    Join,
    /// Per account: presence heartbeats (status changes included).
    Heartbeat,
    /// Per account: contact requests (each one looks an email up).
    ContactRequest,
    /// Per account: presence-stream tickets.
    StreamTicket,
    /// Per account: calls placed and add-to-call requests (one each, of up to 8 callees).
    Ring,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Self::Signup => "signup",
            Self::Login => "login",
            Self::CreateRoom => "create_room",
            Self::Join => "join",
            Self::Heartbeat => "heartbeat",
            Self::ContactRequest => "contact_request",
            Self::StreamTicket => "stream_ticket",
            Self::Ring => "ring",
        }
    }

    /// What the action is keyed on (part of the Redis key).
    fn subject(self) -> &'static str {
        match self {
            Self::Signup | Self::Login => "ip",
            Self::CreateRoom
            | Self::Join
            | Self::Heartbeat
            | Self::ContactRequest
            | Self::StreamTicket
            | Self::Ring => "acct",
        }
    }
}

/// Refused: come back after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited; retry in {retry_after:?}")]
pub struct Limited {
    pub retry_after: Duration,
}

/// The limits' configuration; a rate of 0 per minute disables that limit.
#[derive(Debug, Clone, Copy)]
pub struct LimitsConfig {
    pub signup_per_ip: Rate,
    pub login_per_ip: Rate,
    /// All signups, all clients, all replicas.
    pub signup_global: Rate,
    /// Rooms one account creates.
    pub create_room_per_account: Rate,
    /// Joins one account makes.
    pub join_per_account: Rate,
    /// Presence heartbeats one account sends.
    pub heartbeat_per_account: Rate,
    /// Contact requests one account sends.
    pub contact_request_per_account: Rate,
    /// Presence-stream tickets one account takes.
    pub stream_ticket_per_account: Rate,
    /// People one account rings.
    pub ring_per_account: Rate,
}

/// The key of a client: IPv4 addresses whole, IPv6 by /64 (one subscriber usually gets a
/// whole /64, so keying by full address would let one client rotate through 2^64 keys).
pub fn client_key(ip: Option<IpAddr>) -> u128 {
    match ip {
        None => 0,
        Some(IpAddr::V4(v4)) => u128::from(v4.to_bits()),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_bits()),
            None => v6.to_bits() & !u128::from(u64::MAX),
        },
    }
}

/// The key of an account: the first 128 bits of SHA-256 of its id, the same on every
/// replica.
pub fn account_key(account_id: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(account_id.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

fn key_text(key: u128) -> String {
    format!("{key:032x}")
}

struct Local {
    signup_ip: Option<DefaultKeyedRateLimiter<u128>>,
    login_ip: Option<DefaultKeyedRateLimiter<u128>>,
    create_room_account: Option<DefaultKeyedRateLimiter<u128>>,
    join_account: Option<DefaultKeyedRateLimiter<u128>>,
    heartbeat_account: Option<DefaultKeyedRateLimiter<u128>>,
    contact_request_account: Option<DefaultKeyedRateLimiter<u128>>,
    stream_ticket_account: Option<DefaultKeyedRateLimiter<u128>>,
    ring_account: Option<DefaultKeyedRateLimiter<u128>>,
    signup_global: Option<DefaultDirectRateLimiter>,
}

impl Local {
    /// Every keyed limiter that is switched on.
    fn keyed(&self) -> impl Iterator<Item = &DefaultKeyedRateLimiter<u128>> {
        [
            &self.signup_ip,
            &self.login_ip,
            &self.create_room_account,
            &self.join_account,
            &self.heartbeat_account,
            &self.contact_request_account,
            &self.stream_ticket_account,
            &self.ring_account,
        ]
        .into_iter()
        .flatten()
    }
}

/// The GCRA over any number of keys, all-or-nothing: the request is counted against every
/// key only when every key allows it. Answers 0 (allowed) or the microseconds to wait.
/// Time comes from the Redis server, so replicas with skewed clocks agree.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tau = interval * tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - tau
  if allow_at > now then
    if allow_at - now > wait then wait = allow_at - now end
  end
  tats[i] = new_tat
end
if wait > 0 then return math.floor(wait) end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.0f', tats[i]), 'PX', math.floor((tats[i] - now) / 1000) + 1000)
end
return 0
";

struct Shared {
    conn: RedisConn,
    prefix: String,
    script: redis::Script,
    /// Set while Redis is considered down: the shared check is skipped until then.
    down_until: Mutex<Option<Instant>>,
}

/// Local and shared rate limits.
#[derive(Clone)]
pub struct Limits {
    config: LimitsConfig,
    local: Arc<Local>,
    shared: Option<Arc<Shared>>,
}

/// How long Redis may take to answer before a request goes on without it.
const REDIS_TIMEOUT: Duration = Duration::from_millis(300);

/// The connection settings every Redis user in the API shares: short timeouts and one
/// retry, so a dead Redis costs a request at most a few hundred milliseconds.
pub(crate) const REDIS_TIMEOUTS: RedisTimeouts = RedisTimeouts {
    connect: REDIS_TIMEOUT,
    response: REDIS_TIMEOUT,
    retries: 1,
    max_delay: Duration::from_secs(2),
};

/// How long Redis is left alone after a failed command.
const REDIS_BACKOFF: Duration = Duration::from_secs(1);

impl Limits {
    /// Local limits only, or local plus shared when `redis` is given.
    pub fn new(config: LimitsConfig, redis: Option<(RedisConn, String)>) -> Self {
        let local = Local {
            signup_ip: config
                .signup_per_ip
                .quota()
                .map(DefaultKeyedRateLimiter::keyed),
            login_ip: config
                .login_per_ip
                .quota()
                .map(DefaultKeyedRateLimiter::keyed),
            create_room_account: config
                .create_room_per_account
                .quota()
                .map(DefaultKeyedRateLimiter::keyed),
            join_account: config
                .join_per_account
                .quota()
                .map(DefaultKeyedRateLimiter::keyed),
            heartbeat_account: config
                .heartbeat_per_account
                .quota()
                .map(DefaultKeyedRateLimiter::keyed),
            contact_request_account: config
                .contact_request_per_account
                .quota()
                .map(DefaultKeyedRateLimiter::keyed),
            stream_ticket_account: config
                .stream_ticket_per_account
                .quota()
                .map(DefaultKeyedRateLimiter::keyed),
            ring_account: config
                .ring_per_account
                .quota()
                .map(DefaultKeyedRateLimiter::keyed),
            signup_global: config
                .signup_global
                .quota()
                .map(DefaultDirectRateLimiter::direct),
        };
        Self {
            config,
            local: Arc::new(local),
            shared: redis.map(|(conn, prefix)| {
                Arc::new(Shared {
                    conn,
                    prefix,
                    script: redis::Script::new(GCRA_LUA),
                    down_until: Mutex::new(None),
                })
            }),
        }
    }

    /// Local plus shared limits on the Redis (or Redis Cluster) at `url` (connected
    /// lazily, with the short timeouts the API uses).
    pub fn with_redis_url(
        config: LimitsConfig,
        url: &str,
        prefix: &str,
    ) -> Result<Self, RedisUrlError> {
        let target = RedisTarget::parse(url)?;
        let conn = RedisConn::lazy(&target, &REDIS_TIMEOUTS)
            .map_err(|e| RedisUrlError::Invalid(e.to_string()))?;
        Ok(Self::new(config, Some((conn, prefix.to_owned()))))
    }

    /// Checks `action` for the client at `ip` against the local, then the shared limits.
    pub async fn check(&self, action: Action, ip: Option<IpAddr>) -> Result<(), Limited> {
        self.check_key(action, client_key(ip)).await
    }

    /// Checks a per-account `action` ([`Action::CreateRoom`], [`Action::Join`],
    /// [`Action::Heartbeat`], [`Action::ContactRequest`], [`Action::StreamTicket`], [`Action::Ring`]) for
    /// `account_id`, locally and then shared.
    pub async fn check_account(&self, action: Action, account_id: &str) -> Result<(), Limited> {
        self.check_key(action, account_key(account_id)).await
    }

    async fn check_key(&self, action: Action, key: u128) -> Result<(), Limited> {
        self.check_local(action, key).inspect_err(|_| {
            metrics::counter!("surge_api_rate_limited_total", "action" => action.name(), "layer" => "local")
                .increment(1);
        })?;
        if let Some(shared) = &self.shared {
            self.check_shared(shared, action, key).await.inspect_err(|_| {
                metrics::counter!("surge_api_rate_limited_total", "action" => action.name(), "layer" => "shared")
                    .increment(1);
            })?;
        }
        Ok(())
    }

    /// The in-process limits alone (the first line; also what holds while Redis is down).
    pub fn check_local(&self, action: Action, key: u128) -> Result<(), Limited> {
        let keyed = match action {
            Action::Signup => &self.local.signup_ip,
            Action::Login => &self.local.login_ip,
            Action::CreateRoom => &self.local.create_room_account,
            Action::Join => &self.local.join_account,
            Action::Heartbeat => &self.local.heartbeat_account,
            Action::ContactRequest => &self.local.contact_request_account,
            Action::StreamTicket => &self.local.stream_ticket_account,
            Action::Ring => &self.local.ring_account,
        };
        if let Some(limiter) = keyed
            && let Err(not_until) = limiter.check_key(&key)
        {
            return Err(Limited {
                retry_after: not_until.wait_time_from(limiter.clock().now()),
            });
        }
        if action == Action::Signup
            && let Some(limiter) = &self.local.signup_global
            && let Err(not_until) = limiter.check()
        {
            return Err(Limited {
                retry_after: not_until.wait_time_from(limiter.clock().now()),
            });
        }
        Ok(())
    }

    async fn check_shared(
        &self,
        shared: &Shared,
        action: Action,
        key: u128,
    ) -> Result<(), Limited> {
        {
            let down = shared
                .down_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if down.is_some_and(|until| Instant::now() < until) {
                return Ok(());
            }
        }
        let (ip_rate, global) = match action {
            Action::Signup => (self.config.signup_per_ip, Some(self.config.signup_global)),
            Action::Login => (self.config.login_per_ip, None),
            Action::CreateRoom => (self.config.create_room_per_account, None),
            Action::Join => (self.config.join_per_account, None),
            Action::Heartbeat => (self.config.heartbeat_per_account, None),
            Action::ContactRequest => (self.config.contact_request_per_account, None),
            Action::StreamTicket => (self.config.stream_ticket_per_account, None),
            Action::Ring => (self.config.ring_per_account, None),
        };
        let mut invocation = shared.script.prepare_invoke();
        let mut any = false;
        // The keys one script touches together share a hash tag (see the module docs).
        let scope = if global.is_some() {
            format!("{{{}}}", action.name())
        } else {
            action.name().to_owned()
        };
        if ip_rate.per_minute > 0 {
            invocation
                .key(format!(
                    "{}rl:{scope}:{}:{}",
                    shared.prefix,
                    action.subject(),
                    key_text(key)
                ))
                .arg(ip_rate.interval_us())
                .arg(ip_rate.burst.max(1));
            any = true;
        }
        if let Some(rate) = global.filter(|r| r.per_minute > 0) {
            invocation
                .key(format!("{}rl:{scope}:global", shared.prefix))
                .arg(rate.interval_us())
                .arg(rate.burst.max(1));
            any = true;
        }
        if !any {
            return Ok(());
        }
        let mut conn = shared.conn.clone();
        match invocation.invoke_async::<u64>(&mut conn).await {
            Ok(0) => {
                self.mark_up(shared);
                Ok(())
            }
            Ok(wait_us) => {
                self.mark_up(shared);
                Err(Limited {
                    retry_after: Duration::from_micros(wait_us),
                })
            }
            Err(e) => {
                let mut down = shared
                    .down_until
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if down.is_none() {
                    tracing::warn!(error = %e, "Redis unreachable: rate limits fall back to this process's local limits");
                }
                *down = Some(Instant::now() + REDIS_BACKOFF);
                metrics::counter!("surge_api_redis_fallback_total").increment(1);
                metrics::gauge!("surge_api_redis_up").set(0.0);
                Ok(())
            }
        }
    }

    fn mark_up(&self, shared: &Shared) {
        let mut down = shared
            .down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if down.take().is_some() {
            tracing::info!("Redis answers again: shared rate limits resumed");
            metrics::gauge!("surge_api_redis_up").set(1.0);
        }
    }

    /// Drops per-IP state of clients idle long enough to be back at full burst, so a spray
    /// of addresses cannot grow memory without bound. Call periodically.
    pub fn evict_idle(&self) {
        for limiter in self.local.keyed() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Number of per-IP keys held in memory (tests and metrics).
    pub fn local_keys(&self) -> usize {
        self.local.keyed().map(|l| l.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn ipv6_is_keyed_by_64() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(Some(a.into())), client_key(Some(b.into())));
        assert_ne!(client_key(Some(a.into())), client_key(Some(c.into())));
        let v4 = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(
            client_key(Some(v4.into())),
            client_key(Some(v4.to_ipv6_mapped().into()))
        );
    }

    #[tokio::test]
    async fn local_limits_hold_per_client() {
        let limits = Limits::new(
            LimitsConfig {
                signup_per_ip: Rate {
                    per_minute: 1,
                    burst: 3,
                },
                login_per_ip: Rate {
                    per_minute: 0,
                    burst: 0,
                },
                signup_global: Rate::OFF,
                create_room_per_account: Rate {
                    per_minute: 1,
                    burst: 2,
                },
                join_per_account: Rate::OFF,
                heartbeat_per_account: Rate::OFF,
                contact_request_per_account: Rate::OFF,
                stream_ticket_per_account: Rate::OFF,
                ring_per_account: Rate::OFF,
            },
            None,
        );
        let ip = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        for _ in 0..3 {
            limits.check(Action::Signup, ip).await.unwrap();
        }
        let limited = limits.check(Action::Signup, ip).await.unwrap_err();
        assert!(limited.retry_after > Duration::from_secs(1));
        limits
            .check(Action::Signup, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))))
            .await
            .unwrap();
        // Logins are unlimited here.
        for _ in 0..10 {
            limits.check(Action::Login, ip).await.unwrap();
        }
        assert_eq!(limits.local_keys(), 2);
        // Room creation is limited per account, whatever address it comes from.
        for _ in 0..2 {
            limits
                .check_account(Action::CreateRoom, "acct-a")
                .await
                .unwrap();
        }
        assert!(
            limits
                .check_account(Action::CreateRoom, "acct-a")
                .await
                .is_err()
        );
        limits
            .check_account(Action::CreateRoom, "acct-b")
            .await
            .unwrap();
        limits.check_account(Action::Join, "acct-a").await.unwrap();
    }
}
