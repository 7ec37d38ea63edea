//! The last complete keyframe of one publisher layer, kept so a new subscriber can be sent a
//! picture the moment its slot is ready, instead of waiting a keyframe request's round trip
//! to the publisher (PLI, the encoder, the publisher's uplink: ~100 ms in a browser).
//!
//! A keyframe is the packets from one whose `keyframe` flag is set through the next marker
//! bit, all with the same timestamp and consecutive sequence numbers: the same framing for
//! every codec the room forwards (a VP8 keyframe's first partition; H.264's SPS/PPS STAP-A
//! then the IDR's FU-A fragments, several of them flagged). Anything else (a gap, a
//! reordered packet, a new timestamp before the marker, more bytes than the bound) abandons
//! the frame being gathered and keeps the previous complete one: a frame is replayed whole
//! or not at all.

use std::sync::Arc;

use super::RtpMeta;

/// One packet of a cached keyframe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CachedPacket {
    pub meta: RtpMeta,
    /// Shared with the packet it came in (no copy).
    pub payload: Arc<[u8]>,
}

/// Keyframe cache of one publisher layer.
#[derive(Debug, Default)]
pub(crate) struct KeyframeCache {
    /// The last complete keyframe, in sequence order (empty: none).
    complete: Vec<CachedPacket>,
    /// The keyframe being received (empty: none).
    gathering: Vec<CachedPacket>,
    gathering_bytes: usize,
}

impl KeyframeCache {
    /// Feeds one packet of the layer; `max_bytes` bounds a kept keyframe's payload (0: keep
    /// nothing). Cheap for the packets between keyframes: two comparisons.
    #[inline]
    pub(crate) fn add(&mut self, meta: &RtpMeta, payload: &Arc<[u8]>, max_bytes: usize) {
        if self.gathering.is_empty() && !meta.keyframe {
            return;
        }
        self.add_slow(meta, payload, max_bytes);
    }

    fn add_slow(&mut self, meta: &RtpMeta, payload: &Arc<[u8]>, max_bytes: usize) {
        if max_bytes == 0 {
            return;
        }
        let continues = self.gathering.last().is_some_and(|last| {
            last.meta.ts == meta.ts && last.meta.seq.wrapping_add(1) == meta.seq
        });
        if !continues {
            self.abandon();
            if !meta.keyframe {
                return;
            }
        }
        if self.gathering_bytes + payload.len() > max_bytes {
            self.abandon();
            return;
        }
        self.gathering_bytes += payload.len();
        self.gathering.push(CachedPacket {
            meta: *meta,
            payload: Arc::clone(payload),
        });
        if meta.marker {
            std::mem::swap(&mut self.complete, &mut self.gathering);
            self.abandon();
        }
    }

    fn abandon(&mut self) {
        self.gathering.clear();
        self.gathering_bytes = 0;
    }

    /// The last complete keyframe, if there is one.
    pub(crate) fn keyframe(&self) -> Option<&[CachedPacket]> {
        (!self.complete.is_empty()).then_some(self.complete.as_slice())
    }

    /// Forgets everything and frees the memory (the layer stopped or paused).
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Payload bytes held (the complete keyframe and the one being gathered).
    pub(crate) fn bytes(&self) -> usize {
        self.complete.iter().map(|p| p.payload.len()).sum::<usize>() + self.gathering_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u64, ts: u32, keyframe: bool, marker: bool) -> RtpMeta {
        RtpMeta {
            seq,
            ts,
            keyframe,
            marker,
            ..RtpMeta::default()
        }
    }

    const MAX: usize = 10_000;

    fn data(len: usize, fill: u8) -> Arc<[u8]> {
        vec![fill; len].into()
    }

    #[test]
    fn keeps_the_last_complete_keyframe_only() {
        let mut c = KeyframeCache::default();
        c.add(&packet(1, 100, false, true), &data(10, 1), MAX);
        assert!(c.keyframe().is_none());
        c.add(&packet(2, 200, true, false), &data(10, 2), MAX);
        c.add(&packet(3, 200, false, false), &data(10, 3), MAX);
        // Not complete before the marker.
        assert!(c.keyframe().is_none());
        c.add(&packet(4, 200, false, true), &data(10, 4), MAX);
        let seqs: Vec<u64> = c.keyframe().unwrap().iter().map(|p| p.meta.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
        // Deltas leave it alone.
        c.add(&packet(5, 300, false, true), &data(10, 5), MAX);
        assert_eq!(c.keyframe().unwrap().len(), 3);
        // A newer keyframe replaces it once complete; H.264 flags several of its packets.
        c.add(&packet(6, 400, true, false), &data(10, 6), MAX);
        c.add(&packet(7, 400, true, true), &data(10, 7), MAX);
        let seqs: Vec<u64> = c.keyframe().unwrap().iter().map(|p| p.meta.seq).collect();
        assert_eq!(seqs, [6, 7]);
        assert_eq!(c.keyframe().unwrap()[1].payload, data(10, 7));
        assert_eq!(c.bytes(), 20);
    }

    #[test]
    fn a_gap_a_new_timestamp_or_the_bound_abandons_the_frame_being_gathered() {
        let mut c = KeyframeCache::default();
        c.add(&packet(1, 100, true, true), &data(10, 1), MAX);
        // A lost packet.
        c.add(&packet(10, 200, true, false), &data(10, 0), MAX);
        c.add(&packet(12, 200, false, true), &data(10, 0), MAX);
        // A new timestamp before the marker.
        c.add(&packet(20, 300, true, false), &data(10, 0), MAX);
        c.add(&packet(21, 301, false, true), &data(10, 0), MAX);
        // Too big.
        c.add(&packet(30, 400, true, false), &data(6_000, 0), MAX);
        c.add(&packet(31, 400, false, true), &data(6_000, 0), MAX);
        let kept = c.keyframe().unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].meta.seq, 1);
        c.clear();
        assert!(c.keyframe().is_none());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn a_zero_bound_keeps_nothing() {
        let mut c = KeyframeCache::default();
        c.add(&packet(1, 100, true, true), &data(10, 1), 0);
        assert!(c.keyframe().is_none());
    }
}
