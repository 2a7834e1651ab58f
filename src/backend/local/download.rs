//! Download one object into the directory: to a partial file beside its
//! place, then renamed over it, so a file is either its old self or the
//! whole new object, never half of one (an interrupted run leaves only a
//! partial file, which the next run's download of that key replaces).
//!
//! Objects up to the multipart threshold are one GET; larger ones are
//! ranged GETs of the part size, in parallel, each written at its offset.
//! Every GET is conditional on the listed ETag, as copies are. The file
//! gets the object's time (or with `--posix-metadata` its stored
//! attributes), so an unchanged object compares equal next time.
//!
//! Nothing here is resolved by name below the target ([`super::confined`]):
//! the key's directories are opened without following links, the partial
//! is created exclusively (`O_EXCL | O_NOFOLLOW`: a link planted at its
//! name is removed, not written through), every range writes through the
//! one descriptor at its own offsets, owner, mode and time are applied
//! through it, and the rename is relative to the directory's descriptor.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use super::confined::OpenDir;
use super::dir::{LocalDir, io_failure};
use super::posix::{Restore, RestoreRules};
use crate::backend::local::dir::partial_name;
use crate::backend::outcome::CopyError;
use crate::base::error::{RetryClass, S3Failure, classify};
use crate::model::entry::ObjectEntry;
use crate::model::location::S3Location;
use crate::model::options::{CopyOptions, requester_pays};
use crate::model::s3_shape::{default_part_size, quoted, uniform_layout};

/// Attempts at one range when its body breaks off: the SDK retries a
/// request, but not a response body that stops halfway.
const BODY_ATTEMPTS: u32 = 3;
/// Bytes of small network chunks gathered before one positioned write, so
/// a write is not a system call (and a blocking-pool hand-off) per few
/// KiB. Kept under the allocator's mmap threshold ([`crate::base::allocator`],
/// 64 KiB): a buffer that size comes from the heap and its memory is used
/// again by the next one, where a mapped buffer costs a page fault for
/// every 4 KiB it fills and a TLB shootdown when it is unmapped (a tenth of
/// a restore's CPU with 256 KiB buffers, in `perf`). Chunks at least this
/// big are written as they came, without a copy.
const WRITE_BUFFER: usize = 60 * 1024;

/// GETs in flight across every download of a run. Each holds its
/// connection's read buffer (up to about 400 KiB in hyper) and up to
/// `WRITE_BUFFER` of body, and a restore would otherwise have object
/// concurrency times part concurrency of them (256 x 8): a 5 GiB tree of
/// mid-size and large files peaked at 216 MiB. 64 keep a link busy at a
/// region's round trip (64 x 8 MiB parts in flight) within about 45 MiB.
pub const RANGES_IN_FLIGHT: usize = 64;

/// Where a download comes from.
pub struct Source<'a> {
    pub client: &'a Client,
    pub location: &'a S3Location,
    pub options: &'a CopyOptions,
    /// Permits for GETs in flight, shared by the run's downloads
    /// ([`RANGES_IN_FLIGHT`]).
    pub ranges: &'a tokio::sync::Semaphore,
}

/// What the first GET said about the object.
struct Fetched {
    last_modified_ms: i64,
    metadata: Option<HashMap<String, String>>,
}

/// A finished download.
pub struct Downloaded {
    pub bytes: u64,
    /// Attributes the object asked for and did not get (special bits).
    pub warnings: Vec<String>,
}

/// The partial file being written, and where it is.
struct Partial {
    dir: OpenDir,
    name: String,
    file: Arc<std::fs::File>,
}

/// Download `entry` to its file below `dir`.
pub async fn download(
    from: &Source<'_>,
    dir: &Arc<LocalDir>,
    entry: &ObjectEntry,
    cancel: &CancellationToken,
) -> Result<Downloaded, CopyError> {
    dir.key_path(&entry.key).map_err(CopyError::Failed)?;
    let rules = RestoreRules::new(from.options.posix_metadata, from.options.posix_special_bits);
    let partial = {
        let (dir, key) = (dir.clone(), entry.key.clone());
        // Until its attributes are known, a partial restored with them is
        // its owner's alone: the final mode may be as strict as 0600.
        // Otherwise it gets what the final file gets, 0666 less the umask.
        let mode = if rules.attributes { 0o600 } else { 0o666 };
        blocking(move || create_partial(&dir, &key, mode)).await?
    };
    let result = tokio::select! {
        result = fetch_to(from, entry, &partial.file) => result,
        _ = cancel.cancelled() => Err(CopyError::Cancelled),
    };
    let (dir, key, size) = (dir.clone(), entry.key.clone(), entry.size);
    blocking(move || {
        let finished = result.and_then(|fetched| {
            finish(&dir, &key, &partial, size, fetched, rules).map_err(CopyError::Failed)
        });
        if finished.is_err()
            && let Some(target) = dir.target.get()
        {
            let _ = target.remove_file(Some(&partial.dir), &partial.name);
        }
        finished
    })
    .await
}

/// Run file system calls off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CopyError> + Send + 'static,
) -> Result<T, CopyError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        CopyError::Failed(S3Failure {
            code: "LocalIoError".into(),
            http_status: None,
            message: e.to_string(),
            class: RetryClass::NonRetryable,
        })
    })?
}

/// Make the key's directories and create its partial file exclusively,
/// all beneath the target and through no link.
fn create_partial(dir: &LocalDir, relative: &str, mode: u32) -> Result<Partial, CopyError> {
    let key = dir.key_path(relative).map_err(CopyError::Failed)?;
    let path = dir.root.join(relative);
    let fail = |what: &str, e: std::io::Error| CopyError::Failed(io_failure(what, &path, &e));
    let target = dir
        .target(true)
        .map_err(CopyError::Failed)?
        .expect("a target opened to be created exists");
    let parent = target
        .dir(&key.dirs, true)
        .map_err(|e| fail("creating the directory of", e))?
        .expect("directories opened to be created exist");
    let name = partial_name(key.name);
    let file = target
        .create_exclusive(&parent, &name, mode)
        .map_err(|e| fail("creating the partial file of", e))?;
    Ok(Partial {
        dir: parent,
        name,
        file: Arc::new(file),
    })
}

/// Check the size, apply the attributes through the descriptor, and
/// rename the partial over the key's file.
fn finish(
    dir: &LocalDir,
    relative: &str,
    partial: &Partial,
    size: u64,
    fetched: Fetched,
    rules: RestoreRules,
) -> Result<Downloaded, S3Failure> {
    let path = dir.root.join(relative);
    let written = partial
        .file
        .metadata()
        .map_err(|e| io_failure("reading", &path, &e))?
        .len();
    if written != size {
        return Err(S3Failure {
            code: "IncompleteBody".into(),
            http_status: None,
            message: format!("wrote {written} bytes of {size} for {}", path.display()),
            class: RetryClass::Retryable,
        });
    }
    let restore = Restore::from_object(fetched.last_modified_ms, fetched.metadata.as_ref(), rules);
    restore
        .apply(&partial.file, rules.can_chown)
        .map_err(|e| io_failure("restoring attributes of", &path, &e))?;
    let key = dir.key_path(relative)?;
    let target = dir.target.get().expect("opened by create_partial");
    target
        .rename(&partial.dir, &partial.name, key.name)
        .map_err(|e| io_failure("renaming into place", &path, &e))?;
    Ok(Downloaded {
        bytes: size,
        warnings: restore.warning().into_iter().collect(),
    })
}

/// Write the object into the partial file: one GET, or ranged GETs in
/// parallel, each writing at its own offsets.
async fn fetch_to(
    from: &Source<'_>,
    entry: &ObjectEntry,
    file: &Arc<std::fs::File>,
) -> Result<Fetched, CopyError> {
    if entry.size <= from.options.multipart_threshold {
        return fetch_range(from, entry, None, file).await;
    }
    let ranges: Vec<_> = uniform_layout(
        entry.size,
        default_part_size(entry.size, from.options.part_size),
    )
    .into_iter()
    .map(|range| fetch_range(from, entry, Some(range), file))
    .collect();
    let mut fetched: Vec<Fetched> = futures::stream::iter(ranges)
        .buffered(from.options.part_concurrency)
        .try_collect()
        .await?;
    Ok(fetched.swap_remove(0))
}

/// Write `bytes` at `offset`, off the async threads; how many were written.
async fn write_at(
    file: &Arc<std::fs::File>,
    bytes: bytes::Bytes,
    offset: u64,
    key: &str,
) -> Result<u64, CopyError> {
    let (file, key) = (file.clone(), key.to_owned());
    blocking(move || {
        file.write_all_at(&bytes, offset)
            .map(|()| bytes.len() as u64)
            .map_err(|e| {
                let what = "writing the partial file of key";
                CopyError::Failed(io_failure(what, std::path::Path::new(&key), &e))
            })
    })
    .await
}

/// GET one range (or the whole object) into `file` at its offset, again
/// from where it broke off if the body stops early.
async fn fetch_range(
    from: &Source<'_>,
    entry: &ObjectEntry,
    range: Option<(u64, u64)>,
    file: &Arc<std::fs::File>,
) -> Result<Fetched, CopyError> {
    let (start, end) = range.unwrap_or((0, entry.size.saturating_sub(1)));
    let mut at = start;
    let mut attempt = 0;
    // Held until the body is written; never closed, so acquiring fails
    // only if the run dropped it, which it does not while downloading.
    let _permit = from.ranges.acquire().await.ok();
    loop {
        attempt += 1;
        let mut request = from
            .client
            .get_object()
            .bucket(&from.location.bucket)
            .key(from.location.key_for(&entry.key))
            .set_version_id(entry.version_id.clone())
            .if_match(quoted(&entry.etag))
            .set_expected_bucket_owner(from.options.expected_source_owner.clone());
        if range.is_some() || at > start {
            request = request.range(format!("bytes={at}-{end}"));
        } else {
            // The whole object: its stored checksum comes with it, and the
            // client checks the bytes against it as they arrive, so a
            // restore never writes bytes the object does not hold. (Ranged
            // reads carry no whole-object checksum; composite ones are
            // skipped by the client.)
            request = request.checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled);
        }
        request = request.set_request_payer(requester_pays(from.options.request_payer));
        let output = request
            .send()
            .await
            .map_err(|e| CopyError::from_failure(classify(&e)))?;
        let fetched = Fetched {
            last_modified_ms: output
                .last_modified()
                .and_then(|t| t.to_millis().ok())
                .unwrap_or(entry.last_modified_ms),
            metadata: output.metadata().cloned(),
        };
        let mut body = output.body;
        let mut buffer: Vec<u8> = Vec::with_capacity(WRITE_BUFFER);
        let broke = loop {
            match body.next().await {
                None => break None,
                Some(Ok(chunk)) => {
                    if buffer.len() + chunk.len() > WRITE_BUFFER && !buffer.is_empty() {
                        let gathered =
                            std::mem::replace(&mut buffer, Vec::with_capacity(WRITE_BUFFER));
                        at += write_at(file, gathered.into(), at, &entry.key).await?;
                    }
                    if chunk.len() >= WRITE_BUFFER {
                        at += write_at(file, chunk, at, &entry.key).await?;
                    } else {
                        buffer.extend_from_slice(&chunk);
                    }
                }
                Some(Err(e)) => break Some(e.to_string()),
            }
        };
        // What arrived before a break is kept: the next attempt asks
        // for the rest only.
        if !buffer.is_empty() {
            at += write_at(file, buffer.into(), at, &entry.key).await?;
        }
        match broke {
            None if at > end || entry.size == 0 => return Ok(fetched),
            why if attempt < BODY_ATTEMPTS => {
                tracing::info!(key = %entry.key, at, ?why, "the body broke off; fetching the rest");
            }
            why => {
                return Err(CopyError::Failed(S3Failure {
                    code: "IncompleteBody".into(),
                    http_status: None,
                    message: format!(
                        "the object's body ended at byte {at} of {} ({})",
                        end + 1,
                        why.unwrap_or_else(|| "no error".into())
                    ),
                    class: RetryClass::Retryable,
                }));
            }
        }
    }
}
