//! One participant's str0m session and what the switchboard tracks about it: its remote
//! addresses, its data channel and outbox, the outgoing m-lines (slots) it receives others'
//! tracks on, and the renegotiation in flight. The negotiation state machine lives here and
//! nowhere else: the switchboard tells a peer what the room decided (`want_slot`,
//! `drop_slot`) and the peer says what came of the client's answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::PayloadParams;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid};
use str0m::net::{Protocol, TcpType};
use str0m::{Candidate, Rtc};

use super::RestartRefusal;
use super::chat::ChatLimiter;
use super::outbox::{About, MAX_QUEUED, Outbox};
use super::quality::QualityMeter;
use crate::core::{ParticipantInfo, TrackId, TrackSource};
use crate::protocol::{ServerMessage, TrackInfo};
use crate::session;
use crate::stun::{self, Nomination};

/// A session's path counts as gone quiet (its NAT may have rebound) after this long without
/// a datagram on it; an authenticated check from a new address then takes the path. Far
/// above the media and feedback intervals of a path in use, so a client checking several
/// candidate pairs at once keeps the one it sends on.
const REBIND_QUIET: Duration = Duration::from_millis(250);

/// Where an outgoing m-line is in its negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Wanted; goes into the next offer.
    ToAdd,
    /// On a receive-only m-line the client offered at join: negotiated already, ready for
    /// the room once the session connects.
    Assigned(Mid),
    /// In the offer awaiting the client's answer.
    Negotiating(Mid),
    /// Negotiated; the room forwards to it.
    Ready(Mid),
    /// To be stopped in the next offer.
    ToRemove(Mid),
    /// Stop offered, awaiting the answer.
    Removing(Mid),
}

/// An outgoing m-line carrying another participant's track.
#[derive(Debug)]
struct Slot {
    track: TrackId,
    kind: MediaKind,
    source: TrackSource,
    state: SlotState,
    /// Dropped by the room while negotiating: stop it once the answer is in.
    cancelled: bool,
    /// Publisher payload type → this session's payload type for the same codec.
    pt_map: Vec<(Pt, Option<Pt>)>,
}

impl Slot {
    fn mid(&self) -> Option<Mid> {
        match self.state {
            SlotState::ToAdd => None,
            SlotState::Assigned(m)
            | SlotState::Negotiating(m)
            | SlotState::Ready(m)
            | SlotState::ToRemove(m)
            | SlotState::Removing(m) => Some(m),
        }
    }
}

/// A track this participant publishes.
#[derive(Debug, Clone)]
pub(super) struct Published {
    pub kind: MediaKind,
    pub rids: Vec<Rid>,
    /// In the room now (a screen only while shared).
    pub in_room: bool,
}

pub(super) struct Peer {
    pub room: String,
    pub info: ParticipantInfo,
    pub rtc: Rtc,
    pub ufrag: String,
    /// Our ICE password (the answer's `a=ice-pwd`), to authenticate the first check.
    ice_pwd: String,
    /// The client's ICE ufrag (its offer's `a=ice-ufrag`): a restart offer must change it.
    remote_ufrag: Option<String>,
    /// The client has nominated (or its first check was taken as a nomination).
    nominated: bool,
    /// Transports and remote addresses its checks were answered on.
    pub addrs: Vec<(Protocol, SocketAddr)>,
    /// When a datagram last came on the path str0m sends on (`send_addr`).
    pub last_heard: Instant,
    /// Where str0m sends media (the nominated path), as str0m knows it.
    pub send_addr: Option<SocketAddr>,
    /// NAT rebinding (UDP): the client's new address (`.0`) is shown to str0m as the old one
    /// it nominated (`.1`), and what str0m sends to `.1` goes to `.0`. str0m keeps a path of
    /// the same priority as the one it has, so it would not move by itself.
    pub rebound: Option<(SocketAddr, SocketAddr)>,
    /// str0m's next timeout.
    pub timeout: Instant,
    /// The earliest entry this peer has in the switchboard's timer heap.
    pub scheduled: Option<Instant>,
    /// In the switchboard's dirty list.
    pub dirty: bool,
    channel: Option<ChannelId>,
    /// Messages waiting for the data channel to open (or for room in its buffer).
    outbox: Outbox,
    /// The outbox passed its backstop: the session is to be ended (see [`Outbox`]).
    pub outbox_overflowed: bool,
    pending: Option<SdpPendingOffer>,
    slots: Vec<Slot>,
    /// Receive-only m-lines of the join offer no track uses yet (our answer made them
    /// send-only): others' tracks go there without a renegotiation.
    spare: Vec<(Mid, MediaKind)>,
    /// The join offer's second sending video m-line: reserved for the screen, in the room
    /// only while the client says it shares.
    pub screen_mid: Option<Mid>,
    /// ICE and DTLS are done: media written now reaches the client.
    pub connected: bool,
    pub published: HashMap<Mid, Published>,
    /// The last egress estimate reported to the shard's load, bits/s.
    pub egress_bps: u64,
    /// Caps the client asked for with REMB.
    pub remb_bps: Option<u64>,
    pub twcc_bps: Option<u64>,
    /// The receive cap announced in the join offer, bits/s.
    pub receive_cap_bps: Option<u64>,
    /// Cumulative NACK counts seen in egress stats, by mid.
    pub nacks_seen: HashMap<Mid, u64>,
    /// Hand raised.
    pub hand: bool,
    /// The chat rate limit.
    pub chat: ChatLimiter,
    /// Connection quality from str0m's stats.
    pub quality: QualityMeter,
}

impl Peer {
    /// A session for `offer`: RTP mode, ICE-lite, a UDP host candidate (the switchboard's
    /// public address) and, with `public_tcp_addr`, a passive TCP one (RFC 6544) for
    /// clients whose networks block UDP; bandwidth estimation on. Returns it with its SDP
    /// answer.
    pub fn accept(
        room: &str,
        info: ParticipantInfo,
        offer: SdpOffer,
        offer_sdp: &str,
        public_addr: SocketAddr,
        public_tcp_addr: Option<SocketAddr>,
        now: Instant,
    ) -> Result<(Self, SdpAnswer), String> {
        // The cap a thin client announced (b=AS / b=TIAS), read before str0m takes the offer;
        // `offer_sdp` is `offer` as text.
        let receive_cap_bps = session::announced_receive_cap(offer_sdp);
        let spare = receive_only_media(offer_sdp);
        let screen_mid = sending_video_mids(offer_sdp).get(1).copied();
        let mut rtc = session::rtc_config().build(now);
        let candidate = Candidate::host(public_addr, "udp").map_err(|e| e.to_string())?;
        rtc.add_local_candidate(candidate);
        if let Some(tcp) = public_tcp_addr {
            let candidate = Candidate::builder()
                .tcp()
                .host(tcp)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|e| e.to_string())?;
            rtc.add_local_candidate(candidate);
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| e.to_string())?;
        rtc.bwe()
            .set_bitrate(session::MIN_BITRATE, session::START_DESIRED_BITRATE);
        session::apply_receive_cap(&mut rtc, receive_cap_bps);
        let creds = rtc.direct_api().local_ice_credentials();
        let (ufrag, ice_pwd) = (creds.ufrag.clone(), creds.pass.clone());
        Ok((
            Self {
                room: room.to_owned(),
                info,
                rtc,
                ufrag,
                ice_pwd,
                remote_ufrag: offered_ice_ufrag(offer_sdp),
                nominated: false,
                addrs: Vec::new(),
                last_heard: now,
                send_addr: None,
                rebound: None,
                timeout: now,
                scheduled: None,
                dirty: false,
                channel: None,
                outbox: Outbox::default(),
                outbox_overflowed: false,
                pending: None,
                slots: Vec::new(),
                spare,
                screen_mid,
                connected: false,
                published: HashMap::new(),
                egress_bps: 0,
                remb_bps: None,
                twcc_bps: None,
                receive_cap_bps,
                nacks_seen: HashMap::new(),
                hand: false,
                chat: ChatLimiter::default(),
                quality: QualityMeter::default(),
            },
            answer,
        ))
    }

    /// An ICE restart: the client's `offer` (`offer_sdp` as text) with new ICE credentials,
    /// answered with ours, new too. A server offer still awaiting its answer is given up
    /// (the client's offer wins the glare; its changes go into the next offer), as a refused
    /// answer would. The first authenticated check on the new credentials nominates again.
    pub fn restart(
        &mut self,
        offer: SdpOffer,
        offer_sdp: &str,
    ) -> Result<SdpAnswer, RestartRefusal> {
        let offered = offered_ice_ufrag(offer_sdp);
        if offered.is_none() || offered == self.remote_ufrag {
            return Err(RestartRefusal::SameCredentials);
        }
        // Only the transport restarts: new m-lines would be a publish the join's checks
        // never saw (the room's own m-lines, however many, are known).
        if let Some(mid) = media_mids(offer_sdp)
            .into_iter()
            .find(|mid| self.rtc.media(*mid).is_none())
        {
            return Err(RestartRefusal::InvalidSdp(format!(
                "the restart offer has an m-line (mid {mid}) the session does not; an ICE restart changes no media"
            )));
        }
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| RestartRefusal::InvalidSdp(e.to_string()))?;
        if self.pending.take().is_some() {
            self.requeue_negotiating();
        }
        let creds = self.rtc.direct_api().local_ice_credentials();
        self.ufrag = creds.ufrag.clone();
        self.ice_pwd = creds.pass.clone();
        self.remote_ufrag = offered;
        self.nominated = false;
        self.send_addr = None;
        self.rebound = None;
        Ok(answer)
    }

    /// The changes of an offer that did not go through wait for the next one.
    fn requeue_negotiating(&mut self) {
        for slot in &mut self.slots {
            match slot.state {
                SlotState::Negotiating(_) => slot.state = SlotState::ToAdd,
                SlotState::Removing(mid) => slot.state = SlotState::ToRemove(mid),
                _ => {}
            }
        }
    }

    /// What its m-line `mid` of `kind` carries: the screen on the m-line reserved for it.
    pub fn source_of(&self, mid: Mid, kind: MediaKind) -> TrackSource {
        if self.screen_mid == Some(mid) {
            TrackSource::Screen
        } else {
            TrackSource::of(kind)
        }
    }

    /// The address str0m is to see a datagram from `source` as (see `rebound`).
    pub fn seen_as(&self, source: SocketAddr) -> SocketAddr {
        match self.rebound {
            Some((wire, known)) if wire == source => known,
            _ => source,
        }
    }

    /// Where a datagram str0m addressed to `destination` goes (see `rebound`).
    pub fn send_to(&self, destination: SocketAddr) -> SocketAddr {
        match self.rebound {
            Some((wire, known)) if known == destination => wire,
            _ => destination,
        }
    }

    /// Whether a `datagram` from a new address `source` looks like the client's NAT having
    /// rebound: the session has a path, nothing came on it for [`REBIND_QUIET`], and it is
    /// a check signed with our current password. Returns the
    /// address str0m knows the path by.
    pub fn rebinding(&self, now: Instant, datagram: &[u8]) -> Option<SocketAddr> {
        let known = self.send_addr?;
        (self.nominated
            && now.saturating_duration_since(self.last_heard) >= REBIND_QUIET
            && stun::is_authenticated_check(datagram, &self.ice_pwd))
        .then_some(known)
    }

    /// Until the client nominates, its authenticated checks are made nominations
    /// ([`stun::nominating`]): `Some` is the datagram to hand str0m instead of `datagram`.
    pub fn nominate_first_check(&mut self, datagram: &[u8]) -> Option<Vec<u8>> {
        if self.nominated {
            return None;
        }
        match stun::nominating(datagram, &self.ice_pwd) {
            Nomination::NotACheck => None,
            Nomination::Nominates => {
                self.nominated = true;
                None
            }
            Nomination::Rewritten(check) => {
                self.nominated = true;
                Some(check)
            }
        }
    }

    /// Sends a message on the `surge` data channel, or queues it until it opens.
    pub fn send(&mut self, message: &ServerMessage) {
        self.send_encoded(About::of(message), message.to_json());
    }

    /// Sends a message encoded once for several peers (`about` is [`About::of`] it), or
    /// queues it behind what waits already.
    pub fn send_encoded(&mut self, about: About, message: String) {
        // Behind queued messages, to keep their order.
        if self.outbox.is_empty()
            && let Some(id) = self.channel
            && let Some(mut channel) = self.rtc.channel(id)
            && let Ok(true) = channel.write(false, message.as_bytes())
        {
            return;
        }
        self.outbox.push(about, message);
        if self.outbox.len() > MAX_QUEUED {
            self.outbox_overflowed = true;
        }
    }

    /// Messages waiting in the outbox.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// The data channel opened: `welcome` goes first, then whatever queued before.
    pub fn channel_opened(&mut self, id: ChannelId, welcome: &ServerMessage) {
        self.channel = Some(id);
        self.outbox.push_front(welcome.to_json());
        self.flush_outbox();
    }

    /// Sends what queued up before the channel opened (or while its buffer was full).
    pub fn flush_outbox(&mut self) {
        let Some(id) = self.channel else {
            return;
        };
        while let Some(message) = self.outbox.front() {
            let ok = self
                .rtc
                .channel(id)
                .is_some_and(|mut c| matches!(c.write(false, message.as_bytes()), Ok(true)));
            if !ok {
                // The SCTP buffer is full: the rest waits, in order, for the next drain.
                break;
            }
            self.outbox.pop_front();
        }
    }

    /// The estimate the room should plan with: TWCC, capped by what the client asked
    /// for with REMB and announced in its offer.
    pub fn bandwidth(&self) -> Option<u64> {
        let estimate = match (self.twcc_bps, self.remb_bps) {
            (Some(t), Some(r)) => Some(t.min(r)),
            (t, r) => t.or(r),
        };
        match (estimate, self.receive_cap_bps) {
            (Some(e), Some(c)) => Some(e.min(c)),
            (e, _) => e,
        }
    }

    /// The room wants `track` sent to this participant: a spare receive-only m-line of the
    /// join offer if one of its kind is left, else an m-line for the next offer.
    pub fn want_slot(&mut self, track: TrackId, kind: MediaKind, source: TrackSource) {
        let state = match self.spare.iter().position(|(_, k)| *k == kind) {
            Some(at) => SlotState::Assigned(self.spare.remove(at).0),
            None => SlotState::ToAdd,
        };
        self.slots.push(Slot {
            track,
            kind,
            source,
            state,
            cancelled: false,
            pt_map: Vec::new(),
        });
    }

    /// Once connected, the slots on spare m-lines become ready (for the room's `slot_ready`)
    /// and the client learns what they carry. Empty before, or when there are none.
    pub fn take_assigned(&mut self) -> Vec<(TrackId, Mid)> {
        if !self.connected {
            return Vec::new();
        }
        let mut ready = Vec::new();
        for slot in &mut self.slots {
            if let SlotState::Assigned(mid) = slot.state {
                slot.state = SlotState::Ready(mid);
                ready.push((slot.track, mid));
            }
        }
        if !ready.is_empty() {
            self.send_tracks();
        }
        ready
    }

    /// The room no longer sends `track` here: forget or stop its m-line.
    pub fn drop_slot(&mut self, track: TrackId) {
        self.slots
            .retain(|s| !(s.track == track && s.state == SlotState::ToAdd));
        for slot in self.slots.iter_mut().filter(|s| s.track == track) {
            match slot.state {
                SlotState::Negotiating(_) => slot.cancelled = true,
                SlotState::Ready(mid) | SlotState::Assigned(mid) => {
                    slot.state = SlotState::ToRemove(mid);
                }
                _ => {}
            }
        }
    }

    /// Stops the m-lines the room refused after they were negotiated.
    pub fn stop_slots(&mut self, mids: &[Mid]) {
        for slot in &mut self.slots {
            if let Some(mid) = slot.mid()
                && mids.contains(&mid)
            {
                slot.state = SlotState::ToRemove(mid);
            }
        }
    }

    /// Puts wanted and unwanted m-lines into one offer, when the channel is open and no
    /// other offer is in flight.
    pub fn negotiate_if_needed(&mut self) {
        if self.channel.is_none() || self.pending.is_some() {
            return;
        }
        let wanted = self
            .slots
            .iter()
            .any(|s| matches!(s.state, SlotState::ToAdd | SlotState::ToRemove(_)));
        if !wanted {
            return;
        }
        let mut change = self.rtc.sdp_api();
        for slot in &mut self.slots {
            match slot.state {
                SlotState::ToAdd => {
                    let stream = slot.track.publisher.to_string();
                    let mid =
                        change.add_media(slot.kind, Direction::SendOnly, Some(stream), None, None);
                    slot.state = SlotState::Negotiating(mid);
                }
                SlotState::ToRemove(mid) => {
                    change.stop_media(mid);
                    slot.state = SlotState::Removing(mid);
                }
                _ => {}
            }
        }
        if let Some((offer, pending)) = change.apply() {
            self.pending = Some(pending);
            self.send(&ServerMessage::Offer {
                sdp: offer.to_sdp_string(),
            });
        }
    }

    /// The client's answer to the offer in flight. Returns the m-lines that became ready
    /// (for the room's `slot_ready`); a refused answer puts the same changes in the next
    /// offer. Either way the client learns which m-line carries what.
    pub fn accept_answer(&mut self, sdp: &str) -> Result<Vec<(TrackId, Mid)>, String> {
        let Some(pending) = self.pending.take() else {
            return Err("answer without a pending offer".to_owned());
        };
        let accepted = SdpAnswer::from_sdp_string(sdp)
            .map_err(|e| e.to_string())
            .and_then(|answer| {
                self.rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .map_err(|e| e.to_string())
            });
        let mut ready = Vec::new();
        let outcome = match accepted {
            Ok(()) => {
                for slot in &mut self.slots {
                    match slot.state {
                        SlotState::Negotiating(mid) if slot.cancelled => {
                            slot.state = SlotState::ToRemove(mid);
                        }
                        SlotState::Negotiating(mid) => {
                            slot.state = SlotState::Ready(mid);
                            ready.push((slot.track, mid));
                        }
                        _ => {}
                    }
                }
                self.slots
                    .retain(|s| !matches!(s.state, SlotState::Removing(_)));
                Ok(ready)
            }
            Err(e) => {
                self.requeue_negotiating();
                Err(e)
            }
        };
        self.send_tracks();
        outcome
    }

    /// Tells the client which participant each ready m-line carries.
    fn send_tracks(&mut self) {
        let tracks = self
            .slots
            .iter()
            .filter_map(|s| match s.state {
                SlotState::Ready(mid) => Some(TrackInfo {
                    mid: mid.to_string(),
                    participant_id: s.track.publisher,
                    kind: s.kind.into(),
                    source: s.source,
                }),
                _ => None,
            })
            .collect();
        self.send(&ServerMessage::Tracks { tracks });
    }

    /// This session's payload type for a publisher's codec on the ready m-line `mid`
    /// (`None`: no such m-line, or the subscriber lacks the codec). Cached per m-line.
    pub fn out_pt(&mut self, mid: Mid, params: &PayloadParams) -> Option<Pt> {
        let slot = self.slots.iter_mut().find(|s| s.mid() == Some(mid))?;
        let in_pt = params.pt();
        match slot.pt_map.iter().find(|(i, _)| *i == in_pt) {
            Some((_, out)) => *out,
            None => {
                let out = self
                    .rtc
                    .codec_config()
                    .match_params(*params)
                    .map(|p| p.pt());
                slot.pt_map.push((in_pt, out));
                out
            }
        }
    }

    /// Whether this is `user`'s participant in `room`.
    pub fn is(&self, room: &str, user: &str) -> bool {
        self.room == room && self.info.user == user
    }
}

/// The offer's ICE ufrag (session level, else the first m-line's).
fn offered_ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .map(str::to_owned)
}

/// The mids of the offer's audio and video m-lines (not the data channel's).
fn media_mids(sdp: &str) -> Vec<Mid> {
    let mut mids = Vec::new();
    let mut is_media = false;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(media) = line.strip_prefix("m=") {
            is_media = !media.starts_with("application ");
        } else if let Some(mid) = line.strip_prefix("a=mid:")
            && is_media
        {
            mids.push(Mid::from(mid));
        }
    }
    mids
}

/// The mids of the offer's video m-lines that send (not `a=recvonly`, not disabled), in
/// offer order: the camera's, then the screen's.
fn sending_video_mids(sdp: &str) -> Vec<Mid> {
    let mut found = Vec::new();
    // (mid, receive-only) of the video section being read.
    let mut section: Option<(Option<Mid>, bool)> = None;
    let mut close = |section: Option<(Option<Mid>, bool)>| {
        if let Some((Some(mid), false)) = section {
            found.push(mid);
        }
    };
    for line in sdp.lines().map(str::trim_end) {
        if let Some(media) = line.strip_prefix("m=") {
            close(section.take());
            let disabled = media.split_whitespace().nth(1) == Some("0");
            section = (media.starts_with("video ") && !disabled).then_some((None, false));
        } else if let Some((mid, recv_only)) = section.as_mut() {
            if let Some(value) = line.strip_prefix("a=mid:") {
                *mid = Some(Mid::from(value));
            } else if line == "a=recvonly" || line == "a=inactive" {
                *recv_only = true;
            }
        }
    }
    close(section);
    found
}

/// The audio and video m-lines an offer marks `a=recvonly`, by mid.
fn receive_only_media(sdp: &str) -> Vec<(Mid, MediaKind)> {
    let mut found = Vec::new();
    let mut section: Option<(MediaKind, Option<Mid>, bool)> = None;
    let mut close = |section: Option<(MediaKind, Option<Mid>, bool)>| {
        if let Some((kind, Some(mid), true)) = section {
            found.push((mid, kind));
        }
    };
    for line in sdp.lines().map(str::trim_end) {
        if let Some(media) = line.strip_prefix("m=") {
            close(section.take());
            let disabled = media.split_whitespace().nth(1) == Some("0");
            section = if disabled {
                None
            } else if media.starts_with("audio ") {
                Some((MediaKind::Audio, None, false))
            } else if media.starts_with("video ") {
                Some((MediaKind::Video, None, false))
            } else {
                None
            };
        } else if let Some((_, mid, recv_only)) = section.as_mut() {
            if let Some(value) = line.strip_prefix("a=mid:") {
                *mid = Some(Mid::from(value));
            } else if line == "a=recvonly" {
                *recv_only = true;
            }
        }
    }
    close(section);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_only_media_lines_are_found_by_mid() {
        let sdp = "v=0\r\ns=-\r\nt=0 0\r\na=recvonly\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\na=recvonly\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=sendonly\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\na=mid:2\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=recvonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:4\r\na=sendrecv\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n";
        assert_eq!(
            receive_only_media(sdp),
            vec![
                (Mid::from("2"), MediaKind::Audio),
                (Mid::from("3"), MediaKind::Video)
            ]
        );
        assert!(receive_only_media("").is_empty());
        assert_eq!(sending_video_mids(sdp), vec![Mid::from("4")]);
        let two = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\na=mid:2\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=sendonly\r\n";
        assert_eq!(
            sending_video_mids(two),
            vec![Mid::from("1"), Mid::from("3")]
        );
    }
}
