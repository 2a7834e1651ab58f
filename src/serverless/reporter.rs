//! The reporter: progress (are all batches done?) and the run's report.
//!
//! Progress is exact: the batches the listers recorded as sent, against the
//! result objects the copiers wrote. Queue depth is only consulted to notice
//! that nothing is left to wait for (a batch lost to the dead-letter queue
//! without a result, which only a copier crash on its last receive causes).
//!
//! The report aggregates checkpoints and results into the same
//! `summary.json` and `failures.csv` the CLI writes, in the run's folder,
//! with a timeline of the copies (from the results' finish times) and the
//! run's phases (from the checkpoints' and results' timestamps).
//!
//! Each invocation reports one EMF record: a progress check its
//! `BatchesSent` and `BatchesDone`; both the common figures, whose object
//! counts are zero (the copiers report the copies; the run's totals are in
//! summary.json).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::base::error::SyncError;
use crate::base::metrics::RequestCounter;
use crate::model::location::{ReportLocation, S3Location};
use crate::report::deliver::{RunRecord, deliver};
use crate::report::emf::{self, Unit, Work};
use crate::report::timeline::MAX_POINTS;
use crate::report::{Counts, PhaseTiming, ReportRow, ReportRows, TaskStatus, TimelinePoint};
use crate::serverless::FunctionEnv;
use crate::serverless::contract::{
    BatchResult, Checkpoint, Progress, ReportOutcome, RunManifest, SentBatch,
};
use crate::serverless::proofs;
use crate::serverless::store::RunStore;

/// Polls with an empty queue and missing results before the run stops
/// waiting for them.
const IDLE_POLLS_BEFORE_GIVING_UP: u32 = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ReporterEvent {
    Progress {
        run_id: String,
        #[serde(default)]
        idle_polls: u32,
        #[serde(default)]
        polls: u32,
        /// Results counted at the previous poll.
        #[serde(default)]
        batches_done: u64,
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
        ReporterEvent::Progress {
            run_id,
            idle_polls,
            polls,
            batches_done,
        } => {
            let checked = progress_in(env, &store, &run_id, idle_polls, polls, batches_done).await;
            (run_id, checked.map(ReporterOutput::Progress))
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

/// Batch ids recorded as sent, from every write-phase checkpoint.
async fn sent_batches(
    store: &RunStore,
    run_id: &str,
) -> Result<(Vec<(String, Checkpoint)>, BTreeMap<String, SentBatch>), SyncError> {
    let checkpoints: Vec<(String, Checkpoint)> = store.get_all(run_id, "sent/").await?;
    let sent = checkpoints
        .iter()
        .flat_map(|(_, c)| c.batches.iter().map(|b| (b.id.clone(), b.clone())))
        .collect();
    Ok((checkpoints, sent))
}

fn done_ids(names: &[String]) -> HashSet<String> {
    names
        .iter()
        .filter_map(|n| n.strip_prefix("results/")?.strip_suffix(".json"))
        .map(str::to_owned)
        .collect()
}

/// The batches recorded as sent, and how many of them have a result.
pub async fn batch_counts(
    store: &RunStore,
    run_id: &str,
) -> Result<(BTreeMap<String, SentBatch>, u64), SyncError> {
    // Results first, then what was sent. A copier that splits an object
    // records its part tasks as sent before it writes its own result, so
    // whenever that result is counted here, the part tasks it waits for
    // are in the listing of sent batches that follows. The other order
    // could count the parent done without ever seeing its children.
    let done = done_ids(&store.list(run_id, "results/").await?);
    let (_, sent) = sent_batches(store, run_id).await?;
    let batches_done = sent.keys().filter(|id| done.contains(*id)).count() as u64;
    Ok((sent, batches_done))
}

pub async fn progress(
    env: &FunctionEnv,
    run_id: &str,
    idle_polls: u32,
    polls: u32,
    done_before: u64,
) -> Result<Progress, SyncError> {
    progress_in(env, &env.store, run_id, idle_polls, polls, done_before).await
}

/// [`progress`], reading the run's folder through `store`.
async fn progress_in(
    env: &FunctionEnv,
    store: &RunStore,
    run_id: &str,
    idle_polls: u32,
    polls: u32,
    done_before: u64,
) -> Result<Progress, SyncError> {
    let (sent, batches_done) = batch_counts(store, run_id).await?;
    let batches_sent = sent.len() as u64;
    // Idle: results missing, none arrived since the last poll, and nothing
    // left on the queue or in flight. Only a batch lost without a result
    // (a copier killed on its last receive) looks like that for long.
    let mut idle = 0;
    if batches_done < batches_sent && batches_done == done_before && queue_is_empty(env).await? {
        idle = idle_polls + 1;
    }
    let complete = batches_done == batches_sent || idle >= IDLE_POLLS_BEFORE_GIVING_UP;
    tracing::debug!(
        run_id,
        batches_sent,
        batches_done,
        idle,
        complete,
        "progress"
    );
    Ok(Progress {
        run_id: run_id.to_owned(),
        batches_sent,
        batches_done,
        tasks_sent: sent.values().map(|b| b.tasks).sum(),
        complete,
        idle_polls: idle,
        polls: polls + 1,
        wait_seconds: (2 * (u64::from(polls) + 1)).min(60),
    })
}

/// Nothing visible and nothing in flight on the work queue.
async fn queue_is_empty(env: &FunctionEnv) -> Result<bool, SyncError> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let Some(queue) = env.config.queue_url.as_deref() else {
        return Ok(false); // cannot tell: keep waiting
    };
    let attributes = env
        .sqs
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(A::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| {
            SyncError::s3(
                "reading the work queue's depth",
                crate::base::error::classify(&e),
            )
        })?;
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
    let rows = ReportRows::new()?;
    let mut counts = Counts::default();

    let (checkpoints, sent) = sent_batches(store, run_id).await?;
    add_listing(&checkpoints, &mut counts, &rows);
    let results: HashMap<String, BatchResult> = store
        .get_all::<BatchResult>(run_id, "results/")
        .await?
        .into_iter()
        .map(|(_, r)| (r.batch_id.clone(), r))
        .collect();
    let copies = add_copies(&sent, &results, &sides, &mut counts, &rows);
    let validations: Vec<(String, Checkpoint)> = store.get_all(run_id, "validate/").await?;
    add_validations(&validations, &copies, &sides, &mut counts, &rows);

    let now_ms = emf::now_ms();
    let clock = RunClock::of(&manifest, now_ms);
    // Results of batches the listers sent: the ones the counts add up.
    let counted: Vec<&BatchResult> = sent.keys().filter_map(|id| results.get(id)).collect();
    let timeline = copy_timeline(&clock, &counted, &counts, now_ms);
    let writes: Vec<&Checkpoint> = checkpoints.iter().map(|(_, c)| c).collect();
    let checks: Vec<&Checkpoint> = validations.iter().map(|(_, c)| c).collect();
    if error.is_none()
        && let Some(committed) = proofs::commit(store.client(), &manifest, &writes, &checks).await
    {
        counts.ledger_entries = committed.entries;
    }
    let phases = phases(
        &clock,
        &writes,
        &counted,
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
        fatal: error.as_ref().map(describe_error),
        interrupted: false,
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

/// Listing and planning counts, and the listers' own rows.
fn add_listing(checkpoints: &[(String, Checkpoint)], counts: &mut Counts, rows: &ReportRows) {
    for (_, checkpoint) in checkpoints {
        counts.add(&checkpoint.counts);
        for row in &checkpoint.rows {
            rows.push(&row.key, row.clone());
        }
    }
}

/// What the copy outcomes already reported, for VALIDATE not to report it
/// twice.
struct CopyProblems<'a> {
    /// (bucket, key) of every object a batch's result reports a problem of.
    keys: HashSet<(String, String)>,
    /// The (first, last) relative keys of each batch without a result.
    lost: Vec<(&'a str, &'a str)>,
}

/// Copy outcomes, batch by batch; a batch without a result is a failure of
/// every task in it.
fn add_copies<'a>(
    sent: &'a BTreeMap<String, SentBatch>,
    results: &HashMap<String, BatchResult>,
    sides: &RunSides,
    counts: &mut Counts,
    rows: &ReportRows,
) -> CopyProblems<'a> {
    let mut problems = CopyProblems {
        keys: HashSet::new(),
        lost: Vec::new(),
    };
    for (id, batch) in sent {
        match results.get(id) {
            Some(result) => {
                // Results hold outcomes only; the listers counted the plan.
                counts.add(&result.counts);
                for row in &result.rows {
                    if row.status != TaskStatus::Warning {
                        problems.keys.insert((row.bucket.clone(), row.key.clone()));
                    }
                    rows.push(&row.key, row.clone());
                }
            }
            None => {
                problems.lost.push((&batch.first_key, &batch.last_key));
                counts.failed += batch.tasks;
                let row = ReportRow::new(
                    &sides.source.bucket,
                    &sides.source.key_for(&batch.first_key),
                    TaskStatus::Failed,
                    "BatchLost",
                    None,
                    &format!(
                        "batch {id} ({} objects, keys {:?} to {:?}) has no result: it is in the dead-letter queue or was never delivered",
                        batch.tasks, batch.first_key, batch.last_key
                    ),
                );
                rows.push(&batch.first_key, row);
            }
        }
    }
    problems
}

/// VALIDATE mismatches, except for objects already reported as failed: by
/// their batch's result, or with their batch, lost. A batch's tasks are the
/// keys from its first to its last (a lister cuts batches from keys in
/// order), and every one of them is already counted failed.
fn add_validations(
    validations: &[(String, Checkpoint)],
    copies: &CopyProblems,
    sides: &RunSides,
    counts: &mut Counts,
    rows: &ReportRows,
) {
    let in_lost_batch = |row: &ReportRow| {
        [&sides.source, &sides.destination]
            .iter()
            .filter(|side| side.bucket == row.bucket)
            .find_map(|side| side.relative(&row.key))
            .is_some_and(|key| {
                copies
                    .lost
                    .iter()
                    .any(|(first, last)| *first <= key && key <= *last)
            })
    };
    for (_, checkpoint) in validations {
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
    }
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

/// Cumulative copies at each batch's finish, from zero at the start to the
/// run's `totals` at `end` (which include batches lost without a result).
///
/// Unlike a local run's sampler, which keeps one point a second and would
/// drop the last batches of a burst, every finish is a point; when there
/// are more than [`MAX_POINTS`], every n-th is kept, always the first and
/// the last, so the chart keeps its shape and the summary its size.
fn copy_timeline(
    clock: &RunClock,
    results: &[&BatchResult],
    totals: &Counts,
    end_ms: i64,
) -> Vec<TimelinePoint> {
    let mut finished: Vec<(i64, &Counts)> = results
        .iter()
        .filter_map(|r| Some((r.finished_at_ms?, &r.counts)))
        .collect();
    finished.sort_by_key(|(at, _)| *at);
    let mut so_far = Counts::default();
    let mut points = vec![TimelinePoint::of(0.0, &so_far)];
    for (at, counts) in finished {
        so_far.copied += counts.copied;
        so_far.updated += counts.updated;
        so_far.bytes_copied += counts.bytes_copied;
        so_far.failed += counts.failed;
        let point = TimelinePoint::of(clock.secs(at), &so_far);
        // Batches finished in the same millisecond are one point.
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
/// batch's start to the last one's end; validating; and this report.
fn phases(
    clock: &RunClock,
    writes: &[&Checkpoint],
    results: &[&BatchResult],
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
    let copying = span(
        results
            .iter()
            .map(|r| (r.started_at_ms, r.finished_at_ms))
            .collect(),
    );
    if let Some((first, last)) = copying {
        phases.push(phase("copy", first, last));
    }
    if let Some((first, last)) = checkpoint_span(validations) {
        phases.push(phase("validate", first, last));
    }
    phases.push(phase("report", report_started_ms, report_ended_ms));
    phases
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

    fn result(started: i64, finished: Option<i64>, copied: u64, failed: u64) -> BatchResult {
        BatchResult {
            run_id: "r".into(),
            batch_id: format!("b{started}"),
            receive_count: 1,
            counts: Counts {
                copied,
                bytes_copied: copied * 100,
                failed,
                ..Counts::default()
            },
            rows: Vec::new(),
            started_at_ms: Some(started),
            finished_at_ms: finished,
        }
    }

    fn checkpoint(started: i64, updated: i64) -> Checkpoint {
        Checkpoint {
            started_at_ms: Some(started),
            updated_at_ms: Some(updated),
            ..Checkpoint::default()
        }
    }

    #[test]
    fn the_timeline_adds_up_results_in_finish_order_and_ends_at_the_totals() {
        // GIVEN results finishing out of order, one without timestamps (an
        // older copier's)
        let clock = RunClock { start_ms: 10_000 };
        let results = [
            result(12_000, Some(15_500), 3, 0),
            result(11_000, Some(12_000), 2, 1),
            result(11_000, None, 4, 0),
        ];
        let refs: Vec<&BatchResult> = results.iter().collect();
        // AND totals that also hold a lost batch's failures
        let totals = Counts {
            copied: 9,
            bytes_copied: 900,
            failed: 3,
            ..Counts::default()
        };
        // WHEN the timeline is drawn
        let points = copy_timeline(&clock, &refs, &totals, 18_000);
        // THEN it starts at zero, adds each result at its finish, and ends
        // at the totals
        let seen: Vec<(f64, u64, u64, u64)> = points
            .iter()
            .map(|p| (p.at_secs, p.objects, p.bytes, p.failed))
            .collect();
        assert_eq!(
            seen,
            [
                (0.0, 0, 0, 0),
                (2.0, 2, 200, 1),
                (5.5, 5, 500, 1),
                (8.0, 9, 900, 3)
            ]
        );
    }

    #[test]
    fn the_last_batches_of_a_burst_are_drawn_when_they_finished() {
        // GIVEN batches finishing within a second, then a slow validation
        let clock = RunClock { start_ms: 0 };
        let results = [
            result(0, Some(2_381), 100, 0),
            result(0, Some(2_600), 100, 0),
            result(0, Some(2_600), 100, 0),
            result(0, Some(3_000), 100, 0),
        ];
        let refs: Vec<&BatchResult> = results.iter().collect();
        let totals = Counts {
            copied: 400,
            bytes_copied: 40_000,
            ..Counts::default()
        };
        // WHEN the report comes 2 s later
        let points = copy_timeline(&clock, &refs, &totals, 4_908);
        // THEN all 400 were there at 3 s, not only at the report
        let seen: Vec<(f64, u64)> = points.iter().map(|p| (p.at_secs, p.objects)).collect();
        assert_eq!(
            seen,
            [(0.0, 0), (2.381, 100), (2.6, 300), (3.0, 400), (4.908, 400)]
        );
    }

    #[test]
    fn a_timeline_of_many_batches_is_thinned_and_stays_monotonic() {
        let clock = RunClock { start_ms: 0 };
        let results: Vec<BatchResult> = (0..20_000)
            .map(|i| result(i * 500, Some(i * 500 + 400), 1, 0))
            .collect();
        let refs: Vec<&BatchResult> = results.iter().collect();
        let totals = Counts {
            copied: 20_000,
            bytes_copied: 2_000_000,
            ..Counts::default()
        };
        let points = copy_timeline(&clock, &refs, &totals, 10_001_000);
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
        // GIVEN a run that started at 100 s: listers from 101 s to 104 s,
        // batches from 102 s to 107 s, validation from 108 s to 109 s
        let clock = RunClock { start_ms: 100_000 };
        let writes = [checkpoint(101_000, 103_000), checkpoint(101_500, 104_000)];
        let results = [
            result(102_000, Some(105_000), 1, 0),
            result(104_000, Some(107_000), 1, 0),
        ];
        let checks = [checkpoint(108_000, 109_000)];
        // AND a part-task record the copier wrote, without times
        let parts = Checkpoint::default();
        let writes: Vec<&Checkpoint> = writes.iter().chain([&parts]).collect();
        let results: Vec<&BatchResult> = results.iter().collect();
        let checks: Vec<&Checkpoint> = checks.iter().collect();
        // WHEN the phases are measured, the report running from 110 s to 110.5 s
        let phases = phases(&clock, &writes, &results, &checks, (110_000, 110_500));
        // THEN each spans what its objects say
        let seen: Vec<(&str, f64, f64)> = phases
            .iter()
            .map(|p| (p.name.as_str(), p.started_secs, p.duration_secs))
            .collect();
        assert_eq!(
            seen,
            [
                ("plan", 0.0, 1.0),
                ("list and send", 1.0, 3.0),
                ("copy", 2.0, 5.0),
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
