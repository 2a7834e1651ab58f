//! Apply one planned [`Action`] and record its outcome.
//!
//! This is the unit of work of every runtime: the CLI's worker pool calls it
//! for each action off the channel, and the copier Lambda for each task of
//! a batch. Outcomes go to [`Stats`] and problems to [`ReportRows`],
//! so nothing that happens to an object is only logged.
//!
//! Deletes are the exception to one action at a time: they are gathered
//! ([`DeleteBatcher`]) and carried out a thousand at a time, each only
//! while its source key is still absent and its destination object is the
//! one listed ([`Mover::delete_listed`]).

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::backend::outcome::{CopyError, DeleteOutcome};
use crate::backend::transfer::Mover;
use crate::base::error::RetryClass;
use crate::engine::diff::{Action, SkipReason};
use crate::engine::prove::Proofs;
use crate::engine::written::WrittenKeys;
use crate::model::entry::{ObjectEntry, Side};
use crate::model::s3_shape::MAX_DELETE_KEYS;
use crate::report::{ReportRow, ReportRows, Stats, TaskStatus};

/// Whether an action that did not complete is worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    No,
    Worthwhile,
}

impl From<RetryClass> for Retry {
    fn from(class: RetryClass) -> Self {
        match class {
            RetryClass::Retryable => Retry::Worthwhile,
            RetryClass::NonRetryable => Retry::No,
        }
    }
}

/// What a worker needs, shared by all workers of a run.
#[derive(Clone)]
pub struct WorkContext {
    pub mover: Arc<Mover>,
    pub stats: Arc<Stats>,
    pub rows: Arc<ReportRows>,
    pub cancel: CancellationToken,
    /// Where the keys written are kept for verification (the CLI's run).
    pub written: Option<Arc<WrittenKeys>>,
    /// Deletes waiting to go out together (see [`DeleteBatcher`]).
    pub deletes: Arc<DeleteBatcher>,
    /// The ledger read and written, and the checksum comparisons.
    pub proofs: Arc<Proofs>,
    /// Fail-fast: told of every failure as it is counted, with whether a
    /// retry could help; it decides whether the run stops (the CLI against
    /// its own counts, the serverless copier against the run's shared
    /// ones) and cancels `cancel` if so.
    pub fail_fast: Option<FailureHook>,
}

/// See [`WorkContext::fail_fast`].
pub type FailureHook = Arc<dyn Fn(RetryClass) + Send + Sync>;

/// The CLI's fail-fast: cancel the run once its own failed objects pass
/// `threshold`.
pub fn fail_fast_locally(
    stats: Arc<Stats>,
    threshold: u64,
    cancel: CancellationToken,
) -> FailureHook {
    Arc::new(move |_| {
        if stats.snapshot().failed_objects() > threshold && !cancel.is_cancelled() {
            tracing::warn!(
                threshold,
                "failure threshold passed: stopping the run (fail-fast)"
            );
            cancel.cancel();
        }
    })
}

/// Deletes gathered into batches, so a bucket's objects go a thousand to a
/// DeleteObjects request rather than one DeleteObject each.
///
/// Shared by every worker of a run: the delete that fills the batch takes
/// it and its worker carries it out; whatever is left is carried out by
/// [`WorkContext::flush_deletes`] once the workers are done. Memory stays
/// bounded: at most [`MAX_DELETE_KEYS`] entries wait here, however many
/// deletes the run has, and the channel in front of the workers is bounded
/// as before.
#[derive(Debug)]
pub struct DeleteBatcher {
    pending: Mutex<Vec<ObjectEntry>>,
    /// Source checks (HEADs, or file stats) of one batch run this many at
    /// once: the run's concurrency, since a batch stands for that many
    /// workers' worth of deletes.
    concurrency: usize,
}

impl DeleteBatcher {
    pub fn new(concurrency: usize) -> Self {
        DeleteBatcher {
            pending: Mutex::new(Vec::new()),
            concurrency: concurrency.max(1),
        }
    }

    /// Add a delete; returns a full batch to carry out now.
    fn push(&self, entry: ObjectEntry) -> Option<Vec<ObjectEntry>> {
        let mut pending = self.pending.lock().expect("poisoned");
        pending.push(entry);
        (pending.len() >= MAX_DELETE_KEYS).then(|| std::mem::take(&mut *pending))
    }

    fn take(&self) -> Vec<ObjectEntry> {
        std::mem::take(&mut *self.pending.lock().expect("poisoned"))
    }
}

impl WorkContext {
    fn source_row(
        &self,
        key: &str,
        status: TaskStatus,
        code: &str,
        http: Option<u16>,
        message: &str,
    ) -> ReportRow {
        let (bucket, full_key) = self.mover.row_names(Side::Source, key);
        ReportRow::new(&bucket, &full_key, status, code, http, message)
    }

    fn wrote(&self, key: &str) {
        if let Some(written) = &self.written {
            written.record(key);
        }
    }

    /// Count an action not carried out because the run was stopped: the
    /// next run does it. Skips were never work.
    pub fn drop_action(&self, action: &Action) {
        if !matches!(action, Action::Skip { .. }) {
            tracing::debug!(key = %action.key(), "not started: the run was stopped");
            Stats::add(&self.stats.dropped, 1);
        }
    }

    /// Count a failure, and tell fail-fast of it.
    fn count_failure(&self, counter: &std::sync::atomic::AtomicU64, class: RetryClass) {
        Stats::add(counter, 1);
        if let Some(hook) = &self.fail_fast {
            hook(class);
        }
    }

    /// Count a planned action (both real runs and dry runs).
    pub fn record_plan(&self, action: &Action) {
        let names = |key: &str| self.mover.row_names(Side::Source, key);
        if let Some(row) = count_plan(&self.stats, action, names) {
            self.rows.push(action.key(), row);
        }
    }

    /// Refuse a deletion beyond `--max-delete`: a failure row, not a silent skip.
    pub fn refuse_delete(&self, key: &str, limit: u64) {
        self.refuse(
            key,
            "MaxDeleteExceeded",
            &format!("not deleted: --max-delete {limit} reached"),
        );
    }

    /// A delete not carried out, as a failure row.
    fn refuse(&self, key: &str, code: &str, message: &str) {
        self.count_failure(&self.stats.failed, RetryClass::NonRetryable);
        let (bucket, full_key) = self.mover.row_names(Side::Destination, key);
        self.rows.push(
            key,
            ReportRow::new(&bucket, &full_key, TaskStatus::Failed, code, None, message),
        );
    }

    /// Carry out one action. Skips are no-ops here (they were counted when
    /// planned). Returns [`Retry::Worthwhile`] when the action did not
    /// complete and trying again could help (throttling, a timeout, not
    /// started before cancellation): the copier Lambda hands such batches
    /// back to SQS; the CLI has already retried inside the SDK and reports.
    pub async fn apply(&self, action: Action) -> Retry {
        let s = &self.stats;
        match action {
            Action::Copy { .. } | Action::Update { .. } | Action::Compare { .. }
                if self.cancel.is_cancelled() =>
            {
                self.drop_action(&action);
                Retry::Worthwhile
            }
            Action::Copy { source } => self.copy(&source, &s.copied).await,
            Action::Update { source, .. } => self.copy(&source, &s.updated).await,
            // Counted once decided: as unchanged, or as the update it is.
            Action::Compare {
                source,
                destination,
            } => {
                let action = self
                    .proofs
                    .decide(&self.mover, source, destination, s)
                    .await;
                self.record_plan(&action);
                match action {
                    Action::Update { source, .. } => self.copy(&source, &s.updated).await,
                    _ => Retry::No,
                }
            }
            // Gathered, and carried out a batch at a time: the answer for
            // this one comes from the call that carries out its batch
            // (here, when it fills the batch, or `flush_deletes`).
            Action::Delete { destination } => match self.deletes.push(destination) {
                Some(batch) => self.delete_batch(batch).await,
                None => Retry::No,
            },
            Action::Skip { .. } => Retry::No,
        }
    }

    /// Carry out the deletes still gathered; call once the workers are
    /// done. After a cancellation they are dropped, like the actions still
    /// queued. Returns [`Retry::Worthwhile`] if a delete did not complete
    /// and trying again could help.
    pub async fn flush_deletes(&self) -> Retry {
        let batch = self.deletes.take();
        if batch.is_empty() {
            return Retry::No;
        }
        if self.cancel.is_cancelled() {
            tracing::debug!(deletes = batch.len(), "not started: cancelled");
            Stats::add(&self.stats.dropped, batch.len() as u64);
            return Retry::Worthwhile;
        }
        self.delete_batch(batch).await
    }

    /// Delete a batch of listed destination objects, each only while its
    /// source is still absent and the destination unchanged, and record
    /// what became of each.
    async fn delete_batch(&self, batch: Vec<ObjectEntry>) -> Retry {
        let outcomes = self
            .mover
            .delete_listed(&batch, self.deletes.concurrency)
            .await;
        let mut retry = Retry::No;
        for (entry, outcome) in batch.iter().zip(outcomes) {
            if self.record_delete(&entry.key, outcome) == Retry::Worthwhile {
                retry = Retry::Worthwhile;
            }
        }
        retry
    }

    fn record_delete(&self, key: &str, outcome: DeleteOutcome) -> Retry {
        let s = &self.stats;
        let (bucket, full_key) = self.mover.row_names(Side::Destination, key);
        let (row, retry) = match outcome {
            DeleteOutcome::Deleted => {
                Stats::add(&s.deleted, 1);
                self.wrote(key);
                return Retry::No;
            }
            DeleteOutcome::SourceReappeared => {
                Stats::add(&s.source_reappeared, 1);
                let row = ReportRow::new(
                    &bucket,
                    &full_key,
                    TaskStatus::Warning,
                    "SourceReappeared",
                    None,
                    "not deleted: the source key exists again (put back after it was listed); the next run copies it",
                );
                (row, Retry::No)
            }
            DeleteOutcome::DestinationChanged => {
                Stats::add(&s.destination_changed, 1);
                let row = ReportRow::new(
                    &bucket,
                    &full_key,
                    TaskStatus::Warning,
                    "DestinationChanged",
                    Some(412),
                    "not deleted: the destination object changed after it was listed (its ETag is not the one listed); the next run decides again",
                );
                (row, Retry::No)
            }
            DeleteOutcome::Failed(failure) => {
                self.count_failure(&s.failed, failure.class);
                let row = ReportRow::from_failure(&bucket, &full_key, TaskStatus::Failed, &failure);
                (row, Retry::from(failure.class))
            }
        };
        self.rows.push(key, row);
        retry
    }

    /// Refuse a delete task of a run that did not ask for deletes (a copier
    /// message that is not what its run's manifest planned): a failure
    /// row, and nothing deleted.
    pub fn refuse_unrequested_delete(&self, key: &str) {
        Stats::add(&self.stats.delete_not_requested, 1);
        self.refuse(
            key,
            "DeleteNotRequested",
            "not deleted: the run's manifest (run.json) does not have \"delete\": true, and a copier deletes only in a run that asked for deletes",
        );
    }

    async fn copy(
        &self,
        source: &crate::model::entry::ObjectEntry,
        done: &std::sync::atomic::AtomicU64,
    ) -> Retry {
        match self.mover.copy(source, &self.cancel).await {
            Ok(copied) => {
                Stats::add(done, 1);
                self.proofs.copied(&copied, source.size, &source.key);
                if copied.source_changed {
                    Stats::add(&self.stats.source_changed, 1);
                }
                self.wrote(&source.key);
                Stats::add(&self.stats.bytes_copied, copied.bytes);
                for warning in copied.warnings {
                    Stats::add(&self.stats.warnings, 1);
                    self.rows.push(
                        &source.key,
                        self.source_row(
                            &source.key,
                            TaskStatus::Warning,
                            "PartialCopy",
                            None,
                            &warning,
                        ),
                    );
                }
                Retry::No
            }
            Err(err) => {
                let retry = Retry::from(err.retry_class());
                self.record_copy_error(&source.key, err);
                retry
            }
        }
    }

    pub(crate) fn record_copy_error(&self, key: &str, err: CopyError) {
        let Some(reported) = err.reported() else {
            // Cancelled in flight (its upload aborted): not copied.
            Stats::add(&self.stats.dropped, 1);
            return;
        };
        let s = &self.stats;
        match err {
            CopyError::Archived(_) => Stats::add(&s.skipped_archived, 1),
            CopyError::SseC(_) => Stats::add(&s.skipped_sse_c, 1),
            CopyError::Vanished => Stats::add(&s.source_vanished, 1),
            _ => self.count_failure(&s.failed, err.retry_class()),
        }
        let (bucket, full_key) = self.mover.row_names(Side::Source, key);
        let row = ReportRow::new(
            &bucket,
            &full_key,
            reported.status,
            &reported.code,
            reported.http_status,
            &reported.message,
        );
        self.rows.push(key, row);
    }
}

/// Count a planned action; returns the warning row it calls for, if any
/// (an unverified pair). Shared by the CLI and the serverless lister.
/// `names` gives a source key's report columns (bucket and full key).
pub fn count_plan(
    s: &Stats,
    action: &Action,
    names: impl Fn(&str) -> (String, String),
) -> Option<ReportRow> {
    match action {
        Action::Copy { source } => {
            Stats::add(&s.plan_copy, 1);
            Stats::add(&s.plan_bytes, source.size);
        }
        Action::Update { source, .. } => {
            Stats::add(&s.plan_update, 1);
            Stats::add(&s.plan_bytes, source.size);
        }
        Action::Delete { .. } => Stats::add(&s.plan_delete, 1),
        // Counted when proven: as unchanged, or as an update.
        Action::Compare { .. } => {}
        Action::Skip { key, reason, .. } => match reason {
            SkipReason::Equal => Stats::add(&s.skip_equal, 1),
            SkipReason::Filtered => Stats::add(&s.skip_filtered, 1),
            SkipReason::FolderMarker => Stats::add(&s.skip_folder_markers, 1),
            SkipReason::NotModifiedSince => Stats::add(&s.skip_not_modified, 1),
            SkipReason::ExtraneousKept => Stats::add(&s.extraneous_kept, 1),
            SkipReason::Unverified => {
                Stats::add(&s.skip_unverified, 1);
                let (bucket, full_key) = names(key);
                return Some(ReportRow::new(
                    &bucket,
                    &full_key,
                    TaskStatus::Warning,
                    "Unverified",
                    None,
                    "same size and the copy is newer, but the ETags come from different multipart layouts and cannot prove equality",
                ));
            }
        },
    }
    None
}
