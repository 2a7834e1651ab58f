//! Put one imported object from a local file, with its content headers,
//! user metadata, tags and storage class, through the project's one file
//! upload ([`upload_file`]): PutObject, or a multipart upload in exactly
//! the layout [`super::layout`] chose (a part size in bytes, a single empty
//! part), which gets the source's ETag back. The body is a file, not
//! memory, so the SDK can read it again for a retry; a failed or
//! interrupted upload is aborted, and one left open by a killed import is
//! aborted by the next upload of the same key.

use std::collections::HashMap;
use std::path::Path;

use aws_sdk_s3::Client;
use aws_sdk_s3::types::StorageClass;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use tokio_util::sync::CancellationToken;

use super::format::{Exported, ManifestEntry};
use super::layout::Layout;
use crate::backend::local::upload::{self, ObjectMeta, Shape, upload_file};
use crate::backend::outcome::CopyError;
use crate::base::error::{RetryClass, S3Failure};
use crate::model::location::S3Location;
use crate::model::options::CopyOptions;

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
    let headers = &export.headers;
    let meta = ObjectMeta {
        content_type: headers.content_type.clone(),
        content_encoding: headers.content_encoding.clone(),
        content_disposition: headers.content_disposition.clone(),
        content_language: headers.content_language.clone(),
        cache_control: headers.cache_control.clone(),
        metadata: metadata(export),
        tagging: tagging(&export.tags),
        storage_class: line.storage_class.as_deref().map(StorageClass::from),
        content_md5: content_md5(&export.md5),
    };
    // Only what an upload reads: the shape is given, and an import
    // writes objects as the archive carries them (no class or SSE
    // override, no owner of a source).
    let options = CopyOptions {
        multipart_threshold: crate::model::s3_shape::MAX_PART_SIZE,
        part_size: crate::model::s3_shape::MIN_PART_SIZE,
        part_concurrency: PART_CONCURRENCY,
        mirror_parts: true,
        storage_class: None,
        sse: None,
        expected_source_owner: None,
        expected_dest_owner: destination.expected_owner.clone(),
        request_payer: false,
        stream: false,
        posix_metadata: false,
        posix_special_bits: false,
        as_of_ms: None,
        all_versions: false,
        extra_metadata: None,
    };
    let to = upload::Destination {
        client: &destination.client,
        location: &destination.location,
        options: &options,
    };
    let shape = match layout {
        Layout::Single => Shape::Single,
        Layout::Parts(part_size) => Shape::Parts(part_size),
    };
    upload_file(&to, &line.key, file, export.length, &meta, shape, cancel)
        .await
        .map_err(failure_of)
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

fn metadata(export: &Exported) -> HashMap<String, String> {
    export.headers.metadata.clone().into_iter().collect()
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
