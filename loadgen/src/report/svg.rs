//! Tiny inline-SVG charts: no scripts, no external files, so `report.html` opens anywhere
//! and can be mailed around.

use std::fmt::Write;

const W: f64 = 760.0;
const H: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 44.0;

/// A named line on a chart.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    /// (x, y) points; `None` y values break the line.
    pub points: Vec<(f64, Option<f64>)>,
}

/// Escapes text for XML content and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A "nice" step (1, 2 or 5 × 10^k) giving about `ticks` intervals over `span`.
fn nice_step(span: f64, ticks: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / ticks;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn open(out: &mut String, title: &str) {
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}" class="chart"><rect width="{W}" height="{H}" fill="#fff"/><text x="{LEFT}" y="20" font-size="14" font-weight="bold">{t}</text>"##,
        t = escape(title)
    );
}

/// A line chart with a shared y axis starting at zero.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> String {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let x_max = xs.fold(0.0, f64::max).max(1e-9);
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let y_step = nice_step(y_max.max(1e-9), 5.0);
    let y_top = (y_max / y_step).ceil().max(1.0) * y_step;
    let x_step = nice_step(x_max, 8.0);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + x / x_max * pw;
    let sy = |y: f64| TOP + ph - (y / y_top).clamp(0.0, 1.0) * ph;

    let mut out = String::new();
    open(&mut out, title);
    // Grid and axes.
    let mut y = 0.0;
    while y <= y_top + y_step * 0.01 {
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{x2}" y1="{py:.1}" y2="{py:.1}" stroke="#e3e3e3"/><text x="{tx}" y="{ty:.1}" font-size="11" text-anchor="end">{label}</text>"##,
            x2 = W - RIGHT,
            py = sy(y),
            tx = LEFT - 6.0,
            ty = sy(y) + 4.0,
            label = fmt_tick(y)
        );
        y += y_step;
    }
    let mut x = 0.0;
    while x <= x_max + x_step * 0.01 {
        let _ = write!(
            out,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{y1}" y2="{y2}" stroke="#999"/><text x="{px:.1}" y="{ty}" font-size="11" text-anchor="middle">{label}</text>"##,
            px = sx(x),
            y1 = TOP + ph,
            y2 = TOP + ph + 4.0,
            ty = TOP + ph + 16.0,
            label = fmt_tick(x)
        );
        x += x_step;
    }
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" x2="{x2}" y1="{y}" y2="{y}" stroke="#333"/><line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{y}" stroke="#333"/><text x="{cx}" y="{ly}" font-size="12" text-anchor="middle">{xl}</text><text x="14" y="{cy}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {cy})">{yl}</text>"##,
        x2 = W - RIGHT,
        y = TOP + ph,
        cx = LEFT + pw / 2.0,
        ly = H - 6.0,
        cy = TOP + ph / 2.0,
        xl = escape(x_label),
        yl = escape(y_label)
    );
    // Lines, broken where a value is missing.
    for s in series {
        let mut d = String::new();
        let mut pen_down = false;
        for &(x, y) in &s.points {
            match y.filter(|v| v.is_finite()) {
                Some(y) => {
                    let _ = write!(
                        d,
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        sx(x),
                        sy(y)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        if !d.is_empty() {
            let _ = write!(
                out,
                r##"<path d="{}" fill="none" stroke="{}" stroke-width="1.8"><title>{}</title></path>"##,
                d.trim_end(),
                escape(s.color),
                escape(s.name)
            );
        }
    }
    // Legend, top right.
    let mut lx = W - RIGHT;
    for s in series.iter().rev() {
        let width = 22.0 + 7.0 * s.name.chars().count() as f64;
        lx -= width + 8.0;
        let _ = write!(
            out,
            r##"<rect x="{lx:.1}" y="12" width="14" height="4" fill="{c}"/><text x="{tx:.1}" y="18" font-size="11">{n}</text>"##,
            c = escape(s.color),
            tx = lx + 18.0,
            n = escape(s.name)
        );
    }
    out.push_str("</svg>");
    out
}

/// Horizontal bars, one per (label, value, colour), with the value and share printed.
pub fn bar_chart(title: &str, bars: &[(String, f64, &str)]) -> String {
    let total: f64 = bars.iter().map(|b| b.1).sum();
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9);
    let row = 24.0;
    let h = TOP + row * bars.len().max(1) as f64 + 12.0;
    let label_w = 170.0;
    let bar_w = W - label_w - 150.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img" aria-label="{t}" class="chart"><rect width="{W}" height="{h}" fill="#fff"/><text x="{LEFT}" y="20" font-size="14" font-weight="bold">{t}</text>"##,
        t = escape(title)
    );
    for (i, (label, value, color)) in bars.iter().enumerate() {
        let y = TOP + i as f64 * row;
        let share = if total > 0.0 {
            value / total * 100.0
        } else {
            0.0
        };
        let _ = write!(
            out,
            r##"<text x="{lx}" y="{ty:.1}" font-size="12" text-anchor="end">{l}</text><rect x="{bx}" y="{y:.1}" width="{bw:.1}" height="16" fill="{c}"><title>{l}: {value}</title></rect><text x="{vx:.1}" y="{ty:.1}" font-size="12">{v} ({share:.1}%)</text>"##,
            lx = label_w - 8.0,
            ty = y + 12.5,
            l = escape(label),
            bx = label_w,
            bw = (value / max * bar_w).max(1.0),
            c = escape(color),
            vx = label_w + (value / max * bar_w).max(1.0) + 6.0,
            v = fmt_tick(*value),
        );
    }
    out.push_str("</svg>");
    out
}

/// Vertical bars of a distribution: (bucket start, count) pairs.
pub fn histogram_chart(title: &str, x_label: &str, buckets: &[(f64, u64)], color: &str) -> String {
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let max = buckets.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let n = buckets.len().max(1) as f64;
    let bw = pw / n;
    let mut out = String::new();
    open(&mut out, title);
    for (i, (start, count)) in buckets.iter().enumerate() {
        let h = *count as f64 / max * ph;
        let _ = write!(
            out,
            r##"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{c}"><title>{s} ms: {count}</title></rect>"##,
            x = LEFT + i as f64 * bw,
            y = TOP + ph - h,
            w = (bw - 1.0).max(0.5),
            c = escape(color),
            s = fmt_tick(*start),
        );
    }
    let step = (buckets.len() / 8).max(1);
    for (i, (start, _)) in buckets.iter().enumerate().step_by(step) {
        let _ = write!(
            out,
            r##"<text x="{x:.1}" y="{y}" font-size="11" text-anchor="middle">{l}</text>"##,
            x = LEFT + i as f64 * bw,
            y = TOP + ph + 16.0,
            l = fmt_tick(*start)
        );
    }
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" x2="{x2}" y1="{y}" y2="{y}" stroke="#333"/><text x="{LEFT}" y="{ty:.1}" font-size="11" text-anchor="end">{m}</text><text x="{cx}" y="{ly}" font-size="12" text-anchor="middle">{xl}</text>"##,
        x2 = W - RIGHT,
        y = TOP + ph,
        ty = TOP + 4.0,
        m = fmt_tick(max),
        cx = LEFT + pw / 2.0,
        ly = H - 6.0,
        xl = escape(x_label),
    );
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(86.4, 8.0), 10.0);
        assert_eq!(nice_step(0.0, 5.0), 1.0);
    }

    #[test]
    fn line_chart_is_svg_with_paths_and_escaped_text() {
        let svg = line_chart(
            "a <b> & c",
            "s",
            "req/s",
            &[Series {
                name: "created",
                color: "#2a7",
                points: vec![
                    (0.0, Some(1.0)),
                    (1.0, None),
                    (2.0, Some(3.0)),
                    (3.0, Some(2.0)),
                ],
            }],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        // The gap breaks the line: two "M" moves.
        let path = svg.split("<path d=\"").nth(1).unwrap();
        let d = path.split('"').next().unwrap();
        assert_eq!(d.matches('M').count(), 2, "{d}");
    }

    #[test]
    fn empty_charts_still_render() {
        assert!(line_chart("t", "x", "y", &[]).ends_with("</svg>"));
        assert!(bar_chart("t", &[]).ends_with("</svg>"));
        assert!(histogram_chart("t", "ms", &[], "#000").ends_with("</svg>"));
    }
}
