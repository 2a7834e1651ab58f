//! The range queue: how a listing pass is handed out to listers.
//!
//! A pass (the write phase, VALIDATE) starts as one range task per shard,
//! sent here by the planner. The lister function takes them off the queue
//! through an event source mapping whose `MaximumConcurrency` is the
//! listing concurrency; each invocation lists its range until its deadline
//! and sends the range's next task back, until the range is done. The
//! state machine only waits: its history grows with its polls, not with
//! shards or invocations (a Map state costs 4 events a shard and 7 an
//! invocation, 60,000 at a billion keys, against a limit of 25,000).
//!
//! Completion is counted in the run table ([`super::counters`]): every
//! range is counted sent, once, before it is sent, and done, once, by the
//! invocation that lists its last key. The pass is over when the two are
//! equal, read done first.
//!
//! VALIDATE does not wait for the whole write phase: a write-phase range
//! whose listing and copies are all done is sent to VALIDATE at once
//! ([`validate_when_copied`]), so VALIDATE lists most ranges while others
//! still copy, and after the last copy only the last ranges are left.
//! Listing the range again then cannot race its own copies: every batch it
//! sent, and every part they split into, is counted done.

use crate::base::error::SyncError;
use crate::model::location::KeyRange;
use crate::serverless::FunctionEnv;
use crate::serverless::batch::send_messages;
use crate::serverless::contract::{Phase, Progress, ShardCursor};

/// Send range tasks to the range queue.
pub async fn send_tasks(env: &FunctionEnv, tasks: &[ShardCursor]) -> Result<(), SyncError> {
    let queue = env.config.range_queue_url()?;
    let mut bodies = Vec::with_capacity(tasks.len());
    for task in tasks {
        let body = serde_json::to_string(task)
            .map_err(|e| SyncError::Report(format!("a range task does not serialise: {e}")))?;
        bodies.push((
            format!(
                "range task {}/{:05}/{:05}",
                task.phase.name(),
                task.shard,
                task.seq
            ),
            body,
        ));
    }
    send_messages(&env.sqs, queue, "range tasks", &bodies).await
}

/// Start a listing pass over `shards`: count each range sent, then send
/// its first task. A retry (the state machine retries the planner) counts
/// nothing twice and sends the tasks again; a duplicate task is dropped by
/// the lister that finds it handed on.
pub async fn start_pass(
    env: &FunctionEnv,
    run_id: &str,
    phase: Phase,
    shards: &[(usize, Option<KeyRange>)],
) -> Result<Progress, SyncError> {
    let tasks: Vec<ShardCursor> = shards
        .iter()
        .map(|&(shard, ref range)| first_task(run_id, phase, shard, range.clone()))
        .collect();
    hand_out(env, run_id, &tasks).await?;
    tracing::info!(
        run_id,
        phase = phase.name(),
        ranges = shards.len(),
        "listing pass started"
    );
    Ok(Progress {
        run_id: run_id.to_owned(),
        phase,
        ranges_sent: shards.len() as u64,
        ranges_done: 0,
        batches_sent: 0,
        batches_done: 0,
        tasks_sent: 0,
        complete: false,
        idle_polls: 0,
        polls: 0,
        wait_seconds: 0,
        waited_secs: 0,
        stopped: false,
        stopped_polls: 0,
    })
}

/// The first task of a range: `range`, or the manifest's shard.
pub fn first_task(
    run_id: &str,
    phase: Phase,
    shard: usize,
    range: Option<KeyRange>,
) -> ShardCursor {
    ShardCursor {
        run_id: run_id.to_owned(),
        phase,
        shard,
        seq: 0,
        cursor: None,
        done: false,
        proven_chunks: 0,
        batches_sent: 0,
        range,
    }
}

/// Count `tasks` (first tasks of new ranges) sent, then send them.
pub async fn hand_out(
    env: &FunctionEnv,
    run_id: &str,
    tasks: &[ShardCursor],
) -> Result<(), SyncError> {
    env.counters()?.record_ranges_sent(run_id, tasks).await?;
    send_tasks(env, tasks).await
}

/// Range tasks waiting on the queue for a lister: none means the listers
/// keep up, and a range being listed may split off its remainder for the
/// next one free (the CLI splits a piece when a lister is idle).
pub async fn backlog(env: &FunctionEnv) -> Result<u64, SyncError> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let queue = env.config.range_queue_url()?;
    let attributes = env
        .sqs
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(A::ApproximateNumberOfMessages)
        .send()
        .await
        .map_err(|e| {
            SyncError::s3(
                "reading the range queue's depth",
                crate::base::error::classify(&e),
            )
        })?;
    Ok(attributes
        .attributes()
        .and_then(|a| a.get(&A::ApproximateNumberOfMessages))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

/// Send write-phase range `shard` to VALIDATE if its listing is done and
/// everything it sent is copied ([`crate::serverless::counters::RangeCopies`]).
/// The lister that ends the range and each copier that finishes one of its
/// batches look (one read); several may see it complete, and only the one
/// that counts it sent (a conditional write) sends it. A `retry` (a
/// redelivered batch or range task: perhaps the one that counted it and
/// died before sending) sends it again, and the lister that takes a
/// second copy finds the first's lease or its hand-on and drops it. A look
/// that fails or is lost costs only the overlap: VALIDATE's start sends
/// every range not yet validated. `Ok(true)`: sent.
///
/// Before a range was sent once, by the first look only, each batch that
/// ended after its last count sent it too: 151 VALIDATE tasks for 21
/// ranges in a 10,000-object run, 130 lister invocations that only found
/// the range taken.
pub async fn validate_when_copied(
    env: &FunctionEnv,
    run_id: &str,
    shard: usize,
    retry: bool,
) -> Result<bool, SyncError> {
    let Some(copies) = env.counters()?.range_copies(run_id, shard).await? else {
        return Ok(false);
    };
    if !copies.all_done() {
        return Ok(false);
    }
    let task = first_task(run_id, Phase::Validate, shard, copies.range.clone());
    if !env.counters()?.record_range_sent(run_id, &task).await? && !retry {
        tracing::debug!(run_id, shard, "range copied: already sent to VALIDATE");
        return Ok(false);
    }
    tracing::info!(
        run_id,
        shard,
        batches = copies.batches,
        parts = copies.parts,
        "range copied: sent to VALIDATE"
    );
    send_tasks(env, std::slice::from_ref(&task)).await?;
    Ok(true)
}

/// Start VALIDATE over the ranges whose write phase sent batches, and, with
/// a ledger of proven pairs, over the others too: VALIDATE is the run's
/// last listing pass, whose checkpoints name the next ledger's chunks, and
/// a range that wrote nothing hands on its write phase's proofs without
/// listing ([`super::lister`]). Ranges VALIDATE already listed to their end
/// (sent as their copies ended) are not sent again; those it is still
/// listing are, and their second task is dropped.
pub async fn start_validate(env: &FunctionEnv, run_id: &str) -> Result<Progress, SyncError> {
    let run = env.run(run_id).await?;
    let counters = env.counters()?;
    let done = counters.ranges_done(run_id, Phase::Write).await?;
    let validated: std::collections::HashSet<usize> = counters
        .ranges_done(run_id, Phase::Validate)
        .await?
        .into_iter()
        .map(|(shard, _, _)| shard)
        .collect();
    let with_ledger = run.options.ledger.is_some();
    // Each range as its write phase ended: the keys it listed itself, not
    // those it split off (they are ranges of their own).
    let shards: Vec<(usize, Option<KeyRange>)> = done
        .into_iter()
        .filter(|&(_, batches, _)| with_ledger || batches > 0)
        .filter(|(shard, _, _)| !validated.contains(shard))
        .map(|(shard, _, range)| (shard, range))
        .collect();
    tracing::info!(
        run_id,
        validated_early = validated.len(),
        "VALIDATE starts; ranges validated while others copied are not sent again"
    );
    start_pass(env, run_id, Phase::Validate, &shards).await
}
