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
//! Sessions do not get a thread each: a [`Driver`] (a few threads, one per core by default)
//! waits on all its sessions' sockets at once and steps whichever has a datagram or a timer
//! due ([`session`] never blocks), so one machine runs hundreds of participants.
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

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::Rtc;
use str0m::change::{SdpAnswer, SdpOffer};
use surge_sfu_proto::protocol::{ClientMessage, ServerMessage};
use surge_sfu_proto::synthetic::add_publish_media;

mod driver;
mod link;
mod session;

pub use driver::Driver;
use driver::SessionHandle;
use link::{Link, bound_session};
use session::{Control, LocalMedia, Session};

/// The rids the participant publishes, lowest first.
pub use surge_sfu_proto::synthetic::RIDS;

mod ice_servers;
pub use ice_servers::IceServer;
pub mod turn;
pub use turn::TurnError;
/// Default bitrates of the three layers, bits/s (roughly 180p, 360p, 720p).
pub const LAYER_BPS: [u64; 3] = [150_000, 500_000, 1_500_000];

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
    /// The driver that steps the session; `None` is the process's shared one
    /// ([`Driver::shared`]). A separate driver isolates a group of participants (their own
    /// threads) from the rest.
    pub driver: Option<Driver>,
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
            driver: None,
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

/// A joined participant; its session runs on a [`Driver`] thread (with many others) until
/// [`Participant::leave`] (or drop).
pub struct Participant {
    stats: Arc<Mutex<ParticipantStats>>,
    /// Its session on the driver; `None` once stopped.
    session: Option<SessionHandle>,
    location: Option<String>,
    /// The TURN/STUN servers of the join answer (used in [`IceTransport::Relay`] mode).
    ice_servers: Vec<IceServer>,
    token: String,
    client: reqwest::Client,
}

impl Participant {
    /// Joins: offers, posts the offer, hands the session to its driver
    /// ([`ParticipantConfig::driver`], else the shared one).
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
        let (stats, session) = parts;
        let (location, ice_servers) = joined;
        Ok(Self {
            stats,
            session: Some(session),
            location: location.map(|l| format!("{base}{l}")),
            ice_servers,
            token: config.token,
            client,
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
    /// granted) the session starts on its driver.
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
        let (stats, session) = parts;
        Ok(Self {
            stats,
            session: Some(session),
            location: None,
            ice_servers: Vec::new(),
            token: config.token.clone(),
            client: config.http.clone().unwrap_or_default(),
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

    /// Polls the stats every 50 ms until `check` holds or `limit` has passed, and returns
    /// the last ones (the caller asserts on them).
    pub async fn wait_for(
        &self,
        limit: Duration,
        check: impl Fn(&ParticipantStats) -> bool,
    ) -> ParticipantStats {
        let start = Instant::now();
        loop {
            let stats = self.stats();
            if check(&stats) || start.elapsed() > limit {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a message on the data channel (e.g. [`ClientMessage::MaxHeight`]).
    pub fn send(&self, message: &ClientMessage) {
        if let Some(session) = &self.session {
            session.send(message.to_json());
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
        match &self.session {
            Some(session) if session.control(control) => Ok(()),
            _ => Err(session_stopped()),
        }
    }

    /// Stops the session without telling the server (a vanished client).
    pub fn vanish(mut self) {
        self.stop_session();
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
        self.stop_session();
        result
    }

    /// Takes the session off its driver and closes its transport; returns once done.
    fn stop_session(&mut self) {
        if let Some(session) = self.session.take() {
            session.stop();
        }
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        self.stop_session();
    }
}

type Launched = (Arc<Mutex<ParticipantStats>>, SessionHandle);

/// Hands a negotiated `Rtc` to its driver.
fn launch(
    rtc: Rtc,
    mut media: LocalMedia,
    config: &ParticipantConfig,
    started: Instant,
    stats: ParticipantStats,
) -> Result<Launched, ParticipantError> {
    // The driver waits on the descriptor; a read or write never does.
    media.link.set_nonblocking()?;
    let stats = Arc::new(Mutex::new(stats));
    let session = Session::new(rtc, media, config, started, stats.clone());
    let driver = match &config.driver {
        Some(driver) => driver.clone(),
        None => Driver::shared()?,
    };
    let handle = driver.launch(session)?;
    Ok((stats, handle))
}

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
}
