//! `surge-loadgen presence`: what holding users online costs one API process.
//!
//! It makes `--users` accounts (signup + login), brings them all online — each with an open
//! presence stream (`stream`) or with `PUT /v1/presence` heartbeats every third of the TTL
//! (`heartbeat`) — waits `--settle`, then holds them for `--hold`, the steady window. Over
//! that window it reads the API process's CPU seconds and resident memory from `/proc`
//! (`--api-pid`), Redis's command counters (`--redis-url`: `INFO stats` and
//! `INFO commandstats`) and counts its own HTTP requests. After the window every user asks
//! the API for its own presence (`GET /v1/presence?ids=<self>`, which a user may always
//! read), so "still online" is what the API itself answers, on either presence backend.

mod hold;
pub mod redis_info;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::account::{LoggedIn, sign_up_and_log_in};
use crate::client::{ApiClient, ClientError, Request, SourceIps};
use crate::duration::parse_duration;
use crate::identity::IdentityFactory;
use crate::proc_stats::{process_cpu_secs, process_rss_bytes};
use crate::progress::Progress;
use crate::signup::Verdict;
use crate::stats::{Mix, Percentiles};
use hold::{Counters, Shared};
pub use hold::{SseCounter, SseSeen};
use redis_info::{RedisCounters, RedisInfoError, RedisProbe};

/// How the users stay online.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceMode {
    /// An open presence stream per user (SSE), reopened when it ends.
    Stream,
    /// `PUT /v1/presence {"status":"online"}` every third of the TTL, jittered.
    Heartbeat,
}

/// Flags of `surge-loadgen presence`.
#[derive(Debug, Clone, clap::Args)]
pub struct PresenceArgs {
    /// Base URL of the API.
    #[arg(
        long,
        env = "SURGE_LOADGEN_TARGET",
        default_value = "http://127.0.0.1:8080"
    )]
    pub target: String,
    /// Users brought online and held.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// How they stay online.
    #[arg(long, value_enum, default_value_t = PresenceMode::Stream)]
    pub mode: PresenceMode,
    /// The steady window over which costs are measured.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Wait between the last user getting online and the window's start.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub settle: Duration,
    /// With `heartbeat`: the interval, instead of a third of the TTL the API answers.
    #[arg(long, value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// The API process whose CPU and memory are read from /proc (on this machine).
    #[arg(long, env = "SURGE_LOADGEN_API_PID")]
    pub api_pid: Option<u32>,
    /// Redis whose command counters are read (INFO) at both ends of the window; a Redis of
    /// the API's own, so other traffic does not count.
    #[arg(long, env = "SURGE_LOADGEN_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Accounts made, and users brought online, at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Local addresses to send from, as for `signup` (a count or a list of addresses and
    /// ranges); spreads the streams' connections over them.
    #[arg(long, default_value = "1")]
    pub source_ips: SourceIps,
    /// PEM file of extra CA certificates to trust for an https:// target.
    #[arg(long, env = "SURGE_LOADGEN_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Per-request timeout (a stream is not cut by it).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Skip asking each user's presence after the window.
    #[arg(long)]
    pub no_online_check: bool,
}

impl PresenceArgs {
    /// Defaults for tests and library callers: 1000 users on streams at `target`.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            users: 1000,
            mode: PresenceMode::Stream,
            hold: Duration::from_secs(60),
            settle: Duration::from_secs(5),
            heartbeat_interval: None,
            api_pid: None,
            redis_url: None,
            concurrency: 32,
            source_ips: SourceIps::default(),
            ca_cert: None,
            timeout: Duration::from_secs(10),
            no_online_check: false,
        }
    }
}

/// Errors that stop a presence run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Redis(#[from] RedisInfoError),
    #[error("making accounts: {0}")]
    Account(#[from] crate::account::AccountError),
    #[error("--users and --concurrency must be at least 1")]
    Empty,
}

/// The API process over the window (with `--api-pid`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApiCost {
    pub cpu_secs: f64,
    /// CPU seconds per second of the window: cores kept busy.
    pub cores: f64,
    pub cores_per_10k_users: Option<f64>,
    /// RSS before the run made anything.
    pub rss_start_mib: f64,
    /// RSS with every account made and logged in, before any user got online: the idle
    /// baseline.
    pub rss_baseline_mib: f64,
    /// RSS at the end of the window.
    pub rss_end_mib: f64,
    /// (end − baseline) per 10,000 users held.
    pub rss_per_10k_users_mib: Option<f64>,
}

/// Redis over the window (with `--redis-url`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RedisCost {
    /// `total_commands_processed` grew by this (the probe's own INFO calls taken off).
    pub commands: u64,
    pub commands_per_user_per_min: Option<f64>,
    /// Calls per command (`INFO commandstats`; commands run inside scripts count too).
    pub by_command: Mix,
}

/// What the users' own presence reads said after the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OnlineCheck {
    pub asked: u64,
    pub online: u64,
    /// Answered, with another status (`offline` when the user lapsed).
    pub not_online: u64,
    /// No usable answer.
    pub failed: u64,
}

/// Everything a presence run measured; written as `result.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceResult {
    pub target: String,
    pub mode: PresenceMode,
    pub users: usize,
    pub accounts_secs: f64,
    /// From the first user going online to the last.
    pub online_secs: f64,
    /// Users the loadgen got online (stream open, or first heartbeat answered).
    pub got_online: u64,
    /// Why the others did not, by reason.
    pub not_online_reasons: Mix,
    pub window_secs: f64,
    /// Users held online (open streams / heartbeating) at the window's start and end.
    pub held_at_start: u64,
    pub held_at_end: u64,
    /// HTTP requests the loadgen sent during the window, per held user per minute.
    pub http_requests: u64,
    pub http_requests_per_user_per_min: Option<f64>,
    pub stream_events: u64,
    pub stream_keep_alives: u64,
    /// Streams that ended during the run although they should have stayed open.
    pub stream_ends: u64,
    pub heartbeat_failures: u64,
    pub statuses: Mix,
    /// Going online: ticket + stream headers, or the first heartbeat.
    pub online_latency: Percentiles,
    pub heartbeat_latency: Percentiles,
    pub api: Option<ApiCost>,
    /// The loadgen's own CPU over the window (cores): if near the machine's, it was the
    /// bottleneck.
    pub loadgen_cores: Option<f64>,
    pub redis: Option<RedisCost>,
    pub online_check: Option<OnlineCheck>,
    pub verdict: Verdict,
}

const MIB: f64 = 1024.0 * 1024.0;

/// A snapshot of what the window's figures are differences of.
struct Mark {
    at: Instant,
    requests: u64,
    held: u64,
    api_cpu: Option<f64>,
    api_rss: Option<u64>,
    own_cpu: Option<f64>,
    redis: Option<RedisCounters>,
}

async fn mark(
    args: &PresenceArgs,
    counters: &Counters,
    probe: &mut Option<RedisProbe>,
) -> Result<Mark, PresenceError> {
    let redis = match probe {
        Some(p) => Some(p.read().await?),
        None => None,
    };
    Ok(Mark {
        at: Instant::now(),
        requests: counters.requests.load(Ordering::Relaxed),
        held: counters.held.load(Ordering::Relaxed),
        api_cpu: args.api_pid.and_then(process_cpu_secs),
        api_rss: args.api_pid.and_then(process_rss_bytes),
        own_cpu: process_cpu_secs(std::process::id()),
        redis,
    })
}

/// Runs the mode and returns what it measured.
pub async fn run(args: &PresenceArgs, quiet: bool) -> Result<PresenceResult, PresenceError> {
    if args.users == 0 || args.concurrency == 0 {
        return Err(PresenceError::Empty);
    }
    let api = ApiClient::new(
        &args.target,
        &args.source_ips,
        args.timeout,
        args.ca_cert.as_deref(),
    )?;
    let mut probe = match &args.redis_url {
        Some(url) => Some(RedisProbe::connect(url).await?),
        None => None,
    };
    let rss_start = args.api_pid.and_then(process_rss_bytes);

    let started = Instant::now();
    let users = make_accounts(&api, args, quiet).await?;
    let accounts_secs = started.elapsed().as_secs_f64();
    let rss_baseline = args.api_pid.and_then(process_rss_bytes);

    let shared = Arc::new(Shared {
        api: api.clone(),
        counters: Counters::default(),
        stats: Default::default(),
        stop: CancellationToken::new(),
        heartbeat_interval: args.heartbeat_interval,
    });
    let online_started = Instant::now();
    let (holders, not_online_reasons) = bring_online(&shared, &users, args, quiet).await;
    let online_secs = online_started.elapsed().as_secs_f64();
    let got_online = args.users as u64 - not_online_reasons.total();

    tokio::time::sleep(args.settle).await;
    let before = mark(args, &shared.counters, &mut probe).await?;
    watch(&shared, args.hold, quiet, "holding").await;
    let after = mark(args, &shared.counters, &mut probe).await?;

    let online_check = if args.no_online_check {
        None
    } else {
        Some(check_online(&api, &users, args.concurrency).await)
    };
    shared.stop.cancel();
    let mut holders = holders;
    while holders.join_next().await.is_some() {}

    let stats = shared.lock_stats();
    let c = &shared.counters;
    let window = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    let held = after.held;
    let per_user_min = |n: f64| (held > 0).then(|| n / held as f64 / (window / 60.0));
    let per_10k = |x: f64| (held > 0).then(|| x * 10_000.0 / held as f64);
    let api_cost = match (before.api_cpu, after.api_cpu, after.api_rss) {
        (Some(cpu0), Some(cpu1), Some(rss_end)) => {
            let cores = (cpu1 - cpu0) / window;
            let baseline = rss_baseline.unwrap_or(rss_end);
            Some(ApiCost {
                cpu_secs: cpu1 - cpu0,
                cores,
                cores_per_10k_users: per_10k(cores),
                rss_start_mib: rss_start.unwrap_or(0) as f64 / MIB,
                rss_baseline_mib: baseline as f64 / MIB,
                rss_end_mib: rss_end as f64 / MIB,
                rss_per_10k_users_mib: per_10k(rss_end.saturating_sub(baseline) as f64 / MIB),
            })
        }
        _ => None,
    };
    let redis = match (&before.redis, &after.redis) {
        (Some(r0), Some(r1)) => {
            let d = r1.since(r0);
            Some(RedisCost {
                commands: d.processed,
                commands_per_user_per_min: per_user_min(d.processed as f64),
                by_command: Mix(d.by_command),
            })
        }
        _ => None,
    };
    let http_requests = after.requests - before.requests;
    let mut result = PresenceResult {
        target: args.target.clone(),
        mode: args.mode,
        users: args.users,
        accounts_secs,
        online_secs,
        got_online,
        not_online_reasons,
        window_secs: window,
        held_at_start: before.held,
        held_at_end: held,
        http_requests,
        http_requests_per_user_per_min: per_user_min(http_requests as f64),
        stream_events: c.events.load(Ordering::Relaxed),
        stream_keep_alives: c.keep_alives.load(Ordering::Relaxed),
        stream_ends: c.stream_ends.load(Ordering::Relaxed),
        heartbeat_failures: c.heartbeat_failures.load(Ordering::Relaxed),
        statuses: stats.statuses.clone(),
        online_latency: stats.online.percentiles(),
        heartbeat_latency: stats.heartbeat.percentiles(),
        api: api_cost,
        loadgen_cores: match (before.own_cpu, after.own_cpu) {
            (Some(a), Some(b)) => Some((b - a) / window),
            _ => None,
        },
        redis,
        online_check,
        verdict: Verdict {
            pass: false,
            line: String::new(),
        },
    };
    result.verdict = verdict(&result);
    Ok(result)
}

/// Signs up and logs in every user, `--concurrency` at a time.
async fn make_accounts(
    api: &ApiClient,
    args: &PresenceArgs,
    quiet: bool,
) -> Result<Vec<LoggedIn>, PresenceError> {
    let factory = IdentityFactory::new(IdentityFactory::random_tag(&mut rand::rng()));
    let mut progress = Progress::new(Duration::ZERO, quiet);
    let started = Instant::now();
    let mut made = futures::stream::iter(0..args.users as u64)
        .map(|seq| sign_up_and_log_in(api, &factory, seq))
        .buffer_unordered(args.concurrency);
    let mut users = Vec::with_capacity(args.users);
    while let Some(user) = made.next().await {
        users.push(user?);
        progress.update(
            started.elapsed(),
            &format!("accounts {}/{}", users.len(), args.users),
        );
    }
    progress.finish();
    Ok(users)
}

/// Starts a holder per user, at most `--concurrency` connecting at once, and waits until
/// each is online or given up on. Returns the holders and why users did not get online.
async fn bring_online(
    shared: &Arc<Shared>,
    users: &[LoggedIn],
    args: &PresenceArgs,
    quiet: bool,
) -> (JoinSet<()>, Mix) {
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let mut holders = JoinSet::new();
    let mut readies = Vec::with_capacity(users.len());
    let mut progress = Progress::new(Duration::ZERO, quiet);
    let started = Instant::now();
    for user in users {
        // The gate is never closed, so acquiring only waits.
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let (tx, rx) = oneshot::channel();
        readies.push(rx);
        holders.spawn(hold::hold(
            shared.clone(),
            user.clone(),
            args.mode,
            tx,
            permit,
        ));
        progress.update(
            started.elapsed(),
            &format!(
                "online {}/{}",
                shared.counters.held.load(Ordering::Relaxed),
                users.len()
            ),
        );
    }
    let mut reasons = Mix::default();
    let mut readies: futures::stream::FuturesUnordered<_> = readies.into_iter().collect();
    loop {
        match tokio::time::timeout(Duration::from_millis(250), readies.next()).await {
            Ok(Some(Ok(Ok(())))) => {}
            Ok(Some(Ok(Err(reason)))) => reasons.add(reason),
            Ok(Some(Err(_))) => reasons.add("holder ended"),
            Ok(None) => break,
            Err(_) => progress.update(
                started.elapsed(),
                &format!(
                    "online {}/{}",
                    shared.counters.held.load(Ordering::Relaxed),
                    users.len()
                ),
            ),
        }
    }
    progress.finish();
    (holders, reasons)
}

/// Sleeps through `length`, showing what is held.
async fn watch(shared: &Shared, length: Duration, quiet: bool, what: &str) {
    let mut progress = Progress::new(length, quiet);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while started.elapsed() < length {
        tick.tick().await;
        let c = &shared.counters;
        progress.update(
            started.elapsed(),
            &format!(
                "{what}: {} online | {} requests | {} events, {} keep-alives | {} streams ended",
                c.held.load(Ordering::Relaxed),
                c.requests.load(Ordering::Relaxed),
                c.events.load(Ordering::Relaxed),
                c.keep_alives.load(Ordering::Relaxed),
                c.stream_ends.load(Ordering::Relaxed),
            ),
        );
        let left = length.saturating_sub(started.elapsed());
        if left < Duration::from_millis(250) {
            tokio::time::sleep(left).await;
        }
    }
    progress.finish();
}

/// Each user reads its own presence.
async fn check_online(api: &ApiClient, users: &[LoggedIn], concurrency: usize) -> OnlineCheck {
    let mut answers = futures::stream::iter(users)
        .map(|user| async move {
            let path = format!("/v1/presence?ids={}", user.id);
            let a = api
                .send::<()>(
                    &Request {
                        method: Method::GET,
                        path: &path,
                        bearer: Some(&user.session),
                        idempotency_key: None,
                        body: None,
                    },
                    Instant::now(),
                )
                .await;
            a.body
                .as_ref()
                .and_then(|b| b.pointer("/presence/0/status"))
                .and_then(|s| s.as_str())
                .map(|s| s == "online")
        })
        .buffer_unordered(concurrency);
    let mut check = OnlineCheck::default();
    while let Some(answer) = answers.next().await {
        check.asked += 1;
        match answer {
            Some(true) => check.online += 1,
            Some(false) => check.not_online += 1,
            None => check.failed += 1,
        }
    }
    check
}

/// PASS when every user got online, was still held at the window's end, and (when asked)
/// the API said each was online.
fn verdict(r: &PresenceResult) -> Verdict {
    let users = r.users as u64;
    let checked_ok = r.online_check.as_ref().is_none_or(|c| c.online == users);
    let pass = r.got_online == users && r.held_at_end == users && checked_ok;
    let check = r.online_check.as_ref().map_or(String::new(), |c| {
        format!(
            "; the API says {} of {} online ({} not, {} unanswered)",
            c.online, c.asked, c.not_online, c.failed
        )
    });
    let line = format!(
        "{}: {} mode, {} users; {} got online in {:.1}s, {} held over the {:.1}s window ({} at its start){check}; {} streams ended, {} heartbeats failed",
        if pass { "PASS" } else { "FAIL" },
        match r.mode {
            PresenceMode::Stream => "stream",
            PresenceMode::Heartbeat => "heartbeat",
        },
        r.users,
        r.got_online,
        r.online_secs,
        r.held_at_end,
        r.window_secs,
        r.held_at_start,
        r.stream_ends,
        r.heartbeat_failures,
    );
    Verdict { pass, line }
}

fn figure(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.decimals$}"))
}

impl PresenceResult {
    /// The headline figures, one per line, for the terminal.
    pub fn table(&self) -> String {
        let api = self.api.as_ref();
        let rows = [
            (
                "users held at the window's end",
                self.held_at_end.to_string(),
            ),
            ("window", format!("{:.1} s", self.window_secs)),
            ("API CPU (cores busy)", figure(api.map(|a| a.cores), 3)),
            (
                "API CPU per 10k users (cores)",
                figure(api.and_then(|a| a.cores_per_10k_users), 3),
            ),
            (
                "API RSS baseline → end (MiB)",
                api.map_or("-".to_owned(), |a| {
                    format!("{:.1} → {:.1}", a.rss_baseline_mib, a.rss_end_mib)
                }),
            ),
            (
                "API RSS per 10k users (MiB)",
                figure(api.and_then(|a| a.rss_per_10k_users_mib), 1),
            ),
            (
                "Redis commands per user per minute",
                figure(
                    self.redis
                        .as_ref()
                        .and_then(|r| r.commands_per_user_per_min),
                    2,
                ),
            ),
            (
                "HTTP requests per user per minute",
                figure(self.http_requests_per_user_per_min, 2),
            ),
            ("loadgen CPU (cores)", figure(self.loadgen_cores, 3)),
        ];
        let mut out = String::new();
        for (name, value) in rows {
            out.push_str(&format!("{name:<40} {value}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    use crate::{Cli, Command};

    fn parse(args: &[&str]) -> PresenceArgs {
        let cli = Cli::try_parse_from(["surge-loadgen", "presence"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Presence(p) => p,
            _ => panic!("not the presence command"),
        }
    }

    #[test]
    fn flags_parse_with_their_defaults() {
        let p = parse(&[]);
        assert_eq!(p.mode, PresenceMode::Stream);
        assert_eq!(p.hold, Duration::from_secs(60));
        assert_eq!(p.users, 1000);
        let p = parse(&[
            "--mode",
            "heartbeat",
            "--users",
            "10",
            "--hold",
            "2s",
            "--api-pid",
            "42",
            "--heartbeat-interval",
            "500ms",
        ]);
        assert_eq!(p.mode, PresenceMode::Heartbeat);
        assert_eq!(p.users, 10);
        assert_eq!(p.api_pid, Some(42));
        assert_eq!(p.heartbeat_interval, Some(Duration::from_millis(500)));
    }

    fn result(users: usize, held: u64, online: Option<u64>) -> PresenceResult {
        PresenceResult {
            target: String::new(),
            mode: PresenceMode::Stream,
            users,
            accounts_secs: 0.0,
            online_secs: 0.0,
            got_online: users as u64,
            not_online_reasons: Mix::default(),
            window_secs: 1.0,
            held_at_start: held,
            held_at_end: held,
            http_requests: 0,
            http_requests_per_user_per_min: None,
            stream_events: 0,
            stream_keep_alives: 0,
            stream_ends: 0,
            heartbeat_failures: 0,
            statuses: Mix::default(),
            online_latency: Percentiles::default(),
            heartbeat_latency: Percentiles::default(),
            api: None,
            loadgen_cores: None,
            redis: None,
            online_check: online.map(|online| OnlineCheck {
                asked: users as u64,
                online,
                not_online: users as u64 - online,
                failed: 0,
            }),
            verdict: Verdict {
                pass: false,
                line: String::new(),
            },
        }
    }

    #[test]
    fn the_verdict_wants_everyone_held_and_seen_online() {
        assert!(verdict(&result(3, 3, Some(3))).pass);
        assert!(verdict(&result(3, 3, None)).pass);
        // Connected, but the API says they lapsed offline.
        let lapsed = verdict(&result(3, 3, Some(0)));
        assert!(!lapsed.pass);
        assert!(
            lapsed.line.contains("the API says 0 of 3 online"),
            "{}",
            lapsed.line
        );
        assert!(!verdict(&result(3, 2, Some(3))).pass);
    }
}
