//! The server's ceiling for a sync: the fewest requests that can do it, sent
//! at high concurrency, and nothing else.
//!
//! ```text
//! cargo run --release --example ceiling -- --endpoint-url http://127.0.0.1:PORT \
//!     --source-bucket SRC --destination-bucket DST --mode full|resync \
//!     [--prefix P] [--concurrency 256] [--multipart-threshold 8MiB --part-size 8MiB]
//! ```
//!
//! `scripts/bench.sh` runs this as the pseudo-tool `ceiling`, so each
//! scenario's table has a row for what the server itself allows next to the
//! real tools. It is deliberately not the s3-fanout pipeline (no diff modes,
//! no conditional copies, no metadata or tags carried over, no verification
//! pass, no report): only the requests a sync cannot do without.
//!
//! - `full`: the destination is known to be empty. List the source, page
//!   after page, and copy every key as soon as its page arrives.
//! - `resync`: list both sides at once and walk them in step (both listings
//!   come in key order); copy the keys missing at the destination or whose
//!   size or ETag differs, delete those only at the destination. With nothing
//!   changed that is the two listings alone.
//!
//! Objects above `--multipart-threshold` are copied as s3-fanout copies them:
//! CreateMultipartUpload, one UploadPartCopy per `--part-size` range, then
//! CompleteMultipartUpload. At most `--concurrency` requests are in flight.
//!
//! Credentials and region come from the environment, as for the CLI. Prints
//! one JSON object: wall time, objects, and requests by operation (every HTTP
//! attempt, retries included).

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use clap::{Parser, ValueEnum};
use s3_fanout::backend::s3::copier::copy_source;
use s3_fanout::base::client::{ClientSettings, RetryMode, build_s3_client};
use s3_fanout::base::metrics::RequestCounter;
use s3_fanout::model::options::parse_size;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

/// Pages a listing may run ahead of the copies it feeds.
const PAGES_AHEAD: usize = 2;
/// DeleteObjects takes at most this many keys.
const DELETE_BATCH: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Into an empty destination: list the source only, copy everything.
    Full,
    /// List both sides, copy what differs, delete what is only at the destination.
    Resync,
}

#[derive(Debug, Parser)]
#[command(about = "The fewest requests a server-side sync needs, at high concurrency")]
struct Args {
    /// S3 API endpoint of both buckets (path-style addressing).
    #[arg(long)]
    endpoint_url: String,
    #[arg(long)]
    source_bucket: String,
    #[arg(long)]
    destination_bucket: String,
    /// Only keys under this prefix, the same on both sides.
    #[arg(long, default_value = "")]
    prefix: String,
    #[arg(long, value_enum)]
    mode: Mode,
    /// Requests in flight at once (copies, parts and deletes together).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// Objects above this size are copied in parts (s3-fanout's default).
    #[arg(long, default_value = "5GiB")]
    multipart_threshold: String,
    #[arg(long, default_value = "8MiB")]
    part_size: String,
}

/// One listed object; keys are full keys, the same at both sides.
#[derive(Debug, Clone)]
struct Entry {
    key: String,
    size: u64,
    etag: String,
}

/// Everything a copy task needs, shared by all of them.
struct Copier {
    client: Client,
    source_bucket: String,
    destination_bucket: String,
    multipart_threshold: u64,
    part_size: u64,
    /// One permit per request in flight.
    requests: Semaphore,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ceiling: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let multipart_threshold = parse_size(&args.multipart_threshold, "--multipart-threshold")?;
    let part_size = parse_size(&args.part_size, "--part-size")?;
    let counter = RequestCounter::new();
    let settings = ClientSettings {
        endpoint_url: Some(args.endpoint_url.clone()),
        force_path_style: true,
        // Standard, not adaptive: no client-side rate limiter between the
        // server and its ceiling.
        retry_mode: RetryMode::Standard,
        ..ClientSettings::default()
    };
    let client = build_s3_client(&settings, Some(counter.clone())).await;
    let concurrency = args.concurrency as usize;
    let copier = Arc::new(Copier {
        client: client.clone(),
        source_bucket: args.source_bucket.clone(),
        destination_bucket: args.destination_bucket.clone(),
        multipart_threshold,
        part_size,
        requests: Semaphore::new(concurrency),
    });

    let started = Instant::now();
    let mut source = Listing::start(client.clone(), &args.source_bucket, &args.prefix);
    let mut destination = match args.mode {
        Mode::Full => None,
        Mode::Resync => Some(Listing::start(
            client.clone(),
            &args.destination_bucket,
            &args.prefix,
        )),
    };

    // Copies run as tasks; `objects` bounds how many are started but not
    // finished, so a huge listing does not become a huge task list.
    let objects = Arc::new(Semaphore::new(concurrency));
    let mut tasks: JoinSet<Result<bool>> = JoinSet::new();
    let mut stats = Stats::default();
    let mut doomed: Vec<String> = Vec::new();
    let mut next_destination = match &mut destination {
        Some(listing) => listing.next().await?,
        None => None,
    };
    while let Some(entry) = source.next().await? {
        stats.source += 1;
        // Keys only at the destination sort before this one.
        while let Some(dest) = next_destination.take_if(|d| d.key < entry.key) {
            stats.destination += 1;
            doomed.push(dest.key);
            next_destination = next_of(&mut destination).await?;
        }
        let wanted = match next_destination.take_if(|d| d.key == entry.key) {
            Some(dest) => {
                stats.destination += 1;
                next_destination = next_of(&mut destination).await?;
                differs(&entry, &dest)
            }
            None => true,
        };
        if wanted {
            stats.copied += 1;
            stats.bytes += entry.size;
            let permit = objects.clone().acquire_owned().await?;
            let copier = copier.clone();
            tasks.spawn(async move {
                let multipart = copier.copy(&entry).await?;
                drop(permit);
                Ok(multipart)
            });
        }
        // Reap finished copies as we go, so an error stops the run early.
        while let Some(done) = tasks.try_join_next() {
            stats.multipart += u64::from(done??);
        }
    }
    while let Some(dest) = next_destination {
        stats.destination += 1;
        doomed.push(dest.key);
        next_destination = next_of(&mut destination).await?;
    }
    while let Some(done) = tasks.join_next().await {
        stats.multipart += u64::from(done??);
    }
    stats.deleted = doomed.len() as u64;
    copier.delete(doomed).await?;
    let wall = started.elapsed().as_secs_f64();

    let requests = counter.snapshot();
    let summary = serde_json::json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "concurrency": concurrency,
        "wall_s": (wall * 1000.0).round() / 1000.0,
        "source_objects": stats.source,
        "destination_objects": stats.destination,
        "copied": stats.copied,
        "multipart": stats.multipart,
        "deleted": stats.deleted,
        "bytes_copied": stats.bytes,
        "requests_total": requests.values().sum::<u64>(),
        "requests": requests,
    });
    println!("{summary}");
    Ok(())
}

#[derive(Debug, Default)]
struct Stats {
    source: u64,
    destination: u64,
    copied: u64,
    multipart: u64,
    deleted: u64,
    bytes: u64,
}

async fn next_of(listing: &mut Option<Listing>) -> Result<Option<Entry>> {
    match listing {
        Some(listing) => listing.next().await,
        None => Ok(None),
    }
}

/// Same size and ETag means equal. A multipart ETag (`…-N`) depends on the
/// part layout, so against a plain one it proves nothing: same size is
/// taken as equal there, as a sync that does not re-copy everything must.
fn differs(source: &Entry, destination: &Entry) -> bool {
    if source.size != destination.size {
        return true;
    }
    let multipart = |etag: &str| etag.contains('-');
    if multipart(&source.etag) != multipart(&destination.etag) {
        return false;
    }
    source.etag != destination.etag
}

/// One bucket's listing, in key order, fetched page after page by its own
/// task a few pages ahead of the reader.
struct Listing {
    pages: mpsc::Receiver<Result<Vec<Entry>>>,
    page: VecDeque<Entry>,
}

impl Listing {
    fn start(client: Client, bucket: &str, prefix: &str) -> Self {
        let (tx, pages) = mpsc::channel(PAGES_AHEAD);
        let (bucket, prefix) = (bucket.to_owned(), prefix.to_owned());
        tokio::spawn(async move {
            let mut token: Option<String> = None;
            loop {
                let page = client
                    .list_objects_v2()
                    .bucket(&bucket)
                    .prefix(&prefix)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("listing s3://{bucket}: {}", DisplayErrorContext(e))
                    });
                let page = match page {
                    Ok(page) => page,
                    Err(err) => {
                        let _ = tx.send(Err(err)).await;
                        return;
                    }
                };
                let entries = page
                    .contents()
                    .iter()
                    .map(|o| Entry {
                        key: o.key().unwrap_or_default().to_owned(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        etag: o.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
                    })
                    .collect();
                if tx.send(Ok(entries)).await.is_err() {
                    return;
                }
                token = page.next_continuation_token().map(str::to_owned);
                if !page.is_truncated().unwrap_or(false) || token.is_none() {
                    return;
                }
            }
        });
        Listing {
            pages,
            page: VecDeque::new(),
        }
    }

    async fn next(&mut self) -> Result<Option<Entry>> {
        loop {
            if let Some(entry) = self.page.pop_front() {
                return Ok(Some(entry));
            }
            match self.pages.recv().await {
                Some(page) => self.page = page?.into(),
                None => return Ok(None),
            }
        }
    }
}

impl Copier {
    /// Copy one object; true if it went in parts.
    async fn copy(&self, entry: &Entry) -> Result<bool> {
        let source = copy_source(&self.source_bucket, &entry.key, None);
        if entry.size <= self.multipart_threshold {
            let _permit = self.requests.acquire().await?;
            self.client
                .copy_object()
                .bucket(&self.destination_bucket)
                .key(&entry.key)
                .copy_source(&source)
                .send()
                .await
                .map_err(|e| failed("CopyObject", &entry.key, e))?;
            return Ok(false);
        }

        let upload_id = {
            let _permit = self.requests.acquire().await?;
            self.client
                .create_multipart_upload()
                .bucket(&self.destination_bucket)
                .key(&entry.key)
                .send()
                .await
                .map_err(|e| failed("CreateMultipartUpload", &entry.key, e))?
                .upload_id()
                .unwrap_or_default()
                .to_owned()
        };
        let parts = entry.size.div_ceil(self.part_size);
        let copies = (0..parts).map(|index| {
            let start = index * self.part_size;
            let end = (start + self.part_size).min(entry.size) - 1;
            let part_number = index as i32 + 1;
            let request = self
                .client
                .upload_part_copy()
                .bucket(&self.destination_bucket)
                .key(&entry.key)
                .upload_id(&upload_id)
                .part_number(part_number)
                .copy_source(&source)
                .copy_source_range(format!("bytes={start}-{end}"));
            async move {
                let _permit = self.requests.acquire().await?;
                let output = request
                    .send()
                    .await
                    .map_err(|e| failed("UploadPartCopy", &entry.key, e))?;
                Ok::<_, anyhow::Error>(
                    CompletedPart::builder()
                        .part_number(part_number)
                        .set_e_tag(
                            output
                                .copy_part_result()
                                .and_then(|r| r.e_tag())
                                .map(str::to_owned),
                        )
                        .build(),
                )
            }
        });
        let completed = futures::future::try_join_all(copies).await?;
        let _permit = self.requests.acquire().await?;
        self.client
            .complete_multipart_upload()
            .bucket(&self.destination_bucket)
            .key(&entry.key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| failed("CompleteMultipartUpload", &entry.key, e))?;
        Ok(true)
    }

    /// Delete keys from the destination, a thousand per request.
    async fn delete(&self, keys: Vec<String>) -> Result<()> {
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key).build())
                .collect::<Result<Vec<_>, _>>()?;
            let _permit = self.requests.acquire().await?;
            let output = self
                .client
                .delete_objects()
                .bucket(&self.destination_bucket)
                .delete(
                    Delete::builder()
                        .set_objects(Some(objects))
                        .quiet(true)
                        .build()?,
                )
                .send()
                .await
                .map_err(|e| failed("DeleteObjects", &batch[0], e))?;
            if let Some(error) = output.errors().first() {
                bail!(
                    "DeleteObjects {}: {}",
                    error.key().unwrap_or_default(),
                    error.message().unwrap_or_default()
                );
            }
        }
        Ok(())
    }
}

/// The SDK's own Display is only "service error": the context has the code.
fn failed<E: std::error::Error>(operation: &str, key: &str, err: E) -> anyhow::Error {
    anyhow::anyhow!("{operation} {key}: {}", DisplayErrorContext(err))
}
