//! A headless conference participant on str0m, for tests, benchmarks and the load
//! generator.
//!
//! It joins a room by posting its SDP offer with a bearer token (a session token for the
//! API's `/v1/rooms/{id}/participants`, or a join token for a shard's own route), publishes
//! synthetic media (three VP8 simulcast layers `q`/`h`/`f` with valid VP8 payload
//! descriptors, a keyframe every few seconds and on request, plus Opus with an audio
//! level), subscribes to the others' tracks by answering the server's offers on the
//! `surge` data channel, can cap what it receives (it announces the cap in its offer and
//! with REMB, and receives through an emulated thin link: a queue drained at the cap that
//! drops what would wait too long), and reports per remote track what it received, with
//! the times of each step of its join. With [`IceTransport::Relay`] it offers no candidate
//! of its own and, once the join is answered, reaches the shard only through a TURN relay
//! allocated with the answer's credentials ([`turn`]), as a browser behind a firewall that
//! lets only its TURN server through.
//!
//! The synthetic payloads end in a tag byte (`0xA0 | layer` for video, `0xB0` for audio),
//! so a receiver can tell which simulcast layer the SFU forwarded.
//!
//! ```no_run
//! # async fn demo(url: &str, token: &str) -> Result<(), surge_participant::ParticipantError> {
//! use surge_participant::{Participant, ParticipantConfig};
//! let me = Participant::join(ParticipantConfig::new(url, token)).await?;
//! tokio::time::sleep(std::time::Duration::from_secs(5)).await;
//! println!("{:?}", me.stats().tracks);
//! me.leave().await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use str0m::net::Receive;
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::{Event, IceConnectionState, Input, Rtc};
use surge_sfu_proto::protocol::{ClientMessage, Kind, ServerMessage, TrackSource};
use surge_sfu_proto::session::{Drain, Polled};
use surge_sfu_proto::synthetic::{add_publish_media, vp8_frame};

mod link;

use link::{Link, bound_session};

/// The rids the participant publishes, lowest first.
pub use surge_sfu_proto::synthetic::RIDS;

mod ice_servers;
pub use ice_servers::IceServer;
pub mod turn;
pub use turn::TurnError;
/// Default bitrates of the three layers, bits/s (roughly 180p, 360p, 720p).
pub const LAYER_BPS: [u64; 3] = [150_000, 500_000, 1_500_000];
const VIDEO_FPS: u32 = 30;
const AUDIO_FRAME: Duration = Duration::from_millis(20);
/// Opus at 32 kbit/s: 80 bytes per 20 ms.
const AUDIO_PAYLOAD: usize = 80;
const VIDEO_TAG: u8 = 0xA0;
const AUDIO_TAG: u8 = 0xB0;

/// How to join and what to send.
#[derive(Debug, Clone)]
pub struct ParticipantConfig {
    /// `POST` target: `<api>/v1/rooms/{room}/participants` (or a shard's
    /// `/v1/sfu/rooms/{room}/participants`).
    pub signal_url: String,
    /// The bearer token: a session token for the API, a join token for a shard.
    pub token: String,
    /// The HTTP client to signal with (one that trusts a staging CA, or binds a source
    /// address); a default one when `None`.
    pub http: Option<reqwest::Client>,
    /// Publish the synthetic video (three simulcast layers).
    pub video: bool,
    /// Publish the synthetic audio.
    pub audio: bool,
    /// With `video`: also offer a second video m-line, the screen's (the same synthetic
    /// simulcast, numbered on its own), and share it as soon as the data channel opens.
    pub screen: bool,
    /// The audio level to send (0 = loudest, 127 = silence).
    pub audio_level: u8,
    /// Cap on what it receives, bits/s: announced in the offer (`b=AS`) and with REMB, and
    /// enforced by an emulated thin link (a queue drained at this rate, drop-tail).
    pub max_receive_bps: Option<u64>,
    /// Bitrates of the three layers (bits/s).
    pub layer_bps: [u64; 3],
    /// A keyframe on every layer this often.
    pub keyframe_interval: Duration,
    /// IP the participant's UDP socket binds.
    pub bind_ip: IpAddr,
    /// Read the socket on this interval instead of waking per datagram. Benchmarks use it
    /// so that co-located receivers do not bill the SFU for a wake-up per packet, as a
    /// remote client on a real network would not.
    pub receive_interval: Option<Duration>,
    /// Use ICE-TCP only: offer one active TCP candidate and connect to the shard's passive
    /// one (RFC 6544, RFC 4571 framing), as a client behind a UDP-blocking firewall.
    pub tcp_only: bool,
    /// With `tcp_only`: stop reading the connection this long after it is up (a reader
    /// slower than its media, for tests of the shard's write-buffer limit).
    pub tcp_stall_after: Option<Duration>,
    /// Which ICE candidates it gathers: its host candidate, or only a TURN relayed one.
    pub ice_transport: IceTransport,
    /// TURN servers to try (relay-only) before those the join answer names.
    pub ice_servers: Vec<IceServer>,
}

/// The candidates a participant gathers, as a browser's `iceTransportPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IceTransport {
    /// Its own (host) candidate: media goes to the shard directly.
    #[default]
    All,
    /// Only a relayed candidate, allocated with the TURN credentials of the join answer
    /// (`Link: <turn:…>; rel="ice-server"`): every packet goes through the TURN server.
    Relay,
}

impl ParticipantConfig {
    /// Publishes audio and three-layer video, receives without a cap.
    pub fn new(signal_url: &str, token: &str) -> Self {
        Self {
            signal_url: signal_url.to_owned(),
            token: token.to_owned(),
            http: None,
            video: true,
            audio: true,
            screen: false,
            audio_level: 30,
            max_receive_bps: None,
            layer_bps: LAYER_BPS,
            keyframe_interval: Duration::from_secs(3),
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            receive_interval: None,
            tcp_only: false,
            tcp_stall_after: None,
            ice_transport: IceTransport::All,
            ice_servers: Vec::new(),
        }
    }

    /// Sends nothing, only receives.
    pub fn subscriber_only(mut self) -> Self {
        self.video = false;
        self.audio = false;
        self
    }
}

/// Why a participant could not join or leave.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParticipantError {
    /// The UDP socket could not be set up.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTP request failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// The shard refused the join (`status`, `code` from the JSON error).
    #[error("refused with {status}: {code}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The error code.
        code: String,
    },
    /// The session could not be set up.
    #[error("WebRTC: {0}")]
    Rtc(String),
    /// Relay-only, and no TURN relay could be allocated.
    #[error("TURN: {0}")]
    Turn(#[from] TurnError),
}

/// What arrived on one receiving m-line.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TrackStats {
    /// The m-line.
    pub mid: String,
    /// Whose track it carries (from the server's `tracks` message).
    pub participant_id: Option<String>,
    /// `audio` or `video`.
    pub kind: String,
    /// `audio`, `camera` or `screen` (from the server's `tracks` message).
    pub source: String,
    /// RTP packets received.
    pub packets: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Video packets per layer (`q`, `h`, `f`).
    pub layer_packets: [u64; 3],
    /// The layer of the last video packet.
    pub layer: Option<String>,
    /// Bitrate over the last full second, bits/s.
    pub bitrate_bps: u64,
    /// Keyframes received.
    pub keyframes: u64,
    /// Lowest and highest (extended) RTP sequence number received: the SFU numbers what
    /// it sends without gaps, so the span is what it sent and the shortfall of `packets`
    /// below it what was lost on the way (see [`TrackStats::delivery_loss`]).
    pub seq_span: Option<(u64, u64)>,
    /// When the server's offer that added this m-line arrived (from the join's start).
    pub offer_at: Option<Duration>,
    /// When the answer to that offer was sent.
    pub answered_at: Option<Duration>,
    /// When the server's `tracks` message listed it (the server took the answer).
    pub accepted_at: Option<Duration>,
    /// When its first RTP packet arrived.
    pub first_packet_at: Option<Duration>,
    /// When its first frame could be decoded: the first packet (audio); every packet of
    /// the first keyframe, from its start to its marker (video).
    pub first_frame_at: Option<Duration>,
    /// When its latest packet arrived.
    pub last_packet_at: Option<Duration>,
    /// The latest silences longer than [`AUDIO_GAP`] or [`VIDEO_GAP`] (at most [`GAPS_KEPT`]): when the packet
    /// before arrived and when the one that ended it did. A network change shows here as
    /// the time until media flows again.
    pub gaps: Vec<(Duration, Duration)>,
}

/// An audio track silent this long has a gap (Opus sends every 20 ms).
pub const AUDIO_GAP: Duration = Duration::from_millis(25);
/// A video track silent this long has a gap (a 30 fps frame every 33 ms).
pub const VIDEO_GAP: Duration = Duration::from_millis(40);
/// How many gaps a track remembers.
pub const GAPS_KEPT: usize = 64;

impl TrackStats {
    /// Share of the packets sent on this track (by sequence number) that did not arrive,
    /// after retransmissions; `None` before the first packet.
    pub fn delivery_loss(&self) -> Option<f64> {
        let (low, high) = self.seq_span?;
        let sent = (high - low + 1) as f64;
        Some((1.0 - self.packets as f64 / sent).max(0.0))
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Audio => "audio",
        Kind::Video => "video",
    }
}

fn source_name(source: TrackSource) -> &'static str {
    match source {
        TrackSource::Audio => "audio",
        TrackSource::Camera => "camera",
        TrackSource::Screen => "screen",
    }
}

/// What a participant saw.
#[derive(Debug, Clone, Default)]
pub struct ParticipantStats {
    /// Its id in the room.
    pub participant_id: Option<String>,
    /// From the start of the HTTP join to ICE+DTLS connected.
    pub join_time: Option<Duration>,
    /// When the join started (the offer was made); every `*_at` is measured from here.
    pub started: Option<Instant>,
    /// The SDP answer arrived (the HTTP join returned).
    pub answer_at: Option<Duration>,
    /// ICE found a working path.
    pub ice_connected_at: Option<Duration>,
    /// DTLS finished (str0m's `Connected`): media may flow.
    pub dtls_connected_at: Option<Duration>,
    /// The `surge` data channel opened (renegotiation can start).
    pub channel_open_at: Option<Duration>,
    /// Whether the session is connected.
    pub connected: bool,
    /// Per receiving m-line.
    pub tracks: Vec<TrackStats>,
    /// Every message from the server (events), in order.
    pub messages: Vec<ServerMessage>,
    /// RTP packets sent.
    pub sent_packets: u64,
    /// Datagrams dropped by the receive cap (the thin link's queue was full).
    pub capped_drops: u64,
    /// Renegotiations answered.
    pub offers_answered: u64,
    /// ICE restarts done (each on a new local socket).
    pub ice_restarts: u64,
    /// The TURN relayed address its media goes through (relay-only).
    pub relayed: Option<SocketAddr>,
    /// When the latest ICE restart moved to its new socket.
    pub moved_at: Option<Duration>,
    /// The first RTP packet after that move (on the new socket).
    pub media_after_move_at: Option<Duration>,
    /// The screen's m-line, when it offered one (`ParticipantConfig::screen`): stop sharing
    /// with [`ClientMessage::Screen`] on it.
    pub screen_mid: Option<String>,
}

impl ParticipantStats {
    /// The receiving tracks of `kind` (`audio`/`video`) that got packets.
    pub fn receiving(&self, kind: &str) -> Vec<&TrackStats> {
        self.tracks
            .iter()
            .filter(|t| t.kind == kind && t.packets > 0)
            .collect()
    }
}

/// A joined participant; its session runs on its own thread until [`Participant::leave`]
/// (or drop).
pub struct Participant {
    stats: Arc<Mutex<ParticipantStats>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    location: Option<String>,
    /// The TURN/STUN servers of the join answer (used in [`IceTransport::Relay`] mode).
    ice_servers: Vec<IceServer>,
    token: String,
    client: reqwest::Client,
    /// Messages to send on the data channel.
    outbox: Arc<Mutex<Vec<String>>>,
    /// Requests to the session thread.
    control: std::sync::mpsc::Sender<Control>,
}

/// What the caller asks of the session thread.
enum Control {
    /// Move to a new local socket and make an ICE restart offer (`Ok` is its SDP).
    Restart(tokio::sync::oneshot::Sender<Result<String, ParticipantError>>),
    /// The answer to the restart offer.
    Answer(
        String,
        tokio::sync::oneshot::Sender<Result<(), ParticipantError>>,
    ),
}

impl Participant {
    /// Joins: offers, posts the offer, starts the session thread.
    pub async fn join(config: ParticipantConfig) -> Result<Self, ParticipantError> {
        let client = config.http.clone().unwrap_or_default();
        let (signal_url, token, cap) = (
            config.signal_url.clone(),
            config.token.clone(),
            config.max_receive_bps,
        );
        let http = client.clone();
        // Where the shard put the participant, known as soon as the join is answered: a
        // relay that cannot be allocated afterwards leaves it again.
        let answered_location: Arc<Mutex<Option<String>>> = Arc::default();
        let answered = answered_location.clone();
        let launched = Self::offer_and_launch(&config, true, |offer| async move {
            let response = http
                .post(&signal_url)
                .bearer_auth(&token)
                .header("content-type", "application/sdp")
                .body(announce_receive_cap(offer, cap))
                .send()
                .await
                .map_err(|e| ParticipantError::Http(e.to_string()))?;
            let status = response.status();
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let ice_servers = ice_servers::from_link_headers(
                response
                    .headers()
                    .get_all("link")
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            let body = response
                .text()
                .await
                .map_err(|e| ParticipantError::Http(e.to_string()))?;
            if status.as_u16() != 201 {
                return Err(ParticipantError::Refused {
                    status: status.as_u16(),
                    code: error_code(&body),
                });
            }
            let participant_id = location
                .as_deref()
                .and_then(|l| l.rsplit('/').next())
                .map(str::to_owned);
            if let Ok(mut answered) = answered.lock() {
                *answered = location.clone();
            }
            Ok((
                body,
                participant_id,
                ice_servers.clone(),
                (location, ice_servers),
            ))
        })
        .await;
        let base = config
            .signal_url
            .find("/v1/")
            .map(|i| &config.signal_url[..i])
            .unwrap_or(&config.signal_url)
            .to_owned();
        let (parts, joined) = match launched {
            Ok(launched) => launched,
            Err(error) => {
                let location = answered_location.lock().ok().and_then(|mut l| l.take());
                if let Some(location) = location {
                    let _ = client
                        .delete(format!("{base}{location}"))
                        .bearer_auth(&config.token)
                        .send()
                        .await;
                }
                return Err(error);
            }
        };
        let (stats, stop, outbox, control, thread) = parts;
        let (location, ice_servers) = joined;
        Ok(Self {
            stats,
            stop,
            thread: Some(thread),
            location: location.map(|l| format!("{base}{l}")),
            ice_servers,
            token: config.token,
            client,
            outbox,
            control,
        })
    }

    /// Publishes through signalling the caller does (another SFU's API, e.g. Janus's
    /// videoroom): makes a send-only offer of the configured media (no data channel), hands
    /// it to `signal`, which returns the SDP answer, and starts the session. Nothing is
    /// received on this session; [`Participant::leave`] only stops it.
    pub async fn publish_via<F, Fut>(
        config: ParticipantConfig,
        signal: F,
    ) -> Result<Self, ParticipantError>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<String, ParticipantError>>,
    {
        let (parts, ()) = Self::offer_and_launch(&config, false, |offer| async move {
            Ok((signal(offer).await?, None, Vec::new(), ()))
        })
        .await?;
        Self::launched(parts, &config)
    }

    /// The one way a participant offers: a session with the configured media (and the
    /// `surge` channel when `with_channel`), the offer handed to `signal`, which answers the
    /// SDP answer, the participant id when it learns one, the ICE servers it names, and
    /// anything else the caller wants back; then (relay-only: once a TURN allocation is
    /// granted) the session thread starts.
    async fn offer_and_launch<F, Fut, T>(
        config: &ParticipantConfig,
        with_channel: bool,
        signal: F,
    ) -> Result<(Launched, T), ParticipantError>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<
                Output = Result<(String, Option<String>, Vec<IceServer>, T), ParticipantError>,
            >,
    {
        let started = Instant::now();
        let (socket, mut local, mut rtc) = bound_session(config, started)?;
        let mut change = rtc.sdp_api();
        let (audio_mid, video_mid) = add_publish_media(&mut change, config.audio, config.video);
        let screen_mid = if config.video && config.screen {
            add_publish_media(&mut change, false, true).1
        } else {
            None
        };
        let channel = with_channel.then(|| change.add_channel("surge".to_owned()));
        let Some((offer, pending)) = change.apply() else {
            return Err(ParticipantError::Rtc("nothing to offer".into()));
        };
        let (answer, participant_id, answered_servers, extra) =
            signal(offer.to_sdp_string()).await?;
        let answer_at = started.elapsed();
        let mut relayed = None;
        let link = match socket {
            link::Unconnected::Relay => {
                let servers: Vec<IceServer> = config
                    .ice_servers
                    .iter()
                    .cloned()
                    .chain(answered_servers)
                    .collect();
                let relay = relay_link(config.bind_ip, servers, &answer).await?;
                local = relay.relayed();
                relayed = Some(local);
                let candidate = str0m::Candidate::relayed(local, relay.local_addr()?, "udp")
                    .map_err(|e| ParticipantError::Rtc(e.to_string()))?;
                rtc.add_local_candidate(candidate);
                Link::Relay(Box::new(relay))
            }
            socket => socket.connect(&answer, config)?,
        };
        let answer = SdpAnswer::from_sdp_string(&answer)
            .map_err(|e| ParticipantError::Rtc(e.to_string()))?;
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| ParticipantError::Rtc(e.to_string()))?;
        let stats = ParticipantStats {
            participant_id,
            started: Some(started),
            answer_at: Some(answer_at),
            relayed,
            screen_mid: screen_mid.map(|m| m.to_string()),
            ..ParticipantStats::default()
        };
        let media = LocalMedia {
            link,
            local,
            channel,
            audio_mid,
            video_mid,
            screen_mid,
        };
        Ok((launch(rtc, media, config, started, stats)?, extra))
    }

    /// Receives through signalling the caller does: accepts a server's SDP offer (e.g.
    /// Janus's subscriber offer), starts the session and returns the answer to send back.
    /// `started` is when the caller began joining (the clock of the join times).
    pub fn answer(
        config: ParticipantConfig,
        offer: &str,
        started: Instant,
    ) -> Result<(Self, String), ParticipantError> {
        let (socket, local, mut rtc) = bound_session(&config, Instant::now())?;
        let link = socket.connect(offer, &config)?;
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| ParticipantError::Rtc(e.to_string()))?;
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| ParticipantError::Rtc(e.to_string()))?;
        let stats = ParticipantStats {
            started: Some(started),
            answer_at: Some(started.elapsed()),
            ..ParticipantStats::default()
        };
        let media = LocalMedia {
            link,
            local,
            channel: None,
            audio_mid: None,
            video_mid: None,
            screen_mid: None,
        };
        let me = Self::launched(launch(rtc, media, &config, started, stats)?, &config)?;
        Ok((me, answer.to_sdp_string()))
    }

    fn launched(parts: Launched, config: &ParticipantConfig) -> Result<Self, ParticipantError> {
        let (stats, stop, outbox, control, thread) = parts;
        Ok(Self {
            stats,
            stop,
            thread: Some(thread),
            location: None,
            ice_servers: Vec::new(),
            token: config.token.clone(),
            client: config.http.clone().unwrap_or_default(),
            outbox,
            control,
        })
    }

    /// The TURN/STUN servers (with credentials) the join answer carried; empty when the
    /// service has none or the join did not go through the API.
    pub fn ice_servers(&self) -> &[IceServer] {
        &self.ice_servers
    }

    /// A snapshot of what it received so far.
    pub fn stats(&self) -> ParticipantStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Sends a message on the data channel (e.g. [`ClientMessage::MaxHeight`]).
    pub fn send(&self, message: &ClientMessage) {
        if let Ok(mut outbox) = self.outbox.lock() {
            outbox.push(message.to_json());
        }
    }

    /// Moves to a new local UDP socket (as a device that changed networks) and restarts ICE
    /// on the same session: an offer with new ICE credentials `PATCH`ed to the participant's
    /// URL, its answer applied. The participant keeps its id, tracks and subscriptions.
    /// A refusal (`404 session_gone`: the server lost the session) is
    /// [`ParticipantError::Refused`]; the caller rejoins.
    pub async fn restart_ice(&self) -> Result<(), ParticipantError> {
        let Some(url) = self.location.clone() else {
            return Err(ParticipantError::Rtc(
                "no participant URL to restart ICE on".into(),
            ));
        };
        let (reply, offer) = tokio::sync::oneshot::channel();
        self.ask(Control::Restart(reply))?;
        let offer = offer.await.map_err(|_| session_stopped())??;
        let response = self
            .client
            .patch(&url)
            .bearer_auth(&self.token)
            .header("content-type", "application/sdp")
            .body(offer)
            .send()
            .await
            .map_err(|e| ParticipantError::Http(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| ParticipantError::Http(e.to_string()))?;
        if status != 200 {
            return Err(ParticipantError::Refused {
                status,
                code: error_code(&body),
            });
        }
        let (reply, applied) = tokio::sync::oneshot::channel();
        self.ask(Control::Answer(body, reply))?;
        applied.await.map_err(|_| session_stopped())?
    }

    fn ask(&self, control: Control) -> Result<(), ParticipantError> {
        self.control.send(control).map_err(|_| session_stopped())
    }

    /// Stops the session without telling the server (a vanished client).
    pub fn vanish(mut self) {
        self.stop_thread();
    }

    /// Leaves with `DELETE`, then stops the session.
    pub async fn leave(mut self) -> Result<(), ParticipantError> {
        let result = match &self.location {
            Some(url) => self
                .client
                .delete(url)
                .bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| ParticipantError::Http(e.to_string()))
                .and_then(|r| {
                    if r.status().as_u16() == 204 {
                        Ok(())
                    } else {
                        Err(ParticipantError::Refused {
                            status: r.status().as_u16(),
                            code: String::new(),
                        })
                    }
                }),
            None => Ok(()),
        };
        self.stop_thread();
        result
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// The local side of a session: its transport and what it publishes.
struct LocalMedia {
    link: Link,
    local: SocketAddr,
    channel: Option<ChannelId>,
    audio_mid: Option<Mid>,
    video_mid: Option<Mid>,
    screen_mid: Option<Mid>,
}

type Launched = (
    Arc<Mutex<ParticipantStats>>,
    Arc<AtomicBool>,
    Arc<Mutex<Vec<String>>>,
    std::sync::mpsc::Sender<Control>,
    std::thread::JoinHandle<()>,
);

fn session_stopped() -> ParticipantError {
    ParticipantError::Rtc("the session has stopped".into())
}

/// The `error.code` of a JSON error body, or empty.
fn error_code(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A TURN allocation on the first of `servers` that grants one (a blocking exchange, run
/// off the runtime's threads), with permissions and channels for the answer's candidates.
async fn relay_link(
    bind_ip: IpAddr,
    servers: Vec<IceServer>,
    answer: &str,
) -> Result<turn::socket::RelayLink, ParticipantError> {
    let mut relay = tokio::task::spawn_blocking(move || turn::socket::allocate(bind_ip, &servers))
        .await
        .map_err(|e| ParticipantError::Rtc(format!("TURN allocation task: {e}")))??;
    relay.add_peers(&link::udp_candidates(answer));
    Ok(relay)
}

/// Starts the session thread of a negotiated `Rtc`.
fn launch(
    rtc: Rtc,
    media: LocalMedia,
    config: &ParticipantConfig,
    started: Instant,
    stats: ParticipantStats,
) -> Result<Launched, ParticipantError> {
    let stats = Arc::new(Mutex::new(stats));
    let stop = Arc::new(AtomicBool::new(false));
    let outbox = Arc::new(Mutex::new(Vec::new()));
    let (control, requests) = std::sync::mpsc::channel();
    let mut session = Session {
        rtc,
        transport: media.link,
        local: media.local,
        config: config.clone(),
        started,
        channel_label: media.channel,
        channel: None,
        audio_mid: media.audio_mid,
        video_mid: media.video_mid,
        screen_mid: media.screen_mid,
        stats: stats.clone(),
        stop: stop.clone(),
        outbox: outbox.clone(),
        sender: None,
        receiving: HashMap::new(),
        link: ThinLink::new(config.max_receive_bps, Instant::now()),
        last_offer: None,
        requests,
        restarting: None,
    };
    let thread = std::thread::Builder::new()
        .name("participant".into())
        .spawn(move || session.run())?;
    Ok((stats, stop, outbox, control, thread))
}

/// Incoming datagrams through a thin access link: each one waits behind the ones before it
/// and takes its serialization time at `rate_bps`; one that would wait longer than
/// [`THIN_LINK_BUFFER`] is dropped (drop-tail), as at a router's full queue. An idle link
/// passes a burst (a DTLS flight, an offer) at its rate instead of dropping it.
struct ThinLink {
    rate_bps: Option<u64>,
    /// When the link finishes sending what it holds.
    busy_until: Instant,
    /// Datagrams on their way, with the instant each one comes out.
    queue: std::collections::VecDeque<(Instant, Vec<u8>, SocketAddr)>,
}

/// The most a datagram waits in the thin link's queue (a modest router buffer).
const THIN_LINK_BUFFER: Duration = Duration::from_millis(250);

impl ThinLink {
    fn new(rate_bps: Option<u64>, now: Instant) -> Self {
        Self {
            rate_bps,
            busy_until: now,
            queue: std::collections::VecDeque::new(),
        }
    }

    /// Takes a datagram in; returns it back when the link has no cap (deliver at once), and
    /// whether it was dropped.
    fn enter<'a>(
        &mut self,
        data: &'a [u8],
        source: SocketAddr,
        now: Instant,
    ) -> (Option<&'a [u8]>, bool) {
        let Some(rate) = self.rate_bps.filter(|r| *r > 0) else {
            return (Some(data), false);
        };
        let start = self.busy_until.max(now);
        let out = start + Duration::from_secs_f64(data.len() as f64 * 8.0 / rate as f64);
        if out.saturating_duration_since(now) > THIN_LINK_BUFFER {
            return (None, true);
        }
        self.busy_until = out;
        self.queue.push_back((out, data.to_vec(), source));
        (None, false)
    }

    /// The next datagram that is out of the link by `now`.
    fn pop_due(&mut self, now: Instant) -> Option<(Vec<u8>, SocketAddr)> {
        if self.queue.front().is_some_and(|(at, _, _)| *at <= now) {
            self.queue.pop_front().map(|(_, d, s)| (d, s))
        } else {
            None
        }
    }

    /// When the next datagram comes out.
    fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|(at, _, _)| *at)
    }
}

/// The synthetic sender's state.
struct Sender {
    video_pt: Option<Pt>,
    audio_pt: Option<Pt>,
    camera: VideoLayers,
    screen: VideoLayers,
    audio_seq: u64,
    next_frame: Instant,
    next_audio: Instant,
    next_keyframe: Instant,
    frame: u32,
    audio_frame: u32,
}

/// The numbering of one synthetic simulcast video track, per layer.
struct VideoLayers {
    seq: [u64; 3],
    picture_id: [u16; 3],
    tl0: [u8; 3],
    keyframe_wanted: [bool; 3],
}

impl VideoLayers {
    fn new() -> Self {
        Self {
            seq: [1, 1, 1],
            picture_id: [rand::random::<u16>() & 0x7FFF; 3],
            tl0: [0; 3],
            keyframe_wanted: [true; 3],
        }
    }
}

struct Receiving {
    kind: MediaKind,
    window_start: Instant,
    window_bytes: u64,
    /// The first keyframe, until all of it arrived.
    first_key: FirstKeyframe,
    /// When a keyframe was last asked for (PLI), while none was decodable yet.
    last_pli: Option<Instant>,
}

/// Video without a decodable keyframe asks for one this often at most (a browser's decoder
/// asks as soon as it gets a frame it cannot decode).
const PLI_INTERVAL: Duration = Duration::from_millis(300);

/// Collects the first keyframe's packets: it could be decoded once its first packet, its
/// marker packet and everything between arrived.
#[derive(Debug, Default)]
struct FirstKeyframe {
    /// RTP timestamp and sequence number of the keyframe's first packet.
    start: Option<(u32, u64)>,
    /// Sequence number of its last (marker) packet.
    end: Option<u64>,
    /// Distinct packets of it received.
    packets: u64,
    done: bool,
}

impl FirstKeyframe {
    /// One video packet; returns true when it completes the first keyframe.
    fn add(&mut self, ts: u32, seq: u64, marker: bool, starts_keyframe: bool) -> bool {
        if self.done {
            return false;
        }
        if starts_keyframe && self.start.is_none_or(|(t, _)| t != ts) {
            *self = Self {
                start: Some((ts, seq)),
                ..Self::default()
            };
        }
        let Some((key_ts, first)) = self.start else {
            return false;
        };
        if ts != key_ts || seq < first {
            return false;
        }
        self.packets += 1;
        if marker {
            self.end = Some(seq);
        }
        // A retransmitted duplicate could inflate the count; keyframes are small enough that
        // this stays a close upper bound of "all packets in".
        self.done = self.end.is_some_and(|end| self.packets > end - first);
        self.done
    }
}

struct Session {
    rtc: Rtc,
    transport: Link,
    local: SocketAddr,
    config: ParticipantConfig,
    started: Instant,
    /// The `surge` data channel, when the session has one.
    channel_label: Option<ChannelId>,
    channel: Option<ChannelId>,
    audio_mid: Option<Mid>,
    video_mid: Option<Mid>,
    /// The screen's m-line (`ParticipantConfig::screen`).
    screen_mid: Option<Mid>,
    stats: Arc<Mutex<ParticipantStats>>,
    stop: Arc<AtomicBool>,
    outbox: Arc<Mutex<Vec<String>>>,
    sender: Option<Sender>,
    receiving: HashMap<Mid, Receiving>,
    link: ThinLink,
    /// The last server offer: when it arrived and when it was answered.
    last_offer: Option<(Duration, Duration)>,
    requests: std::sync::mpsc::Receiver<Control>,
    /// An ICE restart offer awaiting its answer.
    restarting: Option<str0m::change::SdpPendingOffer>,
}

impl Session {
    fn run(&mut self) {
        let mut buf = vec![0u8; 2048];
        let mut next_remb = Instant::now();
        // Interval reads drain the socket until it is empty; blocking reads wait per datagram.
        let _ = self
            .transport
            .set_nonblocking(self.config.receive_interval.is_some());
        while !self.stop.load(Ordering::Acquire) && self.rtc.is_alive() {
            let timeout = match self.drain() {
                Some(t) => t,
                None => break,
            };
            let now = Instant::now();
            if timeout <= now {
                let _ = self.rtc.handle_input(Input::Timeout(now));
                continue;
            }
            if let Some((data, source)) = self.link.pop_due(now) {
                self.deliver(&data, source, now);
                continue;
            }
            if self.send_media(now) {
                // Drain what was just written before waiting.
                continue;
            }
            self.flush_outbox();
            self.handle_requests();
            if now >= next_remb {
                self.send_remb();
                self.roll_windows(now);
                next_remb = now + Duration::from_millis(500);
            }
            let mut wake = timeout.min(now + Duration::from_millis(50)).min(next_remb);
            if let Some(s) = &self.sender {
                wake = wake.min(s.next_frame).min(s.next_audio);
            }
            if let Some(due) = self.link.next_due() {
                wake = wake.min(due);
            }
            let wait = wake
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            if let Some(interval) = self.config.receive_interval {
                std::thread::sleep(wait.min(interval));
                let mut got = false;
                while let Ok((n, source)) = self.transport.recv(&mut buf) {
                    got = true;
                    self.receive(&buf[..n], source);
                    // str0m holds one decoded packet at a time.
                    if self.drain().is_none() {
                        break;
                    }
                }
                if !got {
                    let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
                }
                continue;
            }
            let _ = self.transport.set_read_timeout(Some(wait));
            match self.transport.recv(&mut buf) {
                Ok((n, source)) => self.receive(&buf[..n], source),
                Err(_) => {
                    let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
                }
            }
        }
        self.rtc.disconnect();
        self.transport.close();
        if let Ok(mut s) = self.stats.lock() {
            s.connected = false;
        }
    }

    /// One datagram into the session, unless the receive cap drops it.
    fn receive(&mut self, data: &[u8], source: SocketAddr) {
        let now = Instant::now();
        let (direct, dropped) = self.link.enter(data, source, now);
        if dropped && let Ok(mut s) = self.stats.lock() {
            s.capped_drops += 1;
        }
        if let Some(data) = direct {
            self.deliver(data, source, now);
        }
    }

    /// One datagram out of the (thin) link into the session.
    fn deliver(&mut self, data: &[u8], source: SocketAddr, now: Instant) {
        if let Ok(receive) = Receive::new(self.transport.proto(), source, self.local, data) {
            let _ = self.rtc.handle_input(Input::Receive(now, receive));
        }
    }

    /// Polls until `Timeout`; `None` when the session died.
    fn drain(&mut self) -> Option<Instant> {
        let mut drain = Drain::new(Instant::now());
        loop {
            match drain.next(&mut self.rtc) {
                Ok(Polled::Timeout(t)) => return Some(t),
                Ok(Polled::Transmit(t)) => {
                    self.transport.send(&t.contents, t.destination);
                }
                Ok(Polled::Event(e)) => self.handle_event(e),
                Err(e) => {
                    tracing::debug!(%e, "participant session failed");
                    return None;
                }
            }
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Connected => {
                let now = Instant::now();
                if let Ok(mut s) = self.stats.lock() {
                    s.connected = true;
                    s.join_time = Some(now - self.started);
                    s.dtls_connected_at.get_or_insert(now - self.started);
                }
                self.start_sender(now);
            }
            Event::IceConnectionStateChange(
                IceConnectionState::Connected | IceConnectionState::Completed,
            ) => {
                let at = self.started.elapsed();
                if let Ok(mut s) = self.stats.lock() {
                    s.ice_connected_at.get_or_insert(at);
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.rtc.disconnect();
            }
            Event::ChannelOpen(id, _) if Some(id) == self.channel_label => {
                self.channel = Some(id);
                if let Some(mid) = self.screen_mid {
                    let share = ClientMessage::Screen {
                        mid: mid.to_string(),
                        sharing: true,
                    };
                    self.write_channel(&share.to_json());
                }
                let at = self.started.elapsed();
                if let Ok(mut s) = self.stats.lock() {
                    s.channel_open_at.get_or_insert(at);
                }
            }
            Event::MediaAdded(added) => {
                // Added by the server's offer just answered: remember when that happened.
                if let (Some((offer_at, answered_at)), Ok(mut s)) =
                    (self.last_offer, self.stats.lock())
                {
                    let entry = track_entry(&mut s, &added.mid.to_string());
                    if entry.kind.is_empty() {
                        entry.kind = media_kind_name(added.kind).to_owned();
                    }
                    entry.offer_at.get_or_insert(offer_at);
                    entry.answered_at.get_or_insert(answered_at);
                }
            }
            Event::ChannelData(data) => {
                let Ok(message) = serde_json::from_slice::<ServerMessage>(&data.data) else {
                    tracing::debug!("participant got a message it does not understand");
                    return;
                };
                self.handle_message(message);
            }
            Event::KeyframeRequest(request) => {
                if let Some(sender) = &mut self.sender {
                    let layers = if Some(request.mid) == self.screen_mid {
                        &mut sender.screen
                    } else {
                        &mut sender.camera
                    };
                    let index = request
                        .rid
                        .and_then(|r| RIDS.iter().position(|x| *x == &*r))
                        .unwrap_or(2);
                    layers.keyframe_wanted[index] = true;
                }
            }
            Event::RtpPacket(packet) => self.received(packet),
            _ => {}
        }
    }

    fn handle_message(&mut self, message: ServerMessage) {
        match &message {
            ServerMessage::Offer { sdp } => {
                let offer_at = self.started.elapsed();
                let Ok(offer) = SdpOffer::from_sdp_string(sdp) else {
                    return;
                };
                match self.rtc.sdp_api().accept_offer(offer) {
                    Ok(answer) => {
                        let reply = ClientMessage::Answer {
                            sdp: answer.to_sdp_string(),
                        };
                        self.write_channel(&reply.to_json());
                        self.last_offer = Some((offer_at, self.started.elapsed()));
                        if let Ok(mut s) = self.stats.lock() {
                            s.offers_answered += 1;
                        }
                    }
                    Err(e) => tracing::debug!(%e, "participant could not accept an offer"),
                }
            }
            ServerMessage::Tracks { tracks } => {
                let at = self.started.elapsed();
                if let Ok(mut s) = self.stats.lock() {
                    for t in tracks {
                        let entry = track_entry(&mut s, &t.mid);
                        entry.accepted_at.get_or_insert(at);
                        entry.participant_id = Some(t.participant_id.to_string());
                        entry.kind = kind_name(t.kind).to_owned();
                        entry.source = source_name(t.source).to_owned();
                    }
                }
            }
            _ => {}
        }
        if let Ok(mut s) = self.stats.lock() {
            s.messages.push(message);
        }
    }

    fn write_channel(&mut self, text: &str) -> bool {
        let Some(id) = self.channel else {
            return false;
        };
        self.rtc
            .channel(id)
            .is_some_and(|mut c| matches!(c.write(false, text.as_bytes()), Ok(true)))
    }

    fn handle_requests(&mut self) {
        while let Ok(request) = self.requests.try_recv() {
            match request {
                Control::Restart(reply) => {
                    let _ = reply.send(self.restart_offer());
                }
                Control::Answer(sdp, reply) => {
                    let _ = reply.send(self.restart_answer(&sdp));
                }
            }
        }
    }

    /// A new socket on the configured address, and an offer with new ICE credentials. The
    /// old socket closes now: datagrams to it are lost, as to a network the device left.
    fn restart_offer(&mut self) -> Result<String, ParticipantError> {
        let Link::Udp(_) = self.transport else {
            return Err(ParticipantError::Rtc(
                "an ICE restart moves a UDP participant; this one uses TCP or TURN".into(),
            ));
        };
        let socket = std::net::UdpSocket::bind(SocketAddr::new(self.config.bind_ip, 0))?;
        self.local = socket.local_addr()?;
        self.transport = Link::Udp(socket);
        if let Ok(mut s) = self.stats.lock() {
            s.moved_at = Some(self.started.elapsed());
            s.media_after_move_at = None;
        }
        let _ = self
            .transport
            .set_nonblocking(self.config.receive_interval.is_some());
        let mut change = self.rtc.sdp_api();
        change.ice_restart(false);
        let Some((offer, pending)) = change.apply() else {
            return Err(ParticipantError::Rtc("no ICE restart offer".into()));
        };
        self.restarting = Some(pending);
        Ok(offer.to_sdp_string())
    }

    /// The restart answer; the new socket becomes the one host candidate (the old ones
    /// went with the restart).
    fn restart_answer(&mut self, sdp: &str) -> Result<(), ParticipantError> {
        let Some(pending) = self.restarting.take() else {
            return Err(ParticipantError::Rtc("no ICE restart in flight".into()));
        };
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| ParticipantError::Rtc(e.to_string()))?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| ParticipantError::Rtc(e.to_string()))?;
        let candidate = str0m::Candidate::host(self.local, "udp")
            .map_err(|e| ParticipantError::Rtc(e.to_string()))?;
        self.rtc.add_local_candidate(candidate);
        if let Ok(mut s) = self.stats.lock() {
            s.ice_restarts += 1;
        }
        Ok(())
    }

    fn flush_outbox(&mut self) {
        if self.channel.is_none() {
            return;
        }
        let queued = self
            .outbox
            .lock()
            .map(|mut o| std::mem::take(&mut *o))
            .unwrap_or_default();
        for message in queued {
            self.write_channel(&message);
        }
    }

    fn received(&mut self, packet: RtpPacket) {
        let now = Instant::now();
        let Some(mid) = self
            .rtc
            .direct_api()
            .stream_rx(&packet.header.ssrc)
            .map(|s| s.mid())
        else {
            return;
        };
        let kind = self
            .rtc
            .media(mid)
            .map(|m| m.kind())
            .unwrap_or(MediaKind::Video);
        let payload = &packet.payload;
        if payload.is_empty() {
            return;
        }
        let receiving = self.receiving.entry(mid).or_insert(Receiving {
            kind,
            window_start: now,
            window_bytes: 0,
            first_key: FirstKeyframe::default(),
            last_pli: None,
        });
        receiving.window_bytes += payload.len() as u64;
        let starts_keyframe = kind == MediaKind::Video
            && str0m::rtp::Vp8Descriptor::parse(payload).is_ok_and(|d| d.starts_keyframe(payload));
        let decodable = match kind {
            MediaKind::Audio => true,
            MediaKind::Video => receiving.first_key.add(
                packet.header.timestamp,
                *packet.seq_no,
                packet.header.marker,
                starts_keyframe,
            ),
        };
        let at = now.saturating_duration_since(self.started);
        let ask_keyframe = kind == MediaKind::Video
            && !receiving.first_key.done
            && receiving.first_key.start.is_none()
            && receiving
                .last_pli
                .is_none_or(|t| now.saturating_duration_since(t) >= PLI_INTERVAL);
        if ask_keyframe {
            receiving.last_pli = Some(now);
            if let Some(stream) = self.rtc.direct_api().stream_rx(&packet.header.ssrc) {
                stream.request_keyframe(KeyframeRequestKind::Pli);
            }
        }
        let Ok(mut s) = self.stats.lock() else {
            return;
        };
        if s.moved_at.is_some() && s.media_after_move_at.is_none() {
            s.media_after_move_at = Some(at);
        }
        let entry = track_entry(&mut s, &mid.to_string());
        if entry.kind.is_empty() {
            entry.kind = media_kind_name(kind).to_owned();
        }
        entry.packets += 1;
        entry.bytes += payload.len() as u64;
        let seq = *packet.seq_no;
        entry.seq_span = Some(match entry.seq_span {
            Some((low, high)) => (low.min(seq), high.max(seq)),
            None => (seq, seq),
        });
        entry.first_packet_at.get_or_insert(at);
        if let Some(last) = entry.last_packet_at.replace(at)
            && at.saturating_sub(last)
                > if kind == MediaKind::Audio {
                    AUDIO_GAP
                } else {
                    VIDEO_GAP
                }
        {
            if entry.gaps.len() == GAPS_KEPT {
                entry.gaps.remove(0);
            }
            entry.gaps.push((last, at));
        }
        if decodable {
            entry.first_frame_at.get_or_insert(at);
        }
        if let Some(tag) = payload.last()
            && kind == MediaKind::Video
            && tag & 0xF0 == VIDEO_TAG
        {
            let index = usize::from(tag & 0x0F).min(2);
            entry.layer_packets[index] += 1;
            entry.layer = Some(RIDS[index].to_owned());
        }
        if starts_keyframe {
            entry.keyframes += 1;
        }
    }

    fn roll_windows(&mut self, now: Instant) {
        let Ok(mut s) = self.stats.lock() else {
            return;
        };
        for (mid, r) in &mut self.receiving {
            let elapsed = now.saturating_duration_since(r.window_start);
            if elapsed >= Duration::from_secs(1) {
                let bps = (r.window_bytes as f64 * 8.0 / elapsed.as_secs_f64()) as u64;
                track_entry(&mut s, &mid.to_string()).bitrate_bps = bps;
                r.window_start = now;
                r.window_bytes = 0;
            }
        }
    }

    /// Tells the SFU the receive cap on every video m-line (REMB).
    fn send_remb(&mut self) {
        let Some(cap) = self.config.max_receive_bps else {
            return;
        };
        let mids: Vec<Mid> = self
            .receiving
            .iter()
            .filter(|(_, r)| r.kind == MediaKind::Video)
            .map(|(m, _)| *m)
            .collect();
        let mut api = self.rtc.direct_api();
        for mid in mids {
            if let Some(stream) = api.stream_rx_by_mid(mid, None) {
                stream.request_remb(Bitrate::bps(cap));
            }
        }
    }

    fn start_sender(&mut self, now: Instant) {
        if self.sender.is_some() {
            return;
        }
        let find = |codec: Codec| {
            self.rtc
                .codec_config()
                .find(|p| p.spec().codec == codec)
                .map(|p| p.pt())
        };
        self.sender = Some(Sender {
            video_pt: find(Codec::Vp8),
            audio_pt: find(Codec::Opus),
            camera: VideoLayers::new(),
            screen: VideoLayers::new(),
            audio_seq: 1,
            next_frame: now,
            next_audio: now,
            next_keyframe: now,
            frame: 0,
            audio_frame: 0,
        });
    }

    /// Writes the frames that are due; whether it wrote any.
    fn send_media(&mut self, now: Instant) -> bool {
        let Some(mut sender) = self.sender.take() else {
            return false;
        };
        let mut sent = 0u64;
        if let (Some(mid), Some(pt)) = (self.video_mid, sender.video_pt) {
            if now >= sender.next_keyframe {
                sender.camera.keyframe_wanted = [true; 3];
                sender.screen.keyframe_wanted = [true; 3];
                sender.next_keyframe = now + self.config.keyframe_interval;
            }
            while now >= sender.next_frame {
                let ts = sender.frame.wrapping_mul(90_000 / VIDEO_FPS);
                let tracks = [
                    (Some(mid), &mut sender.camera),
                    (self.screen_mid, &mut sender.screen),
                ];
                for (mid, layers) in tracks {
                    let Some(mid) = mid else {
                        continue;
                    };
                    for (index, rid) in RIDS.iter().enumerate() {
                        let keyframe = std::mem::take(&mut layers.keyframe_wanted[index]);
                        let mut bytes =
                            (self.config.layer_bps[index] / 8 / u64::from(VIDEO_FPS)) as usize;
                        if keyframe {
                            bytes *= 3;
                        }
                        sent += self.write_frame(
                            mid,
                            Rid::from(*rid),
                            pt,
                            index,
                            layers,
                            ts,
                            keyframe,
                            bytes,
                            now,
                        );
                    }
                }
                sender.frame = sender.frame.wrapping_add(1);
                sender.next_frame += Duration::from_secs(1) / VIDEO_FPS;
            }
        }
        if let (Some(mid), Some(pt)) = (self.audio_mid, sender.audio_pt) {
            while now >= sender.next_audio {
                let mut payload = vec![0x5Au8; AUDIO_PAYLOAD];
                payload[AUDIO_PAYLOAD - 1] = AUDIO_TAG;
                let ext = ExtensionValues {
                    audio_level: Some(
                        -(i8::try_from(self.config.audio_level.min(127)).unwrap_or(127)),
                    ),
                    voice_activity: Some(self.config.audio_level < 90),
                    ..ExtensionValues::default()
                };
                let ts = sender.audio_frame.wrapping_mul(960);
                let seq = sender.audio_seq;
                if let Some(stream) = self.rtc.direct_api().stream_tx_by_mid(mid, None) {
                    stream.write_rtp(RtpWrite::new(pt, seq.into(), ts, now, payload).ext_vals(ext));
                    sent += 1;
                }
                sender.audio_seq += 1;
                sender.audio_frame = sender.audio_frame.wrapping_add(1);
                sender.next_audio += AUDIO_FRAME;
            }
        }
        self.sender = Some(sender);
        if sent > 0
            && let Ok(mut s) = self.stats.lock()
        {
            s.sent_packets += sent;
        }
        sent > 0
    }

    /// Packetizes one synthetic VP8 frame of `bytes` into RTP packets on layer `index`.
    #[allow(clippy::too_many_arguments)]
    fn write_frame(
        &mut self,
        mid: Mid,
        rid: Rid,
        pt: Pt,
        index: usize,
        sender: &mut VideoLayers,
        ts: u32,
        keyframe: bool,
        bytes: usize,
        now: Instant,
    ) -> u64 {
        sender.picture_id[index] = (sender.picture_id[index] + 1) & 0x7FFF;
        // Every frame is temporal layer 0 here, so TL0PICIDX advances per frame.
        sender.tl0[index] = sender.tl0[index].wrapping_add(1);
        let picture_id = sender.picture_id[index];
        let payloads = vp8_frame(picture_id, sender.tl0[index], index, keyframe, bytes);
        let packets = payloads.len();
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, Some(rid)) else {
            return 0;
        };
        for (n, mut payload) in payloads.into_iter().enumerate() {
            if let Some(last) = payload.last_mut() {
                *last = VIDEO_TAG | index as u8;
            }
            let seq = sender.seq[index];
            sender.seq[index] += 1;
            stream.write_rtp(
                RtpWrite::new(pt, seq.into(), ts, now, payload)
                    .marker(n + 1 == packets)
                    .nackable(true),
            );
        }
        packets as u64
    }
}

/// Adds the receive cap to the offer as a session-level `b=AS` line (kbit/s, RFC 8866
/// 5.8: the most the offerer wants to receive), so the server plans for it from the join
/// on instead of learning it from the first REMB, after media started flowing.
fn announce_receive_cap(sdp: String, max_receive_bps: Option<u64>) -> String {
    let Some(bps) = max_receive_bps else {
        return sdp;
    };
    // Session-level `b=` goes before `t=`.
    let Some(at) = sdp.find("\r\nt=").map(|i| i + 2) else {
        return sdp;
    };
    let mut out = String::with_capacity(sdp.len() + 16);
    out.push_str(&sdp[..at]);
    out.push_str(&format!("b=AS:{}\r\n", bps.div_ceil(1000)));
    out.push_str(&sdp[at..]);
    out
}

fn media_kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

fn track_entry<'a>(stats: &'a mut ParticipantStats, mid: &str) -> &'a mut TrackStats {
    if let Some(i) = stats.tracks.iter().position(|t| t.mid == mid) {
        &mut stats.tracks[i]
    } else {
        stats.tracks.push(TrackStats {
            mid: mid.to_owned(),
            ..TrackStats::default()
        });
        let last = stats.tracks.len() - 1;
        &mut stats.tracks[last]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receive_cap_goes_into_the_session_section() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n".to_owned();
        let capped = announce_receive_cap(sdp.clone(), Some(400_000));
        assert!(capped.contains("s=-\r\nb=AS:400\r\nt=0 0\r\n"), "{capped}");
        assert_eq!(announce_receive_cap(sdp.clone(), None), sdp);
    }

    #[test]
    fn delivery_loss_is_the_shortfall_below_the_sequence_span() {
        let mut t = TrackStats::default();
        assert_eq!(t.delivery_loss(), None);
        // Sequence numbers 101..=200 sent, 95 arrived.
        t.seq_span = Some((101, 200));
        t.packets = 95;
        assert!((t.delivery_loss().unwrap() - 0.05).abs() < 1e-9);
        // Duplicates (retransmissions of what arrived) never make it negative.
        t.packets = 120;
        assert_eq!(t.delivery_loss(), Some(0.0));
    }

    #[test]
    fn a_thin_link_queues_at_its_rate_and_drops_past_its_buffer() {
        let t0 = Instant::now();
        let src: SocketAddr = "127.0.0.1:9".parse().unwrap();
        // 400 kbit/s: 1,000 bytes take 20 ms.
        let mut link = ThinLink::new(Some(400_000), t0);
        let d = [0u8; 1000];
        for _ in 0..12 {
            assert_eq!(link.enter(&d, src, t0), (None, false));
        }
        // The 13th would wait 260 ms: past the 250 ms buffer.
        assert_eq!(link.enter(&d, src, t0), (None, true));
        assert_eq!(link.next_due(), Some(t0 + Duration::from_millis(20)));
        assert!(link.pop_due(t0 + Duration::from_millis(19)).is_none());
        assert!(link.pop_due(t0 + Duration::from_millis(20)).is_some());
        assert!(link.pop_due(t0 + Duration::from_millis(39)).is_none());
        // Without a cap, datagrams pass at once.
        let mut open = ThinLink::new(None, t0);
        assert_eq!(open.enter(&d, src, t0), (Some(&d[..]), false));
    }

    #[test]
    fn the_first_keyframe_is_decodable_once_all_its_packets_arrived() {
        let mut k = FirstKeyframe::default();
        // A delta frame before any keyframe does not count.
        assert!(!k.add(100, 1, true, false));
        // Keyframe in packets 2..=4; 3 arrives late (a retransmission).
        assert!(!k.add(200, 2, false, true));
        assert!(!k.add(200, 4, true, false));
        assert!(k.add(200, 3, false, false));
        // Only the first one is reported.
        assert!(!k.add(300, 5, true, true));
    }

    #[test]
    fn a_newer_keyframe_restarts_an_incomplete_one() {
        let mut k = FirstKeyframe::default();
        assert!(!k.add(200, 2, false, true));
        // Packet 3 of the first keyframe is lost for good; the next keyframe is whole.
        assert!(!k.add(200, 4, true, false));
        assert!(k.add(300, 5, true, true));
    }
}
