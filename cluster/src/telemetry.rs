//! Logging and metrics set-up, once per process.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Upper bounds (seconds) of every histogram without bounds of its own: from a millisecond
/// (an in-memory answer) to half a minute (a request near its timeout).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Histograms with bounds of their own (below); their recorders use these names, so that a
/// renamed metric cannot silently fall back to [`LATENCY_BUCKETS`].
pub const HASH_SECONDS: &str = "surge_api_hash_seconds";
pub const ROOM_JOIN_SECONDS: &str = "surge_api_room_join_seconds";

/// Bounds of histograms whose values sit in a narrower range than [`LATENCY_BUCKETS`]
/// resolves well: one Argon2id hash takes tens to hundreds of milliseconds on one core;
/// a join relays an SDP offer through the API to a shard and back.
const BUCKETS: &[(&str, &[f64])] = &[
    (
        HASH_SECONDS,
        &[
            0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0,
        ],
    ),
    (
        ROOM_JOIN_SECONDS,
        &[
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ],
    ),
];

/// The recorder's configuration: every histogram renders as cumulative `_bucket{le=…}`
/// series (never as a summary, whose quantiles cannot be added up across pods).
fn builder() -> Result<PrometheusBuilder, BuildError> {
    BUCKETS.iter().try_fold(
        PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS)?,
        |builder, (name, bounds)| {
            builder.set_buckets_for_metric(Matcher::Full((*name).into()), bounds)
        },
    )
}

/// Installs the process-wide Prometheus recorder (idempotent: tests start many apps in
/// one process) and returns the handle `/metrics` renders.
pub fn install_metrics() -> Option<PrometheusHandle> {
    METRICS
        .get_or_init(
            || match builder().and_then(PrometheusBuilder::install_recorder) {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(%e, "metrics recorder not installed");
                    None
                }
            },
        )
        .clone()
}

/// The installed recorder's handle, if any.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    METRICS.get().cloned().flatten()
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Sets up `tracing` from `RUST_LOG` (default `info`). Safe to call twice.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,str0m=warn,tower_http=info"));
    // Colour codes only for a person at a terminal: a log file or collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Histograms render as buckets, which Prometheus can sum across pods; a summary's
    /// quantiles cannot be. A local recorder, so the global one stays untouched.
    #[test]
    fn histograms_render_as_buckets_not_summaries() {
        let recorder = builder()
            .expect("static bounds are not empty")
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("surge_api_hash_seconds").record(0.04);
            metrics::histogram!("surge_api_room_join_seconds").record(0.2);
            metrics::histogram!("test_unlisted_seconds").record(0.003);
        });
        let text = handle.render();
        assert!(
            text.contains("# TYPE surge_api_hash_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("surge_api_hash_seconds_bucket{le=\"0.05\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("surge_api_hash_seconds_bucket{le=\"0.025\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("surge_api_room_join_seconds_bucket{le=\"0.25\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("test_unlisted_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("test_unlisted_seconds_bucket{le=\"+Inf\"} 1"),
            "{text}"
        );
        assert!(!text.contains("quantile="), "no summaries: {text}");
    }
}
