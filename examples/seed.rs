//! Fill a bucket with test objects, for demos and the memory benchmark.
//!
//! ```text
//! cargo run --example seed -- --endpoint-url http://127.0.0.1:PORT \
//!     --bucket NAME --count N [--prefix P] [--mixed] [--concurrency C]
//! ```
//!
//! Credentials come from the environment, as for the CLI (for moto:
//! `AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing`).
//!
//! Plain mode puts N small objects (100–2,000 bytes) under 20 first-level
//! prefixes, `data00/` to `data19/`, so a listing has a realistic shape
//! rather than one flat directory. `--mixed` is the demo bucket: the N plain
//! keys get sizes from 0 bytes to a few hundred KiB and a rotation of
//! metadata, content type, tags and storage class, and on top come the keys
//! that break naive URL handling, plus two multipart objects. Those awkward
//! keys are listed back at the end, so a server (or SDK) that rewrites them
//! fails the seed rather than the sync that follows.
//!
//! All content is derived from the key's index, so two runs with the same
//! arguments produce byte-identical buckets.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, StorageClass};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use s3_fanout::base::client::{ClientSettings, build_s3_client};

/// First-level prefixes the plain keys are spread over.
const PLAIN_PREFIXES: u64 = 20;
/// Two objects above the CLI's smallest `--multipart-threshold` (5 MiB), so
/// the demo exercises UploadPartCopy; 12 MiB in 5 MiB parts is 3 parts,
/// hence an ETag ending in `-3`.
const MULTIPART_OBJECTS: u64 = 2;
const MULTIPART_SIZE: usize = 12 * 1024 * 1024;
/// S3's smallest part size (every part but the last).
const PART_SIZE: usize = 5 * 1024 * 1024;
/// S3's longest key, in bytes of UTF-8.
const MAX_KEY_BYTES: usize = 1024;
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Parser)]
#[command(about = "Seed an S3 bucket with deterministic test objects")]
struct Args {
    /// S3 API endpoint, e.g. http://127.0.0.1:5000 for a local moto.
    #[arg(long)]
    endpoint_url: String,
    /// Bucket to fill; created if missing.
    #[arg(long)]
    bucket: String,
    /// Number of plain objects (`--mixed` adds its special objects on top).
    #[arg(long)]
    count: u64,
    /// Prepended to every key, verbatim (include the trailing `/` if wanted).
    #[arg(long, default_value = "")]
    prefix: String,
    /// Demo content: awkward keys, mixed sizes and attributes, multipart objects.
    #[arg(long)]
    mixed: bool,
    /// PutObject requests in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
}

/// Optional object attributes, rotated over the `--mixed` objects so a sync
/// has to carry each of them across.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extra {
    None,
    Metadata,
    ContentType,
    Tags,
    InfrequentAccess,
}

/// One object to put with a single PutObject. The body is generated only
/// when the request is about to be sent, so memory stays at `concurrency`
/// bodies however large `count` is.
#[derive(Debug, Clone)]
struct ObjectSpec {
    key: String,
    size: usize,
    seed: u64,
    extra: Extra,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match seed(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("seed: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn seed(args: &Args) -> Result<()> {
    // Without credentials the SDK would go looking for an instance role and
    // fail a minute later with a vaguer message.
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() && std::env::var_os("AWS_PROFILE").is_none()
    {
        bail!(
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (for moto: testing / testing)"
        );
    }
    let started = Instant::now();
    let settings = ClientSettings {
        endpoint_url: Some(args.endpoint_url.clone()),
        force_path_style: true,
        region: Some("us-east-1".into()),
        ..Default::default()
    };
    let client = build_s3_client(&settings, None).await;
    ensure_bucket(&client, &args.bucket).await?;

    let mut objects: Vec<ObjectSpec> = (0..args.count)
        .map(|i| plain_object(&args.prefix, i, args.mixed))
        .collect();
    let awkward = if args.mixed {
        awkward_keys(&args.prefix)?
    } else {
        Vec::new()
    };
    objects.extend(awkward.iter().enumerate().map(|(i, key)| ObjectSpec {
        key: key.clone(),
        size: key.len() * 3,
        seed: u64::MAX - i as u64,
        extra: Extra::ContentType,
    }));
    let mut total_objects = objects.len() as u64;

    let mut total_bytes = stream::iter(objects)
        .map(|object| put_object(&client, &args.bucket, object))
        .buffer_unordered(args.concurrency as usize)
        .try_fold(0u64, |sum, size| async move { Ok(sum + size) })
        .await?;

    if args.mixed {
        for n in 0..MULTIPART_OBJECTS {
            let key = format!("{}multipart/big-{n}.bin", args.prefix);
            total_bytes += put_multipart(&client, &args.bucket, &key, n).await?;
            total_objects += 1;
        }
        check_round_trip(&client, &args.bucket, &args.prefix, &awkward).await?;
    }

    eprintln!(
        "seeded {total_objects} objects ({:.1} MiB) into s3://{} in {:.1} s",
        total_bytes as f64 / MIB,
        args.bucket,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Create the bucket unless it is already there; seeding the same bucket
/// twice overwrites the same keys with the same bytes.
async fn ensure_bucket(client: &Client, bucket: &str) -> Result<()> {
    if client.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    client
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("CreateBucket {bucket}: {}", DisplayErrorContext(e)))?;
    Ok(())
}

fn plain_object(prefix: &str, i: u64, mixed: bool) -> ObjectSpec {
    let key = format!("{prefix}data{:02}/{i:07}.bin", i % PLAIN_PREFIXES);
    let roll = mix(i);
    if !mixed {
        return ObjectSpec {
            key,
            size: 100 + (roll % 1901) as usize,
            seed: i,
            extra: Extra::None,
        };
    }
    // Mostly small with a tail of larger objects, the shape of real buckets,
    // while keeping a demo of a few hundred objects to a few MiB.
    let size = match roll % 20 {
        0 => 0,
        1..=12 => (roll >> 8) % 2048,
        13..=17 => 2048 + (roll >> 8) % (62 * 1024),
        _ => 64 * 1024 + (roll >> 8) % (320 * 1024),
    } as usize;
    let extra = match i % 6 {
        1 => Extra::Metadata,
        2 => Extra::ContentType,
        3 => Extra::Tags,
        4 => Extra::InfrequentAccess,
        _ => Extra::None,
    };
    ObjectSpec {
        key,
        size,
        seed: i,
        extra,
    }
}

/// Keys that a sync mangles if it decodes, re-encodes, trims or normalises
/// anywhere along the way.
fn awkward_keys(prefix: &str) -> Result<Vec<String>> {
    let mut keys: Vec<String> = [
        "unicode/ü/ñ/日本.txt",
        "with space/a b.txt",
        "plus+sign.txt",
        "percent%41.txt",
        "/leading-slash.txt",
        "double//slash.txt",
        "trailing-space.txt ",
    ]
    .iter()
    .map(|key| format!("{prefix}{key}"))
    .collect();
    keys.push(longest_key(prefix)?);
    Ok(keys)
}

/// A key of exactly [`MAX_KEY_BYTES`] bytes, mostly two-byte characters so
/// that anything counting characters instead of bytes gets it wrong.
fn longest_key(prefix: &str) -> Result<String> {
    let suffix = ".txt";
    let mut key = format!("{prefix}longest-key/");
    if key.len() + suffix.len() > MAX_KEY_BYTES {
        bail!("--prefix is too long to build a {MAX_KEY_BYTES}-byte key");
    }
    while key.len() + 'é'.len_utf8() + suffix.len() <= MAX_KEY_BYTES {
        key.push('é');
    }
    while key.len() + suffix.len() < MAX_KEY_BYTES {
        key.push('x');
    }
    key.push_str(suffix);
    debug_assert_eq!(key.len(), MAX_KEY_BYTES);
    Ok(key)
}

/// Put one object; returns its size.
async fn put_object(client: &Client, bucket: &str, object: ObjectSpec) -> Result<u64> {
    let mut request = client
        .put_object()
        .bucket(bucket)
        .key(&object.key)
        .body(ByteStream::from(body(object.seed, object.size)));
    request = match object.extra {
        Extra::None => request,
        Extra::Metadata => request
            .metadata("origin", "s3-fanout-seed")
            .metadata("index", object.seed.to_string()),
        Extra::ContentType => request
            .content_type("text/plain; charset=utf-8")
            .cache_control("max-age=60"),
        Extra::Tags => request.tagging(format!("team=storage&index={}", object.seed)),
        Extra::InfrequentAccess => request.storage_class(StorageClass::StandardIa),
    };
    request.send().await.map_err(|e| {
        anyhow::anyhow!(
            "PutObject s3://{bucket}/{:?}: {}",
            object.key,
            DisplayErrorContext(e)
        )
    })?;
    Ok(object.size as u64)
}

/// Upload one [`MULTIPART_SIZE`] object in [`PART_SIZE`] parts. A failed
/// upload is aborted so the bucket holds no orphaned parts.
async fn put_multipart(client: &Client, bucket: &str, key: &str, n: u64) -> Result<u64> {
    let upload_id = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type("application/octet-stream")
        .metadata("origin", "s3-fanout-seed")
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "CreateMultipartUpload s3://{bucket}/{key}: {}",
                DisplayErrorContext(e)
            )
        })?
        .upload_id
        .context("CreateMultipartUpload returned no upload id")?;

    let result = upload_parts(client, bucket, key, &upload_id, n).await;
    if result.is_err() {
        // Best effort: the upload error is the one worth reporting.
        let _ = client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .send()
            .await;
    }
    let e_tag = result?;
    let parts = MULTIPART_SIZE.div_ceil(PART_SIZE);
    if !e_tag.trim_matches('"').ends_with(&format!("-{parts}")) {
        bail!("s3://{bucket}/{key}: expected a {parts}-part multipart ETag, got {e_tag}");
    }
    Ok(MULTIPART_SIZE as u64)
}

/// Send the parts and complete the upload; returns the object's ETag.
async fn upload_parts(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    n: u64,
) -> Result<String> {
    let content = body(1_000_000 + n, MULTIPART_SIZE);
    let mut completed = Vec::new();
    for (i, chunk) in content.chunks(PART_SIZE).enumerate() {
        let part_number = i as i32 + 1;
        let part = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "UploadPart {part_number} of s3://{bucket}/{key}: {}",
                    DisplayErrorContext(e)
                )
            })?;
        completed.push(
            CompletedPart::builder()
                .part_number(part_number)
                .set_e_tag(part.e_tag)
                .build(),
        );
    }
    let done = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "CompleteMultipartUpload s3://{bucket}/{key}: {}",
                DisplayErrorContext(e)
            )
        })?;
    done.e_tag
        .context("CompleteMultipartUpload returned no ETag")
}

/// List the bucket back and require every awkward key to be there exactly as
/// sent: a server that collapses `//` or trims a trailing space would
/// otherwise make the demo sync look broken.
async fn check_round_trip(
    client: &Client,
    bucket: &str,
    prefix: &str,
    expected: &[String],
) -> Result<()> {
    let mut listed = HashSet::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            anyhow::anyhow!(
                "ListObjectsV2 s3://{bucket}/{prefix}: {}",
                DisplayErrorContext(e)
            )
        })?;
        listed.extend(
            page.contents
                .unwrap_or_default()
                .into_iter()
                .filter_map(|object| object.key),
        );
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|key| !listed.contains(*key))
        .collect();
    if !missing.is_empty() {
        bail!(
            "keys did not round-trip through s3://{bucket} (put, then not listed as sent): {missing:?}"
        );
    }
    Ok(())
}

/// `len` pseudo-random bytes determined by `seed` alone.
fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        out.extend_from_slice(&mix(state).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// SplitMix64's finaliser: a cheap, well-spread hash of a counter.
fn mix(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
