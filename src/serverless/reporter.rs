//! The reporter: progress (are all batches done?) and the run's report.
//!
//! Progress is exact and costs the same at a hundred batches or a million:
//! the batches counted sent against those counted done, in the run
//! counters ([`crate::serverless::counters`], two Queries). Queue depth is
//! only consulted to notice that nothing is left to wait for (a batch lost
//! to the dead-letter queue without a result, which only a copier crash on
//! its last receive causes).
//!
//! The report adds up the counters, the checkpoints and the report rows of
//! the batches that have some into the same `summary.json` and
//! `failures.csv` the CLI writes, in the run's folder, with a timeline of
//! the copies and the run's phases (from the counters' seconds and the
//! checkpoints' timestamps). It reads no batch result without rows.
//!
//! Each invocation reports one EMF record: a progress check its
//! `BatchesSent` and `BatchesDone`; both the common figures, whose object
//! counts are zero (the copiers report the copies; the run's totals are in
//! summary.json).

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::base::error::SyncError;
use crate::base::metrics::RequestCounter;
use crate::model::location::{ReportLocation, S3Location};
use crate::model::polling::{eta_bounded, eta_secs, poll_wait_secs};
use crate::report::deliver::{RunRecord, deliver};
use crate::report::emf::{self, Unit, Work};
use crate::report::timeline::MAX_POINTS;
use crate::report::{
    Counts, PhaseTiming, ReportRow, ReportRows, StopReason, TaskStatus, TimelinePoint,
};
use crate::serverless::FunctionEnv;
use crate::serverless::contract::{
    BatchResult, Checkpoint, Phase, Progress, ReportOutcome, RunManifest, SentBatch,
};
use crate::serverless::counters::{RunCounters, RunTotals, Tick};
use crate::serverless::store::RunStore;
use crate::serverless::{proofs, stop};

/// Polls with an empty queue and missing results before the run stops
/// waiting for them.
const IDLE_POLLS_BEFORE_GIVING_UP: u32 = 3;

/// The longest wait between polls of a stopped run, `polls` since it was
/// seen stopped. It settles within seconds of its mark, so its report
/// should not wait for the run's pace: 2 s, growing 2 s a poll to a
/// minute, since a batch whose copier was killed settles only when SQS
/// delivers it again (up to the work queue's visibility timeout, 90 min
/// for the template's copier), and 2 s polls for that long would fill the
/// execution's history (9 events a poll, 25,000 at most).
fn stopped_wait_secs(polls: u32) -> u64 {
    (2 * u64::from(polls)).clamp(2, 60)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ReporterEvent {
    Progress {
        run_id: String,
        /// The listing pass waited for.
        #[serde(default)]
        phase: Phase,
        #[serde(default)]
        idle_polls: u32,
        #[serde(default)]
        polls: u32,
        /// Results counted at the previous poll.
        #[serde(default)]
        batches_done: u64,
        /// Ranges counted done at the previous poll.
        #[serde(default)]
        ranges_done: u64,
        /// Seconds waited between the pass's polls so far.
        #[serde(default)]
        waited_secs: u64,
        /// The wait that ended with this poll: the pace since the last poll
        /// is measured over it, to cut the next wait to the pass's end.
        #[serde(default)]
        wait_seconds: u64,
        /// Polls since the run was seen stopped.
        #[serde(default)]
        stopped_polls: u32,
    },
    Report {
        run_id: String,
        /// The error a Catch in the state machine caught, if the run broke.
        #[serde(default)]
        error: Option<Value>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReporterOutput {
    Progress(Progress),
    Report(Box<ReportOutcome>),
}

impl ReporterEvent {
    /// What the last poll saw, as the state machine hands it back (its
    /// `$.progress`); a default for a report event.
    fn last_poll(&self) -> Progress {
        match self {
            ReporterEvent::Progress {
                run_id,
                phase,
                idle_polls,
                polls,
                batches_done,
                ranges_done,
                waited_secs,
                wait_seconds,
                stopped_polls,
            } => Progress {
                run_id: run_id.clone(),
                phase: *phase,
                idle_polls: *idle_polls,
                polls: *polls,
                batches_done: *batches_done,
                ranges_done: *ranges_done,
                waited_secs: *waited_secs,
                wait_seconds: *wait_seconds,
                stopped_polls: *stopped_polls,
                ..Progress::default()
            },
            ReporterEvent::Report { run_id, .. } => Progress {
                run_id: run_id.clone(),
                ..Progress::default()
            },
        }
    }
}

pub async fn handle(
    event: LambdaEvent<ReporterEvent>,
    env: &FunctionEnv,
) -> Result<ReporterOutput, Diagnostic> {
    let started = Instant::now();
    let function = emf::function_name(&event.context.env_config.function_name, "reporter");
    // The run's folder, with this invocation's requests counted.
    let counter = RequestCounter::new();
    let store = env.store.counted(&counter);
    let (run_id, result) = match event.payload {
        ReporterEvent::Progress { .. } => {
            let before = event.payload.last_poll();
            let checked = progress(env, &before).await;
            (before.run_id, checked.map(ReporterOutput::Progress))
        }
        ReporterEvent::Report { run_id, error } => {
            let reported = report_in(env, &store, &run_id, error).await;
            (
                run_id,
                reported.map(|r| ReporterOutput::Report(Box::new(r))),
            )
        }
    };
    let mut record = emf::function_record(
        &function,
        &Work::default().requests(&counter),
        started.elapsed(),
    )
    .property("run_id", run_id.as_str().into());
    record = match &result {
        Ok(ReporterOutput::Progress(p)) => record
            .value("BatchesSent", Unit::Count, p.batches_sent as f64)
            .value("BatchesDone", Unit::Count, p.batches_done as f64)
            .property("action", "progress".into()),
        Ok(ReporterOutput::Report(r)) => record
            .property("action", "report".into())
            .property("status", serde_json::to_value(r.status).unwrap_or_default()),
        Err(_) => record.property("failed", true.into()),
    };
    emf::emit(&record);
    result.map_err(|err| {
        tracing::error!(error = %err, "reporter failed");
        err.into()
    })
}

/// The ranges of a listing pass and the batches counted sent and done, and
/// the tasks sent: two reads of the run's counters, done first. A lister
/// counts the batches it sends before it counts its range done, and a
/// copier that splits an object counts its part tasks sent before its own
/// batch done, so whenever the first read sees every range done, the
/// second sees every batch they sent, and whenever it sees a batch done,
/// the second sees the part tasks it waits for. One read of every counter
/// is no snapshot: it could see the batch done but not yet its parts, and
/// call the run complete. `phase`: the pass to wait for; `None`, the last
/// one started. Also returns the second read's totals, for a caller that
/// shows the outcomes too.
pub async fn batch_counts(
    counters: &RunCounters,
    run_id: &str,
    phase: Option<Phase>,
) -> Result<(Progress, RunTotals), SyncError> {
    let done = counters.totals(run_id).await?;
    let sent = counters.totals(run_id).await?;
    // VALIDATE lists ranges while others still copy: the run is in
    // VALIDATE once the write phase is over.
    let (write_sent, _) = sent.ranges(Phase::Write);
    let (_, write_done) = done.ranges(Phase::Write);
    let writing = write_done < write_sent || done.batches_done < sent.batches_sent;
    let phase = phase.unwrap_or(if sent.ranges(Phase::Validate).0 > 0 && !writing {
        Phase::Validate
    } else {
        Phase::Write
    });
    let (ranges_sent, _) = sent.ranges(phase);
    let (_, ranges_done) = done.ranges(phase);
    let batches_done = done.batches_done;
    let progress = Progress {
        run_id: run_id.to_owned(),
        phase,
        ranges_sent,
        ranges_done: ranges_done.min(ranges_sent),
        batches_sent: sent.batches_sent,
        batches_done: batches_done.min(sent.batches_sent),
        tasks_sent: sent.tasks_sent,
        complete: ranges_done >= ranges_sent && batches_done >= sent.batches_sent,
        idle_polls: 0,
        polls: 0,
        wait_seconds: 0,
        waited_secs: 0,
        stopped: false,
        stopped_polls: 0,
    };
    Ok((progress, sent))
}

/// Whether every range of the pass `before` waits for is listed and every
/// batch sent is done: two Queries of the run's counters, whatever the
/// number of ranges and batches, and a look at the queues only while some
/// are missing and none finished since the last poll (`before`).
pub async fn progress(env: &FunctionEnv, before: &Progress) -> Result<Progress, SyncError> {
    let run_id = before.run_id.as_str();
    let (counted, _) = batch_counts(env.counters()?, run_id, Some(before.phase)).await?;
    // Idle: ranges or results missing, none finished since the last poll,
    // and nothing left on the queues or in flight. Only a range or batch
    // lost (a lister or copier that failed on its last receive, now in a
    // dead-letter queue) looks like that for long.
    let mut idle = 0;
    let unchanged =
        counted.batches_done == before.batches_done && counted.ranges_done == before.ranges_done;
    if !counted.complete && unchanged && queues_are_empty(env).await? {
        idle = before.idle_polls + 1;
    }
    let complete = counted.complete || idle >= IDLE_POLLS_BEFORE_GIVING_UP;
    // A stopped run settles in seconds (the fleet drops what is left):
    // polled every few seconds until it has, whatever the pace before.
    let stopped = stop::read(env.counters()?, run_id).await?.is_some();
    tracing::debug!(
        run_id,
        phase = before.phase.name(),
        ranges_sent = counted.ranges_sent,
        ranges_done = counted.ranges_done,
        batches_sent = counted.batches_sent,
        batches_done = counted.batches_done,
        idle,
        complete,
        "progress"
    );
    let polls = before.polls + 1;
    // Short waits only while nothing moves and nothing is in flight (a
    // lost range or batch): a lister holding a long range's task is work
    // in flight, even when no count moved since the last poll.
    let wait = poll_wait_secs(u64::from(polls), before.waited_secs, idle > 0);
    let mut wait_seconds = eta_bounded(wait, pass_eta_secs(before, &counted));
    let stopped_polls = if stopped { before.stopped_polls + 1 } else { 0 };
    if stopped {
        wait_seconds = wait_seconds.min(stopped_wait_secs(stopped_polls));
    }
    Ok(Progress {
        complete,
        stopped,
        stopped_polls,
        idle_polls: idle,
        polls,
        wait_seconds,
        waited_secs: before.waited_secs + wait_seconds,
        ..counted
    })
}

/// Seconds until the pass `now` counts ends, at the pace of the wait since
/// `before`. While ranges are listed, the batches they will send are not
/// known: only a pass with no copies outstanding (an unchanged night) has
/// an end to predict then. Once every range is listed, the batches left.
fn pass_eta_secs(before: &Progress, now: &Progress) -> Option<f64> {
    let ranges_left = now.ranges_sent.saturating_sub(now.ranges_done);
    let batches_left = now.batches_sent.saturating_sub(now.batches_done);
    match (ranges_left, batches_left) {
        (0, 0) => None,
        (0, left) => eta_secs(
            left,
            now.batches_done.saturating_sub(before.batches_done),
            before.wait_seconds,
        ),
        (left, 0) => eta_secs(
            left,
            now.ranges_done.saturating_sub(before.ranges_done),
            before.wait_seconds,
        ),
        _ => None,
    }
}

/// Nothing visible and nothing in flight on the work and range queues.
async fn queues_are_empty(env: &FunctionEnv) -> Result<bool, SyncError> {
    let queues = [
        env.config.queue_url.as_deref(),
        env.config.range_queue_url.as_deref(),
    ];
    for queue in queues {
        let Some(queue) = queue else {
            return Ok(false); // cannot tell: keep waiting
        };
        if !queue_is_empty(env, queue).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Nothing visible and nothing in flight on `queue`.
async fn queue_is_empty(env: &FunctionEnv, queue: &str) -> Result<bool, SyncError> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let attributes = env
        .sqs
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(A::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| SyncError::s3("reading a queue's depth", crate::base::error::classify(&e)))?;
    Ok(attributes
        .attributes()
        .is_some_and(|a| a.values().all(|v| v == "0")))
}

/// Aggregate the run into summary.json and failures.csv.
pub async fn report(
    env: &FunctionEnv,
    run_id: &str,
    error: Option<Value>,
) -> Result<ReportOutcome, SyncError> {
    report_in(env, &env.store, run_id, error).await
}

/// [`report`], reading and writing the run's folder through `store`.
///
/// Its memory and time do not grow with the batches: the outcomes come
/// from the run counters (one Query), the report rows of copies from the
/// `rows/` objects of the batches that have some, and the lister and
/// VALIDATE checkpoints (one per 10,000 keys or so) are read 32 at a time
/// and dropped once added up, but for what the ledger and the phases need.
/// Only a run that lost batches (counted sent, never done) asks which, in
/// reads of 100 batch ids.
async fn report_in(
    env: &FunctionEnv,
    store: &RunStore,
    run_id: &str,
    error: Option<Value>,
) -> Result<ReportOutcome, SyncError> {
    let report_started_ms = emf::now_ms();
    let manifest: RunManifest = store
        .get_json(run_id, RunManifest::KEY)
        .await?
        .ok_or_else(|| SyncError::Config(format!("run {run_id:?} was never planned")))?;
    let sides = RunSides {
        source: manifest.spec.source.parse()?,
        destination: manifest.spec.destination.parse()?,
    };
    let counters = env.counters()?;
    let rows = ReportRows::new()?;
    let stopped = stop::read(counters, run_id).await?.map(|mark| mark.reason);
    let totals = counters.totals(run_id).await?;
    let unlisted = unlisted_ranges(counters, &manifest, &totals).await?;
    let fatal = error.as_ref().map(describe_error).or(unlisted);
    // Results hold outcomes only; the listers counted the plan.
    let mut counts = totals.counts.clone();
    let lost_some = totals.batches_done < totals.batches_sent;
    let listing = add_listing(store, counters, run_id, lost_some, &mut counts, &rows).await?;
    let mut problems = add_copy_rows(store, counters, run_id, &rows).await?;
    add_lost(&listing.lost, &sides, &mut counts, &rows);
    problems.lost = listing
        .lost
        .iter()
        .map(|b| (b.first_key.clone(), b.last_key.clone()))
        .collect();
    let checks = add_validations(store, run_id, &problems, &sides, &mut counts, &rows).await?;

    let now_ms = emf::now_ms();
    let clock = RunClock::of(&manifest, now_ms);
    let ticks = counters.timeline(run_id).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the copy timeline cannot be read; the report has none");
        Vec::new()
    });
    let timeline = copy_timeline(&clock, &ticks, &counts, now_ms);
    let writes: Vec<&Checkpoint> = listing.checkpoints.iter().collect();
    let checks: Vec<&Checkpoint> = checks.iter().collect();
    // A stopped run listed only part of the pair: the ledger it found
    // stays, as the CLI's does when interrupted.
    if fatal.is_none()
        && stopped.is_none()
        && let Some(committed) = proofs::commit(store.client(), &manifest, &writes, &checks).await
    {
        counts.ledger_entries = committed.entries;
    }
    let phases = phases(
        &clock,
        &writes,
        &ticks,
        &checks,
        (report_started_ms, now_ms),
    );
    let record = RunRecord {
        run_id: run_id.to_owned(),
        source: manifest.spec.source.clone(),
        destination: manifest.spec.destination.clone(),
        dry_run: false,
        started_at: manifest.created_at.clone(),
        duration_secs: clock.secs(now_ms),
        counts: counts.clone(),
        fatal,
        interrupted: false,
        stop: stopped,
        // The CLI's rule, so summary.json carries the same error either
        // way; the state machine fails the execution on `over_threshold`.
        failure_threshold: manifest.settings.failure_threshold,
        requests: BTreeMap::new(),
        copy_concurrency: None,
        timeline,
        phases,
    };
    // The report goes next to the run's state: the store's own bucket and
    // prefix, under which write_report makes the run's folder.
    let location = ReportLocation::S3(
        format!("s3://{}/{}", store.bucket(), env.config.report_prefix).parse()?,
    );
    let delivered = deliver(record, &rows, Some(&location), store.client()).await?;
    let (summary_json, failures_csv) = delivered
        .written
        .expect("deliver writes to the location it is given");
    let status = delivered.summary.status;
    let failed = counts.failed_objects();
    tracing::info!(run_id, ?status, failed, summary = %summary_json, "report written");
    Ok(ReportOutcome {
        run_id: run_id.to_owned(),
        status,
        exit_code: status.exit_code(),
        failed,
        failure_threshold: manifest.settings.failure_threshold,
        over_threshold: delivered.over_threshold,
        stop: match stopped {
            Some(StopReason::Cancelled) => "cancelled",
            Some(StopReason::FailureThreshold { .. }) => "failure_threshold",
            None => "",
        }
        .to_owned(),
        stop_reason: stopped.map(|s| s.describe()).unwrap_or_default(),
        summary_json,
        failures_csv,
        counts,
    })
}

/// The run's two buckets, to tell which one a report row names.
struct RunSides {
    source: S3Location,
    destination: S3Location,
}

/// Checkpoints read at once while streaming a folder of them.
const READ_AHEAD: usize = 32;

/// A folder's checkpoints, read [`READ_AHEAD`] at a time, in name order.
async fn stream_checkpoints<'a>(
    store: &'a RunStore,
    run_id: &'a str,
    folder: &str,
) -> Result<impl futures::Stream<Item = Result<Option<Checkpoint>, SyncError>> + 'a, SyncError> {
    use futures::StreamExt;
    let names = store.list(run_id, folder).await?;
    Ok(futures::stream::iter(names)
        .map(move |name| async move { store.get_json::<Checkpoint>(run_id, &name).await })
        .buffered(READ_AHEAD))
}

/// A checkpoint without its batches and rows: what the ledger's commit and
/// the phase timings need, kept of every one while the rest is dropped.
fn slim(checkpoint: Checkpoint) -> Checkpoint {
    Checkpoint {
        batches: Vec::new(),
        rows: Vec::new(),
        ..checkpoint
    }
}

/// What the write checkpoints leave the rest of the report.
struct Listing {
    checkpoints: Vec<Checkpoint>,
    /// Batches counted sent and never done.
    lost: Vec<SentBatch>,
}

/// Sent batches whose done marker is checked at once.
const LOST_CHECK: usize = 1_000;

/// Listing and planning counts, and the listers' own rows, from every
/// write checkpoint; with `find_lost`, which of the batches they sent were
/// never counted done.
async fn add_listing(
    store: &RunStore,
    counters: &RunCounters,
    run_id: &str,
    find_lost: bool,
    counts: &mut Counts,
    rows: &ReportRows,
) -> Result<Listing, SyncError> {
    use futures::StreamExt;
    let mut listing = Listing {
        checkpoints: Vec::new(),
        lost: Vec::new(),
    };
    let mut unchecked: Vec<SentBatch> = Vec::new();
    let stream = stream_checkpoints(store, run_id, "sent/").await?;
    futures::pin_mut!(stream);
    while let Some(checkpoint) = stream.next().await {
        let Some(checkpoint) = checkpoint? else {
            continue;
        };
        counts.add(&checkpoint.counts);
        for row in &checkpoint.rows {
            rows.push(&row.key, row.clone());
        }
        if find_lost {
            unchecked.extend(checkpoint.batches.iter().cloned());
            if unchecked.len() >= LOST_CHECK {
                listing
                    .lost
                    .extend(never_done(counters, run_id, std::mem::take(&mut unchecked)).await?);
            }
        }
        listing.checkpoints.push(slim(checkpoint));
    }
    listing
        .lost
        .extend(never_done(counters, run_id, unchecked).await?);
    Ok(listing)
}

/// Those of `batches` without a done marker.
async fn never_done(
    counters: &RunCounters,
    run_id: &str,
    batches: Vec<SentBatch>,
) -> Result<Vec<SentBatch>, SyncError> {
    if batches.is_empty() {
        return Ok(batches);
    }
    let ids: Vec<String> = batches.iter().map(|b| b.id.clone()).collect();
    let done = counters.done(run_id, &ids).await?;
    Ok(batches
        .into_iter()
        .filter(|b| !done.contains_key(&b.id))
        .collect())
}

/// What the copy outcomes already reported, for VALIDATE not to report it
/// twice.
#[derive(Default)]
struct CopyProblems {
    /// (bucket, key) of every object a batch's result reports a problem of.
    keys: HashSet<(String, String)>,
    /// The (first, last) relative keys of each batch without a result.
    lost: Vec<(String, String)>,
}

/// The report rows of the copies: of each batch that has some, those of
/// the delivery its done marker names (a duplicate delivery's are not).
async fn add_copy_rows(
    store: &RunStore,
    counters: &RunCounters,
    run_id: &str,
    rows: &ReportRows,
) -> Result<CopyProblems, SyncError> {
    use futures::{StreamExt, TryStreamExt};
    let mut problems = CopyProblems::default();
    let mut by_batch: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in store.list(run_id, "rows/").await? {
        if let Some((batch, _)) = name.strip_prefix("rows/").and_then(|n| n.split_once('/')) {
            by_batch.entry(batch.to_owned()).or_default().push(name);
        }
    }
    let ids: Vec<String> = by_batch.keys().cloned().collect();
    for chunk in ids.chunks(100) {
        let done = counters.done(run_id, chunk).await?;
        // The delivery each done marker names: its object was written
        // before the marker, so it is there even if listed under another.
        let counted: Vec<String> = chunk
            .iter()
            .filter_map(|id| done.get(id).cloned().flatten())
            .collect();
        let results: Vec<Option<BatchResult>> = futures::stream::iter(counted)
            .map(|name| async move { store.get_json::<BatchResult>(run_id, &name).await })
            .buffered(READ_AHEAD)
            .try_collect()
            .await?;
        for result in results.into_iter().flatten() {
            for row in &result.rows {
                if row.status != TaskStatus::Warning {
                    problems.keys.insert((row.bucket.clone(), row.key.clone()));
                }
                rows.push(&row.key, row.clone());
            }
        }
    }
    Ok(problems)
}

/// A batch counted sent and never done is a failure of every task in it.
fn add_lost(lost: &[SentBatch], sides: &RunSides, counts: &mut Counts, rows: &ReportRows) {
    for batch in lost {
        counts.failed += batch.tasks;
        let row = ReportRow::new(
            &sides.source.bucket,
            &sides.source.key_for(&batch.first_key),
            TaskStatus::Failed,
            "BatchLost",
            None,
            &format!(
                "batch {} ({} objects, keys {:?} to {:?}) has no result: it is in the dead-letter queue or was never delivered",
                batch.id, batch.tasks, batch.first_key, batch.last_key
            ),
        );
        rows.push(&batch.first_key, row);
    }
}

/// VALIDATE mismatches, except for objects already reported as failed: by
/// their batch's result, or with their batch, lost. A batch's tasks are the
/// keys from its first to its last (a lister cuts batches from keys in
/// order), and every one of them is already counted failed. Returns the
/// VALIDATE checkpoints, slimmed.
async fn add_validations(
    store: &RunStore,
    run_id: &str,
    copies: &CopyProblems,
    sides: &RunSides,
    counts: &mut Counts,
    rows: &ReportRows,
) -> Result<Vec<Checkpoint>, SyncError> {
    use futures::StreamExt;
    let in_lost_batch = |row: &ReportRow| {
        [&sides.source, &sides.destination]
            .iter()
            .filter(|side| side.bucket == row.bucket)
            .find_map(|side| side.relative(&row.key))
            .is_some_and(|key| {
                copies
                    .lost
                    .iter()
                    .any(|(first, last)| first.as_str() <= key && key <= last.as_str())
            })
    };
    let mut kept = Vec::new();
    let stream = stream_checkpoints(store, run_id, "validate/").await?;
    futures::pin_mut!(stream);
    while let Some(checkpoint) = stream.next().await {
        let Some(checkpoint) = checkpoint? else {
            continue;
        };
        let checked = &checkpoint.counts;
        counts.verify_checked += checked.verify_checked;
        counts.proven_by_ledger += checked.proven_by_ledger;
        counts.proven_by_checksum += checked.proven_by_checksum;
        counts.checksum_heads += checked.checksum_heads;
        counts.checksum_different += checked.checksum_different;
        for row in &checkpoint.rows {
            if !copies.keys.contains(&(row.bucket.clone(), row.key.clone())) && !in_lost_batch(row)
            {
                counts.verify_mismatched += 1;
                rows.push(&row.key, row.clone());
            }
        }
        kept.push(slim(checkpoint));
    }
    Ok(kept)
}

/// Times of the run, in milliseconds since the Unix epoch, as offsets from
/// its start (`run.json`'s `created_at`).
struct RunClock {
    start_ms: i64,
}

impl RunClock {
    /// The run's start: when the planner wrote `run.json`, or `now_ms` if
    /// that time does not parse.
    fn of(manifest: &RunManifest, now_ms: i64) -> Self {
        let start_ms = aws_smithy_types::DateTime::from_str(
            &manifest.created_at,
            aws_smithy_types::date_time::Format::DateTime,
        )
        .ok()
        .and_then(|t| t.to_millis().ok())
        .unwrap_or(now_ms);
        RunClock { start_ms }
    }

    /// Seconds from the start to `ms`, to the millisecond.
    fn secs(&self, ms: i64) -> f64 {
        (ms - self.start_ms).max(0) as f64 / 1000.0
    }
}

/// Cumulative copies at the end of each second a batch finished in, from
/// zero at the start to the run's `totals` at `end` (which include batches
/// lost without a result).
///
/// Unlike a local run's sampler, which keeps one point a second and would
/// drop the last batches of a burst, every second with a finish is a
/// point; when there are more than [`MAX_POINTS`], every n-th is kept,
/// always the first and the last, so the chart keeps its shape and the
/// summary its size.
fn copy_timeline(
    clock: &RunClock,
    ticks: &[Tick],
    totals: &Counts,
    end_ms: i64,
) -> Vec<TimelinePoint> {
    let mut so_far = Counts::default();
    let mut points = vec![TimelinePoint::of(0.0, &so_far)];
    for tick in ticks.iter().filter(|t| t.batches_finished > 0) {
        so_far.copied += tick.copied;
        so_far.updated += tick.updated;
        so_far.bytes_copied += tick.bytes_copied;
        so_far.failed += tick.failed;
        // The end of the second: by then, all its batches had finished.
        let at_ms = ((tick.second + 1) * 1000).min(end_ms);
        let point = TimelinePoint::of(clock.secs(at_ms), &so_far);
        match points.last_mut() {
            Some(last) if last.at_secs >= point.at_secs => *last = point,
            _ => points.push(point),
        }
    }
    let mut points = thin(points, MAX_POINTS - 1);
    let last = TimelinePoint::of(clock.secs(end_ms), totals);
    match points.last_mut() {
        Some(previous) if previous.at_secs >= last.at_secs => *previous = last,
        _ => points.push(last),
    }
    points
}

/// At most `keep` of `points`, evenly spread over them, the first and the
/// last included.
fn thin(points: Vec<TimelinePoint>, keep: usize) -> Vec<TimelinePoint> {
    let n = points.len();
    if n <= keep || keep < 2 {
        return points;
    }
    let kept: HashSet<usize> = (0..keep).map(|i| i * (n - 1) / (keep - 1)).collect();
    points
        .into_iter()
        .enumerate()
        .filter(|(i, _)| kept.contains(i))
        .map(|(_, point)| point)
        .collect()
}

/// The run's phases, from the times its objects record: planning until the
/// first lister started; listing and sending; copying, from the first
/// batch's start to the last one's end (to the second); validating; and this report.
fn phases(
    clock: &RunClock,
    writes: &[&Checkpoint],
    ticks: &[Tick],
    validations: &[&Checkpoint],
    (report_started_ms, report_ended_ms): (i64, i64),
) -> Vec<PhaseTiming> {
    let phase = |name: &str, from: i64, to: i64| {
        let started = clock.secs(from);
        PhaseTiming {
            name: name.to_owned(),
            started_secs: started,
            duration_secs: (clock.secs(to) - started).max(0.0),
        }
    };
    // The earliest start and latest end of the spans that have both.
    let span = |spans: Vec<(Option<i64>, Option<i64>)>| {
        spans
            .into_iter()
            .filter_map(|(from, to)| Some((from?, to?)))
            .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
    };
    let checkpoint_span = |checkpoints: &[&Checkpoint]| {
        span(
            checkpoints
                .iter()
                .map(|c| (c.started_at_ms, c.updated_at_ms))
                .collect(),
        )
    };
    let mut phases = Vec::new();
    let listing = checkpoint_span(writes);
    if let Some((first, _)) = listing {
        phases.push(phase("plan", clock.start_ms, first));
    }
    if let Some((first, last)) = listing {
        phases.push(phase("list and send", first, last));
    }
    // To the second the copiers record: from the first second a batch
    // started in (not before the listing that sent it) to the end of the
    // last one a batch finished in (not after now).
    let first_start = ticks.iter().find(|t| t.batches_started > 0);
    let last_finish = ticks.iter().rev().find(|t| t.batches_finished > 0);
    if let (Some(first), Some(last)) = (first_start, last_finish) {
        let from = (first.second * 1000).max(listing.map_or(i64::MIN, |(start, _)| start));
        let to = ((last.second + 1) * 1000).min(report_ended_ms);
        phases.push(phase("copy", from, to.max(from)));
    }
    if let Some((first, last)) = checkpoint_span(validations) {
        phases.push(phase("validate", first, last));
    }
    phases.push(phase("report", report_started_ms, report_ended_ms));
    phases
}

/// What no lister finished listing: the ranges of a pass counted sent and
/// never done (their tasks failed on every receive, and are in the range
/// dead-letter queue), by shard and keys. Their keys were never compared,
/// so the run cannot succeed; it says where, for a re-run or a redrive.
async fn unlisted_ranges(
    counters: &RunCounters,
    manifest: &RunManifest,
    totals: &RunTotals,
) -> Result<Option<String>, SyncError> {
    let mut missing = Vec::new();
    for phase in [Phase::Write, Phase::Validate] {
        let (sent, done) = totals.ranges(phase);
        if done >= sent {
            continue;
        }
        let run_id = manifest.run_id.as_str();
        let finished: HashSet<usize> = (counters.ranges_done(run_id, phase).await?)
            .into_iter()
            .map(|(shard, _, _)| shard)
            .collect();
        for (shard, range) in counters.ranges_sent(run_id, phase).await? {
            if finished.contains(&shard) {
                continue;
            }
            // A split range's keys are on its marker; a split's parent may
            // have listed part of its shard before it stopped.
            let keys = range
                .or_else(|| manifest.shards.get(shard).cloned())
                .map_or_else(
                    || "unknown keys".to_owned(),
                    |range| {
                        let from = range.start_after.as_deref().unwrap_or("the first key");
                        let to = range.end_before.as_deref().unwrap_or("the last key");
                        format!("keys after {from:?} up to {to:?}")
                    },
                );
            missing.push(format!("{} shard {shard} ({keys})", phase.name()));
        }
    }
    Ok((!missing.is_empty()).then(|| {
        format!(
            "ListingIncomplete: {} range(s) were never listed to their end; their range tasks are in the range dead-letter queue, and their keys were not compared: {}",
            missing.len(),
            missing.join("; ")
        )
    }))
}

fn describe_error(error: &Value) -> String {
    let field = |name: &str| error.get(name).and_then(Value::as_str).unwrap_or_default();
    let cause = field("Cause");
    // A Lambda error's cause is its JSON {errorType, errorMessage}.
    let message = serde_json::from_str::<Value>(cause)
        .ok()
        .and_then(|c| {
            c.get("errorMessage")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| cause.to_owned());
    format!("{}: {message}", field("Error"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second in which batches finished, copying `copied` and failing `failed`.
    fn finished(second: i64, copied: u64, failed: u64) -> Tick {
        Tick {
            second,
            batches_finished: 1,
            copied,
            bytes_copied: copied * 100,
            failed,
            ..Tick::default()
        }
    }

    fn started(second: i64) -> Tick {
        Tick {
            second,
            batches_started: 1,
            ..Tick::default()
        }
    }

    fn checkpoint(started: i64, updated: i64) -> Checkpoint {
        Checkpoint {
            started_at_ms: Some(started),
            updated_at_ms: Some(updated),
            ..Checkpoint::default()
        }
    }

    fn counted(ranges: (u64, u64), batches: (u64, u64), wait_seconds: u64) -> Progress {
        Progress {
            run_id: "r".to_owned(),
            phase: Phase::Write,
            ranges_sent: ranges.0,
            ranges_done: ranges.1,
            batches_sent: batches.0,
            batches_done: batches.1,
            tasks_sent: 0,
            complete: false,
            idle_polls: 0,
            polls: 3,
            wait_seconds,
            waited_secs: 60,
            stopped: false,
            stopped_polls: 0,
        }
    }

    #[test]
    fn a_stopped_run_is_polled_within_seconds_and_a_long_settle_stays_far_from_the_history_limit() {
        assert_eq!(stopped_wait_secs(1), 2);
        assert_eq!(stopped_wait_secs(5), 10);
        // A killed copier's batch settles only when SQS delivers it again:
        // up to the template's 90-minute visibility timeout.
        let (mut polls, mut waited) = (0u32, 0u64);
        while waited < 90 * 60 {
            polls += 1;
            waited += stopped_wait_secs(polls);
        }
        assert!(polls < 150, "{polls} polls");
        assert!(9 * u64::from(polls) < 25_000 / 10);
    }

    #[test]
    fn the_end_of_a_pass_is_predicted_only_once_its_work_is_known() {
        // copies outstanding while ranges are still listed: more will come
        let before = counted((10, 2), (500, 100), 10);
        assert_eq!(
            pass_eta_secs(&before, &counted((10, 4), (600, 300), 0)),
            None
        );
        // every range listed: the batches left at the last wait's pace
        let before = counted((10, 10), (600, 300), 10);
        let eta = pass_eta_secs(&before, &counted((10, 10), (600, 500), 0));
        assert_eq!(eta, Some(5.0));
        // a night sends nothing: the ranges left at their pace
        let before = counted((100, 20), (0, 0), 8);
        let eta = pass_eta_secs(&before, &counted((100, 60), (0, 0), 0));
        assert_eq!(eta, Some(8.0));
        // nothing moved, or nothing left: no prediction
        assert_eq!(pass_eta_secs(&before, &counted((100, 20), (0, 0), 0)), None);
        assert_eq!(
            pass_eta_secs(&before, &counted((100, 100), (0, 0), 0)),
            None
        );
        // the first poll has no wait behind it
        let first = counted((100, 0), (0, 0), 0);
        assert_eq!(pass_eta_secs(&first, &counted((100, 60), (0, 0), 0)), None);
    }

    #[test]
    fn a_poll_knows_the_wait_the_state_machine_ended_so_its_next_wait_can_be_cut() {
        // GIVEN the progress the state machine hands back ($.progress, as
        // sync.asl.json's ResultSelector names it) after a 6 s wait, every
        // range listed and 40 batches of 100 left
        let payload = serde_json::json!({
            "action": "progress", "run_id": "r", "phase": "write",
            "idle_polls": 0, "polls": 3, "complete": false,
            "wait_seconds": 6, "waited_secs": 12,
            "batches_sent": 100, "batches_done": 60,
            "ranges_sent": 21, "ranges_done": 21,
            "stopped": false, "stopped_polls": 0
        });
        let event: ReporterEvent = serde_json::from_value(payload).expect("the poll's event");
        // WHEN this poll counts 90 done
        let before = event.last_poll();
        let now = counted((21, 21), (100, 90), 0);
        // THEN the pace over those 6 s (30 batches) puts the end 2 s away,
        // and the next wait is cut from 8 s to 3 s
        assert_eq!(before.wait_seconds, 6);
        let eta = pass_eta_secs(&before, &now);
        assert_eq!(eta, Some(2.0));
        assert_eq!(eta_bounded(poll_wait_secs(4, 12, false), eta), 3);
    }

    #[test]
    fn the_timeline_adds_up_seconds_in_order_and_ends_at_the_totals() {
        // GIVEN copies finished in seconds 11 and 15, and one only started
        let clock = RunClock { start_ms: 10_000 };
        let ticks = [finished(11, 2, 1), started(13), finished(15, 3, 0)];
        // AND totals that also hold a lost batch's failures
        let totals = Counts {
            copied: 9,
            bytes_copied: 900,
            failed: 3,
            ..Counts::default()
        };
        // WHEN the timeline is drawn
        let points = copy_timeline(&clock, &ticks, &totals, 18_000);
        // THEN it starts at zero, adds each second at its end, and ends at
        // the totals
        let seen: Vec<(f64, u64, u64, u64)> = points
            .iter()
            .map(|p| (p.at_secs, p.objects, p.bytes, p.failed))
            .collect();
        assert_eq!(
            seen,
            [
                (0.0, 0, 0, 0),
                (2.0, 2, 200, 1),
                (6.0, 5, 500, 1),
                (8.0, 9, 900, 3)
            ]
        );
    }

    #[test]
    fn a_second_that_ends_after_the_report_is_drawn_at_the_report() {
        let clock = RunClock { start_ms: 0 };
        let ticks = [finished(2, 100, 0), finished(4, 300, 0)];
        let totals = Counts {
            copied: 400,
            bytes_copied: 40_000,
            ..Counts::default()
        };
        let points = copy_timeline(&clock, &ticks, &totals, 4_908);
        let seen: Vec<(f64, u64)> = points.iter().map(|p| (p.at_secs, p.objects)).collect();
        assert_eq!(seen, [(0.0, 0), (3.0, 100), (4.908, 400)]);
    }

    #[test]
    fn a_timeline_of_many_seconds_is_thinned_and_stays_monotonic() {
        let clock = RunClock { start_ms: 0 };
        let ticks: Vec<Tick> = (0..20_000).map(|i| finished(i, 1, 0)).collect();
        let totals = Counts {
            copied: 20_000,
            bytes_copied: 2_000_000,
            ..Counts::default()
        };
        let points = copy_timeline(&clock, &ticks, &totals, 20_001_000);
        assert_eq!(points.len(), MAX_POINTS);
        assert!(
            points
                .windows(2)
                .all(|w| w[0].at_secs < w[1].at_secs && w[0].objects <= w[1].objects)
        );
        assert_eq!(points.last().unwrap().objects, 20_000);
    }

    #[test]
    fn phases_follow_the_runs_objects_in_order() {
        // GIVEN a run that started at 100 s: listers from 101.5 s to 104 s,
        // batches started in second 101 and finished by second 106,
        // validation from 108 s to 109 s
        let clock = RunClock { start_ms: 100_000 };
        let writes = [checkpoint(101_500, 103_000), checkpoint(101_700, 104_000)];
        let ticks = [started(101), finished(104, 1, 0), finished(106, 1, 0)];
        let checks = [checkpoint(108_000, 109_000)];
        // AND a part-task record the copier wrote, without times
        let parts = Checkpoint::default();
        let writes: Vec<&Checkpoint> = writes.iter().chain([&parts]).collect();
        let checks: Vec<&Checkpoint> = checks.iter().collect();
        // WHEN the phases are measured, the report running from 110 s to 110.5 s
        let phases = phases(&clock, &writes, &ticks, &checks, (110_000, 110_500));
        // THEN each spans what its objects say; the copies start with the
        // listing that sent them, not earlier in its second
        let seen: Vec<(&str, f64, f64)> = phases
            .iter()
            .map(|p| (p.name.as_str(), p.started_secs, p.duration_secs))
            .collect();
        assert_eq!(
            seen,
            [
                ("plan", 0.0, 1.5),
                ("list and send", 1.5, 2.5),
                ("copy", 1.5, 5.5),
                ("validate", 8.0, 1.0),
                ("report", 10.0, 0.5),
            ]
        );
    }

    #[test]
    fn a_run_that_sent_nothing_has_only_its_report_phase() {
        let clock = RunClock { start_ms: 0 };
        let phases = phases(&clock, &[], &[], &[], (2_000, 2_100));
        assert_eq!(phases.len(), 1);
        assert_eq!(phases[0].name, "report");
    }
}
