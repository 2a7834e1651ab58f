//! Stage 4: verify. After the write phase, list both sides of the same range
//! again and check that the diff now finds nothing to do: every source key
//! present at the destination, same size, same ETag where comparable (and,
//! with `--delete`, nothing extra). S3 listings are strongly consistent since
//! 2020, so a mismatch is a real problem, never something to wait out.
//! Keys already in the report (failed, skipped) are not reported twice.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::DiffOptions;
use crate::diff::{Action, Pair, decide_with};
use crate::error::SyncError;
use crate::location::S3Location;
use crate::pieces::{PairSink, Sides, list_in_pieces};
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
    pub fn row(&self, source: &S3Location, destination: &S3Location) -> ReportRow {
        let side = if self.at_destination {
            destination
        } else {
            source
        };
        ReportRow::new(
            &side.bucket,
            &side.key_for(&self.key),
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
        locations: Arc::new((
            sides.source.location.clone(),
            sides.destination.location.clone(),
        )),
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
    locations: Arc<(S3Location, S3Location)>,
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
