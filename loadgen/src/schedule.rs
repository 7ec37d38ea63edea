//! Open-loop arrival schedules: when each request is *meant* to be sent.
//!
//! A profile is a shape over scenario time (a day, a 48-hour outage, …); a target volume
//! scales it, and a time-scale factor compresses scenario time into real time
//! (`--time-scale 1000` plays a day in 86.4 s, at 1000 times the rate). Arrivals are a
//! non-homogeneous Poisson process drawn by thinning, so bursts and lulls look like real
//! independent users rather than a metronome. The schedule is computed up front and never
//! waits for responses: a slow server cannot slow the offered load down.

use std::time::Duration;

use rand::RngExt;

/// Seconds in a day of scenario time.
pub const DAY_SECS: f64 = 86_400.0;
/// Length of the `outage` profile: the rival is down for 48 hours.
pub const OUTAGE_SECS: f64 = 2.0 * DAY_SECS;
/// Real run length of `constant` and `ramp` when `--duration` is not given.
pub const DEFAULT_RUN_SECS: f64 = 60.0;

/// The shape of the offered load over scenario time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// The same mean rate throughout.
    Constant,
    /// Rises linearly from zero to twice the mean rate: finds where the server bends.
    Ramp,
    /// A day of ordinary signups: quiet night, a midday bump and an evening peak (20:30).
    Day,
    /// A rival's 48-hour outage: the rate rises within the first hour, holds for a day
    /// and a half, then decays as the rival comes back.
    Outage,
}

impl Profile {
    /// Un-normalised intensity at scenario time `t` (seconds) of a scenario `len` long.
    fn shape(self, t: f64, len: f64) -> f64 {
        match self {
            Profile::Constant => 1.0,
            Profile::Ramp => (t / len).clamp(0.0, 1.0),
            Profile::Day => {
                let hour = (t / 3600.0).rem_euclid(24.0);
                // A floor for the night, a broad midday bump and a sharper evening peak;
                // the peak is about 2.3 times the day's mean.
                0.12 + 0.45 * bump(hour, 12.5, 2.5) + 1.0 * bump(hour, 20.5, 1.8)
            }
            Profile::Outage => {
                let hours = t / 3600.0;
                let baseline = 0.03;
                let level = if hours < 1.0 {
                    // Word spreads within the hour: a smooth S-curve up to the plateau.
                    smoothstep(hours)
                } else if hours < 36.0 {
                    1.0
                } else {
                    // The rival recovers; interest halves every two hours or so.
                    (-(hours - 36.0) / 3.0).exp()
                };
                baseline + (1.0 - baseline) * level
            }
        }
    }

    /// Scenario length this profile describes, if it has a natural one.
    fn natural_len(self) -> Option<f64> {
        match self {
            Profile::Constant | Profile::Ramp => None,
            Profile::Day => Some(DAY_SECS),
            Profile::Outage => Some(OUTAGE_SECS),
        }
    }
}

/// A Gaussian bump on the 24-hour clock, wrapping around midnight.
fn bump(hour: f64, centre: f64, width: f64) -> f64 {
    let mut d = (hour - centre).abs();
    if d > 12.0 {
        d = 24.0 - d;
    }
    (-0.5 * (d / width).powi(2)).exp()
}

fn smoothstep(x: f64) -> f64 {
    let x = x.clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

/// How much load: a volume per scenario day, or a mean real rate.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Volume {
    /// Requests per day of scenario time (e.g. ooVoo's 100,000 a day).
    PerDay(f64),
    /// Mean requests per second of real time.
    PerSecond(f64),
}

/// Errors in the schedule's parameters.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ScheduleError {
    #[error("the time scale must be a positive number, got {0}")]
    TimeScale(f64),
    #[error("the request volume must be a positive number")]
    Volume,
    #[error("the run duration must be positive")]
    Duration,
}

/// A concrete schedule: profile × volume × time scale × length.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Schedule {
    pub profile: Profile,
    pub volume: Volume,
    pub time_scale: f64,
    /// Length of the run in real seconds.
    pub real_secs: f64,
    /// Length of the scenario the profile is shaped over, in scenario seconds.
    pub scenario_secs: f64,
    /// Mean arrivals per real second over the whole scenario.
    mean_real_rate: f64,
    /// Mean of the un-normalised shape over the scenario.
    shape_mean: f64,
}

impl Schedule {
    /// `duration` is the real run length; for `day` and `outage` it cuts the scenario short
    /// (plays only its beginning), for `constant` and `ramp` it is the whole run.
    pub fn new(
        profile: Profile,
        volume: Volume,
        time_scale: f64,
        duration: Option<Duration>,
    ) -> Result<Self, ScheduleError> {
        if !(time_scale.is_finite() && time_scale > 0.0) {
            return Err(ScheduleError::TimeScale(time_scale));
        }
        let v = match volume {
            Volume::PerDay(v) | Volume::PerSecond(v) => v,
        };
        if !(v.is_finite() && v > 0.0) {
            return Err(ScheduleError::Volume);
        }
        let duration = duration.map(|d| d.as_secs_f64());
        if duration.is_some_and(|d| d <= 0.0) {
            return Err(ScheduleError::Duration);
        }
        let scenario_secs = profile
            .natural_len()
            .unwrap_or_else(|| duration.unwrap_or(DEFAULT_RUN_SECS) * time_scale);
        let full_real = scenario_secs / time_scale;
        let real_secs = duration.map_or(full_real, |d| d.min(full_real));
        let mean_real_rate = match volume {
            Volume::PerDay(n) => n / DAY_SECS * time_scale,
            Volume::PerSecond(r) => r,
        };
        let samples = 20_000;
        let shape_mean = (0..samples)
            .map(|i| {
                profile.shape(
                    (i as f64 + 0.5) / samples as f64 * scenario_secs,
                    scenario_secs,
                )
            })
            .sum::<f64>()
            / samples as f64;
        Ok(Self {
            profile,
            volume,
            time_scale,
            real_secs,
            scenario_secs,
            mean_real_rate,
            shape_mean,
        })
    }

    /// The run length in real time.
    pub fn real_duration(&self) -> Duration {
        Duration::from_secs_f64(self.real_secs)
    }

    /// Arrivals per real second at real time `t` seconds into the run.
    pub fn rate_at(&self, t: f64) -> f64 {
        let scenario_t = t * self.time_scale;
        self.mean_real_rate * self.profile.shape(scenario_t, self.scenario_secs) / self.shape_mean
    }

    /// The highest rate over the run (a bound for thinning, with a little headroom).
    pub fn peak_rate(&self) -> f64 {
        let samples = 20_000;
        let peak = (0..=samples)
            .map(|i| self.rate_at(i as f64 / samples as f64 * self.real_secs))
            .fold(0.0, f64::max);
        peak * 1.01
    }

    /// Expected number of arrivals over the run (the integral of the rate).
    pub fn expected_total(&self) -> f64 {
        let samples = 20_000;
        let dt = self.real_secs / samples as f64;
        (0..samples)
            .map(|i| self.rate_at((i as f64 + 0.5) * dt) * dt)
            .sum()
    }

    /// The arrival times (offsets from the run's start, ascending), drawn with `rng`.
    pub fn arrivals<R: rand::Rng>(&self, rng: R) -> Arrivals<'_, R> {
        Arrivals {
            schedule: self,
            rng,
            t: 0.0,
            bound: self.peak_rate(),
        }
    }
}

/// Iterator over a schedule's arrivals: Lewis–Shedler thinning of a Poisson process at
/// the peak rate, keeping each candidate with probability `rate(t) / peak`.
pub struct Arrivals<'a, R> {
    schedule: &'a Schedule,
    rng: R,
    t: f64,
    bound: f64,
}

impl<R: rand::Rng> Iterator for Arrivals<'_, R> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.bound <= 0.0 {
            return None;
        }
        loop {
            // 1 - U is in (0, 1], so the logarithm is finite.
            let u: f64 = 1.0 - self.rng.random::<f64>();
            self.t += -u.ln() / self.bound;
            if self.t >= self.schedule.real_secs {
                return None;
            }
            let keep = self.schedule.rate_at(self.t) / self.bound;
            if self.rng.random::<f64>() < keep {
                return Some(Duration::from_secs_f64(self.t));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn count_between(arrivals: &[Duration], from: f64, to: f64) -> usize {
        arrivals
            .iter()
            .filter(|a| (from..to).contains(&a.as_secs_f64()))
            .count()
    }

    #[test]
    fn constant_rate_gives_the_expected_count() {
        let s = Schedule::new(
            Profile::Constant,
            Volume::PerSecond(200.0),
            1.0,
            Some(Duration::from_secs(50)),
        )
        .unwrap();
        let n = s.arrivals(StdRng::seed_from_u64(1)).count() as f64;
        // 10,000 expected, sigma = 100: 5 % is 5 sigma.
        assert!((n - 10_000.0).abs() < 500.0, "{n}");
        assert!((s.expected_total() - 10_000.0).abs() < 1.0);
    }

    #[test]
    fn arrivals_are_ascending_and_inside_the_run() {
        let s = Schedule::new(
            Profile::Ramp,
            Volume::PerSecond(100.0),
            1.0,
            Some(Duration::from_secs(10)),
        )
        .unwrap();
        let a: Vec<_> = s.arrivals(StdRng::seed_from_u64(2)).collect();
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        assert!(a.iter().all(|d| d.as_secs_f64() < 10.0));
    }

    #[test]
    fn inter_arrival_times_look_exponential() {
        let s = Schedule::new(
            Profile::Constant,
            Volume::PerSecond(1000.0),
            1.0,
            Some(Duration::from_secs(20)),
        )
        .unwrap();
        let a: Vec<f64> = s
            .arrivals(StdRng::seed_from_u64(3))
            .map(|d| d.as_secs_f64())
            .collect();
        let gaps: Vec<f64> = a.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        // Exponential: mean 1 ms and coefficient of variation 1 (a metronome would give 0).
        assert!((mean - 0.001).abs() < 0.0001, "{mean}");
        let cv = var.sqrt() / mean;
        assert!((0.9..1.1).contains(&cv), "{cv}");
    }

    #[test]
    fn ramp_rises() {
        let s = Schedule::new(
            Profile::Ramp,
            Volume::PerSecond(100.0),
            1.0,
            Some(Duration::from_secs(100)),
        )
        .unwrap();
        let a: Vec<_> = s.arrivals(StdRng::seed_from_u64(4)).collect();
        let first = count_between(&a, 0.0, 25.0);
        let last = count_between(&a, 75.0, 100.0);
        // Expected 625 and 4375.
        assert!(first < 900 && last > 3800, "{first} {last}");
        assert!((s.rate_at(100.0) - 200.0).abs() < 1.0);
    }

    #[test]
    fn a_day_at_time_scale_1000_lasts_86_seconds_and_carries_the_volume() {
        let s = Schedule::new(Profile::Day, Volume::PerDay(100_000.0), 1000.0, None).unwrap();
        assert!((s.real_secs - 86.4).abs() < 1e-9);
        assert!((s.expected_total() - 100_000.0).abs() < 100.0);
        let a: Vec<_> = s.arrivals(StdRng::seed_from_u64(5)).collect();
        let n = a.len() as f64;
        assert!((n - 100_000.0).abs() < 2_000.0, "{n}");
        // One scenario hour is 3.6 real seconds: 20:00-21:00 is the busiest, 03:00-04:00 quiet.
        let hour = |h: f64| count_between(&a, h * 3.6, (h + 1.0) * 3.6);
        assert!(hour(20.0) > 4 * hour(3.0), "{} {}", hour(20.0), hour(3.0));
        assert!(hour(20.0) > hour(12.0));
        let peak_to_mean = s.peak_rate() / (100_000.0 / 86.4);
        assert!((1.8..3.0).contains(&peak_to_mean), "{peak_to_mean}");
    }

    #[test]
    fn time_scale_compresses_time_and_multiplies_rate() {
        let slow = Schedule::new(Profile::Day, Volume::PerDay(100_000.0), 1.0, None).unwrap();
        let fast = Schedule::new(Profile::Day, Volume::PerDay(100_000.0), 100.0, None).unwrap();
        assert!((slow.real_secs / fast.real_secs - 100.0).abs() < 1e-9);
        for h in [3.0, 12.0, 20.5] {
            let r_slow = slow.rate_at(h * 3600.0);
            let r_fast = fast.rate_at(h * 36.0);
            assert!((r_fast / r_slow - 100.0).abs() < 1e-6);
        }
    }

    #[test]
    fn outage_rises_within_an_hour_holds_and_decays() {
        let s = Schedule::new(Profile::Outage, Volume::PerDay(1_000_000.0), 3600.0, None).unwrap();
        // One scenario hour is one real second.
        assert!((s.real_secs - 48.0).abs() < 1e-9);
        let at = |h: f64| s.rate_at(h);
        assert!(at(0.0) < 0.1 * at(2.0));
        assert!(at(0.5) < at(1.0));
        assert!((at(1.0) - at(30.0)).abs() < 1e-6 * at(1.0));
        assert!(at(40.0) < 0.5 * at(30.0));
        assert!(at(47.9) < 0.1 * at(30.0));
        // Two days at a million a day.
        assert!((s.expected_total() - 2_000_000.0).abs() < 2_000.0);
    }

    #[test]
    fn duration_cuts_a_long_profile_short() {
        let s = Schedule::new(
            Profile::Outage,
            Volume::PerDay(86_400.0),
            1.0,
            Some(Duration::from_secs(10)),
        )
        .unwrap();
        assert!((s.real_secs - 10.0).abs() < 1e-9);
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert_eq!(
            Schedule::new(Profile::Day, Volume::PerDay(1.0), 0.0, None).unwrap_err(),
            ScheduleError::TimeScale(0.0)
        );
        assert_eq!(
            Schedule::new(Profile::Day, Volume::PerSecond(-1.0), 1.0, None).unwrap_err(),
            ScheduleError::Volume
        );
        assert_eq!(
            Schedule::new(
                Profile::Constant,
                Volume::PerSecond(1.0),
                1.0,
                Some(Duration::ZERO)
            )
            .unwrap_err(),
            ScheduleError::Duration
        );
    }
}
