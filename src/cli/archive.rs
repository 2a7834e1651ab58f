//! `s3-fanout export` and `s3-fanout import`: validate the flags, run, print
//! the summary (or its JSON with `--json`) and pick the exit code.

use tokio_util::sync::CancellationToken;

use crate::archive::{
    ArchiveError, ExportOptions, ExportSpec, ImportOptions, ImportSpec, run_export, run_import,
};
use crate::base::format::{human_bytes, thousands as n};
use crate::cli::interrupt::cancel_on_ctrl_c;
use crate::cli::output::{EXIT_USAGE, print_tail};
use crate::report::Summary;

pub async fn export(spec: ExportSpec, json: bool) -> i32 {
    let options = match ExportOptions::try_from(spec) {
        Ok(options) => options,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_USAGE;
        }
    };
    let cancel = interruptible();
    finish(run_export(&options, &cancel).await, json, print_export)
}

pub async fn import(spec: ImportSpec, json: bool) -> i32 {
    let options = match ImportOptions::try_from(spec) {
        Ok(options) => options,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_USAGE;
        }
    };
    let cancel = interruptible();
    finish(run_import(&options, &cancel).await, json, print_import)
}

fn interruptible() -> CancellationToken {
    let cancel = CancellationToken::new();
    tokio::spawn(cancel_on_ctrl_c(cancel.clone()));
    cancel
}

fn finish(result: Result<Summary, ArchiveError>, json: bool, print: fn(&Summary)) -> i32 {
    crate::cli::output::finish(result, json, print, ArchiveError::exit_code)
}

fn print_export(s: &Summary) {
    let c = &s.counts;
    println!(
        "s3-fanout export {} -> {}  (run {})",
        s.source, s.destination, s.run_id
    );
    println!(
        "  listed     {} objects ({}), all in the manifest",
        n(c.listed_source),
        human_bytes(c.listed_source_bytes)
    );
    println!(
        "  exported   {} of {} changed ({}) · unchanged since the baseline {} · changed while listed {} · deleted while listed {} · failed {} · skipped {}",
        n(c.copied),
        n(c.plan_copy),
        human_bytes(c.bytes_copied),
        n(c.skip_not_modified),
        n(c.source_changed),
        n(c.source_vanished),
        n(c.failed),
        n(c.skipped_archived + c.skipped_sse_c),
    );
    print_tail(s);
}

fn print_import(s: &Summary) {
    let c = &s.counts;
    println!(
        "s3-fanout import {} -> {}  (run {})",
        s.source, s.destination, s.run_id
    );
    println!(
        "  listed     {} manifest objects ({}), {} destination objects",
        n(c.listed_source),
        human_bytes(c.listed_source_bytes),
        n(c.listed_destination)
    );
    println!(
        "  plan       put {} · replace {} · delete {} · unchanged {} · unverified {} · not in this archive {} · only at destination {}  ({})",
        n(c.plan_copy),
        n(c.plan_update),
        n(c.plan_delete),
        n(c.skip_equal),
        n(c.skip_unverified),
        n(c.skip_not_modified),
        n(c.extraneous_kept),
        human_bytes(c.plan_bytes)
    );
    println!(
        "  done       put {} · replaced {} · deleted {} · failed {} · skipped {}  ({} in {:.1}s)",
        n(c.copied),
        n(c.updated),
        n(c.deleted),
        n(c.failed),
        n(c.skipped_archived + c.skipped_sse_c),
        human_bytes(c.bytes_copied),
        s.duration_secs
    );
    println!(
        "  verify     {} checked, {} mismatched",
        n(c.verify_checked),
        n(c.verify_mismatched)
    );
    print_tail(s);
}
