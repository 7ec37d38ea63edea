//! Per-layer bitrate measured from the publisher's packets.

use std::time::{Duration, Instant};

/// Bytes a packet costs on the wire beyond its payload (RTP header and extensions, SRTP tag,
/// UDP/IP), so layer rates compare with the subscriber's TWCC estimate.
const PER_PACKET_OVERHEAD: u64 = 50;

/// Measurement window; shorter windows see frame-size noise (keyframes), longer ones react
/// late to a publisher that changes its encoding.
const WINDOW: Duration = Duration::from_secs(1);

/// Bitrate of one incoming stream, averaged over [`WINDOW`] and smoothed across windows.
#[derive(Debug, Clone, Default)]
pub(crate) struct BitrateMeter {
    bytes: u64,
    window_start: Option<Instant>,
    bps: Option<u64>,
    last_packet: Option<Instant>,
}

impl BitrateMeter {
    /// Counts one packet (hot path: two adds and a store).
    #[inline]
    pub(crate) fn add(&mut self, payload_len: usize, now: Instant) {
        self.bytes += payload_len as u64 + PER_PACKET_OVERHEAD;
        if self.window_start.is_none() {
            self.window_start = Some(now);
        }
        self.last_packet = Some(now);
    }

    /// Closes the window when it is due and folds it into the smoothed rate.
    pub(crate) fn tick(&mut self, now: Instant) {
        let Some(start) = self.window_start else {
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < WINDOW {
            return;
        }
        let sample = self.bytes * 8 * 1_000_000 / (elapsed.as_micros().max(1) as u64);
        self.bps = Some(match self.bps {
            // Half weight on the new window: follows a real change within ~2 s while a
            // single keyframe-heavy second does not swing the choice.
            Some(old) => (old + sample) / 2,
            None => sample,
        });
        self.bytes = 0;
        self.window_start = Some(now);
    }

    /// The measured rate, once a full window has been seen.
    pub(crate) fn bps(&self) -> Option<u64> {
        self.bps
    }

    /// When the last packet arrived.
    pub(crate) fn last_packet(&self) -> Option<Instant> {
        self.last_packet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_after_a_window() {
        let t0 = Instant::now();
        let mut m = BitrateMeter::default();
        // 100 packets of 1200 bytes in one second.
        for i in 0..100u64 {
            m.add(1200, t0 + Duration::from_millis(i * 10));
        }
        m.tick(t0 + Duration::from_millis(500));
        assert_eq!(m.bps(), None);
        m.tick(t0 + WINDOW);
        assert_eq!(m.bps(), Some(100 * 1250 * 8));
    }
}
