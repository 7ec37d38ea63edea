//! One participant's session as a state machine a driver steps: it reads what its transport
//! holds, feeds str0m, answers the server's offers on the `surge` channel, writes the
//! synthetic media that is due and records what arrived, then says when it next needs a
//! step. The receive cap is an emulated thin link ([`ThinLink`]).

use std::collections::HashMap;
use std::net::SocketAddr;
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
use surge_sfu_proto::synthetic::vp8_frame;

use crate::link::Link;
use crate::{
    AUDIO_GAP, GAPS_KEPT, ParticipantConfig, ParticipantError, ParticipantStats, RIDS, TrackStats,
    VIDEO_GAP,
};

const VIDEO_FPS: u32 = 30;
const AUDIO_FRAME: Duration = Duration::from_millis(20);
/// Opus at 32 kbit/s: 80 bytes per 20 ms.
const AUDIO_PAYLOAD: usize = 80;
const VIDEO_TAG: u8 = 0xA0;
const AUDIO_TAG: u8 = 0xB0;

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

/// One participant's str0m session and its transport, stepped by a driver thread
/// ([`crate::driver`]): nothing here blocks or sleeps, so one thread steps many sessions.
pub(crate) struct Session {
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
    /// Messages to send on the data channel once it is open.
    outbox: Vec<String>,
    sender: Option<Sender>,
    receiving: HashMap<Mid, Receiving>,
    link: ThinLink,
    /// The last server offer: when it arrived and when it was answered.
    last_offer: Option<(Duration, Duration)>,
    /// An ICE restart offer awaiting its answer.
    restarting: Option<str0m::change::SdpPendingOffer>,
    /// The transport may hold datagrams: the driver saw it readable, and no read since
    /// found it empty.
    readable: bool,
    /// With `receive_interval`: the socket is not read before then.
    next_read: Option<Instant>,
    /// When REMB is sent and the bitrate windows roll next.
    next_remb: Instant,
}

/// The local side of a session: its transport and what it publishes.
pub(crate) struct LocalMedia {
    pub link: Link,
    pub local: SocketAddr,
    pub channel: Option<ChannelId>,
    pub audio_mid: Option<Mid>,
    pub video_mid: Option<Mid>,
    pub screen_mid: Option<Mid>,
}

/// What the caller asks of a session, besides data-channel messages.
pub(crate) enum Control {
    /// Move to a new local socket and make an ICE restart offer (`Ok` is its SDP).
    Restart(tokio::sync::oneshot::Sender<Result<String, ParticipantError>>),
    /// The answer to the restart offer.
    Answer(
        String,
        tokio::sync::oneshot::Sender<Result<(), ParticipantError>>,
    ),
}

/// Datagrams one session reads in one step before the driver turns to the others.
const READS_PER_STEP: usize = 64;
/// REMB and the bitrate windows run this often.
const REMB_INTERVAL: Duration = Duration::from_millis(500);

impl Session {
    /// A negotiated `Rtc` on its transport, not yet stepped.
    pub(crate) fn new(
        rtc: Rtc,
        media: LocalMedia,
        config: &ParticipantConfig,
        started: Instant,
        stats: Arc<Mutex<ParticipantStats>>,
    ) -> Self {
        let now = Instant::now();
        let mut config = config.clone();
        // The session lives on its driver's thread: holding the driver too would keep the
        // driver alive for ever (and could make its thread wait for itself to stop).
        config.driver = None;
        Self {
            rtc,
            transport: media.link,
            local: media.local,
            link: ThinLink::new(config.max_receive_bps, now),
            config,
            started,
            channel_label: media.channel,
            channel: None,
            audio_mid: media.audio_mid,
            video_mid: media.video_mid,
            screen_mid: media.screen_mid,
            stats,
            outbox: Vec::new(),
            sender: None,
            receiving: HashMap::new(),
            last_offer: None,
            restarting: None,
            // Whatever arrived before the driver took the session over is read at once.
            readable: true,
            next_read: None,
            next_remb: now,
        }
    }

    /// The transport, for the driver to register with its poll.
    pub(crate) fn transport(&self) -> &Link {
        &self.transport
    }

    /// The driver saw the transport readable.
    pub(crate) fn set_readable(&mut self) {
        self.readable = true;
    }

    /// Queues a data-channel message (sent once the channel is open).
    pub(crate) fn queue(&mut self, message: String) {
        self.outbox.push(message);
    }

    /// Does everything that is due at `now` without waiting: reads what arrived (up to
    /// [`READS_PER_STEP`] datagrams, or nothing before the `receive_interval` is up), runs
    /// the timers, writes due media; returns when it next has something to do, or `None`
    /// once the session has ended.
    pub(crate) fn step(&mut self, now: Instant, buf: &mut [u8]) -> Option<Instant> {
        if !self.rtc.is_alive() {
            return None;
        }
        self.transport.handle_timeout(now);
        if self.readable && self.next_read.is_none_or(|at| now >= at) {
            self.read(buf)?;
            if let Some(interval) = self.config.receive_interval {
                self.next_read = Some(now + interval);
            }
        }
        self.flush_outbox();
        if now >= self.next_remb {
            self.send_remb();
            self.roll_windows(now);
            self.next_remb = now + REMB_INTERVAL;
        }
        let timeout = loop {
            // `drain` serves the timeouts due now (bounded); one still due goes back to the
            // driver as this session's wake-up, so that one session cannot hold its thread.
            let timeout = self.drain()?;
            let now = Instant::now();
            if let Some((data, source)) = self.link.pop_due(now) {
                self.deliver(&data, source, now);
                continue;
            }
            if self.send_media(now) {
                // Drain what was just written.
                continue;
            }
            break timeout;
        };
        let now = Instant::now();
        if !self.rtc.is_alive() {
            return None;
        }
        let mut wake = timeout.min(self.next_remb);
        if let Some(s) = &self.sender {
            wake = wake.min(s.next_frame).min(s.next_audio);
        }
        if let Some(due) = self.link.next_due() {
            wake = wake.min(due);
        }
        if let Some(at) = self.transport.poll_timeout(now) {
            wake = wake.min(at);
        }
        if self.readable {
            // Datagrams left over (the read budget ran out) or held for the interval.
            wake = wake.min(self.next_read.unwrap_or(now));
        }
        Some(wake)
    }

    /// Reads the transport until it is empty or the budget is spent; `None` when the
    /// session died on what it read.
    fn read(&mut self, buf: &mut [u8]) -> Option<()> {
        let mut budget = READS_PER_STEP;
        while budget > 0 {
            match self.transport.recv(buf) {
                Ok((n, source)) => {
                    budget -= 1;
                    self.receive(&buf[..n], source);
                    // str0m holds one decoded packet at a time.
                    self.drain()?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // An ICMP error surfaced on the socket (port unreachable): the next read
                // goes on with what else arrived.
                Err(_) => budget -= 1,
            }
        }
        Some(())
    }

    /// The session ends: the transport is released and the stats say so.
    pub(crate) fn finish(&mut self) {
        self.rtc.disconnect();
        self.transport.close();
        if let Ok(mut s) = self.stats.lock() {
            s.connected = false;
        }
    }

    /// Runs a caller's request.
    pub(crate) fn control(&mut self, control: Control) {
        match control {
            Control::Restart(reply) => {
                let _ = reply.send(self.restart_offer());
            }
            Control::Answer(sdp, reply) => {
                let _ = reply.send(self.restart_answer(&sdp));
            }
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
                // What was queued while the channel was opening goes now, not at the next wake.
                self.flush_outbox();
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
        self.transport.set_nonblocking()?;
        self.readable = true;
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
        for message in std::mem::take(&mut self.outbox) {
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
