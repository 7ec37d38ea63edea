//! Active speaker detection from RFC 6464 audio levels.
//!
//! Each audio track accumulates the loudness of its packets between ticks; at every tick the
//! mean is folded into an exponential average (time constant `SpeakerConfig::window`). The
//! loudest participant becomes the active speaker when it is clearly louder than the current
//! one (`switch_ratio`) and the current one has held the floor for `min_hold`.

use std::time::{Duration, Instant};

use super::{ParticipantId, SpeakerConfig};

/// Smoothed loudness below this is silence (nobody becomes the speaker by breathing).
const MIN_LOUDNESS: f32 = 5.0;

/// Loudness of one audio track.
#[derive(Debug, Clone, Default)]
pub(crate) struct LevelMeter {
    sum: u32,
    count: u32,
    smoothed: f32,
}

impl LevelMeter {
    /// One packet's level (0 = loudest, 127 = silence).
    #[inline]
    pub(crate) fn add(&mut self, level: u8, silence_level: u8) {
        self.sum += u32::from(silence_level.saturating_sub(level.min(127)));
        self.count += 1;
    }

    /// Folds the levels since the last tick into the average; returns the smoothed loudness.
    pub(crate) fn tick(&mut self, elapsed: Duration, window: Duration) -> f32 {
        let sample = if self.count == 0 {
            0.0
        } else {
            self.sum as f32 / self.count as f32
        };
        let alpha = if window.is_zero() {
            1.0
        } else {
            (elapsed.as_secs_f32() / window.as_secs_f32()).clamp(0.0, 1.0)
        };
        self.smoothed += alpha * (sample - self.smoothed);
        self.sum = 0;
        self.count = 0;
        self.smoothed
    }
}

/// Picks the active speaker from the participants' smoothed loudness.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpeakerSelector {
    current: Option<(ParticipantId, Instant)>,
}

impl SpeakerSelector {
    /// The current active speaker.
    pub(crate) fn current(&self) -> Option<ParticipantId> {
        self.current.map(|(pid, _)| pid)
    }

    /// Forgets `pid` if it was the speaker (it left).
    pub(crate) fn remove(&mut self, pid: ParticipantId) {
        if self.current() == Some(pid) {
            self.current = None;
        }
    }

    /// One round over `(participant, loudness)`; returns the new speaker when it changed.
    pub(crate) fn update(
        &mut self,
        loudness: impl Iterator<Item = (ParticipantId, f32)>,
        config: &SpeakerConfig,
        now: Instant,
    ) -> Option<ParticipantId> {
        let current = self.current();
        let mut loudest: Option<(ParticipantId, f32)> = None;
        let mut current_loudness = 0.0f32;
        for (pid, value) in loudness {
            if Some(pid) == current {
                current_loudness = current_loudness.max(value);
            }
            // Ties go to the smaller id so the outcome does not depend on map order.
            let better = match loudest {
                None => true,
                Some((best_pid, best)) => value > best || (value == best && pid < best_pid),
            };
            if better {
                loudest = Some((pid, value));
            }
        }
        let (candidate, value) = loudest?;
        if value < MIN_LOUDNESS || Some(candidate) == current {
            return None;
        }
        let take_over = match self.current {
            None => true,
            Some((_, since)) => {
                now.saturating_duration_since(since) >= config.min_hold
                    && value >= current_loudness * config.switch_ratio
            }
        };
        if take_over {
            self.current = Some((candidate, now));
            Some(candidate)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_meter_smooths() {
        let mut m = LevelMeter::default();
        let tick = Duration::from_millis(100);
        let window = Duration::from_secs(1);
        for _ in 0..5 {
            m.add(30, 90);
        }
        let first = m.tick(tick, window);
        assert!((first - 6.0).abs() < 0.01, "{first}");
        // Silence packets pull it back down.
        m.add(127, 90);
        assert!(m.tick(tick, window) < first);
    }

    #[test]
    fn holds_and_requires_margin() {
        let cfg = SpeakerConfig::default();
        let t0 = Instant::now();
        let (a, b) = (ParticipantId(1), ParticipantId(2));
        let mut s = SpeakerSelector::default();
        assert_eq!(s.update([(a, 1.0), (b, 2.0)].into_iter(), &cfg, t0), None);
        assert_eq!(
            s.update([(a, 40.0), (b, 2.0)].into_iter(), &cfg, t0),
            Some(a)
        );
        // Louder, but within the hold time.
        let soon = t0 + Duration::from_millis(500);
        assert_eq!(
            s.update([(a, 10.0), (b, 50.0)].into_iter(), &cfg, soon),
            None
        );
        // After the hold, but not clearly louder.
        let later = t0 + Duration::from_secs(3);
        assert_eq!(
            s.update([(a, 40.0), (b, 45.0)].into_iter(), &cfg, later),
            None
        );
        assert_eq!(
            s.update([(a, 20.0), (b, 45.0)].into_iter(), &cfg, later),
            Some(b)
        );
        s.remove(b);
        assert_eq!(s.current(), None);
    }
}
