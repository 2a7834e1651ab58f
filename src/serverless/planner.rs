//! The planner: validate the execution input, split the source into shards,
//! record the run in `run.json`, and start the write phase: one range task
//! per shard on the range queue ([`super::ranges`]). Asked to, it starts
//! VALIDATE the same way, once the write phase is over. Its EMF record has
//! the common figures (it copies nothing: zeros) and `Shards`.

use std::time::Instant;

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backend::s3::listing::ListTarget;
use crate::backend::s3::preflight::preflight;
use crate::base::error::SyncError;
use crate::base::metrics::RequestCounter;
use crate::engine::shards::plan_shards;
use crate::model::entry::Side;
use crate::model::location::KeyRange;
use crate::report::emf::{self, Unit, Work};
use crate::serverless::FunctionEnv;
use crate::serverless::contract::{Phase, Plan, PlannerEvent, Progress, RunManifest};
use crate::serverless::input::resolve_input;
use crate::serverless::ranges;

/// What the state machine asks of the planner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum PlannerRequest {
    /// Plan the run and start its write phase.
    Plan(PlannerEvent),
    /// Start VALIDATE, the write phase being over.
    Validate { run_id: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PlannerOutput {
    Plan(Plan),
    /// VALIDATE's ranges sent: the progress the state machine waits on.
    Validate(Progress),
}

pub async fn handle(
    event: LambdaEvent<PlannerRequest>,
    env: &FunctionEnv,
) -> Result<PlannerOutput, Diagnostic> {
    let started = Instant::now();
    let function = emf::function_name(&event.context.env_config.function_name, "planner");
    let PlannerEvent { run_id, input } = match event.payload {
        PlannerRequest::Plan(event) => event,
        PlannerRequest::Validate { run_id } => {
            let started_pass = ranges::start_validate(env, &run_id).await;
            emf::emit(
                &emf::function_record(&function, &Work::default(), started.elapsed())
                    .property("run_id", run_id.as_str().into())
                    .property("action", "validate".into()),
            );
            return started_pass.map(PlannerOutput::Validate).map_err(|err| {
                tracing::error!(run_id, error = %err, "starting VALIDATE failed");
                err.into()
            });
        }
    };
    let counter = RequestCounter::new();
    let planned = match plan_counted(env, &run_id, &input, &counter).await {
        Ok(plan) => {
            let shards: Vec<(usize, Option<KeyRange>)> =
                plan.shards.iter().map(|&shard| (shard, None)).collect();
            ranges::start_pass(env, &run_id, Phase::Write, &shards)
                .await
                .map(|_| plan)
        }
        Err(err) => Err(err),
    };
    let shards = planned.as_ref().map_or(0, |p| p.shards.len());
    emf::emit(
        &emf::function_record(
            &function,
            &Work::default().requests(&counter),
            started.elapsed(),
        )
        .value("Shards", Unit::Count, shards as f64)
        .property("run_id", run_id.as_str().into())
        .property("planned", planned.is_ok().into()),
    );
    planned.map(PlannerOutput::Plan).map_err(|err| {
        tracing::error!(run_id, error = %err, "planning failed");
        err.into()
    })
}

/// Plan a run, without starting its write phase: for callers that drive
/// the lister themselves.
pub async fn plan(env: &FunctionEnv, run_id: &str, input: &Value) -> Result<Plan, SyncError> {
    plan_counted(env, run_id, input, &RequestCounter::new()).await
}

/// [`plan`], counting its requests to the buckets in `counter`.
async fn plan_counted(
    env: &FunctionEnv,
    run_id: &str,
    input: &Value,
    counter: &RequestCounter,
) -> Result<Plan, SyncError> {
    // The run starts now: the report's timeline and phases count from here.
    let created_at = crate::base::format::now_rfc3339();
    if run_id.is_empty() || run_id.contains('/') {
        return Err(SyncError::Config(format!(
            "run id {run_id:?} must be non-empty and free of '/'"
        )));
    }
    if run_id == crate::serverless::input::LEDGERS {
        return Err(SyncError::Config(format!(
            "run id {run_id:?} is taken by the folder of ledgers of proven pairs"
        )));
    }
    let (spec, settings, options) = resolve_input(input, &env.config)?;
    let run = env.copier_for(&options).await?.counted(counter);
    // A missing or forbidden bucket fails the execution here, before any
    // write, with S3's own words.
    let source = ListTarget::for_side(&run.source_client, &run.source, &options, Side::Source);
    let destination = ListTarget::for_side(
        &run.destination_client,
        &run.destination,
        &options,
        Side::Destination,
    );
    preflight(&source, Side::Source).await?;
    preflight(&destination, Side::Destination).await?;
    if options.copy.all_versions {
        // Refused here, before any write, as the CLI refuses it.
        crate::engine::histories::check_versioned(&source, &destination).await?;
    }
    let want =
        crate::engine::shards::shards_wanted(settings.shard_concurrency, settings.max_shards);
    let shards = plan_shards(&source, &options.range, want, settings.max_shards as usize).await?;
    tracing::info!(run_id, shards = shards.len(), source = %options.source, destination = %options.destination, "planned");
    let journal = crate::serverless::proofs::fold_journal(
        env.store.client(),
        &options,
        (run_id, env.config.journal_settle_ms),
    )
    .await;
    let manifest = RunManifest {
        version: RunManifest::VERSION,
        run_id: run_id.to_owned(),
        spec,
        settings: settings.clone(),
        shards,
        created_at,
        journal,
    };
    env.store
        .put_json(run_id, RunManifest::KEY, &manifest)
        .await?;
    Ok(Plan {
        run_id: run_id.to_owned(),
        shards: (0..manifest.shards.len()).collect(),
        shard_concurrency: settings.shard_concurrency,
        validate: settings.validate,
        run_url: env.store.run_url(run_id),
    })
}
