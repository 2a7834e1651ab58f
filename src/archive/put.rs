//! Put one imported object from a local file: PutObject, or a multipart
//! upload in exactly the layout [`super::layout`] chose, with its content
//! headers, user metadata, tags and storage class. The body is a file, not
//! memory, so the SDK can read it again for a retry, and a 5 GiB part
//! costs no RAM.
//!
//! Not [`crate::local::upload::upload_file`]: that one cuts parts in the
//! run's part size rounded to a MiB, and an imported object must be cut
//! exactly where its source was (a part size in bytes, a single empty
//! part) to get the source's ETag back. Starting, completing and aborting
//! uploads are the project's one implementation ([`UploadTarget`]): a
//! failed or interrupted upload is aborted, and one left open by a killed
//! import is aborted by the next upload of the same key.

use std::collections::HashMap;
use std::path::Path;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedPart, StorageClass};
use aws_smithy_types::byte_stream::Length;
use futures::{StreamExt, TryStreamExt};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use tokio_util::sync::CancellationToken;

use super::format::{Exported, ManifestEntry};
use super::layout::Layout;
use crate::copy::CopyError;
use crate::error::{RetryClass, S3Failure, classify};
use crate::location::S3Location;
use crate::multipart::{UploadTarget, multipart_etag};

/// Parts of one object uploaded at once.
const PART_CONCURRENCY: usize = 4;

/// The bucket an import writes to.
#[derive(Debug, Clone)]
pub struct Destination {
    pub client: Client,
    pub location: S3Location,
    pub expected_owner: Option<String>,
}

/// Upload `file` (the bytes of `line`'s object, already checked against the
/// manifest) to the destination; returns the ETag S3 gave it, unquoted.
pub async fn put_file(
    destination: &Destination,
    line: &ManifestEntry,
    export: &Exported,
    file: &Path,
    layout: Layout,
    cancel: &CancellationToken,
) -> Result<String, S3Failure> {
    match layout {
        Layout::Single => put_single(destination, line, export, file).await,
        Layout::Parts(part_size) => {
            put_multipart(destination, line, export, file, part_size, cancel).await
        }
    }
}

/// The `x-amz-tagging` value: a URL query string.
fn tagging(tags: &[(String, String)]) -> Option<String> {
    (!tags.is_empty()).then(|| {
        tags.iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    utf8_percent_encode(k, NON_ALPHANUMERIC),
                    utf8_percent_encode(v, NON_ALPHANUMERIC)
                )
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn metadata(export: &Exported) -> Option<HashMap<String, String>> {
    let metadata = &export.headers.metadata;
    (!metadata.is_empty()).then(|| metadata.clone().into_iter().collect())
}

fn storage_class(line: &ManifestEntry) -> Option<StorageClass> {
    line.storage_class.as_deref().map(StorageClass::from)
}

/// `Content-MD5`, so the server checks the bytes it stored.
fn content_md5(md5_hex: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..md5_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(md5_hex.get(i..i + 2)?, 16).ok())
        .collect();
    bytes
        .filter(|b| b.len() == 16)
        .map(aws_smithy_types::base64::encode)
}

fn local_failure(file: &Path, err: impl std::fmt::Display) -> S3Failure {
    S3Failure {
        code: "LocalIoError".into(),
        http_status: None,
        message: format!("reading the extracted object {}: {err}", file.display()),
        class: RetryClass::Retryable,
    }
}

async fn put_single(
    destination: &Destination,
    line: &ManifestEntry,
    export: &Exported,
    file: &Path,
) -> Result<String, S3Failure> {
    let body = ByteStream::read_from()
        .path(file)
        .length(Length::Exact(export.length))
        .build()
        .await
        .map_err(|e| local_failure(file, e))?;
    let headers = &export.headers;
    let out = destination
        .client
        .put_object()
        .bucket(&destination.location.bucket)
        .key(destination.location.key_for(&line.key))
        .body(body)
        .content_length(export.length as i64)
        .set_content_md5(content_md5(&export.md5))
        .set_content_type(headers.content_type.clone())
        .set_content_encoding(headers.content_encoding.clone())
        .set_content_disposition(headers.content_disposition.clone())
        .set_content_language(headers.content_language.clone())
        .set_cache_control(headers.cache_control.clone())
        .set_metadata(metadata(export))
        .set_tagging(tagging(&export.tags))
        .set_storage_class(storage_class(line))
        .set_expected_bucket_owner(destination.expected_owner.clone())
        .send()
        .await
        .map_err(|e| classify(&e))?;
    Ok(out.e_tag().unwrap_or_default().trim_matches('"').to_owned())
}

async fn put_multipart(
    destination: &Destination,
    line: &ManifestEntry,
    export: &Exported,
    file: &Path,
    part_size: u64,
    cancel: &CancellationToken,
) -> Result<String, S3Failure> {
    let target = UploadTarget {
        client: &destination.client,
        bucket: &destination.location.bucket,
        key: destination.location.key_for(&line.key),
        expected_owner: destination.expected_owner.clone(),
    };
    let headers = &export.headers;
    let created = destination
        .client
        .create_multipart_upload()
        .bucket(target.bucket)
        .key(&target.key)
        .set_content_type(headers.content_type.clone())
        .set_content_encoding(headers.content_encoding.clone())
        .set_content_disposition(headers.content_disposition.clone())
        .set_content_language(headers.content_language.clone())
        .set_cache_control(headers.cache_control.clone())
        .set_metadata(metadata(export))
        .set_tagging(tagging(&export.tags))
        .set_storage_class(storage_class(line))
        .set_expected_bucket_owner(destination.expected_owner.clone())
        .send()
        .await
        .map_err(|e| classify(&e))?;
    let upload_id = created.upload_id().unwrap_or_default().to_owned();
    let result = tokio::select! {
        result = async {
            let (parts, ()) = tokio::join!(
                upload_parts(&target, &upload_id, file, export.length, part_size),
                target.abort_others(&upload_id),
            );
            let parts = parts?;
            // What S3 will call it; empty for servers whose part ETags are
            // not MD5s (the verification's listing then has the last word).
            let etag = multipart_etag(&parts).unwrap_or_default();
            target.complete(&upload_id, parts, false).await?;
            Ok(etag)
        } => result,
        _ = cancel.cancelled() => Err(CopyError::Cancelled),
    };
    match result {
        Ok(etag) => Ok(etag),
        Err(err) => Err(failure_of(target.abort_after(&upload_id, err).await)),
    }
}

async fn upload_parts(
    target: &UploadTarget<'_>,
    upload_id: &str,
    file: &Path,
    size: u64,
    part_size: u64,
) -> Result<Vec<CompletedPart>, CopyError> {
    // An empty object is one empty part (a `-1` ETag).
    let count = size.div_ceil(part_size).max(1);
    let parts = (0..count).map(|i| {
        let offset = i * part_size;
        let length = part_size.min(size - offset);
        async move {
            let body = ByteStream::read_from()
                .path(file)
                .offset(offset)
                .length(Length::Exact(length))
                .build()
                .await
                .map_err(|e| CopyError::Failed(local_failure(file, e)))?;
            let number = i as i32 + 1;
            let out = target
                .client
                .upload_part()
                .bucket(target.bucket)
                .key(&target.key)
                .upload_id(upload_id)
                .part_number(number)
                .body(body)
                .content_length(length as i64)
                .set_expected_bucket_owner(target.expected_owner.clone())
                .send()
                .await
                .map_err(|e| CopyError::Failed(classify(&e)))?;
            Ok::<_, CopyError>(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build(),
            )
        }
    });
    let mut parts: Vec<CompletedPart> = futures::stream::iter(parts)
        .buffer_unordered(PART_CONCURRENCY)
        .try_collect()
        .await?;
    parts.sort_by_key(|p| p.part_number());
    Ok(parts)
}

/// An upload's error as the failure its report row shows.
fn failure_of(err: CopyError) -> S3Failure {
    match err {
        CopyError::Failed(f) | CopyError::Archived(f) | CopyError::SseC(f) => f,
        CopyError::Cancelled => S3Failure {
            code: "Interrupted".into(),
            http_status: None,
            message: "interrupted; the upload was aborted".into(),
            class: RetryClass::Retryable,
        },
        other => S3Failure {
            code: "UploadFailed".into(),
            http_status: None,
            message: format!("{other:?}"),
            class: RetryClass::Retryable,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_md5_are_encoded_as_s3_wants() {
        let tags = vec![
            ("a b".to_owned(), "c&d=e".to_owned()),
            ("ü".to_owned(), String::new()),
        ];
        assert_eq!(tagging(&tags).as_deref(), Some("a%20b=c%26d%3De&%C3%BC="));
        assert_eq!(tagging(&[]), None);
        assert_eq!(
            content_md5("5d41402abc4b2a76b9719d911017c592").as_deref(),
            Some("XUFAKrxLKna5cZ2REBfFkg==")
        );
        assert_eq!(content_md5("not hex"), None);
    }
}
