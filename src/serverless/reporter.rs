//! The reporter: progress (are all batches done?) and the run's report.
//!
//! Progress is exact: the batches the listers recorded as sent, against the
//! result objects the copiers wrote. Queue depth is only consulted to notice
//! that nothing is left to wait for (a batch lost to the dead-letter queue
//! without a result, which only a copier crash on its last receive causes).
//!
//! The report aggregates checkpoints and results into the same
//! `summary.json` and `failures.csv` the CLI writes, in the run's folder.

use std::collections::{BTreeMap, HashMap, HashSet};

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::SyncError;
use crate::report::{
    Counts, ReportLocation, ReportRow, ReportRows, RunStatus, Summary, TaskStatus, write_report,
};
use crate::serverless::FunctionEnv;
use crate::serverless::batch::SentBatch;
use crate::serverless::copier::BatchResult;
use crate::serverless::input::RunManifest;
use crate::serverless::lister::Checkpoint;
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub run_id: String,
    pub batches_sent: u64,
    pub batches_done: u64,
    pub tasks_sent: u64,
    /// Every batch has a result, or waiting longer cannot help.
    pub complete: bool,
    pub idle_polls: u32,
    pub polls: u32,
    /// How long the state machine waits before asking again: short at
    /// first, then up to a minute, so a night-long run stays far below
    /// the 25,000-event history limit of a Standard workflow.
    pub wait_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportOutcome {
    pub run_id: String,
    pub status: RunStatus,
    pub exit_code: i32,
    pub failed: u64,
    pub failure_threshold: u64,
    /// More failures than the threshold allows: the execution fails.
    pub over_threshold: bool,
    pub summary_json: String,
    pub failures_csv: String,
    pub counts: Counts,
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
    let result = match event.payload {
        ReporterEvent::Progress {
            run_id,
            idle_polls,
            polls,
            batches_done,
        } => progress(env, &run_id, idle_polls, polls, batches_done)
            .await
            .map(ReporterOutput::Progress),
        ReporterEvent::Report { run_id, error } => report(env, &run_id, error)
            .await
            .map(|r| ReporterOutput::Report(Box::new(r))),
    };
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
    let (sent, batches_done) = batch_counts(&env.store, run_id).await?;
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
        .map_err(|e| SyncError::s3("reading the work queue's depth", crate::error::classify(&e)))?;
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
    let manifest: RunManifest = env
        .store
        .get_json(run_id, RunManifest::KEY)
        .await?
        .ok_or_else(|| SyncError::Config(format!("run {run_id:?} was never planned")))?;
    let source: crate::location::S3Location = manifest.spec.source.parse()?;
    let destination: crate::location::S3Location = manifest.spec.destination.parse()?;
    let rows = ReportRows::new()?;
    let mut counts = Counts::default();

    // Listing and planning counts, and the lister's own rows.
    let (checkpoints, sent) = sent_batches(&env.store, run_id).await?;
    for (_, checkpoint) in &checkpoints {
        counts.add(&checkpoint.counts);
        for row in &checkpoint.rows {
            rows.push(&row.key, row.clone());
        }
    }

    // Copy outcomes, batch by batch; a batch without a result is a failure
    // of every task in it.
    let results: HashMap<String, BatchResult> = env
        .store
        .get_all::<BatchResult>(run_id, "results/")
        .await?
        .into_iter()
        .map(|(_, r)| (r.batch_id.clone(), r))
        .collect();
    let mut problem_keys: HashSet<(String, String)> = HashSet::new();
    // The (first, last) relative keys of each batch without a result.
    let mut lost: Vec<(&str, &str)> = Vec::new();
    for (id, batch) in &sent {
        match results.get(id) {
            Some(result) => {
                // Results hold outcomes only; the listers counted the plan.
                counts.add(&result.counts);
                for row in &result.rows {
                    if row.status != TaskStatus::Warning {
                        problem_keys.insert((row.bucket.clone(), row.key.clone()));
                    }
                    rows.push(&row.key, row.clone());
                }
            }
            None => {
                lost.push((&batch.first_key, &batch.last_key));
                counts.failed += batch.tasks;
                let row = ReportRow::new(
                    &source.bucket,
                    &source.key_for(&batch.first_key),
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

    // VALIDATE mismatches, except for objects already reported as failed:
    // by their batch's result, or with their batch, lost. A batch's tasks
    // are the keys from its first to its last (a lister cuts batches from
    // keys in order), and every one of them is already counted failed.
    let in_lost_batch = |row: &ReportRow| {
        [&source, &destination]
            .iter()
            .filter(|side| side.bucket == row.bucket)
            .find_map(|side| side.relative(&row.key))
            .is_some_and(|key| {
                lost.iter()
                    .any(|(first, last)| *first <= key && key <= *last)
            })
    };
    let validations: Vec<(String, Checkpoint)> = env.store.get_all(run_id, "validate/").await?;
    for (_, checkpoint) in &validations {
        counts.verify_checked += checkpoint.counts.verify_checked;
        for row in &checkpoint.rows {
            if !problem_keys.contains(&(row.bucket.clone(), row.key.clone())) && !in_lost_batch(row)
            {
                counts.verify_mismatched += 1;
                rows.push(&row.key, row.clone());
            }
        }
    }

    let fatal = error.as_ref().map(describe_error);
    let status = Summary::status_of(&counts, fatal.is_some(), false);
    let started = aws_smithy_types::DateTime::from_str(
        &manifest.created_at,
        aws_smithy_types::date_time::Format::DateTime,
    )
    .ok();
    let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now());
    let mut summary = Summary {
        run_id: run_id.to_owned(),
        source: manifest.spec.source.clone(),
        destination: manifest.spec.destination.clone(),
        dry_run: false,
        status,
        exit_code: status.exit_code(),
        started_at: manifest.created_at.clone(),
        duration_secs: started.map_or(0.0, |s| (now.secs() - s.secs()).max(0) as f64),
        counts: counts.clone(),
        error: fatal,
        failure_threshold: manifest.settings.failure_threshold,
        requests: BTreeMap::new(),
        copy_concurrency: None,
        report_rows: rows.len(),
        failures_csv: None,
        summary_json: None,
        timeline: Vec::new(),
        phases: Vec::new(),
        sample_rows: Vec::new(),
    };
    // The report goes next to the run's state; write_report appends the run id.
    let location = ReportLocation::S3(
        format!("s3://{}/{}", env.store.bucket(), env.config.report_prefix).parse()?,
    );
    summary.summary_json = Some(env.store.url(run_id, "summary.json"));
    summary.failures_csv = Some(env.store.url(run_id, "failures.csv"));
    // The CLI's rule, so summary.json carries the same error either way;
    // the state machine fails the execution on `over_threshold`.
    let threshold = manifest.settings.failure_threshold;
    let over_threshold = summary.apply_failure_threshold(threshold);
    let spool = rows.finish()?;
    let (summary_json, failures_csv) = write_report(&location, &summary, spool, &env.s3).await?;
    let failed = counts.failed_objects();
    tracing::info!(run_id, ?status, failed, summary = %summary_json, "report written");
    Ok(ReportOutcome {
        run_id: run_id.to_owned(),
        status,
        exit_code: status.exit_code(),
        failed,
        failure_threshold: threshold,
        over_threshold,
        summary_json,
        failures_csv,
        counts,
    })
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
