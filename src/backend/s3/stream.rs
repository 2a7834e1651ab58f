//! Copies that stream through this machine, for two sides a server-side
//! copy cannot bridge: two S3-compatible providers, two accounts with no
//! shared credentials, or a region pair where the user asks for it
//! (`--stream`).
//!
//! The copy keeps the source's shape, so its ETag is the source's and the
//! next run proves it equal: an object uploaded in one PUT (up to S3's
//! 5 GiB) streams as one GET piped into one PUT; one uploaded in parts goes
//! through the multipart copy of [`crate::backend::s3::multipart`] with each part a
//! ranged GET piped into an UploadPart (instead of an UploadPartCopy), so
//! part layouts, tags, left-over uploads and lost completions are handled
//! by the same code as server-side copies.
//!
//! Piped, not buffered: the PUT's body is the GET's body, read as the PUT
//! sends it, so memory holds a few chunks per copy in flight whatever the
//! objects' sizes (the bench in `scripts/bench-memory.sh` measures it). The
//! price is that the SDK cannot resend such a body, so a failed attempt is
//! retried here, with a fresh GET, under the same backoff rules.
//!
//! Checked end to end: the GET of a whole object is in checksum mode, so
//! the SDK checks what it reads against the source's stored checksum; every
//! PUT and UploadPart carries a checksum of its bytes, so the destination
//! refuses bytes damaged between here and there (BadDigest, retried with a
//! fresh GET). The source's full-object value goes as a header when there
//! is one; otherwise the SDK computes a CRC64NVME as the bytes go and sends
//! it in the body's trailer (`aws-chunked`), which buffers nothing. A
//! multipart stream's completion carries the source's full-object value,
//! so the object is refused whole if its bytes are not the source's. A
//! destination that refuses these checksums gets the copy again without
//! them ([`crate::backend::s3::checksum_refusal`]).

use std::time::Duration;

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::types::{ChecksumAlgorithm as SdkChecksumAlgorithm, ChecksumMode, CompletedPart};

use crate::backend::outcome::{Copied, CopyError};
use crate::backend::s3::checksum_refusal::sends_checksums;
use crate::backend::s3::copier::Copier;
use crate::base::error::{RetryClass, S3Failure, classify};
use crate::model::checksum::{Checksum, ChecksumAlgorithm};
use crate::model::entry::ObjectEntry;
use crate::model::options::requester_pays;
use crate::model::s3_shape::quoted;

/// Attempts at one piped GET and PUT (or UploadPart) together.
const ATTEMPTS: u32 = 5;

/// Up to `max` ms, from the clock's nanoseconds: enough to keep retries
/// of parallel copies from marching in step.
fn jitter_ms(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    nanos % max.max(1)
}

/// For a request whose checksum the SDK is to compute from the bytes it
/// sends: the clients compute none unless an operation requires one
/// (`WhenRequired`, so no request gets a checksum it did not ask for, and
/// CopyObject keeps the source's), and under that setting the SDK ignores a
/// request's own `checksum_algorithm` too; this request says `WhenSupported`.
fn computing_checksums() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default()
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenSupported)
}

impl Copier {
    /// GET the source as listed (a byte range of it, inclusive, if given).
    async fn get(
        &self,
        entry: &ObjectEntry,
        range: Option<(u64, u64)>,
    ) -> Result<GetObjectOutput, CopyError> {
        let request = self
            .source_client
            .get_object()
            .bucket(&self.source.bucket)
            .key(self.source.key_for(&entry.key))
            .set_version_id(entry.version_id.clone())
            .if_match(quoted(&entry.etag))
            .set_range(range.map(|(start, end)| format!("bytes={start}-{end}")))
            .set_expected_bucket_owner(self.options.expected_source_owner.clone())
            .set_request_payer(requester_pays(self.options.request_payer))
            // The whole object's stored checksum comes with it: the client
            // checks the bytes read against it, and the PUT carries it on.
            .set_checksum_mode(range.is_none().then_some(ChecksumMode::Enabled));
        request
            .send()
            .await
            .map_err(|e| CopyError::from_failure(classify(&e)))
    }

    /// Run `attempt` until it succeeds, fails for good, or has been tried
    /// [`ATTEMPTS`] times; waits 0.2, 0.4, 0.8 s... (with jitter) between.
    async fn piped<T, F, Fut>(&self, key: &str, mut attempt: F) -> Result<T, CopyError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CopyError>>,
    {
        let mut tried = 0;
        loop {
            tried += 1;
            match attempt().await {
                Err(err) if tried < ATTEMPTS && err.retry_class() == RetryClass::Retryable => {
                    if matches!(err, CopyError::SourceChanged | CopyError::Cancelled) {
                        return Err(err);
                    }
                    tracing::info!(key, tried, error = ?err, "a streamed copy failed; trying again");
                    let base = 200u64 << (tried - 1).min(6);
                    let jitter = jitter_ms(base / 2);
                    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                }
                other => return other,
            }
        }
    }

    /// Stream an object that was uploaded in one PUT: GET piped into PUT,
    /// with its content headers, metadata and tags.
    pub(crate) async fn stream_single(&self, entry: &ObjectEntry) -> Result<Copied, CopyError> {
        let (warnings, etag) = self
            .piped(&entry.key, || async {
                let head = self.get(entry, None).await?;
                let checksum = Checksum::from_fields(
                    head.checksum_crc64_nvme(),
                    head.checksum_crc32(),
                    head.checksum_crc32_c(),
                    None,
                    None,
                    head.checksum_type().map(|t| t.as_str()),
                )
                .filter(|c| c.full_object && sends_checksums());
                let value = |algorithm| {
                    checksum
                        .as_ref()
                        .filter(|c| c.algorithm == algorithm)
                        .map(|c| c.value.clone())
                };
                // Without the source's value, the SDK computes a CRC64NVME
                // as the bytes go and sends it in the body's trailer.
                let trailer = (checksum.is_none() && sends_checksums())
                    .then_some(SdkChecksumAlgorithm::Crc64Nvme);
                if head.sse_customer_algorithm().is_some() {
                    return Err(CopyError::SseC(S3Failure {
                        code: "SSECObject".into(),
                        http_status: None,
                        message: "the object is encrypted with a customer-provided key (SSE-C)"
                            .into(),
                        class: RetryClass::NonRetryable,
                    }));
                }
                let mut tag_warnings = Vec::new();
                let tagging = if head.tag_count().unwrap_or(0) > 0 {
                    let key = self.source.key_for(&entry.key);
                    crate::backend::s3::multipart::source_tagging(
                        self,
                        &key,
                        entry.version_id.as_deref(),
                        &mut tag_warnings,
                    )
                    .await?
                } else {
                    None
                };
                let (sse, kms_key) = self.encryption();
                let request = self
                    .destination_client
                    .put_object()
                    .bucket(&self.destination.bucket)
                    .key(self.destination.key_for(&entry.key))
                    .content_length(entry.size as i64)
                    .set_metadata(crate::backend::s3::multipart::with_extra(
                        head.metadata(),
                        self.options.extra_metadata.as_ref(),
                    ))
                    .set_content_type(head.content_type().map(str::to_owned))
                    .set_content_encoding(head.content_encoding().map(str::to_owned))
                    .set_content_disposition(head.content_disposition().map(str::to_owned))
                    .set_content_language(head.content_language().map(str::to_owned))
                    .set_cache_control(head.cache_control().map(str::to_owned))
                    .set_website_redirect_location(
                        head.website_redirect_location().map(str::to_owned),
                    )
                    .set_tagging(tagging)
                    .set_storage_class(self.storage_class(entry))
                    .set_server_side_encryption(sse)
                    .set_ssekms_key_id(kms_key)
                    .set_expected_bucket_owner(self.options.expected_dest_owner.clone())
                    .set_request_payer(requester_pays(self.options.request_payer))
                    // The source's full-object checksum, for the destination
                    // to check the bytes it receives against: a stream
                    // damaged on its way is refused (BadDigest), not stored.
                    .set_checksum_crc64_nvme(value(ChecksumAlgorithm::Crc64Nvme))
                    .set_checksum_crc32(value(ChecksumAlgorithm::Crc32))
                    .set_checksum_crc32_c(value(ChecksumAlgorithm::Crc32c))
                    .set_checksum_algorithm(trailer.clone());
                let request = request.body(head.body);
                let put = match trailer {
                    Some(_) => {
                        request
                            .customize()
                            .config_override(computing_checksums())
                            .send()
                            .await
                    }
                    None => request.send().await,
                }
                .map_err(|e| CopyError::Failed(classify(&e)))?;
                let etag = put.e_tag().map(|e| e.trim_matches('"').to_owned());
                Ok((tag_warnings, etag))
            })
            .await?;
        Ok(Copied {
            bytes: entry.size,
            multipart: false,
            warnings,
            source_changed: false,
            etags: etag.map(|etag| (entry.etag.clone(), etag)),
        })
    }

    /// Stream one part of a multipart copy: a ranged GET of the source as
    /// listed, piped into UploadPart; with `algorithm` (the upload's), the
    /// SDK computes the part's checksum as the bytes go and sends it in the
    /// body's trailer, for the destination to check.
    pub(crate) async fn stream_part(
        &self,
        entry: &ObjectEntry,
        (upload_id, part_number): (&str, i32),
        (start, end): (u64, u64),
        algorithm: Option<ChecksumAlgorithm>,
    ) -> Result<CompletedPart, CopyError> {
        self.piped(&entry.key, || async {
            let part = self.get(entry, Some((start, end))).await?;
            let request = self
                .destination_client
                .upload_part()
                .bucket(&self.destination.bucket)
                .key(self.destination.key_for(&entry.key))
                .upload_id(upload_id)
                .part_number(part_number)
                .content_length((end - start + 1) as i64)
                .body(part.body)
                .set_checksum_algorithm(algorithm.map(|a| SdkChecksumAlgorithm::from(a.name())))
                .set_expected_bucket_owner(self.options.expected_dest_owner.clone())
                .set_request_payer(requester_pays(self.options.request_payer));
            // A full-object upload's completion needs no part checksums.
            let output = match algorithm {
                Some(_) => {
                    request
                        .customize()
                        .config_override(computing_checksums())
                        .send()
                        .await
                }
                None => request.send().await,
            }
            .map_err(|e| CopyError::from_failure(classify(&e)))?;
            Ok(CompletedPart::builder()
                .part_number(part_number)
                .set_e_tag(output.e_tag().map(str::to_owned))
                .build())
        })
        .await
    }
}
