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
pub fn rtc_config() -> RtcConfig {
    str0m::Rtc::builder()
        .set_rtp_mode(true)
        .set_ice_lite(true)
        .enable_bwe(Some(INITIAL_ESTIMATE))
        .set_stats_interval(Some(Duration::from_secs(1)))
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
