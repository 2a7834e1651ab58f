//! What the CLI prints at the end of a run, and the exit code of bad usage.

use crate::base::format::{human_bytes, thousands as n};
use crate::report::Summary;

pub const EXIT_USAGE: i32 = 2;

/// Print a run's summary, as JSON or for people, and return its exit code;
/// a run that could not start says why and exits with `code_of` its error.
pub fn finish<E: std::fmt::Display>(
    result: Result<Summary, E>,
    json: bool,
    print: fn(&Summary),
    code_of: fn(&E) -> i32,
) -> i32 {
    match result {
        Ok(summary) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).expect("summary serialises")
                );
            } else {
                print(&summary);
            }
            // Also on stderr, whatever stdout carries (--json included):
            // that is where scripts and log collectors look for why a run
            // failed, as they do for a refused one.
            if let Some(error) = &summary.error {
                eprintln!("error: {error}");
            }
            summary.exit_code
        }
        Err(err) => {
            eprintln!("error: {err}");
            code_of(&err)
        }
    }
}

/// A sync or check that could not start: bad configuration exits 2.
pub fn sync_error_code(err: &crate::base::error::SyncError) -> i32 {
    match err {
        crate::base::error::SyncError::Config(_) => EXIT_USAGE,
        _ => 1,
    }
}

pub fn print_summary(s: &Summary) {
    let c = &s.counts;
    println!(
        "s3-fanout sync {} -> {}  (run {})",
        s.source, s.destination, s.run_id
    );
    println!(
        "  listed     {} source objects ({}), {} destination objects{}",
        n(c.listed_source),
        human_bytes(c.listed_source_bytes),
        n(c.listed_destination),
        if c.listed_pieces > 1 {
            format!(", in {} pieces", n(c.listed_pieces))
        } else {
            String::new()
        }
    );
    println!(
        "  plan       copy {} · update {} · delete {} · unchanged {} · unverified {} · filtered {} · older than --modified-since {} · only at destination {}  ({})",
        n(c.plan_copy),
        n(c.plan_update),
        n(c.plan_delete),
        n(c.skip_equal),
        n(c.skip_unverified),
        n(c.skip_filtered),
        n(c.skip_not_modified),
        n(c.extraneous_kept),
        human_bytes(c.plan_bytes)
    );
    if c.proven_by_ledger + c.checksum_heads + c.ledger_entries + c.plan_compare > 0 {
        // Pairs whose ETags differ (KMS, other layouts), and what proved them.
        println!(
            "  proven     by ledger {} · by checksum {} ({} HEADs, {} different) · to compare {} · ledger {} entries",
            n(c.proven_by_ledger),
            n(c.proven_by_checksum),
            n(c.checksum_heads),
            n(c.checksum_different),
            n(c.plan_compare),
            n(c.ledger_entries)
        );
    }
    if c.file_etags_read + c.file_etags_remembered > 0 {
        // A directory's files compared by ETag: read, or known unchanged.
        println!(
            "  files      read for their ETags {} · unchanged since read (a stat) {}",
            n(c.file_etags_read),
            n(c.file_etags_remembered)
        );
    }
    if c.skip_folder_markers > 0 {
        println!(
            "             folder markers skipped {} (keys ending in /: a directory is not an object)",
            n(c.skip_folder_markers)
        );
    }
    if s.dry_run {
        println!("  dry run    nothing was written");
    } else {
        println!(
            "  done       copied {} · updated {} · deleted {} · failed {} · skipped {} (archived {}, SSE-C {}) · vanished {} · changed at source {}  ({} in {:.1}s)",
            n(c.copied),
            n(c.updated),
            n(c.deleted),
            n(c.failed),
            n(c.skipped_archived + c.skipped_sse_c),
            n(c.skipped_archived),
            n(c.skipped_sse_c),
            n(c.source_vanished),
            n(c.source_changed),
            human_bytes(c.bytes_copied),
            s.duration_secs
        );
        if let Some(stopped) = &s.stopped {
            println!(
                "  stopped    {}: {} not started (dropped{}); the next run does them",
                stopped.describe(),
                n(c.dropped),
                if c.dropped_batches + c.dropped_ranges > 0 {
                    format!(
                        ": {} batches and {} range tasks whole",
                        n(c.dropped_batches),
                        n(c.dropped_ranges)
                    )
                } else {
                    String::new()
                }
            );
        }
        let how = if c.verify_heads > 0 {
            " (the keys written, by HEAD on both sides)"
        } else {
            ""
        };
        println!(
            "  verify     {} checked, {} mismatched{how}",
            n(c.verify_checked),
            n(c.verify_mismatched)
        );
    }
    print_tail(s);
}

/// Requests, problems, report files and status: the end of every summary
/// (`sync`, `export`, `import`).
pub fn print_tail(s: &Summary) {
    let requests: Vec<String> = s
        .requests
        .iter()
        .map(|(op, count)| format!("{op} {}", n(*count)))
        .collect();
    if !requests.is_empty() {
        println!(
            "  requests   {}  ({} retries)",
            requests.join(" · "),
            n(s.counts.retries)
        );
    }
    if let Some(c) = &s.copy_concurrency {
        println!(
            "  in flight  {}–{} copies (halved {} times for {} throttling answers)",
            c.lowest, c.highest, c.throttle_cuts, c.throttled_responses
        );
    }
    if let Some(error) = &s.error {
        println!("  error      {error}");
    }
    if let Some(failed) = s.tolerated_failures() {
        println!(
            "  tolerated  {} failed, within the failure threshold of {}: the run did not fail, but not every object is synced (exit 1)",
            n(failed),
            n(s.failure_threshold)
        );
    }
    if !s.sample_rows.is_empty() {
        println!(
            "  problems   {} (first {} below)",
            n(s.report_rows),
            s.sample_rows.len()
        );
        for row in &s.sample_rows {
            // A bucket name never holds `/`; a local directory (absolute)
            // always does.
            let at = if row.bucket.contains('/') {
                std::path::Path::new(&row.bucket)
                    .join(&row.key)
                    .display()
                    .to_string()
            } else {
                format!("s3://{}/{}", row.bucket, row.key)
            };
            println!(
                "    {:<8} {:<22} {at}  {}",
                format!("{:?}", row.status).to_lowercase(),
                row.error_code,
                row.message
            );
        }
    }
    if let Some(path) = &s.summary_json {
        println!("  report     {path}");
    }
    if let Some(path) = &s.failures_csv {
        println!("  failures   {path} ({} rows)", n(s.report_rows));
    }
    if let Some(path) = &s.report_html {
        println!("  html       {path}");
    }
    let status = serde_json::to_value(s.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    println!("  status     {status} (exit {})", s.exit_code);
}
