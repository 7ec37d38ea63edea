//! The page of an outage run: the headline numbers of the three parts, the users online over
//! time, then the signup flood's and the calls' own sections.

use std::fmt::Write;

use super::html::{calls_sections, kpis, mix_table, page_head, percentile_table, signup_sections};
use super::svg::{self, Series, escape};
use crate::outage::OutageResult;

/// The report of an outage run.
pub fn outage_page(r: &OutageResult) -> String {
    let mut out = String::new();
    page_head(
        &mut out,
        "Surge under a rival's outage: signups, logins, presence and calls",
        r.verdict.pass,
        &r.verdict.line,
    );
    let s = &r.signup;
    let o = &s.outcomes;
    let attempts = s.status_mix.total().max(1) as f64;
    let mut items = vec![
        (
            "signups/s offered (mean)",
            format!("{:.1}", o.offered as f64 / s.scheduled_secs.max(1e-9)),
        ),
        (
            "signups/s created (peak)",
            format!("{:.1} ({:.0})", s.created_per_s, s.created_per_s_peak),
        ),
        (
            "attempts answered 429",
            format!("{:.1}%", s.status_mix.get("429") as f64 / attempts * 100.0),
        ),
        ("signup p99", format!("{:.0} ms", s.latency.accepted.p99_ms)),
        (
            "login p99",
            format!("{:.0} ms", s.follow_ups.login_latency.accepted.p99_ms),
        ),
        ("online (peak)", r.online.peak_online.to_string()),
    ];
    if let Some(c) = &r.calls {
        items.push((
            "call join p50 (first video)",
            format!("{:.0} ms", c.first_video.p50_ms),
        ));
        items.push((
            "packets received/s",
            format!("{:.0}", c.received_packets_per_s),
        ));
    }
    kpis(&mut out, &items);
    let _ = write!(
        out,
        "<p>Target <code>{}</code>. The flood ran {:.0} s of the <code>{}</code> profile at {}×; {} new users logged in and {} of them held a presence stream; {}.</p>",
        escape(&r.target),
        s.scheduled_secs,
        escape(&s.profile),
        s.time_scale,
        r.online.logged_in,
        r.online.held,
        match (r.calls_started_secs, &r.calls_error) {
            (Some(t), None) => format!(
                "the calls ({} rooms of {}) started {t:.0} s in, once enough new users had logged in",
                r.rooms, r.room_size
            ),
            (_, Some(e)) => escape(e),
            (None, None) => "no calls".to_owned(),
        }
    );
    online_section(&mut out, r);
    out.push_str("<h2>Signups and logins</h2>");
    signup_sections(&mut out, s);
    if let Some(c) = &r.calls {
        out.push_str("<h2>Calls</h2>");
        calls_sections(&mut out, c);
    }
    out.push_str("</body></html>\n");
    out
}

fn online_section(out: &mut String, r: &OutageResult) {
    let t = &r.online.timeline;
    let calls_offset = r.calls_started_secs.unwrap_or(0.0);
    let mut series = vec![
        Series {
            name: "logged in",
            color: "#888",
            points: t.iter().map(|p| (p.t, Some(p.logged_in as f64))).collect(),
        },
        Series {
            name: "online (stream open)",
            color: "#3a8d4f",
            points: t.iter().map(|p| (p.t, Some(p.online as f64))).collect(),
        },
    ];
    if let Some(c) = &r.calls {
        series.push(Series {
            name: "in calls (connected)",
            color: "#3a6fb5",
            points: c
                .timeline
                .iter()
                .map(|p| (p.t + calls_offset, Some(p.connected as f64)))
                .collect(),
        });
    }
    out.push_str(&svg::line_chart(
        "New users online over time",
        "seconds into the run",
        "users",
        &series,
    ));
    out.push_str("<h2>Presence streams</h2>");
    percentile_table(
        out,
        &[
            ("ticket (2xx)", &r.online.ticket_latency),
            (
                "ticket sent → stream open, retries included",
                &r.online.stream_open,
            ),
        ],
    );
    let _ = write!(
        out,
        "<p>{} users held a stream, {} never got one online; {} at the end, {} at the peak.</p>",
        r.online.held, r.online.never_online, r.online.online_at_end, r.online.peak_online
    );
    mix_table(out, "Ticket statuses", &r.online.ticket_status);
    mix_table(out, "Stream statuses", &r.online.stream_status);
    if r.online.drops.total() > 0 {
        mix_table(out, "Streams that ended early", &r.online.drops);
    }
    if r.online.error_codes.total() > 0 {
        mix_table(out, "Ticket and stream error codes", &r.online.error_codes);
    }
    mix_table(out, "Events received on the streams", &r.online.events);
}
