//! The calls report's section on network changes (`--network-change-after`).

use std::fmt::Write;

use super::html::{kpis, percentile_table};
use super::svg::escape;
use crate::calls::CallsResult;
use crate::network_change::{BAR, NetworkChanges, WINDOW};

/// The section, when the run changed networks.
pub(super) fn section(out: &mut String, r: &CallsResult) {
    let Some(n) = &r.network_changes else {
        return;
    };
    let _ = write!(
        out,
        "<h2>Network changes</h2><p>Participants moved to a new local socket {:.1} s after their join (share {}) and restarted ICE on the same session (a full rejoin through the API when the restart failed). Media again: from the restart to the end of the silence it caused, from the participants' packet clocks. The bar: within {} s, the same participant id, and no room mate sees the mover leave or join; a move is judged {} s after it.</p>",
        n.after_secs,
        n.share,
        BAR.as_secs(),
        WINDOW.as_secs(),
    );
    kpis(out, &headline(n));
    percentile_table(
        out,
        &[
            ("restart → the mover receives again", &n.mover_back),
            (
                "restart → room mates receive the mover again",
                &n.others_back,
            ),
        ],
    );
    out.push_str("<table><tr><th>room</th><th>mover</th><th>restart (PATCH) ms</th><th>receives again ms</th><th>room mates receive it again ms</th><th>same id</th><th>fell back</th></tr>");
    for p in &r.participants {
        let Some(m) = p.moved.as_ref().filter(|m| !m.skipped) else {
            continue;
        };
        let mates: Vec<String> = r
            .participants
            .iter()
            .filter(|o| o.room == p.room)
            .flat_map(|o| &o.observed)
            .filter(|o| o.expected && m.id.as_deref() == Some(o.mover.as_str()))
            .map(|o| {
                o.back_ms
                    .map_or("not back".to_owned(), |ms| format!("{ms:.0}"))
            })
            .collect();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.room,
            escape(&p.role),
            p.index,
            m.restart_ms.map_or("-".to_owned(), |ms| format!("{ms:.0}")),
            m.back_ms
                .map_or("not back".to_owned(), |ms| format!("{ms:.0}")),
            escape(&mates.join(" ")),
            if m.same_id { "yes" } else { "no" },
            escape(m.fell_back.as_deref().unwrap_or("-")),
        );
    }
    out.push_str("</table>");
}

fn headline(n: &NetworkChanges) -> [(&'static str, String); 6] {
    [
        ("moves", n.moves.to_string()),
        (
            "mover media again p99",
            format!("{:.0} ms", n.mover_back.p99_ms),
        ),
        (
            "room mates media again p99",
            format!("{:.0} ms", n.others_back.p99_ms),
        ),
        ("fell back to a rejoin", n.fell_back.to_string()),
        ("left/joined seen", n.membership_events.to_string()),
        (
            "not back / over the bar",
            format!("{} / {}", n.not_back, n.over_bar),
        ),
    ]
}
