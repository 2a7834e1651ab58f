//! `s3-fanout check SRC DST [--checksum]`: an audit that writes nothing.
//! It lists both sides and proves every pair equal, by ETags, the ledger
//! of proven pairs, or stored checksums, and reports every pair that
//! differs, is on one side only, or cannot be proven. Exit 0 only when
//! every pair is proven equal.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::cli::interrupt::cancel_on_ctrl_c;
use crate::cli::output::{EXIT_USAGE, finish, print_tail, sync_error_code};
use crate::cli::progress::{Progress, ProgressMode};
use crate::engine::pipeline::run_check;
use crate::engine::verify::Audit;
use crate::model::options::{SyncOptions, SyncSpec};
use crate::report::{Stats, Summary};

/// `s3-fanout check`: every `sync` option that says what to compare, and
/// whether to compare checksums of every pair.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckSpec {
    #[command(flatten)]
    pub sync: SyncSpec,
    /// Compare the stored checksums of every pair (a HEAD of each side),
    /// equal ETags included: proves content, not only what the listings
    /// say. Without it, only pairs whose ETags differ are asked.
    #[arg(long)]
    pub checksum: bool,
}

pub async fn check(mut spec: CheckSpec, json: bool, no_progress: bool) -> i32 {
    // Nothing is written: no copies, no deletes, no ledger. Objects only
    // at the destination are reported as such.
    if spec.sync.all_versions && spec.checksum {
        eprintln!(
            "error: --checksum does not apply to --all-versions, which places each copy by its size, ETag or origin version id"
        );
        return EXIT_USAGE;
    }
    spec.sync.dry_run = true;
    spec.sync.delete = true;
    let options = match SyncOptions::try_from(spec.sync) {
        Ok(options) => options,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_USAGE;
        }
    };
    let audit = if spec.checksum {
        Audit::CheckChecksums
    } else {
        Audit::Check
    };
    let cancel = CancellationToken::new();
    tokio::spawn(cancel_on_ctrl_c(cancel.clone()));
    let stats = Arc::new(Stats::default());
    let progress = Progress::start(stats.clone(), ProgressMode::auto(!json && !no_progress));
    let result = run_check(&options, audit, stats, cancel).await;
    progress.finish().await;
    finish(result, json, print_check, sync_error_code)
}

fn print_check(s: &Summary) {
    use crate::base::format::thousands as n;
    let c = &s.counts;
    println!(
        "s3-fanout check {} -> {}  (run {})",
        s.source, s.destination, s.run_id
    );
    println!(
        "  listed     {} source objects, {} destination objects",
        n(c.listed_source),
        n(c.listed_destination)
    );
    println!(
        "  checked    {} pairs: {} not proven equal (differ, missing, only at destination, or unproven)",
        n(c.verify_checked),
        n(c.verify_mismatched)
    );
    println!(
        "  proven     by ledger {} · by checksum {} ({} HEADs, {} different)",
        n(c.proven_by_ledger),
        n(c.proven_by_checksum),
        n(c.checksum_heads),
        n(c.checksum_different)
    );
    print_tail(s);
}
