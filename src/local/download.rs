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

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use aws_sdk_s3::types::RequestPayer;
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::posix::Restore;
use super::{LocalDir, io_failure};
use crate::config::CopyOptions;
use crate::copy::{CopyError, quoted};
use crate::error::{RetryClass, S3Failure, classify};
use crate::listing::ObjectEntry;
use crate::location::S3Location;
use crate::multipart::{default_part_size, uniform_layout};

/// Partial downloads are named `.NAME` + this; listings skip them.
pub const PARTIAL_SUFFIX: &str = ".s3-fanout-partial";
/// Attempts at one range when its body breaks off: the SDK retries a
/// request, but not a response body that stops halfway.
const BODY_ATTEMPTS: u32 = 3;

/// Where a download comes from.
pub struct Source<'a> {
    pub client: &'a Client,
    pub location: &'a S3Location,
    pub options: &'a CopyOptions,
}

/// What the first GET said about the object.
struct Fetched {
    last_modified_ms: i64,
    metadata: Option<HashMap<String, String>>,
}

/// Download `entry` to its file below `dir`; returns the bytes written.
pub async fn download(
    from: &Source<'_>,
    dir: &LocalDir,
    entry: &ObjectEntry,
    cancel: &CancellationToken,
) -> Result<u64, CopyError> {
    let path = dir.path_for(&entry.key).map_err(CopyError::Failed)?;
    let parent = path.parent().unwrap_or(&dir.root).to_owned();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tokio::fs::create_dir_all(&parent)
        .await
        .map_err(|e| CopyError::Failed(io_failure("creating the directory", &parent, &e)))?;
    let partial = parent.join(format!(".{name}{PARTIAL_SUFFIX}"));
    let result = tokio::select! {
        result = fetch_to(from, entry, &partial) => result,
        _ = cancel.cancelled() => Err(CopyError::Cancelled),
    };
    let finished = match result {
        Ok(fetched) => finish(&partial, &path, entry, fetched, from.options.posix_metadata).await,
        Err(err) => Err(err),
    };
    if finished.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    finished.map(|()| entry.size)
}

async fn finish(
    partial: &Path,
    path: &Path,
    entry: &ObjectEntry,
    fetched: Fetched,
    posix: bool,
) -> Result<(), CopyError> {
    let restore = Restore::from_object(fetched.last_modified_ms, fetched.metadata.as_ref(), posix);
    let (partial, path) = (partial.to_owned(), path.to_owned());
    let size = entry.size;
    tokio::task::spawn_blocking(move || {
        let written = std::fs::metadata(&partial)
            .map_err(|e| io_failure("reading", &partial, &e))?
            .len();
        if written != size {
            return Err(S3Failure {
                code: "IncompleteBody".into(),
                http_status: None,
                message: format!("wrote {written} bytes of {size} to {}", partial.display()),
                class: RetryClass::Retryable,
            });
        }
        restore
            .apply(&partial)
            .map_err(|e| io_failure("restoring attributes of", &partial, &e))?;
        std::fs::rename(&partial, &path).map_err(|e| io_failure("renaming into place", &path, &e))
    })
    .await
    .map_err(|e| {
        CopyError::Failed(S3Failure {
            code: "LocalIoError".into(),
            http_status: None,
            message: format!("finishing {}: {e}", entry.key),
            class: RetryClass::NonRetryable,
        })
    })?
    .map_err(CopyError::Failed)
}

/// Write the object into `partial`: one GET, or ranged GETs in parallel.
async fn fetch_to(
    from: &Source<'_>,
    entry: &ObjectEntry,
    partial: &PathBuf,
) -> Result<Fetched, CopyError> {
    // Created (emptied) here; each range then writes through a handle of
    // its own, since clones of one handle share their file position.
    let file = tokio::fs::File::create(partial)
        .await
        .map_err(|e| CopyError::Failed(io_failure("creating", partial, &e)))?;
    if entry.size <= from.options.multipart_threshold {
        return fetch_range(from, entry, None, partial).await;
    }
    file.set_len(entry.size)
        .await
        .map_err(|e| CopyError::Failed(io_failure("sizing", partial, &e)))?;
    drop(file);
    let layout = uniform_layout(
        entry.size,
        default_part_size(entry.size, from.options.part_size),
    );
    let ranges: Vec<_> = layout
        .into_iter()
        .map(|range| fetch_range(from, entry, Some(range), partial))
        .collect();
    let mut fetched: Vec<Fetched> = futures::stream::iter(ranges)
        .buffered(from.options.part_concurrency)
        .try_collect()
        .await?;
    Ok(fetched.swap_remove(0))
}

/// GET one range (or the whole object) into `file` at its offset, again
/// from where it broke off if the body stops early.
async fn fetch_range(
    from: &Source<'_>,
    entry: &ObjectEntry,
    range: Option<(u64, u64)>,
    partial: &Path,
) -> Result<Fetched, CopyError> {
    let (start, end) = range.unwrap_or((0, entry.size.saturating_sub(1)));
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(partial)
        .await
        .map_err(|e| CopyError::Failed(io_failure("opening", partial, &e)))?;
    let mut at = start;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut request = from
            .client
            .get_object()
            .bucket(&from.location.bucket)
            .key(from.location.key_for(&entry.key))
            .if_match(quoted(&entry.etag))
            .set_expected_bucket_owner(from.options.expected_source_owner.clone());
        if range.is_some() || at > start {
            request = request.range(format!("bytes={at}-{end}"));
        }
        if from.options.request_payer {
            request = request.request_payer(RequestPayer::Requester);
        }
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
        file.seek(std::io::SeekFrom::Start(at))
            .await
            .map_err(|e| CopyError::Failed(io_failure("seeking in", partial, &e)))?;
        let mut body = output.body;
        let broke = loop {
            match body.next().await {
                None => break None,
                Some(Ok(chunk)) => {
                    file.write_all(&chunk)
                        .await
                        .map_err(|e| CopyError::Failed(io_failure("writing", partial, &e)))?;
                    at += chunk.len() as u64;
                }
                Some(Err(e)) => break Some(e.to_string()),
            }
        };
        file.flush()
            .await
            .map_err(|e| CopyError::Failed(io_failure("writing", partial, &e)))?;
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
