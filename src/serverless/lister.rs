//! The lister: one range of the buckets, both sides, the CLI's merge-join
//! and decision, and copy batches sent to SQS. The same loop, in validate
//! mode, is the VALIDATE phase: re-list, re-diff, and record every
//! mismatch.
//!
//! Its work comes as range tasks off the range queue ([`super::ranges`]):
//! a shard of the plan, or a range split off one. An invocation lists up
//! to `lister_streams` tasks at once ([`super::streams`]); each task it
//! leases in the run table until the deadline (SQS may deliver a message
//! twice at once; the second copy is handed back), and works page by page
//! (1,000 keys), looking at the deadline after each. Every ten
//! pages (`S3_FANOUT_CHECKPOINT_KEYS`), or every 30 s if pages come
//! slowly, and when it stops, it sends the batches those pages made and
//! writes its checkpoint (`sent/SHARD-SEQ.json`): the last key handled,
//! the counts, the batches sent, the range (its end moved down by splits).
//! A checkpoint per page cost a PUT per 1,000 keys, 200,000 a night at 100M
//! keys; this is a tenth. It stops before its deadline, or after
//! `S3_FANOUT_LISTER_MAX_KEYS` keys, sends the range's next task (SEQ + 1)
//! to the queue, or counts the range done, and marks its checkpoint handed
//! on. A redelivered task resumes from its checkpoint and numbers its
//! batches from the count there, so a crash repeats at most the pages since
//! the last checkpoint, under the same batch ids; a task whose checkpoint
//! says it stopped hands on the same next task; one already handed on is a
//! duplicate, dropped.
//!
//! At a checkpoint, when no range task waits for a lister, a range with
//! enough left cuts the rest in two by the CLI's own rule
//! ([`crate::engine::pieces::bisect`]: the same `MovableEnd`, `KeySpace`
//! and one-key probes): its end moves down, the new range is numbered and
//! recorded in the checkpoint, and only then counted and sent. A retried
//! invocation does not split (the attempt it repeats may have sent keys
//! past its checkpoint, which a new range would send again under other
//! batch ids); it sends again the splits its checkpoint records.
//!
//! A pair whose ETags cannot decide (a KMS side) is proven as the CLI
//! proves it: by the ledger of proven pairs, read beside the listings from
//! the report bucket, else by a HEAD of each side for their checksums. The
//! run's last listing pass (VALIDATE, else the write phase) writes the
//! next ledger as it goes: every pair it proved, in key order, in chunks
//! its checkpoint names; the report makes them the ledger once every shard
//! is done. When VALIDATE follows, the write phase writes its proofs as
//! chunks too, and the shard's last write invocation names them all in
//! `proven/SHARD.json`: VALIDATE reads them beside the committed ledger,
//! so a pair the write phase proved by checksums is not HEADed again.
//!
//! That record also says how many batches the shard's write phase sent. A
//! shard that sent none wrote nothing to check: its VALIDATE lists nothing,
//! and takes the write phase's proofs as its own, so an unchanged night
//! lists each side once, as the CLI does.
//!
//! With `all_versions`, the listings are both sides' versions, joined into
//! each key's two histories ([`histories::joined`]) and aligned as the CLI
//! aligns them: the write phase sends a history task for each key whose
//! destination lacks entries, and VALIDATE reports each key whose history
//! is not whole. Those ranges are not split (nothing moves their end), so
//! their shards are the planner's.
//!
//! Every invocation reports one EMF record: what it listed, skipped as
//! already equal, sent (`ObjectsListed`, `ObjectsSkipped`, `BatchesSent`)
//! or, validating, checked (`ObjectsVerified`, `ObjectsMismatched`); a
//! failed invocation too, with what it did before failing.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use futures::StreamExt;
use lambda_runtime::{Diagnostic, LambdaEvent};
use tokio_util::sync::CancellationToken;

use crate::backend::ledger::in_order::InOrderWriter;
use crate::backend::ledger::read::{Cursor, Ledger};
use crate::backend::ledger::store::{CHUNK_PREFIX, StateStore};
use crate::backend::s3::copier::Copier;
use crate::backend::s3::listing::{ListTarget, list_range_until};
use crate::backend::side::Listing;
use crate::backend::transfer::Mover;
use crate::base::error::SyncError;
use crate::base::metrics::RequestCounter;
use crate::engine::diff::{Action, SkipReason, decide, merge_join};
use crate::engine::histories::{self, KeyHistory, Verdict};
use crate::engine::pieces::{PAGES_BEFORE_CUT, bisect};
use crate::engine::prove::Proofs;
use crate::engine::verify::{Check, check_pair, prove_in_turn};
use crate::engine::worker::count_plan;
use crate::model::entry::{ObjectEntry, Pair, Side};
use crate::model::keyspace::MovableEnd;
use crate::model::location::KeyRange;
use crate::report::emf::{self, MetricRecord, Unit, Work};
use crate::report::ledger::{ReportRow, TaskStatus};
use crate::report::{Counts, Stats};
use crate::serverless::FunctionEnv;
use crate::serverless::batch::{BatchBuilder, BatchLimits, send_batches};
use crate::serverless::contract::{
    Checkpoint, CopyBatch, CopyTask, Phase, SentBatch, ShardCursor, ShardWritten, SplitRange,
};
use crate::serverless::env::RunContext;
use crate::serverless::stop::StopWatch;

/// What one invocation did, for its metrics: a resumed checkpoint's counts
/// include an earlier, crashed invocation's work, so these are kept apart.
#[derive(Debug, Default)]
pub struct Tally {
    counts: Counts,
    /// Keys handled, one per key whether on one side or both.
    keys: u64,
    batches_sent: u64,
    throttles: u64,
    /// Sending batches to SQS and counting them sent in the run counters.
    sending: Duration,
    /// Saving progress: the checkpoint, and the ledger's chunks and what
    /// VALIDATE needs, written with it.
    checkpointing: Duration,
}

impl Tally {
    fn record(&self, function_name: &str, at: &ShardCursor, duration: Duration) -> MetricRecord {
        let c = &self.counts;
        let work = Work {
            objects_skipped: c.skip_equal + c.skip_unverified + c.skip_not_modified,
            retries: c.retries,
            throttles: self.throttles,
            ..Work::default()
        };
        let record = emf::function_record(function_name, &work, duration).value(
            "ObjectsListed",
            Unit::Count,
            self.keys as f64,
        );
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let record = record.value("CheckpointTime", Unit::Milliseconds, ms(self.checkpointing));
        let record = match at.phase {
            Phase::Write => record
                .value("BatchesSent", Unit::Count, self.batches_sent as f64)
                .value("SendTime", Unit::Milliseconds, ms(self.sending)),
            Phase::Validate => record
                .value("ObjectsVerified", Unit::Count, c.verify_checked as f64)
                .value("ObjectsMismatched", Unit::Count, c.verify_mismatched as f64),
        };
        record
            .property("run_id", at.run_id.as_str().into())
            .property("phase", serde_json::to_value(at.phase).unwrap_or_default())
            .property("shard", at.shard.into())
            .property("seq", at.seq.into())
    }
}

/// Listing counts, as the CLI's listing streams count them.
fn count_listed(stats: &Stats, pair: &Pair) {
    let (source, destination) = match pair {
        Pair::SourceOnly(s) => (Some(s), None),
        Pair::DestinationOnly(d) => (None, Some(d)),
        Pair::Both(s, d) => (Some(s), Some(d)),
    };
    if let Some(source) = source {
        Stats::add(&stats.listed_source, 1);
        Stats::add(&stats.listed_source_bytes, source.size);
    }
    if destination.is_some() {
        Stats::add(&stats.listed_destination, 1);
    }
}

pub fn checkpoint_name(phase: Phase, shard: usize, seq: u32) -> String {
    format!("{}/{shard:05}-{seq:05}.json", phase.folder())
}

/// The lister's Lambda handler: range tasks off the range queue, through
/// its event source mapping (BatchSize `lister_streams`), and more pulled
/// off it while the invocation has time ([`super::streams`]), listed
/// `lister_streams` at once. A task that fails, or whose lease another
/// lister holds, is handed back, and SQS delivers it again after the
/// visibility timeout; after `maxReceiveCount` receives it is in the range
/// dead-letter queue, and the run's report says which range was never
/// listed.
pub async fn handle(
    event: LambdaEvent<SqsEvent>,
    env: &FunctionEnv,
) -> Result<SqsBatchResponse, Diagnostic> {
    let deadline = event.context.deadline();
    let function = emf::function_name(&event.context.env_config.function_name, "lister");
    let invocation = event.context.request_id.as_str();
    let watches = Watches::default();
    let work =
        |body: Option<String>| take_task(env, body, deadline, (&function, invocation), &watches);
    Ok(crate::serverless::streams::run(env, event.payload.records, deadline, work).await)
}

/// One range task's message: taken, with its metrics emitted. Whether it
/// is done with (handed on, or a duplicate dropped); if not, it is handed
/// back.
async fn take_task(
    env: &FunctionEnv,
    body: Option<String>,
    deadline: SystemTime,
    (function, invocation): (&str, &str),
    watches: &Watches,
) -> bool {
    let Some(Ok(at)) = body.as_deref().map(serde_json::from_str::<ShardCursor>) else {
        tracing::error!(
            invocation,
            "a range task that does not read as one; handed back until the dead-letter queue takes it"
        );
        return false;
    };
    let started = Instant::now();
    let mut tally = Tally::default();
    let stop = watches.token(env, &at.run_id).await;
    let taken = if stop.is_cancelled() {
        drop_range(env, &at).await
    } else {
        take_range_until_stopped(env, at.clone(), deadline, &mut tally, &stop).await
    };
    emf::emit(
        &tally
            .record(function, &at, started.elapsed())
            .property("invocation", invocation.into()),
    );
    match taken {
        Ok(Taken::HandedOn(_) | Taken::Duplicate | Taken::Dropped) => true,
        Ok(Taken::Leased) => false,
        Err(err) => {
            tracing::error!(run_id = %at.run_id, shard = at.shard, seq = at.seq, error = %err, "listing failed; the range task is handed back");
            false
        }
    }
}

/// What became of a range task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Listed, then handed on: the next range task sent (`done` false), or
    /// the range counted done. Carries that next task.
    HandedOn(ShardCursor),
    /// Its invocation had already handed on: a duplicate delivery, dropped.
    Duplicate,
    /// Another lister holds its lease: handed back, to be found done later.
    Leased,
    /// The run is stopped: the rest of the range is not listed, and the
    /// range is counted done and dropped.
    Dropped,
}

/// The stop marks of the runs an invocation's range tasks belong to, each
/// watched from the first task of its run ([`StopWatch`]).
#[derive(Default)]
struct Watches(tokio::sync::Mutex<std::collections::HashMap<String, StopWatch>>);

impl Watches {
    /// Cancelled once `run_id` is stopped; never, where the run table
    /// cannot be reached (the run goes on, as before marks).
    async fn token(&self, env: &FunctionEnv, run_id: &str) -> CancellationToken {
        let Ok(counters) = env.counters() else {
            return CancellationToken::new();
        };
        let mut watches = self.0.lock().await;
        if let Some(watch) = watches.get(run_id) {
            return watch.token();
        }
        let watch = StopWatch::start(counters, run_id).await;
        let token = watch.token();
        watches.insert(run_id.to_owned(), watch);
        token
    }
}

/// A range task of a stopped run: counted done and dropped, unlisted.
async fn drop_range(env: &FunctionEnv, at: &ShardCursor) -> Result<Taken, SyncError> {
    let range = match &at.range {
        Some(range) => range.clone(),
        None => env
            .run(&at.run_id)
            .await?
            .manifest
            .shards
            .get(at.shard)
            .cloned()
            .unwrap_or_default(),
    };
    tracing::info!(
        shard = at.shard,
        seq = at.seq,
        "the run is stopped: the range task is dropped"
    );
    env.counters()?
        .record_range_dropped(&at.run_id, (at.phase, at.shard), at.batches_sent, &range)
        .await?;
    Ok(Taken::Dropped)
}

/// Take one range task: lease it until `deadline`, list on from its cursor
/// until the deadline, then hand on (send the next task, or count the
/// range done), and record that it did. A crash anywhere repeats at most
/// what the last checkpoint did not cover: a redelivered task resumes from
/// its checkpoint, or, if that invocation had stopped, sends its next task
/// (a duplicate of which is dropped by the `handed_on` mark or the lease).
pub async fn take_range(
    env: &FunctionEnv,
    at: ShardCursor,
    deadline: SystemTime,
    tally: &mut Tally,
) -> Result<Taken, SyncError> {
    take_range_until_stopped(env, at, deadline, tally, &CancellationToken::new()).await
}

/// [`take_range`], ending the listing at the next page once `stop` is
/// cancelled (the run was stopped): the rest of the range is dropped.
async fn take_range_until_stopped(
    env: &FunctionEnv,
    at: ShardCursor,
    deadline: SystemTime,
    tally: &mut Tally,
    stop: &CancellationToken,
) -> Result<Taken, SyncError> {
    let counters = env.counters()?;
    let until_ms = deadline
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let key = (at.phase, at.shard, at.seq);
    let Some(first_attempt) = counters.lease(&at.run_id, key, until_ms).await? else {
        tracing::info!(
            shard = at.shard,
            seq = at.seq,
            "another lister holds this range task; handed back"
        );
        return Ok(Taken::Leased);
    };
    let taken = hand_on(env, at.clone(), (deadline, first_attempt), tally, stop).await;
    if taken.is_err() {
        // Failed, not dead: its redelivery need not wait out the lease.
        let _ = counters.release(&at.run_id, key).await;
    }
    taken
}

/// [`take_range`] once the lease is held.
async fn hand_on(
    env: &FunctionEnv,
    at: ShardCursor,
    (deadline, first_attempt): (SystemTime, bool),
    tally: &mut Tally,
    stop: &CancellationToken,
) -> Result<Taken, SyncError> {
    let counters = env.counters()?;
    let (next, mut checkpoint) =
        list_checkpointed(env, at.clone(), (deadline, first_attempt, stop), tally).await?;
    if checkpoint.handed_on {
        tracing::info!(
            shard = at.shard,
            seq = at.seq,
            "this range task was handed on before: a duplicate, dropped"
        );
        counters
            .release(&at.run_id, (at.phase, at.shard, at.seq))
            .await?;
        return Ok(Taken::Duplicate);
    }
    let dropped = stop.is_cancelled() && !next.done;
    if dropped {
        // Stopped while listing: what is left of the range is not listed.
        tracing::info!(
            shard = at.shard,
            seq = at.seq,
            "the run is stopped: the rest of the range is dropped"
        );
        let range = next.range.clone().unwrap_or_default();
        counters
            .record_range_dropped(&at.run_id, (at.phase, at.shard), next.batches_sent, &range)
            .await?;
    } else if next.done {
        let range = next.range.clone().unwrap_or_default();
        counters
            .record_range_done(&at.run_id, (at.phase, at.shard), next.batches_sent, &range)
            .await?;
        // Its copies may all be done already (a range's last batches are
        // copied while its last page is listed).
        if at.phase == Phase::Write
            && !stop.is_cancelled()
            && let Err(err) = validate_if_copied(env, &at, !first_attempt).await
        {
            tracing::warn!(shard = at.shard, error = %err, "could not look whether the range is copied; VALIDATE lists it when the write phase ends");
        }
    } else {
        crate::serverless::ranges::send_tasks(env, std::slice::from_ref(&next)).await?;
    }
    checkpoint.handed_on = true;
    let name = checkpoint_name(at.phase, at.shard, at.seq);
    env.store.put_json(&at.run_id, &name, &checkpoint).await?;
    counters
        .release(&at.run_id, (at.phase, at.shard, at.seq))
        .await?;
    Ok(if dropped {
        Taken::Dropped
    } else {
        Taken::HandedOn(next)
    })
}

/// Send the write-phase range `at` to VALIDATE if the run validates and its
/// copies are all done; on a `retry` of its task, even if sent before.
async fn validate_if_copied(
    env: &FunctionEnv,
    at: &ShardCursor,
    retry: bool,
) -> Result<(), SyncError> {
    if env.run(&at.run_id).await?.manifest.settings.validate {
        crate::serverless::ranges::validate_when_copied(env, &at.run_id, at.shard, retry).await?;
    }
    Ok(())
}

/// Run one invocation's worth of a shard; returns the cursor for the next.
/// Without a lease, it cannot know it is the first attempt: it never
/// splits.
pub async fn list_shard(
    env: &FunctionEnv,
    at: ShardCursor,
    deadline: SystemTime,
) -> Result<ShardCursor, SyncError> {
    Ok(list_checkpointed(
        env,
        at,
        (deadline, false, &CancellationToken::new()),
        &mut Tally::default(),
    )
    .await?
    .0)
}

/// [`list_shard`], adding what it does to `tally`, and returning the
/// invocation's checkpoint as it left it too. `first_attempt`: no lister
/// took this task before (its lease was never taken), so it may split.
async fn list_checkpointed(
    env: &FunctionEnv,
    at: ShardCursor,
    (deadline, first_attempt, stop): (SystemTime, bool, &CancellationToken),
    tally: &mut Tally,
) -> Result<(ShardCursor, Checkpoint), SyncError> {
    let run = env.run(&at.run_id).await?;
    let task_range = match &at.range {
        Some(range) => range.clone(),
        None => run.manifest.shards.get(at.shard).cloned().ok_or_else(|| {
            SyncError::Config(format!(
                "run {} has {} shards, not {}, and the task names no keys",
                at.run_id,
                run.manifest.shards.len(),
                at.shard + 1
            ))
        })?,
    };
    let name = checkpoint_name(at.phase, at.shard, at.seq);
    let saved = env.store.get_json::<Checkpoint>(&at.run_id, &name).await?;
    let resumed = saved.is_some();
    let mut checkpoint = match saved {
        Some(saved) => {
            tracing::info!(shard = at.shard, seq = at.seq, cursor = ?saved.cursor, "resuming from a checkpoint");
            saved
        }
        None => Checkpoint {
            shard: at.shard,
            seq: at.seq,
            cursor: at.cursor.clone(),
            range: Some(task_range.clone()),
            started_at_ms: Some(emf::now_ms()),
            ..Checkpoint::default()
        },
    };
    // The keys this invocation lists: the task's, or as an earlier attempt
    // narrowed them by splitting.
    let shard_range = checkpoint.range.clone().unwrap_or(task_range);
    if resumed && !checkpoint.handed_on && !checkpoint.splits.is_empty() {
        // An earlier attempt recorded these and may have died before
        // handing them out: counted once and sent again (a duplicate task
        // is dropped by the lister that finds it handed on).
        hand_out_splits(env, &at, &checkpoint.splits).await?;
    }
    // An invocation that stopped on purpose listed all it was going to:
    // its retry hands on the same cursor.
    let listing = !(checkpoint.done || checkpoint.ended || checkpoint.handed_on);
    let written = match at.phase {
        Phase::Validate if listing => shard_written(env, &at).await,
        _ => None,
    };
    if let Some(written) = written.as_ref().filter(|w| w.batches_sent == 0) {
        // The write phase changed nothing here: its listing already proved
        // every pair it could, and its proofs are the next ledger's.
        tracing::info!(
            shard = at.shard,
            "the write phase sent no batch in this shard; nothing to validate"
        );
        (checkpoint.done, checkpoint.ended) = (true, true);
        if run.options.ledger.is_some() {
            checkpoint.proven = written.chunks.clone();
        }
        checkpoint.updated_at_ms = Some(emf::now_ms());
        env.store.put_json(&at.run_id, &name, &checkpoint).await?;
    } else if listing {
        let range = shard_range.resumed_after(checkpoint.cursor.as_deref());
        let proofs = shard_proofs(env, &run, &at, checkpoint.proven.len()).await;
        let this_run = write_phase_proofs(&proofs, written.as_ref());
        let journal = journal_proofs(&run, &proofs);
        let mut pass = Pass::new(env, &run, &at, &mut checkpoint, deadline, tally);
        // A retry does not split: the attempt it repeats may have sent keys
        // past its last checkpoint (or died before writing its first),
        // which a split there would send again under the new range's batch
        // ids. The next invocation may.
        pass.may_split = first_attempt && !resumed && env.config.range_queue_url.is_some();
        pass.stop = stop.clone();
        pass.cursors = (proofs.cursor().into_iter())
            .chain(journal)
            .chain(this_run)
            .collect();
        pass.proofs = proofs;
        let passed = pass.run(range).await;
        pass.tally.throttles += pass.counter.throttled();
        passed?;
    }
    let next = ShardCursor {
        seq: at.seq + 1,
        cursor: checkpoint.cursor.clone(),
        done: checkpoint.done,
        proven_chunks: at.proven_chunks + checkpoint.proven.len() as u32,
        batches_sent: at.batches_sent + checkpoint.batches.len() as u64,
        range: Some(shard_range_now(&checkpoint, &shard_range)),
        ..at
    };
    Ok((next, checkpoint))
}

/// The range as the invocation left it: its end moved down by its splits.
fn shard_range_now(checkpoint: &Checkpoint, listed: &KeyRange) -> KeyRange {
    checkpoint.range.clone().unwrap_or_else(|| listed.clone())
}

/// Count the ranges `splits` sent, once, then send their first tasks.
async fn hand_out_splits(
    env: &FunctionEnv,
    at: &ShardCursor,
    splits: &[SplitRange],
) -> Result<(), SyncError> {
    let tasks: Vec<ShardCursor> = splits
        .iter()
        .map(|split| {
            crate::serverless::ranges::first_task(
                &at.run_id,
                at.phase,
                split.shard,
                Some(split.range.clone()),
            )
        })
        .collect();
    crate::serverless::ranges::hand_out(env, &at.run_id, &tasks).await
}

/// The ledger this invocation reads, and the chunks it writes (the next
/// ledger's, in the run's last listing pass; else this run's write-phase
/// proofs, for VALIDATE), numbered after those an earlier attempt at the
/// same invocation wrote (`written`).
async fn shard_proofs(
    env: &FunctionEnv,
    run: &RunContext,
    at: &ShardCursor,
    written: usize,
) -> Proofs {
    let Some(location) = &run.options.ledger else {
        return Proofs::default();
    };
    let store = StateStore::at(location, env.store.client());
    let (source, destination) = (
        run.options.source.to_string(),
        run.options.destination.to_string(),
    );
    let ledger = Ledger::open(store.clone(), &source, &destination).await;
    let prefix = format!(
        "{CHUNK_PREFIX}{}-{}-{:05}-{:05}-",
        at.run_id,
        at.phase.folder(),
        at.shard,
        at.seq
    );
    let next = Arc::new(InOrderWriter::new(store, prefix, written));
    Proofs::in_order(Some(ledger), Some(next))
}

/// A cursor on the replicator's journal, as the planner folded it for this
/// run; none without one.
fn journal_proofs(run: &RunContext, proofs: &Proofs) -> Option<Cursor> {
    let ledger = proofs.ledger.as_ref()?;
    let fold = run.manifest.journal.as_ref()?;
    Some(Ledger::of_chunks(ledger.store().clone(), fold.chunks.clone()).cursor())
}

/// Where a shard's write phase names the chunks of its proofs.
fn write_proofs_name(shard: usize) -> String {
    format!("proven/{shard:05}.json")
}

/// In VALIDATE, what the shard's write phase left it; `None` when that
/// cannot be read (then VALIDATE lists the shard and proves its pairs
/// again, which is safe).
async fn shard_written(env: &FunctionEnv, at: &ShardCursor) -> Option<ShardWritten> {
    let name = write_proofs_name(at.shard);
    match env.store.get_json::<ShardWritten>(&at.run_id, &name).await {
        Ok(written) => written,
        Err(e) => {
            tracing::warn!(error = %e, "what the write phase left cannot be read; VALIDATE lists the shard and proves its pairs again");
            None
        }
    }
}

/// In VALIDATE, a cursor on the pairs this run's write phase proved in
/// this shard; none in the write phase, or where it proved none.
fn write_phase_proofs(proofs: &Proofs, written: Option<&ShardWritten>) -> Option<Cursor> {
    let ledger = proofs.ledger.as_ref()?;
    let chunks = written
        .map(|w| w.chunks.clone())
        .filter(|c| !c.is_empty())?;
    Some(Ledger::of_chunks(ledger.store().clone(), chunks).cursor())
}

/// At the end of a shard's write phase, when VALIDATE follows: record how
/// many batches the shard sent (none: VALIDATE skips it) and name every
/// chunk of proofs its invocations wrote, for VALIDATE to read. Earlier
/// invocations' chunks are in their checkpoints, read back only when
/// there are some.
async fn end_write_phase(
    env: &FunctionEnv,
    at: &ShardCursor,
    last: &Checkpoint,
) -> Result<(), SyncError> {
    let mut chunks = Vec::new();
    for seq in (0..at.seq).filter(|_| at.proven_chunks > 0) {
        let name = checkpoint_name(Phase::Write, at.shard, seq);
        if let Some(earlier) = env.store.get_json::<Checkpoint>(&at.run_id, &name).await? {
            chunks.extend(earlier.proven);
        }
    }
    chunks.extend(last.proven.iter().cloned());
    let written = ShardWritten {
        batches_sent: at.batches_sent + last.batches.len() as u64,
        chunks,
    };
    env.store
        .put_json(&at.run_id, &write_proofs_name(at.shard), &written)
        .await
}

/// What a pass lists: a key's pair of objects, or (`--all-versions`) its
/// two version histories.
#[expect(
    clippy::large_enum_variant,
    reason = "one at a time, moved straight into its handler: boxing a pair would cost an allocation per listed key"
)]
enum Listed {
    Pair(Pair),
    History(KeyHistory),
}

/// The state of one invocation's pass over its part of a shard.
struct Pass<'a> {
    env: &'a FunctionEnv,
    run: &'a Arc<RunContext>,
    at: &'a ShardCursor,
    checkpoint: &'a mut Checkpoint,
    stats: Stats,
    /// This invocation's listings, for the retries they took.
    counter: RequestCounter,
    builder: BatchBuilder,
    ready: Vec<CopyBatch>,
    stop_at: SystemTime,
    tally: &'a mut Tally,
    /// The ledger of proven pairs and checksum comparisons, and this
    /// pass's place in the ledgers it reads: the committed one, the
    /// replicator's journal folded for this run, and in VALIDATE the write
    /// phase's proofs.
    proofs: Proofs,
    cursors: Vec<Cursor>,
    /// Whether this invocation may split its range (see `list_checkpointed`).
    may_split: bool,
    /// Cancelled when the run is stopped: the pass ends at the next page.
    stop: CancellationToken,
}

impl<'a> Pass<'a> {
    fn new(
        env: &'a FunctionEnv,
        run: &'a Arc<RunContext>,
        at: &'a ShardCursor,
        checkpoint: &'a mut Checkpoint,
        deadline: SystemTime,
        tally: &'a mut Tally,
    ) -> Self {
        // Keep a fifth of the remaining time (at least 5 s, at most 2 min)
        // for the last page's sends and checkpoint.
        let remaining = deadline
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let margin = crate::model::deadlines::stop_margin(remaining);
        let builder = BatchBuilder::new(
            &at.run_id,
            &format!("{:05}-{:05}", at.shard, at.seq),
            checkpoint.batches.len(),
            BatchLimits::default(),
        )
        .from_range(at.shard);
        Pass {
            env,
            run,
            at,
            checkpoint,
            stats: Stats::default(),
            counter: RequestCounter::new(),
            builder,
            ready: Vec::new(),
            stop_at: deadline.checked_sub(margin).unwrap_or(deadline),
            tally,
            proofs: Proofs::default(),
            cursors: Vec::new(),
            may_split: false,
            stop: CancellationToken::new(),
        }
    }

    async fn run(&mut self, range: KeyRange) -> Result<(), SyncError> {
        let options = &self.run.options;
        let copier = &self.run.copier.counted(&self.counter);
        let source =
            ListTarget::for_side(&copier.source_client, &copier.source, options, Side::Source);
        let destination = ListTarget::for_side(
            &copier.destination_client,
            &copier.destination,
            options,
            Side::Destination,
        );
        // An end this invocation can move down while it lists, to hand the
        // rest of its range to another lister: the CLI's pieces do the same.
        let end = Arc::new(MovableEnd::new(
            range.end_before.clone(),
            Arc::new(tokio::sync::Notify::new()),
        ));
        let source_listing = Listing::S3(source.clone());
        let pairs = if options.copy.all_versions {
            // Whole histories, joined by key. Nothing moves this listing's
            // end, so the range is never split: its shards are the plan's.
            histories::joined(source, destination, range.clone())
                .map(|h| h.map(Listed::History))
                .boxed()
        } else {
            merge_join(
                list_range_until(source, range.clone(), Some((end.clone(), Side::Source))),
                list_range_until(
                    destination,
                    range.clone(),
                    Some((end.clone(), Side::Destination)),
                ),
            )
            .map(|p| p.map(Listed::Pair))
            .boxed()
        };
        futures::pin_mut!(pairs);

        let config = &self.env.config;
        let page_keys = config.lister_page_keys.min(config.lister_max_keys);
        let (mut in_page, mut unsaved, mut in_invocation) = (0u64, 0u64, 0u64);
        let mut saved_at = std::time::Instant::now();
        let mut last_key: Option<String> = None;
        loop {
            let Some(listed) = pairs.next().await else {
                return self.save(last_key, true, true).await;
            };
            let key = match listed? {
                Listed::Pair(pair) => {
                    let key = pair.key().to_owned();
                    self.pair(copier, pair).await;
                    key
                }
                Listed::History(history) => {
                    let key = history.key.clone();
                    self.history(copier, history).await;
                    key
                }
            };
            last_key = Some(key);
            in_page += 1;
            unsaved += 1;
            in_invocation += 1;
            self.tally.keys += 1;
            if in_page >= page_keys {
                in_page = 0;
                let ending = in_invocation >= self.env.config.lister_max_keys
                    || SystemTime::now() >= self.stop_at
                    || self.stop.is_cancelled();
                let due = unsaved >= self.env.config.checkpoint_keys
                    || saved_at.elapsed() >= crate::serverless::env::CHECKPOINT_INTERVAL;
                if ending || due {
                    let splits = if self.may_split && !ending {
                        self.split(&source_listing, &range, &end).await?
                    } else {
                        Vec::new()
                    };
                    self.save(last_key.clone(), false, ending).await?;
                    (unsaved, saved_at) = (0, std::time::Instant::now());
                    if !splits.is_empty() {
                        // Recorded in the checkpoint just saved: handed out
                        // only now, so a crash before sends them again
                        // instead of listing their keys here.
                        hand_out_splits(self.env, self.at, &splits).await?;
                    }
                }
                if ending {
                    tracing::info!(
                        shard = self.at.shard,
                        seq = self.at.seq,
                        keys = in_invocation,
                        "returning the cursor for the next invocation"
                    );
                    return Ok(());
                }
            }
        }
    }

    /// One key's pair: in the write phase, the task it calls for; in
    /// VALIDATE, whether the two sides match.
    async fn pair(&mut self, copier: &Copier, pair: Pair) {
        let options = &self.run.options;
        if self.at.phase == Phase::Write {
            count_listed(&self.stats, &pair);
        }
        // A pair whose ETags cannot decide (KMS, other layouts) is
        // proven by the ledger, else by its stored checksums (a HEAD of
        // each side).
        match self.at.phase {
            Phase::Write => {
                let action = match decide(pair, &options.diff) {
                    Action::Compare {
                        source,
                        destination,
                    } => self.compare(copier, source, destination).await,
                    action => action,
                };
                self.plan(action)
            }
            Phase::Validate => {
                let found = match check_pair(pair, &options.diff, &self.stats) {
                    Check::Unproven(s, d) => {
                        let mover = Mover::Buckets(copier.clone());
                        prove_in_turn((&self.proofs, &mover), &mut self.cursors, s, d, &self.stats)
                            .await
                    }
                    check => check.mismatch(),
                };
                if let Some(mismatch) = found {
                    Stats::add(&self.stats.verify_mismatched, 1);
                    self.checkpoint
                        .rows
                        .push(mismatch.row(&options.source, &options.destination));
                }
            }
        }
    }

    /// One key's two histories (`--all-versions`), aligned as the CLI
    /// aligns them: in the write phase, a task to append what the
    /// destination lacks (the copier aligns again before it appends); in
    /// VALIDATE, whether it holds the whole history now.
    async fn history(&mut self, copier: &Copier, history: KeyHistory) {
        let stats = &self.stats;
        let validating = self.at.phase == Phase::Validate;
        if !validating {
            Stats::add(&stats.listed_source, u64::from(!history.source.is_empty()));
            Stats::add(
                &stats.listed_destination,
                u64::from(!history.destination.is_empty()),
            );
        }
        let failed = if validating {
            &stats.verify_mismatched
        } else {
            &stats.failed
        };
        let (code, why) = match histories::verdict(copier, &history).await {
            Verdict::DestinationOnly => {
                if !validating {
                    Stats::add(&stats.extraneous_kept, 1);
                }
                return;
            }
            Verdict::Holds(held) if validating => {
                Stats::add(&stats.verify_checked, 1);
                let missing = history.source.len() - held;
                if missing == 0 {
                    return;
                }
                Stats::add(failed, 1);
                let why =
                    format!("verify: {missing} versions of the source are not at the destination");
                ("VerifyMismatch".to_owned(), why)
            }
            Verdict::Holds(held) => {
                let missing = &history.source[held..];
                if missing.is_empty() {
                    Stats::add(&stats.skip_equal, 1);
                    return;
                }
                let task = CopyTask::History {
                    key: history.key,
                    entries: missing.len() as u64,
                    bytes: histories::count_planned(stats, missing),
                };
                self.ready.extend(self.builder.push(task));
                return;
            }
            Verdict::Diverged(why) => {
                Stats::add(failed, 1);
                ("HistoryDiverged".to_owned(), format!("not appended: {why}"))
            }
            Verdict::Failed(failure) => {
                Stats::add(failed, 1);
                let why = format!(
                    "reading the destination's newest version: {}",
                    failure.message
                );
                (failure.code, why)
            }
        };
        let destination = &self.run.copier.destination;
        self.checkpoint.rows.push(ReportRow::new(
            &destination.bucket,
            &destination.key_for(&history.key),
            TaskStatus::Failed,
            &code,
            None,
            &why,
        ));
    }

    /// At a checkpoint: when no range task waits for a lister (the listers
    /// keep up, so one may be free), cut the rest of this range in two by
    /// the CLI's rule ([`bisect`]) and record the new range, numbered from
    /// the run's counter, in the checkpoint about to be saved, with this
    /// range's end moved down. Returns the new ranges.
    async fn split(
        &mut self,
        source: &Listing,
        range: &KeyRange,
        end: &MovableEnd,
    ) -> Result<Vec<SplitRange>, SyncError> {
        if end
            .progress()
            .is_none_or(|p| p.full_pages < PAGES_BEFORE_CUT)
        {
            return Ok(Vec::new());
        }
        if crate::serverless::ranges::backlog(self.env).await? > 0 {
            end.defer(); // ranges wait for listers already
            return Ok(Vec::new());
        }
        let pieces = bisect(source, range, end, PAGES_BEFORE_CUT).await?;
        if pieces.is_empty() {
            return Ok(Vec::new());
        }
        let counters = self.env.counters()?;
        let first = counters
            .new_ranges(&self.at.run_id, pieces.len() as u64)
            .await?;
        let base = self.run.manifest.shards.len() as u64;
        let splits: Vec<SplitRange> = pieces
            .into_iter()
            .enumerate()
            .map(|(i, range)| SplitRange {
                shard: (base + first + i as u64) as usize,
                range,
            })
            .collect();
        let new_end = splits
            .iter()
            .map(|s| s.range.start_at.clone())
            .min()
            .flatten();
        if let Some(own) = self.checkpoint.range.as_mut() {
            own.end_before = new_end;
        }
        tracing::info!(shard = self.at.shard, seq = self.at.seq, splits = ?splits, "split the rest of the range off for another lister");
        self.checkpoint.splits.extend(splits.iter().cloned());
        Ok(splits)
    }

    /// A write-phase pair whose ETags cannot decide: equal by the ledger
    /// (the committed one, or the replicator's journal), else by
    /// checksums, else by the listings' rule.
    async fn compare(
        &mut self,
        copier: &Copier,
        source: ObjectEntry,
        destination: ObjectEntry,
    ) -> Action {
        for cursor in &mut self.cursors {
            if self
                .proofs
                .by_ledger(cursor, &source, &destination, &self.stats)
                .await
            {
                return Action::Skip {
                    key: source.key,
                    size: source.size,
                    reason: SkipReason::Equal,
                };
            }
        }
        let mover = Mover::Buckets(copier.clone());
        self.proofs
            .decide(&mover, source, destination, &self.stats)
            .await
    }

    fn plan(&mut self, action: Action) {
        let source = &self.run.copier.source;
        let names = |key: &str| (source.bucket.clone(), source.key_for(key));
        if let Some(row) = count_plan(&self.stats, &action, names) {
            self.checkpoint.rows.push(row);
        }
        if let Some(task) = CopyTask::from_action(action) {
            self.ready.extend(self.builder.push(task));
        }
    }

    /// Send the page's batches, then record them: a batch is in the
    /// checkpoint only once SQS has it. So with the ledger's chunks: full
    /// ones at any page, the rest when the invocation `ends`.
    async fn save(
        &mut self,
        last_key: Option<String>,
        done: bool,
        ends: bool,
    ) -> Result<(), SyncError> {
        let saving = Instant::now();
        let sending_before = self.tally.sending;
        if let Some(next) = &self.proofs.in_order {
            let written = if ends {
                next.write_all().await
            } else {
                next.write_full().await
            };
            self.checkpoint.proven.extend(written);
        }
        self.ready.extend(self.builder.flush());
        if !self.ready.is_empty() {
            let sending = Instant::now();
            let queue = self.env.config.queue_url()?;
            send_batches(&self.env.sqs, queue, &self.ready).await?;
            // Counted once SQS has them, each once: a retry that sends
            // them again under their ids does not count them again.
            let sent: Vec<SentBatch> = self.ready.drain(..).map(|b| SentBatch::from(&b)).collect();
            self.env
                .counters()?
                .record_sent(&self.at.run_id, &sent, None)
                .await?;
            self.tally.batches_sent += sent.len() as u64;
            self.tally.sending += sending.elapsed();
            self.checkpoint.batches.extend(sent);
        }
        if last_key.is_some() {
            self.checkpoint.cursor = last_key;
        }
        self.checkpoint.done = done;
        self.checkpoint.ended = ends;
        let counts = Counts {
            retries: self.counter.take_retries(),
            ..self.stats.snapshot()
        };
        self.checkpoint.counts.add(&counts);
        self.tally.counts.add(&counts);
        self.checkpoint.updated_at_ms = Some(emf::now_ms());
        self.stats = Stats::default();
        // Before the checkpoint that says the shard is done: a retry of a
        // done shard lists nothing, and would not write it again.
        if done
            && self.at.phase == Phase::Write
            && self.run.manifest.settings.validate
            && let Err(e) = end_write_phase(self.env, self.at, self.checkpoint).await
        {
            tracing::warn!(error = %e, "what the write phase leaves VALIDATE could not be written; VALIDATE lists the shard and proves its pairs again");
        }
        let name = checkpoint_name(self.at.phase, self.at.shard, self.at.seq);
        let saved = self
            .env
            .store
            .put_json(&self.at.run_id, &name, &*self.checkpoint)
            .await;
        // The whole save but the sending, which is counted apart.
        let sent_in = self.tally.sending - sending_before;
        self.tally.checkpointing += saving.elapsed().saturating_sub(sent_in);
        saved
    }
}
