//! The HTML pages: a verdict banner, the headline numbers, the charts and the tables.

use std::fmt::Write;

use super::svg::{self, Series, escape};
use crate::signup::{EndpointLatency, SignupResult};
use crate::stats::{Mix, Percentiles};

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:800px;color:#222}\
h1{font-size:22px}h2{font-size:17px;margin-top:28px}\
.verdict{padding:12px 16px;border-radius:6px;font-weight:600}\
.pass{background:#e4f6e8;border:1px solid #3a8d4f}.fail{background:#fbe6e6;border:1px solid #c0392b}\
table{border-collapse:collapse;margin:8px 0}td,th{border-bottom:1px solid #ddd;padding:3px 10px;text-align:right}\
th:first-child,td:first-child{text-align:left}.chart{display:block;margin:12px 0;max-width:100%;height:auto}\
.kpi{display:flex;gap:12px;flex-wrap:wrap}.kpi div{border:1px solid #ddd;border-radius:6px;padding:8px 12px}\
.kpi b{display:block;font-size:20px}";

/// Opens a page with its title and verdict.
pub(super) fn page_head(out: &mut String, title: &str, pass: bool, verdict: &str) {
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1><p class=\"verdict {c}\">{v}</p>",
        t = escape(title),
        c = if pass { "pass" } else { "fail" },
        v = escape(verdict)
    );
}

pub(super) fn kpis(out: &mut String, items: &[(&str, String)]) {
    out.push_str("<div class=\"kpi\">");
    for (label, value) in items {
        let _ = write!(out, "<div><b>{}</b>{}</div>", escape(value), escape(label));
    }
    out.push_str("</div>");
}

pub(super) fn percentile_table(out: &mut String, rows: &[(&str, &Percentiles)]) {
    out.push_str("<table><tr><th></th><th>count</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>");
    for (name, p) in rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            escape(name),
            p.count,
            p.p50_ms,
            p.p90_ms,
            p.p99_ms,
            p.p999_ms,
            p.max_ms
        );
    }
    out.push_str("</table>");
}

fn status_color(key: &str) -> &'static str {
    match key.as_bytes().first() {
        Some(b'2') => "#3a8d4f",
        _ if key == "429" || key == "503" => "#e0a030",
        Some(b'4') => "#6a7fb5",
        _ => "#c0392b",
    }
}

pub(super) fn mix_chart(title: &str, mix: &Mix) -> String {
    let bars: Vec<(String, f64, &str)> = mix
        .0
        .iter()
        .map(|(k, v)| (k.clone(), *v as f64, status_color(k)))
        .collect();
    svg::bar_chart(title, &bars)
}

fn endpoint_rows<'a>(name: &'a str, l: &'a EndpointLatency) -> [(String, &'a Percentiles); 3] {
    [
        (format!("{name}: accepted (2xx)"), &l.accepted),
        (format!("{name}: rejected (429/503)"), &l.rejected),
        (format!("{name}: refused (409/422…)"), &l.refused),
    ]
}

/// The report of a signup run.
pub fn signup_page(r: &SignupResult) -> String {
    let mut out = String::new();
    page_head(
        &mut out,
        &format!("Surge signup load: {} profile", r.profile),
        r.verdict.pass,
        &r.verdict.line,
    );
    signup_sections(&mut out, r);
    out.push_str("</body></html>\n");
    out
}

/// Everything of a signup run's page below its verdict.
pub(super) fn signup_sections(out: &mut String, r: &SignupResult) {
    let o = &r.outcomes;
    let created = o.created_first_try + o.created_after_retry;
    kpis(
        out,
        &[
            ("offered", o.offered.to_string()),
            ("created", created.to_string()),
            (
                "created/s (peak)",
                format!("{:.1} ({:.0})", r.created_per_s, r.created_per_s_peak),
            ),
            ("attempts shed", format!("{:.1}%", r.shed_share * 100.0)),
            (
                "accepted p99",
                format!("{:.0} ms", r.latency.accepted.p99_ms),
            ),
            ("shed p99", format!("{:.0} ms", r.latency.rejected.p99_ms)),
        ],
    );
    let _ = write!(
        out,
        "<p>Target <code>{}</code>, time scale {}×, scheduled {:.1} s (expected {} arrivals), ran {:.1} s. Latency is measured from each request's scheduled send time. Run tag <code>{}</code>.</p>",
        escape(&r.target),
        r.time_scale,
        r.scheduled_secs,
        r.expected_arrivals,
        r.elapsed_secs,
        escape(&r.run_tag)
    );
    let t = &r.timeline;
    out.push_str(&svg::line_chart(
        "Throughput over time",
        &format!(
            "seconds into the run (buckets of {:.0} s)",
            r.timeline_bucket_secs
        ),
        "requests/s",
        &[
            Series {
                name: "offered",
                color: "#888",
                points: t.iter().map(|p| (p.t, Some(p.offered_per_s))).collect(),
            },
            Series {
                name: "created (2xx)",
                color: "#3a8d4f",
                points: t.iter().map(|p| (p.t, Some(p.accepted_per_s))).collect(),
            },
            Series {
                name: "shed (429/503)",
                color: "#e0a030",
                points: t.iter().map(|p| (p.t, Some(p.shed_per_s))).collect(),
            },
            Series {
                name: "failed",
                color: "#c0392b",
                points: t.iter().map(|p| (p.t, Some(p.failed_per_s))).collect(),
            },
        ],
    ));
    out.push_str(&svg::line_chart(
        "Latency over time (by scheduled send time)",
        "seconds into the run",
        "ms",
        &[
            Series {
                name: "accepted p50",
                color: "#7fc08f",
                points: t.iter().map(|p| (p.t, p.accepted_p50_ms)).collect(),
            },
            Series {
                name: "accepted p99",
                color: "#1f5f30",
                points: t.iter().map(|p| (p.t, p.accepted_p99_ms)).collect(),
            },
            Series {
                name: "shed p99",
                color: "#e0a030",
                points: t.iter().map(|p| (p.t, p.shed_p99_ms)).collect(),
            },
        ],
    ));
    out.push_str(&mix_chart("Status mix (every attempt)", &r.status_mix));
    out.push_str("<h2>Latency percentiles</h2>");
    let mut rows: Vec<(String, &Percentiles)> = endpoint_rows("signup", &r.latency).into();
    rows.push((
        "signup: created, incl. retries".to_owned(),
        &r.eventual_created,
    ));
    if r.follow_ups.login_status.total() > 0 {
        rows.extend(endpoint_rows("login", &r.follow_ups.login_latency));
    }
    if r.follow_ups.heartbeat_status.total() > 0 {
        rows.extend(endpoint_rows("heartbeat", &r.follow_ups.heartbeat_latency));
    }
    rows.push(("loadgen send lag".to_owned(), &r.send_lag));
    let rows: Vec<(&str, &Percentiles)> = rows.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    percentile_table(out, &rows);
    out.push_str("<h2>Outcomes</h2><table>");
    for (name, v) in [
        ("created on the first try", o.created_first_try),
        ("created after retrying", o.created_after_retry),
        ("gave up while shed", o.gave_up),
        (
            "refused as expected (duplicate/invalid)",
            o.refused_as_expected,
        ),
        ("unexpected answers", o.unexpected),
        ("failed (5xx, timeout, transport)", o.failed),
        ("dropped by the loadgen (overloaded)", o.dropped_by_loadgen),
        ("unfinished at the drain timeout", o.unfinished),
        ("HTTP attempts", o.attempts),
    ] {
        let _ = write!(out, "<tr><td>{}</td><td>{v}</td></tr>", escape(name));
    }
    out.push_str("</table>");
    mix_table(out, "Requests by intent", &o.by_intent);
    mix_table(out, "Error codes", &r.error_codes);
    if r.follow_ups.login_status.total() > 0 {
        mix_table(out, "Login statuses", &r.follow_ups.login_status);
    }
    if r.follow_ups.heartbeat_status.total() > 0 {
        mix_table(out, "Heartbeat statuses", &r.follow_ups.heartbeat_status);
    }
}

pub(super) fn mix_table(out: &mut String, title: &str, mix: &Mix) {
    let _ = write!(out, "<h2>{}</h2><table>", escape(title));
    for (k, v) in &mix.0 {
        let _ = write!(out, "<tr><td>{}</td><td>{v}</td></tr>", escape(k));
    }
    out.push_str("</table>");
}

/// The report of a calls run.
pub fn calls_page(r: &crate::calls::CallsResult) -> String {
    let mut out = String::new();
    page_head(
        &mut out,
        &format!(
            "Surge calls load: {} rooms × ({} publishers + {} subscribers)",
            r.rooms, r.publishers, r.subscribers
        ),
        r.verdict.pass,
        &r.verdict.line,
    );
    calls_sections(&mut out, r);
    out.push_str("</body></html>\n");
    out
}

/// Everything of a calls run's page below its verdict.
pub(super) fn calls_sections(out: &mut String, r: &crate::calls::CallsResult) {
    let joined = r.participants.iter().filter(|p| p.joined).count();
    kpis(
        out,
        &[
            ("joined", format!("{joined}/{}", r.participants.len())),
            ("first video p50", format!("{:.0} ms", r.first_video.p50_ms)),
            ("first video p99", format!("{:.0} ms", r.first_video.p99_ms)),
            ("first media p50", format!("{:.0} ms", r.join.p50_ms)),
            ("first media p99", format!("{:.0} ms", r.join.p99_ms)),
            ("freezes", r.freezes.to_string()),
            (
                "audio shortfall",
                format!("{:.2}%", r.audio_loss_mean * 100.0),
            ),
            ("packets rx/s", format!("{:.0}", r.received_packets_per_s)),
        ],
    );
    let t = &r.timeline;
    out.push_str(&svg::line_chart(
        "Received media over time (all participants)",
        "seconds into the run",
        "Mbit/s",
        &[
            Series {
                name: "video",
                color: "#3a6fb5",
                points: t
                    .iter()
                    .map(|p| (p.t, Some(p.video_rx_bps / 1e6)))
                    .collect(),
            },
            Series {
                name: "audio",
                color: "#3a8d4f",
                points: t
                    .iter()
                    .map(|p| (p.t, Some(p.audio_rx_bps / 1e6)))
                    .collect(),
            },
        ],
    ));
    out.push_str(&svg::line_chart(
        "Connected participants and frozen video tracks",
        "seconds into the run",
        "count",
        &[
            Series {
                name: "connected",
                color: "#3a8d4f",
                points: t.iter().map(|p| (p.t, Some(p.connected as f64))).collect(),
            },
            Series {
                name: "frozen tracks",
                color: "#c0392b",
                points: t
                    .iter()
                    .map(|p| (p.t, Some(p.frozen_tracks as f64)))
                    .collect(),
            },
        ],
    ));
    out.push_str(&svg::histogram_chart(
        "Join time distribution (join → first video frame of every remote track)",
        "ms",
        &r.first_video_distribution,
        "#3a6fb5",
    ));
    let layer_bars: Vec<(String, f64, &str)> = r
        .layer_mix
        .0
        .iter()
        .map(|(k, v)| {
            let color = match k.as_str() {
                "f" => "#1f5f30",
                "h" => "#3a8d4f",
                "q" => "#7fc08f",
                _ => "#c0392b",
            };
            (format!("layer {k}"), *v as f64, color)
        })
        .collect();
    out.push_str(&svg::bar_chart(
        "Layer each subscriber's video tracks ended on",
        &layer_bars,
    ));
    out.push_str("<h2>Join and rejoin times</h2>");
    percentile_table(
        out,
        &[
            (
                "join → first video frame of every remote track",
                &r.first_video,
            ),
            ("join → first media (any track)", &r.join),
            ("rejoin", &r.rejoin),
        ],
    );
    out.push_str(&format!(
        "<h2>Where a join's time goes</h2><p>Participant-side clocks. A remote track's clock starts at the join, or when the track was published if that was later ({} of {} remote tracks: those arrive by renegotiating a running session).</p>",
        r.join_phases.published_later, r.join_phases.tracks
    ));
    let rows: Vec<(&str, &crate::stats::Percentiles)> = r
        .join_phases
        .rows
        .iter()
        .map(|(n, p)| (n.as_str(), p))
        .collect();
    percentile_table(out, &rows);
    super::network_change::section(out, r);
    out.push_str("<h2>Per participant</h2><table><tr><th>room</th><th>role</th><th>cap</th><th>first media ms</th><th>first video of every track ms</th><th>video tracks</th><th>layers (last)</th><th>video kbit/s (last s)</th><th>freezes</th><th>audio shortfall</th><th>rejoins</th></tr>");
    for p in &r.participants {
        let layers: Vec<String> = p
            .video
            .iter()
            .map(|t| t.layer.clone().unwrap_or_else(|| "-".into()))
            .collect();
        let kbps: Vec<String> = p
            .video
            .iter()
            .map(|t| format!("{:.0}", t.last_bps as f64 / 1000.0))
            .collect();
        let loss = p
            .audio
            .iter()
            .filter_map(|t| t.loss_estimate)
            .fold(0.0, f64::max);
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}%</td><td>{}</td></tr>",
            p.room,
            escape(&p.role),
            p.index,
            p.cap_bps
                .map_or("-".to_owned(), |c| format!("{} kbit/s", c / 1000)),
            p.join_ms.map_or_else(
                || escape(p.error.as_deref().unwrap_or("-")),
                |ms| format!("{ms:.0}")
            ),
            p.breakdown
                .as_ref()
                .and_then(|b| b.all_video_ms)
                .map_or("-".to_owned(), |ms| format!("{ms:.0}")),
            p.video.iter().filter(|t| t.packets > 0).count(),
            escape(&layers.join(" ")),
            kbps.join(" "),
            p.video.iter().map(|t| t.freezes).sum::<u32>(),
            loss * 100.0,
            p.rejoins,
        );
    }
    out.push_str("</table>");
}
