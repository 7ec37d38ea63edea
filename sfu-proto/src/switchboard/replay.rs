//! Writing a cached keyframe the room replays to a new subscriber
//! ([`Output::ReplayKeyframe`](crate::core::Output::ReplayKeyframe)): the same write as a
//! forwarded packet's, from the cache's copy of the payload instead of a packet just received.

use std::time::Instant;

use str0m::format::Codec;
use str0m::rtp::{RtpWrite, Vp8Descriptor};

use super::Switchboard;
use super::route::with_vp8_patch;
use crate::core::{ParticipantId, ReplayedPacket};

impl Switchboard {
    /// Writes `packets` of `publisher`'s cached keyframe into their subscriber's stream.
    pub(super) fn replay_keyframe(
        &mut self,
        publisher: ParticipantId,
        packets: Vec<ReplayedPacket>,
        now: Instant,
    ) {
        // One frame of one stream: one payload type, which names the codec (the
        // subscriber's session may number it differently).
        let Some(pt) = packets.first().map(|p| p.payload_type) else {
            return;
        };
        let Some(params) = self
            .peers
            .get(&publisher)
            .and_then(|p| p.rtc.codec_config().find(|c| *c.pt() == pt).copied())
        else {
            return;
        };
        let mut written = false;
        for packet in packets {
            let f = packet.forward;
            let Some(sub) = self.peers.get_mut(&f.subscriber) else {
                continue;
            };
            let Some(out_pt) = sub.out_pt(f.out_mid, &params) else {
                continue;
            };
            let len = packet.payload.len();
            let vp8 = (params.spec().codec == Codec::Vp8)
                .then(|| Vp8Descriptor::parse(&packet.payload).ok())
                .flatten();
            // Stamped `now`: the room gave the frame a timestamp on the live clock of now.
            let mut write = RtpWrite::new(out_pt, f.seq.into(), f.ts, now, packet.payload)
                .marker(f.marker)
                .nackable(true);
            if let (Some(meta), Some(descriptor)) = (f.vp8, vp8.as_ref()) {
                write = with_vp8_patch(write, meta, descriptor);
            }
            let mut api = sub.rtc.direct_api();
            let Some(stream) = api.stream_tx_by_mid(f.out_mid, None) else {
                continue;
            };
            stream.write_rtp(write);
            written = true;
            self.counters.packets_out += 1;
            self.counters.bytes_out += len as u64;
            self.mark_dirty(f.subscriber);
        }
        // Counted when it reached the subscriber's session, not when the room asked for it.
        if written {
            self.counters.keyframes_replayed += 1;
        }
    }
}
