//! One worker thread: the IO shell around a [`Switchboard`]. It owns the UDP socket
//! (batched both ways), its ICE-TCP listener and connections, and the wall clock, takes commands from the HTTP side (join, leave,
//! lookup, stop), feeds datagrams and timeouts to the switchboard and sends what it hands
//! back; the switchboard owns the rooms and sessions.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::net::Protocol;

use surge_sfu_proto::core::{ParticipantId, ParticipantInfo};
use surge_sfu_proto::switchboard::WallClock;
use surge_sfu_proto::switchboard::{Counters, Event, Join, Load, RemoveReason};
use surge_sfu_proto::{Switchboard, SwitchboardConfig};

use crate::commands::{Command, JoinRequest, RestartRequest};
use crate::metrics_names as m;
use crate::occupancy::Occupancy;

mod tcp;
mod udp;

pub(crate) use tcp::{Tcp, TcpLimits};
use udp::RxBatch;
pub(crate) use udp::Udp;

/// The loop looks at its command queue at least this often.
const MAX_WAIT: Duration = Duration::from_millis(20);
/// How late a session or room timer may be served, so that one wake-up serves several.
const TIMER_SLACK: Duration = Duration::from_millis(1);
/// Counters are flushed to the metrics registry this often (not per packet).
const METRICS_FLUSH: Duration = Duration::from_secs(1);
/// Batches read (up to `quinn_udp::BATCH_SIZE` datagrams each) before timers get a turn.
const RECV_ROUNDS: usize = 8;

/// Binds a worker socket with large kernel buffers (bursts of video).
pub(crate) fn bind_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Binds a worker's ICE-TCP listener.
pub(crate) fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    // A restarted shard binds its port again while old connections linger in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// A worker's media transports: its UDP socket and, when enabled, its ICE-TCP listener
/// with the address clients reach it at.
pub(crate) struct Transports {
    pub udp: Udp,
    pub public_addr: SocketAddr,
    pub tcp: Option<(Tcp, SocketAddr)>,
}

/// What a worker is given of the shard: the shared counts, its session timeout, and the two
/// ways it says that it failed.
pub(crate) struct WorkerContext {
    pub occupancy: Arc<Occupancy>,
    pub participant_timeout: Duration,
    /// This worker's own flag, which its [`WorkerHandle`](crate::commands::WorkerHandle) reads.
    pub failed: Arc<AtomicBool>,
    /// The shard's: cancelled when any worker fails.
    pub worker_failed: tokio_util::sync::CancellationToken,
}

/// The shard-wide counts behind the switchboard's admission. It also remembers what this
/// worker holds, so that a worker that fails (a panic, with the switchboard in an unknown
/// state) can still give its slots back.
struct ShardLoad {
    occupancy: Arc<Occupancy>,
    held: Arc<Held>,
}

/// The participant and room slots one worker holds.
#[derive(Default)]
struct Held {
    participants: AtomicU32,
    rooms: Mutex<BTreeSet<String>>,
}

impl Held {
    fn rooms(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // A set of names: usable whatever a panicking holder left half done.
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives every slot still held back to the shard; returns (participants, rooms).
    fn release_all(&self, occupancy: &Occupancy) -> (u32, usize) {
        let participants = self.participants.swap(0, Ordering::AcqRel);
        for _ in 0..participants {
            occupancy.release_participant();
        }
        let rooms = std::mem::take(&mut *self.rooms());
        for room in &rooms {
            occupancy.release_room(room);
        }
        (participants, rooms.len())
    }
}

impl Load for ShardLoad {
    fn draining(&self) -> bool {
        self.occupancy.is_draining()
    }

    fn open_room(&self, room: &str) -> bool {
        let opened = self.occupancy.reserve_room(room);
        if opened {
            self.held.rooms().insert(room.to_owned());
        }
        opened
    }

    fn close_room(&self, room: &str) {
        self.held.rooms().remove(room);
        self.occupancy.release_room(room);
    }

    fn add_participant(&self) -> bool {
        let added = self.occupancy.reserve_participant();
        if added {
            self.held.participants.fetch_add(1, Ordering::AcqRel);
        }
        added
    }

    fn remove_participant(&self) {
        let _ = self
            .held
            .participants
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.occupancy.release_participant();
    }

    fn add_egress(&self, delta: i64) {
        self.occupancy.add_egress(delta);
    }
}

/// Exports the switchboard's counters (once a second, not per packet).
fn export(c: &Counters, sent: udp::Sent, wakeups: u64) {
    tracing::debug!(
        datagrams = c.datagrams,
        packets_in = c.packets_in,
        packets_out = c.packets_out,
        keyframe_requests = c.keyframe_requests,
        layer_switches = c.layer_switches,
        nacks = c.nacks,
        send_syscalls = sent.syscalls,
        wakeups,
        session_timeouts = c.session_timeouts,
        "worker counters (last second)"
    );
    metrics::counter!(m::PACKETS_IN).increment(c.packets_in);
    metrics::counter!(m::BYTES_IN).increment(c.bytes_in);
    metrics::counter!(m::PACKETS_OUT).increment(c.packets_out);
    metrics::counter!(m::BYTES_OUT).increment(c.bytes_out);
    metrics::counter!(m::LAYER_SWITCHES).increment(c.layer_switches);
    metrics::counter!(m::KEYFRAME_REQUESTS).increment(c.keyframe_requests);
    metrics::counter!(m::KEYFRAMES_REPLAYED).increment(c.keyframes_replayed);
    metrics::counter!(m::NACKS).increment(c.nacks);
    metrics::counter!(m::CHAT_MESSAGES).increment(c.chat_messages);
    metrics::counter!(m::CHAT_REFUSED).increment(c.chat_refused);
    metrics::counter!(m::DATAGRAMS_DROPPED, "reason" => "garbage").increment(c.dropped_garbage);
    metrics::counter!(m::DATAGRAMS_DROPPED, "reason" => "unknown_source")
        .increment(c.dropped_unknown);
    metrics::counter!(m::DATAGRAMS_DROPPED, "reason" => "stun_unknown_ufrag")
        .increment(c.dropped_stun_unknown);
    metrics::counter!(m::DATAGRAMS_DROPPED, "reason" => "stun_unverified")
        .increment(c.stun_unverified);
    metrics::counter!(m::DATAGRAMS_DROPPED, "reason" => "send_failed").increment(sent.dropped);
    metrics::counter!(m::SEND_SYSCALLS).increment(sent.syscalls);
}

pub(crate) struct Worker {
    udp: Udp,
    tcp: Option<Tcp>,
    rx: RxBatch,
    context: WorkerContext,
    switchboard: Switchboard,
    wakeups: u64,
}

/// The thread body. A panic anywhere in the loop (a bug: nothing a client sends should
/// panic) is caught here: the worker's participants are ended with the reason
/// `worker_failed`, its slots go back to the shard, the shard turns unready and the
/// process exits for a restart (see [`Worker::fail`]).
pub(crate) fn run(
    index: usize,
    transports: Transports,
    commands: Receiver<Command>,
    context: WorkerContext,
) {
    let Transports {
        udp,
        public_addr,
        tcp,
    } = transports;
    let public_tcp_addr = tcp.as_ref().map(|(_, addr)| *addr);
    let tcp = tcp.map(|(tcp, _)| tcp);
    let config = SwitchboardConfig {
        public_addr,
        public_tcp_addr,
        max_room_participants: context.occupancy.limits.max_room_participants as usize,
        participant_timeout: context.participant_timeout,
        wall_clock: wall_clock(),
    };
    let held = Arc::new(Held::default());
    let load = ShardLoad {
        occupancy: context.occupancy.clone(),
        held: held.clone(),
    };
    let switchboard = Switchboard::new(config, Box::new(load));
    let mut worker = Worker {
        udp,
        tcp,
        rx: RxBatch::new(),
        context,
        switchboard,
        wakeups: 0,
    };
    // The switchboard is not used again after a panic except to end its sessions, under
    // another guard.
    match std::panic::catch_unwind(AssertUnwindSafe(|| worker.run_loop(&commands))) {
        Ok(()) => {
            worker.shutdown();
            tracing::debug!(index, "SFU worker stopped");
        }
        Err(panic) => worker.fail(index, &held, panic_message(panic.as_ref())),
    }
}

/// The text a panic was raised with.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
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
                    Ok(Command::Restart(request)) => {
                        let RestartRequest {
                            room,
                            participant,
                            user,
                            offer,
                            reply,
                        } = *request;
                        let answer = self.switchboard.handle_restart(
                            Instant::now(),
                            &room,
                            ParticipantId(participant),
                            &user,
                            offer,
                        );
                        let _ = reply.send(answer);
                    }
                    Ok(Command::Leave(request)) => {
                        let left = self.switchboard.handle_leave(
                            Instant::now(),
                            &request.room,
                            ParticipantId(request.participant),
                            &request.user,
                        );
                        let _ = request.reply.send(left);
                    }
                    Ok(Command::Lookup(request)) => {
                        let here = self.switchboard.contains(
                            &request.room,
                            ParticipantId(request.participant),
                            &request.user,
                        );
                        let _ = request.reply.send(here);
                    }
                    Ok(Command::InjectPanic) => panic!("a worker panic injected by a test"),
                    Err(TryRecvError::Empty) => break,
                }
            }
            self.send_all(Instant::now());

            // Everything but the wait counts as busy time.
            let mut blocked = Duration::ZERO;
            let mut readable = more_waiting;
            // Looked at whenever the UDP side is busy too, so TCP clients are not starved.
            let mut tcp_ready = more_waiting;
            if !more_waiting {
                let wait_from = Instant::now();
                // Timers are served in bunches: a wake-up per session timeout would cost more
                // than the timeouts themselves, and pacing and RTCP tolerate a millisecond.
                let wait = (self.next_wake(wait_from) + TIMER_SLACK)
                    .saturating_duration_since(wait_from)
                    .min(MAX_WAIT);
                let (udp, tcp) = self.udp.wait_both(wait);
                readable = udp;
                tcp_ready = tcp;
                blocked = wait_from.elapsed();
            }
            if tcp_ready && let Some(tcp) = &mut self.tcp {
                // What it answered goes out with the rest of this wake-up (`send_all` below).
                tcp.handle_ready(Instant::now(), &mut self.switchboard);
            }
            self.wakeups += 1;
            more_waiting = false;
            for round in 0..RECV_ROUNDS {
                if !readable {
                    break;
                }
                if self.udp.recv(&mut self.rx) == 0 {
                    break;
                }
                let now = Instant::now();
                let switchboard = &mut self.switchboard;
                self.rx
                    .for_each(|source, data| switchboard.handle_datagram(now, source, data));
                let full = self.rx.was_full();
                // Subscribers now hold this batch's packets: out in as few sends as may be.
                self.send_all(now);
                if !full {
                    break;
                }
                more_waiting = round + 1 == RECV_ROUNDS;
            }
            let now = Instant::now();
            if self.switchboard.poll_timeout().is_some_and(|t| t <= now) {
                self.switchboard.handle_timeout(now);
            }
            self.send_all(Instant::now());
            if now.duration_since(last_flush) >= METRICS_FLUSH {
                if let Some(tcp) = &mut self.tcp {
                    tcp.sweep(now);
                }
                self.export_counters();
                last_flush = now;
            }
            let busy = loop_start.elapsed().saturating_sub(blocked);
            self.context
                .occupancy
                .busy_nanos
                .fetch_add(busy.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn export_counters(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let counters = self.switchboard.take_counters();
        let sent = self.udp.take_sent();
        let occupancy = &self.context.occupancy;
        occupancy
            .packets_out_total
            .fetch_add(counters.packets_out, Relaxed);
        occupancy
            .packets_in_total
            .fetch_add(counters.packets_in, Relaxed);
        export(&counters, sent, std::mem::take(&mut self.wakeups));
    }

    /// The earliest switchboard timeout, at most [`MAX_WAIT`] away.
    fn next_wake(&self, now: Instant) -> Instant {
        let far = now + MAX_WAIT;
        self.switchboard.poll_timeout().unwrap_or(far).min(far)
    }

    /// Sends every datagram the switchboard has, and logs what happened.
    fn send_all(&mut self, now: Instant) {
        while let Some(transmit) = self.switchboard.poll_transmit(now) {
            match (transmit.proto, &mut self.tcp) {
                (Protocol::Udp, _) => self.udp.queue(transmit.destination, &transmit.contents),
                (Protocol::Tcp, Some(tcp)) => tcp.queue(transmit.destination, &transmit.contents),
                // No candidate of ours has another transport: nothing to send it on.
                _ => {}
            }
        }
        self.udp.flush();
        if let Some(tcp) = &mut self.tcp {
            tcp.flush();
        }
        while let Some(event) = self.switchboard.poll_event() {
            log_event(event);
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
        let join = Join {
            room,
            participant: ParticipantId(participant),
            info: ParticipantInfo {
                user: claims.sub.clone(),
                name: claims.name.clone(),
                publish: claims.publish,
                subscribe: claims.subscribe,
            },
            offer,
        };
        match self.switchboard.handle_join(now, join) {
            Ok(answer) => {
                if reply.send(Ok(answer)).is_err() {
                    // The HTTP request went away (timed out): nobody will use this session.
                    self.switchboard.abandon(now, ParticipantId(participant));
                }
            }
            Err(refusal) => {
                let _ = reply.send(Err(refusal));
            }
        }
    }

    fn shutdown(&mut self) {
        let now = Instant::now();
        self.switchboard.shutdown(now);
        self.send_all(now);
        if let Some(tcp) = &mut self.tcp {
            tcp.close_all();
        }
        self.export_counters();
    }

    /// After a panic: marks this worker failed (joins for its rooms get `503
    /// worker_unavailable`, `/readyz` 503 `sfu_worker_failed`), ends its participants with
    /// the reason `worker_failed` where the switchboard still can, gives back every slot
    /// it held, and tells the shard, whose process then exits non-zero.
    fn fail(&mut self, index: usize, held: &Held, why: String) {
        tracing::error!(index, panic = %why, "SFU worker failed: its calls are lost; the shard exits for a restart");
        metrics::counter!(m::WORKER_FAILURES).increment(1);
        self.context.failed.store(true, Ordering::Release);
        let ended = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let now = Instant::now();
            self.switchboard.end_all(now, RemoveReason::WorkerFailed);
            self.send_all(now);
        }));
        if ended.is_err() {
            tracing::error!(
                index,
                "the failed worker's sessions could not be ended one by one"
            );
        }
        let (participants, rooms) = held.release_all(&self.context.occupancy);
        if participants > 0 || rooms > 0 {
            // What the switchboard could not end (and so did not report) leaves the gauges.
            metrics::gauge!(m::PARTICIPANTS).decrement(f64::from(participants));
            metrics::gauge!(m::ROOMS).decrement(rooms as f64);
            metrics::counter!(m::PARTICIPANTS_REMOVED, "reason" => RemoveReason::WorkerFailed.as_str())
                .increment(u64::from(participants));
        }
        self.context.worker_failed.cancel();
    }
}

/// Gauges and logs for what the switchboard reports.
/// The wall clock now, for the switchboard's dates (it reads no clock itself).
fn wall_clock() -> WallClock {
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    WallClock {
        at: Instant::now(),
        unix_ms,
    }
}

fn log_event(event: Event) {
    match event {
        Event::Joined {
            room,
            participant,
            user,
            new_room,
        } => {
            metrics::gauge!(m::PARTICIPANTS).increment(1.0);
            if new_room {
                metrics::gauge!(m::ROOMS).increment(1.0);
            }
            tracing::info!(room = %room, participant = %participant, user = %user, "joined");
        }
        Event::Removed {
            room,
            participant,
            reason,
        } => {
            metrics::gauge!(m::PARTICIPANTS).decrement(1.0);
            metrics::counter!(m::PARTICIPANTS_REMOVED, "reason" => reason.as_str()).increment(1);
            tracing::info!(room = %room, participant = %participant, reason = reason.as_str(), "participant removed");
        }
        Event::RoomClosed(room) => {
            metrics::gauge!(m::ROOMS).decrement(1.0);
            tracing::info!(room = %room, "room closed");
        }
        _ => {}
    }
}
