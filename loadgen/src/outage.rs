//! `surge-loadgen outage`: a rival's outage against one target, all at once. The signup
//! flood (the `outage` profile by default) with every new user logging in; each new user
//! stays online by holding its presence stream ([`crate::online`]); the first
//! `rooms × room-size` of them call each other ([`crate::calls`], headless participants
//! joined through the API). One result and one report for the three.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::calls::{self, CallsArgs, CallsResult};
use crate::client::{ApiClient, ClientError, RetryPolicy};
use crate::online::{Online, OnlineResult};
use crate::signup::{self, LoggedIn, SignupArgs, SignupError, SignupResult, Verdict};

/// Calls that start late still last this long, so their joins and media are measured.
const MIN_CALL: Duration = Duration::from_secs(10);

/// Flags of `surge-loadgen outage` (the signup flags, and the calls' and streams').
#[derive(Debug, Clone, clap::Args)]
pub struct OutageArgs {
    #[command(flatten)]
    pub signup: SignupArgs,
    /// Rooms of new users calling each other (0: no calls).
    #[arg(long, default_value_t = 6)]
    pub rooms: usize,
    /// People per room: each sends audio and simulcast video and receives the others'.
    #[arg(long, default_value_t = 3)]
    pub room_size: usize,
    /// Share of the new users who logged in that hold a presence stream until the end.
    #[arg(long, default_value_t = 1.0)]
    pub stream_share: f64,
}

impl OutageArgs {
    /// The defaults of the command line: the outage profile at 60× (its first hour, the
    /// rise, plays in a minute) for 3 minutes, every new user logging in.
    pub fn new(target: impl Into<String>) -> Self {
        let mut signup = SignupArgs::new(target);
        signup.profile = crate::schedule::Profile::Outage;
        signup.time_scale = 60.0;
        signup.duration = Some(Duration::from_secs(180));
        signup.login_share = 1.0;
        Self {
            signup,
            rooms: 6,
            room_size: 3,
            stream_share: 1.0,
        }
    }

    fn calls_args(&self, duration: Duration) -> CallsArgs {
        let s = &self.signup;
        let mut c = CallsArgs::new(s.target.clone());
        c.rooms = self.rooms;
        c.publishers = self.room_size;
        c.subscribers = 0;
        c.duration = duration;
        c.source_ips = s.source_ips.clone();
        c.ca_cert.clone_from(&s.ca_cert);
        c
    }

    fn participants(&self) -> usize {
        self.rooms * self.room_size
    }
}

/// Errors that stop an outage run before it starts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutageError {
    #[error(transparent)]
    Signup(#[from] SignupError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("--stream-share must be between 0 and 1")]
    StreamShare,
    #[error("calls need --login-share above 0 (the callers are new users who logged in)")]
    NoLogins,
}

/// Everything an outage run measured; written as `result.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutageResult {
    pub target: String,
    pub rooms: usize,
    pub room_size: usize,
    pub signup: SignupResult,
    pub online: OnlineResult,
    /// Seconds into the run when the calls started (enough users had logged in).
    pub calls_started_secs: Option<f64>,
    pub calls: Option<CallsResult>,
    /// Why there were no calls, or why they failed to start.
    pub calls_error: Option<String>,
    pub verdict: Verdict,
}

/// Runs the signup flood, the streams and the calls together; returns what they measured.
pub async fn run(args: &OutageArgs, quiet: bool) -> Result<OutageResult, OutageError> {
    if !(0.0..=1.0).contains(&args.stream_share) {
        return Err(OutageError::StreamShare);
    }
    let needed = args.participants();
    if needed > 0 && args.signup.login_share <= 0.0 {
        return Err(OutageError::NoLogins);
    }
    args.signup.check()?;
    let schedule = args.signup.schedule().map_err(SignupError::from)?;
    let api = ApiClient::new(
        &args.signup.target,
        &args.signup.source_ips,
        args.signup.timeout,
        args.signup.ca_cert.as_deref(),
    )?;
    let policy = RetryPolicy {
        max_retries: args.signup.max_retries,
        max_wait: args.signup.max_retry_wait,
        jitter: 0.25,
    };
    let start = Instant::now();
    let end = start + schedule.real_duration();
    let (users_tx, users_rx) = mpsc::unbounded_channel();
    let (callers_tx, callers_rx) = oneshot::channel();
    let online = Online::start(api, policy, start, end);
    let seed = args.signup.seed.unwrap_or_else(|| rand::rng().random());

    // The flood shows its progress line; the calls run quietly beside it.
    let flood = signup::run_with(&args.signup, quiet, Some(users_tx));
    let dispatch = dispatch(
        users_rx,
        online,
        needed,
        callers_tx,
        args.stream_share,
        seed,
    );
    let calls = async {
        if needed == 0 {
            return (
                None,
                None,
                Some("no calls asked for (--rooms 0)".to_owned()),
            );
        }
        let Ok(sessions) = callers_rx.await else {
            return (
                None,
                None,
                Some(format!(
                    "fewer than {needed} new users logged in: the calls never started"
                )),
            );
        };
        let started = start.elapsed().as_secs_f64();
        let join_span = CallsArgs::new("").join_interval * needed as u32;
        let duration = end
            .saturating_duration_since(Instant::now())
            .saturating_sub(join_span)
            .max(MIN_CALL);
        match calls::run_with_sessions(&args.calls_args(duration), Some(sessions), true).await {
            Ok(r) => (Some(started), Some(r), None),
            Err(e) => (Some(started), None, Some(e.to_string())),
        }
    };
    let (flood, online, (calls_started_secs, calls, calls_error)) =
        tokio::join!(flood, dispatch, calls);
    let signup = flood?;
    let verdict = verdict(
        &signup,
        &online,
        calls.as_ref(),
        calls_error.as_deref(),
        needed,
    );
    Ok(OutageResult {
        target: args.signup.target.clone(),
        rooms: args.rooms,
        room_size: args.room_size,
        signup,
        online,
        calls_started_secs,
        calls,
        calls_error,
        verdict,
    })
}

/// Hands each new user to the streams (`stream_share` of them) and the first `needed` to
/// the calls; returns what the streams measured once the flood has ended and the streams
/// have closed.
async fn dispatch(
    mut users: mpsc::UnboundedReceiver<LoggedIn>,
    mut online: Online,
    needed: usize,
    callers: oneshot::Sender<Vec<String>>,
    stream_share: f64,
    seed: u64,
) -> OnlineResult {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0a7a6e);
    let mut callers = (needed > 0).then_some(callers);
    let mut sessions = Vec::with_capacity(needed);
    while let Some(user) = users.recv().await {
        online.logged_in();
        if callers.is_some() {
            sessions.push(user.token.clone());
            if sessions.len() == needed
                && let Some(tx) = callers.take()
            {
                // The calls' side is gone only if the run is ending; nothing to do then.
                let _ = tx.send(std::mem::take(&mut sessions));
            }
        }
        if rng.random_bool(stream_share) {
            online.hold(user.token);
        }
    }
    online.finish().await
}

fn verdict(
    signup: &SignupResult,
    online: &OnlineResult,
    calls: Option<&CallsResult>,
    calls_error: Option<&str>,
    needed: usize,
) -> Verdict {
    let online_ok = online.failures() == 0 && online.never_online == 0;
    let calls_ok = needed == 0 || calls.is_some_and(|c| c.verdict.pass);
    let pass = signup.verdict.pass && online_ok && calls_ok;
    let o = &signup.outcomes;
    let shed_429 = signup.status_mix.get("429") as f64 / signup.status_mix.total().max(1) as f64;
    let calls_line = match (calls, calls_error) {
        (Some(c), _) => format!(
            "calls: {} of {} joined, first video p50 {:.0} ms p99 {:.0} ms, {:.0} packets/s received",
            c.participants.iter().filter(|p| p.joined).count(),
            c.participants.len(),
            c.first_video.p50_ms,
            c.first_video.p99_ms,
            c.received_packets_per_s
        ),
        (None, Some(e)) => format!("calls: {e}"),
        (None, None) => "calls: none".to_owned(),
    };
    let line = format!(
        "{}: signups {} offered, {} created ({:.1}/s, peak {:.0}/s), {:.1}% of attempts 429; signup p50 {:.0} ms p99 {:.0} ms, login p50 {:.0} ms p99 {:.0} ms; online peak {} ({} of {} logged-in users held a stream, {} never online, {} dropped, {} failed requests); {}",
        if pass { "PASS" } else { "FAIL" },
        o.offered,
        o.created_first_try + o.created_after_retry,
        signup.created_per_s,
        signup.created_per_s_peak,
        shed_429 * 100.0,
        signup.latency.accepted.p50_ms,
        signup.latency.accepted.p99_ms,
        signup.follow_ups.login_latency.accepted.p50_ms,
        signup.follow_ups.login_latency.accepted.p99_ms,
        online.peak_online,
        online.held,
        online.logged_in,
        online.never_online,
        online.drops.total(),
        online.failures(),
        calls_line,
    );
    Verdict { pass, line }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calls_take_their_size_and_the_floods_addresses() {
        let mut a = OutageArgs::new("http://127.0.0.1:1");
        a.rooms = 2;
        a.room_size = 4;
        a.signup.source_ips = crate::client::SourceIps::count(3);
        let c = a.calls_args(Duration::from_secs(5));
        assert_eq!((c.rooms, c.publishers, c.subscribers), (2, 4, 0));
        assert_eq!(c.source_ips, a.signup.source_ips);
        assert_eq!(c.target, "http://127.0.0.1:1");
        assert_eq!(a.participants(), 8);
    }
}
