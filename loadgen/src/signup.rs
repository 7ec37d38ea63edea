//! `surge-loadgen signup`: an open-loop flood of account creations, with optional
//! follow-up logins and presence heartbeats from the new users.
//!
//! Each request is sent at its scheduled time whatever happened to earlier ones, and its
//! latency is measured from that scheduled time (not from when the socket write happened),
//! so a server that stalls is charged for the whole stall: no coordinated omission.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{ApiClient, Attempt, ClientError, Request, RetryPolicy, SourceIps};
use crate::duration::parse_duration;
use crate::identity::{IdentityFactory, Intent, Signup};
use crate::lock;
use crate::progress::Progress;
use crate::schedule::{Profile, Schedule, ScheduleError, Volume};
use crate::stats::{LatencyHistogram, Mix, OutcomeClass, Percentiles, Timeline, TimelinePoint};

/// Flags of `surge-loadgen signup`.
#[derive(Debug, Clone, clap::Args)]
pub struct SignupArgs {
    /// Base URL of the API.
    #[arg(
        long,
        env = "SURGE_LOADGEN_TARGET",
        default_value = "http://127.0.0.1:8080"
    )]
    pub target: String,
    /// Shape of the offered load over time.
    #[arg(long, value_enum, default_value_t = Profile::Constant)]
    pub profile: Profile,
    /// Signups per day of scenario time (ooVoo took 100,000 in a day).
    #[arg(long, conflicts_with = "rate")]
    pub per_day: Option<f64>,
    /// Mean signups per real second (instead of --per-day). Default: 20/s.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Scenario seconds per real second (1000 plays a day in 86.4 s).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Real run length: the whole run for constant/ramp (default 60s), a cut-off for day/outage.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Share of requests that reuse an email registered earlier in the run (expect 409).
    #[arg(long, default_value_t = 0.02)]
    pub duplicate_share: f64,
    /// Share of requests with a malformed email or a weak password (expect 422).
    #[arg(long, default_value_t = 0.02)]
    pub invalid_share: f64,
    /// Share of new accounts that log in right after signing up.
    #[arg(long, default_value_t = 0.0)]
    pub login_share: f64,
    /// Presence heartbeats each logged-in user sends (0: none).
    #[arg(long, default_value_t = 0)]
    pub heartbeats: u32,
    /// Time between a user's heartbeats (jittered ±20 %).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// Retries of a request shed with 429/503 (after its Retry-After).
    #[arg(long, default_value_t = 3)]
    pub max_retries: u32,
    /// A Retry-After longer than this makes the client give up instead of waiting.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub max_retry_wait: Duration,
    /// Per-request timeout; a request that takes longer counts as a timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Local addresses to send from, round-robin, so per-client limits (directly, or behind
    /// a proxy with --trusted-proxies) see many clients: a count N (127.0.0.1..=127.0.0.N;
    /// 1 lets the OS choose), or a list of addresses and ranges, e.g.
    /// 127.0.0.2-127.0.0.9,127.0.0.20.
    #[arg(long, default_value = "1")]
    pub source_ips: SourceIps,
    /// PEM file of extra CA certificates to trust for an https:// target (a staging
    /// Ingress with its own certificate).
    #[arg(long, env = "SURGE_LOADGEN_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Requests in flight above which new arrivals are dropped and counted as a loadgen
    /// overload (the run then fails: the schedule was not kept).
    #[arg(long, default_value_t = 20_000)]
    pub max_in_flight: u64,
    /// How long to wait for in-flight requests (and retries) after the last arrival.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Seed for the schedule and identities (random when not given).
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SignupArgs {
    /// Defaults for tests and library callers: a constant 20/s for 60 s at `target`.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            profile: Profile::Constant,
            per_day: None,
            rate: None,
            time_scale: 1.0,
            duration: None,
            duplicate_share: 0.02,
            invalid_share: 0.02,
            login_share: 0.0,
            heartbeats: 0,
            heartbeat_interval: Duration::from_secs(15),
            max_retries: 3,
            max_retry_wait: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            source_ips: SourceIps::default(),
            ca_cert: None,
            max_in_flight: 20_000,
            drain_timeout: Duration::from_secs(120),
            seed: None,
        }
    }

    /// Refuses shares outside 0..=1 and a schedule that cannot be made.
    pub fn check(&self) -> Result<(), SignupError> {
        for (name, share) in [
            ("--duplicate-share", self.duplicate_share),
            ("--invalid-share", self.invalid_share),
            ("--login-share", self.login_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(SignupError::Share(name));
            }
        }
        if self.duplicate_share + self.invalid_share > 1.0 {
            return Err(SignupError::Share("--duplicate-share + --invalid-share"));
        }
        self.schedule()?;
        Ok(())
    }

    pub fn schedule(&self) -> Result<Schedule, ScheduleError> {
        let volume = match (self.per_day, self.rate) {
            (Some(n), _) => Volume::PerDay(n),
            (None, Some(r)) => Volume::PerSecond(r),
            (None, None) => Volume::PerSecond(20.0),
        };
        Schedule::new(self.profile, volume, self.time_scale, self.duration)
    }
}

/// Errors that stop a signup run before it starts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignupError {
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0} must be between 0 and 1")]
    Share(&'static str),
}

/// Latencies of one endpoint, split by what the server answered.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndpointLatency {
    /// 2xx answers, measured from the scheduled send time.
    pub accepted: Percentiles,
    /// 429/503 answers (the server shed the request).
    pub rejected: Percentiles,
    /// Other 4xx answers (duplicates, invalid input).
    pub refused: Percentiles,
}

/// What happened to each signup (not each attempt).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SignupOutcomes {
    /// Arrivals the schedule produced.
    pub offered: u64,
    /// HTTP attempts, retries included.
    pub attempts: u64,
    /// Valid signups created on the first attempt.
    pub created_first_try: u64,
    /// Valid signups created after one or more retries.
    pub created_after_retry: u64,
    /// Signups still shed when retries ran out (or the wait was too long).
    pub gave_up: u64,
    /// Duplicates and invalid requests refused as they should be (409/422).
    pub refused_as_expected: u64,
    /// Answers that contradict the request (a duplicate accepted, a valid one refused…).
    pub unexpected: u64,
    /// 5xx other than 503, timeouts and transport errors (final attempts).
    pub failed: u64,
    /// Arrivals dropped because the loadgen had too many requests in flight.
    pub dropped_by_loadgen: u64,
    /// Requests still unanswered when the drain timeout ended the run.
    pub unfinished: u64,
    /// By intent: valid, duplicate, invalid_email, weak_password.
    pub by_intent: Mix,
}

/// Logins and heartbeats of the new users.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FollowUps {
    pub login_status: Mix,
    pub login_latency: EndpointLatency,
    pub heartbeat_status: Mix,
    pub heartbeat_latency: EndpointLatency,
}

/// The verdict: did the run hold?
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    pub pass: bool,
    pub line: String,
}

/// Everything a signup run measured; written as `result.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignupResult {
    pub target: String,
    pub profile: String,
    pub time_scale: f64,
    /// Scheduled run length in real seconds.
    pub scheduled_secs: f64,
    /// Wall time from the first arrival to the last answer.
    pub elapsed_secs: f64,
    pub expected_arrivals: f64,
    pub run_tag: String,
    pub started_unix: u64,
    pub outcomes: SignupOutcomes,
    /// Status of every attempt: `"201"`, `"429"`, `"timeout"`, …
    pub status_mix: Mix,
    /// `error.code` of every error answer, prefixed by status: `"429 rate_limited"`.
    pub error_codes: Mix,
    /// Share of attempts answered 429/503.
    pub shed_share: f64,
    /// Created accounts per second over the whole run, and in the best timeline bucket.
    pub created_per_s: f64,
    pub created_per_s_peak: f64,
    pub latency: EndpointLatency,
    /// From the first scheduled send to the final 201, retries included.
    pub eventual_created: Percentiles,
    /// How late the loadgen itself started requests (should be ~0; if not, it is the
    /// bottleneck, not the server).
    pub send_lag: Percentiles,
    pub follow_ups: FollowUps,
    pub timeline_bucket_secs: f64,
    pub timeline: Vec<TimelinePoint>,
    pub verdict: Verdict,
}

#[derive(Default)]
struct EndpointHistograms {
    status: Mix,
    accepted: LatencyHistogram,
    rejected: LatencyHistogram,
    refused: LatencyHistogram,
}

impl EndpointHistograms {
    fn record(&mut self, a: &Attempt) {
        self.status.add(a.outcome.key());
        match a.outcome.class() {
            OutcomeClass::Accepted => self.accepted.record(a.latency()),
            OutcomeClass::Shed => self.rejected.record(a.latency()),
            OutcomeClass::Refused => self.refused.record(a.latency()),
            OutcomeClass::Failed => {}
        }
    }

    fn summary(&self) -> EndpointLatency {
        EndpointLatency {
            accepted: self.accepted.percentiles(),
            rejected: self.rejected.percentiles(),
            refused: self.refused.percentiles(),
        }
    }
}

struct Stats {
    timeline: Timeline,
    signup: EndpointHistograms,
    error_codes: Mix,
    eventual: LatencyHistogram,
    send_lag: LatencyHistogram,
    outcomes: SignupOutcomes,
    login: EndpointHistograms,
    heartbeat: EndpointHistograms,
}

/// Live counters for the progress line.
#[derive(Default)]
struct Counters {
    offered: AtomicU64,
    created: AtomicU64,
    shed: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
}

struct Shared {
    client: ApiClient,
    policy: RetryPolicy,
    start: Instant,
    stats: Mutex<Stats>,
    counters: Counters,
    /// Emails created in this run, for duplicates (bounded: the newest are kept).
    created: Mutex<Vec<String>>,
    login_share: f64,
    heartbeats: u32,
    heartbeat_interval: Duration,
    logged_in: Option<mpsc::UnboundedSender<LoggedIn>>,
}

/// A new account that logged in during a run, handed to a mode that keeps it busy (the
/// outage run holds its presence stream and puts some in calls).
#[derive(Debug, Clone)]
pub struct LoggedIn {
    /// The session token (Bearer).
    pub token: String,
    /// When its login was answered.
    pub at: Instant,
}

const CREATED_KEPT: usize = 10_000;

impl Shared {
    fn since_start(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.start)
    }

    fn record_signup_attempt(&self, a: &Attempt) {
        let class = a.outcome.class();
        match class {
            OutcomeClass::Shed => {
                self.counters.shed.fetch_add(1, Ordering::Relaxed);
            }
            OutcomeClass::Failed => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        let mut s = lock(&self.stats);
        s.outcomes.attempts += 1;
        s.signup.record(a);
        if let (Some(code), Some(status)) = (&a.code, a.status()) {
            s.error_codes.add(format!("{status} {code}"));
        }
        let (sched, done) = (self.since_start(a.scheduled), self.since_start(a.completed));
        s.timeline.completed(sched, done, class, a.latency());
    }

    fn record_signup_final(&self, intent: Intent, first: Instant, last: &Attempt, retries: u32) {
        let mut s = lock(&self.stats);
        let o = &mut s.outcomes;
        match (last.outcome.class(), last.status()) {
            (OutcomeClass::Accepted, Some(status)) if intent.expects(status) => {
                if retries == 0 {
                    o.created_first_try += 1;
                } else {
                    o.created_after_retry += 1;
                }
                self.counters.created.fetch_add(1, Ordering::Relaxed);
                let eventual = last.completed.saturating_duration_since(first);
                s.eventual.record(eventual);
            }
            (OutcomeClass::Shed, _) => o.gave_up += 1,
            (OutcomeClass::Failed, _) => o.failed += 1,
            (_, Some(status)) if intent.expects(status) => o.refused_as_expected += 1,
            (_, status) => {
                o.unexpected += 1;
                tracing::warn!(?intent, ?status, code = ?last.code, "unexpected answer");
            }
        }
    }
}

/// Runs a signup flood and returns what it measured.
pub async fn run(args: &SignupArgs, quiet: bool) -> Result<SignupResult, SignupError> {
    run_with(args, quiet, None).await
}

/// [`run`], handing every new user who logged in (`--login-share`) to `logged_in` as soon as
/// its login is answered, before its heartbeats.
pub async fn run_with(
    args: &SignupArgs,
    quiet: bool,
    logged_in: Option<mpsc::UnboundedSender<LoggedIn>>,
) -> Result<SignupResult, SignupError> {
    args.check()?;
    let schedule = args.schedule()?;
    let client = ApiClient::new(
        &args.target,
        &args.source_ips,
        args.timeout,
        args.ca_cert.as_deref(),
    )?;
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    let mut rng = StdRng::seed_from_u64(seed);
    let run_tag = IdentityFactory::random_tag(&mut rng);
    let factory = IdentityFactory::new(run_tag.clone());
    let started_unix = surge_cluster::token::unix_now();

    let start = Instant::now();
    let shared = Arc::new(Shared {
        client,
        policy: RetryPolicy {
            max_retries: args.max_retries,
            max_wait: args.max_retry_wait,
            jitter: 0.25,
        },
        start,
        stats: Mutex::new(Stats {
            timeline: Timeline::for_run(schedule.real_duration()),
            signup: Default::default(),
            error_codes: Default::default(),
            eventual: LatencyHistogram::new(),
            send_lag: LatencyHistogram::new(),
            outcomes: Default::default(),
            login: Default::default(),
            heartbeat: Default::default(),
        }),
        counters: Counters::default(),
        created: Mutex::new(Vec::new()),
        login_share: args.login_share,
        heartbeats: args.heartbeats,
        heartbeat_interval: args.heartbeat_interval,
        logged_in,
    });

    let ticker = spawn_ticker(shared.clone(), schedule.real_duration(), quiet);
    let mut tasks = JoinSet::new();
    let arrivals = schedule.arrivals(StdRng::seed_from_u64(seed ^ 0x5eed));
    for (seq, offset) in arrivals.enumerate() {
        let at = start + offset;
        tokio::time::sleep_until(at).await;
        while tasks.try_join_next().is_some() {}
        shared.counters.offered.fetch_add(1, Ordering::Relaxed);
        {
            let mut s = lock(&shared.stats);
            s.outcomes.offered += 1;
            s.timeline.offered(offset);
            s.send_lag
                .record(Instant::now().saturating_duration_since(at));
        }
        if shared.counters.in_flight.load(Ordering::Relaxed) >= args.max_in_flight {
            lock(&shared.stats).outcomes.dropped_by_loadgen += 1;
            continue;
        }
        let (intent, body) = next_request(&shared, &factory, seq as u64, args, &mut rng);
        lock(&shared.stats)
            .outcomes
            .by_intent
            .add(intent_key(intent));
        let shared = shared.clone();
        shared.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            one_signup(&shared, intent, body, at).await;
            shared.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }

    let drain = tokio::time::timeout(args.drain_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drain.is_err() {
        let unfinished = tasks.len() as u64;
        tasks.abort_all();
        lock(&shared.stats).outcomes.unfinished = unfinished;
    }
    let elapsed = start.elapsed();
    ticker.abort();
    let _ = ticker.await;

    let s = lock(&shared.stats);
    Ok(summarise(
        args,
        &schedule,
        &s,
        elapsed,
        run_tag,
        started_unix,
    ))
}

fn intent_key(intent: Intent) -> &'static str {
    match intent {
        Intent::Valid => "valid",
        Intent::Duplicate => "duplicate",
        Intent::InvalidEmail => "invalid_email",
        Intent::WeakPassword => "weak_password",
    }
}

fn next_request(
    shared: &Shared,
    factory: &IdentityFactory,
    seq: u64,
    args: &SignupArgs,
    rng: &mut StdRng,
) -> (Intent, Signup) {
    let roll: f64 = rng.random();
    if roll < args.duplicate_share {
        let created = lock(&shared.created);
        if !created.is_empty() {
            let email = created[rng.random_range(0..created.len())].clone();
            drop(created);
            let mut s = factory.valid(seq, rng);
            s.email = email;
            return (Intent::Duplicate, s);
        }
    } else if roll < args.duplicate_share + args.invalid_share {
        return factory.invalid(seq, rng);
    }
    (Intent::Valid, factory.valid(seq, rng))
}

async fn one_signup(shared: &Shared, intent: Intent, body: Signup, at: Instant) {
    let idempotency_key = format!("{:032x}", rand::rng().random::<u128>());
    let (last, retries) = shared
        .client
        .send_with_retries(
            &Request {
                method: Method::POST,
                path: "/v1/accounts",
                bearer: None,
                idempotency_key: Some(&idempotency_key),
                body: Some(&body),
            },
            at,
            shared.policy,
            |a, _| shared.record_signup_attempt(a),
        )
        .await;
    shared.record_signup_final(intent, at, &last, retries);
    if intent != Intent::Valid || last.status() != Some(201) {
        return;
    }
    {
        let mut created = lock(&shared.created);
        if created.len() >= CREATED_KEPT {
            let i = rand::rng().random_range(0..created.len());
            created[i] = body.email.clone();
        } else {
            created.push(body.email.clone());
        }
    }
    if shared.login_share > 0.0 && rand::rng().random_bool(shared.login_share) {
        follow_up(shared, &body).await;
    }
}

/// Logs the new user in, then sends its presence heartbeats.
async fn follow_up(shared: &Shared, body: &Signup) {
    let (_, token) = shared
        .client
        .login(&body.email, &body.password, shared.policy, |a, _| {
            lock(&shared.stats).login.record(a)
        })
        .await;
    let Some(token) = token else {
        return;
    };
    if let Some(tx) = &shared.logged_in {
        // The receiver may have stopped taking users (its run ended); that is its call.
        let _ = tx.send(LoggedIn {
            token: token.clone(),
            at: Instant::now(),
        });
    }
    let presence = serde_json::json!({ "status": "online" });
    for _ in 0..shared.heartbeats {
        let wait = shared
            .heartbeat_interval
            .mul_f64(rand::rng().random_range(0.8..1.2));
        let at = Instant::now() + wait;
        tokio::time::sleep_until(at).await;
        let (a, _) = shared
            .client
            .send_with_retries(
                &Request {
                    method: Method::PUT,
                    path: "/v1/presence",
                    bearer: Some(&token),
                    idempotency_key: None,
                    body: Some(&presence),
                },
                at,
                shared.policy,
                |a, _| lock(&shared.stats).heartbeat.record(a),
            )
            .await;
        if a.status() == Some(401) {
            break;
        }
    }
}

fn spawn_ticker(shared: Arc<Shared>, total: Duration, quiet: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut progress = Progress::new(total, quiet);
        let mut interval = tokio::time::interval(Duration::from_millis(250));
        let mut last = (0u64, Instant::now());
        let mut rate = 0.0;
        loop {
            interval.tick().await;
            let c = &shared.counters;
            let created = c.created.load(Ordering::Relaxed);
            let now = Instant::now();
            let dt = now.duration_since(last.1).as_secs_f64();
            if dt >= 1.0 {
                rate = (created - last.0) as f64 / dt;
                last = (created, now);
            }
            let line = format!(
                "offered {} | created {} ({rate:.0}/s) | shed {} | failed {} | in flight {}",
                c.offered.load(Ordering::Relaxed),
                created,
                c.shed.load(Ordering::Relaxed),
                c.failed.load(Ordering::Relaxed),
                c.in_flight.load(Ordering::Relaxed),
            );
            progress.update(shared.since_start(now), &line);
            if shared.since_start(now) > total + Duration::from_secs(3600) {
                break;
            }
        }
        progress.finish();
    })
}

fn summarise(
    args: &SignupArgs,
    schedule: &Schedule,
    s: &Stats,
    elapsed: Duration,
    run_tag: String,
    started_unix: u64,
) -> SignupResult {
    let timeline = s.timeline.points();
    let o = &s.outcomes;
    let created = o.created_first_try + o.created_after_retry;
    let shed = s.signup.status.get("429") + s.signup.status.get("503");
    let attempts = s.signup.status.total();
    let shed_share = if attempts == 0 {
        0.0
    } else {
        shed as f64 / attempts as f64
    };
    let elapsed_secs = elapsed.as_secs_f64();
    let created_per_s_peak = timeline
        .iter()
        .map(|p| p.accepted_per_s)
        .fold(0.0, f64::max);
    let latency = s.signup.summary();
    let server_errors: u64 = s
        .signup
        .status
        .0
        .iter()
        .filter(|(k, _)| k.starts_with('5') && k.as_str() != "503")
        .map(|(_, v)| *v)
        .sum();
    let timeouts = s.signup.status.get("timeout");
    let transport = s.signup.status.get("transport_error");
    let problems =
        server_errors + timeouts + transport + o.unexpected + o.dropped_by_loadgen + o.unfinished;
    let pass = problems == 0 && o.offered > 0;
    let line = format!(
        "{}: {} offered in {:.1}s; {} created ({:.1}/s, peak {:.0}/s; {} first try), {:.1}% of attempts shed (429/503), {} gave up; accepted p50 {:.0} ms p99 {:.0} ms, shed p99 {:.0} ms; {} 5xx, {} timeouts, {} transport errors, {} unexpected, {} dropped by loadgen",
        if pass { "PASS" } else { "FAIL" },
        o.offered,
        elapsed_secs,
        created,
        created as f64 / elapsed_secs.max(1e-9),
        created_per_s_peak,
        o.created_first_try,
        shed_share * 100.0,
        o.gave_up,
        latency.accepted.p50_ms,
        latency.accepted.p99_ms,
        latency.rejected.p99_ms,
        server_errors,
        timeouts,
        transport,
        o.unexpected,
        o.dropped_by_loadgen,
    );
    SignupResult {
        target: args.target.clone(),
        profile: format!("{:?}", schedule.profile).to_lowercase(),
        time_scale: schedule.time_scale,
        scheduled_secs: schedule.real_secs,
        elapsed_secs,
        expected_arrivals: schedule.expected_total().round(),
        run_tag,
        started_unix,
        outcomes: o.clone(),
        status_mix: s.signup.status.clone(),
        error_codes: s.error_codes.clone(),
        shed_share,
        created_per_s: created as f64 / elapsed_secs.max(1e-9),
        created_per_s_peak,
        latency,
        eventual_created: s.eventual.percentiles(),
        send_lag: s.send_lag.percentiles(),
        follow_ups: FollowUps {
            login_status: s.login.status.clone(),
            login_latency: s.login.summary(),
            heartbeat_status: s.heartbeat.status.clone(),
            heartbeat_latency: s.heartbeat.summary(),
        },
        timeline_bucket_secs: s.timeline.width().as_secs_f64(),
        timeline,
        verdict: Verdict { pass, line },
    }
}
