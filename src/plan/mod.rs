//! `s3-fanout plan SRC DST`: what a sync would do, cost and take, at the
//! cost of listing only.
//!
//! The plan is the sync's own dry run (the same listing, diff and
//! decisions), with every planned action tallied ([`tally`]) into:
//! - the S3 requests the sync will send, by operation ([`requests`]): the
//!   listing as measured, each action's requests, the verification;
//! - the same work on the serverless runtime ([`serverless`]);
//! - costs from a price table ([`prices`](crate::model::prices)), and wall times: locally at the
//!   rate a previous run measured (or, failing that, an assumed one), on
//!   Lambda at a given concurrency.

pub mod audit;
pub mod requests;
pub mod serverless;
pub mod tally;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::backend::s3::listing::ListTarget;
use crate::base::client::build_s3_client;
use crate::base::error::SyncError;
use crate::base::metrics::RequestCounter;
use crate::engine::pipeline::{ActionObserver, run_sync};
use crate::model::entry::Side;
use crate::model::location::Location;
use crate::model::options::{SyncOptions, SyncSpec, Transfer};
use crate::report::{Counts, Stats, Summary};
use crate::serverless::contract::RunSettings;

use crate::model::prices::PriceTable;
use audit::CheckEstimate;
use requests::{Requests, add};
use serverless::{ServerlessEstimate, StackShape};
use tally::Tally;

/// `s3-fanout plan`: every `sync` option, plus what to price and assume.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanSpec {
    #[command(flatten)]
    pub sync: SyncSpec,
    /// A price table in the shape of the built-in one (src/model/prices-us-east-1.json).
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// A previous run's summary.json, or a report directory holding runs:
    /// the local wall time is estimated at the copy rate it measured.
    /// Default: the newest run in --report's directory, if any.
    #[arg(long, value_name = "PATH")]
    pub rate_from: Option<PathBuf>,
    /// Serverless: copier invocations at once (the stack's CopierMaxConcurrency).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub lambda_concurrency: u64,
    /// Serverless: SQS messages per copier invocation (CopierBatchSize).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub lambda_batch_size: u64,
    /// Serverless: tasks a copier runs at once (CopierTaskConcurrency).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub lambda_task_concurrency: u64,
    /// Serverless: the functions' architecture (Architecture), which sets
    /// the price of a GB-second.
    #[arg(long, value_name = "ARCH", default_value = "arm64", value_parser = ["arm64", "x86_64"])]
    pub architecture: String,
    /// Serverless: the stack publishes run notifications (RunNotifications),
    /// one more state transition and SNS message per run.
    #[arg(long)]
    pub notifications: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tallied {
    pub objects: u64,
    pub bytes: u64,
}

/// What the sync would do to the objects.
#[derive(Debug, Clone, Serialize)]
pub struct Work {
    pub listed_source: u64,
    pub listed_source_bytes: u64,
    pub listed_destination: u64,
    pub copy: Tallied,
    pub update: Tallied,
    pub delete: u64,
    /// Skipped: equal, filtered, older than --modified-since, unverified,
    /// folder markers, and destination-only objects kept.
    pub skip: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LocalEstimate {
    pub s3_requests: Requests,
    pub cost_usd: BTreeMap<String, f64>,
    pub total_usd: f64,
    pub wall_secs: f64,
    /// How the copy time was estimated.
    pub rate: Rate,
    /// Listing both sides took this long in the plan itself.
    pub listing_secs: f64,
    /// Whether the verification checks written keys by HEAD (else it lists again).
    pub verify_by_head: bool,
}

/// A copy rate: measured by a previous run, or assumed.
#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    pub objects_per_sec: f64,
    pub bytes_per_sec: f64,
    /// `measured by run R (PATH)` or `assumed: ...`.
    pub basis: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PriceSource {
    pub file: String,
    pub date: String,
    pub region: String,
    pub currency: String,
}

/// The plan, as printed and as `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub source: String,
    pub destination: String,
    pub transfer: String,
    pub work: Work,
    pub local: LocalEstimate,
    /// None when a side is a directory (the serverless runtime syncs buckets).
    pub serverless: Option<ServerlessEstimate>,
    /// The same run on a stack deployed with the first-copy settings
    /// ([`StackShape::for_a_first_copy`]), when it copies anything.
    pub serverless_first_copy: Option<ServerlessEstimate>,
    /// `s3-fanout check` of the same two locations, and `check --checksum`.
    pub check: CheckEstimate,
    pub check_checksum: CheckEstimate,
    pub prices: PriceSource,
    /// What the estimates assume and cannot know.
    pub notes: Vec<String>,
}

pub async fn plan(spec: PlanSpec) -> Result<PlanReport, SyncError> {
    let (prices, price_file) = match &spec.prices {
        Some(path) => (PriceTable::from_file(path)?, path.display().to_string()),
        None => (
            PriceTable::built_in(),
            "built in (src/model/prices-us-east-1.json)".into(),
        ),
    };
    let mut options = SyncOptions::try_from(spec.sync.clone())?;
    let report_dir = match &options.report {
        Some(crate::model::location::ReportLocation::Local(dir)) => Some(dir.clone()),
        _ => None,
    };
    // The sync's own dry run: it lists and decides, and writes nothing.
    options.dry_run = true;
    options.report = None;
    let tally = Arc::new(Mutex::new(Tally::new(&options, &prices.assumptions)));
    let observer: ActionObserver = {
        let tally = tally.clone();
        Arc::new(move |action| tally.lock().unwrap_or_else(|p| p.into_inner()).take(action))
    };
    let stats = Arc::new(Stats::default());
    let dry = run_sync(&options, stats, CancellationToken::new(), Some(observer)).await?;
    if let Some(error) = &dry.error {
        return Err(SyncError::Config(format!("listing failed: {error}")));
    }
    let mut tally = Arc::try_unwrap(tally)
        .ok()
        .expect("the dry run is over")
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    tally.finish();
    let c = &dry.counts;
    let destination_after = (c.listed_destination + c.plan_copy).saturating_sub(c.plan_delete);

    let mut notes = vec![
        "every request succeeds at its first attempt: retries (throttling, 5xx) are extra"
            .to_owned(),
        "storage of the copies is not included: it is the destination's ordinary storage price"
            .to_owned(),
    ];
    let local = local_estimate(
        &options,
        &dry,
        &tally,
        destination_after,
        &prices,
        rate_source(&spec, report_dir.as_deref()),
        &mut notes,
    )?;
    let (serverless, serverless_first_copy) = match options.buckets() {
        Ok(_) => {
            let (defaults, first_copy) =
                serverless_estimate(&spec, &options, &dry, &tally, destination_after, &prices)
                    .await?;
            (Some(defaults), first_copy)
        }
        Err(_) => (None, None),
    };
    let (check, check_checksum) =
        audit::estimates(&options, &dry, tally.same_size_updates, &prices)?;
    if options.transfer == Transfer::Streamed {
        notes.push(
            "a streamed copy of a tagged one-PUT object costs one GetObjectTagging more".into(),
        );
    }
    Ok(PlanReport {
        source: options.source.to_string(),
        destination: options.destination.to_string(),
        transfer: match options.transfer {
            Transfer::ServerSide => "server-side copies",
            Transfer::Streamed => "streamed through this machine",
            Transfer::Upload => "upload from a directory",
            Transfer::Download => "download to a directory",
        }
        .to_owned(),
        work: Work {
            listed_source: c.listed_source,
            listed_source_bytes: c.listed_source_bytes,
            listed_destination: c.listed_destination,
            copy: Tallied {
                objects: c.plan_copy,
                bytes: tally_bytes(&tally, c, true),
            },
            update: Tallied {
                objects: c.plan_update,
                bytes: tally_bytes(&tally, c, false),
            },
            delete: c.plan_delete,
            skip: skips(c),
        },
        local,
        serverless,
        serverless_first_copy,
        check,
        check_checksum,
        prices: PriceSource {
            file: price_file,
            date: prices.date.clone(),
            region: prices.region.clone(),
            currency: prices.currency.clone(),
        },
        notes,
    })
}

/// Bytes to copy and to update. The counters hold their sum
/// (`plan_bytes`); the tally holds each.
fn tally_bytes(tally: &Tally, counts: &Counts, copies: bool) -> u64 {
    if copies {
        tally.copy_bytes
    } else {
        counts.plan_bytes.saturating_sub(tally.copy_bytes)
    }
}

fn skips(c: &Counts) -> BTreeMap<String, u64> {
    [
        ("equal", c.skip_equal),
        ("unverified", c.skip_unverified),
        // Also among the updates: compared by checksums, copied if different.
        ("to_compare_by_checksum", c.plan_compare),
        ("filtered", c.skip_filtered),
        ("not_modified", c.skip_not_modified),
        ("folder_markers", c.skip_folder_markers),
        ("destination_only_kept", c.extraneous_kept),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The sync's requests: its listing (as the plan's own, measured), the
/// actions, and the verification (HEADs of the written keys, or a second
/// listing, as the run will decide).
fn local_estimate(
    options: &SyncOptions,
    dry: &Summary,
    tally: &Tally,
    destination_after: u64,
    prices: &PriceTable,
    rate: Option<(Rate, String)>,
    notes: &mut Vec<String>,
) -> Result<LocalEstimate, SyncError> {
    let c = &dry.counts;
    let mut s3 = dry.requests.clone();
    for (op, n) in &tally.requests {
        add(&mut s3, op, *n);
    }
    let written = c.plan_copy + c.plan_update + c.plan_delete;
    let mut verify_by_head = false;
    let mut verify_secs = 0.0;
    if options.verify && written > 0 {
        verify_by_head = !options.verifies_by_listing()
            && crate::engine::written::heads_are_cheaper(
                written,
                c.listed_source,
                destination_after,
                options.list_page_size as u64,
            );
        if verify_by_head {
            let heads = written * requests::verify_heads_per_key(options.transfer);
            add(&mut s3, "HeadObject", heads);
            verify_secs = heads as f64 * prices.assumptions.head_request_ms
                / 1000.0
                / options.concurrency.max(1) as f64;
        } else {
            // The same pieces again: scale the measured listing to the
            // destination as the run leaves it.
            let listed = dry.requests.get("ListObjectsV2").copied().unwrap_or(0);
            let (before, after) = s3_listed(options, c, destination_after);
            let again = if before == 0 {
                0
            } else {
                (listed as f64 * after as f64 / before as f64).round() as u64
            };
            add(&mut s3, "ListObjectsV2", again);
            verify_secs = dry.duration_secs * after as f64 / before.max(1) as f64;
        }
    }

    let (rate, basis_note) = rate.map_or_else(|| {
        let assumed = &prices.assumptions;
        let per_object = tally.task_secs / tally.tasks.max(1) as f64;
        let per_object = if tally.tasks == 0 {
            assumed.copy_request_ms / 1000.0
        } else {
            per_object
        };
        let objects_per_sec = options.concurrency as f64 / per_object;
        (
            Rate {
                objects_per_sec,
                bytes_per_sec: options.concurrency as f64
                    * assumed.server_side_copy_mib_per_second
                    * 1024.0
                    * 1024.0,
                basis: format!(
                    "assumed: {} ms a request and {} MiB/s a copy, {} at once (no previous run to measure; pass --rate-from)",
                    assumed.copy_request_ms, assumed.server_side_copy_mib_per_second, options.concurrency
                ),
            },
            None,
        )
    }, |(rate, note)| (rate, Some(note)));
    if let Some(note) = basis_note {
        notes.push(note);
    }
    let copy_secs = if tally.tasks == 0 {
        0.0
    } else {
        (tally.tasks as f64 / rate.objects_per_sec)
            .max(c.plan_bytes as f64 / rate.bytes_per_sec.max(1.0))
    };
    // Copies start with the first page: the slower of the two bounds.
    let wall_secs = dry.duration_secs.max(copy_secs) + verify_secs;

    let mut cost = BTreeMap::new();
    cost.insert("s3_requests".to_owned(), prices.s3_requests(&s3)?);
    let (transfer_cost, transfer_note) = transfer_cost(options, c.plan_bytes, prices);
    if let Some(note) = transfer_note {
        notes.push(note);
    }
    cost.insert("data_transfer".to_owned(), transfer_cost);
    let total_usd = cost.values().sum();
    Ok(LocalEstimate {
        s3_requests: s3,
        cost_usd: cost,
        total_usd,
        wall_secs,
        rate,
        listing_secs: dry.duration_secs,
        verify_by_head,
    })
}

/// Objects on the S3 sides listed before, and to be listed again after.
fn s3_listed(options: &SyncOptions, c: &Counts, destination_after: u64) -> (u64, u64) {
    let s3 = |location: &Location| matches!(location, Location::S3(_));
    let (mut before, mut after) = (0, 0);
    if s3(&options.source) {
        before += c.listed_source;
        after += c.listed_source;
    }
    if s3(&options.destination) {
        before += c.listed_destination;
        after += destination_after;
    }
    (before, after)
}

/// What moving the bytes costs: nothing server-side in one region; the
/// inter-region rate between regions; the internet rate for what this
/// machine downloads (assumed outside AWS).
fn transfer_cost(options: &SyncOptions, bytes: u64, prices: &PriceTable) -> (f64, Option<String>) {
    let gb = bytes as f64 / 1e9;
    let rates = &prices.s3.transfer_per_gb;
    match options.transfer {
        Transfer::ServerSide => {
            let (a, b) = (&options.source_client.region, &options.destination_client.region);
            if a.is_some() && b.is_some() && a != b {
                (gb * rates.inter_region, None)
            } else {
                (gb * rates.same_region, None)
            }
        }
        Transfer::Upload => (0.0, None),
        Transfer::Streamed | Transfer::Download => (
            gb * rates.to_internet,
            Some("bytes read through this machine are priced as transfer out to the internet; inside AWS, in the bucket's region, they are free".into()),
        ),
    }
}

/// Where a measured rate comes from: --rate-from, else the --report directory.
fn rate_source(spec: &PlanSpec, report_dir: Option<&Path>) -> Option<(Rate, String)> {
    let path = spec.rate_from.as_deref().or(report_dir)?;
    let (summary, at) = newest_copying_run(path)?;
    let copy_secs = summary
        .phases
        .iter()
        .find(|p| p.name == "copy")
        .map(|p| p.duration_secs)
        .unwrap_or(summary.duration_secs)
        .max(0.001);
    let objects = summary.counts.copied + summary.counts.updated;
    let rate = Rate {
        objects_per_sec: objects as f64 / copy_secs,
        bytes_per_sec: (summary.counts.bytes_copied as f64 / copy_secs).max(1.0),
        basis: format!(
            "measured by run {} ({}): {objects} objects in {copy_secs:.1} s",
            summary.run_id,
            at.display()
        ),
    };
    let note = format!(
        "the local copy rate is the one run {} reached; a different --concurrency or object mix changes it",
        summary.run_id
    );
    Some((rate, note))
}

/// The newest run under `path` (a summary.json, or a directory of run
/// folders) that copied something.
fn newest_copying_run(path: &Path) -> Option<(Summary, PathBuf)> {
    let read = |file: &Path| -> Option<Summary> {
        let summary: Summary = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
        (!summary.dry_run && summary.counts.copied + summary.counts.updated > 0).then_some(summary)
    };
    if path.is_file() {
        return read(path).map(|s| (s, path.to_owned()));
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("summary.json"))
        .filter_map(|file| read(&file).map(|s| (s, file)))
        .max_by(|(a, _), (b, _)| a.started_at.cmp(&b.started_at))
}

/// The serverless estimate: the planner's shards are cut for real (a few
/// listings), the rest is modelled; and, for a run that copies, the same at
/// the first-copy settings (on the same shards: listers split what they
/// need).
async fn serverless_estimate(
    spec: &PlanSpec,
    options: &SyncOptions,
    dry: &Summary,
    tally: &Tally,
    destination_after: u64,
    prices: &PriceTable,
) -> Result<(ServerlessEstimate, Option<ServerlessEstimate>), SyncError> {
    let (source, _) = options.buckets()?;
    let settings = RunSettings::default();
    let counter = RequestCounter::new();
    let client = build_s3_client(&options.source_client, Some(counter.clone())).await;
    let target = ListTarget::for_side(&client, source, options, Side::Source);
    let want =
        crate::engine::shards::shards_wanted(settings.shard_concurrency, settings.max_shards);
    let shards = crate::engine::shards::plan_shards(
        &target,
        &options.range,
        want,
        settings.max_shards as usize,
    )
    .await?;
    // The planner's two preflight listings, besides the shard cuts.
    let mut planner_requests = counter.snapshot();
    add(&mut planner_requests, "ListObjectsV2", 2);
    let c = &dry.counts;
    let stack = StackShape {
        copier_concurrency: spec.lambda_concurrency.max(1),
        copier_batch_size: spec.lambda_batch_size.clamp(1, 10),
        copier_task_concurrency: spec.lambda_task_concurrency.max(1),
        shard_concurrency: u64::from(settings.shard_concurrency),
        lister_streams: crate::serverless::env::DEFAULT_LISTER_STREAMS,
        lister_max_keys: crate::serverless::env::DEFAULT_LISTER_MAX_KEYS,
        architecture: spec.architecture.clone(),
        validate: settings.validate,
        notifications: spec.notifications,
    };
    let shard_keys = tally.keys.per_range(&shards);
    let inputs = || serverless::Inputs {
        shards: shards.len() as u64,
        shard_keys: &shard_keys,
        busiest_prefix_writes: tally.busiest_prefix_writes(),
        listed_source: c.listed_source,
        listed_destination: c.listed_destination,
        destination_after,
        transfer_requests: &tally.requests,
        batches: &tally.batches,
        planner_requests: &planner_requests,
    };
    let first_copy = if tally.batches.is_empty() {
        None
    } else {
        Some(serverless::estimate(
            stack.clone().for_a_first_copy(),
            inputs(),
            prices,
        )?)
    };
    Ok((serverless::estimate(stack, inputs(), prices)?, first_copy))
}
