//! The soak: sync a mutating source again and again through a fault-injecting
//! proxy, and check after every cycle that the destination equals the
//! source. `scripts/soak.sh` starts moto and runs this; see there.
//!
//! ```text
//! cargo run --example soak -- --endpoint-url http://127.0.0.1:PORT \
//!     --cli target/debug/s3-fanout [--minutes 10] [--objects 1000] [--seed 1]
//! ```
//!
//! A cycle is two syncs with `--delete`, both through the proxy, which
//! fails 10% of requests with 503 SlowDown and cuts off another 5% after
//! the server has acted ([`FaultProxy::add_random_faults`]):
//!
//! 1. a sync while the source changes under it (overwrites, deletions, new
//!    keys, now and then a multipart object), so listings go stale and
//!    copies meet changed sources;
//! 2. a sync with the source still, which must end in exit 0;
//!
//! then a comparison of both buckets, straight at moto (key, size, ETag, and
//! no multipart upload left open). Any difference is a mismatch; the soak
//! exits 1 if it saw one, or if a settling sync did not succeed.

use std::collections::BTreeMap;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use s3_fanout::base::client::{ClientSettings, RetryMode, build_s3_client};

#[allow(dead_code)] // the tests use more of it than the soak does
#[path = "../tests/support/fault_proxy.rs"]
mod fault_proxy;

use fault_proxy::{FaultProxy, splitmix64};

#[derive(Parser, Debug)]
#[command(about = "Sync a mutating source through injected faults and verify every cycle")]
struct Args {
    /// moto's endpoint (loopback only).
    #[arg(long)]
    endpoint_url: String,
    /// The s3-fanout binary to run.
    #[arg(long)]
    cli: String,
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Objects seeded before the first cycle.
    #[arg(long, default_value_t = 1000)]
    objects: u64,
    /// Seeds the mutations and the faults: the same seed, the same soak.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

const MIB: usize = 1024 * 1024;

#[derive(Debug, Default)]
struct Totals {
    cycles: u64,
    syncs: u64,
    moved: u64,
    retries: u64,
    mutations: u64,
    mismatches: u64,
    failed_syncs: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    match soak(Args::parse()).await {
        Ok(totals) if totals.mismatches == 0 && totals.failed_syncs == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("soak: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn soak(args: Args) -> Result<Totals> {
    if !args.endpoint_url.starts_with("http://127.0.0.1:") {
        bail!("the soak only talks to loopback, not {}", args.endpoint_url);
    }
    let s3 = build_s3_client(
        &ClientSettings {
            endpoint_url: Some(args.endpoint_url.clone()),
            force_path_style: true,
            retry_mode: RetryMode::Standard,
            ..ClientSettings::default()
        },
        None,
    )
    .await;
    let (src, dst) = (
        format!("soak-src-{}", args.seed),
        format!("soak-dst-{}", args.seed),
    );
    for bucket in [&src, &dst] {
        s3.create_bucket()
            .bucket(bucket)
            .send()
            .await
            .with_context(|| format!("creating {bucket}"))?;
    }
    let mut rng = args.seed;
    let mut next_id = 0u64;
    futures::stream::iter(0..args.objects)
        .map(|i| put_small(&s3, &src, i, i))
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    next_id += args.objects;
    put_big(&s3, &src, "big/0.bin", 0).await?;
    eprintln!("soak: seeded s3://{src} with {} objects", args.objects + 1);

    let proxy = FaultProxy::start(&args.endpoint_url);
    proxy.add_random_faults(&src, args.seed);
    proxy.add_random_faults(&dst, !args.seed);

    let started = Instant::now();
    let limit = Duration::from_secs_f64(args.minutes * 60.0);
    let mut totals = Totals::default();
    println!("cycle  mutated  moved  retries  exit  mismatches  elapsed");
    while started.elapsed() < limit {
        totals.cycles += 1;
        // 1. A sync with the source changing under it.
        let sync = tokio::task::spawn_blocking({
            let (cli, endpoint) = (args.cli.clone(), proxy.endpoint().to_owned());
            let (src, dst) = (src.clone(), dst.clone());
            move || run_sync(&cli, &endpoint, &src, &dst)
        });
        let mutated = mutate(&s3, &src, &mut rng, &mut next_id).await?;
        totals.mutations += mutated;
        let moving = sync.await??;
        // 2. The source is still: this one must succeed.
        let settled = tokio::task::spawn_blocking({
            let (cli, endpoint) = (args.cli.clone(), proxy.endpoint().to_owned());
            let (src, dst) = (src.clone(), dst.clone());
            move || run_sync(&cli, &endpoint, &src, &dst)
        })
        .await??;
        totals.syncs += 2;
        totals.moved += moving.moved + settled.moved;
        totals.retries += moving.retries + settled.retries;
        if settled.exit != 0 {
            totals.failed_syncs += 1;
            eprintln!(
                "soak: cycle {}: the settling sync exited {}: {}",
                totals.cycles, settled.exit, settled.error
            );
        }
        let mismatches = compare(&s3, &src, &dst).await?;
        totals.mismatches += mismatches;
        println!(
            "{:>5}  {:>7}  {:>5}  {:>7}  {:>1}/{:<1}  {:>10}  {:>6.0}s",
            totals.cycles,
            mutated,
            moving.moved + settled.moved,
            moving.retries + settled.retries,
            moving.exit,
            settled.exit,
            mismatches,
            started.elapsed().as_secs_f64()
        );
    }
    proxy.assert_no_errors();
    println!();
    println!("cycles run        {}", totals.cycles);
    println!(
        "syncs run         {} ({} settling syncs failed)",
        totals.syncs, totals.failed_syncs
    );
    println!("source changes    {}", totals.mutations);
    println!("objects moved     {}", totals.moved);
    println!("faults injected   {}", proxy.faults_injected());
    println!("requests proxied  {}", proxy.requests().len());
    println!("retries reported  {}", totals.retries);
    println!("mismatches found  {}", totals.mismatches);
    Ok(totals)
}

struct SyncOutcome {
    exit: i32,
    moved: u64,
    retries: u64,
    error: String,
}

fn run_sync(cli: &str, endpoint: &str, src: &str, dst: &str) -> Result<SyncOutcome> {
    let out = Command::new(cli)
        .args(["sync", &format!("s3://{src}"), &format!("s3://{dst}")])
        .args(["--endpoint-url", endpoint, "--delete", "--json"])
        .args(["--multipart-threshold", "5MiB"])
        // Adaptive retries wait out each SlowDown for seconds on purpose;
        // the soak is about correctness, and standard retries get there sooner.
        .args(["--retry-mode", "standard"])
        .output()
        .with_context(|| format!("running {cli}"))?;
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "the sync printed no JSON summary (exit {:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let count = |name: &str| summary["counts"][name].as_u64().unwrap_or(0);
    Ok(SyncOutcome {
        exit: out.status.code().unwrap_or(-1),
        moved: count("copied") + count("updated") + count("deleted"),
        retries: count("retries"),
        error: summary["error"].as_str().unwrap_or_default().to_owned(),
    })
}

/// Change about 3% of the source, spread over a second or two, so the
/// changes land while the sync lists and copies.
async fn mutate(s3: &Client, bucket: &str, rng: &mut u64, next_id: &mut u64) -> Result<u64> {
    let keys = listing(s3, bucket).await?;
    let keys: Vec<&String> = keys.keys().collect();
    let changes = (keys.len() / 33).max(3);
    for _ in 0..changes {
        let draw = splitmix64(rng);
        let pick = || keys[(draw >> 8) as usize % keys.len()].clone();
        match draw % 10 {
            // Overwrite with new content (a new ETag, sometimes a new size).
            0..=3 => {
                put_bytes(
                    s3,
                    bucket,
                    &pick(),
                    small_body(draw, 100 + (draw % 900) as usize),
                )
                .await?
            }
            4..=6 => {
                s3.delete_object().bucket(bucket).key(pick()).send().await?;
            }
            7..=8 => {
                put_small(s3, bucket, *next_id, draw).await?;
                *next_id += 1;
            }
            _ => {
                put_big(s3, bucket, &format!("big/{}.bin", *next_id), draw).await?;
                *next_id += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(changes as u64)
}

fn small_body(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    out.truncate(len);
    out
}

async fn put_small(s3: &Client, bucket: &str, id: u64, seed: u64) -> Result<()> {
    let key = format!("d{:02}/obj-{id:06}", id % 20);
    put_bytes(
        s3,
        bucket,
        &key,
        small_body(seed, 100 + (id % 1900) as usize),
    )
    .await
}

async fn put_bytes(s3: &Client, bucket: &str, key: &str, body: Vec<u8>) -> Result<()> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .with_context(|| format!("putting s3://{bucket}/{key}"))?;
    Ok(())
}

/// 11 MiB in 5 MiB parts, above the soak's multipart threshold.
async fn put_big(s3: &Client, bucket: &str, key: &str, seed: u64) -> Result<()> {
    let body = small_body(seed, 11 * MIB);
    let upload = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await?;
    let id = upload.upload_id().context("no upload id")?;
    let mut parts = Vec::new();
    for (i, chunk) in body.chunks(5 * MIB).enumerate() {
        let n = i as i32 + 1;
        let part = s3
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await?;
        parts.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n)
                .set_e_tag(part.e_tag().map(str::to_owned))
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .with_context(|| format!("completing s3://{bucket}/{key}"))?;
    Ok(())
}

/// key → (size, ETag), listed straight at moto.
async fn listing(s3: &Client, bucket: &str) -> Result<BTreeMap<String, (i64, String)>> {
    let mut pages = s3.list_objects_v2().bucket(bucket).into_paginator().send();
    let mut out = BTreeMap::new();
    while let Some(page) = pages.next().await {
        for object in page?.contents() {
            out.insert(
                object.key().unwrap_or_default().to_owned(),
                (
                    object.size().unwrap_or(-1),
                    object.e_tag().unwrap_or_default().to_owned(),
                ),
            );
        }
    }
    Ok(out)
}

/// Keys missing, extra or different at the destination, plus uploads left
/// open there, each printed.
async fn compare(s3: &Client, src: &str, dst: &str) -> Result<u64> {
    let (source, destination) = (listing(s3, src).await?, listing(s3, dst).await?);
    let mut mismatches = 0;
    for (key, object) in &source {
        if destination.get(key) != Some(object) {
            eprintln!(
                "soak: mismatch: {key}: source {object:?}, destination {:?}",
                destination.get(key)
            );
            mismatches += 1;
        }
    }
    for key in destination.keys().filter(|k| !source.contains_key(*k)) {
        eprintln!("soak: mismatch: {key} is at the destination only");
        mismatches += 1;
    }
    let open = s3.list_multipart_uploads().bucket(dst).send().await?;
    for upload in open.uploads() {
        eprintln!(
            "soak: mismatch: upload {:?} to {:?} left open",
            upload.upload_id(),
            upload.key()
        );
        mismatches += 1;
    }
    Ok(mismatches)
}
