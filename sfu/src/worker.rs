//! One worker thread: its UDP socket, its rooms and their participants' str0m sessions.
//!
//! The loop: take commands (join, leave, stop), read datagrams and hand each to the session
//! its source address (or, for a new address, its STUN username) belongs to, drain every
//! session that got input or whose timeout is due, drive the rooms' timers. Forwarding a
//! packet is a function call from the publisher's event to the subscribers' sessions: no
//! lock, no channel hop.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::net::{Protocol, Receive};
use str0m::{Input, Output};
use surge_cluster::token::JoinClaims;

use crate::core::hash::FastMap;
use crate::core::{ParticipantId, ParticipantInfo, Room, RoomConfig};
use crate::metrics_names as m;
use crate::session::{DUE_AHEAD, MAX_DUE_ROUNDS};
use crate::shard::Shared;
use crate::stun;

mod peer;
mod route;
mod udp;

use peer::Peer;
use udp::RxBatch;
pub(crate) use udp::{Udp, Waker};

/// The loop looks at its command queue at least this often.
const MAX_WAIT: Duration = Duration::from_millis(20);
/// How late a session or room timer may be served, so that one wake-up serves several.
const TIMER_SLACK: Duration = Duration::from_millis(1);
/// Counters are flushed to the metrics registry this often (not per packet).
const METRICS_FLUSH: Duration = Duration::from_secs(1);
/// Remote addresses remembered per participant (ICE may try several).
const MAX_ADDRS_PER_PEER: usize = 8;
/// Batches read (up to `quinn_udp::BATCH_SIZE` datagrams each) before timers get a turn.
const RECV_ROUNDS: usize = 8;

/// A request to join a room, answered on `reply`.
pub(crate) struct JoinRequest {
    pub room: String,
    pub participant: u64,
    pub claims: JoinClaims,
    pub offer: SdpOffer,
    pub reply: tokio::sync::oneshot::Sender<Result<SdpAnswer, JoinRefusal>>,
}

/// Why a worker refused a join.
#[derive(Debug)]
pub(crate) enum JoinRefusal {
    RoomFull,
    ShardFull,
    Draining,
    InvalidSdp(String),
}

/// A request to leave (or, as `Command::Lookup`, only to know whether the participant is
/// here), answered with whether the user's participant exists in the room.
pub(crate) struct LeaveRequest {
    pub room: String,
    pub participant: u64,
    pub user: String,
    pub reply: tokio::sync::oneshot::Sender<bool>,
}

pub(crate) enum Command {
    Join(Box<JoinRequest>),
    Leave(LeaveRequest),
    Lookup(LeaveRequest),
    Stop,
}

/// How the HTTP side reaches a worker.
pub(crate) struct WorkerHandle {
    pub public_addr: SocketAddr,
    pub commands: Sender<Command>,
    pub waker: Waker,
}

/// Binds a worker socket with large kernel buffers (bursts of video).
pub(crate) fn bind_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Counters kept locally and flushed to `metrics` once a second.
#[derive(Default)]
struct Counters {
    datagrams: u64,
    packets_in: u64,
    bytes_in: u64,
    packets_out: u64,
    bytes_out: u64,
    layer_switches: u64,
    keyframe_requests: u64,
    nacks: u64,
    dropped_garbage: u64,
    dropped_unknown: u64,
    dropped_stun_unknown: u64,
    dropped_send: u64,
    send_syscalls: u64,
    /// Loop turns and session timeouts handled: the fixed cost of keeping sessions alive.
    wakeups: u64,
    session_timeouts: u64,
}

impl Counters {
    fn flush(&mut self) {
        let c = std::mem::take(self);
        tracing::debug!(
            datagrams = c.datagrams,
            packets_in = c.packets_in,
            packets_out = c.packets_out,
            keyframe_requests = c.keyframe_requests,
            layer_switches = c.layer_switches,
            nacks = c.nacks,
            send_syscalls = c.send_syscalls,
            wakeups = c.wakeups,
            session_timeouts = c.session_timeouts,
            "worker counters (last second)"
        );
        metrics::counter!(m::PACKETS_IN).increment(c.packets_in);
        metrics::counter!(m::BYTES_IN).increment(c.bytes_in);
        metrics::counter!(m::PACKETS_OUT).increment(c.packets_out);
        metrics::counter!(m::BYTES_OUT).increment(c.bytes_out);
        metrics::counter!(m::LAYER_SWITCHES).increment(c.layer_switches);
        metrics::counter!(m::KEYFRAME_REQUESTS).increment(c.keyframe_requests);
        metrics::counter!(m::NACKS).increment(c.nacks);
        metrics::counter!(m::DATAGRAMS_DROPPED, "reason" => "garbage").increment(c.dropped_garbage);
        metrics::counter!(m::DATAGRAMS_DROPPED, "reason" => "unknown_source")
            .increment(c.dropped_unknown);
        metrics::counter!(m::DATAGRAMS_DROPPED, "reason" => "stun_unknown_ufrag")
            .increment(c.dropped_stun_unknown);
        metrics::counter!(m::DATAGRAMS_DROPPED, "reason" => "send_failed")
            .increment(c.dropped_send);
        metrics::counter!(m::SEND_SYSCALLS).increment(c.send_syscalls);
    }
}

/// A room on this worker: the core state machine and its members' ids.
struct RoomEntry {
    room: Room,
    members: Vec<ParticipantId>,
    /// `RoomStats` values already counted, to export deltas.
    counted_switches: u64,
    counted_keyframes: u64,
}

pub(crate) struct Worker {
    udp: Udp,
    rx: RxBatch,
    public_addr: SocketAddr,
    shared: Arc<Shared>,
    rooms: HashMap<String, RoomEntry>,
    /// By server-chosen random id: the fast hasher is safe here and shows per packet.
    peers: FastMap<ParticipantId, Peer>,
    by_addr: HashMap<SocketAddr, ParticipantId>,
    by_ufrag: HashMap<String, ParticipantId>,
    timers: BinaryHeap<Reverse<(Instant, ParticipantId)>>,
    /// The earliest room tick (rooms only get an earlier one when someone joins).
    rooms_due: Option<Instant>,
    dirty: Vec<ParticipantId>,
    counters: Counters,
    /// Reused scratch space for the room's forward decisions.
    forwards: Vec<crate::core::Forward>,
}

/// The thread body.
pub(crate) fn run(
    index: usize,
    udp: Udp,
    public_addr: SocketAddr,
    commands: Receiver<Command>,
    shared: Arc<Shared>,
) {
    let mut worker = Worker {
        udp,
        rx: RxBatch::new(),
        public_addr,
        shared,
        rooms: HashMap::new(),
        peers: FastMap::default(),
        by_addr: HashMap::new(),
        by_ufrag: HashMap::new(),
        timers: BinaryHeap::new(),
        rooms_due: None,
        dirty: Vec::new(),
        counters: Counters::default(),
        forwards: Vec::with_capacity(64),
    };
    worker.run_loop(&commands);
    worker.shutdown();
    tracing::debug!(index, "SFU worker stopped");
}

impl Worker {
    fn run_loop(&mut self, commands: &Receiver<Command>) {
        let mut last_flush = Instant::now();
        let mut more_waiting = false;
        loop {
            let loop_start = Instant::now();
            loop {
                match commands.try_recv() {
                    Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return,
                    Ok(Command::Join(request)) => self.join(*request, Instant::now()),
                    Ok(Command::Leave(request)) => self.leave(request, Instant::now()),
                    Ok(Command::Lookup(request)) => {
                        let here = self
                            .peers
                            .get(&ParticipantId(request.participant))
                            .is_some_and(|p| p.room == request.room && p.user == request.user);
                        let _ = request.reply.send(here);
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
            self.drain_dirty(Instant::now());
            self.udp.flush();

            // Everything but the wait counts as busy time.
            let mut blocked = Duration::ZERO;
            let mut readable = more_waiting;
            if !more_waiting {
                let wait_from = Instant::now();
                // Timers are served in bunches: a wake-up per session timeout would cost more
                // than the timeouts themselves, and pacing and RTCP tolerate a millisecond.
                let wait = (self.next_wake() + TIMER_SLACK)
                    .saturating_duration_since(wait_from)
                    .min(MAX_WAIT);
                readable = self.udp.wait(wait);
                blocked = wait_from.elapsed();
            }
            self.counters.wakeups += 1;
            more_waiting = false;
            for round in 0..RECV_ROUNDS {
                if !readable {
                    break;
                }
                if self.udp.recv(&mut self.rx) == 0 {
                    break;
                }
                let now = Instant::now();
                // Taken out for the loop so the handlers may borrow the worker.
                let rx = std::mem::replace(&mut self.rx, RxBatch::empty());
                rx.for_each(|source, data| self.handle_datagram(source, data, now));
                let full = rx.was_full();
                self.rx = rx;
                // Subscribers now hold this batch's packets: out in as few sends as may be.
                self.drain_dirty(now);
                self.udp.flush();
                if !full {
                    break;
                }
                more_waiting = round + 1 == RECV_ROUNDS;
            }
            let now = Instant::now();
            self.handle_timers(now);
            self.drain_dirty(Instant::now());
            self.udp.flush();
            if now.duration_since(last_flush) >= METRICS_FLUSH {
                let sent = self.udp.take_sent();
                self.counters.dropped_send += sent.dropped;
                self.counters.send_syscalls += sent.syscalls;
                self.publish_totals();
                self.counters.flush();
                last_flush = now;
            }
            let busy = loop_start.elapsed().saturating_sub(blocked);
            self.shared
                .busy_nanos
                .fetch_add(busy.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn publish_totals(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.shared
            .packets_out_total
            .fetch_add(self.counters.packets_out, Relaxed);
        self.shared
            .packets_in_total
            .fetch_add(self.counters.packets_in, Relaxed);
    }

    /// The earliest session or room timeout.
    fn next_wake(&self) -> Instant {
        let far = Instant::now() + MAX_WAIT;
        let session = self.timers.peek().map(|Reverse((t, _))| *t).unwrap_or(far);
        session.min(self.rooms_due.unwrap_or(far)).min(far)
    }

    fn handle_datagram(&mut self, source: SocketAddr, data: &[u8], now: Instant) {
        self.counters.datagrams += 1;
        let pid = match self.by_addr.get(&source) {
            Some(pid) => *pid,
            None => {
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
                if peer.addrs.len() >= MAX_ADDRS_PER_PEER {
                    self.counters.dropped_unknown += 1;
                    return;
                }
                peer.addrs.push(source);
                self.by_addr.insert(source, pid);
                pid
            }
        };
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.public_addr, data) else {
            self.counters.dropped_garbage += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&pid) else {
            return;
        };
        if let Err(e) = peer.rtc.handle_input(Input::Receive(now, receive)) {
            // str0m rejects what it cannot parse or decrypt; the session lives on.
            tracing::debug!(participant = %pid, %e, "input refused");
            self.counters.dropped_garbage += 1;
        }
        if let Some(entry) = self.rooms.get_mut(&peer.room) {
            entry.room.handle_activity(pid, now);
        }
        // str0m holds one decoded RTP packet at a time: drain before the next input.
        self.drain_peer(pid, now);
    }

    fn mark_dirty(&mut self, pid: ParticipantId) {
        if let Some(peer) = self.peers.get_mut(&pid)
            && !peer.dirty
        {
            peer.dirty = true;
            self.dirty.push(pid);
        }
    }

    fn handle_timers(&mut self, now: Instant) {
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
        if self.rooms_due.is_none_or(|t| t > now) {
            return;
        }
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

    /// Drains every session that got input or a write, until all are idle.
    fn drain_dirty(&mut self, now: Instant) {
        // Draining one session can dirty others (forwarded packets); loop until quiet.
        let mut rounds = 0;
        while !self.dirty.is_empty() && rounds < 64 {
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

    /// Polls one session until it returns `Timeout`, acting on what it emits.
    fn drain_peer(&mut self, pid: ParticipantId, mut now: Instant) {
        self.negotiate_if_needed(pid, now);
        if let Some(peer) = self.peers.get_mut(&pid)
            && !peer.outbox.is_empty()
        {
            peer.flush_outbox();
        }
        let mut due_rounds = 0;
        loop {
            let Some(peer) = self.peers.get_mut(&pid) else {
                return;
            };
            if !peer.rtc.is_alive() {
                self.remove_peer(pid, "closed", now);
                return;
            }
            match peer.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    // Due already (the pacer releasing queued packets, a retransmit):
                    // handle it now rather than after a trip through the socket wait.
                    if at <= now + DUE_AHEAD && due_rounds < MAX_DUE_ROUNDS {
                        due_rounds += 1;
                        // str0m ignores a timeout earlier than the last time it saw.
                        now = now.max(at);
                        self.counters.session_timeouts += 1;
                        if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                            tracing::debug!(participant = %pid, %e, "timeout input failed");
                        }
                        continue;
                    }
                    peer.timeout = at;
                    self.schedule(pid);
                    return;
                }
                Ok(Output::Transmit(transmit)) => {
                    self.udp.queue(transmit.destination, &transmit.contents);
                }
                Ok(Output::Event(event)) => self.handle_event(pid, event, now),
                Err(e) => {
                    tracing::info!(participant = %pid, %e, "session failed");
                    self.remove_peer(pid, "error", now);
                    return;
                }
            }
        }
    }

    fn join(&mut self, request: JoinRequest, now: Instant) {
        let JoinRequest {
            room,
            participant,
            claims,
            offer,
            reply,
        } = request;
        let pid = ParticipantId(participant);
        let limit = self.shared.limits.max_room_participants as usize;
        let new_room = !self.rooms.contains_key(&room);
        // Draining: no new rooms, but joins and rejoins to the rooms it hosts go on.
        if new_room
            && self
                .shared
                .draining
                .load(std::sync::atomic::Ordering::Acquire)
        {
            let _ = reply.send(Err(JoinRefusal::Draining));
            return;
        }
        if let Some(entry) = self.rooms.get(&room)
            && entry.members.len() >= limit
        {
            let _ = reply.send(Err(JoinRefusal::RoomFull));
            return;
        }
        if new_room && !self.shared.reserve_room(&room) {
            let _ = reply.send(Err(JoinRefusal::ShardFull));
            return;
        }
        let (peer, answer) = match Peer::accept(pid, &room, &claims, offer, self.public_addr, now) {
            Ok(ok) => ok,
            Err(why) => {
                if new_room {
                    self.shared.release_room(&room);
                }
                let _ = reply.send(Err(JoinRefusal::InvalidSdp(why)));
                return;
            }
        };
        let entry = self.rooms.entry(room.clone()).or_insert_with(|| {
            let config = RoomConfig {
                max_participants: limit,
                participant_timeout: self.shared.participant_timeout,
                ..RoomConfig::default()
            };
            RoomEntry {
                room: Room::new(config),
                members: Vec::new(),
                counted_switches: 0,
                counted_keyframes: 0,
            }
        });
        let info = ParticipantInfo {
            user: claims.sub.clone(),
            name: claims.name.clone(),
            publish: claims.publish,
            subscribe: claims.subscribe,
        };
        if let Err(e) = entry.room.join(pid, info, now) {
            let empty = entry.members.is_empty();
            if new_room && empty {
                self.rooms.remove(&room);
                self.shared.release_room(&room);
            }
            let refusal = match e {
                crate::core::RoomError::RoomFull => JoinRefusal::RoomFull,
                other => JoinRefusal::InvalidSdp(other.to_string()),
            };
            let _ = reply.send(Err(refusal));
            return;
        }
        entry.members.push(pid);
        if let Some(tick) = entry.room.poll_timeout() {
            self.rooms_due = Some(self.rooms_due.map_or(tick, |t| t.min(tick)));
        }
        self.by_ufrag.insert(peer.ufrag.clone(), pid);
        self.peers.insert(pid, peer);
        if reply.send(Ok(answer)).is_err() {
            // The HTTP request went away (timed out); it already released its slot.
            self.shared.reserve_participant();
            self.remove_peer(pid, "abandoned", now);
            return;
        }
        metrics::gauge!(m::PARTICIPANTS).increment(1.0);
        if new_room {
            metrics::gauge!(m::ROOMS).increment(1.0);
        }
        tracing::info!(room = %room, participant = %pid, user = %claims.sub, "joined");
        self.drain_room(&room, now);
        self.mark_dirty(pid);
    }

    fn leave(&mut self, request: LeaveRequest, now: Instant) {
        let pid = ParticipantId(request.participant);
        let ok = self
            .peers
            .get(&pid)
            .is_some_and(|p| p.room == request.room && p.user == request.user);
        if ok {
            self.remove_peer(pid, "left", now);
        }
        let _ = request.reply.send(ok);
    }

    /// Removes a participant everywhere; the room forgets it (unless the room removed it
    /// already), and an empty room closes.
    fn remove_peer(&mut self, pid: ParticipantId, reason: &'static str, now: Instant) {
        let Some(mut peer) = self.peers.remove(&pid) else {
            return;
        };
        peer.rtc.disconnect();
        for addr in &peer.addrs {
            self.by_addr.remove(addr);
        }
        self.by_ufrag.remove(&peer.ufrag);
        self.shared.add_egress(-(peer.egress_bps as i64));
        self.shared.release_participant();
        metrics::gauge!(m::PARTICIPANTS).decrement(1.0);
        metrics::counter!(m::PARTICIPANTS_REMOVED, "reason" => reason).increment(1);
        tracing::info!(room = %peer.room, participant = %pid, reason, "participant removed");
        let room_name = peer.room.clone();
        if let Some(entry) = self.rooms.get_mut(&room_name) {
            entry.members.retain(|p| *p != pid);
            entry.room.leave(pid, now);
        }
        self.drain_room(&room_name, now);
        if self
            .rooms
            .get(&room_name)
            .is_some_and(|e| e.members.is_empty())
        {
            self.rooms.remove(&room_name);
            self.shared.release_room(&room_name);
            metrics::gauge!(m::ROOMS).decrement(1.0);
            tracing::info!(room = %room_name, "room closed");
        }
    }

    fn shutdown(&mut self) {
        let now = Instant::now();
        let pids: Vec<ParticipantId> = self.peers.keys().copied().collect();
        for pid in pids {
            self.remove_peer(pid, "stopped", now);
        }
        self.udp.flush();
        self.publish_totals();
        self.counters.flush();
    }
}
