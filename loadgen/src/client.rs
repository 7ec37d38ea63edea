//! A thin HTTP client for the Surge API: spreads connections over several local source
//! addresses (so per-client limits, directly or behind a proxy, see many users), speaks
//! HTTPS (trusting an extra CA for a staging certificate), classifies each attempt, and
//! retries after `Retry-After` the way a well-behaved client does.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::RngExt;
use reqwest::{Client, Method, StatusCode};
use serde::Serialize;
use tokio::time::Instant;

use crate::stats::AttemptOutcome;

/// Errors building the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("building the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
    #[error("--ca-cert {path}: {reason}")]
    CaCert { path: String, reason: String },
}

/// Most source addresses one run spreads over.
const MAX_SOURCE_IPS: usize = 1024;

/// The local addresses the HTTP clients bind, used round-robin; empty lets the OS choose.
///
/// Parsed from `--source-ips`: a count `N` (1: the OS chooses; more: `127.0.0.1..=127.0.0.N`),
/// or a comma-separated list of addresses and IPv4 ranges, e.g.
/// `127.0.0.2,127.0.0.3` or `127.0.0.2-127.0.0.9`. Every address of 127.0.0.0/8 is local on
/// Linux, so a flood through a proxy on 127.0.0.1 arrives from many clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceIps(Vec<IpAddr>);

impl SourceIps {
    /// `127.0.0.1..=127.0.0.n` (no binding at all for `n` ≤ 1).
    pub fn count(n: usize) -> Self {
        if n <= 1 {
            return Self::default();
        }
        Self(
            (1..=n.min(254))
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)))
                .collect(),
        )
    }

    pub fn addrs(&self) -> &[IpAddr] {
        &self.0
    }
}

impl FromStr for SourceIps {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(n) = text.parse::<usize>() {
            return if (1..=254).contains(&n) {
                Ok(Self::count(n))
            } else {
                Err(format!("a count must be between 1 and 254, got {n}"))
            };
        }
        let mut addrs = Vec::new();
        for item in text.split(',').map(str::trim) {
            match item.split_once('-') {
                Some((first, last)) => {
                    let parse = |s: &str| {
                        s.trim().parse::<Ipv4Addr>().map_err(|_| {
                            format!("{s:?} in the range {item:?} is not an IPv4 address")
                        })
                    };
                    let (first, last) = (parse(first)?.to_bits(), parse(last)?.to_bits());
                    if last < first || (last - first) as usize >= MAX_SOURCE_IPS {
                        return Err(format!(
                            "the range {item:?} must go upwards and span at most {MAX_SOURCE_IPS} addresses"
                        ));
                    }
                    addrs.extend((first..=last).map(|b| IpAddr::V4(Ipv4Addr::from_bits(b))));
                }
                None => {
                    addrs.push(item.parse::<IpAddr>().map_err(|_| {
                        format!("{item:?} is not an IP address, a range or a count")
                    })?)
                }
            }
            if addrs.len() > MAX_SOURCE_IPS {
                return Err(format!("at most {MAX_SOURCE_IPS} source addresses"));
            }
        }
        Ok(Self(addrs))
    }
}

/// One attempt's result.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When the attempt was meant to start; latency is measured from here.
    pub scheduled: Instant,
    pub completed: Instant,
    pub outcome: AttemptOutcome,
    /// The server's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
    /// The `error.code` of a JSON error body.
    pub code: Option<String>,
    /// The body of a successful response (parsed lazily by the caller).
    pub body: Option<serde_json::Value>,
}

impl Attempt {
    pub fn latency(&self) -> Duration {
        self.completed.saturating_duration_since(self.scheduled)
    }

    pub fn status(&self) -> Option<u16> {
        match self.outcome {
            AttemptOutcome::Status(s) => Some(s),
            _ => None,
        }
    }
}

/// How to retry shed requests.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: never retry).
    pub max_retries: u32,
    /// A `Retry-After` longer than this is not waited for: the request gives up.
    pub max_wait: Duration,
    /// Extra random delay, as a share of the wait, so retries do not arrive in lockstep.
    pub jitter: f64,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based), or `None` to give up.
    pub fn wait(&self, retry: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if retry > self.max_retries {
            return None;
        }
        // Without a Retry-After, back off exponentially from half a second.
        let base = retry_after
            .unwrap_or_else(|| Duration::from_millis(500) * 2u32.saturating_pow(retry - 1));
        if base > self.max_wait {
            return None;
        }
        let jitter = if self.jitter > 0.0 {
            base.mul_f64(rand::rng().random_range(0.0..self.jitter))
        } else {
            Duration::ZERO
        };
        Some(base + jitter)
    }
}

/// One request to send (and perhaps resend).
#[derive(Debug)]
pub struct Request<'a, B: ?Sized> {
    pub method: Method,
    /// A path under the base URL, or an absolute URL (signalling URLs are absolute).
    pub path: &'a str,
    pub bearer: Option<&'a str>,
    /// Sent as `Idempotency-Key`, the same on every retry, so a retry of a request that
    /// did succeed gets its original answer replayed instead of a 409.
    pub idempotency_key: Option<&'a str>,
    pub body: Option<&'a B>,
}

/// HTTP clients bound to different source addresses, used round-robin.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    clients: Vec<Client>,
    next: std::sync::Arc<AtomicUsize>,
}

impl ApiClient {
    /// One client per source address (one unbound client when there are none); each trusts
    /// the PEM certificates in `ca_cert` besides the system's roots.
    pub fn new(
        base: &str,
        sources: &SourceIps,
        timeout: Duration,
        ca_cert: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let roots = match ca_cert {
            Some(path) => read_certs(path)?,
            None => Vec::new(),
        };
        let binds: Vec<Option<IpAddr>> = if sources.addrs().is_empty() {
            vec![None]
        } else {
            sources.addrs().iter().copied().map(Some).collect()
        };
        let clients = binds
            .into_iter()
            .map(|bind| {
                Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .tcp_nodelay(true)
                    .pool_idle_timeout(Duration::from_secs(30))
                    .user_agent(concat!("surge-loadgen/", env!("CARGO_PKG_VERSION")))
                    .local_address(bind)
                    .tls_certs_merge(roots.clone())
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            clients,
            next: Default::default(),
        })
    }

    /// One of the clients (round-robin), for callers that make their own requests.
    pub fn http(&self) -> Client {
        self.pick().clone()
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn pick(&self) -> &Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }

    /// One request; never fails: transport problems become an [`AttemptOutcome`].
    pub async fn send<B: Serialize + ?Sized>(
        &self,
        request: &Request<'_, B>,
        scheduled: Instant,
    ) -> Attempt {
        let path = request.path;
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        };
        let mut req = self.pick().request(request.method.clone(), url);
        if let Some(token) = request.bearer {
            req = req.bearer_auth(token);
        }
        if let Some(key) = request.idempotency_key {
            req = req.header("idempotency-key", key);
        }
        if let Some(body) = request.body {
            req = req.json(body);
        }
        let result = req.send().await;
        let (outcome, retry_after, json) = match result {
            Ok(resp) => {
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                // A body that is not JSON (or cut short) is fine: we only want the code.
                let json = match resp.bytes().await {
                    Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes).ok(),
                    Err(e) if e.is_timeout() => {
                        return self.failed(scheduled, AttemptOutcome::Timeout);
                    }
                    Err(_) => None,
                };
                (AttemptOutcome::Status(status.as_u16()), retry_after, json)
            }
            Err(e) if e.is_timeout() => return self.failed(scheduled, AttemptOutcome::Timeout),
            Err(e) => {
                tracing::debug!(error = %e, "transport error");
                return self.failed(scheduled, AttemptOutcome::Transport);
            }
        };
        let completed = Instant::now();
        let ok = matches!(outcome, AttemptOutcome::Status(s) if StatusCode::from_u16(s).is_ok_and(|s| s.is_success()));
        let code = json
            .as_ref()
            .and_then(|j| j.pointer("/error/code"))
            .and_then(|c| c.as_str())
            .map(str::to_owned);
        Attempt {
            scheduled,
            completed,
            outcome,
            retry_after,
            code,
            body: if ok { json } else { None },
        }
    }

    fn failed(&self, scheduled: Instant, outcome: AttemptOutcome) -> Attempt {
        Attempt {
            scheduled,
            completed: Instant::now(),
            outcome,
            retry_after: None,
            code: None,
            body: None,
        }
    }

    /// Logs in (`POST /v1/sessions`), retrying under `policy`; returns the last attempt and
    /// the session token when it succeeded.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        policy: RetryPolicy,
        on_attempt: impl FnMut(&Attempt, u32),
    ) -> (Attempt, Option<String>) {
        #[derive(Serialize)]
        struct Login<'a> {
            email: &'a str,
            password: &'a str,
        }
        let (last, _) = self
            .send_with_retries(
                &Request {
                    method: Method::POST,
                    path: "/v1/sessions",
                    bearer: None,
                    idempotency_key: None,
                    body: Some(&Login { email, password }),
                },
                Instant::now(),
                policy,
                on_attempt,
            )
            .await;
        let token = last
            .body
            .as_ref()
            .and_then(|b| b.get("token"))
            .and_then(|t| t.as_str())
            .map(str::to_owned);
        (last, token)
    }

    /// Sends, and on 429/503 waits as told and tries again under `policy`. `on_attempt`
    /// sees every attempt (for the statistics). Returns the last attempt.
    pub async fn send_with_retries<B: Serialize + ?Sized>(
        &self,
        request: &Request<'_, B>,
        first_scheduled: Instant,
        policy: RetryPolicy,
        mut on_attempt: impl FnMut(&Attempt, u32),
    ) -> (Attempt, u32) {
        let mut scheduled = first_scheduled;
        let mut retry = 0;
        loop {
            let attempt = self.send(request, scheduled).await;
            on_attempt(&attempt, retry);
            let shed = matches!(attempt.status(), Some(429 | 503));
            if !shed {
                return (attempt, retry);
            }
            match policy.wait(retry + 1, attempt.retry_after) {
                Some(wait) => {
                    retry += 1;
                    scheduled = attempt.completed + wait;
                    tokio::time::sleep_until(scheduled).await;
                }
                None => return (attempt, retry),
            }
        }
    }
}

fn read_certs(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let error = |reason: String| ClientError::CaCert {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no PEM certificate in it".to_owned()));
    }
    Ok(certs)
}

/// `Retry-After` as delta-seconds (the form Surge sends); HTTP dates count as one second.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    match value.parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs.min(86_400))),
        Err(_) => Some(Duration::from_secs(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_parses() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(parse_retry_after(""), None);
    }

    #[test]
    fn retry_policy_is_bounded() {
        let p = RetryPolicy {
            max_retries: 2,
            max_wait: Duration::from_secs(10),
            jitter: 0.0,
        };
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(p.wait(2, None), Some(Duration::from_secs(1)));
        assert_eq!(p.wait(3, Some(Duration::from_secs(1))), None);
        assert_eq!(p.wait(1, Some(Duration::from_secs(11))), None);
        let j = RetryPolicy { jitter: 0.5, ..p };
        let w = j.wait(1, Some(Duration::from_secs(2))).unwrap();
        assert!(w >= Duration::from_secs(2) && w < Duration::from_secs(3));
    }

    #[test]
    fn source_ips_parse_counts_lists_and_ranges() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!("1".parse::<SourceIps>().unwrap(), SourceIps::default());
        assert_eq!(
            "3".parse::<SourceIps>().unwrap().addrs(),
            [ip("127.0.0.1"), ip("127.0.0.2"), ip("127.0.0.3")]
        );
        assert_eq!(
            "127.0.0.2, 127.0.0.5-127.0.0.7,::1"
                .parse::<SourceIps>()
                .unwrap()
                .addrs(),
            [
                ip("127.0.0.2"),
                ip("127.0.0.5"),
                ip("127.0.0.6"),
                ip("127.0.0.7"),
                ip("::1")
            ]
        );
        for bad in [
            "0",
            "255",
            "127.0.0.9-127.0.0.2",
            "localhost",
            "127.0.0.1-::1",
            "10.0.0.0-10.1.0.0",
            "",
        ] {
            assert!(bad.parse::<SourceIps>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn clients_are_built_per_source_address() {
        let sources: SourceIps = "127.0.0.2-127.0.0.5".parse().unwrap();
        let api = ApiClient::new(
            "http://127.0.0.1:1/",
            &sources,
            Duration::from_secs(1),
            None,
        )
        .unwrap();
        assert_eq!(api.clients.len(), 4);
        assert_eq!(api.base(), "http://127.0.0.1:1");
        let missing = ApiClient::new(
            "https://127.0.0.1:1",
            &SourceIps::default(),
            Duration::from_secs(1),
            Some(Path::new("/nonexistent/ca.pem")),
        )
        .unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("--ca-cert /nonexistent/ca.pem"),
            "{missing}"
        );
    }
}
