//! Per outgoing stream renumbering, so a subscriber sees one continuous stream although the
//! packets come from different simulcast layers (each with its own sequence numbers,
//! timestamps and VP8 picture ids).
//!
//! Every time the source changes (the first packet, a layer switch) an *epoch* starts: the
//! offsets are chosen so the epoch's first packet continues right after the last packet
//! sent, and later packets of the epoch keep their spacing (so losses stay visible as gaps
//! and NACKs still work).

use std::time::{Duration, Instant};

use super::{RtpMeta, Vp8Meta};

/// The first sequence number of every outgoing stream. str0m needs it below 65,536 (the
/// subscriber's SRTP context starts with a roll-over counter of 0).
pub(crate) const FIRST_OUT_SEQ: u64 = 1;

/// VP8 15-bit picture id space.
const PICTURE_ID_MOD: u32 = 1 << 15;

/// The renumbered fields of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rewritten {
    pub seq: u64,
    pub ts: u32,
    pub vp8: Option<Vp8Meta>,
}

/// Renumbering state of one outgoing stream.
#[derive(Debug, Clone)]
pub(crate) struct Rewriter {
    clock_rate: u32,
    /// Whether an epoch has started (a packet was sent).
    started: bool,
    /// Incoming packets older than this belong to an earlier epoch (or precede the first).
    epoch_first_in_seq: u64,
    /// `out = in + seq_offset` (wrapping arithmetic keeps it well defined for any input).
    seq_offset: u64,
    /// Highest outgoing sequence number sent, and that packet's timestamp / send time.
    max_out_seq: u64,
    last_out_ts: u32,
    last_out_at: Option<Instant>,
    ts_offset: u32,
    picture_id_offset: u16,
    last_out_picture_id: Option<u16>,
    tl0_offset: u8,
    last_out_tl0: Option<u8>,
}

impl Rewriter {
    /// A stream whose RTP clock runs at `clock_rate` Hz.
    pub(crate) fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            started: false,
            epoch_first_in_seq: 0,
            seq_offset: 0,
            max_out_seq: 0,
            last_out_ts: 0,
            last_out_at: None,
            ts_offset: 0,
            picture_id_offset: 0,
            last_out_picture_id: None,
            tl0_offset: 0,
            last_out_tl0: None,
        }
    }

    /// Starts an epoch at `meta`: it will be sent right after the last packet sent.
    pub(crate) fn start_epoch(&mut self, meta: &RtpMeta, now: Instant) {
        self.start_epoch_with(meta, now, None);
    }

    /// Starts an epoch at `meta` whose packets carry `ts` (then spaced as the source's):
    /// a cached keyframe replayed with a timestamp on the live stream's clock, not the one it
    /// had when it was captured, seconds ago.
    pub(crate) fn start_epoch_at(&mut self, meta: &RtpMeta, ts: u32, now: Instant) {
        self.start_epoch_with(meta, now, Some(ts));
    }

    fn start_epoch_with(&mut self, meta: &RtpMeta, now: Instant, ts: Option<u32>) {
        let next_seq = if self.started {
            self.max_out_seq.wrapping_add(1)
        } else {
            FIRST_OUT_SEQ
        };
        self.seq_offset = next_seq.wrapping_sub(meta.seq);
        self.epoch_first_in_seq = meta.seq;

        self.ts_offset = match (ts, self.last_out_at) {
            (Some(ts), _) => ts.wrapping_sub(meta.ts),
            (None, Some(at)) if self.started => {
                let next_ts = self
                    .last_out_ts
                    .wrapping_add(self.ticks(now.saturating_duration_since(at)));
                next_ts.wrapping_sub(meta.ts)
            }
            // The first epoch keeps the publisher's timestamps.
            _ => 0,
        };

        if let Some(vp8) = meta.vp8 {
            if let (Some(last), Some(incoming)) = (self.last_out_picture_id, vp8.picture_id) {
                let next = (u32::from(last) + 1) % PICTURE_ID_MOD;
                let offset =
                    (next + PICTURE_ID_MOD - u32::from(incoming) % PICTURE_ID_MOD) % PICTURE_ID_MOD;
                // < 2^15 by the modulo above.
                self.picture_id_offset = offset as u16;
            } else {
                self.picture_id_offset = 0;
            }
            if let (Some(last), Some(incoming)) = (self.last_out_tl0, vp8.tl0_pic_idx) {
                self.tl0_offset = last.wrapping_add(1).wrapping_sub(incoming);
            } else {
                self.tl0_offset = 0;
            }
        }
        self.started = true;
    }

    /// Renumbers one packet of the current epoch; `None` when it predates the epoch (a late
    /// packet of the source before the switch point: sending it would break continuity).
    #[inline]
    pub(crate) fn rewrite(&mut self, meta: &RtpMeta, now: Instant) -> Option<Rewritten> {
        if !self.started || meta.seq < self.epoch_first_in_seq {
            return None;
        }
        let seq = meta.seq.wrapping_add(self.seq_offset);
        let ts = meta.ts.wrapping_add(self.ts_offset);
        let vp8 = meta.vp8.map(|v| Vp8Meta {
            picture_id: v.picture_id.map(|p| {
                // < 2^15 after the modulo.
                ((u32::from(p) + u32::from(self.picture_id_offset)) % PICTURE_ID_MOD) as u16
            }),
            tl0_pic_idx: v.tl0_pic_idx.map(|t| t.wrapping_add(self.tl0_offset)),
        });
        let newest = seq > self.max_out_seq || self.last_out_at.is_none();
        if newest {
            self.max_out_seq = seq;
            self.last_out_ts = ts;
            self.last_out_at = Some(now);
            if let Some(v) = vp8 {
                if v.picture_id.is_some() {
                    self.last_out_picture_id = v.picture_id;
                }
                if v.tl0_pic_idx.is_some() {
                    self.last_out_tl0 = v.tl0_pic_idx;
                }
            }
        }
        Some(Rewritten { seq, ts, vp8 })
    }

    /// `elapsed` in RTP clock ticks (at least 1 so timestamps always advance at a switch).
    fn ticks(&self, elapsed: Duration) -> u32 {
        let ticks = elapsed.as_micros() * u128::from(self.clock_rate) / 1_000_000;
        // Wrapping is what RTP timestamps do anyway.
        (ticks as u32).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(seq: u64, ts: u32, pic: u16, tl0: u8) -> RtpMeta {
        RtpMeta {
            seq,
            ts,
            vp8: Some(Vp8Meta {
                picture_id: Some(pic),
                tl0_pic_idx: Some(tl0),
            }),
            ..RtpMeta::default()
        }
    }

    #[test]
    fn first_epoch_starts_low_and_keeps_spacing() {
        let now = Instant::now();
        let mut r = Rewriter::new(90_000);
        let first = meta(70_000, 1000, 5, 9);
        assert_eq!(r.rewrite(&first, now), None);
        r.start_epoch(&first, now);
        let a = r.rewrite(&first, now).unwrap();
        assert_eq!(a.seq, FIRST_OUT_SEQ);
        assert_eq!(a.ts, 1000);
        // A lost packet stays a gap.
        let b = r.rewrite(&meta(70_002, 4000, 6, 9), now).unwrap();
        assert_eq!(b.seq, FIRST_OUT_SEQ + 2);
        // Older than the epoch start: dropped.
        assert_eq!(r.rewrite(&meta(69_999, 0, 4, 9), now), None);
    }

    #[test]
    fn switch_continues_numbering() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000);
        let a = meta(100, 50_000, 32_767, 255);
        r.start_epoch(&a, t0);
        r.rewrite(&a, t0).unwrap();
        let t1 = t0 + Duration::from_millis(33);
        let b = meta(9_000, 7, 200, 3);
        r.start_epoch(&b, t1);
        let out = r.rewrite(&b, t1).unwrap();
        assert_eq!(out.seq, FIRST_OUT_SEQ + 1);
        assert_eq!(out.ts, 50_000 + 2970);
        assert_eq!(
            out.vp8,
            Some(Vp8Meta {
                picture_id: Some(0),
                tl0_pic_idx: Some(0)
            })
        );
        let next = r.rewrite(&meta(9_001, 3007, 201, 4), t1).unwrap();
        assert_eq!(next.seq, FIRST_OUT_SEQ + 2);
        assert_eq!(next.ts, 50_000 + 2970 + 3000);
        assert_eq!(next.vp8.unwrap().picture_id, Some(1));
        assert_eq!(next.vp8.unwrap().tl0_pic_idx, Some(1));
    }
}
