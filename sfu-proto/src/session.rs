//! How the shard sets up and drives each participant's str0m session. Public so that the
//! benchmarks measure the sessions the shard really runs.

use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::{Input, Output, Rtc, RtcConfig, RtcError};

/// Egress estimate before TWCC reports.
pub const INITIAL_ESTIMATE: Bitrate = Bitrate::kbps(1_000);
/// The floor of the range bandwidth estimation probes in.
pub const MIN_BITRATE: Bitrate = Bitrate::kbps(100);
/// What probing aims for before any subscription: one high layer plus audio. The room
/// lowers layers while the estimate stays below.
pub const START_DESIRED_BITRATE: Bitrate = Bitrate::kbps(2_500);
/// Due timeouts handled inline per drain before the session goes back to the timer heap:
/// enough for a burst of paced packets (str0m's pacer wants a timeout per packet it lets
/// out).
pub const MAX_DUE_ROUNDS: u32 = 64;
/// A timeout this close counts as due: after each packet it lets out, str0m's pacer asks
/// for a timeout one microsecond ahead, which is not worth a trip through the wait.
pub const DUE_AHEAD: Duration = Duration::from_micros(50);

/// RTP mode (forwarding without frame reassembly), ICE-lite, bandwidth estimation on,
/// stats every second.
///
/// Codecs: Opus, VP8 and H.264 constrained baseline (packetization mode 1), which every
/// browser sends. str0m's default list (seven H.264 variants, H.265, VP9, AV1, each with
/// RTX) made the offer a subscriber gets for two publishers 10 KB; this one is under 5 KB,
/// which is 100 ms less on a 400 kbit/s link before that subscriber sees anything.
pub fn rtc_config() -> RtcConfig {
    let mut config = str0m::Rtc::builder()
        .set_rtp_mode(true)
        .set_ice_lite(true)
        .enable_bwe(Some(INITIAL_ESTIMATE))
        .set_stats_interval(Some(Duration::from_secs(1)))
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true);
    config
        .codec_config()
        .add_h264(108.into(), Some(109.into()), true, 0x42e01f);
    config
}

/// The receive cap a client announces in its offer: a session-level `b=AS` (kbit/s) or
/// `b=TIAS` (bit/s) line, i.e. the most it wants to receive in all (RFC 8866 5.8, RFC 3890).
/// Media-level lines are not read: they bound one m-line, not the client's link.
pub fn announced_receive_cap(sdp: &str) -> Option<u64> {
    let mut cap: Option<u64> = None;
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("m=") {
            break;
        }
        let bps = if let Some(v) = line.strip_prefix("b=AS:") {
            v.trim().parse::<u64>().ok().map(|k| k.saturating_mul(1000))
        } else if let Some(v) = line.strip_prefix("b=TIAS:") {
            v.trim().parse::<u64>().ok()
        } else {
            None
        };
        // Zero means "no media" in b=AS; not a cap worth planning with.
        if let Some(bps) = bps.filter(|b| *b > 0) {
            cap = Some(cap.map_or(bps, |c| c.min(bps)));
        }
    }
    cap
}

/// What one participant may offer: at most one audio m-line and two video m-lines (the
/// camera, and the screen it may share) to publish, and the `surge` data channel. More would
/// let one client make the shard negotiate, forward and renegotiate toward every subscriber
/// without bound.
pub const MAX_OFFERED_MEDIA: [(&str, usize); 3] = [("audio", 1), ("video", 2), ("application", 1)];

/// Receive-only audio and video m-lines a join may carry per kind, for others' tracks
/// without a renegotiation (the web client offers two pairs); they carry nothing the
/// client sends, and each is used once.
pub const MAX_RECEIVE_ONLY_PER_KIND: usize = 2;

/// Checks the m-lines of a join offer against [`MAX_OFFERED_MEDIA`] (m-lines the client may
/// send on) and [`MAX_RECEIVE_ONLY_PER_KIND`] (`a=recvonly` ones); `Err` says what is wrong,
/// for the `400 invalid_sdp` the client gets.
pub fn check_offered_media(sdp: &str) -> Result<(), String> {
    let mut sending = [0usize; MAX_OFFERED_MEDIA.len()];
    let mut receive_only = [0usize; MAX_OFFERED_MEDIA.len()];
    let mut current: Option<(usize, bool)> = None;
    let mut count = |section: Option<(usize, bool)>| {
        if let Some((at, recv_only)) = section {
            if recv_only && MAX_OFFERED_MEDIA[at].0 != "application" {
                receive_only[at] += 1;
            } else {
                sending[at] += 1;
            }
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(media) = line.strip_prefix("m=") {
            count(current.take());
            let kind = media.split(' ').next().unwrap_or_default();
            let Some(at) = MAX_OFFERED_MEDIA.iter().position(|(k, _)| *k == kind) else {
                return Err(format!(
                    "the offer has an m={kind} line; a participant offers only audio, video and the data channel"
                ));
            };
            current = Some((at, false));
        } else if line == "a=recvonly"
            && let Some((_, recv_only)) = current.as_mut()
        {
            *recv_only = true;
        }
    }
    count(current);
    for (((kind, max), sent), received) in MAX_OFFERED_MEDIA.iter().zip(sending).zip(receive_only) {
        if sent > *max {
            return Err(format!(
                "the offer has {sent} {kind} m-lines; a participant publishes at most one audio and two video m-lines (camera and screen), plus the data channel"
            ));
        }
        if received > MAX_RECEIVE_ONLY_PER_KIND {
            return Err(format!(
                "the offer has {received} receive-only {kind} m-lines; at most {MAX_RECEIVE_ONLY_PER_KIND} are accepted"
            ));
        }
    }
    Ok(())
}

/// Sets up bandwidth estimation for a client that announced a receive cap: estimation
/// starts at the cap (when below the usual start) and probes no further than it, so the
/// first probes and keyframes do not overrun a thin link before any feedback came back.
pub fn apply_receive_cap(rtc: &mut str0m::Rtc, cap_bps: Option<u64>) {
    let Some(cap) = cap_bps else {
        return;
    };
    let cap = Bitrate::bps(cap);
    if cap < INITIAL_ESTIMATE {
        rtc.bwe().reset(cap);
    }
    rtc.bwe().set_bitrate(
        MIN_BITRATE.min(cap),
        desired_bitrate(START_DESIRED_BITRATE.as_u64(), Some(cap.as_u64())),
    );
}

/// What probing should aim for: what the room would send this subscriber at best (the
/// room's `desired_bps`; the start value before any subscription), never past its announced
/// cap, and never below the probing floor.
pub fn desired_bitrate(room_desired_bps: u64, cap_bps: Option<u64>) -> Bitrate {
    let desired = room_desired_bps.max(MIN_BITRATE.as_u64());
    Bitrate::bps(cap_bps.map_or(desired, |c| desired.min(c)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use str0m::media::{Direction, MediaKind};

    /// The size of the offer the shard sends a subscriber joining a room of two publishers.
    fn subscriber_offer(config: RtcConfig) -> usize {
        let mut rtc = config.build(Instant::now());
        let mut change = rtc.sdp_api();
        for kind in [
            MediaKind::Audio,
            MediaKind::Video,
            MediaKind::Audio,
            MediaKind::Video,
        ] {
            change.add_media(
                kind,
                Direction::SendOnly,
                Some("0123456789abcdef".into()),
                None,
                None,
            );
        }
        change
            .apply()
            .map_or(0, |(offer, _)| offer.to_sdp_string().len())
    }

    #[test]
    fn a_subscriber_offer_for_two_publishers_stays_small() {
        // str0m's default codec list: about 10 KB.
        let default = subscriber_offer(
            rtc_config()
                .enable_h265(true)
                .enable_vp9(true)
                .enable_av1(true)
                .enable_h264(true),
        );
        let ours = subscriber_offer(rtc_config());
        assert!(default > 9_000, "{default}");
        assert!(ours < 5_500, "{ours}");
    }

    #[test]
    fn offers_are_limited_to_one_audio_two_video_and_the_channel() {
        let sdp = |lines: &[&str]| {
            let mut s = String::from("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n");
            for kind in lines {
                s.push_str(&format!("m={kind} 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:x\r\n"));
            }
            s
        };
        assert!(check_offered_media(&sdp(&[])).is_ok());
        assert!(check_offered_media(&sdp(&["audio", "video", "application"])).is_ok());
        let two_audio = check_offered_media(&sdp(&["audio", "audio"])).unwrap_err();
        assert!(two_audio.contains("2 audio m-lines"), "{two_audio}");
        // Camera and screen.
        assert!(check_offered_media(&sdp(&["video", "audio", "video"])).is_ok());
        let three_video = check_offered_media(&sdp(&["video", "video", "video"])).unwrap_err();
        assert!(three_video.contains("two video m-lines"), "{three_video}");
        assert!(check_offered_media(&sdp(&["application", "application"])).is_err());
        let text = check_offered_media(&sdp(&["text"])).unwrap_err();
        assert!(text.contains("m=text"), "{text}");
        // Receive-only m-lines (others' tracks in the join answer): two per kind.
        let with_receive_only = |n: usize| {
            let mut s = sdp(&["audio", "video", "application"]);
            for _ in 0..n {
                for kind in ["audio", "video"] {
                    s.push_str(&format!(
                        "m={kind} 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:r\r\na=recvonly\r\n"
                    ));
                }
            }
            s
        };
        assert!(check_offered_media(&with_receive_only(2)).is_ok());
        let three = check_offered_media(&with_receive_only(3)).unwrap_err();
        assert!(three.contains("3 receive-only audio"), "{three}");
    }

    #[test]
    fn the_receive_cap_comes_from_session_level_bandwidth_lines() {
        let sdp = |session: &str, media: &str| {
            format!(
                "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\n{session}t=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n{media}"
            )
        };
        assert_eq!(
            announced_receive_cap(&sdp("b=AS:400\r\n", "")),
            Some(400_000)
        );
        assert_eq!(
            announced_receive_cap(&sdp("b=TIAS:250000\r\n", "")),
            Some(250_000)
        );
        assert_eq!(announced_receive_cap(&sdp("", "b=AS:300\r\n")), None);
        assert_eq!(announced_receive_cap(&sdp("b=AS:0\r\n", "")), None);
        assert_eq!(announced_receive_cap(&sdp("b=AS:lots\r\n", "")), None);
        assert_eq!(announced_receive_cap(&sdp("", "")), None);
    }

    #[test]
    fn probing_aims_at_what_the_room_sends_within_the_cap() {
        assert_eq!(desired_bitrate(3_000_000, None), Bitrate::bps(3_000_000));
        assert_eq!(
            desired_bitrate(3_000_000, Some(400_000)),
            Bitrate::bps(400_000)
        );
        assert_eq!(desired_bitrate(0, None), MIN_BITRATE);
    }
}

/// What one step of [`Drain`] yields.
#[derive(Debug)]
// str0m's `Output` has the same shape; boxing the event would allocate per packet.
#[allow(clippy::large_enum_variant)]
pub enum Polled {
    /// A datagram to send.
    Transmit(str0m::net::Transmit),
    /// Something happened in the session.
    Event(str0m::Event),
    /// The session is idle until this instant.
    Timeout(Instant),
}

/// Polls a session the one way Surge does (the shard, the participant, the benches): until
/// `Timeout`, and a timeout that is already due (the pacer releasing what was just written,
/// a retransmission) is fed back at once, at most [`MAX_DUE_ROUNDS`] times, instead of
/// after a trip through the caller's wait.
#[derive(Debug)]
pub struct Drain {
    now: Instant,
    due_rounds: u32,
    timeouts: u32,
}

impl Drain {
    /// A drain at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            now,
            due_rounds: 0,
            timeouts: 0,
        }
    }

    /// The next output of `rtc` that is not a due timeout.
    pub fn next(&mut self, rtc: &mut Rtc) -> Result<Polled, RtcError> {
        loop {
            match rtc.poll_output()? {
                Output::Timeout(at)
                    if at <= self.now + DUE_AHEAD && self.due_rounds < MAX_DUE_ROUNDS =>
                {
                    self.due_rounds += 1;
                    self.timeouts += 1;
                    // str0m ignores a timeout earlier than the last time it saw.
                    self.now = self.now.max(at);
                    if let Err(e) = rtc.handle_input(Input::Timeout(self.now)) {
                        tracing::debug!(%e, "timeout input failed");
                    }
                }
                Output::Timeout(at) => return Ok(Polled::Timeout(at)),
                Output::Transmit(t) => return Ok(Polled::Transmit(t)),
                Output::Event(e) => return Ok(Polled::Event(e)),
            }
        }
    }

    /// The time the session has seen (due timeouts move it forward).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Due timeouts fed back so far.
    pub fn timeouts(&self) -> u32 {
        self.timeouts
    }
}
