//! The report of a presence run: what holding users online cost the API and Redis.

use std::fmt::Write;

use super::html::{kpis, mix_table, page_head, percentile_table};
use super::svg::escape;
use crate::presence::{PresenceMode, PresenceResult};

fn or_dash(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The page.
pub fn presence_page(r: &PresenceResult) -> String {
    let mut out = String::new();
    let mode = match r.mode {
        PresenceMode::Stream => "presence streams",
        PresenceMode::Heartbeat => "heartbeats",
    };
    page_head(
        &mut out,
        &format!("Surge presence: {} users on {mode}", r.users),
        r.verdict.pass,
        &r.verdict.line,
    );
    let api = r.api.as_ref();
    kpis(
        &mut out,
        &[
            ("held online", format!("{}/{}", r.held_at_end, r.users)),
            (
                "API cores per 10k users",
                or_dash(api.and_then(|a| a.cores_per_10k_users), 3),
            ),
            (
                "API MiB per 10k users",
                or_dash(api.and_then(|a| a.rss_per_10k_users_mib), 1),
            ),
            (
                "Redis commands per user per min",
                or_dash(
                    r.redis.as_ref().and_then(|x| x.commands_per_user_per_min),
                    2,
                ),
            ),
            (
                "HTTP requests per user per min",
                or_dash(r.http_requests_per_user_per_min, 2),
            ),
        ],
    );
    let _ = write!(
        out,
        "<p>Target <code>{}</code>. {} accounts made in {:.1} s; {} got online in {:.1} s; then a steady window of {:.1} s. Per-user figures divide by the users held at the window's end; memory is the API's resident set at the end minus its baseline (every account made and logged in, nobody online yet).</p>",
        escape(&r.target),
        r.users,
        r.accounts_secs,
        r.got_online,
        r.online_secs,
        r.window_secs,
    );
    out.push_str("<h2>Over the window</h2><table>");
    let mut rows: Vec<(&str, String)> = vec![
        (
            "held at start / end",
            format!("{} / {}", r.held_at_start, r.held_at_end),
        ),
        ("HTTP requests sent", r.http_requests.to_string()),
    ];
    if let Some(a) = api {
        rows.extend([
            ("API CPU seconds", format!("{:.2}", a.cpu_secs)),
            ("API cores busy", format!("{:.3}", a.cores)),
            (
                "API RSS start / baseline / end (MiB)",
                format!(
                    "{:.1} / {:.1} / {:.1}",
                    a.rss_start_mib, a.rss_baseline_mib, a.rss_end_mib
                ),
            ),
        ]);
    }
    if let Some(x) = &r.redis {
        rows.push(("Redis commands", x.commands.to_string()));
    }
    rows.push(("loadgen cores busy", or_dash(r.loadgen_cores, 3)));
    if let Some(c) = &r.online_check {
        rows.push((
            "the API says online (asked after the window)",
            format!(
                "{} of {} ({} not online, {} unanswered)",
                c.online, c.asked, c.not_online, c.failed
            ),
        ));
    }
    rows.extend([
        (
            "stream events / keep-alives",
            format!("{} / {}", r.stream_events, r.stream_keep_alives),
        ),
        ("streams that ended", r.stream_ends.to_string()),
        ("heartbeats that failed", r.heartbeat_failures.to_string()),
    ]);
    for (name, value) in rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(name),
            escape(&value)
        );
    }
    out.push_str("</table><h2>Latency</h2>");
    percentile_table(
        &mut out,
        &[
            ("going online", &r.online_latency),
            ("heartbeat (after the first)", &r.heartbeat_latency),
        ],
    );
    if let Some(x) = &r.redis {
        mix_table(&mut out, "Redis commands by name (window)", &x.by_command);
    }
    mix_table(&mut out, "Requests by status (whole run)", &r.statuses);
    if r.not_online_reasons.total() > 0 {
        mix_table(
            &mut out,
            "Why users did not get online",
            &r.not_online_reasons,
        );
    }
    out.push_str("</body></html>\n");
    out
}
