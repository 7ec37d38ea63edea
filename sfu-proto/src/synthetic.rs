//! Synthetic VP8 for headless participants, benches and tests: frames the SFU can route as
//! real ones (picture ids, TL0PICIDX and keyframe flags where a parser looks) without an
//! encoder.

use str0m::change::SdpApi;
use str0m::media::{Direction, MediaKind, Mid, Simulcast, SimulcastLayer};

/// The simulcast rids a synthetic publisher sends, lowest layer first.
pub const RIDS: [&str; 3] = ["q", "h", "f"];

/// Adds what a synthetic publisher sends to an offer: a send-only audio m-line and a
/// send-only video m-line simulcast on [`RIDS`], each when asked for.
pub fn add_publish_media(
    change: &mut SdpApi<'_>,
    audio: bool,
    video: bool,
) -> (Option<Mid>, Option<Mid>) {
    let audio_mid =
        audio.then(|| change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
    let video_mid = video.then(|| {
        let mut simulcast = Simulcast::new();
        for rid in RIDS {
            simulcast.send.push(SimulcastLayer::new(rid));
        }
        change.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            None,
            None,
            Some(simulcast),
        )
    });
    (audio_mid, video_mid)
}

/// The largest RTP payload a synthetic frame is cut into, well under a 1,200-byte MTU.
pub const MAX_VIDEO_PAYLOAD: usize = 1_100;

/// The frame sizes a keyframe announces on each simulcast layer (low, medium, high).
const LAYER_SIZES: [(u16, u16); 3] = [(320, 180), (640, 360), (1280, 720)];

/// Cuts one frame of about `bytes` bytes on simulcast layer `layer` (0..3) into RTP
/// payloads: each starts with a VP8 payload descriptor (X, S on the first; I with a 15-bit
/// `picture_id`, L with `tl0`, T), the first carries the frame tag, and a keyframe's its
/// start code and size. The marker bit belongs on the last payload.
pub fn vp8_frame(
    picture_id: u16,
    tl0: u8,
    layer: usize,
    keyframe: bool,
    bytes: usize,
) -> Vec<Vec<u8>> {
    let packets = bytes.div_ceil(MAX_VIDEO_PAYLOAD).max(1);
    let per_packet = (bytes / packets).max(16);
    (0..packets)
        .map(|n| {
            let first = n == 0;
            let mut payload = Vec::with_capacity(per_packet + 16);
            payload.push(0x80 | if first { 0x10 } else { 0 });
            payload.push(0x80 | 0x40 | 0x20);
            payload.push(0x80 | (picture_id >> 8) as u8);
            payload.push(picture_id as u8);
            payload.push(tl0);
            // T needs a TID byte; every synthetic frame is temporal layer 0.
            payload.push(0x00);
            if first {
                // Frame tag: bit 0 clear marks a keyframe.
                payload.push(if keyframe { 0x10 } else { 0x11 });
                payload.push(0x02);
                payload.push(0x00);
                if keyframe {
                    let (w, h) = LAYER_SIZES[layer.min(LAYER_SIZES.len() - 1)];
                    payload.extend_from_slice(&[0x9d, 0x01, 0x2a]);
                    payload.extend_from_slice(&w.to_le_bytes());
                    payload.extend_from_slice(&h.to_le_bytes());
                }
            }
            payload.resize(per_packet.max(payload.len() + 1), 0x42);
            payload
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyframe_is_cut_under_the_mtu_and_announces_its_layer_size() {
        let packets = vp8_frame(0x1234, 7, 1, true, 3_000);
        assert_eq!(packets.len(), 3);
        assert!(packets.iter().all(|p| p.len() <= MAX_VIDEO_PAYLOAD));
        let first = &packets[0];
        assert_eq!(first[0], 0x90, "X and S on the first packet");
        assert_eq!((first[2], first[3], first[4]), (0x80 | 0x12, 0x34, 7));
        assert_eq!(first[6] & 1, 0, "keyframe tag");
        assert_eq!(&first[9..12], &[0x9d, 0x01, 0x2a]);
        assert_eq!(&first[12..16], &[0x80, 0x02, 0x68, 0x01], "640x360");
        assert_eq!(packets[1][0], 0x80, "no S after the first packet");
    }

    #[test]
    fn a_delta_frame_has_no_start_code() {
        let packets = vp8_frame(1, 1, 0, false, 10);
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0][6] & 1, 1);
        assert_ne!(&packets[0][9..12], &[0x9d, 0x01, 0x2a]);
    }
}
