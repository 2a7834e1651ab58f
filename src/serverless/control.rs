//! The control side of a serverless run, for `s3-fanout run`, `status` and
//! `report`: find the stack, start an execution named by its run id, follow
//! it, and read its report.

use std::path::Path;
use std::time::Duration;

use aws_sdk_sfn::types::ExecutionStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::{
    ClientSettings, build_cloudformation_client, build_s3_client, build_sfn_client,
};
use crate::error::{SyncError, classify};
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
    let now = crate::report::now_rfc3339().replace([':', '-'], "");
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

/// Where an execution stands.
#[derive(Debug, Clone, Serialize)]
pub struct RunState {
    pub run_id: String,
    pub status: String,
    /// The last state entered (Plan, Write, CheckProgress, Validate, Report...).
    pub phase: Option<String>,
    pub error: Option<String>,
    pub cause: Option<String>,
    pub output: Option<Value>,
    /// Batches recorded as sent, and those with a result.
    pub batches_sent: u64,
    pub batches_done: u64,
}

impl RunState {
    pub fn finished(&self) -> bool {
        self.status != ExecutionStatus::Running.as_str()
    }
}

pub async fn run_state(
    stack: &StackOutputs,
    settings: &ClientSettings,
    run_id: &str,
) -> Result<RunState, SyncError> {
    let sfn = build_sfn_client(&stack.settings(settings)).await;
    let arn = stack.execution_arn(run_id);
    let described = sfn
        .describe_execution()
        .execution_arn(&arn)
        .send()
        .await
        .map_err(|e| SyncError::Config(format!("run {run_id}: {}", classify(&e).message)))?;
    let phase = latest_state(&sfn, &arn).await?;
    let store = stack.store(settings).await;
    let (batches_sent, batches_done) = batch_counts(&store, run_id).await.unwrap_or((0, 0));
    Ok(RunState {
        run_id: run_id.to_owned(),
        status: described.status().as_str().to_owned(),
        phase,
        error: described.error().map(str::to_owned),
        cause: described.cause().map(str::to_owned),
        output: described
            .output()
            .and_then(|o| serde_json::from_str(o).ok()),
        batches_sent,
        batches_done,
    })
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

async fn batch_counts(store: &RunStore, run_id: &str) -> Result<(u64, u64), SyncError> {
    let (sent, done) = crate::serverless::reporter::batch_counts(store, run_id).await?;
    Ok((sent.len() as u64, done))
}

/// Poll until the execution ends; `on_change` sees each new state.
pub async fn wait_for_run(
    stack: &StackOutputs,
    settings: &ClientSettings,
    run_id: &str,
    mut on_change: impl FnMut(&RunState),
) -> Result<RunState, SyncError> {
    let mut last: Option<(Option<String>, u64, u64)> = None;
    loop {
        let state = run_state(stack, settings, run_id).await?;
        let key = (state.phase.clone(), state.batches_sent, state.batches_done);
        if last.as_ref() != Some(&key) {
            on_change(&state);
            last = Some(key);
        }
        if state.finished() {
            return Ok(state);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
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
