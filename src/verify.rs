//! Stage 4: verify. After the write phase, list both sides of the same range
//! again and check that the diff now finds nothing to do: every source key
//! present at the destination, same size, same ETag where comparable (and,
//! with `--delete`, nothing extra). S3 listings are strongly consistent since
//! 2020, so a mismatch is a real problem, never something to wait out.
//! Keys already in the report (failed, skipped) are not reported twice.

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::config::DiffOptions;
use crate::diff::{Action, decide_with, merge_join};
use crate::error::SyncError;
use crate::listing::{ListTarget, list_range};
use crate::location::KeyRange;
use crate::report::{ReportRow, ReportRows, Stats, TaskStatus};

pub async fn verify_range(
    source: ListTarget,
    destination: ListTarget,
    range: &KeyRange,
    diff: &DiffOptions,
    stats: &Stats,
    rows: &ReportRows,
    cancel: &CancellationToken,
) -> Result<(), SyncError> {
    let (source_bucket, source_loc) = (source.location.bucket.clone(), source.location.clone());
    let destination_loc = destination.location.clone();
    let pairs = merge_join(
        list_range(source, range.clone()),
        list_range(destination, range.clone()),
    );
    futures::pin_mut!(pairs);
    loop {
        let pair = tokio::select! {
            _ = cancel.cancelled() => return Err(SyncError::Cancelled),
            pair = pairs.next() => pair,
        };
        let Some(pair) = pair else { return Ok(()) };
        let (key, problem) = match decide_with(pair?, diff, false) {
            Action::Skip { key, .. } => {
                Stats::add(&stats.verify_checked, 1);
                (key, None)
            }
            Action::Copy { source } => {
                Stats::add(&stats.verify_checked, 1);
                (
                    source.key,
                    Some((
                        "MissingAtDestination",
                        "verify: the object is not at the destination".to_owned(),
                    )),
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
                (source.key, Some(("VerifyMismatch", why)))
            }
            Action::Delete { destination } => (
                destination.key,
                Some((
                    "ExtraneousAtDestination",
                    "verify: the object is still at the destination but not at the source"
                        .to_owned(),
                )),
            ),
        };
        if let Some((code, message)) = problem
            && !rows.already_reported(&key)
        {
            Stats::add(&stats.verify_mismatched, 1);
            let (bucket, full_key) = if code == "ExtraneousAtDestination" {
                (
                    destination_loc.bucket.clone(),
                    destination_loc.key_for(&key),
                )
            } else {
                (source_bucket.clone(), source_loc.key_for(&key))
            };
            rows.push(
                &key,
                ReportRow::new(&bucket, &full_key, TaskStatus::Failed, code, None, &message),
            );
        }
    }
}
