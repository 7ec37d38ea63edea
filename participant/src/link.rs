//! The participant's transport: a UDP socket, (ICE-TCP only) one TCP connection from an
//! active candidate to the shard's passive one, with RFC 4571 framing, or (relay-only) a
//! TURN allocation.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use str0m::net::{Protocol, TcpType};
use str0m::{Candidate, Rtc};

use super::turn::socket::RelayLink;
use super::{IceTransport, ParticipantConfig, ParticipantError};
use surge_sfu_proto::framing::{self, Deframer};

/// An active TCP candidate's port: it connects and never listens (RFC 6544 §4.5).
const DISCARD_PORT: u16 = 9;
/// How long connecting to the shard's passive candidate may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A stalling reader's receive buffer: small, so the shard's backlog grows fast.
const STALLED_RECEIVE_BUFFER: usize = 4096;
/// Framed output waiting for the TCP connection to take it; past this, packets are dropped
/// as a full UDP socket buffer would drop them (a session never waits on a write).
const TCP_OUTPUT_LIMIT: usize = 256 * 1024;
/// While TCP output waits, the session tries again this soon.
const TCP_RETRY: Duration = Duration::from_millis(5);

/// A transport chosen at offer time; TCP connects once the answer names the candidate.
pub(super) enum Unconnected {
    Udp(UdpSocket),
    Tcp,
    /// Relay-only: the allocation is made once the join answer names the TURN servers.
    Relay,
}

/// A bound transport and a str0m session with its one local candidate.
pub(super) fn bound_session(
    config: &ParticipantConfig,
    now: Instant,
) -> Result<(Unconnected, SocketAddr, Rtc), ParticipantError> {
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
    let rtc_error = |e: str0m::error::IceError| ParticipantError::Rtc(e.to_string());
    if config.tcp_only {
        let local = SocketAddr::new(config.bind_ip, DISCARD_PORT);
        let candidate = Candidate::builder()
            .tcp()
            .host(local)
            .tcptype(TcpType::Active)
            .build()
            .map_err(rtc_error)?;
        rtc.add_local_candidate(candidate);
        return Ok((Unconnected::Tcp, local, rtc));
    }
    if config.ice_transport == IceTransport::Relay {
        // No host candidate: every path goes through the relayed one, added later.
        return Ok((Unconnected::Relay, SocketAddr::new(config.bind_ip, 0), rtc));
    }
    let socket = UdpSocket::bind(SocketAddr::new(config.bind_ip, 0))?;
    let local = socket.local_addr()?;
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(rtc_error)?);
    Ok((Unconnected::Udp(socket), local, rtc))
}

impl Unconnected {
    /// Ready to carry the session whose remote description is `remote_sdp`.
    pub fn connect(
        self,
        remote_sdp: &str,
        config: &ParticipantConfig,
    ) -> Result<Link, ParticipantError> {
        match self {
            Unconnected::Udp(socket) => Ok(Link::Udp(socket)),
            Unconnected::Relay => Err(ParticipantError::Rtc(
                "relay-only ICE needs the join through the API (it names the TURN servers)".into(),
            )),
            Unconnected::Tcp => {
                let remote = passive_tcp_candidate(remote_sdp).ok_or_else(|| {
                    ParticipantError::Rtc("the answer has no passive TCP candidate".into())
                })?;
                let domain = socket2::Domain::for_address(remote);
                let socket = socket2::Socket::new(
                    domain,
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )?;
                if config.tcp_stall_after.is_some() {
                    socket.set_recv_buffer_size(STALLED_RECEIVE_BUFFER)?;
                }
                socket.connect_timeout(&remote.into(), CONNECT_TIMEOUT)?;
                let stream: TcpStream = socket.into();
                stream.set_nodelay(true)?;
                Ok(Link::Tcp(TcpLink {
                    stream,
                    remote,
                    input: Deframer::default(),
                    output: Vec::with_capacity(2048),
                    stall_at: config.tcp_stall_after.map(|d| Instant::now() + d),
                    closed: false,
                }))
            }
        }
    }
}

/// The addresses of the UDP `a=candidate`s of `sdp` (where a relay must let media through).
pub(super) fn udp_candidates(sdp: &str) -> Vec<SocketAddr> {
    sdp.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line
                .trim()
                .strip_prefix("a=candidate:")?
                .split_whitespace()
                .collect();
            if !fields.get(2)?.eq_ignore_ascii_case("udp") {
                return None;
            }
            let ip: IpAddr = fields.get(4)?.parse().ok()?;
            let port: u16 = fields.get(5)?.parse().ok()?;
            Some(SocketAddr::new(ip, port))
        })
        .collect()
}

/// The first `a=candidate` of `sdp` that is a passive TCP one.
fn passive_tcp_candidate(sdp: &str) -> Option<SocketAddr> {
    sdp.lines().find_map(|line| {
        let fields: Vec<&str> = line
            .trim()
            .strip_prefix("a=candidate:")?
            .split_whitespace()
            .collect();
        // foundation component transport priority address port typ type [name value]...
        let passive = fields
            .windows(2)
            .any(|w| w[0] == "tcptype" && w[1] == "passive");
        if !fields.get(2)?.eq_ignore_ascii_case("tcp") || !passive {
            return None;
        }
        let ip: IpAddr = fields.get(4)?.parse().ok()?;
        let port: u16 = fields.get(5)?.parse().ok()?;
        Some(SocketAddr::new(ip, port))
    })
}

pub(super) enum Link {
    Udp(UdpSocket),
    Tcp(TcpLink),
    Relay(Box<RelayLink>),
}

pub(super) struct TcpLink {
    stream: TcpStream,
    remote: SocketAddr,
    input: Deframer,
    /// Framed packets the connection has not taken yet.
    output: Vec<u8>,
    /// From then on nothing is read (a test's slow reader).
    stall_at: Option<Instant>,
    /// The shard closed the connection (or its framing broke).
    closed: bool,
}

impl Link {
    pub fn proto(&self) -> Protocol {
        match self {
            Link::Udp(_) | Link::Relay(_) => Protocol::Udp,
            Link::Tcp(_) => Protocol::Tcp,
        }
    }

    /// Every read and write returns at once (the driver waits on the descriptor).
    pub fn set_nonblocking(&mut self) -> std::io::Result<()> {
        match self {
            Link::Udp(s) => s.set_nonblocking(true),
            Link::Relay(r) => r.set_nonblocking(true),
            Link::Tcp(t) => t.stream.set_nonblocking(true),
        }
    }

    /// The descriptor the driver polls for readability.
    pub fn fd(&self) -> RawFd {
        match self {
            Link::Udp(s) => s.as_raw_fd(),
            Link::Relay(r) => r.fd(),
            Link::Tcp(t) => t.stream.as_raw_fd(),
        }
    }

    /// When the transport itself next needs [`Link::handle_timeout`]: a TURN refresh or
    /// retransmission, TCP output still waiting.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        match self {
            Link::Udp(_) => None,
            Link::Relay(r) => r.poll_timeout(),
            Link::Tcp(t) => (!t.output.is_empty() && !t.closed).then_some(now + TCP_RETRY),
        }
    }

    /// Runs the transport's own timers.
    pub fn handle_timeout(&mut self, _now: Instant) {
        match self {
            Link::Udp(_) => {}
            Link::Relay(r) => r.tick(),
            Link::Tcp(t) => t.flush(),
        }
    }

    /// One packet into `buf`, with its source.
    pub fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        match self {
            Link::Udp(s) => s.recv_from(buf),
            Link::Relay(r) => r.recv(buf),
            Link::Tcp(t) => t.recv(buf).map(|n| (n, t.remote)),
        }
    }

    /// Sends one packet (best effort, like a datagram).
    pub fn send(&mut self, packet: &[u8], destination: SocketAddr) {
        match self {
            Link::Udp(s) => {
                let _ = s.send_to(packet, destination);
            }
            Link::Relay(r) => r.send(packet, destination),
            Link::Tcp(t) => {
                if t.closed || destination != t.remote || t.output.len() >= TCP_OUTPUT_LIMIT {
                    return;
                }
                if framing::frame(&mut t.output, packet) {
                    t.flush();
                }
            }
        }
    }
}

impl Link {
    /// The session ends: release what a server holds for it (a TURN allocation).
    pub fn close(&mut self) {
        if let Link::Relay(r) = self {
            r.close();
        }
    }
}

impl TcpLink {
    /// The next deframed packet, `WouldBlock` when none is whole yet (or the connection is
    /// closed or stalled: nothing more will be read).
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(next) = self.input.next_packet() {
                let Ok(packet) = next else {
                    self.closed = true;
                    continue;
                };
                let n = packet.len().min(buf.len());
                buf[..n].copy_from_slice(&packet[..n]);
                return Ok(n);
            }
            let stalled = self.stall_at.is_some_and(|at| Instant::now() >= at);
            if self.closed || stalled {
                return Err(ErrorKind::WouldBlock.into());
            }
            match self.stream.read(self.input.spare()) {
                Ok(0) => self.closed = true,
                Ok(n) => self.input.filled(n),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    return Err(e);
                }
                Err(_) => self.closed = true,
            }
        }
    }

    /// Writes as much of the waiting output as the connection takes now.
    fn flush(&mut self) {
        while !self.output.is_empty() && !self.closed {
            match self.stream.write(&self.output) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => self.closed = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_passive_tcp_candidate_is_found_among_others() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706175 127.0.0.1 5000 typ host\r\n\
                   a=candidate:2 1 tcp 1671430143 127.0.0.1 5001 typ host tcptype passive\r\n";
        assert_eq!(
            passive_tcp_candidate(sdp),
            Some("127.0.0.1:5001".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(
            passive_tcp_candidate("a=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n"),
            None
        );
        assert_eq!(
            udp_candidates(sdp),
            ["127.0.0.1:5000".parse().unwrap_or_else(|e| panic!("{e}"))]
        );
        assert!(udp_candidates("a=candidate:1 1 udp 1 not-an-ip 5000 typ host\r\n").is_empty());
    }
}
