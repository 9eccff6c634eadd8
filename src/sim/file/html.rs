//! `--format html`: one self-contained page (inline SVG, a few lines of inline script, no
//! network) with charts over simulated time: requests per interval by outcome, p50 and p99
//! latency, spend against each budget, each breaker's state as bands. With `--baseline`,
//! both policies on the same axes (the baseline dashed). Deterministic like the JSON.

use std::fmt::Write as _;

use super::report::{Document, PolicyReport};

const W: f64 = 900.0;
const H: f64 = 220.0;
const PAD_L: f64 = 64.0;
const PAD_B: f64 = 28.0;
const COLORS: [&str; 6] = [
    "#1b7f3b", "#c0392b", "#2e6fd1", "#b9770e", "#7d3c98", "#566573",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One line of a chart: its label, colour, dash, and `(seconds, value)` points.
struct Line<'a> {
    label: String,
    color: &'a str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// An SVG line chart over `[0, t_max]` seconds.
fn chart(title: &str, unit: &str, t_max: f64, lines: &[Line<'_>]) -> String {
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let x = |t: f64| PAD_L + t / t_max.max(1e-9) * (W - PAD_L - 10.0);
    let y = |v: f64| 10.0 + (1.0 - v / y_max) * (H - PAD_B - 10.0);
    let mut s = format!(
        "<figure><figcaption>{}</figcaption><svg class=\"chart\" viewBox=\"0 0 {W} {H}\" \
         width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(title)
    );
    axes(&mut s, t_max, y_max, unit);
    for l in lines.iter().filter(|l| !l.points.is_empty()) {
        let pts: Vec<String> = l
            .points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let dash = if l.dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        let _ = write!(
            s,
            "<polyline class=\"series\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\"{dash} \
             points=\"{}\"><title>{}</title></polyline>",
            l.color,
            pts.join(" "),
            esc(&l.label)
        );
    }
    s.push_str("</svg>");
    legend(
        &mut s,
        lines.iter().map(|l| (l.label.as_str(), l.color, l.dashed)),
    );
    s.push_str("</figure>\n");
    s
}

fn axes(s: &mut String, t_max: f64, y_max: f64, unit: &str) {
    let (x0, y0) = (PAD_L, H - PAD_B);
    let _ = write!(
        s,
        "<line x1=\"{x0}\" y1=\"10\" x2=\"{x0}\" y2=\"{y0}\" stroke=\"#999\"/>\
         <line x1=\"{x0}\" y1=\"{y0}\" x2=\"{}\" y2=\"{y0}\" stroke=\"#999\"/>",
        W - 10.0
    );
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let yy = 10.0 + (1.0 - f) * (H - PAD_B - 10.0);
        let xx = PAD_L + f * (W - PAD_L - 10.0);
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>\
             <text x=\"{xx:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            PAD_L - 4.0,
            yy + 3.0,
            number(y_max * f, unit),
            H - 10.0,
            time(t_max * f)
        );
    }
}

fn legend<'a>(s: &mut String, items: impl Iterator<Item = (&'a str, &'a str, bool)>) {
    s.push_str("<p class=\"legend\">");
    for (label, color, dashed) in items {
        let style = if dashed { "dashed" } else { "solid" };
        let _ = write!(
            s,
            "<span style=\"border-bottom:2px {style} {color}\">{}</span> ",
            esc(label)
        );
    }
    s.push_str("</p>");
}

fn number(v: f64, unit: &str) -> String {
    if unit == "ms" && v >= 1000.0 {
        return format!("{:.1}s", v / 1000.0);
    }
    if unit == "$" {
        return format!("${}", number(v, ""));
    }
    if v >= 1000.0 {
        format!("{:.1}k{unit}", v / 1000.0)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}{unit}")
    } else {
        format!("{v:.2}{unit}")
    }
}

fn time(s: f64) -> String {
    if s >= 2.0 * 86_400.0 {
        format!("{:.1}d", s / 86_400.0)
    } else if s >= 7200.0 {
        format!("{:.1}h", s / 3600.0)
    } else if s >= 120.0 {
        format!("{:.0}m", s / 60.0)
    } else {
        format!("{s:.0}s")
    }
}

/// The reports on the page: the policy, then the baseline (dashed).
fn runs(d: &Document) -> Vec<(&PolicyReport, bool)> {
    let mut v = vec![(&d.report, false)];
    if let Some(b) = &d.baseline {
        v.push((b, true));
    }
    v
}

fn per_interval(r: &PolicyReport, values: &[f64]) -> Vec<(f64, f64)> {
    let dt = r.series.interval_s;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| ((i as f64 + 0.5) * dt, *v))
        .collect()
}

fn who(r: &PolicyReport, baseline: bool) -> String {
    if baseline {
        format!("baseline {}", r.policy)
    } else {
        r.policy.clone()
    }
}

fn requests_chart(d: &Document, t_max: f64) -> String {
    let mut lines = Vec::new();
    for (r, dashed) in runs(d) {
        let dt = r.series.interval_s.max(1e-9);
        let rate = |xs: &[u64]| xs.iter().map(|n| *n as f64 / dt).collect::<Vec<_>>();
        for (what, xs, color) in [
            ("served", &r.series.served, COLORS[0]),
            ("failed", &r.series.failed, COLORS[1]),
        ] {
            lines.push(Line {
                label: format!("{what} ({})", who(r, dashed)),
                color,
                dashed,
                points: per_interval(r, &rate(xs)),
            });
        }
    }
    chart("Requests per second by outcome", "/s", t_max, &lines)
}

fn latency_chart(d: &Document, t_max: f64) -> String {
    let mut lines = Vec::new();
    for (r, dashed) in runs(d) {
        for (what, xs, color) in [
            ("p50", &r.series.p50_ms, COLORS[2]),
            ("p99", &r.series.p99_ms, COLORS[3]),
        ] {
            lines.push(Line {
                label: format!("{what} ({})", who(r, dashed)),
                color,
                dashed,
                points: per_interval(r, xs),
            });
        }
    }
    chart(
        "Latency of the requests that ended (ms)",
        "ms",
        t_max,
        &lines,
    )
}

fn budget_charts(d: &Document, t_max: f64) -> String {
    let mut out = String::new();
    for (name, b) in &d.report.budgets {
        let mut lines = vec![Line {
            label: format!("limit ${:.2}", b.limit_usd),
            color: COLORS[5],
            dashed: true,
            points: vec![(0.0, b.limit_usd), (t_max, b.limit_usd)],
        }];
        for (r, dashed) in runs(d) {
            if let Some(rb) = r.budgets.get(name) {
                lines.push(Line {
                    label: format!("spent ({})", who(r, dashed)),
                    color: if dashed { COLORS[4] } else { COLORS[2] },
                    dashed,
                    points: rb.spent.clone(),
                });
            }
        }
        out.push_str(&chart(
            &format!("Budget `{name}`: spent in the current window (USD)"),
            "$",
            t_max,
            &lines,
        ));
    }
    out
}

/// Each breaker's state over time as coloured bands (one row per breaker and policy).
fn breaker_bands(d: &Document, t_max: f64) -> String {
    let mut rows: Vec<(String, Vec<(f64, &'static str)>)> = Vec::new();
    for (r, dashed) in runs(d) {
        for (name, b) in &r.breakers {
            rows.push((format!("{name} ({})", who(r, dashed)), b.changes.clone()));
        }
    }
    if rows.is_empty() {
        return "<p>No breaker changed state.</p>\n".into();
    }
    let row_h = 22.0;
    let h = rows.len() as f64 * row_h + PAD_B;
    let x = |t: f64| 260.0 + t / t_max.max(1e-9) * (W - 270.0);
    let mut s = format!(
        "<figure><figcaption>Breaker state (green closed, red open, amber half-open)</figcaption>\
         <svg class=\"chart\" viewBox=\"0 0 {W} {h}\" width=\"{W}\" height=\"{h}\" role=\"img\">"
    );
    for (i, (label, changes)) in rows.iter().enumerate() {
        let y = i as f64 * row_h;
        let _ = write!(
            s,
            "<text x=\"254\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            y + 15.0,
            esc(label)
        );
        let mut spans = vec![(0.0, "closed")];
        spans.extend(changes.iter().copied());
        for (j, (from, state)) in spans.iter().enumerate() {
            let to = spans.get(j + 1).map_or(t_max, |n| n.0);
            let color = match *state {
                "open" => COLORS[1],
                "half_open" => COLORS[3],
                _ => COLORS[0],
            };
            let _ = write!(
                s,
                "<rect class=\"band\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.2}\" height=\"{:.1}\" \
                 fill=\"{color}\"><title>{state} from {from}s</title></rect>",
                x(*from),
                y + 3.0,
                (x(to) - x(*from)).max(0.5),
                row_h - 6.0
            );
        }
    }
    s.push_str("</svg></figure>\n");
    s
}

fn summary_table(d: &Document) -> String {
    let mut s = String::from(
        "<table><tr><th>policy</th><th>requests</th><th>success</th><th>attempts</th>\
         <th>cost</th><th>p50</th><th>p99</th><th>failovers</th><th>gates</th></tr>",
    );
    for (r, dashed) in runs(d) {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{:.2}%</td><td>{} (×{:.2})</td><td>${:.2}</td>\
             <td>{:.0} ms</td><td>{:.0} ms</td><td>{}</td><td>{}</td></tr>",
            esc(&who(r, dashed)),
            r.requests,
            r.success_rate * 100.0,
            r.attempts,
            r.amplification,
            r.cost_usd,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.failovers,
            if r.passed { "passed" } else { "FAILED" }
        );
    }
    s.push_str("</table>\n");
    s
}

/// The page.
pub fn html(d: &Document) -> String {
    let t_max = runs(d)
        .iter()
        .map(|(r, _)| r.series.interval_s * r.series.served.len() as f64)
        .fold(d.duration_s, f64::max);
    let mut s = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>tollgate simulate</title><style>\
         body{font:14px system-ui,sans-serif;margin:24px;color:#222}\
         figure{margin:16px 0}figcaption{font-weight:600;margin-bottom:4px}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
         .legend span{margin-right:14px;padding-bottom:1px}</style></head><body>\n",
    );
    let _ = writeln!(
        s,
        "<h1>tollgate simulate</h1><p>scenario <code>{}</code>, seed {}, {} simulated</p>",
        esc(&d.scenario),
        d.seed,
        time(d.duration_s)
    );
    s.push_str(&summary_table(d));
    s.push_str(&requests_chart(d, t_max));
    s.push_str(&latency_chart(d, t_max));
    s.push_str(&budget_charts(d, t_max));
    s.push_str(&breaker_bands(d, t_max));
    // Counts what the charts drew, for a reader's (and a headless test's) sanity check.
    s.push_str(
        "<script>document.body.dataset.series=document.querySelectorAll('polyline.series').length;\
         document.body.dataset.bands=document.querySelectorAll('rect.band').length;</script>\n",
    );
    s.push_str("</body></html>\n");
    s
}
