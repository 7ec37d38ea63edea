//! Measurement building blocks: latency histograms (HdrHistogram), percentile summaries,
//! and a timeline of fixed-width buckets for "what happened when".

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies in microseconds, 3 significant digits, from 1 µs up to an hour (longer values
/// are clamped to the top rather than lost).
#[derive(Debug, Clone)]
pub struct LatencyHistogram(Histogram<u64>);

const MAX_MICROS: u64 = 3_600_000_000;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        // The bounds are constants that `new_with_bounds` accepts (low >= 1, high >= 2 * low,
        // sigfig <= 5), so this cannot fail.
        #[allow(clippy::expect_used)]
        let h = Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid constant bounds");
        Self(h)
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS);
        self.0.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    pub fn add(&mut self, other: &LatencyHistogram) {
        // Same bounds on both sides, so adding cannot overflow the range.
        let _ = self.0.add(&other.0);
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value at `quantile` (0..=1) in milliseconds.
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        self.0.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn percentiles(&self) -> Percentiles {
        if self.0.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: self.0.len(),
            mean_ms: round3(self.0.mean() / 1000.0),
            p50_ms: round3(self.quantile_ms(0.50)),
            p90_ms: round3(self.quantile_ms(0.90)),
            p99_ms: round3(self.quantile_ms(0.99)),
            p999_ms: round3(self.quantile_ms(0.999)),
            max_ms: round3(self.0.max() as f64 / 1000.0),
        }
    }

    /// Counts per bucket of `width_ms`, from 0 to the maximum: for distribution charts.
    pub fn distribution(&self, buckets: usize) -> Vec<(f64, u64)> {
        if self.0.is_empty() || buckets == 0 {
            return Vec::new();
        }
        let max = self.0.max().max(1);
        let width = max.div_ceil(buckets as u64).max(1);
        let mut out: Vec<(f64, u64)> = (0..buckets)
            .map(|i| ((i as u64 * width) as f64 / 1000.0, 0))
            .collect();
        for v in self.0.iter_recorded() {
            let i = ((v.value_iterated_to() / width) as usize).min(buckets - 1);
            out[i].1 += v.count_at_value();
        }
        out
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A latency summary in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// What one HTTP attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Status(u16),
    /// No response within the request timeout.
    Timeout,
    /// Connection refused, reset, or another transport failure.
    Transport,
}

impl AttemptOutcome {
    /// The key used in status mixes: `"201"`, `"timeout"`, `"transport_error"`.
    pub fn key(self) -> String {
        match self {
            AttemptOutcome::Status(s) => s.to_string(),
            AttemptOutcome::Timeout => "timeout".to_owned(),
            AttemptOutcome::Transport => "transport_error".to_owned(),
        }
    }

    pub fn class(self) -> OutcomeClass {
        match self {
            AttemptOutcome::Status(s) if (200..300).contains(&s) => OutcomeClass::Accepted,
            AttemptOutcome::Status(429 | 503) => OutcomeClass::Shed,
            AttemptOutcome::Status(s) if (400..500).contains(&s) => OutcomeClass::Refused,
            AttemptOutcome::Status(_) => OutcomeClass::Failed,
            AttemptOutcome::Timeout | AttemptOutcome::Transport => OutcomeClass::Failed,
        }
    }
}

/// The four things a person reading a report cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeClass {
    /// 2xx.
    Accepted,
    /// 429 or 503: the server shed load, honestly and cheaply.
    Shed,
    /// Another 4xx: the request itself was refused (duplicate, invalid).
    Refused,
    /// 5xx (other than 503), timeouts, transport errors: the server broke its promise.
    Failed,
}

/// One bucket of a timeline, as reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Start of the bucket, seconds since the run started.
    pub t: f64,
    /// Requests scheduled in this bucket, per second.
    pub offered_per_s: f64,
    /// Responses that completed in this bucket, per second, by class.
    pub accepted_per_s: f64,
    pub shed_per_s: f64,
    pub refused_per_s: f64,
    pub failed_per_s: f64,
    /// Latency of accepted / shed attempts scheduled in this bucket (ms).
    pub accepted_p50_ms: Option<f64>,
    pub accepted_p99_ms: Option<f64>,
    pub shed_p99_ms: Option<f64>,
}

#[derive(Debug, Default, Clone)]
struct Bucket {
    offered: u64,
    accepted: u64,
    shed: u64,
    refused: u64,
    failed: u64,
    accepted_latency: Option<LatencyHistogram>,
    shed_latency: Option<LatencyHistogram>,
}

/// Counts and latencies in buckets of a fixed width over the run.
#[derive(Debug, Clone)]
pub struct Timeline {
    width: Duration,
    buckets: Vec<Bucket>,
}

impl Timeline {
    /// Buckets about `run / 300` wide, at least one second, so charts stay readable and
    /// a day-long run does not hold 86,400 histograms.
    pub fn for_run(run: Duration) -> Self {
        let width = Duration::from_secs((run.as_secs() / 300).max(1));
        Self::new(width)
    }

    pub fn new(width: Duration) -> Self {
        Self {
            width: width.max(Duration::from_millis(1)),
            buckets: Vec::new(),
        }
    }

    pub fn width(&self) -> Duration {
        self.width
    }

    fn bucket(&mut self, at: Duration) -> &mut Bucket {
        let i = (at.as_nanos() / self.width.as_nanos()) as usize;
        // Cap the index so a wildly late response cannot allocate without bound.
        let i = i.min(1_000_000);
        if self.buckets.len() <= i {
            self.buckets.resize_with(i + 1, Bucket::default);
        }
        &mut self.buckets[i]
    }

    /// A request was scheduled `at` into the run.
    pub fn offered(&mut self, at: Duration) {
        self.bucket(at).offered += 1;
    }

    /// An attempt scheduled at `scheduled` completed at `completed` with `class`.
    pub fn completed(
        &mut self,
        scheduled: Duration,
        completed: Duration,
        class: OutcomeClass,
        latency: Duration,
    ) {
        let b = self.bucket(completed);
        match class {
            OutcomeClass::Accepted => b.accepted += 1,
            OutcomeClass::Shed => b.shed += 1,
            OutcomeClass::Refused => b.refused += 1,
            OutcomeClass::Failed => b.failed += 1,
        }
        let b = self.bucket(scheduled);
        match class {
            OutcomeClass::Accepted => b
                .accepted_latency
                .get_or_insert_with(LatencyHistogram::new)
                .record(latency),
            OutcomeClass::Shed => b
                .shed_latency
                .get_or_insert_with(LatencyHistogram::new)
                .record(latency),
            _ => {}
        }
    }

    pub fn points(&self) -> Vec<TimelinePoint> {
        let w = self.width.as_secs_f64();
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, b)| TimelinePoint {
                t: i as f64 * w,
                offered_per_s: b.offered as f64 / w,
                accepted_per_s: b.accepted as f64 / w,
                shed_per_s: b.shed as f64 / w,
                refused_per_s: b.refused as f64 / w,
                failed_per_s: b.failed as f64 / w,
                accepted_p50_ms: b.accepted_latency.as_ref().map(|h| h.quantile_ms(0.5)),
                accepted_p99_ms: b.accepted_latency.as_ref().map(|h| h.quantile_ms(0.99)),
                shed_p99_ms: b.shed_latency.as_ref().map(|h| h.quantile_ms(0.99)),
            })
            .collect()
    }
}

/// Counts by key, sorted for stable output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Mix(pub BTreeMap<String, u64>);

impl Mix {
    pub fn add(&mut self, key: impl Into<String>) {
        *self.0.entry(key.into()).or_default() += 1;
    }

    pub fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = LatencyHistogram::new();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let p = h.percentiles();
        assert_eq!(p.count, 1000);
        // 3 significant digits: within 0.1 %.
        assert!((p.p50_ms - 500.0).abs() <= 1.0, "{p:?}");
        assert!((p.p90_ms - 900.0).abs() <= 1.0, "{p:?}");
        assert!((p.p99_ms - 990.0).abs() <= 1.0, "{p:?}");
        assert!((p.p999_ms - 999.0).abs() <= 1.0, "{p:?}");
        assert!((p.max_ms - 1000.0).abs() <= 1.0, "{p:?}");
    }

    #[test]
    fn empty_histograms_report_zeros_and_huge_values_are_clamped() {
        let mut h = LatencyHistogram::new();
        assert_eq!(h.percentiles(), Percentiles::default());
        h.record(Duration::from_secs(100_000));
        h.record(Duration::ZERO);
        assert_eq!(h.len(), 2);
        assert!(h.percentiles().max_ms >= 3_599_000.0);
    }

    #[test]
    fn histograms_add() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record(Duration::from_millis(1));
        b.record(Duration::from_millis(3));
        a.add(&b);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn distribution_puts_everything_somewhere() {
        let mut h = LatencyHistogram::new();
        for ms in [10, 20, 20, 30, 200] {
            h.record(Duration::from_millis(ms));
        }
        let d = h.distribution(10);
        assert_eq!(d.len(), 10);
        assert_eq!(d.iter().map(|(_, n)| n).sum::<u64>(), 5);
        assert_eq!((d[0].1, d[1].1, d[9].1), (1, 3, 1));
    }

    #[test]
    fn outcome_classes() {
        assert_eq!(AttemptOutcome::Status(201).class(), OutcomeClass::Accepted);
        assert_eq!(AttemptOutcome::Status(429).class(), OutcomeClass::Shed);
        assert_eq!(AttemptOutcome::Status(503).class(), OutcomeClass::Shed);
        assert_eq!(AttemptOutcome::Status(409).class(), OutcomeClass::Refused);
        assert_eq!(AttemptOutcome::Status(500).class(), OutcomeClass::Failed);
        assert_eq!(AttemptOutcome::Timeout.class(), OutcomeClass::Failed);
        assert_eq!(AttemptOutcome::Timeout.key(), "timeout");
    }

    #[test]
    fn timeline_buckets_rates_and_latencies() {
        let mut t = Timeline::new(Duration::from_secs(2));
        for i in 0..10 {
            t.offered(Duration::from_millis(i * 100));
        }
        t.completed(
            Duration::from_millis(100),
            Duration::from_millis(2500),
            OutcomeClass::Accepted,
            Duration::from_millis(2400),
        );
        t.completed(
            Duration::from_millis(200),
            Duration::from_millis(300),
            OutcomeClass::Shed,
            Duration::from_millis(100),
        );
        let p = t.points();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].offered_per_s, 5.0);
        assert_eq!(p[0].shed_per_s, 0.5);
        assert_eq!(p[1].accepted_per_s, 0.5);
        assert!(
            p[0].accepted_p99_ms
                .is_some_and(|v| (v - 2400.0).abs() < 3.0)
        );
        assert_eq!(p[1].t, 2.0);
        assert_eq!(
            Timeline::for_run(Duration::from_secs(86_400)).width(),
            Duration::from_secs(288)
        );
    }
}
