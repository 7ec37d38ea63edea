//! The worker's UDP socket, batched both ways, because on the forwarding path the kernel's
//! per-datagram cost outweighs everything str0m does per packet (see `benches/README.md`).
//!
//! - In: `recvmmsg` reads up to [`quinn_udp::BATCH_SIZE`] datagrams per system call, and
//!   UDP GRO may hand over several same-sized datagrams of one sender in one buffer.
//! - Out: datagrams are queued during a loop iteration and flushed together; consecutive
//!   datagrams for the same destination (a subscriber's share of one video frame) leave in
//!   one `sendmsg` with UDP GSO, which the kernel splits after the costly part of its stack.
//! - Waiting: one `epoll` for the socket and the waker the HTTP side uses to hand over
//!   commands, so a join does not wait for the next datagram or timeout.

use std::io::{ErrorKind, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use quinn_udp::{BATCH_SIZE, RecvMeta, Transmit, UdpSockRef, UdpSocketState};

use crate::commands::Waker;

const SOCKET: mio::Token = mio::Token(0);
const WAKER: mio::Token = mio::Token(1);
/// Another readiness source the worker watches (the ICE-TCP side's own epoll).
const EXTRA: mio::Token = mio::Token(2);
/// One receive buffer holds a whole GRO batch; UDP payloads never exceed this.
const RX_BUFFER: usize = 64 * 1024;
/// Largest GSO send: the kernel refuses more than 64 KiB per `sendmsg`.
const MAX_GSO_BYTES: usize = 64 * 1024 - 1024;
/// Queued datagrams that force a flush, so a long drain neither delays packets nor grows
/// the queue without bound.
const FLUSH_AT: usize = 1024;

/// What a flush did, for the worker's counters.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Sent {
    /// Datagrams handed to the kernel.
    pub datagrams: u64,
    /// System calls used for them.
    pub syscalls: u64,
    /// Datagrams dropped (socket buffer full, unreachable destination...).
    pub dropped: u64,
}

struct Queued {
    destination: SocketAddr,
    len: usize,
}

pub(crate) struct Udp {
    socket: mio::net::UdpSocket,
    state: UdpSocketState,
    poll: mio::Poll,
    events: mio::Events,
    /// Queued datagrams, back to back in `arena`.
    queue: Vec<Queued>,
    arena: Vec<u8>,
    sent: Sent,
}

/// Reusable receive buffers and their metadata.
pub(crate) struct RxBatch {
    buffers: Vec<Box<[u8]>>,
    meta: Vec<RecvMeta>,
    filled: usize,
}

impl RxBatch {
    pub fn new() -> Self {
        Self {
            buffers: (0..BATCH_SIZE)
                .map(|_| vec![0u8; RX_BUFFER].into_boxed_slice())
                .collect(),
            meta: vec![RecvMeta::default(); BATCH_SIZE],
            filled: 0,
        }
    }

    /// Whether the last read filled every buffer (more may be waiting).
    pub fn was_full(&self) -> bool {
        self.filled == self.buffers.len()
    }

    /// Calls `f` for every datagram of the last read, in arrival order, splitting GRO
    /// buffers at their stride.
    pub fn for_each(&self, mut f: impl FnMut(SocketAddr, &[u8])) {
        for (meta, buffer) in self.meta.iter().zip(&self.buffers).take(self.filled) {
            let data = &buffer[..meta.len.min(buffer.len())];
            let stride = if meta.stride == 0 {
                data.len().max(1)
            } else {
                meta.stride
            };
            for datagram in data.chunks(stride) {
                f(meta.addr, datagram);
            }
        }
    }
}

impl Udp {
    /// Takes over a bound socket; returns it with the waker for the HTTP side.
    pub fn new(socket: UdpSocket) -> std::io::Result<(Self, Waker)> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        socket.set_nonblocking(true)?;
        let mut socket = mio::net::UdpSocket::from_std(socket);
        let poll = mio::Poll::new()?;
        poll.registry()
            .register(&mut socket, SOCKET, mio::Interest::READABLE)?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        Ok((
            Self {
                socket,
                state,
                poll,
                events: mio::Events::with_capacity(8),
                queue: Vec::with_capacity(FLUSH_AT),
                arena: Vec::with_capacity(FLUSH_AT * 1300),
                sent: Sent::default(),
            },
            Waker(waker),
        ))
    }

    /// Also wakes [`Udp::wait_both`] when `fd` turns readable (an epoll descriptor).
    pub fn watch(&self, fd: std::os::fd::RawFd) -> std::io::Result<()> {
        self.poll.registry().register(
            &mut mio::unix::SourceFd(&fd),
            EXTRA,
            mio::Interest::READABLE,
        )
    }

    /// Blocks until a datagram or a wake arrives, or `timeout` passes; whether the socket
    /// became readable. Readiness is edge-triggered: read until a batch comes back short.
    #[cfg(test)]
    pub fn wait(&mut self, timeout: Duration) -> bool {
        self.wait_both(timeout).0
    }

    /// [`Udp::wait`], and whether the watched descriptor turned readable.
    pub fn wait_both(&mut self, timeout: Duration) -> (bool, bool) {
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() != ErrorKind::Interrupted {
                tracing::warn!(%e, "epoll wait failed");
            }
            // Unknown: look.
            return (true, true);
        }
        let token = |t| self.events.iter().any(|e| e.token() == t);
        (token(SOCKET), token(EXTRA))
    }

    /// Reads what is waiting (up to one batch) into `rx`; how many buffers were filled.
    pub fn recv(&self, rx: &mut RxBatch) -> usize {
        let mut slices: [IoSliceMut<'_>; BATCH_SIZE] = {
            let mut buffers = rx.buffers.iter_mut();
            std::array::from_fn(|_| match buffers.next() {
                Some(b) => IoSliceMut::new(&mut b[..]),
                None => IoSliceMut::new(&mut []),
            })
        };
        rx.filled = match self
            .state
            .recv(UdpSockRef::from(&self.socket), &mut slices, &mut rx.meta)
        {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(e) => {
                // ICMP errors (port unreachable from a vanished peer) surface here; not fatal.
                tracing::trace!(%e, "UDP receive error");
                0
            }
        };
        rx.filled
    }

    /// Queues one datagram; it leaves with the next [`Udp::flush`].
    pub fn queue(&mut self, destination: SocketAddr, contents: &[u8]) {
        self.arena.extend_from_slice(contents);
        self.queue.push(Queued {
            destination,
            len: contents.len(),
        });
        if self.queue.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Sends everything queued: runs of datagrams for one destination as one GSO send.
    pub fn flush(&mut self) {
        let max_segments = self.state.max_gso_segments().max(1);
        let mut start = 0;
        let mut offset = 0;
        while start < self.queue.len() {
            let first = &self.queue[start];
            let segment = first.len;
            let mut end = start + 1;
            let mut bytes = segment;
            // GSO splits at `segment`: every datagram but the last of a run must be exactly
            // that long, and the last may be shorter.
            while end < self.queue.len()
                && end - start < max_segments
                && self.queue[end].destination == first.destination
                && self.queue[end - 1].len == segment
                && self.queue[end].len <= segment
                && bytes + self.queue[end].len <= MAX_GSO_BYTES
            {
                bytes += self.queue[end].len;
                end += 1;
            }
            let transmit = Transmit {
                destination: first.destination,
                ecn: None,
                contents: &self.arena[offset..offset + bytes],
                segment_size: (end - start > 1).then_some(segment),
                src_ip: None,
            };
            let count = (end - start) as u64;
            self.sent.syscalls += 1;
            match self
                .state
                .try_send(UdpSockRef::from(&self.socket), &transmit)
            {
                Ok(()) => self.sent.datagrams += count,
                Err(e) if count > 1 && e.kind() != ErrorKind::WouldBlock => {
                    // GSO refused (the state has turned it off): one by one instead.
                    tracing::debug!(%e, "GSO send failed; sending the run one by one");
                    let mut at = offset;
                    for queued in &self.queue[start..end] {
                        let single = Transmit {
                            destination: queued.destination,
                            ecn: None,
                            contents: &self.arena[at..at + queued.len],
                            segment_size: None,
                            src_ip: None,
                        };
                        self.sent.syscalls += 1;
                        match self.state.try_send(UdpSockRef::from(&self.socket), &single) {
                            Ok(()) => self.sent.datagrams += 1,
                            Err(_) => self.sent.dropped += 1,
                        }
                        at += queued.len;
                    }
                }
                Err(e) => {
                    tracing::trace!(%e, "UDP send failed");
                    self.sent.dropped += count;
                }
            }
            offset += bytes;
            start = end;
        }
        self.queue.clear();
        self.arena.clear();
    }

    /// What the flushes did since the last call.
    pub fn take_sent(&mut self) -> Sent {
        std::mem::take(&mut self.sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn pair() -> (Udp, UdpSocket) {
        let worker = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let (udp, _waker) = Udp::new(worker).unwrap_or_else(|e| panic!("udp: {e}"));
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        peer.set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("timeout: {e}"));
        (udp, peer)
    }

    fn local(socket: &UdpSocket) -> SocketAddr {
        socket
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"))
    }

    #[test]
    fn a_run_for_one_destination_arrives_as_separate_datagrams_in_order() {
        let (mut udp, peer) = pair();
        let to = local(&peer);
        let sizes = [1200, 1200, 1200, 700, 1200, 90];
        for (n, size) in sizes.iter().enumerate() {
            udp.queue(to, &vec![n as u8; *size]);
        }
        udp.flush();
        let sent = udp.take_sent();
        assert_eq!(sent.datagrams, sizes.len() as u64);
        assert_eq!(sent.dropped, 0);
        // Two runs at most (1200×3+700, then 1200+90) where GSO works; one per datagram
        // where it does not.
        assert!(sent.syscalls <= sizes.len() as u64);
        let mut buf = [0u8; 2048];
        for (n, size) in sizes.iter().enumerate() {
            let (len, _) = peer
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("datagram {n}: {e}"));
            assert_eq!(len, *size, "datagram {n}");
            assert!(buf[..len].iter().all(|b| *b == n as u8), "datagram {n}");
        }
    }

    #[test]
    fn datagrams_for_different_destinations_each_reach_their_own() {
        let (mut udp, a) = pair();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        b.set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("timeout: {e}"));
        for n in 0..4u8 {
            udp.queue(local(&a), &[n; 100]);
            udp.queue(local(&b), &[n + 10; 100]);
        }
        udp.flush();
        let mut buf = [0u8; 256];
        for n in 0..4u8 {
            let (len, _) = a.recv_from(&mut buf).unwrap_or_else(|e| panic!("a: {e}"));
            assert_eq!(&buf[..len], &[n; 100]);
            let (len, _) = b.recv_from(&mut buf).unwrap_or_else(|e| panic!("b: {e}"));
            assert_eq!(&buf[..len], &[n + 10; 100]);
        }
    }

    #[test]
    fn a_batch_of_incoming_datagrams_is_read_in_order_with_its_source() {
        let (mut udp, peer) = pair();
        let worker = udp
            .socket
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        for n in 0..10u8 {
            peer.send_to(&[n; 50], worker)
                .unwrap_or_else(|e| panic!("send: {e}"));
        }
        let mut rx = RxBatch::new();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < 10 && Instant::now() < deadline {
            if udp.wait(Duration::from_millis(50)) {
                udp.recv(&mut rx);
            }
            rx.for_each(|from, data| got.push((from, data.to_vec())));
        }
        assert_eq!(got.len(), 10);
        for (n, (from, data)) in got.iter().enumerate() {
            assert_eq!(*from, local(&peer));
            assert_eq!(data, &vec![n as u8; 50]);
        }
    }

    #[test]
    fn the_waker_ends_a_wait_early() {
        let worker = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let (mut udp, waker) = Udp::new(worker).unwrap_or_else(|e| panic!("udp: {e}"));
        waker.wake();
        let started = Instant::now();
        assert!(
            !udp.wait(Duration::from_secs(10)),
            "a wake is not a datagram"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
