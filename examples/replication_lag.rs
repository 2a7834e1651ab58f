//! Replication lag on the local stack: how long after its PutObject returns
//! an object is visible at the destination, over a burst of puts.
//!
//! ```text
//! cargo run --example replication_lag -- --endpoint http://127.0.0.1:PORT \
//!     [--count 1000] [--put-concurrency 32] [--replicator-concurrency 4] \
//!     [--batch-size 10] [--size 1024] [--poll-ms 50] [--timeout-secs 300] \
//!     [--json PATH]
//! ```
//!
//! `scripts/bench-replication.sh` starts a moto and runs this. Credentials
//! come from the environment (for moto: `testing` / `testing`).
//!
//! What runs is replication as [`replication::start`] sets it up: moto's S3
//! sends an event to the SQS event queue on every put, the event source
//! mapping emulator long-polls that queue and invokes the real replicator,
//! which reads both sides and copies. So the lag of a key covers the
//! notification, SQS, the mapping's receive, the replicator's HEADs and its
//! CopyObject — all on one moto, sharing the machine with this process.
//!
//! Per key, lag = the first destination listing that shows the key with
//! the source's ETag, minus the instant its PutObject returned. The listing
//! is polled, so a figure reads late by up to one poll cycle; the cycle's
//! mean and max are printed beside the results.
//!
//! Results: a Markdown table on stdout, everything (per-key lags included,
//! in put order) in the `--json` file. Progress and errors go to stderr.
//! The exit status is 1 if a key is not replicated within the timeout, the
//! destination does not end up equal to the source, or an event reaches the
//! dead-letter queue.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::QueueAttributeName;
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use s3_fanout::base::client::{ClientSettings, build_s3_client, build_sqs_client};
use s3_fanout::base::metrics::RequestCounter;
use s3_fanout::local_stack::replication::{self, Replication, ReplicationOptions};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Every key of the burst is under this prefix of the source bucket.
const PREFIX: &str = "burst/";

/// The `i`th key of the burst: zero-padded, so listing order is put order.
fn key_of(i: usize) -> String {
    format!("{PREFIX}{i:06}.bin")
}
/// How long the startup test event and, at the end, the last in-flight
/// events may take to leave the event queue.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(about = "Measure replication lag for a burst of puts on the local stack")]
struct Args {
    /// moto's endpoint, e.g. http://127.0.0.1:5000.
    #[arg(long)]
    endpoint: String,
    /// Objects in the burst.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    count: u32,
    /// PutObject requests in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    put_concurrency: u32,
    /// Replicator invocations at once (the event source mapping's
    /// MaximumConcurrency).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    replicator_concurrency: u32,
    /// Messages per replicator invocation (the mapping's BatchSize).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i32).range(1..=10))]
    batch_size: i32,
    /// Bytes per object, sent in one PutObject.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(0..=64 * 1024 * 1024))]
    size: u64,
    /// Milliseconds from the start of one destination listing to the next.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    poll_ms: u64,
    /// Give up on keys not replicated this long after the first put.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_secs: u64,
    /// Also write the results, per-key lags included, as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    // Warnings from the replicator and the event source mapping (a failed
    // copy, a failed receive) go to stderr; RUST_LOG=info shows every key.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match bench(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("replication_lag: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Run the burst and print the report; false if the run failed a check.
async fn bench(args: &Args) -> Result<bool> {
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        bail!(
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (for moto: testing / testing)"
        );
    }
    let settings = ClientSettings {
        endpoint_url: Some(args.endpoint.clone()),
        force_path_style: true,
        region: Some("us-east-1".into()),
        ..Default::default()
    };
    // Counts this benchmark's own requests (the puts and the polling), not
    // the replicator's: its clients are built inside the library.
    let counter = RequestCounter::new();
    let s3 = build_s3_client(&settings, Some(counter.clone())).await;
    let sqs = build_sqs_client(&settings).await;

    // Unique names, so a run against a moto that served earlier runs still
    // starts from empty buckets and queues.
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis()
    );
    let source = format!("lag-src-{run_id}");
    let destination = format!("lag-dst-{run_id}");
    for bucket in [&source, &destination] {
        s3.create_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| anyhow!("CreateBucket {bucket}: {}", DisplayErrorContext(e)))?;
    }

    let mut options = ReplicationOptions::new(
        &args.endpoint,
        &format!("lag-{run_id}"),
        &format!("s3://{source}"),
        &format!("s3://{destination}"),
    );
    options.batch_size = args.batch_size;
    options.max_concurrency = args.replicator_concurrency as usize;
    let cancel = CancellationToken::new();
    let replication = replication::start(&options, cancel.clone())
        .await
        .context("starting replication")?;

    // Settle by waiting for the startup test event, not for a fixed time:
    // moto enqueues `s3:TestEvent` inside PutBucketNotificationConfiguration,
    // so it is already queued when `start` returns, and once the queue is
    // empty the mapping has received it, invoked the replicator and deleted
    // it. The burst then starts on an empty queue with a warm pipeline.
    eprintln!("replication_lag: waiting for the startup test event to be consumed");
    drained(&sqs, &replication.event_queue_url, DRAIN_TIMEOUT)
        .await
        .context("the startup test event")?;

    eprintln!(
        "replication_lag: putting {} objects of {} B into s3://{source}/{PREFIX} ({} at once)",
        args.count, args.size, args.put_concurrency
    );
    let poll = Duration::from_millis(args.poll_ms);
    let timeout = Duration::from_secs(args.timeout_secs);
    let expected = Mutex::new(HashMap::new());
    let t0 = Instant::now();
    let (puts, watch) = tokio::try_join!(
        put_burst(&s3, &source, args, &expected),
        watch(
            &s3,
            &destination,
            &expected,
            args.count as usize,
            poll,
            t0 + timeout
        ),
    )?;
    let requests_during_burst = counter.snapshot();
    eprintln!("replication_lag: burst done; verifying");

    let checks = verify(&s3, &sqs, &replication, &source, &destination).await?;
    cancel.cancel();

    let report = Report::new(args, t0, &puts, &watch, requests_during_burst, checks);
    println!("{}", report.markdown());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("replication_lag: wrote {}", path.display());
    }
    let mut ok = true;
    if report.missing > 0 {
        eprintln!(
            "replication_lag: FAIL: {} of {} keys not at the destination with the source's ETag after {} s",
            report.missing, args.count, args.timeout_secs
        );
        ok = false;
    }
    if !report.checks.destination_matches_source {
        eprintln!(
            "replication_lag: FAIL: the destination differs from the source in {} keys",
            report.checks.differing_keys
        );
        ok = false;
    }
    if !report.checks.event_queue_drained || report.checks.dead_letters > 0 {
        eprintln!(
            "replication_lag: FAIL: event queue drained: {}, dead letters: {}",
            report.checks.event_queue_drained, report.checks.dead_letters
        );
        ok = false;
    }
    Ok(ok)
}

/// One PutObject of the burst.
struct Put {
    key: String,
    etag: String,
    returned: Instant,
}

/// Put every object, `put_concurrency` at once, recording when each
/// PutObject returned. Each key's ETag goes into `expected` as soon as it is
/// known, for the watcher.
async fn put_burst(
    s3: &Client,
    bucket: &str,
    args: &Args,
    expected: &Mutex<HashMap<String, String>>,
) -> Result<Vec<Put>> {
    stream::iter(0..args.count)
        .map(|i| async move {
            let key = key_of(i as usize);
            let output = s3
                .put_object()
                .bucket(bucket)
                .key(&key)
                .body(ByteStream::from(body(i.into(), args.size as usize)))
                .send()
                .await
                .map_err(|e| anyhow!("PutObject {key}: {}", DisplayErrorContext(e)))?;
            let returned = Instant::now();
            let etag = output
                .e_tag
                .with_context(|| format!("PutObject {key} returned no ETag"))?;
            expected
                .lock()
                .expect("not poisoned")
                .insert(key.clone(), etag.clone());
            Ok(Put {
                key,
                etag,
                returned,
            })
        })
        .buffer_unordered(args.put_concurrency as usize)
        .try_collect::<Vec<Put>>()
        .await
        .map(|mut puts| {
            // Back into put order (the keys are zero-padded indexes).
            puts.sort_by(|a, b| a.key.cmp(&b.key));
            puts
        })
}

/// `len` bytes, different for every seed, so every object has its own ETag
/// and a copy of the wrong object cannot pass for the right one.
fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// What the destination polling saw.
#[derive(Default)]
struct Watch {
    /// key → every ETag it was listed with, and when first.
    first_seen: HashMap<String, Vec<(String, Instant)>>,
    /// Start of one listing to the start of the next.
    cycles: Vec<Duration>,
    /// One full listing (all pages).
    listings: Vec<Duration>,
}

impl Watch {
    fn seen(&self, key: &str, etag: &str) -> Option<Instant> {
        self.first_seen
            .get(key)?
            .iter()
            .find(|(e, _)| e == etag)
            .map(|(_, at)| *at)
    }
}

/// List the destination every `poll` until all `total` keys are there with
/// their source's ETag, or `deadline` passes.
///
/// Each listing starts after the longest run of leading keys already
/// confirmed. A full listing of 1,000 keys costs moto ~150 ms of the one
/// core its GIL allows, which the replication it measures competes for;
/// keys replicate roughly in put order, so listing only the unconfirmed
/// tail keeps the poll cheap and its cycle near `poll`.
async fn watch(
    s3: &Client,
    bucket: &str,
    expected: &Mutex<HashMap<String, String>>,
    total: usize,
    poll: Duration,
    deadline: Instant,
) -> Result<Watch> {
    let mut watch = Watch::default();
    let mut previous: Option<Instant> = None;
    // Keys 0..confirmed are at the destination with their source's ETag.
    let mut confirmed = 0;
    loop {
        let started = Instant::now();
        if let Some(previous) = previous {
            watch.cycles.push(started - previous);
        }
        previous = Some(started);
        let mut request = s3.list_objects_v2().bucket(bucket).prefix(PREFIX);
        if confirmed > 0 {
            request = request.start_after(key_of(confirmed - 1));
        }
        let mut pages = request.into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                anyhow!(
                    "ListObjectsV2 s3://{bucket}/{PREFIX}: {}",
                    DisplayErrorContext(e)
                )
            })?;
            // The key was visible by the time this page arrived, and (unless
            // this is the first listing) not when the previous one was sent.
            let at = Instant::now();
            for object in page.contents() {
                let (Some(key), Some(etag)) = (object.key(), object.e_tag()) else {
                    continue;
                };
                let sightings = watch.first_seen.entry(key.to_owned()).or_default();
                if !sightings.iter().any(|(e, _)| e == etag) {
                    sightings.push((etag.to_owned(), at));
                }
            }
        }
        watch.listings.push(started.elapsed());

        {
            let expected = expected.lock().expect("not poisoned");
            while confirmed < total {
                let key = key_of(confirmed);
                match expected.get(&key) {
                    Some(etag) if watch.seen(&key, etag).is_some() => confirmed += 1,
                    _ => break,
                }
            }
        }
        if confirmed == total || Instant::now() >= deadline {
            return Ok(watch);
        }
        tokio::time::sleep_until((started + poll).into()).await;
    }
}

/// Wait until the queue has no message waiting or in flight.
async fn drained(sqs: &aws_sdk_sqs::Client, queue_url: &str, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| anyhow!("GetQueueAttributes {queue_url}: {}", DisplayErrorContext(e)))?
            .attributes
            .unwrap_or_default();
        let waiting: u64 = [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .filter_map(|name| attributes.get(name)?.parse::<u64>().ok())
        .sum();
        if waiting == 0 {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!("{waiting} messages still in {queue_url} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The end state: destination against source, and where the events went.
#[derive(Debug, Serialize)]
struct Checks {
    source_keys: usize,
    destination_keys: usize,
    /// Keys missing on one side or with another size or ETag.
    differing_keys: usize,
    destination_matches_source: bool,
    event_queue_drained: bool,
    /// Messages received from the event dead-letter queue (at most 10 are
    /// asked for).
    dead_letters: usize,
}

async fn verify(
    s3: &Client,
    sqs: &aws_sdk_sqs::Client,
    replication: &Replication,
    source: &str,
    destination: &str,
) -> Result<Checks> {
    // Events still in flight (a batch whose deletes have not happened yet)
    // could still be dead-lettered, so the DLQ is read once the queue is
    // empty.
    let event_queue_drained = match drained(sqs, &replication.event_queue_url, DRAIN_TIMEOUT).await
    {
        Ok(()) => true,
        Err(why) => {
            eprintln!("replication_lag: {why:#}");
            false
        }
    };
    let (want, got) = (listing(s3, source).await?, listing(s3, destination).await?);
    let differing_keys = want
        .iter()
        .filter(|(key, object)| got.get(*key) != Some(*object))
        .count()
        + got.keys().filter(|key| !want.contains_key(*key)).count();
    let dead_letters = sqs
        .receive_message()
        .queue_url(&replication.dead_letter_queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .map_err(|e| anyhow!("ReceiveMessage (event DLQ): {}", DisplayErrorContext(e)))?
        .messages
        .unwrap_or_default();
    for message in &dead_letters {
        eprintln!(
            "replication_lag: dead letter: {}",
            message.body().unwrap_or_default()
        );
    }
    Ok(Checks {
        source_keys: want.len(),
        destination_keys: got.len(),
        differing_keys,
        destination_matches_source: differing_keys == 0,
        event_queue_drained,
        dead_letters: dead_letters.len(),
    })
}

/// Every key of the bucket with its size and ETag.
async fn listing(s3: &Client, bucket: &str) -> Result<BTreeMap<String, (i64, String)>> {
    let mut objects = BTreeMap::new();
    let mut pages = s3.list_objects_v2().bucket(bucket).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| anyhow!("ListObjectsV2 s3://{bucket}: {}", DisplayErrorContext(e)))?;
        for object in page.contents() {
            objects.insert(
                object.key().unwrap_or_default().to_owned(),
                (
                    object.size().unwrap_or_default(),
                    object.e_tag().unwrap_or_default().to_owned(),
                ),
            );
        }
    }
    Ok(objects)
}

/// Summary statistics of a sample, in milliseconds.
#[derive(Debug, Default, Serialize)]
struct Stats {
    min: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Stats {
    fn of(values: &[f64]) -> Stats {
        if values.is_empty() {
            return Stats::default();
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Stats {
            min: sorted[0],
            p50: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            p99: percentile(&sorted, 99.0),
            max: sorted[sorted.len() - 1],
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
        }
    }
}

/// Nearest rank: the smallest value with at least `p`% of the sample at or
/// below it, so p99 of 1,000 values is the 990th.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Debug, Serialize)]
struct Params {
    count: u32,
    size_bytes: u64,
    put_concurrency: u32,
    replicator_concurrency: u32,
    batch_size: i32,
    poll_ms: u64,
    timeout_secs: u64,
    cpus: usize,
}

#[derive(Debug, Serialize)]
struct Poll {
    requested_ms: u64,
    listings: usize,
    cycle_mean_ms: f64,
    cycle_max_ms: f64,
    listing_mean_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    params: Params,
    replicated: usize,
    missing: usize,
    /// Put returned → first listed at the destination with the source's ETag.
    lag_ms: Stats,
    /// Median lag of the first and the last tenth of the burst, in put
    /// order: a growing backlog shows as a gap between the two.
    lag_p50_first_tenth_ms: f64,
    lag_p50_last_tenth_ms: f64,
    /// First put sent → last PutObject returned.
    put_burst_secs: f64,
    puts_per_sec: f64,
    /// First put sent → last key seen at the destination.
    first_put_to_last_replicated_secs: f64,
    replicated_per_sec: f64,
    poll: Poll,
    /// This benchmark's own requests during the burst (not the replicator's).
    requests: BTreeMap<String, u64>,
    checks: Checks,
    /// Per key, in put order; null where the key was not replicated.
    lags_ms: Vec<Option<f64>>,
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `later − earlier` in milliseconds, negative if `later` came first.
fn signed_ms(later: Instant, earlier: Instant) -> f64 {
    match later.checked_duration_since(earlier) {
        Some(d) => millis(d),
        None => -millis(earlier - later),
    }
}

impl Report {
    fn new(
        args: &Args,
        t0: Instant,
        puts: &[Put],
        watch: &Watch,
        requests: BTreeMap<String, u64>,
        checks: Checks,
    ) -> Report {
        let seen: Vec<Option<Instant>> = puts.iter().map(|p| watch.seen(&p.key, &p.etag)).collect();
        let lags_ms: Vec<Option<f64>> = puts
            .iter()
            .zip(&seen)
            .map(|(put, seen)| seen.map(|at| signed_ms(at, put.returned)))
            .collect();
        let present: Vec<f64> = lags_ms.iter().flatten().copied().collect();
        let tenth = (puts.len() / 10).max(1);
        let median_of = |lags: &[Option<f64>]| {
            Stats::of(&lags.iter().flatten().copied().collect::<Vec<_>>()).p50
        };
        let last_put = puts.iter().map(|p| p.returned).max().unwrap_or(t0);
        let last_seen = seen.iter().flatten().max().copied().unwrap_or(t0);
        let put_burst_secs = (last_put - t0).as_secs_f64();
        let replication_secs = (last_seen - t0).as_secs_f64();
        let mean_ms = |durations: &[Duration]| {
            durations.iter().map(|d| millis(*d)).sum::<f64>() / durations.len().max(1) as f64
        };
        Report {
            params: Params {
                count: args.count,
                size_bytes: args.size,
                put_concurrency: args.put_concurrency,
                replicator_concurrency: args.replicator_concurrency,
                batch_size: args.batch_size,
                poll_ms: args.poll_ms,
                timeout_secs: args.timeout_secs,
                cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            },
            replicated: present.len(),
            missing: puts.len() - present.len(),
            lag_ms: Stats::of(&present),
            lag_p50_first_tenth_ms: median_of(&lags_ms[..tenth.min(lags_ms.len())]),
            lag_p50_last_tenth_ms: median_of(&lags_ms[lags_ms.len().saturating_sub(tenth)..]),
            put_burst_secs,
            puts_per_sec: puts.len() as f64 / put_burst_secs.max(f64::EPSILON),
            first_put_to_last_replicated_secs: replication_secs,
            replicated_per_sec: present.len() as f64 / replication_secs.max(f64::EPSILON),
            poll: Poll {
                requested_ms: args.poll_ms,
                listings: watch.listings.len(),
                cycle_mean_ms: mean_ms(&watch.cycles),
                cycle_max_ms: watch.cycles.iter().map(|d| millis(*d)).fold(0.0, f64::max),
                listing_mean_ms: mean_ms(&watch.listings),
            },
            requests,
            checks,
            lags_ms,
        }
    }

    fn markdown(&self) -> String {
        let p = &self.params;
        let lag = &self.lag_ms;
        let c = &self.checks;
        let requests = self
            .requests
            .iter()
            .map(|(op, n)| format!("{op} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = [
            (
                "burst".to_owned(),
                format!(
                    "{} puts of {} B, {} at once; replicator batch {} × {} at once; {} CPUs",
                    p.count,
                    p.size_bytes,
                    p.put_concurrency,
                    p.batch_size,
                    p.replicator_concurrency,
                    p.cpus
                ),
            ),
            (
                "replicated".to_owned(),
                format!("{} of {}", self.replicated, p.count),
            ),
            ("lag p50".to_owned(), format!("{:.0} ms", lag.p50)),
            ("lag p90".to_owned(), format!("{:.0} ms", lag.p90)),
            ("lag p99".to_owned(), format!("{:.0} ms", lag.p99)),
            ("lag max".to_owned(), format!("{:.0} ms", lag.max)),
            (
                "lag mean / min".to_owned(),
                format!("{:.0} ms / {:.0} ms", lag.mean, lag.min),
            ),
            (
                "lag p50, first / last tenth of the burst".to_owned(),
                format!(
                    "{:.0} ms / {:.0} ms",
                    self.lag_p50_first_tenth_ms, self.lag_p50_last_tenth_ms
                ),
            ),
            (
                "put burst (first put sent → last returned)".to_owned(),
                format!(
                    "{:.2} s ({:.0} puts/s)",
                    self.put_burst_secs, self.puts_per_sec
                ),
            ),
            (
                "first put sent → last key replicated".to_owned(),
                format!(
                    "{:.2} s ({:.0} keys/s replicated)",
                    self.first_put_to_last_replicated_secs, self.replicated_per_sec
                ),
            ),
            (
                "poll resolution".to_owned(),
                format!(
                    "every {} ms asked; cycle mean {:.0} ms, max {:.0} ms (a lag reads up to one cycle late); listing {:.0} ms",
                    self.poll.requested_ms,
                    self.poll.cycle_mean_ms,
                    self.poll.cycle_max_ms,
                    self.poll.listing_mean_ms
                ),
            ),
            ("benchmark's own requests".to_owned(), requests),
            (
                "destination == source (keys, sizes, ETags)".to_owned(),
                format!(
                    "{} ({} / {} keys, {} differ)",
                    if c.destination_matches_source {
                        "yes"
                    } else {
                        "NO"
                    },
                    c.source_keys,
                    c.destination_keys,
                    c.differing_keys
                ),
            ),
            (
                "event queue drained / event DLQ".to_owned(),
                format!(
                    "{} / {}",
                    if c.event_queue_drained { "yes" } else { "NO" },
                    if c.dead_letters == 0 {
                        "empty".to_owned()
                    } else {
                        format!("{} messages", c.dead_letters)
                    }
                ),
            ),
        ];
        let mut out = String::from("| replication lag | |\n|---|---|\n");
        for (name, value) in rows {
            out.push_str(&format!("| {name} | {value} |\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), 500.0);
        assert_eq!(percentile(&sorted, 99.0), 990.0);
        assert_eq!(percentile(&sorted, 100.0), 1000.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }
}
