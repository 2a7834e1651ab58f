//! `report.html`: a run's report as one self-contained page, for people.
//!
//! Everything is inline: CSS in a `<style>`, charts as SVG drawn here, no
//! script, no font, no URL. The page opens from a mail attachment, an S3
//! console download or an air-gapped laptop the same way, and shows what
//! `summary.json` and `failures.csv` hold: the numbers, throughput over
//! time, the phases, and the failures (the first [`MAX_ROWS`]).
//!
//! Every string from the run (keys, messages, bucket names) is escaped:
//! keys may hold `<`, `&` and quotes.

use std::fmt::Write;

use super::ledger::ReportRow;
use super::summary::Summary;
use super::timeline::TimelinePoint;
use crate::base::format::{human_bytes, human_duration_tenths, thousands};

/// Failure rows the page lists; the rest are in failures.csv.
pub const MAX_ROWS: usize = 1_000;

/// Escape text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

const STYLE: &str = r#"
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; margin: 24px; color: #1a1a1a; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px 0; }
h2 { font-size: 19px; margin: 28px 0 8px 0; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #444; font-size: 15px; }
.badge { display: inline-block; padding: 3px 12px; border-radius: 4px; color: #fff; font-weight: bold; }
.ok { background: #1e7b34; } .warnings { background: #b8860b; } .failed { background: #b3261e; } .interrupted, .cancelled { background: #555; }
.big { display: flex; flex-wrap: wrap; gap: 14px; margin: 18px 0; }
.big div { border: 1px solid #ccc; border-radius: 6px; padding: 10px 18px; min-width: 150px; }
.big .value { font-size: 40px; font-weight: bold; display: block; }
.big .label { font-size: 15px; color: #333; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.error { border: 2px solid #b3261e; background: #fdecea; padding: 8px 12px; margin: 12px 0; }
.key { font-family: "DejaVu Sans Mono", monospace; word-break: break-all; white-space: pre-wrap; }
svg text { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 12px; fill: #333; }
"#;

/// The page.
pub fn render(summary: &Summary, rows: &[ReportRow], total_rows: u64) -> String {
    let mut page = String::new();
    title(&mut page, summary);
    headline(&mut page, summary);
    counts_table(&mut page, summary);
    requests_table(&mut page, summary);
    charts(&mut page, summary);
    failures(&mut page, summary, rows, total_rows);
    files(&mut page, summary);
    page.push_str("</body></html>\n");
    page
}

/// The page's head: the run, its sides, status, exit code and time.
fn title(page: &mut String, summary: &Summary) {
    let status = serde_json::to_value(summary.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>s3-fanout run {run}</title><style>{STYLE}</style></head><body>\n\
         <h1>s3-fanout run <span id=\"run-id\">{run}</span></h1>\n\
         <div class=\"sub\"><span id=\"source\">{source}</span> → <span id=\"destination\">{destination}</span></div>\n\
         <p><span class=\"badge {status}\" id=\"status\">{status}</span> exit code <b id=\"exit-code\">{exit}</b> · \
         started {started} · took <b id=\"duration\">{duration}</b>{dry}</p>\n",
        run = escape(&summary.run_id),
        source = escape(&summary.source),
        destination = escape(&summary.destination),
        exit = summary.exit_code,
        started = escape(&summary.started_at),
        duration = human_duration_tenths(summary.duration_secs),
        dry = if summary.dry_run {
            " · <b>dry run: nothing was written</b>"
        } else {
            ""
        },
    );
    if let Some(error) = &summary.error {
        let _ = writeln!(
            page,
            "<div class=\"error\" id=\"error\"><b>Error:</b> {}</div>",
            escape(error)
        );
    }
}

/// The numbers people ask first, large.
fn headline(page: &mut String, summary: &Summary) {
    let c = &summary.counts;
    let rate = if summary.duration_secs > 0.0 {
        (c.copied + c.updated) as f64 / summary.duration_secs
    } else {
        0.0
    };
    page.push_str("<div class=\"big\">\n");
    for (id, label, value) in [
        ("copied", "copied", thousands(c.copied)),
        ("updated", "updated", thousands(c.updated)),
        ("deleted", "deleted", thousands(c.deleted)),
        ("failed", "failed", thousands(c.failed)),
        ("bytes", "bytes copied", human_bytes(c.bytes_copied)),
        ("rate", "objects per second", format!("{rate:.1}")),
    ] {
        let _ = writeln!(
            page,
            "<div><span class=\"value\" id=\"{id}\">{value}</span><span class=\"label\">{label}</span></div>"
        );
    }
    page.push_str("</div>\n");
}

/// Every count of the run, in one table.
fn counts_table(page: &mut String, summary: &Summary) {
    let c = &summary.counts;
    page.push_str("<h2>Summary</h2>\n<table id=\"counts\">\n");
    let skipped = c.skipped_archived + c.skipped_sse_c;
    for (label, value) in [
        ("source objects listed", thousands(c.listed_source)),
        (
            "source bytes listed",
            format!(
                "{} ({} bytes)",
                human_bytes(c.listed_source_bytes),
                thousands(c.listed_source_bytes)
            ),
        ),
        (
            "destination objects listed",
            thousands(c.listed_destination),
        ),
        (
            "planned: copy / update / delete",
            format!(
                "{} / {} / {}",
                thousands(c.plan_copy),
                thousands(c.plan_update),
                thousands(c.plan_delete)
            ),
        ),
        ("unchanged", thousands(c.skip_equal)),
        ("unverified", thousands(c.skip_unverified)),
        (
            "filtered out",
            thousands(c.skip_filtered + c.skip_not_modified),
        ),
        ("copied", thousands(c.copied)),
        ("updated", thousands(c.updated)),
        ("deleted", thousands(c.deleted)),
        ("failed", thousands(c.failed)),
        ("skipped (archived, SSE-C)", thousands(skipped)),
        ("vanished at the source", thousands(c.source_vanished)),
        ("dropped (the run was stopped)", thousands(c.dropped)),
        (
            "bytes copied",
            format!(
                "{} ({} bytes)",
                human_bytes(c.bytes_copied),
                thousands(c.bytes_copied)
            ),
        ),
        (
            "verified / mismatched",
            format!(
                "{} / {}",
                thousands(c.verify_checked),
                thousands(c.verify_mismatched)
            ),
        ),
        ("retries", thousands(c.retries)),
        ("report rows", thousands(summary.report_rows)),
    ] {
        let _ = writeln!(
            page,
            "<tr><th>{label}</th><td class=\"n\">{value}</td></tr>"
        );
    }
    page.push_str("</table>\n");
}

/// Requests by S3 operation, and how copies in flight adapted.
fn requests_table(page: &mut String, summary: &Summary) {
    if !summary.requests.is_empty() {
        page.push_str("<h2>Requests by S3 operation</h2>\n<table id=\"requests\"><tr><th>operation</th><th>requests</th></tr>\n");
        for (op, count) in &summary.requests {
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
                escape(op),
                thousands(*count)
            );
        }
        let total: u64 = summary.requests.values().sum();
        let _ = writeln!(
            page,
            "<tr><th>total</th><td class=\"n\">{}</td></tr></table>",
            thousands(total)
        );
    }
    if let Some(range) = &summary.copy_concurrency {
        let _ = writeln!(
            page,
            "<p>Copies in flight: {}–{}; halved {} times for {} throttling answers.</p>",
            range.lowest, range.highest, range.throttle_cuts, range.throttled_responses
        );
    }
}

/// Throughput over time and the phases, drawn as SVG.
fn charts(page: &mut String, summary: &Summary) {
    page.push_str("<h2>Throughput over time</h2>\n");
    if summary.timeline.len() < 2 {
        page.push_str("<p id=\"no-timeline\">No timeline recorded for this run.</p>\n");
    } else {
        page.push_str(&throughput_chart(&summary.timeline));
    }

    page.push_str("<h2>Phases</h2>\n");
    if summary.phases.is_empty() {
        page.push_str("<p>No phase timings recorded for this run.</p>\n");
    } else {
        page.push_str(&phases(summary));
    }
}

/// The first rows of failures.csv, and how many more there are.
fn failures(page: &mut String, summary: &Summary, rows: &[ReportRow], total_rows: u64) {
    let _ = writeln!(
        page,
        "<h2>Failures and warnings ({})</h2>",
        thousands(total_rows)
    );
    if rows.is_empty() {
        page.push_str("<p id=\"no-failures\">None: every object was synced.</p>\n");
    } else {
        page.push_str("<table id=\"failures\"><tr><th>Bucket</th><th>Key</th><th>TaskStatus</th><th>ErrorCode</th><th>HTTP</th><th>Message</th></tr>\n");
        for row in rows.iter().take(MAX_ROWS) {
            let status = serde_json::to_value(row.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td class=\"key\">{}</td><td>{status}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&row.bucket),
                escape(&row.key),
                escape(&row.error_code),
                escape(&row.http_status),
                escape(&row.message),
            );
        }
        page.push_str("</table>\n");
        let shown = rows.len().min(MAX_ROWS) as u64;
        if total_rows > shown {
            let _ = writeln!(
                page,
                "<p id=\"more-rows\">{} more in failures.csv{}.</p>",
                thousands(total_rows - shown),
                summary
                    .failures_csv
                    .as_deref()
                    .map(|at| format!(" ({})", escape(at)))
                    .unwrap_or_default()
            );
        }
    }
}

/// Where the machine-readable files of this run are.
fn files(page: &mut String, summary: &Summary) {
    let files: Vec<String> = [&summary.summary_json, &summary.failures_csv]
        .into_iter()
        .flatten()
        .map(|f| format!("<span class=\"key\">{}</span>", escape(f)))
        .collect();
    if !files.is_empty() {
        let _ = writeln!(page, "<p class=\"sub\">Also: {}</p>", files.join(" · "));
    }
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 70.0;
const BOTTOM: f64 = 40.0;
const TOP: f64 = 20.0;
const RIGHT: f64 = 20.0;

/// A round step for about four ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let raw = max / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let normalized = raw / magnitude;
    let nice = if normalized <= 1.0 {
        1.0
    } else if normalized <= 2.0 {
        2.0
    } else if normalized <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Objects per second between consecutive points, as bars, with the
/// cumulative objects as a line over them; MB/s in the title.
fn throughput_chart(points: &[TimelinePoint]) -> String {
    let end = points.last().map_or(0.0, |p| p.at_secs).max(0.001);
    let rates: Vec<(f64, f64, f64)> = points
        .windows(2)
        .map(|w| {
            let dt = (w[1].at_secs - w[0].at_secs).max(0.001);
            (
                w[0].at_secs,
                w[1].at_secs,
                w[1].objects.saturating_sub(w[0].objects) as f64 / dt,
            )
        })
        .collect();
    let peak = rates.iter().map(|r| r.2).fold(0.0, f64::max);
    let total = points.last().map_or(0, |p| p.objects) as f64;
    let bytes = points.last().map_or(0, |p| p.bytes);
    let y_step = tick_step(peak.max(1.0));
    let y_max = (peak.max(1.0) / y_step).ceil() * y_step;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: f64| LEFT + t / end * plot_w;
    let y = |v: f64| TOP + plot_h - v / y_max * plot_h;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<p>Peak {:.1} objects/s; on average {:.1} objects/s and {}/s over {}.</p>",
        peak,
        total / end,
        human_bytes((bytes as f64 / end) as u64),
        human_duration_tenths(end)
    );
    let _ = writeln!(
        svg,
        "<svg id=\"throughput\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"objects per second over time\">"
    );
    // Axes and grid.
    let mut tick = 0.0;
    while tick <= y_max + 1e-9 {
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#e3e3e3\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            y(tick),
            y(tick),
            LEFT - 6.0,
            y(tick) + 4.0,
            if y_step < 1.0 {
                format!("{tick:.1}")
            } else {
                thousands(tick as u64)
            }
        );
        tick += y_step;
    }
    let x_step = tick_step(end);
    let mut t = 0.0;
    while t <= end + 1e-9 {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x(t),
            HEIGHT - BOTTOM + 16.0,
            human_duration_tenths(t)
        );
        t += x_step;
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">time since the run started</text>\
         <text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">objects/s</text>",
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    for (from, to, rate) in &rates {
        let _ = writeln!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#4a7fc1\"/>",
            x(*from),
            y(*rate),
            (x(*to) - x(*from)).max(1.0),
            (TOP + plot_h - y(*rate)).max(0.0)
        );
    }
    // The cumulative count, scaled to the same height, as a line.
    if total > 0.0 {
        let line: Vec<String> = points
            .iter()
            .map(|p| {
                format!(
                    "{:.1},{:.1}",
                    x(p.at_secs),
                    TOP + plot_h - p.objects as f64 / total * plot_h
                )
            })
            .collect();
        let _ = writeln!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#d9822b\" stroke-width=\"2\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" style=\"fill:#d9822b\">cumulative: {} objects</text>",
            line.join(" "),
            WIDTH - RIGHT - 4.0,
            TOP + 12.0,
            thousands(total as u64)
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{:.1}\" stroke=\"#333\"/><line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/></svg>",
        TOP + plot_h,
        WIDTH - RIGHT,
        TOP + plot_h,
        TOP + plot_h
    );
    svg
}

/// The phases as a table and as bars on the run's time axis (they may
/// overlap: copies start with the first page of the listing).
fn phases(summary: &Summary) -> String {
    let end = summary
        .phases
        .iter()
        .map(|p| p.started_secs + p.duration_secs)
        .fold(summary.duration_secs, f64::max)
        .max(0.001);
    let mut out = String::from(
        "<table id=\"phases\"><tr><th>phase</th><th>started after</th><th>took</th></tr>\n",
    );
    for phase in &summary.phases {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&phase.name),
            human_duration_tenths(phase.started_secs),
            human_duration_tenths(phase.duration_secs)
        );
    }
    out.push_str("</table>\n");
    let row = 26.0;
    let height = summary.phases.len() as f64 * row + 10.0;
    let label_w = 130.0;
    let plot_w = WIDTH - label_w - RIGHT;
    let _ = writeln!(
        out,
        "<svg id=\"phase-bars\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\">"
    );
    for (i, phase) in summary.phases.iter().enumerate() {
        let y = 5.0 + i as f64 * row;
        let x = label_w + phase.started_secs / end * plot_w;
        let w = (phase.duration_secs / end * plot_w).max(2.0);
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"#6aa84f\"/>",
            label_w - 8.0,
            y + 15.0,
            escape(&phase.name),
            row - 8.0
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ledger::{Counts, TaskStatus};
    use crate::report::summary::RunStatus;
    use crate::report::timeline::PhaseTiming;
    use std::collections::BTreeMap;

    fn summary() -> Summary {
        Summary {
            run_id: "20261123T010203-00042".into(),
            source: "s3://src/<p>".into(),
            destination: "s3://dst/".into(),
            dry_run: false,
            status: RunStatus::Failed,
            exit_code: 1,
            started_at: "2026-11-23T01:02:03Z".into(),
            duration_secs: 12.5,
            counts: Counts {
                copied: 1_234_567,
                failed: 3,
                bytes_copied: 5 * 1024 * 1024 * 1024,
                ..Counts::default()
            },
            error: None,
            failure_threshold: 0,
            requests: BTreeMap::from([("CopyObject".to_owned(), 1_234_570)]),
            copy_concurrency: None,
            report_rows: 3,
            failures_csv: Some("/r/failures.csv".into()),
            stopped: None,
            summary_json: Some("/r/summary.json".into()),
            report_html: None,
            timeline: vec![
                TimelinePoint {
                    at_secs: 0.0,
                    objects: 0,
                    bytes: 0,
                    failed: 0,
                },
                TimelinePoint {
                    at_secs: 5.0,
                    objects: 600_000,
                    bytes: 1 << 30,
                    failed: 1,
                },
                TimelinePoint {
                    at_secs: 12.5,
                    objects: 1_234_567,
                    bytes: 5 << 30,
                    failed: 3,
                },
            ],
            phases: vec![
                PhaseTiming {
                    name: "list and diff".into(),
                    started_secs: 0.0,
                    duration_secs: 4.0,
                },
                PhaseTiming {
                    name: "copy".into(),
                    started_secs: 0.0,
                    duration_secs: 12.0,
                },
            ],
            sample_rows: Vec::new(),
        }
    }

    fn nasty_row() -> ReportRow {
        ReportRow::new(
            "src",
            "a<script>alert(1)</script>&\"'\n日本/key",
            TaskStatus::Failed,
            "AccessDenied",
            Some(403),
            "denied <b>",
        )
    }

    #[test]
    fn the_page_shows_the_numbers_and_escapes_everything_from_the_run() {
        let page = render(&summary(), &[nasty_row()], 1);
        assert!(page.contains("<span class=\"value\" id=\"copied\">1,234,567</span>"));
        assert!(page.contains("id=\"failed\">3<"));
        assert!(page.contains("5.0 GiB"));
        assert!(page.contains("s3://src/&lt;p&gt;"));
        assert!(page.contains("a&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#39;\n日本/key"));
        assert!(!page.contains("<script"));
        assert!(page.contains("denied &lt;b&gt;"));
        assert!(page.contains("<svg id=\"throughput\""));
        assert!(page.contains("<svg id=\"phase-bars\""));
        assert!(page.contains("list and diff"));
    }

    #[test]
    fn the_page_is_self_contained() {
        let page = render(&summary(), &[nasty_row()], 1);
        for banned in [
            "<script", "<link", "src=", "http://", "https://", "url(", "@import",
        ] {
            assert!(!page.contains(banned), "{banned} in the page");
        }
    }

    #[test]
    fn a_run_without_a_timeline_or_failures_says_so() {
        let mut quiet = summary();
        quiet.timeline.clear();
        quiet.phases.clear();
        let page = render(&quiet, &[], 0);
        assert!(page.contains("id=\"no-timeline\""));
        assert!(page.contains("id=\"no-failures\""));
        assert!(page.contains("No phase timings"));
    }

    #[test]
    fn many_failures_are_capped_and_the_rest_pointed_to() {
        let rows = vec![nasty_row(); MAX_ROWS + 5];
        let page = render(&summary(), &rows, 2_000_000);
        assert_eq!(page.matches("<td class=\"key\">").count(), MAX_ROWS);
        assert!(page.contains("1,999,000 more in failures.csv (/r/failures.csv)"));
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(100.0), 50.0);
        assert_eq!(tick_step(7.0), 2.0);
        assert_eq!(tick_step(0.3), 0.1);
    }
}
