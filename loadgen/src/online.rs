//! New users staying online: each holds its presence stream until the run ends, as a
//! browser tab does. A single-use ticket from `POST /v1/presence/tickets`, then
//! `GET /v1/presence/stream?ticket=…` (Server-Sent Events) read until the end; a stream the
//! server or the network ends early is opened again, with a fresh ticket, as the web client
//! does. The streams open at any moment are the users online.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{ApiClient, Attempt, Request, RetryPolicy};
use crate::lock;
use crate::presence_stream::{self, StreamOpen};
use crate::sse::{SseBlock, SseParser};
use crate::stats::{LatencyHistogram, Mix, OutcomeClass, Percentiles};

/// The server sends a keep-alive comment every 15 s; a stream silent for this long is dead.
const STALL: Duration = Duration::from_secs(45);
/// Wait before opening a stream again after it ended early.
const REOPEN_AFTER: Duration = Duration::from_secs(1);
/// How often the users online are counted.
const SAMPLE: Duration = Duration::from_secs(1);

/// Users online at one moment of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OnlinePoint {
    /// Seconds since the run started.
    pub t: f64,
    /// New users who had logged in by then.
    pub logged_in: u64,
    /// Presence streams open then.
    pub online: u64,
}

/// What holding the streams measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OnlineResult {
    /// New users who logged in.
    pub logged_in: u64,
    /// Users who tried to hold a stream.
    pub holders: u64,
    /// Users whose stream opened at least once.
    pub held: u64,
    /// Users whose stream never opened (refused, failed, or still shed when retries ran out).
    pub never_online: u64,
    /// Status of every ticket request.
    pub ticket_status: Mix,
    /// 2xx ticket answers.
    pub ticket_latency: Percentiles,
    /// Status of every stream request: `"200"`, `"503"`, `"timeout"`, …
    pub stream_status: Mix,
    /// `error.code` of every refused ticket or stream, prefixed by its status.
    pub error_codes: Mix,
    /// Ticket request sent → the stream's `200` (both steps, retries included).
    pub stream_open: Percentiles,
    /// Streams that ended before the run did, by how: `closed`, `error`, `stalled`.
    pub drops: Mix,
    /// SSE events received, by name (`presence`, `contacts`, `incoming_call`, …).
    pub events: Mix,
    pub peak_online: u64,
    pub online_at_end: u64,
    pub timeline: Vec<OnlinePoint>,
}

impl OnlineResult {
    /// Tickets or streams answered with a 5xx other than 503, a timeout or a transport error.
    pub fn failures(&self) -> u64 {
        let failed = |mix: &Mix| {
            mix.0
                .iter()
                .filter(|(k, _)| {
                    (k.starts_with('5') && k.as_str() != "503")
                        || k.as_str() == "timeout"
                        || k.as_str() == "transport_error"
                })
                .map(|(_, v)| *v)
                .sum::<u64>()
        };
        failed(&self.ticket_status) + failed(&self.stream_status)
    }
}

#[derive(Default)]
struct Stats {
    ticket_status: Mix,
    ticket_latency: LatencyHistogram,
    stream_status: Mix,
    error_codes: Mix,
    stream_open: LatencyHistogram,
    drops: Mix,
    events: Mix,
    held: u64,
    never_online: u64,
    holders: u64,
    timeline: Vec<OnlinePoint>,
}

struct Shared {
    api: ApiClient,
    policy: RetryPolicy,
    start: Instant,
    end: Instant,
    online: AtomicU64,
    logged_in: AtomicU64,
    stats: Mutex<Stats>,
}

/// The streams of one run, from [`Online::start`] to [`Online::finish`].
pub struct Online {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
    sampler: tokio::task::JoinHandle<()>,
}

impl Online {
    /// Streams are held until `end`; tickets and shed streams are retried under `policy`.
    pub fn start(api: ApiClient, policy: RetryPolicy, start: Instant, end: Instant) -> Self {
        let shared = Arc::new(Shared {
            api,
            policy,
            start,
            end,
            online: AtomicU64::new(0),
            logged_in: AtomicU64::new(0),
            stats: Mutex::default(),
        });
        let sampler = tokio::spawn(sample(shared.clone()));
        Self {
            shared,
            tasks: JoinSet::new(),
            sampler,
        }
    }

    /// A new user logged in (whether or not it holds a stream).
    pub fn logged_in(&self) {
        self.shared.logged_in.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps the user of session `token` online until the end.
    pub fn hold(&mut self, token: String) {
        while self.tasks.try_join_next().is_some() {}
        if Instant::now() >= self.shared.end {
            return;
        }
        lock(&self.shared.stats).holders += 1;
        self.tasks.spawn(hold(self.shared.clone(), token));
    }

    /// Streams open now.
    pub fn online(&self) -> u64 {
        self.shared.online.load(Ordering::Relaxed)
    }

    /// Waits for the end (every stream closes then) and returns what was measured.
    pub async fn finish(mut self) -> OnlineResult {
        while self.tasks.join_next().await.is_some() {}
        let _ = (&mut self.sampler).await;
        let s = lock(&self.shared.stats);
        OnlineResult {
            logged_in: self.shared.logged_in.load(Ordering::Relaxed),
            holders: s.holders,
            held: s.held,
            never_online: s.never_online,
            ticket_status: s.ticket_status.clone(),
            ticket_latency: s.ticket_latency.percentiles(),
            stream_status: s.stream_status.clone(),
            error_codes: s.error_codes.clone(),
            stream_open: s.stream_open.percentiles(),
            drops: s.drops.clone(),
            events: s.events.clone(),
            peak_online: s.timeline.iter().map(|p| p.online).max().unwrap_or(0),
            online_at_end: s.timeline.last().map_or(0, |p| p.online),
            timeline: s.timeline.clone(),
        }
    }
}

/// Counts the users online every [`SAMPLE`] until the end.
async fn sample(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval_at(shared.start + SAMPLE, SAMPLE);
    loop {
        let now = tick.tick().await;
        let online = shared.online.load(Ordering::Relaxed);
        let mut s = lock(&shared.stats);
        s.timeline.push(OnlinePoint {
            t: now.saturating_duration_since(shared.start).as_secs_f64(),
            logged_in: shared.logged_in.load(Ordering::Relaxed),
            online,
        });
        if now >= shared.end {
            return;
        }
    }
}

/// One user's stream, opened again whenever it ends early, until the end.
async fn hold(shared: Arc<Shared>, token: String) {
    let mut ever = false;
    while Instant::now() < shared.end {
        let Some(response) = open(&shared, &token).await else {
            break;
        };
        if !ever {
            ever = true;
            lock(&shared.stats).held += 1;
        }
        shared.online.fetch_add(1, Ordering::Relaxed);
        let dropped = read(&shared, response).await;
        shared.online.fetch_sub(1, Ordering::Relaxed);
        let Some(how) = dropped else {
            break;
        };
        lock(&shared.stats).drops.add(how);
        tokio::time::sleep(REOPEN_AFTER).await;
    }
    if !ever {
        lock(&shared.stats).never_online += 1;
    }
}

fn record_refusal(stats: &mut Stats, a: &Attempt) {
    if let (Some(code), Some(status)) = (&a.code, a.status()) {
        stats.error_codes.add(format!("{status} {code}"));
    }
}

/// A ticket, then the stream; a shed stream (429/503) is retried with a fresh ticket (the
/// first was spent). `None` when the stream could not be opened.
async fn open(shared: &Shared, token: &str) -> Option<reqwest::Response> {
    let first = Instant::now();
    let mut retry = 0;
    loop {
        let (ticket, _) = shared
            .api
            .send_with_retries(
                &Request::<()> {
                    method: Method::POST,
                    path: "/v1/presence/tickets",
                    bearer: Some(token),
                    idempotency_key: None,
                    body: None,
                },
                Instant::now(),
                shared.policy,
                |a, _| {
                    let mut s = lock(&shared.stats);
                    s.ticket_status.add(a.outcome.key());
                    if a.outcome.class() == OutcomeClass::Accepted {
                        s.ticket_latency.record(a.latency());
                    } else {
                        record_refusal(&mut s, a);
                    }
                },
            )
            .await;
        // The client's per-request timeout would cut a stream short: this one lasts the run.
        let until_end = shared.end.saturating_duration_since(Instant::now()) + STALL;
        let opened = presence_stream::open(&shared.api, &ticket, until_end).await;
        let key = opened.key()?;
        let retry_after = match opened {
            StreamOpen::Opened(r) => {
                let mut s = lock(&shared.stats);
                s.stream_status.add(key);
                s.stream_open.record(first.elapsed());
                return Some(r);
            }
            StreamOpen::Refused {
                status,
                retry_after,
                code,
            } => {
                if let Some(code) = code {
                    lock(&shared.stats)
                        .error_codes
                        .add(format!("{status} {code}"));
                }
                retry_after
            }
            StreamOpen::Failed(_) | StreamOpen::NoTicket => None,
        };
        let shed = matches!(key.as_str(), "429" | "503");
        lock(&shared.stats).stream_status.add(key);
        retry += 1;
        let wait = shared.policy.wait(retry, retry_after).filter(|_| shed)?;
        if Instant::now() + wait >= shared.end {
            return None;
        }
        tokio::time::sleep(wait).await;
    }
}

/// Reads the stream until the end (`None`) or until it ends early (how it ended).
async fn read(shared: &Shared, response: reqwest::Response) -> Option<&'static str> {
    let mut body = response.bytes_stream();
    let mut events = EventNames::default();
    let end = tokio::time::sleep_until(shared.end);
    tokio::pin!(end);
    loop {
        let chunk = tokio::select! {
            () = &mut end => break None,
            chunk = tokio::time::timeout(STALL, body.next()) => chunk,
        };
        match chunk {
            Ok(Some(Ok(bytes))) => {
                let names = events.feed(&bytes);
                if !names.is_empty() {
                    let mut s = lock(&shared.stats);
                    for name in names {
                        s.events.add(name);
                    }
                }
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "presence stream broke");
                break Some("error");
            }
            Ok(None) => break Some("closed"),
            Err(_) => break Some("stalled"),
        }
    }
}

/// The `event:` names of an SSE byte stream, whatever the chunking.
#[derive(Default)]
struct EventNames(SseParser);

impl EventNames {
    fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.0
            .feed(bytes)
            .into_iter()
            .filter_map(|block| match block {
                SseBlock::Event { name } => name,
                SseBlock::Comment => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_survive_any_chunking() {
        let text =
            b": keep-alive\n\nevent: presence\ndata: {\"a\":1}\n\nevent:contacts\r\ndata: x\n\n";
        for split in 0..text.len() {
            let mut e = EventNames::default();
            let mut names = e.feed(&text[..split]);
            names.extend(e.feed(&text[split..]));
            assert_eq!(names, vec!["presence", "contacts"], "split at {split}");
        }
    }

    #[test]
    fn only_server_errors_timeouts_and_transport_errors_are_failures() {
        let mut r = OnlineResult::default();
        for k in ["201", "429", "503", "401"] {
            r.ticket_status.add(k);
        }
        assert_eq!(r.failures(), 0);
        r.stream_status.add("500");
        r.stream_status.add("timeout");
        r.ticket_status.add("transport_error");
        assert_eq!(r.failures(), 3);
    }
}
