//! The lister: one shard, both sides, the CLI's merge-join and decision, and
//! copy batches sent to SQS. The same loop, in validate mode, is the
//! VALIDATE phase: re-list, re-diff, and record every mismatch.
//!
//! An invocation works page by page (1,000 keys), looking at its deadline
//! after each. Every ten pages (`S3_FANOUT_CHECKPOINT_KEYS`), or every 30 s
//! if pages come slowly, and when it stops, it sends the batches those
//! pages made and writes its checkpoint (`sent/SHARD-SEQ.json`): the last
//! key handled, the counts, the batches sent. A checkpoint per page cost a
//! PUT per 1,000 keys, 200,000 a night at 100M keys; this is a tenth. It
//! stops before its deadline, or after `S3_FANOUT_LISTER_MAX_KEYS` keys,
//! and returns its cursor; the state machine calls it again with the next
//! SEQ. A retried invocation (same SEQ) resumes from its checkpoint and
//! numbers its batches from the count there, so a crash repeats at most
//! the pages since the last checkpoint, and what it repeats is sent under
//! the same batch ids.
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
//! Every invocation reports one EMF record: what it listed, skipped as
//! already equal, sent (`ObjectsListed`, `ObjectsSkipped`, `BatchesSent`)
//! or, validating, checked (`ObjectsVerified`, `ObjectsMismatched`); a
//! failed invocation too, with what it did before failing.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use lambda_runtime::{Diagnostic, LambdaEvent};

use crate::backend::ledger::in_order::InOrderWriter;
use crate::backend::ledger::read::{Cursor, Ledger};
use crate::backend::ledger::store::{CHUNK_PREFIX, StateStore};
use crate::backend::s3::listing::{ListTarget, list_range};
use crate::backend::transfer::Mover;
use crate::base::error::SyncError;
use crate::base::metrics::RequestCounter;
use crate::engine::diff::{Action, SkipReason, decide, merge_join};
use crate::engine::prove::Proofs;
use crate::engine::verify::{Check, check_pair, prove_in_turn};
use crate::engine::worker::count_plan;
use crate::model::entry::{ObjectEntry, Pair, Side};
use crate::report::emf::{self, MetricRecord, Unit, Work};
use crate::report::{Counts, Stats};
use crate::serverless::FunctionEnv;
use crate::serverless::batch::{BatchBuilder, BatchLimits, send_batches};
use crate::serverless::contract::{
    Checkpoint, CopyBatch, CopyTask, Phase, SentBatch, ShardCursor, ShardWritten,
};
use crate::serverless::env::RunContext;

/// What one invocation did, for its metrics: a resumed checkpoint's counts
/// include an earlier, crashed invocation's work, so these are kept apart.
#[derive(Debug, Default)]
struct Tally {
    counts: Counts,
    /// Keys handled, one per key whether on one side or both.
    keys: u64,
    batches_sent: u64,
    throttles: u64,
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
        let record = match at.phase {
            Phase::Write => record.value("BatchesSent", Unit::Count, self.batches_sent as f64),
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

pub async fn handle(
    event: LambdaEvent<ShardCursor>,
    env: &FunctionEnv,
) -> Result<ShardCursor, Diagnostic> {
    let started = Instant::now();
    let deadline = event.context.deadline();
    let function = emf::function_name(&event.context.env_config.function_name, "lister");
    let cursor = event.payload;
    let mut tally = Tally::default();
    let listed = list_and_tally(env, cursor.clone(), deadline, &mut tally).await;
    emf::emit(&tally.record(&function, &cursor, started.elapsed()));
    listed.map_err(|err| {
        tracing::error!(run_id = %cursor.run_id, shard = cursor.shard, seq = cursor.seq, error = %err, "listing failed");
        err.into()
    })
}

/// Run one invocation's worth of a shard; returns the cursor for the next.
pub async fn list_shard(
    env: &FunctionEnv,
    at: ShardCursor,
    deadline: SystemTime,
) -> Result<ShardCursor, SyncError> {
    list_and_tally(env, at, deadline, &mut Tally::default()).await
}

/// [`list_shard`], adding what it does to `tally`.
async fn list_and_tally(
    env: &FunctionEnv,
    at: ShardCursor,
    deadline: SystemTime,
    tally: &mut Tally,
) -> Result<ShardCursor, SyncError> {
    if at.done {
        return Ok(at);
    }
    let run = env.run(&at.run_id).await?;
    let shard_range = run.manifest.shards.get(at.shard).ok_or_else(|| {
        SyncError::Config(format!(
            "run {} has {} shards, not {}",
            at.run_id,
            run.manifest.shards.len(),
            at.shard + 1
        ))
    })?;
    let name = checkpoint_name(at.phase, at.shard, at.seq);
    let mut checkpoint = match env.store.get_json::<Checkpoint>(&at.run_id, &name).await? {
        Some(saved) => {
            tracing::info!(shard = at.shard, seq = at.seq, cursor = ?saved.cursor, "resuming from a checkpoint");
            saved
        }
        None => Checkpoint {
            shard: at.shard,
            seq: at.seq,
            cursor: at.cursor.clone(),
            started_at_ms: Some(emf::now_ms()),
            ..Checkpoint::default()
        },
    };
    let written = match at.phase {
        Phase::Validate if !checkpoint.done => shard_written(env, &at).await,
        _ => None,
    };
    if let Some(written) = written.as_ref().filter(|w| w.batches_sent == 0) {
        // The write phase changed nothing here: its listing already proved
        // every pair it could, and its proofs are the next ledger's.
        tracing::info!(
            shard = at.shard,
            "the write phase sent no batch in this shard; nothing to validate"
        );
        checkpoint.done = true;
        if run.options.ledger.is_some() {
            checkpoint.proven = written.chunks.clone();
        }
        checkpoint.updated_at_ms = Some(emf::now_ms());
        env.store.put_json(&at.run_id, &name, &checkpoint).await?;
    } else if !checkpoint.done {
        let range = shard_range.resumed_after(checkpoint.cursor.as_deref());
        let proofs = shard_proofs(env, &run, &at, checkpoint.proven.len()).await;
        let this_run = write_phase_proofs(&proofs, written.as_ref());
        let journal = journal_proofs(&run, &proofs);
        let mut pass = Pass::new(env, &run, &at, &mut checkpoint, deadline, tally);
        pass.cursors = (proofs.cursor().into_iter())
            .chain(journal)
            .chain(this_run)
            .collect();
        pass.proofs = proofs;
        let passed = pass.run(range).await;
        pass.tally.throttles += pass.counter.throttled();
        passed?;
    }
    Ok(ShardCursor {
        seq: at.seq + 1,
        cursor: checkpoint.cursor.clone(),
        done: checkpoint.done,
        proven_chunks: at.proven_chunks + checkpoint.proven.len() as u32,
        batches_sent: at.batches_sent + checkpoint.batches.len() as u64,
        ..at
    })
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
        let margin = (remaining / 5).clamp(Duration::from_secs(5), Duration::from_secs(120));
        let builder = BatchBuilder::new(
            &at.run_id,
            &format!("{:05}-{:05}", at.shard, at.seq),
            checkpoint.batches.len(),
            BatchLimits::default(),
        );
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
        }
    }

    async fn run(&mut self, range: crate::model::location::KeyRange) -> Result<(), SyncError> {
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
        let pairs = merge_join(
            list_range(source, range.clone()),
            list_range(destination, range),
        );
        futures::pin_mut!(pairs);

        let config = &self.env.config;
        let page_keys = config.lister_page_keys.min(config.lister_max_keys);
        let (mut in_page, mut unsaved, mut in_invocation) = (0u64, 0u64, 0u64);
        let mut saved_at = std::time::Instant::now();
        let mut last_key: Option<String> = None;
        loop {
            let Some(pair) = pairs.next().await else {
                return self.save(last_key, true, true).await;
            };
            let pair = pair?;
            let key = pair.key().to_owned();
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
                            prove_in_turn(
                                (&self.proofs, &mover),
                                &mut self.cursors,
                                s,
                                d,
                                &self.stats,
                            )
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
            last_key = Some(key);
            in_page += 1;
            unsaved += 1;
            in_invocation += 1;
            self.tally.keys += 1;
            if in_page >= page_keys {
                in_page = 0;
                let ending = in_invocation >= self.env.config.lister_max_keys
                    || SystemTime::now() >= self.stop_at;
                let due = unsaved >= self.env.config.checkpoint_keys
                    || saved_at.elapsed() >= crate::serverless::env::CHECKPOINT_INTERVAL;
                if ending || due {
                    self.save(last_key.clone(), false, ending).await?;
                    (unsaved, saved_at) = (0, std::time::Instant::now());
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

    /// A write-phase pair whose ETags cannot decide: equal by the ledger
    /// (the committed one, or the replicator's journal), else by
    /// checksums, else by the listings' rule.
    async fn compare(
        &mut self,
        copier: &crate::backend::s3::copier::Copier,
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
            let queue = self.env.config.queue_url()?;
            send_batches(&self.env.sqs, queue, &self.ready).await?;
            // Counted once SQS has them, each once: a retry that sends
            // them again under their ids does not count them again.
            let sent: Vec<SentBatch> = self.ready.drain(..).map(|b| SentBatch::from(&b)).collect();
            self.env
                .counters()?
                .record_sent(&self.at.run_id, &sent)
                .await?;
            self.tally.batches_sent += sent.len() as u64;
            self.checkpoint.batches.extend(sent);
        }
        if last_key.is_some() {
            self.checkpoint.cursor = last_key;
        }
        self.checkpoint.done = done;
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
        self.env
            .store
            .put_json(&self.at.run_id, &name, &*self.checkpoint)
            .await
    }
}
