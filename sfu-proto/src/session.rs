//! How the shard sets up and drives each participant's str0m session. Public so that the
//! benchmarks measure the sessions the shard really runs.

use std::time::Duration;

use str0m::RtcConfig;
use str0m::bwe::Bitrate;

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
pub fn rtc_config() -> RtcConfig {
    str0m::Rtc::builder()
        .set_rtp_mode(true)
        .set_ice_lite(true)
        .enable_bwe(Some(INITIAL_ESTIMATE))
        .set_stats_interval(Some(Duration::from_secs(1)))
}
