//! A participant's connection quality, as the shard sees it from str0m's stats (transport-wide
//! feedback both ways, ICE, the streams it sends): packet loss, round-trip time and jitter, gathered over a
//! window of [`QUALITY_WINDOW`] and classified by fixed thresholds into a
//! [`QualityLevel`]. The room hears of a level only when it changes.
//!
//! A worse level is reported after one window; a better one only after two windows in a
//! row are better (and the worse of the two is taken), so an indicator near a threshold
//! does not flap with every window.

use std::time::{Duration, Instant};

use crate::protocol::QualityLevel;

/// How long samples are gathered before the level is decided again.
pub const QUALITY_WINDOW: Duration = Duration::from_secs(3);

/// Loss (fraction of packets, the worse direction) from which a connection is `fair`.
pub const FAIR_LOSS: f32 = 0.03;
/// Loss from which it is `poor`.
pub const POOR_LOSS: f32 = 0.10;
/// Round-trip time from which a connection is `fair`.
pub const FAIR_RTT: Duration = Duration::from_millis(250);
/// Round-trip time from which it is `poor`.
pub const POOR_RTT: Duration = Duration::from_millis(500);
/// Jitter (the worst stream) from which a connection is `fair`.
pub const FAIR_JITTER: Duration = Duration::from_millis(30);
/// Jitter from which it is `poor`.
pub const POOR_JITTER: Duration = Duration::from_millis(80);

/// What one window measured; `None` where nothing was.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    /// Fraction of packets lost, 0 to 1.
    pub loss: Option<f32>,
    /// Round-trip time.
    pub rtt: Option<Duration>,
    /// Interarrival jitter.
    pub jitter: Option<Duration>,
}

impl Measured {
    /// Loss in whole percent.
    pub fn loss_pct(&self) -> Option<u32> {
        self.loss
            .map(|l| (l.clamp(0.0, 1.0) * 100.0).round() as u32)
    }

    /// Round-trip time in whole milliseconds.
    pub fn rtt_ms(&self) -> Option<u32> {
        self.rtt
            .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
    }

    /// Jitter in whole milliseconds.
    pub fn jitter_ms(&self) -> Option<u32> {
        self.jitter
            .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
    }
}

/// The level of a window's figures: the worst any one of them reaches. `None` when the
/// window measured nothing (no media and no RTCP yet).
pub fn classify(m: &Measured) -> Option<QualityLevel> {
    if m.loss.is_none() && m.rtt.is_none() && m.jitter.is_none() {
        return None;
    }
    let by_loss = m.loss.map_or(QualityLevel::Good, |l| {
        level(l >= POOR_LOSS, l >= FAIR_LOSS)
    });
    let by_rtt = m
        .rtt
        .map_or(QualityLevel::Good, |r| level(r >= POOR_RTT, r >= FAIR_RTT));
    let by_jitter = m.jitter.map_or(QualityLevel::Good, |j| {
        level(j >= POOR_JITTER, j >= FAIR_JITTER)
    });
    Some(by_loss.max(by_rtt).max(by_jitter))
}

fn level(poor: bool, fair: bool) -> QualityLevel {
    if poor {
        QualityLevel::Poor
    } else if fair {
        QualityLevel::Fair
    } else {
        QualityLevel::Good
    }
}

/// One participant's samples and the level the room last heard.
#[derive(Debug, Default)]
pub(super) struct QualityMeter {
    window_start: Option<Instant>,
    loss_sum: f32,
    loss_samples: u32,
    rtt_sum: Duration,
    rtt_samples: u32,
    /// Round-trip times from transport-wide feedback: used when no receiver report gave
    /// one in the window (they include the feedback interval, so they read high).
    feedback_rtt_sum: Duration,
    feedback_rtt_samples: u32,
    /// The worst jitter of any stream in the window.
    jitter: Option<Duration>,
    /// What the room was told last.
    level: Option<QualityLevel>,
    /// The previous window was better than `level`, at this level.
    improving: Option<QualityLevel>,
}

impl QualityMeter {
    /// The level the room was told last.
    pub fn level(&self) -> Option<QualityLevel> {
        self.level
    }

    /// A loss fraction (one stats report).
    pub fn record_loss(&mut self, loss: f32) {
        if loss.is_finite() {
            self.loss_sum += loss.clamp(0.0, 1.0);
            self.loss_samples += 1;
        }
    }

    /// A round-trip time from an RTCP receiver report (LSR/DLSR: exact).
    pub fn record_rtt(&mut self, rtt: Duration) {
        self.rtt_sum += rtt;
        self.rtt_samples += 1;
    }

    /// A round-trip time from transport-wide feedback (the fallback).
    pub fn record_feedback_rtt(&mut self, rtt: Duration) {
        self.feedback_rtt_sum += rtt;
        self.feedback_rtt_samples += 1;
    }

    /// One stream's jitter.
    pub fn record_jitter(&mut self, jitter: Duration) {
        self.jitter = Some(self.jitter.map_or(jitter, |j| j.max(jitter)));
    }

    /// At the end of a window: its figures, when the level the room should hear changed
    /// (see the module docs). Starts the next window.
    pub fn poll(&mut self, now: Instant) -> Option<(QualityLevel, Measured)> {
        let Some(start) = self.window_start else {
            self.window_start = Some(now);
            return None;
        };
        if now < start + QUALITY_WINDOW {
            return None;
        }
        let measured = self.take_window();
        self.window_start = Some(now);
        let candidate = classify(&measured)?;
        let next = match self.level {
            None => Some(candidate),
            Some(current) if candidate > current => Some(candidate),
            Some(current) if candidate < current => match self.improving.take() {
                Some(previous) => Some(previous.max(candidate)),
                None => {
                    self.improving = Some(candidate);
                    return None;
                }
            },
            Some(_) => None,
        };
        self.improving = None;
        let next = next.filter(|n| Some(*n) != self.level)?;
        self.level = Some(next);
        Some((next, measured))
    }

    fn take_window(&mut self) -> Measured {
        let measured = Measured {
            loss: (self.loss_samples > 0).then(|| self.loss_sum / self.loss_samples as f32),
            rtt: if self.rtt_samples > 0 {
                Some(self.rtt_sum / self.rtt_samples)
            } else {
                (self.feedback_rtt_samples > 0)
                    .then(|| self.feedback_rtt_sum / self.feedback_rtt_samples)
            },
            jitter: self.jitter,
        };
        self.loss_sum = 0.0;
        self.loss_samples = 0;
        self.rtt_sum = Duration::ZERO;
        self.rtt_samples = 0;
        self.feedback_rtt_sum = Duration::ZERO;
        self.feedback_rtt_samples = 0;
        self.jitter = None;
        measured
    }
}

/// Jitter in RTP timestamp units of a stream of `kind`, as a duration (Opus runs at
/// 48 kHz, video at 90 kHz).
pub(super) fn jitter_duration(units: u32, kind: str0m::media::MediaKind) -> Duration {
    let clock_hz = u64::from(match kind {
        str0m::media::MediaKind::Audio => crate::core::AUDIO_CLOCK,
        str0m::media::MediaKind::Video => crate::core::VIDEO_CLOCK,
    });
    Duration::from_micros(u64::from(units) * 1_000_000 / clock_hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn measured(loss: f32, rtt: u64, jitter: u64) -> Measured {
        Measured {
            loss: Some(loss),
            rtt: Some(ms(rtt)),
            jitter: Some(ms(jitter)),
        }
    }

    #[test]
    fn the_worst_figure_decides_the_level() {
        use QualityLevel::*;
        assert_eq!(classify(&Measured::default()), None);
        assert_eq!(classify(&measured(0.0, 20, 2)), Some(Good));
        assert_eq!(classify(&measured(0.029, 249, 29)), Some(Good));
        assert_eq!(classify(&measured(0.03, 20, 2)), Some(Fair));
        assert_eq!(classify(&measured(0.0, 250, 2)), Some(Fair));
        assert_eq!(classify(&measured(0.0, 20, 30)), Some(Fair));
        assert_eq!(classify(&measured(0.10, 20, 2)), Some(Poor));
        assert_eq!(classify(&measured(0.0, 500, 2)), Some(Poor));
        assert_eq!(classify(&measured(0.0, 20, 80)), Some(Poor));
        assert_eq!(classify(&measured(0.05, 600, 2)), Some(Poor));
        // One figure is enough to decide.
        let rtt_only = Measured {
            rtt: Some(ms(300)),
            ..Measured::default()
        };
        assert_eq!(classify(&rtt_only), Some(Fair));
    }

    #[test]
    fn figures_round_to_whole_units() {
        let m = measured(0.126, 41, 7);
        assert_eq!(m.loss_pct(), Some(13));
        assert_eq!(m.rtt_ms(), Some(41));
        assert_eq!(m.jitter_ms(), Some(7));
        assert_eq!(Measured::default().loss_pct(), None);
        assert_eq!(jitter_duration(480, str0m::media::MediaKind::Audio), ms(10));
        assert_eq!(jitter_duration(900, str0m::media::MediaKind::Video), ms(10));
    }

    /// Feeds one window of `loss` and returns what the meter reports at its end.
    fn window(
        meter: &mut QualityMeter,
        at: &mut Instant,
        loss: f32,
    ) -> Option<(QualityLevel, Measured)> {
        meter.record_loss(loss);
        meter.record_rtt(ms(40));
        *at += QUALITY_WINDOW;
        meter.poll(*at)
    }

    #[test]
    fn worse_is_reported_at_once_better_after_two_windows_and_nothing_twice() {
        use QualityLevel::*;
        let mut at = Instant::now();
        let mut meter = QualityMeter::default();
        assert_eq!(meter.poll(at), None, "the first call starts the window");
        assert_eq!(window(&mut meter, &mut at, 0.0).map(|r| r.0), Some(Good));
        assert_eq!(
            window(&mut meter, &mut at, 0.0),
            None,
            "no change, nothing sent"
        );
        let (level, figures) = window(&mut meter, &mut at, 0.2).expect("worse at once");
        assert_eq!(level, Poor);
        assert_eq!(figures.loss_pct(), Some(20));
        assert_eq!(figures.rtt_ms(), Some(40));
        assert_eq!(
            window(&mut meter, &mut at, 0.0),
            None,
            "one good window is not enough"
        );
        assert_eq!(meter.level(), Some(Poor));
        // The second better window in a row: the worse of the two is taken.
        assert_eq!(window(&mut meter, &mut at, 0.05).map(|r| r.0), Some(Fair));
        // A worse window in between resets the count.
        assert_eq!(window(&mut meter, &mut at, 0.0), None);
        assert_eq!(window(&mut meter, &mut at, 0.04), None);
        assert_eq!(window(&mut meter, &mut at, 0.0), None);
        assert_eq!(window(&mut meter, &mut at, 0.0).map(|r| r.0), Some(Good));
        // A window before its end reports nothing and keeps its samples.
        meter.record_loss(0.5);
        assert_eq!(meter.poll(at + ms(10)), None);
        at += QUALITY_WINDOW;
        assert_eq!(meter.poll(at).map(|r| r.0), Some(Poor));
    }

    #[test]
    fn receiver_report_round_trips_win_over_feedback_ones() {
        let mut at = Instant::now();
        let mut meter = QualityMeter::default();
        meter.poll(at);
        meter.record_feedback_rtt(ms(300));
        at += QUALITY_WINDOW;
        let (level, m) = meter.poll(at).expect("a first level");
        assert_eq!((level, m.rtt_ms()), (QualityLevel::Fair, Some(300)));
        meter.record_feedback_rtt(ms(300));
        meter.record_rtt(ms(20));
        meter.record_rtt(ms(40));
        at += QUALITY_WINDOW;
        assert_eq!(meter.poll(at), None, "better, once");
        meter.record_rtt(ms(30));
        at += QUALITY_WINDOW;
        let (level, m) = meter.poll(at).expect("better twice");
        assert_eq!((level, m.rtt_ms()), (QualityLevel::Good, Some(30)));
    }
}
