//! A switchboard and N headless str0m clients in memory, on a virtual clock: the harness of
//! the switchboard's tests and of its criterion bench (`benches/benches/switchboard.rs`
//! includes this file). Clients offer audio (Opus) and/or three-layer VP8 simulcast plus
//! the `surge` channel, answer the server's offers, honour keyframe requests and count
//! what they receive per m-line. Datagrams cross instantly; time moves in fixed steps.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, Vp8Descriptor};
use str0m::{Candidate, Event as RtcEvent, Input, Rtc};
use surge_sfu_proto::core::{ParticipantId, ParticipantInfo};
use surge_sfu_proto::protocol::{ClientMessage, ServerMessage, TrackInfo};
use surge_sfu_proto::session::{Drain, Polled};
use surge_sfu_proto::switchboard::Counters;
use surge_sfu_proto::synthetic::{RIDS, add_publish_media, vp8_frame};
use surge_sfu_proto::{
    Event, Join, JoinRefusal, Load, RestartRefusal, Switchboard, SwitchboardConfig, WallClock,
};

pub const SFU: ([u8; 4], u16) = ([10, 0, 0, 1], 5000);
/// The Unix time (ms) the virtual clock starts at (2026-01-01).
pub const WALL_CLOCK_START_MS: u64 = 1_767_225_600_000;
pub const STEP: Duration = Duration::from_millis(5);
const AUDIO_EVERY: Duration = Duration::from_millis(20);
const FRAME_EVERY: Duration = Duration::from_micros(33_333);
/// Payload bytes per frame of each layer: about 150 kbps, 500 kbps, 1.2 Mbps at 30 fps.
const FRAME_BYTES: [usize; 3] = [600, 2_000, 5_000];

/// The shard-wide counts, as the shell keeps them.
#[derive(Default)]
pub struct TestLoad {
    pub draining: AtomicBool,
    pub rooms: AtomicU32,
    pub participants: AtomicU32,
    pub max_participants: AtomicU32,
    pub egress: AtomicI64,
}

/// The switchboard's handle on the test's counts.
struct LoadHandle(Arc<TestLoad>);

impl Load for LoadHandle {
    fn draining(&self) -> bool {
        self.0.draining.load(Ordering::Relaxed)
    }
    fn open_room(&self, _room: &str) -> bool {
        self.0.rooms.fetch_add(1, Ordering::Relaxed);
        true
    }
    fn close_room(&self, _room: &str) {
        self.0.rooms.fetch_sub(1, Ordering::Relaxed);
    }
    fn add_participant(&self) -> bool {
        let max = self.0.max_participants.load(Ordering::Relaxed);
        self.0
            .participants
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }
    fn remove_participant(&self) {
        self.0.participants.fetch_sub(1, Ordering::Relaxed);
    }
    fn add_egress(&self, delta: i64) {
        self.0.egress.fetch_add(delta, Ordering::Relaxed);
    }
}

/// What a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    Nothing,
    Audio,
    AudioVideo,
    /// Audio, the camera, and a second video m-line for a screen (shared with
    /// [`Client::share_screen`]).
    AudioVideoScreen,
}

/// The synthetic VP8 simulcast sender's state.
struct Video {
    mid: Mid,
    seq: [u64; 3],
    picture_id: [u16; 3],
    tl0: [u8; 3],
    keyframe_wanted: [bool; 3],
    frame: u32,
    next_frame: Instant,
}

/// One RTP packet a client received, as its header and VP8 descriptor tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedRtp {
    pub seq: u64,
    pub ts: u32,
    pub marker: bool,
    /// The first packet of a VP8 keyframe.
    pub keyframe: bool,
    pub picture_id: Option<u16>,
}

/// One headless client: a str0m session that answers the server's offers and counts what
/// it receives.
pub struct Client {
    pub rtc: Rtc,
    pub addr: SocketAddr,
    pub id: ParticipantId,
    pub channel: Option<ChannelId>,
    audio_mid: Option<Mid>,
    video: Option<Video>,
    /// The screen's sender (`Publish::AudioVideoScreen`); it sends whether shared or not.
    screen: Option<Video>,
    pub messages: Vec<ServerMessage>,
    /// Every data-channel message as it arrived, for checks on what is on the wire.
    pub raw: Vec<String>,
    pub received: HashMap<Mid, u64>,
    /// Every RTP packet received, per m-line, in order (without repeats).
    pub rtp: HashMap<Mid, Vec<ReceivedRtp>>,
    /// The publisher ignores keyframe requests (a slow encoder, or a lost PLI).
    pub ignore_keyframe_requests: bool,
    pub offers_answered: u32,
    next_audio: Instant,
    audio_seq: u64,
    /// A vanished client neither sends nor receives.
    pub gone: bool,
    /// A stalled client reads no DTLS (so no SCTP, so nothing on its data channel) but
    /// keeps ICE and media going: a tab that stopped reading its channel.
    pub stalled: bool,
    /// The ICE ufrag the switchboard handed this client in its answer.
    pub server_ufrag: String,
    /// The client's nominations (checks with USE-CANDIDATE) are lost on the way: a client
    /// that is slow to nominate, as Chromium is toward an ICE-lite server.
    pub nomination_lost: bool,
    /// The room and user it joined as.
    pub room: String,
    pub user: String,
    /// A NAT in front of the client that maps `addr` to this address (rebinding).
    pub nat: Option<SocketAddr>,
    /// Every this-many-th SRTP/SRTCP datagram it sends is lost on the way (a lossy uplink).
    pub lose_every: Option<u32>,
    srtp_sent: u32,
}

impl Client {
    fn drain(&mut self, now: Instant, to_sfu: &mut Vec<(SocketAddr, Vec<u8>)>) {
        let mut drain = Drain::new(now);
        loop {
            match drain.next(&mut self.rtc) {
                Ok(Polled::Timeout(_)) => return,
                Ok(Polled::Transmit(t)) => {
                    to_sfu.push((self.nat.unwrap_or(t.source), t.contents.to_vec()));
                }
                Ok(Polled::Event(event)) => self.handle_event(event),
                Err(e) => panic!("client session failed: {e}"),
            }
        }
    }

    fn handle_event(&mut self, event: RtcEvent) {
        match event {
            RtcEvent::ChannelOpen(id, _) => self.channel = Some(id),
            RtcEvent::ChannelData(data) => {
                self.raw
                    .push(String::from_utf8(data.data.clone()).expect("text messages"));
                let message: ServerMessage = serde_json::from_slice(&data.data).unwrap();
                if let ServerMessage::Offer { sdp } = &message {
                    let offer = SdpOffer::from_sdp_string(sdp).unwrap();
                    let answer = self.rtc.sdp_api().accept_offer(offer).unwrap();
                    self.send(&ClientMessage::Answer {
                        sdp: answer.to_sdp_string(),
                    });
                    self.offers_answered += 1;
                }
                self.messages.push(message);
            }
            RtcEvent::RtpPacket(packet) => {
                let ssrc = packet.header.ssrc;
                if let Some(mid) = self.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid()) {
                    *self.received.entry(mid).or_default() += 1;
                    let vp8 = Vp8Descriptor::parse(&packet.payload).ok();
                    let rtp = self.rtp.entry(mid).or_default();
                    // Repeats (retransmissions, probes re-sending old packets) are not kept.
                    if rtp.last().is_some_and(|last| last.seq >= *packet.seq_no) {
                        return;
                    }
                    rtp.push(ReceivedRtp {
                        seq: *packet.seq_no,
                        ts: packet.header.timestamp,
                        marker: packet.header.marker,
                        keyframe: vp8
                            .as_ref()
                            .is_some_and(|d| d.starts_keyframe(&packet.payload)),
                        picture_id: vp8.as_ref().and_then(|d| d.picture_id()),
                    });
                }
            }
            RtcEvent::KeyframeRequest(_) if self.ignore_keyframe_requests => {}
            RtcEvent::KeyframeRequest(request) => {
                let video = if self.screen.as_ref().is_some_and(|s| s.mid == request.mid) {
                    &mut self.screen
                } else {
                    &mut self.video
                };
                if let Some(video) = video {
                    let index = request
                        .rid
                        .and_then(|r| RIDS.iter().position(|x| *x == &*r))
                        .unwrap_or(2);
                    video.keyframe_wanted[index] = true;
                }
            }
            _ => {}
        }
    }

    pub fn send(&mut self, message: &ClientMessage) {
        self.send_raw(&message.to_json());
    }

    /// Writes `text` as is on the channel (to send what no `ClientMessage` would).
    pub fn send_raw(&mut self, text: &str) {
        let id = self.channel.expect("the channel is open");
        let mut channel = self.rtc.channel(id).unwrap();
        assert!(channel.write(false, text.as_bytes()).unwrap());
    }

    /// Whether a datagram it sends now is lost (see `lose_every`).
    fn loses(&mut self, datagram: &[u8]) -> bool {
        let Some(every) = self.lose_every else {
            return false;
        };
        // RFC 7983: 128..=191 is RTP or RTCP.
        if !datagram.first().is_some_and(|b| (128..=191).contains(b)) {
            return false;
        }
        self.srtp_sent += 1;
        self.srtp_sent.is_multiple_of(every)
    }

    fn pt(&self, codec: Codec) -> Pt {
        self.rtc
            .codec_config()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
            .unwrap()
    }

    /// Due timers, then the media that is due once connected.
    fn tick(&mut self, now: Instant, to_sfu: &mut Vec<(SocketAddr, Vec<u8>)>) {
        self.rtc.handle_input(Input::Timeout(now)).unwrap();
        if self.rtc.is_connected() {
            self.send_audio(now);
            self.send_video(now);
        }
        self.drain(now, to_sfu);
    }

    fn send_audio(&mut self, now: Instant) {
        let Some(mid) = self.audio_mid else {
            return;
        };
        let pt = self.pt(Codec::Opus);
        while now >= self.next_audio {
            let ext = ExtensionValues {
                audio_level: Some(-30),
                voice_activity: Some(true),
                ..ExtensionValues::default()
            };
            let seq = self.audio_seq;
            self.audio_seq += 1;
            let ts = (seq as u32).wrapping_mul(960);
            if let Some(stream) = self.rtc.direct_api().stream_tx_by_mid(mid, None) {
                stream.write_rtp(
                    RtpWrite::new(pt, seq.into(), ts, now, vec![0x5A; 80]).ext_vals(ext),
                );
            }
            self.next_audio += AUDIO_EVERY;
        }
    }

    /// The camera's m-line, when it offered one.
    pub fn camera_mid(&self) -> Option<Mid> {
        self.video.as_ref().map(|v| v.mid)
    }

    /// The screen's m-line, when it offered one.
    pub fn screen_mid(&self) -> Option<Mid> {
        self.screen.as_ref().map(|s| s.mid)
    }

    /// Starts or stops sharing the screen (`Publish::AudioVideoScreen`).
    pub fn share_screen(&mut self, sharing: bool) {
        let mid = self.screen_mid().expect("the client offered a screen");
        self.send(&ClientMessage::Screen {
            mid: mid.to_string(),
            sharing,
        });
    }

    fn send_video(&mut self, now: Instant) {
        if self.video.is_none() && self.screen.is_none() {
            return;
        }
        let pt = self.pt(Codec::Vp8);
        if let Some(video) = self.video.take() {
            self.video = Some(self.send_frames(video, pt, now));
        }
        if let Some(screen) = self.screen.take() {
            self.screen = Some(self.send_frames(screen, pt, now));
        }
    }

    fn send_frames(&mut self, mut video: Video, pt: Pt, now: Instant) -> Video {
        while now >= video.next_frame {
            let ts = video.frame.wrapping_mul(3_000);
            for (index, rid) in RIDS.iter().enumerate() {
                let keyframe = std::mem::take(&mut video.keyframe_wanted[index]);
                let bytes = FRAME_BYTES[index] * if keyframe { 3 } else { 1 };
                write_frame(
                    &mut self.rtc,
                    &mut video,
                    Rid::from(*rid),
                    pt,
                    index,
                    ts,
                    keyframe,
                    bytes,
                    now,
                );
            }
            video.frame = video.frame.wrapping_add(1);
            video.next_frame += FRAME_EVERY;
        }
        video
    }

    pub fn received_total(&self) -> u64 {
        self.received.values().sum()
    }

    /// Packets received on the m-lines that carry `kind`.
    pub fn received_kind(&self, kind: surge_sfu_proto::protocol::Kind) -> u64 {
        self.tracks()
            .map(|t| {
                t.iter()
                    .filter(|t| t.kind == kind)
                    .filter_map(|t| self.received.get(&Mid::from(t.mid.as_str())))
                    .sum()
            })
            .unwrap_or(0)
    }

    /// The mids the last `tracks` message names for `source`.
    pub fn mids_of(&self, source: surge_sfu_proto::protocol::TrackSource) -> Vec<Mid> {
        self.tracks()
            .map(|t| {
                t.iter()
                    .filter(|t| t.source == source)
                    .map(|t| Mid::from(t.mid.as_str()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The last `tracks` message.
    pub fn tracks(&self) -> Option<&Vec<TrackInfo>> {
        self.messages.iter().rev().find_map(|m| match m {
            ServerMessage::Tracks { tracks } => Some(tracks),
            _ => None,
        })
    }

    pub fn saw(&self, f: impl Fn(&ServerMessage) -> bool) -> bool {
        self.messages.iter().any(f)
    }

    /// Where the switchboard sees this client's datagrams come from.
    pub fn wire_addr(&self) -> SocketAddr {
        self.nat.unwrap_or(self.addr)
    }
}

/// Packetizes one synthetic VP8 frame of `bytes` on layer `index`: a payload descriptor
/// with a 15-bit picture id and TL0PICIDX, and a frame tag that marks keyframes.
#[allow(clippy::too_many_arguments)]
fn write_frame(
    rtc: &mut Rtc,
    video: &mut Video,
    rid: Rid,
    pt: Pt,
    index: usize,
    ts: u32,
    keyframe: bool,
    bytes: usize,
    now: Instant,
) {
    video.picture_id[index] = (video.picture_id[index] + 1) & 0x7FFF;
    video.tl0[index] = video.tl0[index].wrapping_add(1);
    let picture_id = video.picture_id[index];
    let payloads = vp8_frame(picture_id, video.tl0[index], index, keyframe, bytes);
    let packets = payloads.len();
    let mut api = rtc.direct_api();
    let Some(stream) = api.stream_tx_by_mid(video.mid, Some(rid)) else {
        return;
    };
    for (n, payload) in payloads.into_iter().enumerate() {
        let seq = video.seq[index];
        video.seq[index] += 1;
        stream.write_rtp(
            RtpWrite::new(pt, seq.into(), ts, now, payload)
                .marker(n + 1 == packets)
                .nackable(true),
        );
    }
}

/// Time spent inside the switchboard, by call.
#[derive(Debug, Default, Clone, Copy)]
pub struct SwitchboardTime {
    pub datagrams: Duration,
    pub timeouts: Duration,
    pub transmits: Duration,
}

impl SwitchboardTime {
    pub fn total(&self) -> Duration {
        self.datagrams + self.timeouts + self.transmits
    }
}

/// A switchboard, its clients and a virtual clock.
pub struct Net {
    pub sb: Switchboard,
    pub load: Arc<TestLoad>,
    pub clients: Vec<Client>,
    pub now: Instant,
    /// When the virtual clock started: `WALL_CLOCK_START_MS` on the switchboard's wall clock.
    pub epoch: Instant,
    pub events: Vec<Event>,
    pub counters: Counters,
    pub time: SwitchboardTime,
    /// Destinations of datagrams the switchboard sent to no client of this net.
    pub stray_transmits: Vec<SocketAddr>,
    next_id: u64,
}

impl Net {
    pub fn new(max_room_participants: usize, participant_timeout: Duration) -> Self {
        let now = Instant::now();
        let load = Arc::new(TestLoad::default());
        load.max_participants.store(1_000, Ordering::Relaxed);
        let config = SwitchboardConfig {
            public_addr: SocketAddr::from(SFU),
            public_tcp_addr: None,
            max_room_participants,
            participant_timeout,
            wall_clock: WallClock {
                at: now,
                unix_ms: WALL_CLOCK_START_MS,
            },
        };
        Self {
            sb: Switchboard::new(config, Box::new(LoadHandle(load.clone()))),
            load,
            clients: Vec::new(),
            now,
            epoch: now,
            events: Vec::new(),
            counters: Counters::default(),
            time: SwitchboardTime::default(),
            stray_transmits: Vec::new(),
            next_id: 0x1000,
        }
    }

    /// Offers what `publish` says plus the `surge` channel, and joins `room` as a user of
    /// its own (`user-N`, N the client's index).
    pub fn try_join(&mut self, room: &str, publish: Publish) -> Result<usize, JoinRefusal> {
        let user = format!("user-{}", self.clients.len());
        self.try_join_full(room, publish, &user, |_| {})
    }

    /// Like [`Net::try_join`], with `extra` adding to the offer before the channel.
    pub fn try_join_with(
        &mut self,
        room: &str,
        publish: Publish,
        extra: impl FnOnce(&mut str0m::change::SdpApi<'_>),
    ) -> Result<usize, JoinRefusal> {
        let user = format!("user-{}", self.clients.len());
        self.try_join_full(room, publish, &user, extra)
    }

    /// As `try_join`, with `pairs` receive-only audio + video m-lines in the offer (for
    /// others' tracks, without a renegotiation).
    pub fn try_join_receiving(
        &mut self,
        room: &str,
        publish: Publish,
        pairs: usize,
    ) -> Result<usize, JoinRefusal> {
        self.try_join_with(room, publish, |change| {
            for _ in 0..pairs {
                for kind in [MediaKind::Audio, MediaKind::Video] {
                    change.add_media(kind, Direction::RecvOnly, None, None, None);
                }
            }
        })
    }

    /// [`Self::try_join`] as `user` (another tab or device of someone already here).
    pub fn try_join_as(
        &mut self,
        room: &str,
        publish: Publish,
        user: &str,
    ) -> Result<usize, JoinRefusal> {
        self.try_join_full(room, publish, user, |_| {})
    }

    fn try_join_full(
        &mut self,
        room: &str,
        publish: Publish,
        user: &str,
        extra: impl FnOnce(&mut str0m::change::SdpApi<'_>),
    ) -> Result<usize, JoinRefusal> {
        let index = self.clients.len();
        let addr = SocketAddr::from(([10, 1, (index / 250) as u8, (index % 250) as u8 + 1], 6000));
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut change = rtc.sdp_api();
        let (audio_mid, video_mid) = add_publish_media(
            &mut change,
            publish != Publish::Nothing,
            matches!(publish, Publish::AudioVideo | Publish::AudioVideoScreen),
        );
        let screen_mid = if publish == Publish::AudioVideoScreen {
            add_publish_media(&mut change, false, true).1
        } else {
            None
        };
        extra(&mut change);
        change.add_channel("surge".to_owned());
        let (offer, pending) = change.apply().unwrap();
        self.next_id += 1;
        let id = ParticipantId(self.next_id);
        let join = Join {
            room: room.to_owned(),
            participant: id,
            info: ParticipantInfo {
                user: user.to_owned(),
                name: format!("Client {index}"),
                publish: publish != Publish::Nothing,
                subscribe: true,
            },
            offer,
        };
        let answer = self.sb.handle_join(self.now, join)?;
        let server_ufrag = answer
            .to_sdp_string()
            .lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:").map(|u| u.trim().to_owned()))
            .unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        self.clients.push(Client {
            rtc,
            addr,
            id,
            channel: None,
            audio_mid,
            video: video_mid.map(|mid| Video {
                mid,
                seq: [1; 3],
                picture_id: [100 * (index as u16 + 1); 3],
                tl0: [0; 3],
                keyframe_wanted: [true; 3],
                frame: 0,
                next_frame: self.now,
            }),
            screen: screen_mid.map(|mid| Video {
                mid,
                seq: [1; 3],
                picture_id: [100 * (index as u16 + 1) + 50; 3],
                tl0: [0; 3],
                keyframe_wanted: [true; 3],
                frame: 0,
                next_frame: self.now,
            }),
            messages: Vec::new(),
            raw: Vec::new(),
            received: HashMap::new(),
            rtp: HashMap::new(),
            ignore_keyframe_requests: false,
            offers_answered: 0,
            next_audio: self.now,
            audio_seq: 1,
            gone: false,
            stalled: false,
            server_ufrag,
            nomination_lost: false,
            room: room.to_owned(),
            user: user.to_owned(),
            nat: None,
            lose_every: None,
            srtp_sent: 0,
        });
        Ok(index)
    }

    /// Client `index` moves to `new_addr` (a new local socket) and restarts ICE: an offer
    /// with new credentials (built by `offer`, to test bad ones) to the switchboard, its
    /// answer back. On a refusal the client keeps its old socket and session.
    pub fn restart_with(
        &mut self,
        index: usize,
        new_addr: SocketAddr,
        offer: impl FnOnce(SdpOffer) -> SdpOffer,
    ) -> Result<(), RestartRefusal> {
        let c = &mut self.clients[index];
        let mut change = c.rtc.sdp_api();
        change.ice_restart(false);
        let (made, pending) = change.apply().unwrap();
        let answer = self.sb.handle_restart(
            self.now,
            &c.room.clone(),
            c.id,
            &c.user.clone(),
            offer(made),
        )?;
        c.server_ufrag = answer
            .to_sdp_string()
            .lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:").map(|u| u.trim().to_owned()))
            .unwrap();
        c.rtc.sdp_api().accept_answer(pending, answer).unwrap();
        c.rtc
            .add_local_candidate(Candidate::host(new_addr, "udp").unwrap());
        c.addr = new_addr;
        c.nat = None;
        Ok(())
    }

    /// [`Self::restart_with`] the client's own offer.
    pub fn restart(&mut self, index: usize, new_addr: SocketAddr) -> Result<(), RestartRefusal> {
        self.restart_with(index, new_addr, |o| o)
    }

    pub fn join(&mut self, room: &str, publish: Publish) -> usize {
        self.try_join(room, publish).expect("join admitted")
    }

    /// One step of virtual time: clients tick, datagrams cross until the network is quiet.
    pub fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        let mut to_sfu = Vec::new();
        for c in self.clients.iter_mut().filter(|c| !c.gone) {
            c.tick(now, &mut to_sfu);
        }
        for _ in 0..100 {
            let started = Instant::now();
            for (source, data) in to_sfu.drain(..) {
                if is_nomination(&data)
                    && self
                        .clients
                        .iter()
                        .any(|c| c.addr == source && c.nomination_lost)
                {
                    continue;
                }
                if let Some(c) = self
                    .clients
                    .iter_mut()
                    .find(|c| c.wire_addr() == source && !c.gone)
                    && c.loses(&data)
                {
                    continue;
                }
                self.sb.handle_datagram(now, source, &data);
            }
            let handled = Instant::now();
            if self.sb.poll_timeout().is_some_and(|t| t <= now) {
                self.sb.handle_timeout(now);
            }
            let timed = Instant::now();
            self.time.datagrams += handled - started;
            self.time.timeouts += timed - handled;
            let mut delivered = false;
            loop {
                let polling = Instant::now();
                let transmit = self.sb.poll_transmit(now);
                self.time.transmits += polling.elapsed();
                let Some(t) = transmit else {
                    break;
                };
                delivered = true;
                let Some(c) = self
                    .clients
                    .iter_mut()
                    .find(|c| c.wire_addr() == t.destination && !c.gone)
                else {
                    if !self.clients.iter().any(|c| c.wire_addr() == t.destination) {
                        self.stray_transmits.push(t.destination);
                    }
                    continue;
                };
                // DTLS records (RFC 7983: first byte 20..=63) carry SCTP.
                if c.stalled && (20..=63).contains(&t.contents[0]) {
                    continue;
                }
                let receive = Receive::new(Protocol::Udp, t.source, c.addr, &t.contents).unwrap();
                c.rtc.handle_input(Input::Receive(now, receive)).unwrap();
                c.drain(now, &mut to_sfu);
            }
            if !delivered && to_sfu.is_empty() {
                break;
            }
        }
        while let Some(e) = self.sb.poll_event() {
            self.events.push(e);
        }
        let c = self.sb.take_counters();
        self.counters.datagrams += c.datagrams;
        self.counters.packets_in += c.packets_in;
        self.counters.packets_out += c.packets_out;
        self.counters.layer_switches += c.layer_switches;
        self.counters.keyframe_requests += c.keyframe_requests;
        self.counters.keyframes_replayed += c.keyframes_replayed;
        self.counters.session_timeouts += c.session_timeouts;
        self.counters.dropped_garbage += c.dropped_garbage;
        self.counters.dropped_unknown += c.dropped_unknown;
        self.counters.dropped_stun_unknown += c.dropped_stun_unknown;
        self.counters.stun_unverified += c.stun_unverified;
    }

    /// Steps until `done` holds, at most `limit` of virtual time; panics past it.
    pub fn run_until(&mut self, limit: Duration, what: &str, done: impl Fn(&Net) -> bool) {
        let end = self.now + limit;
        while !done(self) {
            assert!(self.now < end, "not within {limit:?}: {what}");
            self.step();
        }
    }

    pub fn run_for(&mut self, time: Duration) {
        let end = self.now + time;
        while self.now < end {
            self.step();
        }
    }

    pub fn participants(&self) -> u32 {
        self.load.participants.load(Ordering::Relaxed)
    }

    pub fn rooms(&self) -> u32 {
        self.load.rooms.load(Ordering::Relaxed)
    }
}

/// A STUN binding request carrying USE-CANDIDATE.
fn is_nomination(datagram: &[u8]) -> bool {
    str0m::ice::StunMessage::parse(datagram)
        .is_ok_and(|m| m.is_binding_request() && m.use_candidate())
}
