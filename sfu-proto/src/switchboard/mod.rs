//! The switchboard: every room and participant session one worker hosts, without a socket
//! or a clock.
//!
//! ```text
//!  shell                                         Switchboard
//!  ─────                                         ───────────
//!  handle_join(now, request, &load)  ─────────▶  admission, a str0m session, its SDP answer
//!  handle_leave / contains           ─────────▶  removal / lookup
//!  handle_datagram(now, src, bytes)  ─────────▶  address or STUN-ufrag demultiplexing, str0m
//!  handle_receive(now, proto, ..)    ─────────▶  the same for a framed ICE-TCP packet
//!  handle_timeout(now)               ─────────▶  due sessions and room ticks
//!  poll_transmit(now)  until None    ◀─────────  datagrams to send (drains busy sessions)
//!  poll_event()        until None    ◀─────────  rooms opened/closed, participants removed
//!  poll_timeout()                    ◀─────────  when to call handle_timeout next
//! ```
//!
//! Forwarding a packet is a function call from the publisher's session event through the
//! room to the subscribers' sessions. Shard-wide counts (rooms, participants, egress) are
//! kept by the shell behind [`Load`]; the switchboard reserves and releases them, each in
//! exactly one place.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::Input;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::net::{Protocol, Receive, Transmit};

use crate::core::hash::FastMap;
use crate::core::{Forward, ParticipantId, ParticipantInfo, Room, RoomConfig, RoomError};
use crate::protocol::{EndReason, ServerMessage};
use crate::session::{Drain, Polled};
use crate::stun;

mod chat;
mod outbox;
mod peer;
mod quality;
mod replay;
mod roster;
mod route;

pub use chat::{CHAT_BURST, CHAT_INTERVAL};
use peer::Peer;
pub use quality::{
    FAIR_JITTER, FAIR_LOSS, FAIR_RTT, Measured, POOR_JITTER, POOR_LOSS, POOR_RTT, QUALITY_WINDOW,
    classify,
};
pub use route::is_keyframe;

/// Remote addresses remembered per participant (ICE may try several; NATs rebind).
const MAX_ADDRS_PER_PEER: usize = 8;
/// Rounds of draining sessions dirtied by other sessions' output before the rest waits for
/// the next call (a bound, not an expected depth: forwarding dirties subscribers once).
const MAX_DRAIN_ROUNDS: usize = 64;

/// What the switchboard is told once.
#[derive(Debug, Clone)]
pub struct SwitchboardConfig {
    /// The address clients reach this switchboard's socket at (its ICE candidate).
    pub public_addr: SocketAddr,
    /// The address of its passive ICE-TCP listener (RFC 6544), when it has one: the
    /// answer then carries a TCP host candidate beside the UDP one.
    pub public_tcp_addr: Option<SocketAddr>,
    /// Participants per room at most.
    pub max_room_participants: usize,
    /// A participant from whom nothing arrived this long is removed.
    pub participant_timeout: Duration,
    /// The wall clock, read once by the shell (chat messages carry a time).
    pub wall_clock: WallClock,
}

/// The wall clock at one `Instant`: the switchboard reads no clock, and dates what it must
/// from `now` relative to this (a monotonic clock; good enough for chat times).
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// A moment on the switchboard's clock.
    pub at: Instant,
    /// The same moment in Unix milliseconds.
    pub unix_ms: u64,
}

impl WallClock {
    /// `now` in Unix milliseconds.
    pub fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.at).as_millis();
        self.unix_ms
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }
}

/// The shard-wide counts the shell keeps (several switchboards share one shard's limits).
/// Each method is called from exactly one place in the switchboard.
pub trait Load {
    /// Whether the shard takes no new rooms (it still admits joins to rooms it hosts).
    fn draining(&self) -> bool;
    /// Takes a room slot for `room`, or `false` when the shard hosts its maximum.
    fn open_room(&self, room: &str) -> bool;
    /// Gives back `room`'s slot.
    fn close_room(&self, room: &str);
    /// Takes a participant slot, or `false` when the shard hosts its maximum.
    fn add_participant(&self) -> bool;
    /// Gives back a participant slot.
    fn remove_participant(&self);
    /// The summed egress estimate changed by `delta` bits/s.
    fn add_egress(&self, delta: i64);
}

/// A join as the switchboard sees it (the shell has checked the token).
#[derive(Debug)]
pub struct Join {
    /// The room.
    pub room: String,
    /// The id the shell picked for the participant (random; unique on the shard).
    pub participant: ParticipantId,
    /// Who it is and what the token allows.
    pub info: ParticipantInfo,
    /// The client's SDP offer.
    pub offer: SdpOffer,
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinRefusal {
    /// The room has its maximum of participants.
    #[error("the room is full")]
    RoomFull,
    /// The shard hosts its maximum of rooms or participants.
    #[error("the shard is full")]
    ShardFull,
    /// The shard is draining and the room is not one it hosts.
    #[error("the shard is draining")]
    Draining,
    /// The offer cannot be accepted.
    #[error("the SDP offer cannot be accepted: {0}")]
    InvalidSdp(String),
    /// The participant id is taken.
    #[error("the participant id is taken")]
    DuplicateParticipant,
}

/// Why an ICE restart was refused; the session is as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestartRefusal {
    /// No such participant of this user in this room (gone, or someone else's).
    #[error("no such session")]
    SessionGone,
    /// The offer cannot be accepted.
    #[error("the SDP offer cannot be accepted: {0}")]
    InvalidSdp(String),
    /// The offer carries the session's current ICE credentials: not a restart.
    #[error("the offer does not restart ICE (its ice-ufrag is the current one)")]
    SameCredentials,
}

/// Why a participant was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemoveReason {
    /// It left (HTTP `DELETE`).
    Left,
    /// Nothing arrived from it for the participant timeout.
    Timeout,
    /// ICE disconnected.
    IceDisconnected,
    /// Its session closed.
    Closed,
    /// Its session failed.
    Error,
    /// The join was abandoned before its answer was delivered.
    Abandoned,
    /// The switchboard stopped.
    Stopped,
    /// Its data-channel outbox passed the backstop (a client that stopped reading, with
    /// more queued than coalescing allows): ended rather than a message dropped.
    Unresponsive,
    /// The worker thread running the switchboard failed.
    WorkerFailed,
    /// The same user joined the same room again: one session per user per room.
    Replaced,
}

impl RemoveReason {
    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            RemoveReason::Left => "left",
            RemoveReason::Timeout => "timeout",
            RemoveReason::IceDisconnected => "ice_disconnected",
            RemoveReason::Closed => "closed",
            RemoveReason::Error => "error",
            RemoveReason::Abandoned => "abandoned",
            RemoveReason::Stopped => "stopped",
            RemoveReason::Unresponsive => "unresponsive",
            RemoveReason::WorkerFailed => "worker_failed",
            RemoveReason::Replaced => "replaced",
        }
    }
}

/// What happened, for the shell's logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A participant joined `room` (`new_room`: the room opened with it).
    Joined {
        /// The room.
        room: String,
        /// Who.
        participant: ParticipantId,
        /// Its user id.
        user: String,
        /// Whether the room opened with this join.
        new_room: bool,
    },
    /// A participant is gone.
    Removed {
        /// The room.
        room: String,
        /// Who.
        participant: ParticipantId,
        /// Why.
        reason: RemoveReason,
    },
    /// The last participant of `room` is gone.
    RoomClosed(String),
}

/// Counters since the last [`Switchboard::take_counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Datagrams handed in.
    pub datagrams: u64,
    /// RTP packets received from publishers.
    pub packets_in: u64,
    /// RTP payload bytes received.
    pub bytes_in: u64,
    /// RTP packets written to subscribers.
    pub packets_out: u64,
    /// RTP payload bytes written to subscribers.
    pub bytes_out: u64,
    /// Simulcast layer switches.
    pub layer_switches: u64,
    /// Keyframe requests sent to publishers (after coalescing).
    pub keyframe_requests: u64,
    /// Cached keyframes replayed to new subscribers.
    pub keyframes_replayed: u64,
    /// NACKs received from subscribers.
    pub nacks: u64,
    /// Datagrams str0m refused (unparsable, undecryptable).
    pub dropped_garbage: u64,
    /// Non-STUN datagrams from unknown addresses.
    pub dropped_unknown: u64,
    /// STUN from unknown addresses without a ufrag of ours.
    pub dropped_stun_unknown: u64,
    /// STUN from unknown addresses that named a ufrag of ours but that str0m did not accept
    /// (wrong message integrity: forged, or stale): no address was registered.
    pub stun_unverified: u64,
    /// Session timeouts handled.
    pub session_timeouts: u64,
    /// Chat messages relayed (once each, however many members got them).
    pub chat_messages: u64,
    /// Chat messages refused (empty, too long, over the rate).
    pub chat_refused: u64,
}

/// A room on this switchboard: the core state machine and its members' ids.
struct RoomEntry {
    room: Room,
    members: Vec<ParticipantId>,
    /// `RoomStats` values already counted, to export deltas.
    counted_switches: u64,
    counted_keyframes: u64,
    /// The last chat sequence number given out.
    chat_seq: u64,
}

/// Every room and session of one worker. See the module docs.
pub struct Switchboard {
    config: SwitchboardConfig,
    load: Box<dyn Load + Send>,
    rooms: HashMap<String, RoomEntry>,
    /// By server-chosen random id: the fast hasher is safe here and shows per packet.
    peers: FastMap<ParticipantId, Peer>,
    /// By transport and remote address: a TCP connection and a UDP socket of one client
    /// may share an address, and the answer must leave on the transport the input came in on.
    by_addr: HashMap<(Protocol, SocketAddr), ParticipantId>,
    by_ufrag: HashMap<String, ParticipantId>,
    timers: BinaryHeap<Reverse<(Instant, ParticipantId)>>,
    /// The earliest room tick (rooms only get an earlier one when someone joins).
    rooms_due: Option<Instant>,
    dirty: Vec<ParticipantId>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: Counters,
    /// Reused scratch space for the room's forward decisions.
    forwards: Vec<Forward>,
}

impl std::fmt::Debug for Switchboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switchboard")
            .field("public_addr", &self.config.public_addr)
            .field("rooms", &self.rooms.len())
            .field("participants", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Switchboard {
    /// An empty switchboard.
    pub fn new(config: SwitchboardConfig, load: Box<dyn Load + Send>) -> Self {
        Self {
            config,
            load,
            rooms: HashMap::new(),
            peers: FastMap::default(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            timers: BinaryHeap::new(),
            rooms_due: None,
            dirty: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            forwards: Vec::with_capacity(64),
        }
    }

    /// Participants hosted now.
    pub fn participants(&self) -> usize {
        self.peers.len()
    }

    /// Rooms hosted now.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Whether `user` has `participant` in `room` here.
    pub fn contains(&self, room: &str, participant: ParticipantId, user: &str) -> bool {
        self.peers
            .get(&participant)
            .is_some_and(|p| p.is(room, user))
    }

    /// Whether a session's ICE check was answered from `source` over `proto` (the address
    /// is registered: its traffic reaches a session).
    pub fn knows(&self, proto: Protocol, source: SocketAddr) -> bool {
        self.by_addr.contains_key(&(proto, source))
    }

    /// Messages waiting in `participant`'s data-channel outbox (for tests and debugging).
    pub fn queued_messages(&self, participant: ParticipantId) -> Option<usize> {
        self.peers.get(&participant).map(|p| p.queued())
    }

    /// The counters since the last call.
    pub fn take_counters(&mut self) -> Counters {
        std::mem::take(&mut self.counters)
    }

    /// Admits a participant: a draining shard opens no new rooms, a full room or shard
    /// refuses. On success the session exists and its answer goes back to the client.
    ///
    /// A user has one session per room: a join by a user who is in the room already ends
    /// the older session ([`RemoveReason::Replaced`], and it is told so), once the new
    /// offer has been accepted; the new session takes over the old one's slot.
    pub fn handle_join(&mut self, now: Instant, join: Join) -> Result<SdpAnswer, JoinRefusal> {
        let Join {
            room,
            participant: pid,
            info,
            offer,
        } = join;
        if self.peers.contains_key(&pid) {
            return Err(JoinRefusal::DuplicateParticipant);
        }
        // Before anything is reserved: a refused offer leaves the room and the shard as
        // they were.
        // Serialised once: the checks here and in `Peer::accept` read the text.
        let offer_sdp = offer.to_sdp_string();
        crate::session::check_offered_media(&offer_sdp).map_err(JoinRefusal::InvalidSdp)?;
        let replaced = self.member(&room, &info.user);
        let new_room = !self.rooms.contains_key(&room);
        if new_room && self.load.draining() {
            return Err(JoinRefusal::Draining);
        }
        if let Some(entry) = self.rooms.get(&room)
            && entry.members.len() - usize::from(replaced.is_some())
                >= self.config.max_room_participants
        {
            return Err(JoinRefusal::RoomFull);
        }
        // Slots first: a full shard sheds the join before the costly part (the SDP answer).
        // A replacement inherits the old session's slot.
        if replaced.is_none() && !self.load.add_participant() {
            return Err(JoinRefusal::ShardFull);
        }
        if new_room && !self.load.open_room(&room) {
            self.load.remove_participant();
            return Err(JoinRefusal::ShardFull);
        }
        let (peer, answer) = match Peer::accept(
            &room,
            info.clone(),
            offer,
            &offer_sdp,
            self.config.public_addr,
            self.config.public_tcp_addr,
            now,
        ) {
            Ok(accepted) => accepted,
            Err(why) => {
                // A bad offer changes nothing: the old session, if any, stays.
                if replaced.is_none() {
                    self.load.remove_participant();
                }
                if new_room {
                    self.load.close_room(&room);
                }
                return Err(JoinRefusal::InvalidSdp(why));
            }
        };
        if let Some(old) = replaced {
            self.detach_peer(old, RemoveReason::Replaced, now);
        }
        let max_participants = self.config.max_room_participants;
        let participant_timeout = self.config.participant_timeout;
        let entry = self.rooms.entry(room.clone()).or_insert_with(|| RoomEntry {
            room: Room::new(RoomConfig {
                max_participants,
                participant_timeout,
                ..RoomConfig::default()
            }),
            members: Vec::new(),
            counted_switches: 0,
            counted_keyframes: 0,
            chat_seq: 0,
        });
        if let Err(e) = entry.room.join(pid, info.clone(), now) {
            self.load.remove_participant();
            // Empty now (new, or its one member was replaced): it closes.
            if entry.members.is_empty() {
                self.rooms.remove(&room);
                self.load.close_room(&room);
                if !new_room {
                    self.events.push_back(Event::RoomClosed(room));
                }
            }
            return Err(match e {
                RoomError::RoomFull => JoinRefusal::RoomFull,
                RoomError::AlreadyJoined(_) => JoinRefusal::DuplicateParticipant,
                other => JoinRefusal::InvalidSdp(other.to_string()),
            });
        }
        entry.members.push(pid);
        entry.room.set_receive_cap(pid, peer.receive_cap_bps, now);
        if let Some(tick) = entry.room.poll_timeout() {
            self.rooms_due = Some(self.rooms_due.map_or(tick, |t| t.min(tick)));
        }
        self.by_ufrag.insert(peer.ufrag.clone(), pid);
        self.peers.insert(pid, peer);
        self.events.push_back(Event::Joined {
            room: room.clone(),
            participant: pid,
            user: info.user,
            new_room,
        });
        self.drain_room(&room, now);
        self.mark_dirty(pid);
        Ok(answer)
    }

    /// `user`'s participant leaves `room`; `false` when there is no such participant.
    pub fn handle_leave(
        &mut self,
        now: Instant,
        room: &str,
        participant: ParticipantId,
        user: &str,
    ) -> bool {
        if !self.contains(room, participant, user) {
            return false;
        }
        self.remove_peer(participant, RemoveReason::Left, now);
        true
    }

    /// An ICE restart of `user`'s participant in `room` (its transport failed or its address
    /// changed): the session, its id, subscriptions and published tracks stay; the room sees
    /// nothing. The new ufrag replaces the old one in the demultiplexer, and the addresses
    /// learnt so far are forgotten: the new one is learnt from the first check that proves
    /// it knows the new password, as for a join.
    pub fn handle_restart(
        &mut self,
        now: Instant,
        room: &str,
        participant: ParticipantId,
        user: &str,
        offer: SdpOffer,
    ) -> Result<SdpAnswer, RestartRefusal> {
        if !self.contains(room, participant, user) {
            return Err(RestartRefusal::SessionGone);
        }
        let offer_sdp = offer.to_sdp_string();
        let Some(peer) = self.peers.get_mut(&participant) else {
            return Err(RestartRefusal::SessionGone);
        };
        let old_ufrag = peer.ufrag.clone();
        let answer = peer.restart(offer, &offer_sdp)?;
        let new_ufrag = peer.ufrag.clone();
        for addr in std::mem::take(&mut peer.addrs) {
            self.by_addr.remove(&addr);
        }
        self.by_ufrag.remove(&old_ufrag);
        self.by_ufrag.insert(new_ufrag, participant);
        if let Some(entry) = self.rooms.get_mut(room) {
            entry.room.handle_activity(participant, now);
        }
        self.mark_dirty(participant);
        self.drain_dirty(now);
        Ok(answer)
    }

    /// Removes a participant whose join answer could not be delivered.
    pub fn abandon(&mut self, now: Instant, participant: ParticipantId) {
        self.remove_peer(participant, RemoveReason::Abandoned, now);
    }

    /// One UDP datagram from `source` (see [`Switchboard::handle_receive`]).
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        self.handle_receive(now, Protocol::Udp, source, data);
    }

    /// One packet from `source` over `proto` (a UDP datagram, or one RFC 4571 frame of an
    /// ICE-TCP connection): to the session its transport and address belong to, or for a
    /// new one, to the session whose ICE ufrag its STUN request names (see
    /// [`Switchboard::handle_new_address`]). Anything else is counted and dropped. What the
    /// session answers comes out of [`Switchboard::poll_transmit`] with the same `proto`.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        data: &[u8],
    ) {
        self.counters.datagrams += 1;
        let Some(destination) = self.local_addr(proto) else {
            self.counters.dropped_unknown += 1;
            return;
        };
        let Some(pid) = self.by_addr.get(&(proto, source)).copied() else {
            self.handle_new_address(now, proto, source, destination, data);
            return;
        };
        let Some(peer) = self.peers.get_mut(&pid) else {
            return;
        };
        // A client's first check counts as its nomination (see `stun::nominating`).
        let nomination = peer.nominate_first_check(data);
        let data = nomination.as_deref().unwrap_or(data);
        // NAT rebinding is a UDP matter: a TCP connection's address does not change.
        let seen_as = if proto == Protocol::Udp {
            peer.seen_as(source)
        } else {
            source
        };
        if peer.send_addr == Some(seen_as) {
            peer.last_heard = now;
        }
        let Ok(receive) = Receive::new(proto, seen_as, destination, data) else {
            self.counters.dropped_garbage += 1;
            return;
        };
        if let Err(e) = peer.rtc.handle_input(Input::Receive(now, receive)) {
            // str0m refuses what it cannot parse or decrypt; the session lives on.
            tracing::debug!(participant = %pid, %e, "input refused");
            self.counters.dropped_garbage += 1;
        }
        if let Some(entry) = self.rooms.get_mut(&peer.room) {
            entry.room.handle_activity(pid, now);
        }
        // str0m holds one decoded RTP packet at a time: drain before the next input.
        self.drain_peer(pid, now);
    }

    /// A datagram from an address no session has: only a STUN binding request naming one
    /// of our ufrags goes to that session, and the address is registered only when str0m
    /// answered it with a binding success, i.e. after it checked the message integrity with
    /// the session's ICE password. The USERNAME alone is public (it crosses the network in
    /// clear), so a forged request binds nothing, redirects nothing and uses up none of the
    /// participant's address slots.
    fn handle_new_address(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        let Some(ufrag) = stun::local_ufrag(data) else {
            if stun::is_stun(data) {
                self.counters.dropped_stun_unknown += 1;
            } else {
                self.counters.dropped_unknown += 1;
            }
            return;
        };
        let Some(pid) = self.by_ufrag.get(ufrag).copied() else {
            self.counters.dropped_stun_unknown += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&pid) else {
            return;
        };
        // A rebound NAT: str0m sees the path it has (and answers there, which goes here).
        let rebinding = if proto == Protocol::Udp {
            peer.rebinding(now, data)
        } else {
            None
        };
        let earlier = peer.rebound;
        if let Some(known) = rebinding {
            peer.rebound = Some((source, known));
        }
        // The client's very first check comes from an address no session has yet: it is
        // the one that must count as the nomination (`stun::nominating`), or the DTLS
        // handshake waits for the client's own nomination.
        let nomination = peer.nominate_first_check(data);
        let data = nomination.as_deref().unwrap_or(data);
        let seen_as = rebinding.unwrap_or(source);
        let Ok(receive) = Receive::new(proto, seen_as, destination, data) else {
            peer.rebound = earlier;
            self.counters.dropped_garbage += 1;
            return;
        };
        if let Err(e) = peer.rtc.handle_input(Input::Receive(now, receive)) {
            tracing::debug!(participant = %pid, %e, "STUN from a new address refused");
        }
        let sent_before = self.transmits.len();
        self.drain_peer(pid, now);
        let accepted = self.transmits.iter().skip(sent_before).any(|t| {
            t.proto == proto && t.destination == source && stun::is_binding_success(&t.contents)
        });
        let Some(peer) = self.peers.get_mut(&pid) else {
            return;
        };
        if !accepted {
            peer.rebound = earlier;
            self.counters.stun_unverified += 1;
            return;
        }
        if rebinding.is_some() {
            tracing::debug!(participant = %pid, %source, "NAT rebinding: the path moves");
            peer.last_heard = now;
        }
        // A client behind a NAT that rebinds often keeps going: only verified addresses
        // get here, so the oldest makes way (a forger cannot push the real one out).
        if peer.addrs.len() >= MAX_ADDRS_PER_PEER {
            let oldest = peer.addrs.remove(0);
            self.by_addr.remove(&oldest);
        }
        peer.addrs.push((proto, source));
        self.by_addr.insert((proto, source), pid);
        if let Some(entry) = self.rooms.get_mut(&peer.room) {
            entry.room.handle_activity(pid, now);
        }
    }

    /// Our address on `proto`: the one the client sent to.
    fn local_addr(&self, proto: Protocol) -> Option<SocketAddr> {
        match proto {
            Protocol::Udp => Some(self.config.public_addr),
            Protocol::Tcp => self.config.public_tcp_addr,
            _ => None,
        }
    }

    /// Serves the sessions and rooms whose timeouts are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, pid))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(peer) = self.peers.get_mut(&pid) else {
                continue;
            };
            peer.scheduled = None;
            if peer.timeout <= now {
                self.counters.session_timeouts += 1;
                if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(participant = %pid, %e, "timeout input failed");
                }
            }
            self.mark_dirty(pid);
        }
        if self.rooms_due.is_some_and(|t| t <= now) {
            let due: Vec<String> = self
                .rooms
                .iter()
                .filter(|(_, r)| r.room.poll_timeout().is_some_and(|t| t <= now))
                .map(|(name, _)| name.clone())
                .collect();
            for name in due {
                if let Some(entry) = self.rooms.get_mut(&name) {
                    entry.room.handle_timeout(now);
                }
                self.drain_room(&name, now);
            }
            self.rooms_due = self
                .rooms
                .values()
                .filter_map(|r| r.room.poll_timeout())
                .min();
        }
        self.drain_dirty(now);
    }

    /// The earliest session or room timeout.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let session = self.timers.peek().map(|Reverse((t, _))| *t);
        match (session, self.rooms_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next datagram to send. Drains the sessions that got input first, so one call
    /// after a batch of datagrams collects every subscriber's share of it.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.transmits.is_empty() {
            self.drain_dirty(now);
        }
        self.transmits.pop_front()
    }

    /// The next thing that happened.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Ends every session (the shard stops).
    pub fn shutdown(&mut self, now: Instant) {
        self.end_all(now, RemoveReason::Stopped);
    }

    /// Ends every session for `reason`, giving back every slot.
    pub fn end_all(&mut self, now: Instant, reason: RemoveReason) {
        let pids: Vec<ParticipantId> = self.peers.keys().copied().collect();
        for pid in pids {
            self.remove_peer(pid, reason, now);
        }
    }

    fn mark_dirty(&mut self, pid: ParticipantId) {
        if let Some(peer) = self.peers.get_mut(&pid)
            && !peer.dirty
        {
            peer.dirty = true;
            self.dirty.push(pid);
        }
    }

    /// Drains every session that got input or a write, until all are idle.
    fn drain_dirty(&mut self, now: Instant) {
        // Draining one session can dirty others (forwarded packets); loop until quiet.
        let mut rounds = 0;
        while !self.dirty.is_empty() && rounds < MAX_DRAIN_ROUNDS {
            rounds += 1;
            let dirty = std::mem::take(&mut self.dirty);
            for pid in &dirty {
                if let Some(peer) = self.peers.get_mut(pid) {
                    peer.dirty = false;
                }
            }
            for pid in dirty {
                self.drain_peer(pid, now);
            }
        }
    }

    fn schedule(&mut self, pid: ParticipantId) {
        let Some(peer) = self.peers.get_mut(&pid) else {
            return;
        };
        let at = peer.timeout;
        if peer.scheduled.is_none_or(|s| at < s) {
            peer.scheduled = Some(at);
            self.timers.push(Reverse((at, pid)));
        }
    }

    /// Polls one session until it returns `Timeout`, acting on what it emits. This is the
    /// one place a session's output is drained.
    fn drain_peer(&mut self, pid: ParticipantId, now: Instant) {
        if let Some(peer) = self.peers.get_mut(&pid) {
            peer.negotiate_if_needed();
            peer.flush_outbox();
            if peer.outbox_overflowed {
                tracing::warn!(participant = %pid, queued = peer.queued(), "data channel outbox overflowed: ending the session");
                self.remove_peer(pid, RemoveReason::Unresponsive, now);
                return;
            }
        }
        let mut drain = Drain::new(now);
        loop {
            let Some(peer) = self.peers.get_mut(&pid) else {
                return;
            };
            // Transmits (most of what a busy session yields) are queued without looking the
            // peer up again; an event may change anything, so the loop starts over after it.
            let polled = loop {
                if !peer.rtc.is_alive() {
                    break None;
                }
                match drain.next(&mut peer.rtc) {
                    Ok(Polled::Transmit(mut transmit)) => {
                        if !stun::is_stun(&transmit.contents) {
                            // DTLS and SRTP go down the nominated path only.
                            peer.send_addr = Some(transmit.destination);
                        }
                        transmit.destination = peer.send_to(transmit.destination);
                        self.transmits.push_back(transmit);
                    }
                    other => break Some(other),
                }
            };
            match polled {
                None => {
                    self.remove_peer(pid, RemoveReason::Closed, now);
                    return;
                }
                Some(Ok(Polled::Timeout(at))) => {
                    peer.timeout = at;
                    self.counters.session_timeouts += u64::from(drain.timeouts());
                    self.schedule(pid);
                    return;
                }
                // Queued in the inner loop.
                Some(Ok(Polled::Transmit(_))) => {}
                Some(Ok(Polled::Event(event))) => self.handle_event(pid, event, drain.now()),
                Some(Err(e)) => {
                    tracing::info!(participant = %pid, %e, "session failed");
                    self.remove_peer(pid, RemoveReason::Error, now);
                    return;
                }
            }
        }
    }

    /// `user`'s participant in `room`, if there is one.
    fn member(&self, room: &str, user: &str) -> Option<ParticipantId> {
        let entry = self.rooms.get(room)?;
        entry
            .members
            .iter()
            .copied()
            .find(|pid| self.peers.get(pid).is_some_and(|p| p.is(room, user)))
    }

    /// Removes a participant everywhere; the room forgets it (unless the room removed it
    /// already), and an empty room closes. The one place slots are given back.
    fn remove_peer(&mut self, pid: ParticipantId, reason: RemoveReason, now: Instant) {
        let Some(room_name) = self.detach_peer(pid, reason, now) else {
            return;
        };
        self.load.remove_participant();
        if self
            .rooms
            .get(&room_name)
            .is_some_and(|e| e.members.is_empty())
        {
            self.rooms.remove(&room_name);
            self.load.close_room(&room_name);
            self.events.push_back(Event::RoomClosed(room_name));
        }
    }

    /// Ends a participant's session and takes it out of its room, keeping its participant
    /// slot and the room (even when empty) for the caller: [`Self::remove_peer`], or a join
    /// that replaces it. Returns the room's name.
    fn detach_peer(
        &mut self,
        pid: ParticipantId,
        reason: RemoveReason,
        now: Instant,
    ) -> Option<String> {
        let mut peer = self.peers.remove(&pid)?;
        if let Some(message) = farewell(reason) {
            // Out before the session closes, so the client knows not to rejoin.
            peer.flush_outbox();
            peer.send(&message);
            let mut drain = Drain::new(now);
            loop {
                match drain.next(&mut peer.rtc) {
                    Ok(Polled::Transmit(transmit)) => self.transmits.push_back(transmit),
                    Ok(Polled::Event(_)) => {}
                    Ok(Polled::Timeout(_)) | Err(_) => break,
                }
            }
        }
        peer.rtc.disconnect();
        for addr in &peer.addrs {
            self.by_addr.remove(addr);
        }
        self.by_ufrag.remove(&peer.ufrag);
        self.load.add_egress(-(peer.egress_bps as i64));
        let room_name = peer.room;
        self.events.push_back(Event::Removed {
            room: room_name.clone(),
            participant: pid,
            reason,
        });
        if let Some(entry) = self.rooms.get_mut(&room_name) {
            entry.members.retain(|p| *p != pid);
            entry.room.leave(pid, now);
        }
        self.drain_room(&room_name, now);
        Some(room_name)
    }
}

/// What a participant removed for `reason` is told first, when anything.
fn farewell(reason: RemoveReason) -> Option<ServerMessage> {
    match reason {
        RemoveReason::Replaced => Some(ServerMessage::Ended {
            reason: EndReason::Replaced,
        }),
        _ => None,
    }
}
