//! The control side of a serverless run, for `s3-fanout run`, `status` and
//! `report`: find the stack, start an execution named by its run id, follow
//! it, and read its report.

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_sfn::types::ExecutionStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::base::client::{
    ClientSettings, build_cloudformation_client, build_dynamodb_client, build_s3_client,
    build_sfn_client,
};
use crate::base::error::{SyncError, classify};
use crate::report::StopReason;
use crate::serverless::contract::{Phase, Progress};
use crate::serverless::counters::RunCounters;
use crate::serverless::stop;
use crate::serverless::store::RunStore;

/// What `run`, `status` and `report` need of a deployed stack: its
/// CloudFormation outputs (`infra/template.yaml`), or the same keys written
/// by the local stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StackOutputs {
    pub state_machine_arn: String,
    pub report_bucket_name: String,
    #[serde(default)]
    pub report_prefix: String,
    #[serde(default)]
    pub work_queue_url: Option<String>,
    #[serde(default)]
    pub dead_letter_queue_url: Option<String>,
    /// The listers' range tasks, and those that failed on every receive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_queue_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_dead_letter_queue_url: Option<String>,
    /// The run counters' table: a run's progress, in one Query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_table_name: Option<String>,
    /// Replication's S3 events (only when the stack replicates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_queue_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_dead_letter_queue_url: Option<String>,
    /// Only for the local stack: where its AWS APIs answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
}

impl StackOutputs {
    /// From a file: either `{"StateMachineArn": ...}` or the output list
    /// of `aws cloudformation describe-stacks`.
    pub fn from_file(path: &Path) -> Result<Self, SyncError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SyncError::Config(format!("--stack-outputs {}: {e}", path.display())))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            SyncError::Config(format!("--stack-outputs {}: not JSON: {e}", path.display()))
        })?;
        let flat = match value.pointer("/Stacks/0/Outputs").or(value.get("Outputs")) {
            Some(Value::Array(outputs)) => Value::Object(
                outputs
                    .iter()
                    .filter_map(|o| {
                        Some((
                            o.get("OutputKey")?.as_str()?.to_owned(),
                            o.get("OutputValue")?.clone(),
                        ))
                    })
                    .collect(),
            ),
            _ => value,
        };
        serde_json::from_value(flat).map_err(|e| {
            SyncError::Config(format!(
                "--stack-outputs {}: missing stack outputs: {e}",
                path.display()
            ))
        })
    }

    /// From a deployed CloudFormation stack.
    pub async fn from_stack(name: &str, settings: &ClientSettings) -> Result<Self, SyncError> {
        let cloudformation = build_cloudformation_client(settings).await;
        let described = cloudformation
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .map_err(|e| SyncError::Config(format!("stack {name:?}: {}", classify(&e).message)))?;
        let outputs: serde_json::Map<String, Value> = described
            .stacks()
            .first()
            .map(|s| {
                s.outputs()
                    .iter()
                    .filter_map(|o| {
                        Some((
                            o.output_key()?.to_owned(),
                            Value::String(o.output_value()?.to_owned()),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        serde_json::from_value(Value::Object(outputs)).map_err(|e| {
            SyncError::Config(format!("stack {name:?} lacks s3-fanout's outputs: {e}"))
        })
    }

    pub fn settings(&self, base: &ClientSettings) -> ClientSettings {
        let mut settings = base.clone();
        if settings.endpoint_url.is_none() {
            settings.endpoint_url = self.endpoint_url.clone();
            settings.force_path_style |= self.endpoint_url.is_some();
        }
        settings
    }

    pub async fn store(&self, settings: &ClientSettings) -> RunStore {
        let mut prefix = self.report_prefix.clone();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        RunStore::new(
            build_s3_client(&self.settings(settings), None).await,
            self.report_bucket_name.clone(),
            prefix,
        )
    }

    /// `arn:aws:states:R:A:stateMachine:NAME` → `arn:aws:states:R:A:execution:NAME:RUN`.
    pub fn execution_arn(&self, run_id: &str) -> String {
        format!(
            "{}:{run_id}",
            self.state_machine_arn
                .replacen(":stateMachine:", ":execution:", 1)
        )
    }
}

/// A run id that sorts by time and names the execution: `20261122T075125-3f9a`.
pub fn new_run_id() -> String {
    let now = crate::base::format::now_rfc3339().replace([':', '-'], "");
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id();
    format!("{}-{:04x}", now.trim_end_matches('Z'), salt & 0xffff)
}

pub async fn start_run(
    stack: &StackOutputs,
    settings: &ClientSettings,
    run_id: &str,
    input: &Value,
) -> Result<String, SyncError> {
    let sfn = build_sfn_client(&stack.settings(settings)).await;
    let started = sfn
        .start_execution()
        .state_machine_arn(&stack.state_machine_arn)
        .name(run_id)
        .input(input.to_string())
        .send()
        .await
        .map_err(|e| SyncError::s3(format!("starting run {run_id}"), classify(&e)))?;
    Ok(started.execution_arn().to_owned())
}

/// Where an execution stands, and how far its copies have come.
#[derive(Debug, Clone, Serialize)]
pub struct RunState {
    pub run_id: String,
    pub status: String,
    /// The run's phase, named as the report's phases are: plan, list and
    /// send, copy, validate, report.
    pub phase: Option<String>,
    /// The last state the execution entered (Plan, CheckProgress,
    /// StartValidate, Report...).
    pub state: Option<String>,
    pub error: Option<String>,
    pub cause: Option<String>,
    pub output: Option<Value>,
    /// Batches recorded as sent, and those with a result.
    pub batches_sent: u64,
    pub batches_done: u64,
    /// Objects in the batches sent.
    pub tasks_sent: u64,
    /// The outcomes the batches' results record so far.
    pub objects_copied: u64,
    pub bytes_copied: u64,
    pub objects_failed: u64,
    /// Since the execution started, until it stopped.
    pub elapsed_secs: f64,
    /// Objects copied per second, over the whole run so far.
    pub objects_per_sec: f64,
    /// Objects copied per second since the previous refresh (watching).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_objects_per_sec: Option<f64>,
}

impl RunState {
    pub fn finished(&self) -> bool {
        self.status != ExecutionStatus::Running.as_str()
    }
}

/// The phase a state of `statemachine/sync.asl.json` belongs to.
pub fn phase_of(state: &str) -> &'static str {
    match state {
        // The plan and its failure's notification and end.
        s if s == "Plan" || s.contains("PlanFailed") => "plan",
        // The wait of either listing pass: the progress says which, and
        // whether its ranges are still listed (`phase_of_pass`).
        "StartWaiting" | "CheckProgress" | "AreAllBatchesDone" | "WaitForCopies" => "list and send",
        "ShouldValidate" | "StartValidate" => "validate",
        _ => "report", // Report, IsOverThreshold and the end states
    }
}

/// The phase of a run waiting in a listing pass: its ranges still listed
/// (list and send), its copies still running (copy), or VALIDATE.
pub fn phase_of_pass(progress: &Progress) -> &'static str {
    match progress.phase {
        Phase::Validate => "validate",
        Phase::Write if progress.ranges_done < progress.ranges_sent => "list and send",
        Phase::Write => "copy",
    }
}

/// Refresh interval of a watched run by default: often enough to look
/// live; each refresh reads only what changed since the last.
pub const REFRESH: Duration = Duration::from_secs(2);

/// Follows one run: its execution in Step Functions, its batches in the
/// run counters. A refresh costs the same at a hundred batches or a
/// million: a description of the execution, its last events, and two
/// Queries of the counters.
pub struct RunWatcher {
    sfn: aws_sdk_sfn::Client,
    counters: Option<RunCounters>,
    run_id: String,
    arn: String,
    /// When the previous refresh saw how many objects copied.
    previous: Option<(Instant, u64)>,
}

impl RunWatcher {
    pub async fn new(stack: &StackOutputs, settings: &ClientSettings, run_id: &str) -> Self {
        let settings = stack.settings(settings);
        let counters = match &stack.run_table_name {
            Some(table) => Some(RunCounters::new(
                build_dynamodb_client(&settings).await,
                table.clone(),
            )),
            None => None,
        };
        RunWatcher {
            sfn: build_sfn_client(&settings).await,
            counters,
            run_id: run_id.to_owned(),
            arn: stack.execution_arn(run_id),
            previous: None,
        }
    }

    /// Where the run stands now.
    pub async fn refresh(&mut self) -> Result<RunState, SyncError> {
        let run_id = self.run_id.clone();
        let described = self
            .sfn
            .describe_execution()
            .execution_arn(&self.arn)
            .send()
            .await
            .map_err(|e| SyncError::Config(format!("run {run_id}: {}", classify(&e).message)))?;
        let state = latest_state(&self.sfn, &self.arn).await?;
        // Progress is best effort: the execution's state is what counts.
        let (progress, totals) = match &self.counters {
            Some(counters) => {
                match crate::serverless::reporter::batch_counts(counters, &run_id, None).await {
                    Ok((progress, totals)) => (Some(progress), totals.counts),
                    Err(err) => {
                        tracing::debug!(run_id, error = %err, "could not read the run's counters");
                        (None, Default::default())
                    }
                }
            }
            None => (None, Default::default()),
        };
        let copied = totals.copied + totals.updated;
        let millis = |t: Option<&aws_smithy_types::DateTime>| t.and_then(|t| t.to_millis().ok());
        let now = crate::report::emf::now_ms();
        let elapsed_secs = millis(Some(described.start_date()))
            .map(|start| (millis(described.stop_date()).unwrap_or(now) - start).max(0) as f64 / 1e3)
            .unwrap_or(0.0);
        let recent_objects_per_sec = self.previous.map(|(at, before)| {
            copied.saturating_sub(before) as f64 / at.elapsed().as_secs_f64().max(1e-3)
        });
        self.previous = Some((Instant::now(), copied));
        Ok(RunState {
            run_id,
            status: described.status().as_str().to_owned(),
            phase: state.as_deref().map(|s| match (phase_of(s), &progress) {
                ("list and send", Some(progress)) => phase_of_pass(progress).to_owned(),
                (phase, _) => phase.to_owned(),
            }),
            state,
            error: described.error().map(str::to_owned),
            cause: described.cause().map(str::to_owned),
            output: described
                .output()
                .and_then(|o| serde_json::from_str(o).ok()),
            batches_sent: progress.as_ref().map_or(0, |p| p.batches_sent),
            batches_done: progress.as_ref().map_or(0, |p| p.batches_done),
            tasks_sent: progress.as_ref().map_or(0, |p| p.tasks_sent),
            objects_copied: copied,
            bytes_copied: totals.bytes_copied,
            objects_failed: totals.failed,
            elapsed_secs,
            objects_per_sec: if elapsed_secs > 0.0 {
                copied as f64 / elapsed_secs
            } else {
                0.0
            },
            recent_objects_per_sec,
        })
    }
}

/// One look at the run.
pub async fn run_state(
    stack: &StackOutputs,
    settings: &ClientSettings,
    run_id: &str,
) -> Result<RunState, SyncError> {
    RunWatcher::new(stack, settings, run_id)
        .await
        .refresh()
        .await
}

/// The newest state the execution entered. AWS returns the newest events
/// first when asked; an implementation that ignores `reverse_order` (moto)
/// is paged through to the end.
async fn latest_state(sfn: &aws_sdk_sfn::Client, arn: &str) -> Result<Option<String>, SyncError> {
    let mut newest: Option<(i64, String)> = None;
    let mut token = None;
    loop {
        let page = sfn
            .get_execution_history()
            .execution_arn(arn)
            .reverse_order(true)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| SyncError::s3("reading the run's history", classify(&e)))?;
        let events = page.events();
        for event in events {
            if let Some(details) = event.state_entered_event_details()
                && newest.as_ref().is_none_or(|(id, _)| event.id() > *id)
            {
                newest = Some((event.id(), details.name().to_owned()));
            }
        }
        let reversed = events.len() > 1 && events[0].id() > events[events.len() - 1].id();
        token = page.next_token().map(str::to_owned);
        if reversed && newest.is_some() || token.is_none() {
            return Ok(newest.map(|(_, name)| name));
        }
    }
}

/// Follow the run until its execution ends, looking `every` so often;
/// `on_refresh` sees each state, the last one included.
pub async fn wait_for_run(
    stack: &StackOutputs,
    settings: &ClientSettings,
    run_id: &str,
    every: Duration,
    mut on_refresh: impl FnMut(&RunState),
) -> Result<RunState, SyncError> {
    let mut watcher = RunWatcher::new(stack, settings, run_id).await;
    loop {
        let state = watcher.refresh().await?;
        on_refresh(&state);
        if state.finished() {
            return Ok(state);
        }
        tokio::time::sleep(every).await;
    }
}

/// What `cancel` found and did.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// The run is marked cancelled: its fleet stops within about a second
    /// (see [`crate::serverless::stop`]) and its execution ends as
    /// `Cancelled` with its report at its next progress check.
    Cancelled,
    /// It was stopped before (cancelled, or by fail-fast): nothing changed.
    AlreadyStopped(StopReason),
    /// Its execution had ended (with this status): nothing changed.
    Finished(String),
}

/// Cancel a running run: mark it in the run table, once. An unknown run
/// is a [`SyncError::Config`] (exit 2); a run that ended is left as it is.
pub async fn cancel_run(
    stack: &StackOutputs,
    settings: &ClientSettings,
    run_id: &str,
) -> Result<CancelOutcome, SyncError> {
    let settings = stack.settings(settings);
    let sfn = build_sfn_client(&settings).await;
    let described = sfn
        .describe_execution()
        .execution_arn(stack.execution_arn(run_id))
        .send()
        .await;
    let described = match described {
        Ok(described) => described,
        Err(err) => {
            let failure = classify(&err);
            return Err(if failure.code == "ExecutionDoesNotExist" {
                SyncError::Config(format!("no run {run_id:?} on this stack"))
            } else {
                SyncError::s3(format!("run {run_id}: reading its execution"), failure)
            });
        }
    };
    if described.status() != &ExecutionStatus::Running {
        return Ok(CancelOutcome::Finished(
            described.status().as_str().to_owned(),
        ));
    }
    let table = stack.run_table_name.clone().ok_or_else(|| {
        SyncError::Config(
            "this stack has no run table (RunTableName): redeploy it to cancel runs".into(),
        )
    })?;
    let counters = RunCounters::new(build_dynamodb_client(&settings).await, table);
    Ok(
        match stop::mark(&counters, run_id, StopReason::Cancelled).await? {
            stop::Marked::Now(_) => CancelOutcome::Cancelled,
            stop::Marked::Before(mark) => CancelOutcome::AlreadyStopped(mark.reason),
        },
    )
}

/// The run's summary.json, as the reporter wrote it.
pub async fn read_report(
    stack: &StackOutputs,
    settings: &ClientSettings,
    run_id: &str,
) -> Result<Value, SyncError> {
    let store = stack.store(settings).await;
    store
        .get_json(run_id, "summary.json")
        .await?
        .ok_or_else(|| {
            SyncError::Config(format!(
                "run {run_id} has no report yet at {}",
                store.url(run_id, "summary.json")
            ))
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every state of the deployed state machine, by name.
    fn states(states: &Value, into: &mut Vec<String>) {
        for (name, state) in states.as_object().into_iter().flatten() {
            into.push(name.clone());
            if let Some(inner) = state.pointer("/ItemProcessor/States") {
                self::states(inner, into);
            }
        }
    }

    /// The top-level states reachable from `from`, itself included.
    fn reachable(machine: &Value, from: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut next = vec![from.to_owned()];
        while let Some(name) = next.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let state = &machine["States"][&name];
            let mut targets = vec![&state["Next"], &state["Default"]];
            for branch in ["Choices", "Catch"] {
                targets.extend(
                    state[branch]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| &c["Next"]),
                );
            }
            next.extend(
                targets
                    .into_iter()
                    .filter_map(|t| t.as_str().map(str::to_owned)),
            );
        }
        seen
    }

    #[test]
    fn every_state_of_the_state_machine_belongs_to_its_phase() {
        let machine: Value =
            serde_json::from_str(crate::serverless::contract::STATE_MACHINE).expect("valid JSON");
        let mut all = Vec::new();
        states(&machine["States"], &mut all);
        assert!(all.len() > 10, "{all:?}");
        let in_phase = |phase: &str| -> BTreeSet<String> {
            all.iter()
                .filter(|s| phase_of(s) == phase)
                .cloned()
                .collect()
        };
        let plan = in_phase("plan");
        assert!(
            plan.contains("Plan") && plan.contains("PlanFailed"),
            "{plan:?}"
        );
        assert!(plan.iter().all(|s| s.contains("Plan")), "{plan:?}");
        assert!(in_phase("list and send").contains("WaitForCopies"));
        assert!(in_phase("validate").contains("StartValidate"));
        // What falls through to "report" is the report and what follows
        // it: a new state elsewhere in the machine must be placed above.
        assert_eq!(in_phase("report"), reachable(&machine, "Report"));
    }
}
