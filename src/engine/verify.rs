//! Stage 4: verify. After the write phase, check that the diff now finds
//! nothing to do: every source key present at the destination, same size,
//! same ETag where comparable (and, with `--delete`, nothing extra). S3
//! listings are strongly consistent since 2020, so a mismatch is a real
//! problem, never something to wait out. Keys already in the report
//! (failed, skipped) are not reported twice.
//!
//! Two ways, one decision ([`check_pair`]): list both sides of the range
//! again ([`verify_range`]), or, when the run wrote few keys, HEAD each
//! written key on both sides ([`verify_written`]). The keys the run did not
//! write were compared by the write phase's own listing moments before;
//! HEADs cost a twelfth of a LIST each and run in parallel, where a listing
//! is one page after another, so a 1% re-sync is not billed (or timed) as
//! a second full listing.

use std::sync::Arc;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::backend::transfer::Mover;
use crate::base::error::SyncError;
use crate::engine::diff::{Action, decide_with};
use crate::engine::pieces::{PairSink, Sides, list_in_pieces};
use crate::model::entry::{Pair, Side};
use crate::model::location::Location;
use crate::model::options::DiffOptions;
use crate::report::{ReportRow, ReportRows, Stats, TaskStatus};

/// A mismatch found by verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub key: String,
    pub code: &'static str,
    pub message: String,
    /// The object that is wrong is at the destination (an extra object),
    /// not a source object that failed to arrive.
    pub at_destination: bool,
}

/// Check one pair of the re-listing. `None`: in sync. The CLI's verify pass
/// and the serverless VALIDATE phase both decide with this.
pub fn check_pair(pair: Pair, diff: &DiffOptions, stats: &Stats) -> Option<Mismatch> {
    let mismatch = |key: String, code, message: String, at_destination| {
        Some(Mismatch {
            key,
            code,
            message,
            at_destination,
        })
    };
    match decide_with(pair, diff, false) {
        Action::Skip { .. } => {
            Stats::add(&stats.verify_checked, 1);
            None
        }
        Action::Copy { source } => {
            Stats::add(&stats.verify_checked, 1);
            mismatch(
                source.key,
                "MissingAtDestination",
                "verify: the object is not at the destination".to_owned(),
                false,
            )
        }
        Action::Update {
            source,
            destination,
        } => {
            Stats::add(&stats.verify_checked, 1);
            let why = format!(
                "verify: destination differs (size {} vs {}, ETag {} vs {})",
                source.size, destination.size, source.etag, destination.etag
            );
            mismatch(source.key, "VerifyMismatch", why, false)
        }
        Action::Delete { destination } => mismatch(
            destination.key,
            "ExtraneousAtDestination",
            "verify: the object is still at the destination but not at the source".to_owned(),
            true,
        ),
    }
}

impl Mismatch {
    /// The report row, naming the bucket and full key of the object at fault.
    pub fn row(&self, source: &Location, destination: &Location) -> ReportRow {
        let side = if self.at_destination {
            destination
        } else {
            source
        };
        let (bucket, key) = side.row_names(&self.key);
        ReportRow::new(
            &bucket,
            &key,
            TaskStatus::Failed,
            self.code,
            None,
            &self.message,
        )
    }
}

/// List both sides of the range again, in pieces as the write phase did,
/// and report every pair that still differs.
pub async fn verify_range(
    sides: Sides,
    diff: &DiffOptions,
    stats: &Arc<Stats>,
    rows: &Arc<ReportRows>,
    cancel: &CancellationToken,
) -> Result<(), SyncError> {
    let sink = VerifySink {
        locations: Arc::new((sides.source.location(), sides.destination.location())),
        diff: diff.clone(),
        stats: stats.clone(),
        rows: rows.clone(),
    };
    tokio::select! {
        _ = cancel.cancelled() => Err(SyncError::Cancelled),
        result = list_in_pieces(sides, sink) => result,
    }
}

/// Verification's sink: check each pair, report each mismatch once.
#[derive(Clone)]
struct VerifySink {
    locations: Arc<(Location, Location)>,
    diff: DiffOptions,
    stats: Arc<Stats>,
    rows: Arc<ReportRows>,
}

impl PairSink for VerifySink {
    async fn take(&self, pair: Pair) -> bool {
        if let Some(mismatch) = check_pair(pair, &self.diff, &self.stats)
            && !self.rows.already_reported(&mismatch.key)
        {
            Stats::add(&self.stats.verify_mismatched, 1);
            let (source, destination) = &*self.locations;
            self.rows
                .push(&mismatch.key, mismatch.row(source, destination));
        }
        true
    }
}

/// HEAD each written key on both sides, up to `concurrency` keys at once,
/// and report every one that still differs.
pub async fn verify_written(
    mover: &Mover,
    keys: Vec<String>,
    diff: &DiffOptions,
    stats: &Stats,
    rows: &ReportRows,
    concurrency: usize,
    cancel: &CancellationToken,
) -> Result<(), SyncError> {
    let checks = futures::stream::iter(keys)
        .map(|key| async move {
            let (source, destination) = mover.head_both(&key).await;
            (key, source, destination)
        })
        .buffer_unordered(concurrency.max(1));
    futures::pin_mut!(checks);
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return Err(SyncError::Cancelled),
            next = checks.next() => next,
        };
        let Some((key, source, destination)) = next else {
            return Ok(());
        };
        let mismatch = match (source, destination) {
            (Ok(Some(s)), Ok(Some(d))) => check_pair(Pair::Both(s, d), diff, stats),
            (Ok(Some(s)), Ok(None)) => check_pair(Pair::SourceOnly(s), diff, stats),
            (Ok(None), Ok(Some(d))) => check_pair(Pair::DestinationOnly(d), diff, stats),
            (Ok(None), Ok(None)) => None, // deleted, and gone from both
            (Err(failure), _) | (_, Err(failure)) => {
                Stats::add(&stats.verify_checked, 1);
                Some(Mismatch {
                    key: key.clone(),
                    code: "VerifyFailed",
                    message: format!(
                        "verify: could not HEAD the object: {} ({})",
                        failure.message, failure.code
                    ),
                    at_destination: false,
                })
            }
        };
        if let Some(mismatch) = mismatch
            && !rows.already_reported(&mismatch.key)
        {
            Stats::add(&stats.verify_mismatched, 1);
            let names = |side: Side, key: &str| mover.row_names(side, key);
            let (bucket, key) = names(
                if mismatch.at_destination {
                    Side::Destination
                } else {
                    Side::Source
                },
                &mismatch.key,
            );
            rows.push(
                &mismatch.key,
                ReportRow::new(
                    &bucket,
                    &key,
                    TaskStatus::Failed,
                    mismatch.code,
                    None,
                    &mismatch.message,
                ),
            );
        }
        Stats::add(&stats.verify_heads, 1);
    }
}
