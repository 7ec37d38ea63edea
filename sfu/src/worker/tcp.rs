//! The worker's passive ICE-TCP listener (RFC 6544) and its connections, for clients whose
//! networks let no UDP through. Each connection carries RFC 4571 frames (`crate::framing`); its
//! packets go to the switchboard keyed by (TCP, remote address), and what the switchboard
//! sends back over TCP is framed into that connection's bounded write buffer.
//!
//! A TCP connection costs the worker memory and a file descriptor, so each one must earn
//! its keep. It is closed (and counted by reason) when:
//! - its framing is broken (a zero or oversized length) or its first packet is not STUN;
//! - no ICE check of it was answered within [`HANDSHAKE_TIMEOUT`] (half-open, or a peer
//!   that knows no ufrag of ours);
//! - nothing arrived on it for the idle timeout (the participant timeout);
//! - its write buffer passes [`MAX_WRITE_BUFFER`] (a reader slower than its media: dropping
//!   it is the only way not to block the worker or grow without bound);
//! - the worker holds its maximum of connections already (closed at accept).
//!
//! The listener and connections have their own `epoll`, whose descriptor the worker's
//! wait watches beside the UDP socket: this module stays apart from the UDP path.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use str0m::net::Protocol;
use surge_sfu_proto::Switchboard;

use crate::framing::{self, Deframer};
use crate::metrics_names as m;

const LISTENER: mio::Token = mio::Token(0);
/// A connection must have an ICE check answered this soon after it was accepted.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Framed bytes waiting for a connection's socket, at most; past it the reader is too slow.
pub(crate) const MAX_WRITE_BUFFER: usize = 256 * 1024;
/// The kernel's share of a slow reader's backlog (its send buffer): small enough that a
/// stalled reader is noticed within seconds, large enough for a video subscriber's
/// bandwidth-delay product.
const SOCKET_SEND_BUFFER: usize = 256 * 1024;

/// Why a connection was closed (the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    BadFraming,
    NotStun,
    Handshake,
    Idle,
    SlowReader,
    OverCap,
    PeerClosed,
    Error,
    Stopped,
}

impl CloseReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            CloseReason::BadFraming => "bad_framing",
            CloseReason::NotStun => "not_stun",
            CloseReason::Handshake => "handshake_timeout",
            CloseReason::Idle => "idle",
            CloseReason::SlowReader => "slow_reader",
            CloseReason::OverCap => "over_cap",
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Error => "error",
            CloseReason::Stopped => "stopped",
        }
    }
}

/// How the worker's TCP side is set up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpLimits {
    /// Connections at most.
    pub max_connections: usize,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
}

struct Conn {
    stream: mio::net::TcpStream,
    remote: SocketAddr,
    input: Deframer,
    /// Framed output not yet written, from `written` on.
    output: Vec<u8>,
    written: usize,
    accepted: Instant,
    last_input: Instant,
    /// A packet arrived (the first must be STUN).
    started: bool,
    /// An ICE check on it was answered: it belongs to a session.
    established: bool,
}

impl Conn {
    /// Writes what the socket takes; `Err` when the connection is broken.
    fn flush(&mut self) -> std::io::Result<()> {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
        } else if self.written > self.output.len() / 2 {
            self.output.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        self.output.len() - self.written
    }
}

/// See the module docs.
pub(crate) struct Tcp {
    listener: mio::net::TcpListener,
    poll: mio::Poll,
    events: mio::Events,
    conns: HashMap<mio::Token, Conn>,
    by_remote: HashMap<SocketAddr, mio::Token>,
    /// Connections with output to write at the next flush.
    unflushed: Vec<mio::Token>,
    next_token: usize,
    limits: TcpLimits,
}

impl Tcp {
    /// Takes over a bound listener.
    pub fn new(listener: std::net::TcpListener, limits: TcpLimits) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let mut listener = mio::net::TcpListener::from_std(listener);
        let poll = mio::Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, mio::Interest::READABLE)?;
        Ok(Self {
            listener,
            poll,
            events: mio::Events::with_capacity(64),
            conns: HashMap::new(),
            by_remote: HashMap::new(),
            unflushed: Vec::new(),
            next_token: 1,
            limits,
        })
    }

    /// The descriptor that turns readable when anything here is ready (for the worker's wait).
    pub fn ready_fd(&self) -> std::os::fd::RawFd {
        self.poll.as_raw_fd()
    }

    /// Serves what is ready: accepts, reads (feeding `switchboard`), writes. Packets go to
    /// the switchboard with `proto` TCP and the connection's remote address.
    pub fn handle_ready(&mut self, now: Instant, switchboard: &mut Switchboard) {
        loop {
            if let Err(e) = self.poll.poll(&mut self.events, Some(Duration::ZERO)) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::warn!(%e, "TCP epoll wait failed");
                }
                return;
            }
            let tokens: Vec<(mio::Token, bool, bool)> = self
                .events
                .iter()
                .map(|e| {
                    (
                        e.token(),
                        e.is_readable() || e.is_read_closed(),
                        e.is_writable(),
                    )
                })
                .collect();
            let full = tokens.len() == self.events.capacity();
            for (token, readable, writable) in tokens {
                if token == LISTENER {
                    self.accept(now);
                    continue;
                }
                if writable {
                    self.flush_one(token);
                }
                if readable {
                    self.read(token, now, switchboard);
                }
            }
            if !full {
                return;
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, remote)) => {
                    metrics::counter!(m::TCP_ACCEPTED).increment(1);
                    if self.conns.len() >= self.limits.max_connections {
                        count_close(CloseReason::OverCap);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let _ =
                        socket2::SockRef::from(&stream).set_send_buffer_size(SOCKET_SEND_BUFFER);
                    let token = mio::Token(self.next_token);
                    self.next_token += 1;
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        token,
                        mio::Interest::READABLE | mio::Interest::WRITABLE,
                    ) {
                        tracing::debug!(%e, "TCP connection could not be registered");
                        count_close(CloseReason::Error);
                        continue;
                    }
                    metrics::gauge!(m::TCP_CONNECTIONS).increment(1.0);
                    tracing::debug!(%remote, "ICE-TCP connection accepted");
                    self.by_remote.insert(remote, token);
                    self.conns.insert(
                        token,
                        Conn {
                            stream,
                            remote,
                            input: Deframer::default(),
                            output: Vec::new(),
                            written: 0,
                            accepted: now,
                            last_input: now,
                            started: false,
                            established: false,
                        },
                    );
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, or a connection reset before accept: try later.
                    tracing::debug!(%e, "TCP accept failed");
                    return;
                }
            }
        }
    }

    /// Reads everything waiting on one connection and hands its packets over.
    fn read(&mut self, token: mio::Token, now: Instant, switchboard: &mut Switchboard) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let remote = conn.remote;
        let mut close = None;
        loop {
            match conn.stream.read(conn.input.spare()) {
                Ok(0) => {
                    close = Some(CloseReason::PeerClosed);
                    break;
                }
                Ok(n) => conn.input.filled(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    close = Some(CloseReason::Error);
                    break;
                }
            }
            conn.last_input = now;
            // Whole packets go to the switchboard before the next read reuses the buffer.
            while let Some(next) = conn.input.next_packet() {
                match next {
                    Ok(packet) => {
                        if !conn.started {
                            if !surge_sfu_proto::is_stun(packet) {
                                close = Some(CloseReason::NotStun);
                                break;
                            }
                            conn.started = true;
                        }
                        switchboard.handle_receive(now, Protocol::Tcp, remote, packet);
                    }
                    Err(e) => {
                        tracing::debug!(%remote, %e, "ICE-TCP framing broken");
                        close = Some(CloseReason::BadFraming);
                        break;
                    }
                }
            }
            if close.is_some() {
                break;
            }
        }
        if !conn.established && switchboard.knows(Protocol::Tcp, remote) {
            conn.established = true;
        }
        if let Some(reason) = close {
            self.close(token, reason);
        }
    }

    /// Frames one packet for `destination`'s connection; it leaves with the next flush.
    /// Dropped when there is no such connection (it closed) or the packet cannot be framed;
    /// the connection is closed when its backlog passes [`MAX_WRITE_BUFFER`].
    pub fn queue(&mut self, destination: SocketAddr, packet: &[u8]) {
        let Some(token) = self.by_remote.get(&destination).copied() else {
            metrics::counter!(m::DATAGRAMS_DROPPED, "reason" => "tcp_no_connection").increment(1);
            return;
        };
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.pending() + packet.len() + 2 > MAX_WRITE_BUFFER {
            tracing::info!(remote = %conn.remote, pending = conn.pending(), "ICE-TCP reader too slow: closing its connection");
            self.close(token, CloseReason::SlowReader);
            return;
        }
        if conn.output.is_empty() {
            self.unflushed.push(token);
        }
        if !framing::frame(&mut conn.output, packet) {
            metrics::counter!(m::DATAGRAMS_DROPPED, "reason" => "tcp_unframable").increment(1);
        }
    }

    /// Writes what was queued since the last flush.
    pub fn flush(&mut self) {
        let tokens = std::mem::take(&mut self.unflushed);
        for token in tokens {
            self.flush_one(token);
        }
    }

    fn flush_one(&mut self, token: mio::Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        // What the socket does not take now goes when it turns writable (edge-triggered).
        if conn.flush().is_err() {
            self.close(token, CloseReason::Error);
        }
    }

    /// Closes connections that never completed an ICE check in time or went silent.
    pub fn sweep(&mut self, now: Instant) {
        let idle = self.limits.idle_timeout;
        let expired: Vec<(mio::Token, CloseReason)> = self
            .conns
            .iter()
            .filter_map(|(token, c)| {
                if !c.established && now.duration_since(c.accepted) >= HANDSHAKE_TIMEOUT {
                    Some((*token, CloseReason::Handshake))
                } else if now.duration_since(c.last_input) >= idle {
                    Some((*token, CloseReason::Idle))
                } else {
                    None
                }
            })
            .collect();
        for (token, reason) in expired {
            self.close(token, reason);
        }
    }

    /// Closes every connection (the worker stops).
    pub fn close_all(&mut self) {
        let tokens: Vec<mio::Token> = self.conns.keys().copied().collect();
        for token in tokens {
            self.close(token, CloseReason::Stopped);
        }
    }

    fn close(&mut self, token: mio::Token, reason: CloseReason) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        self.by_remote.remove(&conn.remote);
        // Counted before the peer can see the close: whoever watches both (a test, an
        // operator's probe) never finds the connection closed and not yet counted.
        metrics::gauge!(m::TCP_CONNECTIONS).decrement(1.0);
        count_close(reason);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        tracing::debug!(remote = %conn.remote, reason = reason.as_str(), "ICE-TCP connection closed");
    }
}

fn count_close(reason: CloseReason) {
    metrics::counter!(m::TCP_CLOSED, "reason" => reason.as_str()).increment(1);
}
