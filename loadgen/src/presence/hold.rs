//! Holding one user online, as a client would: a presence stream kept open (and reopened
//! when it ends), or `PUT /v1/presence` heartbeats every third of the TTL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use rand::RngExt;
use reqwest::Method;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::PresenceMode;
use crate::account::LoggedIn;
use crate::client::{ApiClient, Attempt, Request, RetryPolicy};
use crate::presence_stream::{self, StreamOpen};
use crate::sse::{SseBlock, SseParser};
use crate::stats::{LatencyHistogram, Mix};

/// A stream is one long request; the client's per-request timeout must not cut it.
const STREAM_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Failed tries in a row after which a user is given up on.
const MAX_FAILURES: u32 = 10;
/// Wait before reopening, when the server named none.
const REOPEN_WAIT: Duration = Duration::from_secs(1);

/// Live counts over all users (read at both ends of the steady window).
#[derive(Debug, Default)]
pub struct Counters {
    /// HTTP requests the holders sent (tickets, stream opens, heartbeats, retries).
    pub requests: AtomicU64,
    /// Users online as far as the loadgen knows: an open stream, or a last heartbeat
    /// that succeeded.
    pub held: AtomicU64,
    /// SSE events received (`event:`/`data:` blocks).
    pub events: AtomicU64,
    /// SSE comments received (the server's keep-alives).
    pub keep_alives: AtomicU64,
    /// Streams that ended while they were meant to stay open.
    pub stream_ends: AtomicU64,
    /// Heartbeats that did not get a 200.
    pub heartbeat_failures: AtomicU64,
}

/// Statuses and latencies of the holders' requests.
#[derive(Debug, Default)]
pub struct HoldStats {
    /// `"<request> <status>"`, e.g. `"heartbeat 200"`, `"stream 503"`.
    pub statuses: Mix,
    /// Heartbeats answered 200.
    pub heartbeat: LatencyHistogram,
    /// Going online: ticket + stream headers, or the first heartbeat.
    pub online: LatencyHistogram,
}

/// What every holder shares.
#[derive(Debug)]
pub struct Shared {
    pub api: ApiClient,
    pub counters: Counters,
    pub stats: Mutex<HoldStats>,
    pub stop: CancellationToken,
    /// With heartbeats: the interval, instead of a third of the TTL the server answers.
    pub heartbeat_interval: Option<Duration>,
}

impl Shared {
    pub fn lock_stats(&self) -> MutexGuard<'_, HoldStats> {
        crate::lock(&self.stats)
    }

    fn record(&self, request: &str, attempt: &Attempt) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.lock_stats()
            .statuses
            .add(format!("{request} {}", attempt.outcome.key()));
    }
}

/// Whether the user got online; `Err` says why not.
pub type Online = Result<(), String>;

/// Holds `user` online until `shared.stop`. `ready` hears once, when the user first gets
/// online or is given up on; `permit` (bounding how many users connect at once) is
/// released then too.
pub async fn hold(
    shared: Arc<Shared>,
    user: LoggedIn,
    mode: PresenceMode,
    ready: oneshot::Sender<Online>,
    permit: OwnedSemaphorePermit,
) {
    let mut first = Some((ready, permit));
    let mut failures = 0u32;
    while !shared.stop.is_cancelled() {
        let next = match mode {
            PresenceMode::Stream => stream_once(&shared, &user, &mut first).await,
            PresenceMode::Heartbeat => heartbeat_loop(&shared, &user, &mut first).await,
        };
        let (wait, failed) = match next {
            Next::Stopped => break,
            Next::Retry(wait) => (wait, true),
            Next::Reopen(wait) => (wait, false),
        };
        failures = if failed { failures + 1 } else { 0 };
        if failures >= MAX_FAILURES {
            if let Some((ready, _)) = first.take() {
                let _ = ready.send(Err(format!("{failures} failed tries in a row")));
            }
            break;
        }
        tokio::select! {
            () = shared.stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    if let Some((ready, _)) = first.take() {
        let _ = ready.send(Err("stopped before getting online".to_owned()));
    }
}

/// What a holder does after a try.
enum Next {
    Stopped,
    /// It failed: try again after this wait.
    Retry(Duration),
    /// It worked for a while, then ended: go again after this wait.
    Reopen(Duration),
}

type First = Option<(oneshot::Sender<Online>, OwnedSemaphorePermit)>;

fn announce(first: &mut First) {
    if let Some((ready, _)) = first.take() {
        let _ = ready.send(Ok(()));
    }
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.8..1.2))
}

/// The wait before trying again: what the server asked for, at least [`REOPEN_WAIT`].
fn retry_wait(retry_after: Option<Duration>) -> Duration {
    jittered(retry_after.unwrap_or(REOPEN_WAIT).max(REOPEN_WAIT))
}

/// Takes a ticket, opens the stream and reads it until it ends or the run stops.
async fn stream_once(shared: &Shared, user: &LoggedIn, first: &mut First) -> Next {
    let started = Instant::now();
    let attempt = shared
        .api
        .send::<()>(
            &Request {
                method: Method::POST,
                path: "/v1/presence/tickets",
                bearer: Some(&user.session),
                idempotency_key: None,
                body: None,
            },
            started,
        )
        .await;
    shared.record("ticket", &attempt);
    let opened = tokio::select! {
        () = shared.stop.cancelled() => return Next::Stopped,
        o = presence_stream::open(&shared.api, &attempt, STREAM_TIMEOUT) => o,
    };
    let Some(key) = opened.key() else {
        return Next::Retry(retry_wait(attempt.retry_after));
    };
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    shared.lock_stats().statuses.add(format!("stream {key}"));
    let response = match opened {
        StreamOpen::Opened(response) => response,
        StreamOpen::Refused { retry_after, .. } => return Next::Retry(retry_wait(retry_after)),
        StreamOpen::Failed(_) | StreamOpen::NoTicket => return Next::Retry(retry_wait(None)),
    };
    shared.lock_stats().online.record(started.elapsed());
    shared.counters.held.fetch_add(1, Ordering::Relaxed);
    announce(first);
    let mut body = response.bytes_stream();
    let mut sse = SseCounter::default();
    let ended = loop {
        let chunk = tokio::select! {
            () = shared.stop.cancelled() => break false,
            chunk = body.next() => chunk,
        };
        match chunk {
            Some(Ok(bytes)) => {
                let seen = sse.feed(&bytes);
                let c = &shared.counters;
                c.events.fetch_add(seen.events, Ordering::Relaxed);
                c.keep_alives.fetch_add(seen.comments, Ordering::Relaxed);
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "presence stream broke");
                break true;
            }
            None => break true,
        }
    };
    shared.counters.held.fetch_sub(1, Ordering::Relaxed);
    if !ended {
        return Next::Stopped;
    }
    shared.counters.stream_ends.fetch_add(1, Ordering::Relaxed);
    Next::Reopen(jittered(REOPEN_WAIT))
}

/// Heartbeats until one fails (or the run stops).
async fn heartbeat_loop(shared: &Shared, user: &LoggedIn, first: &mut First) -> Next {
    let body = serde_json::json!({ "status": "online" });
    let mut held = false;
    let mut phase_spread = true;
    let next = loop {
        let at = Instant::now();
        let (attempt, _) = shared
            .api
            .send_with_retries(
                &Request {
                    method: Method::PUT,
                    path: "/v1/presence",
                    bearer: Some(&user.session),
                    idempotency_key: None,
                    body: Some(&body),
                },
                at,
                RetryPolicy {
                    max_retries: 2,
                    max_wait: Duration::from_secs(5),
                    jitter: 0.25,
                },
                |a, _| shared.record("heartbeat", a),
            )
            .await;
        if attempt.status() != Some(200) {
            shared
                .counters
                .heartbeat_failures
                .fetch_add(1, Ordering::Relaxed);
            let wait = retry_wait(attempt.retry_after);
            // After a stretch online, one failure does not count towards giving up.
            break if held {
                Next::Reopen(wait)
            } else {
                Next::Retry(wait)
            };
        }
        let latency = attempt.latency();
        if first.is_some() {
            shared.lock_stats().online.record(latency);
        } else {
            shared.lock_stats().heartbeat.record(latency);
        }
        if !held {
            held = true;
            shared.counters.held.fetch_add(1, Ordering::Relaxed);
        }
        announce(first);
        let ttl = attempt
            .body
            .as_ref()
            .and_then(|b| b.get("ttl_secs"))
            .and_then(|t| t.as_u64())
            .map_or(Duration::from_secs(30), Duration::from_secs);
        let interval = shared.heartbeat_interval.unwrap_or(ttl / 3);
        // Users that came online together would otherwise heartbeat in lockstep; spread
        // their phases over the first interval, then keep each within ±20 %.
        let wait = if phase_spread {
            phase_spread = false;
            interval.mul_f64(rand::rng().random_range(0.2..1.0))
        } else {
            jittered(interval)
        };
        tokio::select! {
            () = shared.stop.cancelled() => break Next::Stopped,
            () = tokio::time::sleep(wait) => {}
        }
    };
    if held {
        shared.counters.held.fetch_sub(1, Ordering::Relaxed);
    }
    next
}

/// What a chunk of an SSE body completed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SseSeen {
    pub events: u64,
    pub comments: u64,
}

/// Counts the events and keep-alive comments of an SSE body.
#[derive(Debug, Default)]
pub struct SseCounter(SseParser);

impl SseCounter {
    pub fn feed(&mut self, bytes: &[u8]) -> SseSeen {
        let mut seen = SseSeen::default();
        for block in self.0.feed(bytes) {
            match block {
                SseBlock::Event { .. } => seen.events += 1,
                SseBlock::Comment => seen.comments += 1,
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_blocks_are_counted_across_chunks_and_line_endings() {
        let mut c = SseCounter::default();
        let body = b"event: presence\ndata: {\"user_id\":\"a\"}\n\n: keep-alive\n\nevent: contacts\r\ndata: {}\r\n\r\n:\r\r";
        let mut total = SseSeen::default();
        // Every split point must give the same counts.
        for chunk in body.chunks(3) {
            let seen = c.feed(chunk);
            total.events += seen.events;
            total.comments += seen.comments;
        }
        assert_eq!(
            total,
            SseSeen {
                events: 2,
                comments: 2
            }
        );
        assert_eq!(c.feed(b"data: x\n"), SseSeen::default());
        assert_eq!(c.feed(b"\n").events, 1);
    }
}
