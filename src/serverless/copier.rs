//! The copier: SQS batches in, server-side copies out, one result object per
//! batch.
//!
//! Each message is a [`CopyBatch`]. Its tasks run with bounded concurrency
//! through the same [`WorkContext::apply`] the CLI's workers use, so copies
//! are conditional on the listed ETag, multipart above the threshold, and
//! abort their uploads on failure. Then:
//!
//! - all tasks settled (copied, or failed for good): the batch is counted
//!   done, once, in the run counters ([`crate::serverless::counters`]), its
//!   report rows (if any) go to `rows/BATCH/DELIVERY.json`, its record to
//!   `results/BATCH.json`, and the message is done;
//! - some failed in a way a retry can help (throttling, timeouts, not
//!   started before the deadline): the message is returned in
//!   `batchItemFailures` and SQS redelivers it after its visibility timeout;
//!   no result is written, so nothing is counted twice;
//! - on the last receive SQS allows (`maxReceiveCount`), failures are
//!   recorded in the result instead, so every batch ends in a result.
//!
//! Delete tasks delete only in a run whose manifest (`run.json`) has
//! `"delete": true`; in any other run each is a `DeleteNotRequested` failure
//! row and deletes nothing. Each delete is also conditional, on the source
//! key still being absent (a HEAD) and on the destination object still
//! having the ETag the lister saw, and a batch's deletes go out together in
//! one DeleteObjects request ([`WorkContext::flush_deletes`]). So a batch
//! redriven from the dead-letter queue days later deletes nothing that came
//! back or changed since.
//!
//! A history task (`all_versions`) lists its key's versions on both sides
//! and aligns them before it appends what the destination lacks, oldest
//! first ([`histories::append_key`]): a batch delivered twice, or after the
//! source gained versions, appends only what is missing then.
//!
//! A redelivered batch first checks which of its objects already arrived
//! (HEAD at the destination, same ETag and size) and counts those as copied
//! instead of copying them again; for one that arrived in parts, it also
//! aborts any upload a killed attempt left open for it.
//!
//! Metrics: one EMF record per message (a batch), not per invocation, so a
//! record names its run and batch (properties `run_id`, `batch_id`). Its
//! object counts are the ones its result records, and a delivery that hands
//! the batch back reports none (the delivery that writes the result counts
//! them, arrived objects included), so over a run they add up to
//! summary.json's; only a duplicate delivery, which really copies twice,
//! is counted twice. A delivery that finds its batch already counted done
//! copies nothing and says so (`duplicate`: true, no objects). Retries,
//! throttles and the duration are every delivery's, handed back or not:
//! that is where throttling shows.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use lambda_runtime::{Diagnostic, LambdaEvent};
use tokio_util::sync::CancellationToken;

use crate::backend::s3::multipart::abort_other_uploads;
use crate::base::error::{RetryClass, SyncError};
use crate::base::metrics::RequestCounter;
use crate::engine::histories;
use crate::engine::worker::{DeleteBatcher, Retry, WorkContext};
use crate::model::s3_shape::{EtagShape, etag_shape};
use crate::report::emf::{self, MetricRecord, Unit, Work};
use crate::report::{Counts, ReportRow, ReportRows, Stats, StopReason, TaskStatus};
use crate::serverless::FunctionEnv;
use crate::serverless::contract::{BatchResult, CopyBatch, CopyTask};
use crate::serverless::env::RunContext;
use crate::serverless::stop::{self, StopWatch};
use crate::serverless::{parts, ranges};

pub fn result_name(batch_id: &str) -> String {
    format!("results/{batch_id}.json")
}

/// Where one delivery of a batch leaves its report rows: named by the
/// delivery, so a duplicate delivery's rows never replace the counted
/// one's; the done marker in the run counters names the counted one.
pub fn rows_name(batch_id: &str, receive_count: u32, started_at_ms: i64) -> String {
    format!("rows/{batch_id}/{receive_count:03}-{started_at_ms}.json")
}

pub async fn handle(
    event: LambdaEvent<SqsEvent>,
    env: &FunctionEnv,
) -> Result<SqsBatchResponse, Diagnostic> {
    let deadline = event.context.deadline();
    let function = emf::function_name(&event.context.env_config.function_name, "copier");
    let (response, deliveries) = copy_and_measure(env, event.payload.records, deadline).await;
    for delivery in &deliveries {
        emf::emit(&delivery.record(&function));
    }
    Ok(response)
}

/// Handle every message; the response names the ones to hand back to SQS.
pub async fn copy_messages(
    env: &FunctionEnv,
    records: Vec<SqsMessage>,
    deadline: SystemTime,
) -> SqsBatchResponse {
    copy_and_measure(env, records, deadline).await.0
}

/// [`copy_messages`], and what each message's delivery did.
async fn copy_and_measure(
    env: &FunctionEnv,
    records: Vec<SqsMessage>,
    deadline: SystemTime,
) -> (SqsBatchResponse, Vec<Delivery>) {
    let watches = watch_runs(env, &records).await;
    let deliveries = futures::future::join_all(records.iter().map(|record| {
        let watch = run_of(record).and_then(|run| watches.get(&run));
        copy_message(env, record, deadline, watch)
    }))
    .await;
    let mut response = SqsBatchResponse::default();
    for (record, delivery) in records.iter().zip(&deliveries) {
        if delivery.hand_back {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = record.message_id.clone().unwrap_or_default();
            response.batch_item_failures.push(failure);
        }
    }
    (response, deliveries)
}

/// The run a message's batch belongs to, read without parsing the batch.
fn run_of(record: &SqsMessage) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct RunOnly {
        run_id: String,
    }
    let body = record.body.as_deref()?;
    Some(serde_json::from_str::<RunOnly>(body).ok()?.run_id)
}

/// A watch of the stop mark of each run the messages belong to (almost
/// always one), started before anything is copied.
async fn watch_runs(
    env: &FunctionEnv,
    records: &[SqsMessage],
) -> std::collections::HashMap<String, StopWatch> {
    let mut watches = std::collections::HashMap::new();
    let Ok(counters) = env.counters() else {
        return watches;
    };
    for run in records.iter().filter_map(run_of) {
        if let std::collections::hash_map::Entry::Vacant(entry) = watches.entry(run) {
            let watch = StopWatch::start(counters, entry.key()).await;
            entry.insert(watch);
        }
    }
    watches
}

/// One message's delivery, for its metrics.
#[derive(Debug)]
struct Delivery {
    hand_back: bool,
    /// None for a message that is not a batch.
    run_id: Option<String>,
    batch_id: Option<String>,
    receive_count: u32,
    /// The result's counts, when this delivery wrote one.
    counts: Option<Counts>,
    /// It found its batch counted done by an earlier delivery and copied
    /// nothing: its record stands for no batch (its counts are zero).
    duplicate: bool,
    requests: RequestCounter,
    started: Instant,
    /// Where the batch's time went, for the dashboards and for
    /// `scripts/bench-serverless.sh`: the serverless path's own costs next
    /// to the copies.
    times: BatchTimes,
}

/// One delivery's time, in milliseconds, by what it waited on.
#[derive(Debug, Default, Clone, Copy)]
struct BatchTimes {
    /// From SQS accepting the batch (its `SentTimestamp`) to this handler
    /// taking it: the queue, the poller and the invocation. None without
    /// the attribute.
    queued: Option<i64>,
    /// Copying the batch's tasks. The rest of the delivery's
    /// `BatchDuration`, but for the result and the handoff, is reading the
    /// run's manifest and whether the batch was counted before.
    copy: Option<Duration>,
    /// Recording the result: rows, the count in the run counters, the
    /// batch's record and its second in the timeline.
    result: Option<Duration>,
    /// Looking whether the batch's range is all copied, and if so sending
    /// it to VALIDATE.
    handoff: Option<Duration>,
}

impl BatchTimes {
    fn add_to(self, mut record: MetricRecord) -> MetricRecord {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        if let Some(queued) = self.queued {
            record = record.value("BatchQueueTime", Unit::Milliseconds, queued.max(0) as f64);
        }
        if let Some(copy) = self.copy {
            record = record.value("BatchCopyTime", Unit::Milliseconds, ms(copy));
        }
        if let Some(result) = self.result {
            record = record.value("BatchResultTime", Unit::Milliseconds, ms(result));
        }
        if let Some(handoff) = self.handoff {
            record = record.value("BatchHandoffTime", Unit::Milliseconds, ms(handoff));
        }
        record
    }
}

/// Milliseconds from SQS accepting `record` to `now_ms`: its
/// `SentTimestamp`, which Lambda's SQS events carry
/// (<https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html>, "Example
/// standard queue message event").
fn queued_ms(record: &SqsMessage, now_ms: i64) -> Option<i64> {
    let sent: i64 = record.attributes.get("SentTimestamp")?.parse().ok()?;
    Some(now_ms - sent)
}

impl Delivery {
    fn record(&self, function_name: &str) -> MetricRecord {
        let counts = self.counts.clone().unwrap_or_default();
        let work = Work {
            objects_copied: counts.copied + counts.updated,
            bytes_copied: counts.bytes_copied,
            objects_skipped: counts.skipped_archived
                + counts.skipped_sse_c
                + counts.source_vanished
                + counts.source_reappeared
                + counts.destination_changed,
            objects_failed: counts.failed,
            ..Work::default()
        }
        .requests(&self.requests);
        let record = emf::function_record(function_name, &work, self.started.elapsed());
        let mut record = self
            .times
            .add_to(record)
            .value("ObjectsDeleted", Unit::Count, counts.deleted as f64)
            .property("receive_count", self.receive_count.into())
            .property("handed_back", self.hand_back.into())
            .property("duplicate", self.duplicate.into());
        for (name, value) in [("run_id", &self.run_id), ("batch_id", &self.batch_id)] {
            if let Some(value) = value {
                record = record.property(name, value.as_str().into());
            }
        }
        record
    }
}

/// Copy one message's batch and write its result, or decide to hand it
/// back to SQS.
async fn copy_message(
    env: &FunctionEnv,
    record: &SqsMessage,
    deadline: SystemTime,
    watch: Option<&StopWatch>,
) -> Delivery {
    let receive_count: u32 = record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    let mut delivery = Delivery {
        hand_back: true,
        run_id: None,
        batch_id: None,
        receive_count,
        counts: None,
        duplicate: false,
        // Counted per delivery, so a result carries its batch's retries only.
        requests: RequestCounter::new(),
        started: Instant::now(),
        times: BatchTimes::default(),
    };
    let started_at_ms = emf::now_ms();
    delivery.times.queued = queued_ms(record, started_at_ms);
    let last = receive_count >= env.config.max_receive_count;
    let batch = match CopyBatch::parse(record.body.as_deref().unwrap_or_default()) {
        Ok(batch) => batch,
        Err(err) => {
            // Nothing to copy and no run to report to: it can only end in
            // the dead-letter queue, where someone can read it.
            tracing::error!(message_id = ?record.message_id, error = %err, "unreadable message");
            return delivery;
        }
    };
    delivery.run_id = Some(batch.run_id.clone());
    delivery.batch_id = Some(batch.batch_id.clone());
    let stopped = watch.is_some_and(StopWatch::is_stopped);
    let (result, validates) = match env.run(&batch.run_id).await {
        Ok(run) if stopped => {
            // Dropped whole: nothing copied, the message deleted (SQS must
            // not deliver it again), its tasks counted dropped. Its part
            // tasks' upload is aborted, so none stays open.
            tracing::info!(batch = %batch.batch_id, receive_count, "the run is stopped: the batch is dropped");
            (drop_batch(env, &run, &batch, receive_count).await, false)
        }
        Ok(run) if counted_before(env, &batch).await => {
            // Another delivery copied it and counted it done: copying again
            // would only write the same objects anew, perhaps after
            // VALIDATE proved them (their ETags changed under KMS).
            tracing::info!(batch = %batch.batch_id, receive_count, "counted done by an earlier delivery; not copied again");
            delivery.duplicate = true;
            (
                Ok(BatchResult::nothing(&batch, receive_count)),
                run.manifest.settings.validate,
            )
        }
        Ok(run) => {
            let counter = &delivery.requests;
            let copying = Instant::now();
            let result = copy_batch(
                env,
                &run,
                (&batch, receive_count, last),
                (deadline, watch),
                counter,
            )
            .await;
            delivery.times.copy = Some(copying.elapsed());
            // A run stopped while the batch copied sends no VALIDATE.
            let validates =
                run.manifest.settings.validate && !watch.is_some_and(StopWatch::is_stopped);
            (result, validates)
        }
        Err(err) => {
            tracing::error!(batch = %batch.batch_id, error = %err, "the run's manifest is unavailable");
            if !last {
                return delivery;
            }
            (Ok(unavailable_result(&batch, receive_count, &err)), false)
        }
    };
    let Ok(mut result) = result else {
        return delivery;
    };
    result.started_at_ms = Some(started_at_ms);
    result.finished_at_ms = Some(emf::now_ms());
    let settling = Instant::now();
    let settled = settle_batch(env, &batch, &result, validates).await;
    delivery.times.result = Some(settling.elapsed());
    match settled {
        Ok(counted) => {
            tracing::info!(batch = %batch.batch_id, receive_count, counted, copied = result.counts.copied + result.counts.updated, failed = result.counts.failed, "batch done");
            delivery.hand_back = false;
            delivery.counts = Some(result.counts);
            // Also on a redelivery of a counted batch: the delivery that
            // counted it may have died before it looked.
            if let (Some(shard), true) = (batch.range, validates) {
                let handing = Instant::now();
                let retry = receive_count > 1;
                let handed = ranges::validate_when_copied(env, &batch.run_id, shard, retry).await;
                delivery.times.handoff = Some(handing.elapsed());
                if let Err(err) = handed {
                    tracing::warn!(batch = %batch.batch_id, shard, error = %err, "could not look whether the range is copied; VALIDATE lists it when the write phase ends");
                }
            }
        }
        Err(err) => {
            tracing::error!(batch = %batch.batch_id, error = %err, "could not record the batch's result");
        }
    }
    delivery
}

/// Whether an earlier delivery of `batch` counted it done (one read of its
/// marker); `false` when that cannot be read, and the batch is copied.
async fn counted_before(env: &FunctionEnv, batch: &CopyBatch) -> bool {
    let Ok(counters) = env.counters() else {
        return false;
    };
    let ids = [batch.batch_id.clone()];
    match counters.done(&batch.run_id, &ids).await {
        Ok(done) => done.contains_key(&batch.batch_id),
        Err(err) => {
            tracing::warn!(batch = %batch.batch_id, error = %err, "could not read whether the batch is done; copying it");
            false
        }
    }
}

/// Record a batch's result: its rows (if any) under this delivery's name,
/// then its count, once per batch, in the run counters; then the batch's
/// own record, `results/BATCH.json`, and its place in the timeline. `Ok(false)`:
/// an earlier delivery was counted, and this one changes nothing but a
/// missing record. An error
/// hands the message back: nothing was counted.
async fn settle_batch(
    env: &FunctionEnv,
    batch: &CopyBatch,
    result: &BatchResult,
    validates: bool,
) -> Result<bool, SyncError> {
    let started_at_ms = result.started_at_ms.unwrap_or_default();
    let rows = (!result.rows.is_empty())
        .then(|| rows_name(&batch.batch_id, result.receive_count, started_at_ms));
    if let Some(rows) = &rows {
        env.store.put_json(&batch.run_id, rows, result).await?;
    }
    let counters = env.counters()?;
    let counted = counters
        .record_done(
            &batch.run_id,
            &batch.batch_id,
            &result.counts,
            (rows.as_deref(), batch.range.filter(|_| validates)),
        )
        .await?;
    if counted {
        // The counted delivery's record; the report does not read it.
        if let Err(err) = env
            .store
            .put_json(&batch.run_id, &result_name(&batch.batch_id), result)
            .await
        {
            tracing::warn!(batch = %batch.batch_id, error = %err, "the batch's record was not written; it is counted");
        }
        let times = (started_at_ms, result.finished_at_ms.unwrap_or_default());
        counters
            .record_times(&batch.run_id, times, &result.counts)
            .await;
    } else {
        // The delivery that counted the batch may have been killed between
        // its count and its record. This delivery's result stands in (with
        // its own receive count) unless that record exists: one PUT, only
        // on a redelivery of a counted batch.
        let written = match serde_json::to_vec(result) {
            Ok(body) => env
                .store
                .put_if_absent(&batch.run_id, &result_name(&batch.batch_id), body)
                .await
                .map(drop),
            Err(err) => Err(SyncError::Report(err.to_string())),
        };
        if let Err(err) = written {
            tracing::warn!(batch = %batch.batch_id, error = %err, "the batch's record was not written; it is counted");
        }
    }
    Ok(counted)
}

/// Every task of a batch failed because the run could not be read.
fn unavailable_result(batch: &CopyBatch, receive_count: u32, err: &SyncError) -> BatchResult {
    let mut counts = Counts::default();
    let rows = batch
        .tasks
        .iter()
        .map(|task| {
            counts.failed += 1;
            ReportRow::new(
                "",
                task.key(),
                TaskStatus::Failed,
                "RunUnavailable",
                None,
                &err.to_string(),
            )
        })
        .collect();
    BatchResult {
        run_id: batch.run_id.clone(),
        batch_id: batch.batch_id.clone(),
        receive_count,
        counts,
        rows,
        started_at_ms: None,
        finished_at_ms: None,
    }
}

/// Copy a batch's tasks, counting their requests in `counter`. `Err(())`:
/// hand the message back, write nothing.
async fn copy_batch(
    env: &FunctionEnv,
    run: &Arc<RunContext>,
    (batch, receive_count, last): (&CopyBatch, u32, bool),
    (deadline, watch): (SystemTime, Option<&StopWatch>),
    counter: &RequestCounter,
) -> Result<BatchResult, ()> {
    let rows = match ReportRows::new() {
        Ok(rows) => Arc::new(rows),
        Err(err) => {
            tracing::error!(error = %err, "no temporary space for the report rows");
            return Err(());
        }
    };
    let context = WorkContext {
        mover: Arc::new(crate::backend::transfer::Mover::Buckets(
            run.copier.counted(counter),
        )),
        stats: Arc::new(Stats::default()),
        rows: rows.clone(),
        // Cancelled when the run is stopped: no task starts after that,
        // and multipart copies in flight abort their uploads.
        cancel: watch.map_or_else(CancellationToken::new, StopWatch::token),
        written: None, // the VALIDATE phase lists again
        // A batch's deletes (at most its 100 tasks) go out together.
        deletes: Arc::new(DeleteBatcher::new(env.config.copy_concurrency)),
        // No ledger in the serverless runtime yet; listers plan no Compare.
        proofs: Arc::default(),
        fail_fast: None,
    };
    let fail_fast = watch
        .filter(|_| run.options.fail_fast)
        .and_then(|watch| FailFast::new(env, run, watch, last));
    let context = WorkContext {
        fail_fast: fail_fast.as_ref().map(FailFast::hook),
        ..context
    };
    let stop_at = crate::serverless::stop_starting_at(deadline);
    let redelivered = receive_count > 1;
    // Above both this and the multipart threshold, an object is split into
    // part tasks rather than copied within this invocation.
    let split_above = env
        .config
        .split_object_bytes
        .max(run.options.copy.multipart_threshold);
    let retries: Vec<Retry> = futures::stream::iter(batch.tasks.iter().cloned().enumerate())
        .map(|(index, task)| {
            let context = context.clone();
            async move {
                if let CopyTask::Parts(group) = &task {
                    if context.cancel.is_cancelled() {
                        return parts::drop_group(env, run, &context, group).await;
                    }
                    return parts::copy_group(env, run, &context, &batch.batch_id, group, last)
                        .await;
                }
                if context.cancel.is_cancelled() {
                    Stats::add(&context.stats.dropped, 1);
                    return Retry::No;
                }
                // A delete task deletes only in a run that asked for
                // deletes: a message is not proof of that (one redriven
                // from the dead-letter queue into another stack's or
                // run's queue, or written by hand, says what it likes).
                if matches!(task, CopyTask::Delete { .. }) && !run.options.diff.delete {
                    context.refuse_unrequested_delete(task.key());
                    return Retry::No;
                }
                if let CopyTask::History { key, .. } = &task {
                    // Listed and aligned again here, so a redelivery
                    // appends only what is still missing.
                    if SystemTime::now() >= stop_at {
                        return not_started(&context, &task, last);
                    }
                    let copier = context.mover.copier();
                    let outcome = histories::append_key(copier, key, &context.cancel).await;
                    return histories::record(&context, key, outcome);
                }
                if redelivered && already_copied(&context, &task).await {
                    return Retry::No;
                }
                if SystemTime::now() >= stop_at {
                    return not_started(&context, &task, last);
                }
                let update = matches!(task, CopyTask::Update { .. });
                match task {
                    CopyTask::Copy { object } | CopyTask::Update { object }
                        if object.size > split_above =>
                    {
                        parts::split(
                            env,
                            run,
                            &context,
                            (&batch.batch_id, batch.range),
                            index,
                            &object,
                            update,
                            last,
                        )
                        .await
                    }
                    task => match task.into_action() {
                        Some(action) => context.apply(action).await,
                        None => Retry::No,
                    },
                }
            }
        })
        .buffer_unordered(env.config.copy_concurrency)
        .collect()
        .await;
    // The batch's deletes, gathered above, in one conditional request.
    let mut retries = retries;
    retries.push(context.flush_deletes().await);
    if let Some(fail_fast) = &fail_fast {
        fail_fast.settle().await;
    }
    let worth_retrying = retries.iter().filter(|r| **r == Retry::Worthwhile).count();
    // A stopped run's batch is settled as it stands: what it did not do is
    // counted dropped, and SQS must not deliver it again.
    let stopped = context.cancel.is_cancelled();
    if worth_retrying > 0 && !last && !stopped {
        tracing::warn!(batch = %batch.batch_id, receive_count, worth_retrying, "handing the batch back for another attempt");
        return Err(());
    }
    let rows = rows.read_all().map_err(|err| {
        tracing::error!(error = %err, "could not read the report rows back");
    })?;
    Ok(BatchResult {
        run_id: batch.run_id.clone(),
        batch_id: batch.batch_id.clone(),
        receive_count,
        counts: Counts {
            retries: counter.retries(),
            ..context.stats.snapshot()
        },
        rows,
        started_at_ms: None,
        finished_at_ms: None,
    })
}

/// A batch of a stopped run, settled without copying: each task counted
/// dropped, part tasks' uploads aborted.
async fn drop_batch(
    env: &FunctionEnv,
    run: &Arc<RunContext>,
    batch: &CopyBatch,
    receive_count: u32,
) -> Result<BatchResult, ()> {
    let stats = Arc::new(Stats::default());
    let rows = ReportRows::new().map_err(|err| {
        tracing::error!(error = %err, "no temporary space for the report rows");
    })?;
    let cancelled = CancellationToken::new();
    cancelled.cancel();
    let context = WorkContext {
        mover: Arc::new(crate::backend::transfer::Mover::Buckets(
            run.copier.as_ref().clone(),
        )),
        stats: stats.clone(),
        rows: Arc::new(rows),
        cancel: cancelled,
        written: None,
        deletes: Arc::new(DeleteBatcher::new(1)),
        proofs: Arc::default(),
        fail_fast: None,
    };
    for task in &batch.tasks {
        match task {
            CopyTask::Parts(group) => {
                parts::drop_group(env, run, &context, group).await;
            }
            _ => Stats::add(&stats.dropped, 1),
        }
    }
    let mut result = BatchResult::nothing(batch, receive_count);
    result.counts = Counts {
        dropped_batches: 1,
        ..stats.snapshot()
    };
    Ok(result)
}

/// Serverless fail-fast: each failure that will not be retried is added to
/// the run's shared count as it happens; the copier that sees the count
/// pass the threshold marks the run stopped ([`stop::mark`]), and stops
/// its own tasks at once.
struct FailFast {
    counters: crate::serverless::counters::RunCounters,
    run_id: String,
    threshold: u64,
    last_receive: bool,
    stop: crate::serverless::stop::StopHandle,
    pending: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl FailFast {
    fn new(
        env: &FunctionEnv,
        run: &RunContext,
        watch: &StopWatch,
        last_receive: bool,
    ) -> Option<Self> {
        Some(FailFast {
            counters: env.counters().ok()?.clone(),
            run_id: run.manifest.run_id.clone(),
            threshold: run.manifest.settings.failure_threshold,
            last_receive,
            stop: watch.handle(),
            pending: Arc::default(),
        })
    }

    fn hook(&self) -> crate::engine::worker::FailureHook {
        let (counters, run_id, threshold, last_receive, stop, pending) = (
            self.counters.clone(),
            self.run_id.clone(),
            self.threshold,
            self.last_receive,
            self.stop.clone(),
            self.pending.clone(),
        );
        Arc::new(move |class| {
            // A failure a redelivery may still cure is not one yet.
            if class == RetryClass::Retryable && !last_receive {
                return;
            }
            let (counters, run_id, stop) = (counters.clone(), run_id.clone(), stop.clone());
            let task = tokio::spawn(async move {
                let failures = match stop::add_failures(&counters, &run_id, 1).await {
                    Ok(failures) => failures,
                    Err(err) => {
                        tracing::warn!(run_id, error = %err, "could not count a failure for fail-fast");
                        return;
                    }
                };
                if failures <= threshold {
                    return;
                }
                let reason = StopReason::FailureThreshold {
                    threshold,
                    failures,
                };
                match stop::mark(&counters, &run_id, reason).await {
                    Ok(marked) => {
                        tracing::warn!(run_id, reason = %marked.mark().reason.describe(), "fail-fast: the run is stopped");
                        stop.stopped(marked.mark());
                    }
                    Err(err) => {
                        tracing::error!(run_id, error = %err, "fail-fast: could not mark the run stopped");
                    }
                }
            });
            pending.lock().expect("fail-fast tasks").push(task);
        })
    }

    /// Wait for the counts and marks started, before the invocation ends.
    async fn settle(&self) {
        let tasks = std::mem::take(&mut *self.pending.lock().expect("fail-fast tasks"));
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// A task not started for lack of time: retried, or on the last receive a
/// failure row.
fn not_started(context: &WorkContext, task: &CopyTask, last: bool) -> Retry {
    if last {
        Stats::add(&context.stats.failed, 1);
        let copier = context.mover.copier();
        context.rows.push(
            task.key(),
            ReportRow::new(
                &copier.source.bucket,
                &copier.source.key_for(task.key()),
                TaskStatus::Failed,
                "NotStarted",
                None,
                "the copier ran out of time on the message's last delivery; the next run will copy it",
            ),
        );
    }
    Retry::Worthwhile
}

/// On redelivery: did an earlier attempt already copy this object?
async fn already_copied(context: &WorkContext, task: &CopyTask) -> bool {
    let (CopyTask::Copy { object } | CopyTask::Update { object }) = task else {
        // A delete checks for itself: a key an earlier attempt deleted is
        // absent at both sides, and its conditional delete answers
        // NoSuchKey, which counts as deleted.
        return false;
    };
    let copier = context.mover.copier();
    let head = copier
        .destination_client
        .head_object()
        .bucket(&copier.destination.bucket)
        .key(copier.destination.key_for(&object.key))
        .set_expected_bucket_owner(copier.options.expected_dest_owner.clone())
        .send()
        .await;
    let Ok(head) = head else { return false };
    let same = head.e_tag().map(|e| e.trim_matches('"')) == Some(object.etag.as_str())
        && head.content_length() == Some(object.size as i64);
    // An object that arrived in parts (a `-N` ETag, the same as its
    // source's) may have been copied by one attempt while another, killed,
    // left its own upload open: no new copy starts, so the clean-up at the
    // start of a multipart copy never runs for it. It runs here instead.
    if same && matches!(etag_shape(&object.etag), EtagShape::Multipart(_)) {
        abort_other_uploads(copier, object, "").await;
    }
    if same {
        let stats = &context.stats;
        let counter = match task {
            CopyTask::Update { .. } => &stats.updated,
            _ => &stats.copied,
        };
        Stats::add(counter, 1);
        Stats::add(&stats.bytes_copied, object.size);
    }
    same
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(counts: Option<Counts>) -> Delivery {
        Delivery {
            hand_back: counts.is_none(),
            run_id: Some("run".into()),
            batch_id: Some("00001-00000-0000".into()),
            receive_count: 2,
            counts,
            duplicate: false,
            requests: RequestCounter::new(),
            started: Instant::now(),
            times: BatchTimes::default(),
        }
    }

    fn record(delivery: &Delivery) -> serde_json::Value {
        let lines = delivery.record("stack-copier").lines(0);
        assert_eq!(lines.len(), 1);
        crate::report::emf::validate_line(&lines[0]).expect("valid EMF")
    }

    #[test]
    fn a_delivery_that_wrote_its_result_reports_the_results_counts() {
        let counts = Counts {
            copied: 3,
            updated: 1,
            bytes_copied: 4096,
            failed: 2,
            skipped_archived: 1,
            deleted: 5,
            ..Counts::default()
        };
        let record = record(&delivery(Some(counts)));
        assert_eq!(record["ObjectsCopied"], 4.0);
        assert_eq!(record["BytesCopied"], 4096.0);
        assert_eq!(record["ObjectsFailed"], 2.0);
        assert_eq!(record["ObjectsSkipped"], 1.0);
        assert_eq!(record["ObjectsDeleted"], 5.0);
        assert_eq!(record["run_id"], "run");
        assert_eq!(record["batch_id"], "00001-00000-0000");
        assert_eq!(record["handed_back"], false);
    }

    #[test]
    fn a_delivery_reports_where_its_batch_waited_copied_and_was_recorded() {
        // GIVEN a batch SQS accepted 1,250 ms before its copier took it
        let mut message = SqsMessage::default();
        message
            .attributes
            .insert("SentTimestamp".into(), "1700000000000".into());
        let mut timed = delivery(Some(Counts::default()));
        timed.times = BatchTimes {
            queued: queued_ms(&message, 1_700_000_001_250),
            copy: Some(Duration::from_millis(420)),
            result: Some(Duration::from_millis(35)),
            handoff: Some(Duration::from_millis(12)),
        };
        // THEN its record has each share in milliseconds
        let reported = record(&timed);
        assert_eq!(reported["BatchQueueTime"], 1250.0);
        assert_eq!(reported["BatchCopyTime"], 420.0);
        assert_eq!(reported["BatchResultTime"], 35.0);
        assert_eq!(reported["BatchHandoffTime"], 12.0);
        // AND a message without the attribute reports no queue time
        assert_eq!(queued_ms(&SqsMessage::default(), 1), None);
        assert!(record(&delivery(None)).get("BatchQueueTime").is_none());
    }

    #[test]
    fn a_delivery_that_handed_its_batch_back_reports_no_objects_but_its_requests() {
        // Its copies are counted by the delivery that writes the result.
        let record = record(&delivery(None));
        assert_eq!(record["ObjectsCopied"], 0.0);
        assert_eq!(record["ObjectsFailed"], 0.0);
        assert_eq!(record["handed_back"], true);
        assert!(record["Retries"].is_number() && record["Throttles"].is_number());
        assert!(record["BatchDuration"].as_f64().unwrap() >= 0.0);
    }
}
