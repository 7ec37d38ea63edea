//! `surge-loadgen calls`: rooms × (publishers + subscribers) of headless str0m
//! participants over real UDP, joined through the API exactly as a browser would
//! (sign up, log in, create a room, ask the API to join, offer to the shard it names).
//!
//! Each participant is watched by a task that samples its receive statistics every
//! [`SAMPLE`]: join time (offer sent → first media received), received bitrate and layer
//! per remote track, audio loss (estimated from Opus's fixed 50 packets/s), freezes
//! (a video track receiving nothing for more than 500 ms), and rejoin time when its shard
//! goes away (last media before → first media after rejoining through the API).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;
use surge_participant::{
    IceTransport, Participant, ParticipantConfig, ParticipantError, ParticipantStats,
};
use tokio::sync::Mutex as AsyncMutex;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::account::sign_up_and_log_in;
use crate::client::{ApiClient, ClientError, Request, RetryPolicy, SourceIps};
use crate::duration::parse_duration;
use crate::identity::IdentityFactory;
use crate::join_breakdown::{JoinBreakdown, JoinPhases, breakdown, phases};
use crate::network_change::{
    MoveReport, Mover, NetworkChangeArgs, NetworkChanges, ObservedMove, Observer, RoomMoves, Step,
};
use crate::proc_stats::process_cpu_secs;
use crate::progress::Progress;
use crate::signup::Verdict;
use crate::stats::{LatencyHistogram, Mix, Percentiles};

/// How often each participant's statistics are sampled.
pub const SAMPLE: Duration = Duration::from_millis(100);
/// A video track silent longer than this is frozen.
pub const FREEZE_GAP: Duration = Duration::from_millis(500);
/// Opus sends one packet per 20 ms.
const AUDIO_PACKETS_PER_S: f64 = 50.0;

/// Flags of `surge-loadgen calls`.
#[derive(Debug, Clone, clap::Args)]
pub struct CallsArgs {
    /// Base URL of the API (it hands out the shards' signalling URLs).
    #[arg(
        long,
        env = "SURGE_LOADGEN_TARGET",
        default_value = "http://127.0.0.1:8080"
    )]
    pub target: String,
    /// Number of rooms.
    #[arg(long, default_value_t = 4)]
    pub rooms: usize,
    /// Publishers per room (audio + three-layer simulcast video; they also receive).
    #[arg(long, default_value_t = 2)]
    pub publishers: usize,
    /// Subscribers per room (receive only).
    #[arg(long, default_value_t = 6)]
    pub subscribers: usize,
    /// How long the calls last once everyone has joined.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Receive cap (bits/s) for some subscribers, so the SFU must pick lower layers.
    #[arg(long)]
    pub subscriber_cap_bps: Option<u64>,
    /// How many subscribers per room get --subscriber-cap-bps.
    #[arg(long, default_value_t = 2)]
    pub capped_subscribers: usize,
    /// Time between two joins (joins are staggered like people arriving).
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub join_interval: Duration,
    /// Silence after which a participant assumes its shard died and rejoins via the API.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub rejoin_after: Duration,
    /// Local addresses API requests are sent from (signups are limited per client): a count
    /// N (127.0.0.1..=127.0.0.N) or a list of addresses and ranges, as for `signup`.
    #[arg(long, default_value = "8")]
    pub source_ips: SourceIps,
    /// PEM file of extra CA certificates to trust for an https:// target.
    #[arg(long, env = "SURGE_LOADGEN_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Per-request timeout for API calls.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The SFU under load: Surge (through its API at --target) or Janus's videoroom
    /// (through its REST API at --janus-url), for side-by-side comparisons.
    #[arg(long, value_enum, default_value_t = SfuKind::Surge)]
    pub sfu: SfuKind,
    /// Janus's REST endpoint, with --sfu janus.
    #[arg(long, default_value = "http://127.0.0.1:8088/janus")]
    pub janus_url: String,
    /// Address the participants' media sockets bind (a veth's when the SFU runs in a
    /// network namespace).
    #[arg(long, default_value_t = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))]
    pub bind_ip: std::net::IpAddr,
    /// Publishers send audio only.
    #[arg(long)]
    pub audio_only: bool,
    /// Participants read their sockets on this interval instead of waking per datagram, so
    /// co-located receivers do not bill the SFU for a wake-up per packet.
    #[arg(long, value_parser = parse_duration)]
    pub receive_interval: Option<Duration>,
    /// Measure this process's CPU (from /proc) over the steady window: the SFU's pid.
    #[arg(long)]
    pub sfu_pid: Option<u32>,
    /// The steady window (delivered packets/s, SFU CPU) starts this long after the last
    /// join started.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Participants that change networks mid-call (ICE restart).
    #[command(flatten)]
    pub network: NetworkChangeArgs,
    /// `relay`: participants gather only a TURN relayed candidate, with the credentials of
    /// the join answer (the API's `--turn-urls`), so all media goes through the TURN server;
    /// `all`: their host candidate, media straight to the shard.
    #[arg(long, value_enum, env = "SURGE_LOADGEN_ICE_TRANSPORT", default_value_t = IceTransportArg::All)]
    pub ice_transport: IceTransportArg,
}

/// `--ice-transport`, as a browser's `iceTransportPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum IceTransportArg {
    #[default]
    All,
    Relay,
}

impl From<IceTransportArg> for IceTransport {
    fn from(arg: IceTransportArg) -> Self {
        match arg {
            IceTransportArg::All => IceTransport::All,
            IceTransportArg::Relay => IceTransport::Relay,
        }
    }
}

/// Which SFU a calls run loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SfuKind {
    #[default]
    Surge,
    Janus,
}

impl CallsArgs {
    /// Defaults for tests and library callers.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            rooms: 4,
            publishers: 2,
            subscribers: 6,
            duration: Duration::from_secs(60),
            subscriber_cap_bps: None,
            capped_subscribers: 2,
            join_interval: Duration::from_millis(50),
            rejoin_after: Duration::from_secs(3),
            source_ips: SourceIps::count(8),
            ca_cert: None,
            timeout: Duration::from_secs(15),
            sfu: SfuKind::Surge,
            janus_url: "http://127.0.0.1:8088/janus".to_owned(),
            bind_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            audio_only: false,
            receive_interval: None,
            sfu_pid: None,
            settle: Duration::from_secs(5),
            ice_transport: IceTransportArg::All,
            network: NetworkChangeArgs::default(),
        }
    }
}

/// Errors that stop a calls run before the calls start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallsError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{step} failed: {detail}")]
    Api { step: &'static str, detail: String },
    #[error("--rooms and --publishers + --subscribers must be at least 1")]
    Empty,
    #[error("Janus: {0}")]
    Janus(#[from] crate::janus::JanusError),
    #[error("--network-change-after restarts ICE through Surge's API; it needs --sfu surge")]
    NetworkChangeNeedsSurge,
    #[error("{given} logged-in users were given for calls that need {needed}")]
    Sessions { given: usize, needed: usize },
}

/// What one remote track delivered to one participant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrackReport {
    pub mid: String,
    pub from: Option<String>,
    pub kind: String,
    pub packets: u64,
    /// Mean received bitrate since the track's first packet.
    pub mean_bps: u64,
    /// Bitrate over the last second before the end.
    pub last_bps: u64,
    /// The layer of the last packet (`q`, `h`, `f`).
    pub layer: Option<String>,
    /// Share of packets per layer.
    pub layer_share: [f64; 3],
    pub keyframes: u64,
    pub freezes: u32,
    pub longest_gap_ms: f64,
    /// Audio only: 1 − received / (50 packets/s × time receiving): the shortfall against
    /// Opus's nominal rate, so it counts loss anywhere on the path (SFU, sockets, a
    /// starved receiver), not only on the wire.
    pub loss_estimate: Option<f64>,
    /// Packets the SFU sent on this track, from the span of sequence numbers received.
    #[serde(default)]
    pub sent: u64,
}

/// One participant's view of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ParticipantReport {
    pub room: usize,
    pub role: String,
    pub index: usize,
    pub cap_bps: Option<u64>,
    pub joined: bool,
    pub error: Option<String>,
    /// Offer sent → first media received (any track).
    pub join_ms: Option<f64>,
    /// The first session's join, phase by phase, per remote track.
    pub breakdown: Option<JoinBreakdown>,
    /// Offer sent → ICE and DTLS connected.
    pub connect_ms: Option<f64>,
    pub rejoins: u32,
    pub rejoin_ms: Vec<f64>,
    pub video: Vec<TrackReport>,
    pub audio: Vec<TrackReport>,
    /// Its (last) session went through a TURN relay.
    #[serde(default)]
    pub relayed: bool,
    /// Its network change, when it made one (`--network-change-after`).
    #[serde(default)]
    pub moved: Option<MoveReport>,
    /// Its room mates' network changes, as it saw them.
    #[serde(default)]
    pub observed: Vec<ObservedMove>,
}

impl ParticipantReport {
    /// Whether it received video from `publishers` others (itself excluded).
    fn got_all_video(&self, publishers: usize) -> bool {
        self.video.iter().filter(|t| t.packets > 0).count() >= publishers
    }
}

/// One second of the whole run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallsPoint {
    pub t: f64,
    pub connected: u64,
    /// Video received by all participants, bits/s.
    pub video_rx_bps: f64,
    pub audio_rx_bps: f64,
    pub frozen_tracks: u64,
}

/// Everything a calls run measured; written as `result.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallsResult {
    pub target: String,
    pub rooms: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub duration_secs: f64,
    /// Offer sent → first media (any track).
    pub join: Percentiles,
    /// Join (or a track's publication, when later) → first video frame of every remote
    /// track: the join time people see.
    pub first_video: Percentiles,
    /// Every phase of the joins.
    pub join_phases: JoinPhases,
    pub join_distribution: Vec<(f64, u64)>,
    /// Distribution of `first_video` (per participant).
    pub first_video_distribution: Vec<(f64, u64)>,
    pub rejoin: Percentiles,
    pub participants: Vec<ParticipantReport>,
    /// Subscribers by the layer they ended on, e.g. `"f": 20, "q": 4`.
    pub layer_mix: Mix,
    pub freezes: u64,
    pub audio_loss_mean: f64,
    /// Packets all participants received per second (≈ what the SFU forwarded).
    pub received_packets_per_s: f64,
    /// The SFU that was loaded.
    #[serde(default)]
    pub sfu: SfuKind,
    /// Everyone joined and settled until the end: delivered packets and the SFU's CPU.
    #[serde(default)]
    pub steady: Option<SteadyWindow>,
    /// 1 − packets received ÷ packets the SFU sent (sequence-number span), over all
    /// receiving tracks, after retransmissions.
    #[serde(default)]
    pub delivery_loss: f64,
    /// Participants whose session went through a TURN relay (`--ice-transport relay`).
    #[serde(default)]
    pub relayed: usize,
    /// With `--network-change-after`: how the moves went.
    #[serde(default)]
    pub network_changes: Option<NetworkChanges>,
    pub timeline: Vec<CallsPoint>,
    pub verdict: Verdict,
}

/// The part of the run with everyone in: what the SFU delivered, at what CPU cost.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SteadyWindow {
    pub secs: f64,
    /// RTP packets all participants received per second.
    pub delivered_per_s: f64,
    /// CPU seconds (user + system) the SFU process used in the window (with --sfu-pid).
    pub sfu_cpu_secs: Option<f64>,
    /// Delivered packets per SFU CPU-second.
    pub delivered_per_cpu_s: Option<f64>,
}

/// A user who can join rooms.
#[derive(Debug, Clone)]
struct User {
    session: String,
}

/// Signs up and logs in one user (retrying when shed).
async fn make_user(
    api: &ApiClient,
    factory: &IdentityFactory,
    seq: u64,
) -> Result<User, CallsError> {
    let user = sign_up_and_log_in(api, factory, seq)
        .await
        .map_err(|e| CallsError::Api {
            step: e.step,
            detail: e.detail,
        })?;
    Ok(User {
        session: user.session,
    })
}

async fn create_room(api: &ApiClient, user: &User, n: usize) -> Result<String, CallsError> {
    let body = json!({"name": format!("Load test room {n}")});
    let a = api
        .send(
            &Request {
                method: Method::POST,
                path: "/v1/rooms",
                bearer: Some(&user.session),
                idempotency_key: None,
                body: Some(&body),
            },
            Instant::now(),
        )
        .await;
    a.body
        .as_ref()
        .and_then(|b| b["id"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| CallsError::Api {
            step: "create room",
            detail: format!("{:?} {:?}", a.outcome, a.code),
        })
}

/// Joins through the API, which places the room and relays the offer to its shard; retries
/// while the API sheds the join (429/503) or the shard's answer does not come.
async fn join(
    api: &ApiClient,
    user: &User,
    room: &str,
    template: &ParticipantConfig,
) -> Result<Participant, String> {
    let policy = RetryPolicy {
        max_retries: 10,
        max_wait: Duration::from_secs(10),
        jitter: 0.25,
    };
    let mut config = template.clone();
    config.signal_url = format!("{}/v1/rooms/{room}/participants", api.base());
    config.token = user.session.clone();
    let mut retry = 0;
    loop {
        config.http = Some(api.http());
        let error = match Participant::join(config.clone()).await {
            Ok(participant) => return Ok(participant),
            Err(e) => e,
        };
        let shed = matches!(
            &error,
            ParticipantError::Refused {
                status: 429 | 503,
                ..
            }
        ) || matches!(&error, ParticipantError::Http(_));
        retry += 1;
        match policy.wait(retry, None).filter(|_| shed) {
            Some(wait) => tokio::time::sleep(wait).await,
            None => return Err(format!("join: {error}")),
        }
    }
}

/// Per remote track, what the watcher remembers between samples.
#[derive(Debug, Clone)]
struct TrackWatch {
    report: TrackReport,
    first_at: Option<Instant>,
    last_change: Option<Instant>,
    last_packets: u64,
    last_bytes: u64,
}

/// Live view shared with the progress ticker and the timeline.
#[derive(Debug, Default, Clone)]
struct Live {
    connected: bool,
    video_bytes: u64,
    audio_bytes: u64,
    packets: u64,
    frozen: u64,
}

struct Watcher {
    report: ParticipantReport,
    tracks: Vec<TrackWatch>,
    /// Tracks of earlier sessions (before a rejoin), kept for the totals.
    retired: Vec<TrackWatch>,
    joined_at: Instant,
    first_media: Option<Instant>,
    last_media: Option<Instant>,
    /// The first session's latest statistics (the join breakdown is of that session).
    first_session: Option<ParticipantStats>,
}

impl Watcher {
    /// Keeps the first session's statistics for the breakdown.
    fn keep_first_session(&mut self, stats: &ParticipantStats) {
        if self.report.rejoins == 0 {
            self.first_session = Some(stats.clone());
        }
    }

    /// Computes the join breakdown of the first session, and the exact first-media time.
    fn break_down(&mut self, published: &HashMap<String, std::time::Instant>) {
        let Some(stats) = self.first_session.take() else {
            return;
        };
        let joined_at = self.joined_at.into_std();
        let b = breakdown(&stats, joined_at, published);
        if let Some(started) = stats.started
            && let Some(first) = stats.tracks.iter().filter_map(|t| t.first_packet_at).min()
        {
            let at = started + first;
            self.report.join_ms =
                Some(at.saturating_duration_since(joined_at).as_secs_f64() * 1000.0);
        }
        self.report.breakdown = Some(b);
    }

    fn sample(&mut self, stats: &ParticipantStats, now: Instant, live: &mut Live) {
        if self.report.connect_ms.is_none() {
            self.report.connect_ms = stats.join_time.map(|d| d.as_secs_f64() * 1000.0);
        }
        live.connected = stats.connected;
        self.report.relayed = stats.relayed.is_some();
        let mut frozen = 0;
        for t in &stats.tracks {
            let w = match self.tracks.iter().position(|w| w.report.mid == t.mid) {
                Some(i) => &mut self.tracks[i],
                None => {
                    self.tracks.push(TrackWatch {
                        report: TrackReport {
                            mid: t.mid.clone(),
                            kind: t.kind.clone(),
                            ..Default::default()
                        },
                        first_at: None,
                        last_change: None,
                        last_packets: 0,
                        last_bytes: 0,
                    });
                    let last = self.tracks.len() - 1;
                    &mut self.tracks[last]
                }
            };
            w.report.from.clone_from(&t.participant_id);
            if w.report.kind.is_empty() {
                w.report.kind.clone_from(&t.kind);
            }
            if t.packets > w.last_packets {
                if w.first_at.is_none() {
                    w.first_at = Some(now);
                }
                if let Some(prev) = w.last_change {
                    let gap = now.duration_since(prev);
                    if t.kind == "video" && gap > FREEZE_GAP {
                        w.report.freezes += 1;
                    }
                    let gap_ms = gap.as_secs_f64() * 1000.0;
                    if gap_ms > w.report.longest_gap_ms {
                        w.report.longest_gap_ms = gap_ms;
                    }
                }
                w.last_change = Some(now);
                if self.first_media.is_none() {
                    self.first_media = Some(now);
                    self.report.join_ms =
                        Some(now.duration_since(self.joined_at).as_secs_f64() * 1000.0);
                }
                self.last_media = Some(now);
            } else if t.kind == "video"
                && w.last_change
                    .is_some_and(|c| now.duration_since(c) > FREEZE_GAP)
            {
                frozen += 1;
            }
            let bytes = t.bytes.saturating_sub(w.last_bytes);
            if t.kind == "video" {
                live.video_bytes += bytes;
            } else {
                live.audio_bytes += bytes;
            }
            live.packets += t.packets.saturating_sub(w.last_packets);
            w.last_packets = t.packets;
            w.last_bytes = t.bytes;
            let r = &mut w.report;
            r.packets = t.packets;
            r.last_bps = t.bitrate_bps;
            r.layer.clone_from(&t.layer);
            r.keyframes = t.keyframes;
            r.sent = t.seq_span.map_or(0, |(low, high)| high - low + 1);
            let total: u64 = t.layer_packets.iter().sum();
            if total > 0 {
                for (share, n) in r.layer_share.iter_mut().zip(t.layer_packets) {
                    *share = n as f64 / total as f64;
                }
            }
            if let Some(first) = w.first_at {
                let secs = now.duration_since(first).as_secs_f64();
                if secs >= 1.0 {
                    r.mean_bps = (t.bytes as f64 * 8.0 / secs) as u64;
                    if t.kind == "audio" {
                        let expected = secs * AUDIO_PACKETS_PER_S;
                        r.loss_estimate = Some((1.0 - t.packets as f64 / expected).max(0.0));
                    }
                }
            }
        }
        live.frozen = frozen;
    }

    /// Starts a fresh session's tracks after a rejoin.
    fn rejoined(&mut self) {
        self.retired.append(&mut self.tracks);
    }

    fn finish(mut self) -> ParticipantReport {
        for w in self.tracks {
            let r = w.report;
            if r.kind == "video" {
                self.report.video.push(r);
            } else {
                self.report.audio.push(r);
            }
        }
        self.report.video.sort_by(|a, b| a.mid.cmp(&b.mid));
        self.report
    }
}

struct Slot {
    room: usize,
    role: &'static str,
    index: usize,
    template: ParticipantConfig,
    user: User,
    /// Change networks this long after joining.
    move_after: Option<Duration>,
}

/// What the participants of one room tell each other: a publisher receives nothing when
/// it is alone, and str0m takes longer than a run to declare a dead path failed, so the
/// first participant to notice its shard is gone tells its room mates (a browser would
/// learn it from ICE consent failing, ~30 s later).
#[derive(Debug, Default)]
struct RoomSignal {
    /// Bumped each time someone in the room noticed its shard died.
    generation: std::sync::atomic::AtomicU64,
    /// The room's last media before the latest loss.
    lost_at: std::sync::Mutex<Option<Instant>>,
    /// When each publisher's join was answered (its tracks came to exist), by participant
    /// id: the clock start of a track published after a participant joined.
    published: std::sync::Mutex<HashMap<String, std::time::Instant>>,
    /// Network changes announced in the room.
    moves: RoomMoves,
}

impl RoomSignal {
    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Reports a loss seen from generation `seen`; returns the generation to adopt.
    fn lost(&self, seen: u64, at: Instant) -> u64 {
        let mut lost_at = crate::lock(&self.lost_at);
        if self.generation() == seen {
            *lost_at = Some(at);
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
                + 1
        } else {
            self.generation()
        }
    }

    fn lost_at(&self) -> Option<Instant> {
        *crate::lock(&self.lost_at)
    }

    /// A publisher's join was answered.
    fn published(&self, participant: &Participant) {
        let stats = participant.stats();
        if let (Some(id), Some(started), Some(answer)) =
            (stats.participant_id, stats.started, stats.answer_at)
        {
            crate::lock(&self.published).insert(id, started + answer);
        }
    }

    fn publications(&self) -> HashMap<String, std::time::Instant> {
        crate::lock(&self.published).clone()
    }
}

/// Runs one participant from join to the end of the run, rejoining if its shard dies.
async fn run_participant(
    api: ApiClient,
    slot: Slot,
    room_id: String,
    end: Instant,
    rejoin_after: Duration,
    live: Arc<AsyncMutex<Live>>,
    room: Arc<RoomSignal>,
) -> ParticipantReport {
    let joined_at = Instant::now();
    let mut w = Watcher {
        report: ParticipantReport {
            room: slot.room,
            role: slot.role.to_owned(),
            index: slot.index,
            cap_bps: slot.template.max_receive_bps,
            ..Default::default()
        },
        tracks: Vec::new(),
        retired: Vec::new(),
        joined_at,
        first_media: None,
        last_media: None,
        first_session: None,
    };
    let mut generation = room.generation();
    let mut participant = match join(&api, &slot.user, &room_id, &slot.template).await {
        Ok(p) => p,
        Err(e) => {
            w.report.error = Some(e);
            return w.finish();
        }
    };
    w.report.joined = true;
    if slot.template.video {
        room.published(&participant);
    }
    let mut mover = slot
        .move_after
        .map(|after| Mover::new(Instant::now(), after, end));
    let mut observer = Observer::default();
    let mut interval = tokio::time::interval(SAMPLE);
    while Instant::now() < end {
        interval.tick().await;
        let now = Instant::now();
        let stats = participant.stats();
        w.keep_first_session(&stats);
        {
            let mut l = live.lock().await;
            w.sample(&stats, now, &mut l);
        }
        observer.sample(&room.moves, &stats, now.into_std());
        if let Some(m) = mover.as_mut()
            && m.step(now, &stats, &room.moves) == Step::Restart
        {
            match change_network(&api, &slot, &room_id, end, m, &room.moves, participant).await {
                Ok((p, rejoined)) => {
                    participant = p;
                    if rejoined {
                        w.rejoined();
                        w.report.rejoins += 1;
                    }
                }
                Err(e) => {
                    w.report.error = Some(e);
                    w.report.moved = mover.and_then(Mover::finish);
                    w.report.observed = observer.finish();
                    return w.finish();
                }
            }
            continue;
        }
        let silent = w
            .last_media
            .is_some_and(|last| now.duration_since(last) > rejoin_after);
        let lost_at = if silent {
            let at = w.last_media.unwrap_or(now);
            generation = room.lost(generation, at);
            room.lost_at().unwrap_or(at)
        } else if room.generation() != generation {
            generation = room.generation();
            room.lost_at().unwrap_or(now)
        } else {
            continue;
        };
        // The shard is gone (or the path to it): drop the session without a word, as a
        // browser whose server vanished would, and rejoin through the API.
        tracing::info!(
            room = slot.room,
            index = slot.index,
            "shard lost; rejoining"
        );
        let expects_media = w.first_media.is_some();
        let old = participant;
        let _ = tokio::task::spawn_blocking(move || old.vanish()).await;
        w.rejoined();
        w.report.rejoins += 1;
        loop {
            match join(&api, &slot.user, &room_id, &slot.template).await {
                Ok(p) => {
                    participant = p;
                    if slot.template.video {
                        room.published(&participant);
                    }
                    break;
                }
                Err(e) if Instant::now() < end => {
                    tracing::warn!(error = %e, "rejoin failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    w.report.error = Some(format!("rejoin: {e}"));
                    return w.finish();
                }
            }
        }
        // Back when media flows again (or, for one who receives nothing, when connected);
        // the interruption counts from the room's last packet before the loss.
        let deadline = end.min(Instant::now() + Duration::from_secs(15));
        loop {
            tokio::time::sleep(SAMPLE).await;
            let now = Instant::now();
            let stats = participant.stats();
            let back = if expects_media {
                stats.tracks.iter().any(|t| t.packets > 0)
            } else {
                stats.connected
            };
            if back {
                w.report
                    .rejoin_ms
                    .push(now.duration_since(lost_at).as_secs_f64() * 1000.0);
                let mut l = live.lock().await;
                w.sample(&stats, now, &mut l);
                break;
            }
            if now >= deadline {
                break;
            }
        }
    }
    w.report.moved = mover.and_then(Mover::finish);
    w.report.observed = observer.finish();
    let final_stats = participant.stats();
    w.keep_first_session(&final_stats);
    w.break_down(&room.publications());
    {
        let mut l = live.lock().await;
        w.sample(&final_stats, Instant::now(), &mut l);
        l.connected = false;
    }
    let _ = participant.leave().await;
    w.finish()
}

/// Moves `participant` to a new network: restarts ICE on the same session, or, when the
/// restart fails, rejoins through the API (as the web client falls back). Returns the
/// session to go on with and whether it is a new one.
async fn change_network(
    api: &ApiClient,
    slot: &Slot,
    room_id: &str,
    end: Instant,
    mover: &mut Mover,
    moves: &RoomMoves,
    participant: Participant,
) -> Result<(Participant, bool), String> {
    let at = mover.restarting(moves);
    match participant.restart_ice().await {
        Ok(()) => {
            mover.restarted(at);
            return Ok((participant, false));
        }
        Err(e) => {
            tracing::warn!(room = slot.room, index = slot.index, error = %e, "ICE restart failed; rejoining");
            mover.fell_back(e.to_string());
        }
    }
    let _ = tokio::task::spawn_blocking(move || participant.vanish()).await;
    loop {
        match join(api, &slot.user, room_id, &slot.template).await {
            Ok(p) => return Ok((p, true)),
            Err(e) if Instant::now() < end => {
                tracing::warn!(error = %e, "rejoin after a failed ICE restart failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(format!("rejoin after a network change: {e}")),
        }
    }
}

/// Who the participants are and how they join.
enum Backend {
    /// Through Surge's API: one user each, a room per API room id.
    Surge {
        api: ApiClient,
        users: std::vec::IntoIter<User>,
        rooms: Vec<String>,
    },
    /// Through Janus's REST API: videoroom ids and each room's board of live feeds.
    Janus {
        http: reqwest::Client,
        rooms: Vec<(u64, Arc<crate::janus::FeedBoard>)>,
    },
}

/// Signs up and logs in `total` users, a few at a time (each costs the server two Argon2
/// hashes).
async fn make_users(api: &ApiClient, total: usize) -> Result<Vec<User>, CallsError> {
    let factory = IdentityFactory::new(IdentityFactory::random_tag(&mut rand::rng()));
    let mut users = Vec::with_capacity(total);
    let mut pending = JoinSet::new();
    let mut next = 0u64;
    while users.len() < total {
        while pending.len() < 4 && (next as usize) < total {
            let (api, factory) = (api.clone(), factory.clone());
            let seq = next;
            pending.spawn(async move { make_user(&api, &factory, seq).await });
            next += 1;
        }
        match pending.join_next().await {
            Some(Ok(user)) => users.push(user?),
            Some(Err(e)) => {
                return Err(CallsError::Api {
                    step: "signup",
                    detail: e.to_string(),
                });
            }
            None => break,
        }
    }
    Ok(users)
}

async fn prepare(
    args: &CallsArgs,
    per_room: usize,
    sessions: Option<Vec<String>>,
) -> Result<Backend, CallsError> {
    match args.sfu {
        SfuKind::Surge => {
            let api = ApiClient::new(
                &args.target,
                &args.source_ips,
                args.timeout,
                args.ca_cert.as_deref(),
            )?;
            let total = args.rooms * per_room;
            let users = match sessions {
                Some(sessions) if sessions.len() >= total => sessions
                    .into_iter()
                    .take(total)
                    .map(|session| User { session })
                    .collect(),
                Some(sessions) => {
                    return Err(CallsError::Sessions {
                        given: sessions.len(),
                        needed: total,
                    });
                }
                None => make_users(&api, total).await?,
            };
            let mut rooms = Vec::with_capacity(args.rooms);
            for r in 0..args.rooms {
                rooms.push(create_room(&api, &users[r * per_room], r).await?);
            }
            Ok(Backend::Surge {
                api,
                users: users.into_iter(),
                rooms,
            })
        }
        SfuKind::Janus => {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .map_err(|e| CallsError::Api {
                    step: "HTTP client",
                    detail: e.to_string(),
                })?;
            let settings = crate::janus::RoomSettings {
                publishers: u32::try_from(args.publishers.max(1)).unwrap_or(u32::MAX),
                // Room for the three layers, as a browser's simulcast would want.
                bitrate: surge_participant::LAYER_BPS.iter().sum::<u64>() + 350_000,
            };
            let ids =
                crate::janus::create_rooms(&http, &args.janus_url, args.rooms, &settings).await?;
            Ok(Backend::Janus {
                http,
                rooms: ids.into_iter().map(|id| (id, Arc::default())).collect(),
            })
        }
    }
}

/// Runs the calls and returns what they measured.
pub async fn run(args: &CallsArgs, quiet: bool) -> Result<CallsResult, CallsError> {
    run_with_sessions(args, None, quiet).await
}

/// [`run`] with participants who are already logged in (Surge only): the session tokens of
/// `rooms × (publishers + subscribers)` users, in room order, instead of signing up new ones.
pub async fn run_with_sessions(
    args: &CallsArgs,
    sessions: Option<Vec<String>>,
    quiet: bool,
) -> Result<CallsResult, CallsError> {
    if args.rooms == 0 || args.publishers + args.subscribers == 0 {
        return Err(CallsError::Empty);
    }
    if args.network.network_change_after.is_some() && args.sfu != SfuKind::Surge {
        return Err(CallsError::NetworkChangeNeedsSurge);
    }
    let per_room = args.publishers + args.subscribers;
    let total = args.rooms * per_room;
    let mut backend = prepare(args, per_room, sessions).await?;

    // Joins are staggered; the calls last `duration` after the last join.
    let join_span = args.join_interval * total as u32;
    let end = Instant::now() + join_span + args.duration;
    let start = Instant::now();
    let steady_from = start + join_span + args.settle;
    let live: Vec<Arc<AsyncMutex<Live>>> = (0..total).map(|_| Default::default()).collect();
    let mut tasks = JoinSet::new();
    for r in 0..args.rooms {
        let signal = Arc::new(RoomSignal::default());
        for i in 0..per_room {
            let publisher = i < args.publishers;
            let sub_index = i.saturating_sub(args.publishers);
            let template = {
                let mut c = ParticipantConfig::new("", "");
                c.video = !args.audio_only;
                c.bind_ip = args.bind_ip;
                c.receive_interval = args.receive_interval;
                c.ice_transport = args.ice_transport.into();
                let mut c = if publisher { c } else { c.subscriber_only() };
                if !publisher && sub_index < args.capped_subscribers {
                    c.max_receive_bps = args.subscriber_cap_bps;
                }
                c
            };
            let role = if publisher { "publisher" } else { "subscriber" };
            let index = if publisher { i } else { sub_index };
            let live = live[r * per_room + i].clone();
            match &mut backend {
                Backend::Surge { api, users, rooms } => {
                    let Some(user) = users.next() else { break };
                    let slot = Slot {
                        room: r,
                        role,
                        index,
                        template,
                        user,
                        move_after: args.network.after_for(i, per_room),
                    };
                    tasks.spawn(run_participant(
                        api.clone(),
                        slot,
                        rooms[r].clone(),
                        end,
                        args.rejoin_after,
                        live,
                        signal.clone(),
                    ));
                }
                Backend::Janus { http, rooms } => {
                    let (room_id, board) = rooms[r].clone();
                    let janus_role = crate::janus::JanusRole {
                        room: room_id,
                        display: format!("{role}-{index}"),
                        publish: publisher,
                        receive_feeds: if publisher {
                            args.publishers - 1
                        } else {
                            args.publishers
                        },
                    };
                    let report = ParticipantReport {
                        room: r,
                        role: role.to_owned(),
                        index,
                        cap_bps: template.max_receive_bps,
                        ..Default::default()
                    };
                    tasks.spawn(run_janus_participant(
                        http.clone(),
                        args.janus_url.clone(),
                        janus_role,
                        template,
                        board,
                        report,
                        end,
                        live,
                    ));
                }
            }
            tokio::time::sleep(args.join_interval).await;
        }
    }

    // Sample the whole run once a second for the timeline and the progress line.
    let mut progress = Progress::new(end.duration_since(start), quiet);
    let mut timeline = Vec::new();
    let mut packets_total = 0u64;
    let mut steady_start: Option<(Instant, u64, Option<f64>)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_tick = Instant::now();
    while Instant::now() < end {
        tick.tick().await;
        let now = Instant::now();
        let dt = now.duration_since(last_tick).as_secs_f64().max(1e-3);
        last_tick = now;
        let mut p = CallsPoint {
            t: now.duration_since(start).as_secs_f64(),
            ..Default::default()
        };
        for l in &live {
            let mut l = l.lock().await;
            p.connected += u64::from(l.connected);
            p.video_rx_bps += l.video_bytes as f64 * 8.0 / dt;
            p.audio_rx_bps += l.audio_bytes as f64 * 8.0 / dt;
            p.frozen_tracks += l.frozen;
            packets_total += l.packets;
            l.video_bytes = 0;
            l.audio_bytes = 0;
            l.packets = 0;
        }
        if steady_start.is_none() && now >= steady_from {
            steady_start = Some((now, packets_total, args.sfu_pid.and_then(process_cpu_secs)));
        }
        progress.update(
            now.duration_since(start),
            &format!(
                "connected {}/{total} | video rx {:.1} Mbit/s | frozen tracks {}",
                p.connected,
                p.video_rx_bps / 1e6,
                p.frozen_tracks
            ),
        );
        timeline.push(p);
    }
    let steady = steady_start.map(|(at, packets, cpu0)| {
        let secs = at.elapsed().as_secs_f64().max(1e-9);
        let delivered = packets_total.saturating_sub(packets) as f64;
        let cpu = match (cpu0, args.sfu_pid.and_then(process_cpu_secs)) {
            (Some(c0), Some(c1)) => Some((c1 - c0).max(0.0)),
            _ => None,
        };
        SteadyWindow {
            secs,
            delivered_per_s: delivered / secs,
            sfu_cpu_secs: cpu,
            delivered_per_cpu_s: cpu.filter(|c| *c > 0.0).map(|c| delivered / c),
        }
    });
    progress.finish();
    let elapsed = start.elapsed().as_secs_f64();
    let mut participants = Vec::with_capacity(total);
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(r) => participants.push(r),
            Err(e) => tracing::error!(error = %e, "participant task failed"),
        }
    }
    participants.sort_by_key(|p| (p.room, p.role.clone(), p.index));
    let mut result = summarise(args, participants, timeline, packets_total, elapsed);
    result.steady = steady;
    Ok(result)
}

/// Runs one participant of a Janus room from join to the end of the run (no rejoins: the
/// comparison runs on a healthy server).
#[allow(clippy::too_many_arguments)]
async fn run_janus_participant(
    http: reqwest::Client,
    url: String,
    role: crate::janus::JanusRole,
    template: ParticipantConfig,
    board: Arc<crate::janus::FeedBoard>,
    report: ParticipantReport,
    end: Instant,
    live: Arc<AsyncMutex<Live>>,
) -> ParticipantReport {
    let mut w = Watcher {
        report,
        tracks: Vec::new(),
        retired: Vec::new(),
        joined_at: Instant::now(),
        first_media: None,
        last_media: None,
        first_session: None,
    };
    let participant =
        match crate::janus::JanusParticipant::join(&http, &url, &role, &template, &board).await {
            Ok(p) => p,
            Err(e) => {
                w.report.error = Some(format!("join: {e}"));
                return w.finish();
            }
        };
    w.report.joined = true;
    // A subscriber's clock starts when it could subscribe (its publishers were up), as a
    // Surge subscriber's starts at its own join: waiting for publishers is not the SFU's.
    if let Some(started) = participant.stats().started {
        w.joined_at = Instant::from_std(started);
    }
    let mut interval = tokio::time::interval(SAMPLE);
    while Instant::now() < end {
        interval.tick().await;
        let stats = participant.stats();
        w.keep_first_session(&stats);
        let mut l = live.lock().await;
        w.sample(&stats, Instant::now(), &mut l);
    }
    let final_stats = participant.stats();
    w.keep_first_session(&final_stats);
    w.break_down(&HashMap::new());
    {
        let mut l = live.lock().await;
        w.sample(&final_stats, Instant::now(), &mut l);
        l.connected = false;
    }
    if let Err(e) = participant.leave().await {
        tracing::debug!(error = %e, "leaving Janus");
    }
    w.finish()
}

/// Remote audio tracks a participant should receive: every other publisher's.
fn expected_audio(args: &CallsArgs, p: &ParticipantReport) -> usize {
    if p.role == "publisher" {
        args.publishers.saturating_sub(1)
    } else {
        args.publishers
    }
}

fn summarise(
    args: &CallsArgs,
    participants: Vec<ParticipantReport>,
    timeline: Vec<CallsPoint>,
    packets_total: u64,
    elapsed: f64,
) -> CallsResult {
    let mut join = LatencyHistogram::new();
    let mut rejoin = LatencyHistogram::new();
    let mut layer_mix = Mix::default();
    let mut freezes = 0u64;
    let mut losses = Vec::new();
    let mut missing = 0usize;
    let mut failed_joins = 0usize;
    let (mut received, mut sent) = (0u64, 0u64);
    for p in &participants {
        if let Some(ms) = p.join_ms {
            join.record(Duration::from_secs_f64(ms / 1000.0));
        }
        for ms in &p.rejoin_ms {
            rejoin.record(Duration::from_secs_f64(ms / 1000.0));
        }
        if !p.joined || p.error.is_some() {
            failed_joins += 1;
        }
        // Publishers see the other publishers; subscribers see all of them.
        let expected = if args.audio_only {
            0
        } else if p.role == "publisher" {
            args.publishers.saturating_sub(1)
        } else {
            args.publishers
        };
        if !p.got_all_video(expected) {
            missing += 1;
        }
        for t in &p.video {
            freezes += u64::from(t.freezes);
            if p.role == "subscriber" {
                layer_mix.add(t.layer.clone().unwrap_or_else(|| "none".to_owned()));
            }
        }
        losses.extend(p.audio.iter().filter_map(|t| t.loss_estimate));
        for t in p.video.iter().chain(&p.audio) {
            received += t.packets.min(t.sent);
            sent += t.sent;
        }
        // Audio only: every remote publisher's audio must arrive instead.
        if args.audio_only
            && p.audio.iter().filter(|t| t.packets > 0).count() < expected_audio(args, p)
        {
            missing += 1;
        }
    }
    let delivery_loss = if sent == 0 {
        0.0
    } else {
        1.0 - received as f64 / sent as f64
    };
    let audio_loss_mean = if losses.is_empty() {
        0.0
    } else {
        losses.iter().sum::<f64>() / losses.len() as f64
    };
    let join_p = join.percentiles();
    let join_phases = phases(participants.iter().filter_map(|p| p.breakdown.as_ref()));
    let first_video = join_phases.all_video();
    let mut first_video_hist = LatencyHistogram::new();
    for ms in participants
        .iter()
        .filter_map(|p| p.breakdown.as_ref()?.all_video_ms)
    {
        first_video_hist.record(Duration::from_secs_f64(ms / 1000.0));
    }
    let relayed = participants.iter().filter(|p| p.relayed).count();
    let network_changes = crate::network_change::summarise(
        &args.network,
        participants
            .iter()
            .map(|p| (&p.moved, p.observed.as_slice())),
    );
    let pass = failed_joins == 0
        && missing == 0
        && !participants.is_empty()
        && network_changes.as_ref().is_none_or(NetworkChanges::pass);
    let mut line = format!(
        "{}: {} rooms × ({} publishers + {} subscribers) for {:.0}s; {} joined ({relayed} through a TURN relay), {} without all video; first video of every remote track p50 {:.0} ms p99 {:.0} ms (first media p50 {:.0} ms p99 {:.0} ms); layers {}; {} freezes; audio shortfall {:.2}%; delivery loss {:.2}%; {}",
        if pass { "PASS" } else { "FAIL" },
        args.rooms,
        args.publishers,
        args.subscribers,
        elapsed,
        participants.len() - failed_joins,
        missing,
        first_video.p50_ms,
        first_video.p99_ms,
        join_p.p50_ms,
        join_p.p99_ms,
        layer_mix
            .0
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(" "),
        freezes,
        audio_loss_mean * 100.0,
        delivery_loss * 100.0,
        if rejoin.is_empty() {
            "0 rejoins".to_owned()
        } else {
            format!(
                "{} rejoins (p50 {:.0} ms, max {:.0} ms)",
                rejoin.len(),
                rejoin.quantile_ms(0.5),
                rejoin.percentiles().max_ms
            )
        },
    );
    if let Some(n) = &network_changes {
        line.push_str("; ");
        line.push_str(&n.summary());
    }
    CallsResult {
        target: args.target.clone(),
        rooms: args.rooms,
        publishers: args.publishers,
        subscribers: args.subscribers,
        duration_secs: elapsed,
        join: join_p,
        first_video,
        join_phases,
        join_distribution: join.distribution(30),
        first_video_distribution: first_video_hist.distribution(30),
        rejoin: rejoin.percentiles(),
        participants,
        layer_mix,
        freezes,
        audio_loss_mean,
        received_packets_per_s: packets_total as f64 / elapsed.max(1e-9),
        sfu: args.sfu,
        steady: None,
        delivery_loss,
        relayed,
        network_changes,
        timeline,
        verdict: Verdict { pass, line },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use surge_participant::TrackStats;

    fn watcher(start: Instant) -> Watcher {
        Watcher {
            report: ParticipantReport::default(),
            tracks: Vec::new(),
            retired: Vec::new(),
            joined_at: start,
            first_media: None,
            last_media: None,
            first_session: None,
        }
    }

    fn stats(video_packets: u64, audio_packets: u64) -> ParticipantStats {
        ParticipantStats {
            connected: true,
            join_time: Some(Duration::from_millis(80)),
            tracks: vec![
                TrackStats {
                    mid: "1".into(),
                    kind: "video".into(),
                    packets: video_packets,
                    bytes: video_packets * 1000,
                    layer_packets: [0, video_packets, 0],
                    layer: (video_packets > 0).then(|| "h".to_owned()),
                    ..Default::default()
                },
                TrackStats {
                    mid: "2".into(),
                    kind: "audio".into(),
                    packets: audio_packets,
                    bytes: audio_packets * 80,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn join_time_freezes_layers_and_audio_shortfall() {
        let start = Instant::now();
        let mut w = watcher(start);
        let mut live = Live::default();
        // Nothing for 300 ms, then video and audio every 100 ms for 2 s...
        w.sample(&stats(0, 0), start + Duration::from_millis(100), &mut live);
        let mut v = 0;
        let mut a = 0;
        let mut t = Duration::from_millis(300);
        while t <= Duration::from_millis(2300) {
            v += 3;
            a += 5;
            w.sample(&stats(v, a), start + t, &mut live);
            t += SAMPLE;
        }
        // ...then video stops for 800 ms (a freeze) while audio goes on, then resumes.
        for _ in 0..8 {
            a += 5;
            w.sample(&stats(v, a), start + t, &mut live);
            t += SAMPLE;
        }
        assert_eq!(live.frozen, 1);
        v += 3;
        a += 5;
        w.sample(&stats(v, a), start + t, &mut live);
        assert_eq!(live.frozen, 0);
        let r = w.finish();
        assert_eq!(r.join_ms, Some(300.0));
        assert_eq!(r.connect_ms, Some(80.0));
        let video = &r.video[0];
        assert_eq!(video.freezes, 1);
        assert!((800.0..1000.0).contains(&video.longest_gap_ms), "{video:?}");
        assert_eq!(video.layer.as_deref(), Some("h"));
        assert_eq!(video.layer_share, [0.0, 1.0, 0.0]);
        // 5 packets per 100 ms is Opus's 50 per second: no shortfall.
        let loss = r.audio[0].loss_estimate.unwrap();
        assert!(loss < 0.06, "{loss}");
    }

    #[test]
    fn the_first_to_notice_a_lost_shard_bumps_the_room_generation_once() {
        let room = RoomSignal::default();
        let t = Instant::now();
        assert_eq!(room.lost(0, t), 1);
        // A room mate who noticed at the same time adopts the new generation.
        assert_eq!(room.lost(0, t + Duration::from_millis(50)), 1);
        assert_eq!(room.lost_at(), Some(t));
        assert_eq!(room.generation(), 1);
        assert_eq!(room.lost(1, t + Duration::from_secs(9)), 2);
    }

    #[test]
    fn a_publisher_expects_the_other_publishers_video() {
        let mut p = ParticipantReport::default();
        assert!(p.got_all_video(0));
        assert!(!p.got_all_video(1));
        p.video.push(TrackReport {
            packets: 10,
            ..Default::default()
        });
        assert!(p.got_all_video(1));
    }
}
