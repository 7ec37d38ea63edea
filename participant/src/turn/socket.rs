//! The TURN client on a UDP socket: a blocking allocation (run off the async runtime), then
//! a transport whose every datagram goes through the relay.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use super::TurnError;
use super::client::{State, TurnClient};
use crate::IceServer;

/// The `turn:` URLs over UDP among `servers`, resolved, with their credentials, in order.
pub fn udp_turn_servers(
    servers: &[IceServer],
) -> Result<Vec<(SocketAddr, String, String)>, TurnError> {
    let mut found = Vec::new();
    let mut bad = None;
    for server in servers {
        let (Some(username), Some(credential)) = (&server.username, &server.credential) else {
            continue;
        };
        for url in &server.urls {
            let Some(host_port) = turn_udp_host_port(url) else {
                continue;
            };
            match host_port.to_socket_addrs().ok().and_then(|mut a| a.next()) {
                Some(addr) => found.push((addr, username.clone(), credential.clone())),
                None => bad = Some(TurnError::BadUrl(url.clone())),
            }
        }
    }
    match (found.is_empty(), bad) {
        (true, Some(bad)) => Err(bad),
        (true, None) => Err(TurnError::NoServer),
        _ => Ok(found),
    }
}

/// `host:port` of a `turn:` URL whose transport is UDP (the default), RFC 7065.
fn turn_udp_host_port(url: &str) -> Option<String> {
    let rest = url.strip_prefix("turn:")?;
    let (host_port, query) = rest.split_once('?').unwrap_or((rest, ""));
    let udp = query
        .split('&')
        .all(|kv| !kv.starts_with("transport=") || kv.eq_ignore_ascii_case("transport=udp"));
    if !udp || host_port.is_empty() {
        return None;
    }
    // A port is present unless the text after the last ':' is not one (or is inside [v6]).
    let has_port = host_port.rsplit_once(':').is_some_and(|(host, port)| {
        !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && (!host.contains(':') || host.ends_with(']'))
    });
    Some(if has_port {
        host_port.to_owned()
    } else {
        format!("{host_port}:3478")
    })
}

/// Allocates a relayed address on the first of `servers` that grants one, from a new
/// socket on `bind_ip`. Blocks until granted, refused or timed out (a few seconds).
pub fn allocate(bind_ip: IpAddr, servers: &[IceServer]) -> Result<RelayLink, TurnError> {
    let mut last = TurnError::NoServer;
    for (server, username, password) in udp_turn_servers(servers)? {
        match allocate_on(bind_ip, server, &username, &password) {
            Ok(link) => return Ok(link),
            Err(e) => {
                tracing::debug!(%e, %server, "TURN server did not allocate");
                last = e;
            }
        }
    }
    Err(last)
}

fn io_error(e: std::io::Error) -> TurnError {
    TurnError::Io(e.to_string())
}

fn allocate_on(
    bind_ip: IpAddr,
    server: SocketAddr,
    username: &str,
    password: &str,
) -> Result<RelayLink, TurnError> {
    let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0)).map_err(io_error)?;
    let mut client = TurnClient::new(server, username, password, Instant::now());
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(datagram) = client.poll_transmit() {
            let _ = socket.send_to(&datagram, server);
        }
        match client.state() {
            State::Allocated { relayed } => {
                let relayed = *relayed;
                return Ok(RelayLink {
                    socket,
                    client,
                    relayed,
                    out: Vec::with_capacity(2048),
                });
            }
            State::Failed(e) => return Err(e.clone()),
            State::Closed => return Err(TurnError::NoServer),
            State::Allocating => {}
        }
        let Some(at) = client.poll_timeout() else {
            return Err(TurnError::Timeout { server });
        };
        let now = Instant::now();
        if at <= now {
            client.handle_timeout(now);
            continue;
        }
        socket
            .set_read_timeout(Some((at - now).max(Duration::from_millis(1))))
            .map_err(io_error)?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from == server => {
                client.handle_input(&buf[..n], Instant::now());
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // ICMP port unreachable surfaces as ConnectionRefused on some systems.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                return Err(TurnError::Timeout { server });
            }
            Err(e) => return Err(io_error(e)),
        }
    }
}

/// A granted allocation on its socket: the participant's transport in relay-only mode.
pub struct RelayLink {
    socket: UdpSocket,
    client: TurnClient,
    relayed: SocketAddr,
    out: Vec<u8>,
}

impl RelayLink {
    /// The address the TURN server relays from: the session's local candidate.
    pub fn relayed(&self) -> SocketAddr {
        self.relayed
    }

    /// The socket's own address (the relayed candidate's base).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Permissions and channels towards the remote candidates.
    pub fn add_peers(&mut self, peers: &[SocketAddr]) {
        let now = Instant::now();
        for peer in peers {
            self.client.add_peer(*peer, now);
        }
        self.flush();
    }

    pub fn set_nonblocking(&self, nonblocking: bool) -> std::io::Result<()> {
        self.socket.set_nonblocking(nonblocking)
    }

    /// The socket's descriptor (for the driver's poll).
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// When the allocation next needs [`RelayLink::tick`] (a refresh, a retransmission).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    /// One relayed payload into `buf`, with the peer it came from. Datagrams that are not
    /// from the server, or are TURN's own, are consumed; with a non-blocking socket it
    /// reports `WouldBlock` once the socket is empty.
    pub fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        self.tick();
        loop {
            let (n, from) = self.socket.recv_from(buf)?;
            if from != self.client.server() {
                continue;
            }
            let relayed = self.client.handle_input(&buf[..n], Instant::now());
            self.flush();
            if let Some((peer, range)) = relayed {
                let len = range.len();
                buf.copy_within(range, 0);
                return Ok((len, peer));
            }
        }
    }

    /// Sends `packet` to `peer` through the relay (best effort, like a datagram).
    pub fn send(&mut self, packet: &[u8], peer: SocketAddr) {
        let now = Instant::now();
        if self.client.wrap(peer, packet, &mut self.out, now) {
            let _ = self.socket.send_to(&self.out, self.client.server());
        }
        self.flush();
    }

    /// Releases the allocation.
    pub fn close(&mut self) {
        self.client.close(Instant::now());
        self.flush();
    }

    /// Runs the allocation's timers (refreshes, retransmissions).
    pub fn tick(&mut self) {
        let now = Instant::now();
        if self.client.poll_timeout().is_some_and(|at| at <= now) {
            self.client.handle_timeout(now);
        }
        self.flush();
    }

    fn flush(&mut self) {
        while let Some(datagram) = self.client.poll_transmit() {
            let _ = self.socket.send_to(&datagram, self.client.server());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_udp_turn_urls_are_used() {
        assert_eq!(
            turn_udp_host_port("turn:127.0.0.1:3479?transport=udp").as_deref(),
            Some("127.0.0.1:3479")
        );
        assert_eq!(
            turn_udp_host_port("turn:t.example").as_deref(),
            Some("t.example:3478")
        );
        assert_eq!(
            turn_udp_host_port("turn:[::1]:5000").as_deref(),
            Some("[::1]:5000")
        );
        assert_eq!(
            turn_udp_host_port("turn:[::1]").as_deref(),
            Some("[::1]:3478")
        );
        assert_eq!(
            turn_udp_host_port("turn:127.0.0.1:3479?transport=tcp"),
            None
        );
        assert_eq!(turn_udp_host_port("turns:t.example:443"), None);
        assert_eq!(turn_udp_host_port("stun:t.example"), None);
    }

    #[test]
    fn servers_without_credentials_or_udp_are_no_server() {
        let stun = IceServer {
            urls: vec!["stun:127.0.0.1:3478".into()],
            username: None,
            credential: None,
        };
        let tcp = IceServer {
            urls: vec!["turn:127.0.0.1:3478?transport=tcp".into()],
            username: Some("u".into()),
            credential: Some("p".into()),
        };
        assert_eq!(udp_turn_servers(&[stun, tcp]), Err(TurnError::NoServer));
        let udp = IceServer {
            urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            username: Some("u".into()),
            credential: Some("p".into()),
        };
        assert_eq!(
            udp_turn_servers(&[udp]),
            Ok(vec![(
                SocketAddr::from(([127, 0, 0, 1], 3478)),
                "u".to_owned(),
                "p".to_owned()
            )])
        );
    }

    #[test]
    fn a_silent_server_is_a_timeout_not_a_hang() {
        // A bound socket nobody answers on.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let server = silent.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        let result = allocate_on(server.ip(), server, "u", "p");
        assert_eq!(result.err(), Some(TurnError::Timeout { server }));
        println!("gave up after {:?}", started.elapsed());
    }
}
