//! The local runtime: the whole pipeline in one process.
//!
//! ```text
//!  piece 1: list source ─┐                                 ┌─ worker ─┐
//!           list dest  ──┴─ merge_join ─ decide ─┐         │          │
//!  piece 2: …                                    ├ channel ┼─ worker ─┼─ Stats + ReportRows
//!  (up to --list-concurrency pieces, cut as      │(bounded)└─ worker ─┘      │
//!   they list: split.rs)                  ───────┘                           ▼
//!                        verify (list both again, diff must be empty) ─ report
//! ```
//!
//! Listing, diff and copying overlap: copies start with the first page. The
//! channel is bounded, so a fast listing waits for slow copies instead of
//! queueing the bucket in memory. A cancellation token reaches every stage;
//! on cancel, listing stops, queued actions are dropped, copies in flight
//! finish (a CopyObject is atomic) and multipart copies abort their upload.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use aws_sdk_s3::Client;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::client::build_s3_client;
use crate::concurrency::AdaptiveLimit;
use crate::config::SyncOptions;
use crate::copy::Copier;
use crate::diff::{Action, decide, merge_join};
use crate::error::{SyncError, classify};
use crate::listing::{ListTarget, list_range_until};
use crate::location::{KeyRange, S3Location};
use crate::metrics::RequestCounter;
use crate::report::{ConcurrencyRange, ReportRows, Stats, Summary, write_report};
use crate::split::{KeySpace, MovableEnd, Side, sub_prefixes, thin, tile};
use crate::verify::verify_range;
use crate::worker::WorkContext;

/// Called with every planned action (for `--dry-run -v` and `-v` output).
pub type ActionObserver = Arc<dyn Fn(&Action) + Send + Sync>;

/// The phases, stored in [`Stats::phase`] for progress displays.
pub mod phase {
    pub const LISTING: u64 = 0;
    pub const COPYING: u64 = 1;
    pub const VERIFYING: u64 = 2;
    pub const DONE: u64 = 3;
}

/// Run one sync. `Err` means it could not start (bad configuration, missing
/// bucket): nothing was written. Once started, failures are in the summary.
pub async fn run_sync(
    options: &SyncOptions,
    stats: Arc<Stats>,
    cancel: CancellationToken,
    observer: Option<ActionObserver>,
) -> Result<Summary, SyncError> {
    let started = Instant::now();
    let started_at = crate::report::now_rfc3339();
    let run_id = format!(
        "{}-{:05}",
        started_at.replace([':', '-'], "").trim_end_matches('Z'),
        std::process::id() % 100_000
    );

    let counter = RequestCounter::new();
    let source_client = build_s3_client(&options.source_client, Some(counter.clone())).await;
    let destination_client = if options.destination_client == options.source_client {
        source_client.clone()
    } else {
        build_s3_client(&options.destination_client, Some(counter.clone())).await
    };
    // No separate preflight: the first page of each listing is it. The
    // merge-join needs both sides' first keys before it decides anything,
    // so a missing or forbidden bucket stops the run before any write, and
    // an unchanged run costs one listing per 1,000 keys per side and nothing
    // else.
    let rows = Arc::new(ReportRows::new()?);
    let context = WorkContext {
        copier: Arc::new(Copier {
            source_client: source_client.clone(),
            destination_client: destination_client.clone(),
            source: options.source.clone(),
            destination: options.destination.clone(),
            options: options.copy.clone(),
        }),
        stats: stats.clone(),
        rows: rows.clone(),
        cancel: cancel.clone(),
    };
    let target =
        |client: &Client, location: &S3Location, expected_owner: &Option<String>| ListTarget {
            client: client.clone(),
            location: location.clone(),
            expected_owner: expected_owner.clone(),
            request_payer: options.copy.request_payer,
            page_size: options.list_page_size,
        };
    let targets = || {
        (
            target(
                &source_client,
                &options.source,
                &options.copy.expected_source_owner,
            ),
            target(
                &destination_client,
                &options.destination,
                &options.copy.expected_dest_owner,
            ),
        )
    };

    let (source, destination) = targets();
    let limit = Arc::new(AdaptiveLimit::new(options.concurrency));
    let mut fatal = write_phase(
        options,
        source,
        destination,
        &context,
        &limit,
        &counter,
        observer,
    )
    .await
    .err();
    if let Some(SyncError::Config(why)) = fatal {
        // A bucket the first page could not list: nothing was decided, so
        // nothing was written. Bad configuration, said plainly (exit 2).
        return Err(SyncError::Config(why));
    }
    let planned = stats.snapshot();
    let wrote_nothing = planned.plan_copy + planned.plan_update + planned.plan_delete == 0;
    if fatal.is_none() && options.verify && wrote_nothing {
        // Nothing was written, so listing again would compare the very
        // state this run just listed (S3 listings are strongly consistent)
        // and double the cost of an unchanged nightly run. The write phase's
        // comparison of every source key is the verification.
        Stats::add(&stats.verify_checked, planned.listed_source);
    } else if fatal.is_none() && options.verify && !cancel.is_cancelled() {
        stats.phase.store(phase::VERIFYING, Ordering::Relaxed);
        let (source, destination) = targets();
        fatal = verify_range(
            source,
            destination,
            &options.range,
            &options.diff,
            &stats,
            &rows,
            &cancel,
        )
        .await
        .err();
    }
    stats.phase.store(phase::DONE, Ordering::Relaxed);
    let interrupted = cancel.is_cancelled() || matches!(fatal, Some(SyncError::Cancelled));
    if let Some(err) = &fatal
        && !interrupted
    {
        tracing::error!(error = %err, "the run stopped early");
    }

    let counts = stats.snapshot();
    let status = Summary::status_of(&counts, fatal.is_some(), interrupted);
    let mut summary = Summary {
        run_id,
        source: options.source.to_string(),
        destination: options.destination.to_string(),
        dry_run: options.dry_run,
        status,
        exit_code: status.exit_code(),
        started_at,
        duration_secs: started.elapsed().as_secs_f64(),
        counts,
        error: fatal.filter(|_| !interrupted).map(|e| e.to_string()),
        requests: counter.snapshot(),
        copy_concurrency: (!options.dry_run).then(|| {
            let (lowest, highest) = limit.range();
            ConcurrencyRange {
                lowest,
                highest,
                throttle_cuts: limit.cuts(),
                throttled_responses: counter.throttled(),
            }
        }),
        report_rows: rows.len(),
        failures_csv: None,
        summary_json: None,
        sample_rows: rows.sample(),
    };
    let spool = rows.finish()?;
    if let Some(location) = &options.report {
        let (summary_at, csv_at) =
            write_report(location, &summary, spool, &destination_client).await?;
        summary.summary_json = Some(summary_at);
        summary.failures_csv = Some(csv_at);
    } else if !rows.is_empty() {
        // No report location, but problems: keep the list somewhere rather
        // than print a count nobody can act on.
        let path = std::env::temp_dir().join(format!("s3-fanout-{}-failures.csv", summary.run_id));
        crate::report::write_csv_with_header(spool, &path)?;
        summary.failures_csv = Some(path.display().to_string());
    }
    Ok(summary)
}

/// List, diff and copy: the producer feeds a bounded channel read by
/// `options.concurrency` workers.
#[allow(clippy::too_many_arguments)]
async fn write_phase(
    options: &SyncOptions,
    source: ListTarget,
    destination: ListTarget,
    context: &WorkContext,
    limit: &Arc<AdaptiveLimit>,
    counter: &RequestCounter,
    observer: Option<ActionObserver>,
) -> Result<(), SyncError> {
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
                        if context.cancel.is_cancelled() {
                            break;
                        }
                        let _permit = limit.acquire().await;
                        let (started, throttled) =
                            (tokio::time::Instant::now(), counter.throttled());
                        // Retries happened inside the SDK; what is left is reported.
                        let _ = context.apply(action).await;
                        if counter.throttled() > throttled {
                            limit.on_throttle();
                        } else {
                            limit.on_success(started.elapsed());
                        }
                    }
                })
            })
            .collect()
    };
    drop(rx);

    let stats = &context.stats;
    stats.phase.store(phase::LISTING, Ordering::Relaxed);
    let producer = Producer {
        options: options.clone(),
        source,
        destination,
        context: context.clone(),
        tx: tx.clone(),
        deletes: Arc::new(AtomicU64::new(0)),
        observer,
    };
    let result = tokio::select! {
        _ = context.cancel.cancelled() => Err(SyncError::Cancelled),
        result = list_in_pieces(producer) => result,
    };
    stats.phase.store(phase::COPYING, Ordering::Relaxed);
    drop(tx);
    for worker in workers {
        if let Err(e) = worker.await {
            tracing::error!(error = %e, "a copy worker panicked");
        }
    }
    result
}

/// What every piece of the write phase shares: both sides, where actions
/// go, and the run-wide `--max-delete` count.
#[derive(Clone)]
struct Producer {
    options: SyncOptions,
    source: ListTarget,
    destination: ListTarget,
    context: WorkContext,
    tx: async_channel::Sender<Action>,
    deletes: Arc<AtomicU64>,
    observer: Option<ActionObserver>,
}

/// List and diff the range as pieces, up to `--list-concurrency` at once.
///
/// It starts as one piece. Once that piece's source side has listed a full
/// page and more follow, the range is cut (`split.rs`): at its folders if
/// the page's keys have any, else at keys placed from the page. Whenever a
/// lister is idle and a piece has listed two more full pages since it was
/// last cut, that piece's remainder is cut in two. Each piece runs its own
/// merge-join, so pieces need no order among themselves; actions from all
/// of them go to the one worker pool.
async fn list_in_pieces(producer: Producer) -> Result<(), SyncError> {
    let slots = producer.options.list_concurrency.max(1);
    let notify = Arc::new(tokio::sync::Notify::new());
    let mut pieces: tokio::task::JoinSet<Result<(), SyncError>> = tokio::task::JoinSet::new();
    let mut running: Vec<(KeyRange, Arc<MovableEnd>)> = Vec::new();
    let mut queue: VecDeque<KeyRange> = VecDeque::from([producer.options.range.clone()]);
    let mut first_cut_done = slots == 1;
    loop {
        while pieces.len() < slots
            && let Some(range) = queue.pop_front()
        {
            let end = Arc::new(MovableEnd::new(range.end_before.clone(), notify.clone()));
            // Only the very first piece's first page is the bucket's
            // preflight: a later piece failing is an S3 error, since other
            // pieces may already have written.
            let preflight = running.is_empty();
            running.push((range.clone(), end.clone()));
            Stats::add(&producer.context.stats.listed_pieces, 1);
            pieces.spawn(produce(producer.clone(), range, end, preflight));
        }
        if pieces.is_empty() {
            return Ok(());
        }
        running.retain(|(_, end)| end.progress().is_some());
        if pieces.len() < slots {
            let cut = if first_cut_done {
                bisect_one(&running)
            } else {
                first_cut(&producer, &running, slots, &mut first_cut_done).await?
            };
            if !cut.is_empty() {
                queue.extend(cut);
                continue;
            }
        }
        tokio::select! {
            done = pieces.join_next() => match done {
                Some(Ok(Ok(()))) | None => {}
                // Dropping the JoinSet stops the other pieces.
                Some(Ok(Err(err))) => return Err(err),
                Some(Err(panic)) => {
                    return Err(SyncError::Report(format!("a listing task failed: {panic}")));
                }
            },
            _ = notify.notified() => {}
        }
    }
}

/// The first cut, once the first piece has a full page to learn from: at
/// the range's folders when its keys have folders, else at keys placed
/// beyond that page. Returns the new pieces.
async fn first_cut(
    producer: &Producer,
    running: &[(KeyRange, Arc<MovableEnd>)],
    slots: usize,
    done: &mut bool,
) -> Result<Vec<KeyRange>, SyncError> {
    let Some((range, end)) = running.first() else {
        return Ok(Vec::new());
    };
    let Some(progress) = end.progress() else {
        *done = true; // the range fitted in one page
        return Ok(Vec::new());
    };
    let Some(sample) = progress.sample else {
        return Ok(Vec::new()); // no full page yet
    };
    *done = true;
    let past = progress.past.unwrap_or_default();
    let has_folders = sample.iter().any(|k| {
        k.strip_prefix(&range.prefix)
            .is_some_and(|rest| rest.contains('/'))
    });
    let mut cuts = if has_folders {
        // One delimiter page: a thousand folders are plenty of cuts.
        let folders = sub_prefixes(&producer.source, &range.prefix, 1).await?;
        thin(
            folders
                .into_iter()
                .filter(|f| f.as_str() > past.as_str())
                .collect(),
            slots * 4,
        )
    } else {
        Vec::new()
    };
    if cuts.is_empty() {
        let space = KeySpace::from_sample(&sample);
        // From where both sides are: the destination may be far ahead.
        let from = past.as_str().max(sample[sample.len() - 1].as_str());
        cuts = space.cuts_after_page(&sample[0], &sample[sample.len() - 1], from, slots - 1);
    }
    Ok(cut_into_pieces(range, end, cuts))
}

/// Cut `end`'s range at the first of `cuts` (ascending) and tile the rest
/// of it between the others.
fn cut_into_pieces(range: &KeyRange, end: &MovableEnd, cuts: Vec<String>) -> Vec<KeyRange> {
    let Some(first) = cuts.first() else {
        return Vec::new();
    };
    let Some(old_end) = end.cut(first) else {
        return Vec::new(); // the listing got past the cut meanwhile
    };
    let rest = KeyRange {
        prefix: range.prefix.clone(),
        start_at: None,
        start_after: range.start_after.clone(),
        end_before: old_end,
    };
    let mut pieces = tile(&rest, cuts);
    pieces.remove(0); // before the first cut: the piece that was cut
    pieces
}

/// Cut in two the piece that has listed the most full pages since its last
/// cut (at least two), at the midpoint of what it has left.
fn bisect_one(running: &[(KeyRange, Arc<MovableEnd>)]) -> Vec<KeyRange> {
    let busiest = running
        .iter()
        .filter_map(|(range, end)| Some((range, end, end.progress()?)))
        .filter(|(_, _, p)| p.full_pages >= 2 && p.sample.is_some())
        .max_by_key(|(_, _, p)| p.full_pages);
    let Some((range, end, progress)) = busiest else {
        return Vec::new();
    };
    let sample = progress.sample.unwrap_or_default();
    let space = KeySpace::from_sample(&sample);
    let low = progress.past.unwrap_or_default();
    let cut = match progress.end.as_deref() {
        Some(high) => space.midpoint(&low, Some(high)),
        // No end to halve towards: bet the rest is as large as what this
        // piece has listed so far.
        None => space.extend(&sample[0], &low),
    };
    match cut {
        Some(cut) => cut_into_pieces(range, end, vec![cut]),
        None => Vec::new(),
    }
}

/// One piece: list both sides up to its (movable) end, merge-join, decide,
/// and send the actions to the workers.
async fn produce(
    p: Producer,
    range: KeyRange,
    end: Arc<MovableEnd>,
    preflight: bool,
) -> Result<(), SyncError> {
    let stats = p.context.stats.clone();
    let source_stream = checked_listing(
        p.source.clone(),
        &range,
        "source",
        Some((end.clone(), Side::Source)),
        preflight,
    )
    .inspect(move |entry| {
        if let Ok(entry) = entry {
            Stats::add(&stats.listed_source, 1);
            Stats::add(&stats.listed_source_bytes, entry.size);
        }
    });
    let stats = p.context.stats.clone();
    let destination_stream = checked_listing(
        p.destination.clone(),
        &range,
        "destination",
        Some((end.clone(), Side::Destination)),
        preflight,
    )
    .inspect(move |entry| {
        if entry.is_ok() {
            Stats::add(&stats.listed_destination, 1);
        }
    });
    let pairs = merge_join(source_stream, destination_stream);
    futures::pin_mut!(pairs);
    let result = loop {
        let pair = match pairs.next().await {
            None => break Ok(()),
            Some(Err(err)) => break Err(err),
            Some(Ok(pair)) => pair,
        };
        let action = decide(pair, &p.options.diff);
        if let Some(observer) = &p.observer {
            observer(&action);
        }
        if let Action::Delete { destination } = &action
            && let Some(limit) = p.options.max_delete
            && p.deletes.fetch_add(1, Ordering::Relaxed) >= limit
        {
            p.context.refuse_delete(&destination.key, limit);
            continue;
        }
        p.context.record_plan(&action);
        if p.options.dry_run || matches!(action, Action::Skip { .. }) {
            continue;
        }
        if p.tx.send(action).await.is_err() {
            break Ok(()); // every worker is gone: only after cancellation
        }
    };
    end.finish();
    result
}

/// List `range` of `target`; if its first page fails in a way that means
/// the bucket cannot be used at all (missing, forbidden, another region),
/// say so plainly as a configuration error; anything else stays the S3
/// error it was.
fn checked_listing(
    target: ListTarget,
    range: &KeyRange,
    side: &'static str,
    end: Option<(Arc<MovableEnd>, Side)>,
    preflight: bool,
) -> impl futures::Stream<Item = Result<crate::listing::ObjectEntry, SyncError>> + Send + 'static {
    let (location, expected_owner) = (target.location.clone(), target.expected_owner.clone());
    let mut first = preflight;
    list_range_until(target, range.clone(), end).map(move |item| {
        let was_first = std::mem::replace(&mut first, false);
        match item {
            Err(SyncError::S3 { context, failure }) if was_first => {
                match bucket_problem(&failure, side, &location.bucket, expected_owner.as_deref()) {
                    Some(why) => Err(SyncError::Config(why)),
                    None => Err(SyncError::S3 { context, failure }),
                }
            }
            other => other,
        }
    })
}

/// Check a bucket before any write (the serverless planner's preflight): a
/// missing or forbidden bucket is a configuration error, said plainly, not
/// a thousand failed copies. A one-key listing rather than HeadBucket, so
/// errors come with S3's own code (`NoSuchBucket`, `AccessDenied`).
pub(crate) async fn preflight(
    client: &Client,
    location: &S3Location,
    side: &str,
    expected_owner: Option<&str>,
) -> Result<(), SyncError> {
    let bucket = &location.bucket;
    let result = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(&location.prefix)
        .max_keys(1)
        .set_expected_bucket_owner(expected_owner.map(str::to_owned))
        .send()
        .await;
    let Err(err) = result else { return Ok(()) };
    let failure = classify(&err);
    match bucket_problem(&failure, side, bucket, expected_owner) {
        Some(why) => Err(SyncError::Config(why)),
        None => Err(SyncError::s3(
            format!("checking the {side} bucket {bucket:?}"),
            failure,
        )),
    }
}

/// What a failed listing says about the bucket itself, if anything.
fn bucket_problem(
    failure: &crate::error::S3Failure,
    side: &str,
    bucket: &str,
    expected_owner: Option<&str>,
) -> Option<String> {
    Some(match (failure.code.as_str(), failure.http_status) {
        ("NoSuchBucket", _) | (_, Some(404)) => {
            format!("the {side} bucket {bucket:?} does not exist")
        }
        (_, Some(403)) => format!(
            "access to the {side} bucket {bucket:?} is denied: {} (check the credentials, the bucket policy{})",
            failure.message,
            if expected_owner.is_some() {
                " and the expected owner"
            } else {
                ""
            }
        ),
        (_, Some(301)) => format!(
            "the {side} bucket {bucket:?} is in another region: pass --{}-region",
            if side == "source" { "source" } else { "dest" }
        ),
        (_, Some(400)) => format!(
            "the {side} bucket {bucket:?} rejected the request: {}",
            failure.message
        ),
        _ => return None,
    })
}
