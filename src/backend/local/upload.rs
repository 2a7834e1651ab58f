//! Upload one file: a `PutObject` up to the multipart threshold, else a
//! multipart upload in parts of the run's part size, in parallel.
//!
//! Bodies are read from the file by offset and length (the SDK's
//! `ByteStream::read_from`), never buffered whole: memory is a few
//! read buffers per request whatever the file's size, and a retried
//! request reads its bytes again from the file. The part size is the
//! configured one (raised only past S3's 10,000 parts), so the object's
//! `-N` ETag is the one [`super::etag`] computes from the file.
//!
//! Every upload carries a CRC64NVME full-object checksum of the file's
//! bytes (each part its own, the completion the whole file's, combined
//! from the parts'), so S3 refuses bytes damaged on the way and stores the
//! checksum a KMS object's later comparisons use. Each body is read once
//! more for its CRC just before it is sent. A server that refuses the
//! checksum (an older S3-compatible one) gets the upload again without it,
//! and no checksum for the rest of the process.

use std::collections::HashMap;
use std::path::Path;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{
    ChecksumAlgorithm as S3ChecksumAlgorithm, ChecksumType, CompletedPart, StorageClass,
};
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::backend::local::etag::crc_of_range;
use crate::backend::outcome::CopyError;
use crate::backend::s3::checksum_refusal::{refuses_checksums, sends_checksums};
use crate::backend::s3::multipart::{UploadTarget, multipart_etag};
use crate::base::error::{RetryClass, S3Failure, classify};
use crate::model::checksum::{Checksum, ChecksumAlgorithm, Crc64Nvme};
use crate::model::location::S3Location;
use crate::model::options::{CopyOptions, requester_pays};
use crate::model::s3_shape::default_part_size;

/// What an object carries besides its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    /// User metadata, names without `x-amz-meta-`.
    pub metadata: HashMap<String, String>,
    /// Tags, URL-query encoded (`k=v&k2=v2`) as `x-amz-tagging` wants them.
    pub tagging: Option<String>,
    pub storage_class: Option<StorageClass>,
    /// `Content-MD5` (base64) of a one-PUT body, when known beforehand:
    /// the server then checks the bytes it stores.
    pub content_md5: Option<String>,
}

/// How an object is cut for upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One PUT up to the run's multipart threshold, else parts of the
    /// run's part size (raised past S3's 10,000 parts, rounded to a MiB).
    Auto,
    /// One PUT (S3 allows up to 5 GiB).
    Single,
    /// Parts of exactly this many bytes, the last shorter; an empty object
    /// is one empty part. What reproduces another upload's `-N` ETag.
    Parts(u64),
}

impl ObjectMeta {
    /// For a file: its content type guessed from the extension (as the AWS
    /// CLI does), and with `posix` its uid, gid, mode and mtime.
    pub fn for_file(path: &Path, meta: &std::fs::Metadata, posix: bool) -> ObjectMeta {
        ObjectMeta {
            content_type: mime_guess::from_path(path).first_raw().map(str::to_owned),
            metadata: if posix {
                super::posix::metadata_of(meta)
            } else {
                HashMap::new()
            },
            ..ObjectMeta::default()
        }
    }
}

/// Set what an object carries on a PutObject or CreateMultipartUpload
/// request: two builder types with the same setters, so a macro.
macro_rules! with_meta {
    ($request:expr, $to:expr, $meta:expr) => {{
        let (to, meta) = ($to, $meta);
        let (sse, kms_key) = to.options.encryption();
        let request = $request
            .set_content_type(meta.content_type.clone())
            .set_content_encoding(meta.content_encoding.clone())
            .set_content_disposition(meta.content_disposition.clone())
            .set_content_language(meta.content_language.clone())
            .set_cache_control(meta.cache_control.clone())
            .set_metadata(Some(meta.metadata.clone()).filter(|m| !m.is_empty()))
            .set_tagging(meta.tagging.clone())
            .set_storage_class(
                to.options
                    .storage_class
                    .clone()
                    .or(meta.storage_class.clone()),
            )
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .set_expected_bucket_owner(to.options.expected_dest_owner.clone());
        request.set_request_payer(requester_pays(to.options.request_payer))
    }};
}

/// Where an upload goes and how it is written.
pub struct Destination<'a> {
    pub client: &'a Client,
    pub location: &'a S3Location,
    pub options: &'a CopyOptions,
}

/// Upload the first `size` bytes of `path` to `relative` below the
/// destination, cut as `shape` says. Returns the ETag S3 gave the object
/// (unquoted; empty from a server whose part ETags are not MD5s).
pub async fn upload_file(
    to: &Destination<'_>,
    relative: &str,
    path: &Path,
    size: u64,
    meta: &ObjectMeta,
    shape: Shape,
    cancel: &CancellationToken,
) -> Result<String, CopyError> {
    if cancel.is_cancelled() {
        return Err(CopyError::Cancelled);
    }
    let key = to.location.key_for(relative);
    let part_size = match shape {
        Shape::Auto if size <= to.options.multipart_threshold => None,
        Shape::Auto => Some(default_part_size(size, to.options.part_size)),
        Shape::Single => None,
        Shape::Parts(part_size) => Some(part_size.max(1)),
    };
    let Some(part_size) = part_size else {
        let mut sends = 0;
        return loop {
            sends += 1;
            match put_whole(to, &key, path, size, meta, sends_checksums()).await {
                Err(CopyError::Failed(failure)) if refuses_checksums(&failure, false) => {
                    break put_whole(to, &key, path, size, meta, false).await;
                }
                Err(CopyError::Failed(failure)) if damaged_on_the_way(&failure, sends) => {}
                done => break done,
            }
        };
    };
    let target = UploadTarget {
        client: to.client,
        bucket: &to.location.bucket,
        key,
        expected_owner: to.options.expected_dest_owner.clone(),
        request_payer: to.options.request_payer,
    };
    let (upload_id, crc) = match create(to, &target, meta, sends_checksums()).await {
        Err(CopyError::Failed(failure)) if refuses_checksums(&failure, false) => {
            (create(to, &target, meta, false).await?, false)
        }
        created => (created?, sends_checksums()),
    };
    let result = tokio::select! {
        result = async {
            // As for copies: a run killed mid-upload left its upload open;
            // the next upload of the key aborts it, beside its own parts.
            let (parts, ()) = tokio::join!(
                upload_parts(to, &target, &upload_id, (path, size, part_size), crc),
                target.abort_others(&upload_id),
            );
            let (parts, whole) = parts?;
            let etag = multipart_etag(&parts);
            let checksum = whole.map(|value| Checksum {
                algorithm: ChecksumAlgorithm::Crc64Nvme,
                value: Crc64Nvme::encode(value),
                full_object: true,
            });
            target.complete(&upload_id, parts, checksum.as_ref()).await?;
            Ok(etag)
        } => result,
        _ = cancel.cancelled() => Err(CopyError::Cancelled),
    };
    match result {
        Ok(Some(etag)) => Ok(etag),
        // A server whose part ETags are not MD5s: ask for the object's.
        Ok(None) => head_etag(to, &target.key).await,
        Err(err) => Err(target.abort_after(&upload_id, err).await),
    }
}

async fn body(path: &Path, offset: u64, length: u64) -> Result<ByteStream, CopyError> {
    ByteStream::read_from()
        .path(path)
        .offset(offset)
        .length(Length::Exact(length))
        .build()
        .await
        .map_err(|e| read_failure(path, e))
}

/// A file that could not be read: not a retry's to fix.
fn read_failure(path: &Path, e: impl std::fmt::Display) -> CopyError {
    CopyError::Failed(S3Failure {
        code: "LocalIoError".into(),
        http_status: None,
        message: format!("reading {}: {e}", path.display()),
        class: RetryClass::NonRetryable,
    })
}

/// Times a body refused as damaged (S3's BadDigest: it did not match the
/// checksum sent with it) is sent, read again from the file each time. A
/// BadDigest is a 400 the SDK does not retry, rightly for a caller's wrong
/// checksum; here the checksum is the file's, so the bytes were damaged on
/// the way, or the file is being written to (then every send fails and it
/// is reported).
const SENDS_OF_A_DAMAGED_BODY: u32 = 3;

/// Whether a failed send was a damaged body worth sending again.
fn damaged_on_the_way(failure: &S3Failure, sends: u32) -> bool {
    let again = failure.code == "BadDigest" && sends < SENDS_OF_A_DAMAGED_BODY;
    if again {
        tracing::warn!(error = %failure.message, "an upload's bytes were damaged on the way; sending them again");
    }
    again
}

/// The CRC64NVME of `length` bytes of `path` from `offset`.
async fn crc_of(path: &Path, offset: u64, length: u64) -> Result<u64, CopyError> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || {
        crc_of_range(&owned, offset, length, crc_fast::CrcAlgorithm::Crc64Nvme)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|read| read)
    .map_err(|e| read_failure(path, e))
}

async fn put_whole(
    to: &Destination<'_>,
    key: &str,
    path: &Path,
    size: u64,
    meta: &ObjectMeta,
    crc: bool,
) -> Result<String, CopyError> {
    let checksum = match crc {
        true => Some(Crc64Nvme::encode(crc_of(path, 0, size).await?)),
        false => None,
    };
    let request = to
        .client
        .put_object()
        .bucket(&to.location.bucket)
        .key(key)
        .content_length(size as i64)
        .set_content_md5(meta.content_md5.clone())
        .set_checksum_crc64_nvme(checksum)
        .body(body(path, 0, size).await?);
    let request = with_meta!(request, to, meta);
    let output = request
        .send()
        .await
        .map_err(|e| CopyError::Failed(classify(&e)))?;
    Ok(output
        .e_tag()
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned())
}

/// Create the upload; with `crc`, for a CRC64NVME full-object checksum.
async fn create(
    to: &Destination<'_>,
    target: &UploadTarget<'_>,
    meta: &ObjectMeta,
    crc: bool,
) -> Result<String, CopyError> {
    let request = to
        .client
        .create_multipart_upload()
        .bucket(target.bucket)
        .key(&target.key)
        .set_checksum_algorithm(crc.then_some(S3ChecksumAlgorithm::Crc64Nvme))
        .set_checksum_type(crc.then_some(ChecksumType::FullObject));
    let request = with_meta!(request, to, meta);
    let created = request
        .send()
        .await
        .map_err(|e| CopyError::Failed(classify(&e)))?;
    Ok(created.upload_id().unwrap_or_default().to_owned())
}

/// Upload the parts; with `crc`, each with its CRC64NVME, and return the
/// whole file's too, combined from them.
async fn upload_parts(
    to: &Destination<'_>,
    target: &UploadTarget<'_>,
    upload_id: &str,
    (path, size, part_size): (&Path, u64, u64),
    crc: bool,
) -> Result<(Vec<CompletedPart>, Option<u64>), CopyError> {
    // (offset, length) of each part; an empty object is one empty part.
    let count = size.div_ceil(part_size).max(1);
    let layout: Vec<(u64, u64)> = (0..count)
        .map(|i| (i * part_size, part_size.min(size - i * part_size)))
        .collect();
    // Built up front, as in multipart.rs: a closure mapped over a stream
    // inside an async fn trips rustc's higher-ranked Send check.
    let requests: Vec<_> = layout
        .into_iter()
        .enumerate()
        .map(|(index, (start, length))| {
            let part_number = index as i32 + 1;
            async move {
                let part_crc = match crc {
                    true => Some(crc_of(path, start, length).await?),
                    false => None,
                };
                let encoded = part_crc.map(Crc64Nvme::encode);
                let mut sends = 0;
                let output = loop {
                    sends += 1;
                    let request = to
                        .client
                        .upload_part()
                        .bucket(target.bucket)
                        .key(&target.key)
                        .upload_id(upload_id)
                        .part_number(part_number)
                        .content_length(length as i64)
                        .set_checksum_crc64_nvme(encoded.clone())
                        .body(body(path, start, length).await?)
                        .set_expected_bucket_owner(target.expected_owner.clone())
                        .set_request_payer(requester_pays(to.options.request_payer));
                    match request.send().await {
                        Ok(output) => break output,
                        Err(e) => {
                            let failure = classify(&e);
                            if !damaged_on_the_way(&failure, sends) {
                                return Err(CopyError::Failed(failure));
                            }
                        }
                    }
                };
                Ok::<_, CopyError>((
                    CompletedPart::builder()
                        .part_number(part_number)
                        .set_e_tag(output.e_tag().map(str::to_owned))
                        .set_checksum_crc64_nvme(encoded)
                        .build(),
                    part_crc.map(|value| (value, length)),
                ))
            }
        })
        .collect();
    let mut parts: Vec<(CompletedPart, Option<(u64, u64)>)> = futures::stream::iter(requests)
        .buffer_unordered(to.options.part_concurrency)
        .try_collect()
        .await?;
    // In part order: the ETag computed from them depends on it, and so
    // does the combined CRC.
    parts.sort_by_key(|(p, _)| p.part_number());
    let whole = parts.iter().try_fold(None, |whole, (_, crc)| {
        let (value, length) = (*crc)?;
        Some(Some(match whole {
            None => value,
            Some(before) => Crc64Nvme::combine(before, value, length),
        }))
    });
    Ok((parts.into_iter().map(|(p, _)| p).collect(), whole.flatten()))
}

/// The ETag of an object just written.
async fn head_etag(to: &Destination<'_>, key: &str) -> Result<String, CopyError> {
    let head = to
        .client
        .head_object()
        .bucket(&to.location.bucket)
        .key(key)
        .set_expected_bucket_owner(to.options.expected_dest_owner.clone())
        .send()
        .await
        .map_err(|e| CopyError::Failed(classify(&e)))?;
    Ok(head
        .e_tag()
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned())
}
