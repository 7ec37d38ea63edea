//! RFC 4571 framing for ICE-TCP (RFC 6544): every STUN, DTLS, RTP or RTCP packet on the
//! stream is preceded by its length as a 2-byte big-endian number. Pure code, no sockets:
//! the connection reads into [`Deframer::spare`] and takes whole packets out.

/// The largest packet accepted or sent. RFC 4571 allows 65,535 bytes, but nothing a WebRTC
/// peer sends is larger than a path MTU; a bigger length is garbage or an attempt to make
/// the worker buffer a lot for one connection.
pub const MAX_PACKET: usize = 4096;
/// Bytes of buffered input per connection: a few packets, so one read takes several.
const READ_BUFFER: usize = 4 * (MAX_PACKET + 2);

/// Why a stream's framing is broken (the connection is closed: the stream cannot be
/// resynchronised once a length is wrong).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// A zero length prefix.
    #[error("a zero-length frame")]
    Empty,
    /// A length prefix above [`MAX_PACKET`].
    #[error("a {0}-byte frame (at most {MAX_PACKET})")]
    Oversized(usize),
}

/// Splits a byte stream into packets.
pub struct Deframer {
    buf: Box<[u8]>,
    /// Unconsumed input is `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Default for Deframer {
    fn default() -> Self {
        Self {
            buf: vec![0u8; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }
}

impl Deframer {
    /// Where the next read goes (never empty: a partial packet is moved to the front first).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`Deframer::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next whole packet, `None` until one is complete, or the error that ends the stream.
    pub fn next_packet(&mut self) -> Option<Result<&[u8], FramingError>> {
        let pending = &self.buf[self.start..self.end];
        let [hi, lo, ..] = *pending else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 {
            return Some(Err(FramingError::Empty));
        }
        if len > MAX_PACKET {
            return Some(Err(FramingError::Oversized(len)));
        }
        if pending.len() < 2 + len {
            return None;
        }
        let packet = self.start + 2..self.start + 2 + len;
        self.start += 2 + len;
        Some(Ok(&self.buf[packet]))
    }
}

/// Appends `packet` with its length prefix to `out`; `false` (and nothing appended) when it
/// cannot be framed (empty or larger than [`MAX_PACKET`]).
pub fn frame(out: &mut Vec<u8>, packet: &[u8]) -> bool {
    let Ok(len) = u16::try_from(packet.len()) else {
        return false;
    };
    if packet.is_empty() || packet.len() > MAX_PACKET {
        return false;
    }
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `stream` in chunks of `chunk` bytes; returns the packets and the error, if any.
    fn deframe(stream: &[u8], chunk: usize) -> (Vec<Vec<u8>>, Option<FramingError>) {
        let mut d = Deframer::default();
        let mut packets = Vec::new();
        for piece in stream.chunks(chunk.max(1)) {
            let mut piece = piece;
            while !piece.is_empty() {
                let spare = d.spare();
                let n = spare.len().min(piece.len());
                spare[..n].copy_from_slice(&piece[..n]);
                d.filled(n);
                piece = &piece[n..];
                while let Some(next) = d.next_packet() {
                    match next {
                        Ok(p) => packets.push(p.to_vec()),
                        Err(e) => return (packets, Some(e)),
                    }
                }
            }
        }
        (packets, None)
    }

    #[test]
    fn packets_split_across_reads_come_out_whole_and_in_order() {
        let mut stream = Vec::new();
        let sent: Vec<Vec<u8>> = (1..=20u8).map(|n| vec![n; usize::from(n) * 50]).collect();
        for p in &sent {
            assert!(frame(&mut stream, p));
        }
        for chunk in [1, 2, 3, 7, 100, 1500, stream.len()] {
            let (got, err) = deframe(&stream, chunk);
            assert_eq!(err, None, "chunk {chunk}");
            assert_eq!(got, sent, "chunk {chunk}");
        }
    }

    #[test]
    fn a_partial_packet_waits_for_the_rest() {
        let mut d = Deframer::default();
        d.spare()[..3].copy_from_slice(&[0, 4, 9]);
        d.filled(3);
        assert!(d.next_packet().is_none());
        d.spare()[..3].copy_from_slice(&[8, 7, 6]);
        d.filled(3);
        assert_eq!(d.next_packet(), Some(Ok(&[9u8, 8, 7, 6][..])));
        assert!(d.next_packet().is_none());
    }

    #[test]
    fn zero_and_oversized_lengths_end_the_stream() {
        assert_eq!(deframe(&[0, 0, 1, 2], 4).1, Some(FramingError::Empty));
        assert_eq!(
            deframe(&[0xff, 0xff, 1, 2], 4).1,
            Some(FramingError::Oversized(65_535))
        );
        let mut stream = Vec::new();
        assert!(frame(&mut stream, &[1, 2, 3]));
        stream.extend_from_slice(&(MAX_PACKET as u16 + 1).to_be_bytes());
        let (got, err) = deframe(&stream, 64);
        assert_eq!(got, vec![vec![1, 2, 3]]);
        assert_eq!(err, Some(FramingError::Oversized(MAX_PACKET + 1)));
    }

    #[test]
    fn what_cannot_be_framed_is_refused() {
        let mut out = Vec::new();
        assert!(!frame(&mut out, &[]));
        assert!(!frame(&mut out, &vec![0; MAX_PACKET + 1]));
        assert!(out.is_empty());
        assert!(frame(&mut out, &vec![7; MAX_PACKET]));
        assert_eq!(out.len(), MAX_PACKET + 2);
    }

    proptest! {
        /// Random bytes in random chunks never panic, never yield a packet longer than the
        /// limit, and whatever comes out is what a correct framing of it would give.
        #[test]
        fn random_bytes_never_panic(stream in proptest::collection::vec(any::<u8>(), 0..20_000), chunk in 1usize..5000) {
            let (packets, err) = deframe(&stream, chunk);
            let mut consumed = 0;
            for p in &packets {
                prop_assert!(!p.is_empty() && p.len() <= MAX_PACKET);
                prop_assert_eq!(&stream[consumed + 2..consumed + 2 + p.len()], &p[..]);
                consumed += 2 + p.len();
            }
            if err.is_some() {
                prop_assert!(stream.len() >= consumed + 2);
            }
        }

        /// Framing then deframing gives back the packets, however the stream is cut.
        #[test]
        fn framed_packets_round_trip(sizes in proptest::collection::vec(1usize..=MAX_PACKET, 0..30), chunk in 1usize..9000) {
            let mut stream = Vec::new();
            let sent: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, s)| vec![i as u8; *s]).collect();
            for p in &sent {
                prop_assert!(frame(&mut stream, p));
            }
            let (got, err) = deframe(&stream, chunk);
            prop_assert_eq!(err, None);
            prop_assert_eq!(got, sent);
        }
    }
}
