//! The local runtime: the whole pipeline in one process.
//!
//! ```text
//!  piece 1: list source ─┐                                 ┌─ worker ─┐
//!           list dest  ──┴─ merge_join ─ decide ─┐         │          │
//!  piece 2: …                                    ├ channel ┼─ worker ─┼─ Stats + ReportRows
//!  (up to --list-concurrency pieces, cut as      │(bounded)└─ worker ─┘      │
//!   they list: pieces.rs)                 ───────┘                           ▼
//!          verify (HEAD what was written, or list both again) ─ report
//! ```
//!
//! Listing, diff and copying overlap: copies start with the first page. The
//! channel is bounded, so a fast listing waits for slow copies instead of
//! queueing the bucket in memory. A cancellation token reaches every stage;
//! on cancel, listing stops, queued actions are dropped, copies in flight
//! finish (a CopyObject is atomic) and multipart copies abort their upload.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use aws_sdk_s3::Client;
use tokio_util::sync::CancellationToken;

use crate::backend::ledger::read::{Cursor, Ledger};
use crate::backend::ledger::store::StateStore;
use crate::backend::ledger::write::LedgerWriter;
use crate::backend::s3::listing::ListTarget;
use crate::backend::side::Listing;
use crate::backend::transfer::Mover;
use crate::base::client::build_s3_client;
use crate::base::concurrency::AdaptiveLimit;
use crate::base::error::SyncError;
use crate::base::metrics::RequestCounter;
use crate::engine::diff::{Action, SkipReason, decide};
use crate::engine::histories::{self, Pass};
use crate::engine::pieces::{PairSink, Sides, list_in_pieces};
use crate::engine::prove::{Proofs, without_checksums};
use crate::engine::verify::{Audit, check_range, verify_range, verify_written};
use crate::engine::worker::{DeleteBatcher, WorkContext};
use crate::engine::written::WrittenKeys;
use crate::model::entry::{Pair, Side};
use crate::model::location::Location;
use crate::model::options::SyncOptions;
use crate::report::deliver::{RunRecord, deliver};
use crate::report::timeline::TimelineSampler;
use crate::report::{ConcurrencyRange, Phase, PhaseClock, ReportRows, Stats, StopReason, Summary};

/// Called with every planned action (for `--dry-run -v` and `-v` output).
pub type ActionObserver = Arc<dyn Fn(&Action) + Send + Sync>;

/// Run one sync. `Err` means it could not start (bad configuration, missing
/// bucket): nothing was written. Once started, failures are in the summary.
pub async fn run_sync(
    options: &SyncOptions,
    stats: Arc<Stats>,
    cancel: CancellationToken,
    observer: Option<ActionObserver>,
) -> Result<Summary, SyncError> {
    let started = Instant::now();
    let started_at = crate::base::format::now_rfc3339();
    let run = Run::new(options, stats, cancel).await?;
    let limit = Arc::new(AdaptiveLimit::new(options.concurrency));
    let mut phases = PhaseClock::new(started);
    let sampler = TimelineSampler::start(run.stats.clone(), started);
    if options.copy.all_versions {
        return run_histories(&run, (started, started_at), sampler, phases, false).await;
    }
    let mut fatal = write_phase(
        options,
        run.listings(),
        &run.context,
        (&limit, &run.counter),
        observer,
        &mut phases,
    )
    .await
    .err();
    if let Some(SyncError::Config(why)) = fatal {
        // A bucket the first page could not list: nothing was decided, so
        // nothing was written. Bad configuration, said plainly (exit 2).
        sampler.finish();
        return Err(SyncError::Config(why));
    }
    if fatal.is_none() {
        // The write phase's proofs become the ledger now (unless it was
        // interrupted: then the ledger it found stays), so a run killed
        // during verification keeps them; verification reads it back (it
        // holds this run's copies) and adds what its own HEADs prove.
        let verifying = if run.cancel.is_cancelled() {
            run.context.proofs.clone()
        } else {
            run.commit_ledger().await
        };
        fatal = run.verify(&verifying, &mut phases).await.err();
        if fatal.is_none()
            && !run.cancel.is_cancelled()
            && verifying
                .next
                .as_ref()
                .is_some_and(|n| n.recorded() > run.recorded_before_verify())
        {
            run.commit_ledger().await;
        }
    }
    run.stats.set_phase(Phase::Done);
    let timeline = sampler.finish();
    let stop = run.stopped_by_failures();
    if stop.is_some() {
        // The cancellation fail-fast caused is no error of the run's.
        fatal = fatal.filter(|e| !matches!(e, SyncError::Cancelled));
    }
    let interrupted = stop.is_none()
        && (run.cancel.is_cancelled() || matches!(fatal, Some(SyncError::Cancelled)));
    if let Some(err) = &fatal
        && !interrupted
    {
        tracing::error!(error = %err, "the run stopped early");
    }

    let mut record = run.record((started, started_at), fatal, interrupted, timeline, phases);
    record.stop = stop;
    record.dry_run = options.dry_run;
    record.copy_concurrency = (!options.dry_run).then(|| {
        let (lowest, highest) = limit.range();
        ConcurrencyRange {
            lowest,
            highest,
            throttle_cuts: limit.cuts(),
            throttled_responses: run.counter.throttled(),
        }
    });
    let report = options.report.as_ref();
    Ok(deliver(record, &run.rows, report, &run.destination_client)
        .await?
        .summary)
}

/// `--all-versions`: append each key's missing history, then (unless a
/// dry run) align every key again to verify, and report.
async fn run_histories(
    run: &Run<'_>,
    started: (Instant, String),
    sampler: TimelineSampler,
    mut phases: PhaseClock,
    audit: bool,
) -> Result<Summary, SyncError> {
    let options = run.options;
    let targets = || {
        let (Location::S3(source), Location::S3(destination)) =
            (&options.source, &options.destination)
        else {
            unreachable!("the options refuse --all-versions but between buckets")
        };
        (
            ListTarget::for_side(&run.source_client, source, options, Side::Source),
            ListTarget::for_side(
                &run.destination_client,
                destination,
                options,
                Side::Destination,
            ),
        )
    };
    let (first, phase, name) = match audit {
        true => (Pass::Audit, Phase::Verifying, "check versions"),
        false => (Pass::Write, Phase::Listing, "list and copy versions"),
    };
    run.stats.set_phase(phase);
    let listed = Instant::now();
    let mut fatal = histories::write_histories(options, &run.context, targets(), first)
        .await
        .err();
    phases.record(name, listed);
    if let Some(SyncError::Config(why)) = fatal {
        sampler.finish();
        return Err(SyncError::Config(why));
    }
    // A dry run (plan's too, which keeps `verify` set) verifies nothing.
    if !audit && fatal.is_none() && options.verify && !options.dry_run && !run.cancel.is_cancelled()
    {
        run.stats.set_phase(Phase::Verifying);
        let verified = Instant::now();
        fatal = histories::write_histories(options, &run.context, targets(), Pass::Verify)
            .await
            .err();
        phases.record("verify", verified);
    }
    run.stats.set_phase(Phase::Done);
    let timeline = sampler.finish();
    let interrupted = run.cancel.is_cancelled() || matches!(fatal, Some(SyncError::Cancelled));
    let mut record = run.record(started, fatal, interrupted, timeline, phases);
    record.dry_run = options.dry_run;
    Ok(deliver(
        record,
        &run.rows,
        options.report.as_ref(),
        &run.destination_client,
    )
    .await?
    .summary)
}

/// The ledger of proven pairs a run reads, and the next one it writes
/// (none in a dry run, which writes nothing).
async fn open_proofs(options: &SyncOptions, client: &Client) -> Result<Proofs, SyncError> {
    let Some(location) = &options.ledger else {
        return Ok(Proofs::default());
    };
    let store = StateStore::at(location, client);
    let (source, destination) = (options.source.to_string(), options.destination.to_string());
    let ledger = Ledger::open(store.clone(), &source, &destination).await;
    let next = if options.dry_run {
        None
    } else {
        let id = run_id(&crate::base::format::now_rfc3339());
        let writer = LedgerWriter::new(store, &source, &destination, &id).map_err(|e| {
            SyncError::Config(format!("a spool for the ledger of proven pairs: {e}"))
        })?;
        Some(Arc::new(writer))
    };
    Ok(Proofs::new(Some(ledger), next))
}

/// `check`: list both sides and prove every pair equal, writing nothing
/// (not even the ledger, which it reads). Every pair that differs, is
/// missing on a side, or cannot be proven is a row of the report.
pub async fn run_check(
    options: &SyncOptions,
    audit: Audit,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) -> Result<Summary, SyncError> {
    let started = Instant::now();
    let started_at = crate::base::format::now_rfc3339();
    let run = Run::new(options, stats, cancel).await?;
    let mut phases = PhaseClock::new(started);
    let sampler = TimelineSampler::start(run.stats.clone(), started);
    if options.copy.all_versions {
        return run_histories(&run, (started, started_at), sampler, phases, true).await;
    }
    run.stats.set_phase(Phase::Verifying);
    let (source, destination) = run.listings();
    let sides = Sides {
        source,
        destination,
        range: options.range.clone(),
        list_concurrency: options.list_concurrency,
        counted: Some(run.stats.clone()),
        preflight: true,
    };
    let checked = tokio::select! {
        _ = run.cancel.cancelled() => Err(SyncError::Cancelled),
        result = check_range(
            sides,
            (&run.mover, &run.context.proofs),
            (&options.diff, audit),
            (&run.stats, &run.rows),
            &run.cancel,
        ) => result,
    };
    phases.record("check", started);
    let fatal = match checked {
        Err(SyncError::Config(why)) => {
            sampler.finish();
            return Err(SyncError::Config(why));
        }
        other => other.err(),
    };
    run.stats.set_phase(Phase::Done);
    let interrupted = run.cancel.is_cancelled() || matches!(fatal, Some(SyncError::Cancelled));
    let timeline = sampler.finish();
    let record = run.record((started, started_at), fatal, interrupted, timeline, phases);
    let report = options.report.as_ref();
    Ok(deliver(record, &run.rows, report, &run.destination_client)
        .await?
        .summary)
}

/// A run's id: when it started, to the second, and this process, so two
/// runs started in the same second from two shells differ.
fn run_id(started_at: &str) -> String {
    format!(
        "{}-{:05}",
        started_at.replace([':', '-'], "").trim_end_matches('Z'),
        std::process::id() % 100_000
    )
}

/// What the phases of one local run share: its clients, counters, rows and
/// the way it moves objects.
struct Run<'a> {
    options: &'a SyncOptions,
    stats: Arc<Stats>,
    rows: Arc<ReportRows>,
    cancel: CancellationToken,
    counter: RequestCounter,
    source_client: Client,
    destination_client: Client,
    mover: Arc<Mover>,
    context: WorkContext,
    /// Ledger entries recorded by the last commit.
    recorded_at_commit: AtomicU64,
}

impl<'a> Run<'a> {
    async fn new(
        options: &'a SyncOptions,
        stats: Arc<Stats>,
        cancel: CancellationToken,
    ) -> Result<Run<'a>, SyncError> {
        let counter = RequestCounter::new();
        let source_client = build_s3_client(&options.source_client, Some(counter.clone())).await;
        let destination_client = if options.destination_client == options.source_client {
            source_client.clone()
        } else {
            build_s3_client(&options.destination_client, Some(counter.clone())).await
        };
        // No separate preflight: the first page of each listing is it. The
        // merge-join needs both sides' first keys before it decides
        // anything, so a missing or forbidden bucket stops the run before
        // any write, and an unchanged run costs one listing per 1,000 keys
        // per side and nothing else.
        let rows = Arc::new(ReportRows::new()?);
        let mover = Arc::new(Mover::for_run(
            options,
            &source_client,
            &destination_client,
            (&rows, &stats),
        ));
        let proofs = Arc::new(open_proofs(options, &destination_client).await?);
        let context = WorkContext {
            mover: mover.clone(),
            stats: stats.clone(),
            rows: rows.clone(),
            cancel: cancel.clone(),
            written: Some(Arc::new(WrittenKeys::default())),
            deletes: Arc::new(DeleteBatcher::new(options.concurrency)),
            proofs,
            fail_fast: options.fail_fast.then(|| {
                crate::engine::worker::fail_fast_locally(
                    stats.clone(),
                    options.failure_threshold,
                    cancel.clone(),
                )
            }),
        };
        Ok(Run {
            options,
            stats,
            rows,
            cancel,
            counter,
            source_client,
            destination_client,
            mover,
            context,
            recorded_at_commit: AtomicU64::new(0),
        })
    }

    /// Fail-fast's stop: the run fails fast and more objects failed than
    /// its threshold allows (the workers cancelled it then).
    fn stopped_by_failures(&self) -> Option<StopReason> {
        let failures = self.stats.snapshot().failed_objects();
        let threshold = self.options.failure_threshold;
        (self.options.fail_fast && failures > threshold && self.cancel.is_cancelled()).then_some(
            StopReason::FailureThreshold {
                threshold,
                failures,
            },
        )
    }

    /// What the report says of this run: a dry run's, with no copy
    /// concurrency, until the caller says otherwise.
    fn record(
        &self,
        (started, started_at): (Instant, String),
        fatal: Option<SyncError>,
        interrupted: bool,
        timeline: Vec<crate::report::TimelinePoint>,
        phases: PhaseClock,
    ) -> RunRecord {
        let mut counts = self.stats.snapshot();
        counts.retries = self.counter.retries();
        RunRecord {
            run_id: run_id(&started_at),
            source: self.options.source.to_string(),
            destination: self.options.destination.to_string(),
            dry_run: true,
            started_at,
            duration_secs: started.elapsed().as_secs_f64(),
            counts,
            fatal: fatal.map(|e| e.to_string()),
            interrupted,
            stop: None,
            failure_threshold: self.options.failure_threshold,
            requests: self.counter.snapshot(),
            copy_concurrency: None,
            timeline,
            phases: phases.into_phases(),
        }
    }

    /// Commit the ledger of proven pairs gathered so far, and return the
    /// proofs verification works with: the ledger just committed, read
    /// back, and the same writer. Skipped when nothing changed: every
    /// entry of the old ledger carried over and none added. A failed
    /// commit is a warning: the old ledger stays, and costs HEADs only.
    async fn commit_ledger(&self) -> Arc<Proofs> {
        let proofs = &self.context.proofs;
        let Some(next) = &proofs.next else {
            return proofs.clone();
        };
        let old = proofs.ledger.as_ref().map_or(0, |l| l.entries());
        let hits = self.stats.proven_by_ledger.load(Ordering::Relaxed);
        let unchanged = next.recorded() == hits && hits == old && self.committed() == 0;
        if !unchanged {
            match next.commit().await {
                Ok(committed) => {
                    self.stats
                        .ledger_entries
                        .store(committed.entries, Ordering::Relaxed);
                }
                Err(why) => {
                    tracing::warn!(ledger = %next.store(), error = %why, "could not save the ledger of proven pairs; the next run proves its pairs again (HEADs)");
                    Stats::add(&self.stats.warnings, 1);
                }
            }
        } else {
            self.stats.ledger_entries.store(old, Ordering::Relaxed);
        }
        self.recorded_at_commit
            .store(next.recorded(), Ordering::Relaxed);
        if unchanged {
            // The ledger read is still the ledger: no need to read it again.
            return Arc::new(Proofs::new(proofs.ledger.clone(), Some(next.clone())));
        }
        let (source, destination) = (
            self.options.source.to_string(),
            self.options.destination.to_string(),
        );
        let ledger = Ledger::open(next.store().clone(), &source, &destination).await;
        Arc::new(Proofs::new(Some(ledger), Some(next.clone())))
    }

    fn committed(&self) -> u64 {
        self.recorded_at_commit.load(Ordering::Relaxed)
    }

    fn recorded_before_verify(&self) -> u64 {
        self.committed()
    }

    /// Both sides, as the engine lists them.
    fn listings(&self) -> (Listing, Listing) {
        let listing = |client: &Client, location: &Location, side: Side| match (
            location,
            self.mover.local_dir(),
        ) {
            (Location::Local(_), Some(dir)) => Listing::Local(dir.clone()),
            (Location::S3(location), _) => {
                Listing::S3(ListTarget::for_side(client, location, self.options, side))
            }
            (Location::Local(_), None) => unreachable!("a directory side has a LocalDir"),
        };
        (
            listing(&self.source_client, &self.options.source, Side::Source),
            listing(
                &self.destination_client,
                &self.options.destination,
                Side::Destination,
            ),
        )
    }

    /// Prove that what the write phase wrote arrived: by HEADs of the
    /// written keys when that is cheaper, else by listing both sides again.
    async fn verify(&self, proofs: &Arc<Proofs>, phases: &mut PhaseClock) -> Result<(), SyncError> {
        let (options, stats) = (self.options, &self.stats);
        let planned = stats.snapshot();
        let wrote_nothing = planned.plan_copy + planned.plan_update + planned.plan_delete == 0;
        // A dry run wrote nothing to verify (`plan` keeps `verify` set, to
        // price it, on the dry run it runs).
        if !options.verify || options.dry_run || (self.cancel.is_cancelled() && !wrote_nothing) {
            return Ok(());
        }
        if wrote_nothing {
            // Nothing was written, so listing again would compare the very
            // state this run just listed (S3 listings are strongly
            // consistent) and double the cost of an unchanged nightly run.
            // The write phase's comparison of every source key is the
            // verification.
            Stats::add(&stats.verify_checked, planned.listed_source);
            return Ok(());
        }
        stats.set_phase(Phase::Verifying);
        let verify_started = Instant::now();
        // What listing again would cost: the source, and the destination
        // as this run left it.
        let destination_after =
            (planned.listed_destination + planned.plan_copy).saturating_sub(planned.plan_delete);
        // With a directory, the written files are checked one by one too:
        // walking again would read every unchanged file to hash it.
        let written = self
            .context
            .written
            .as_ref()
            .filter(|_| !options.verifies_by_listing())
            .and_then(|w| {
                w.if_cheaper_than_listing(
                    planned.listed_source,
                    destination_after,
                    options.list_page_size as u64,
                )
            });
        let result = match written {
            Some(keys) => {
                verify_written(
                    (&self.mover, proofs),
                    keys,
                    &options.diff,
                    stats,
                    &self.rows,
                    options.concurrency,
                    &self.cancel,
                )
                .await
            }
            None => {
                let (source, destination) = self.listings();
                verify_range(
                    Sides {
                        source,
                        destination,
                        range: options.range.clone(),
                        list_concurrency: options.list_concurrency,
                        counted: None,
                        preflight: false,
                    },
                    (&self.mover, proofs),
                    &options.diff,
                    stats,
                    &self.rows,
                    &self.cancel,
                )
                .await
            }
        };
        phases.record("verify", verify_started);
        result
    }
}

/// List, diff and copy: the producer feeds a bounded channel read by
/// `options.concurrency` workers. Records two overlapping phases: listing
/// with the diff, and copying, which starts with the first page and ends
/// when the last worker is done.
async fn write_phase(
    options: &SyncOptions,
    (source, destination): (Listing, Listing),
    context: &WorkContext,
    (limit, counter): (&Arc<AdaptiveLimit>, &RequestCounter),
    observer: Option<ActionObserver>,
    phases: &mut PhaseClock,
) -> Result<(), SyncError> {
    let started = Instant::now();
    let (tx, rx) = async_channel::bounded::<Action>(options.concurrency * 2);
    // `--concurrency` workers, of which the adaptive limit lets as many run
    // as S3 takes without throttling.
    let workers: Vec<_> = if options.dry_run {
        Vec::new()
    } else {
        (0..options.concurrency)
            .map(|_| {
                let (rx, context, limit, counter) =
                    (rx.clone(), context.clone(), limit.clone(), counter.clone());
                tokio::spawn(async move {
                    while let Ok(action) = rx.recv().await {
                        // Stopped: what is still queued is counted, not done
                        // (the listing stops too, so this ends soon).
                        if context.cancel.is_cancelled() {
                            context.drop_action(&action);
                            continue;
                        }
                        let _permit = limit.acquire().await;
                        let (started, throttled) =
                            (tokio::time::Instant::now(), counter.throttled());
                        // A delete's time says nothing of a copy's: most
                        // are only gathered, one in a thousand sends them.
                        let timed = !matches!(action, Action::Delete { .. });
                        // Retries happened inside the SDK; what is left is reported.
                        let _ = context.apply(action).await;
                        if counter.throttled() > throttled {
                            limit.on_throttle();
                        } else if timed {
                            limit.on_success(started.elapsed());
                        }
                    }
                })
            })
            .collect()
    };
    drop(rx);

    let stats = &context.stats;
    stats.set_phase(Phase::Listing);
    let sides = Sides {
        source,
        destination,
        range: options.range.clone(),
        list_concurrency: options.list_concurrency,
        counted: Some(stats.clone()),
        preflight: true,
    };
    let sink = WriteSink {
        options: options.clone(),
        context: context.clone(),
        tx: tx.clone(),
        deletes: Arc::new(AtomicU64::new(0)),
        observer,
        cursor: None,
    };
    let result = tokio::select! {
        _ = context.cancel.cancelled() => Err(SyncError::Cancelled),
        result = list_in_pieces(sides, sink) => result,
    };
    phases.record("list and diff", started);
    stats.set_phase(Phase::Copying);
    drop(tx);
    let copying = !workers.is_empty();
    for worker in workers {
        if let Err(e) = worker.await {
            tracing::error!(error = %e, "a copy worker panicked");
        }
    }
    // The last deletes, fewer than a batch, wait for the end of the list.
    context.flush_deletes().await;
    if copying {
        phases.record("copy", started);
    }
    result
}

/// The write phase's sink: decide each pair, count it, and send what needs
/// doing to the workers.
#[derive(Clone)]
struct WriteSink {
    options: SyncOptions,
    context: WorkContext,
    tx: async_channel::Sender<Action>,
    /// Deletions so far, run-wide, for `--max-delete`.
    deletes: Arc<AtomicU64>,
    observer: Option<ActionObserver>,
    /// This piece's place in the ledger of proven pairs.
    cursor: Option<Arc<tokio::sync::Mutex<Cursor>>>,
}

impl WriteSink {
    /// A pair whose ETags cannot decide: equal by the ledger, at no cost;
    /// else for a worker to prove by checksums, unless this run found
    /// there are none to compare.
    async fn settle(&self, action: Action) -> Action {
        let Action::Compare {
            source,
            destination,
        } = action
        else {
            return action;
        };
        let proofs = &self.context.proofs;
        if let Some(cursor) = &self.cursor {
            let mut cursor = cursor.lock().await;
            if proofs
                .by_ledger(&mut cursor, &source, &destination, &self.context.stats)
                .await
            {
                return Action::Skip {
                    key: source.key,
                    size: source.size,
                    reason: SkipReason::Equal,
                };
            }
        }
        if proofs.checksums_worth_asking() {
            Action::Compare {
                source,
                destination,
            }
        } else {
            without_checksums(source, destination, true)
        }
    }
}

impl PairSink for WriteSink {
    fn for_piece(&self) -> Self {
        WriteSink {
            cursor: self
                .context
                .proofs
                .cursor()
                .map(|c| Arc::new(tokio::sync::Mutex::new(c))),
            ..self.clone()
        }
    }

    async fn take(&self, pair: Pair) -> bool {
        let action = self.settle(decide(pair, &self.options.diff)).await;
        if let Some(observer) = &self.observer {
            observer(&action);
        }
        if let Action::Delete { destination } = &action
            && let Some(limit) = self.options.max_delete
            && self.deletes.fetch_add(1, Ordering::Relaxed) >= limit
        {
            self.context.refuse_delete(&destination.key, limit);
            return true;
        }
        if let (
            true,
            Action::Compare {
                source,
                destination,
            },
        ) = (self.options.dry_run, &action)
        {
            // A dry run sends no HEADs: the pair is an update at most.
            Stats::add(&self.context.stats.plan_compare, 1);
            self.context.record_plan(&Action::Update {
                source: source.clone(),
                destination: destination.clone(),
            });
        } else {
            self.context.record_plan(&action);
        }
        if self.options.dry_run || matches!(action, Action::Skip { .. }) {
            return true;
        }
        self.tx.send(action).await.is_ok()
    }
}
