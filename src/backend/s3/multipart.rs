//! Multipart server-side copy for objects above the threshold.
//!
//! `CreateMultipartUpload` copies nothing from the source, so the source's
//! metadata, content headers and tags are read first and passed on. Parts are
//! copied in parallel with `UploadPartCopy`. When the source was itself
//! uploaded in parts, the copy uses the same part boundaries, which gives it
//! the same `-N` ETag: the next diff can then prove the copy equal instead
//! of calling it "unverified". Any failure or cancellation aborts the upload,
//! so no orphaned parts are left to bill.
//!
//! Two things can still leave an upload open, and each copy cleans up after
//! them: a run killed mid-copy (SIGKILL, a Lambda timeout), and a
//! `CreateMultipartUpload` whose answer was lost and which the SDK sent
//! again. So once a copy has its own upload, it aborts every other open
//! upload to the same destination key ([`abort_other_uploads`]). The
//! destination key is this tool's to write; a second writer racing on it
//! would lose its upload and fail, which is the right outcome for a key two
//! writers fight over.

use aws_sdk_s3::types::{
    ChecksumAlgorithm as SdkChecksumAlgorithm, ChecksumMode, ChecksumType,
    CompletedMultipartUpload, CompletedPart,
};
use futures::{StreamExt, TryStreamExt};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use tokio_util::sync::CancellationToken;

use crate::backend::outcome::{Copied, CopyError};
use crate::backend::s3::checksum_refusal::sends_checksums;
use crate::backend::s3::copier::{Copier, copy_source};
use crate::base::error::{S3Failure, classify};
use crate::model::checksum::{Checksum, ChecksumAlgorithm};
use crate::model::entry::ObjectEntry;
use crate::model::options::requester_pays;
use crate::model::s3_shape::{
    EtagShape, Layout, default_part_size, etag_shape, quoted, uniform_layout,
};

/// A multipart upload started at the destination, with the part layout
/// it will be filled with. The serverless copiers keep it in the run's
/// store (`parts/UPLOAD/upload.json`), for the part groups to share.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Upload {
    pub upload_id: String,
    pub layout: Layout,
    pub warnings: Vec<String>,
    /// The source's stored checksum, which the upload was created to keep:
    /// a full-object one goes with the completion, for S3 to check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
    /// The algorithm the upload was created with, which streamed parts
    /// carry in their bodies' trailers (part copies need none: S3 computes
    /// theirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<ChecksumAlgorithm>,
}

pub(crate) async fn copy_multipart(
    copier: &Copier,
    entry: &ObjectEntry,
    cancel: &CancellationToken,
) -> Result<Copied, CopyError> {
    let upload = start_upload(copier, entry, true).await?;
    let all = 0..upload.layout.len();
    let result = tokio::select! {
        result = async {
            // The clean-up runs beside the part copies: it costs one listing
            // and no time on the copy's path.
            let (parts, ()) = tokio::join!(
                copy_parts(copier, entry, &upload, all),
                abort_other_uploads(copier, entry, &upload.upload_id),
            );
            complete_upload(copier, entry, &upload.upload_id, parts?, upload.checksum.as_ref()).await
        } => result,
        _ = cancel.cancelled() => Err(CopyError::Cancelled),
    };
    match result {
        Ok(etag) => Ok(Copied {
            bytes: entry.size,
            multipart: true,
            warnings: upload.warnings,
            source_changed: false,
            etags: etag.map(|etag| (entry.etag.clone(), etag)),
        }),
        // Our upload vanished under us: a concurrent attempt at the same
        // key (a duplicate SQS delivery) aborted it as left over. Trying
        // again is right; the redelivery will find that attempt's copy.
        Err(CopyError::Failed(failure)) if failure.code == "NoSuchUpload" => {
            Err(CopyError::Failed(S3Failure {
                class: crate::base::error::RetryClass::Retryable,
                ..failure
            }))
        }
        // Abort even when cancelled: this is the step that keeps a Ctrl-C
        // or a failed part from leaving billable parts behind.
        Err(err) => Err(abort_after(copier, entry, &upload.upload_id, err).await),
    }
}

/// Read the source's metadata, headers, tags and part layout, and start an
/// upload that carries them (`CreateMultipartUpload` copies nothing itself).
///
/// `part_checksums_kept`: whether the caller hands each part's checksum
/// back at completion, which an upload of a composite checksum needs; one
/// that does not (the serverless part groups keep only ETags) copies a
/// composite source with S3's default checksum instead.
pub async fn start_upload(
    copier: &Copier,
    entry: &ObjectEntry,
    part_checksums_kept: bool,
) -> Result<Upload, CopyError> {
    let source_key = copier.source.key_for(&entry.key);
    let destination_key = copier.destination.key_for(&entry.key);
    let fail = |e: S3Failure| CopyError::from_failure(e);

    let head = copier
        .source_client
        .head_object()
        .bucket(&copier.source.bucket)
        .key(&source_key)
        .set_version_id(entry.version_id.clone())
        .if_match(quoted(&entry.etag))
        .set_expected_bucket_owner(copier.options.expected_source_owner.clone())
        .set_request_payer(requester_pays(copier.options.request_payer))
        .checksum_mode(ChecksumMode::Enabled);
    // The object's headers, its part layout and its tags are three
    // independent reads: asked at once, they cost one round trip before
    // the upload starts instead of three.
    let mut warnings = Vec::new();
    let (head, layout, tagging) = tokio::join!(
        head.send(),
        source_layout(copier, entry, &source_key),
        source_tagging(
            copier,
            &source_key,
            entry.version_id.as_deref(),
            &mut warnings
        ),
    );
    let head = head.map_err(|e| {
        let failure = classify(&e);
        // HEAD has no body: an SSE-C object answers a bare 400.
        if failure.http_status == Some(400) {
            CopyError::SseC(S3Failure {
                message: "HEAD answered 400 Bad Request: the object is encrypted with a customer-provided key (SSE-C)".into(),
                ..failure
            })
        } else {
            fail(failure)
        }
    })?;
    if head.sse_customer_algorithm().is_some() {
        return Err(CopyError::SseC(S3Failure {
            code: "SSECObject".into(),
            http_status: None,
            message: "the object is encrypted with a customer-provided key (SSE-C)".into(),
            class: crate::base::error::RetryClass::NonRetryable,
        }));
    }
    let layout = match layout? {
        Some(layout) => layout,
        None => uniform_layout(
            entry.size,
            default_part_size(entry.size, copier.options.part_size),
        ),
    };
    let tagging = tagging?;
    let checksum = crate::backend::s3::head::stored_checksum(&head);
    let algorithm = match upload_checksum(checksum.as_ref(), layout.len()) {
        _ if copier.options.stream => streamed_checksum(checksum.as_ref()),
        (_, Some(ChecksumType::Composite)) if !part_checksums_kept => None,
        (algorithm, kind) => algorithm.zip(kind),
    };
    let (algorithm, kind) = algorithm.unzip();
    // Completion carries only a checksum the upload was created to keep.
    let checksum = checksum.filter(|c| {
        algorithm
            .as_ref()
            .is_some_and(|a| a.as_str() == c.algorithm.name())
    });

    let (sse, kms_key) = copier.encryption();
    let create = copier
        .destination_client
        .create_multipart_upload()
        .bucket(&copier.destination.bucket)
        .key(&destination_key)
        .set_metadata(with_extra(
            head.metadata(),
            copier.options.extra_metadata.as_ref(),
        ))
        .set_content_type(head.content_type().map(str::to_owned))
        .set_content_encoding(head.content_encoding().map(str::to_owned))
        .set_content_disposition(head.content_disposition().map(str::to_owned))
        .set_content_language(head.content_language().map(str::to_owned))
        .set_cache_control(head.cache_control().map(str::to_owned))
        .set_website_redirect_location(head.website_redirect_location().map(str::to_owned))
        .set_tagging(tagging)
        .set_storage_class(copier.storage_class(entry))
        .set_server_side_encryption(sse)
        .set_ssekms_key_id(kms_key)
        .set_expected_bucket_owner(copier.options.expected_dest_owner.clone())
        .set_request_payer(requester_pays(copier.options.request_payer))
        .set_checksum_algorithm(algorithm.clone())
        .set_checksum_type(kind);
    let created = create.send().await.map_err(|e| fail(classify(&e)))?;
    Ok(Upload {
        upload_id: created.upload_id().unwrap_or_default().to_owned(),
        layout,
        warnings,
        checksum,
        algorithm: algorithm.and_then(|a| ChecksumAlgorithm::from_name(a.as_str())),
    })
}

/// The source's user metadata plus what the copy adds, if anything.
pub(crate) fn with_extra(
    source: Option<&std::collections::HashMap<String, String>>,
    extra: Option<&std::collections::HashMap<String, String>>,
) -> Option<std::collections::HashMap<String, String>> {
    match extra {
        None => source.cloned(),
        Some(extra) => {
            let mut metadata = source.cloned().unwrap_or_default();
            metadata.extend(extra.clone());
            Some(metadata)
        }
    }
}

/// The checksum a streamed copy's upload is created with. Its parts are
/// bytes read here, each sent with its checksum in the body's trailer (the
/// SDK computes it as the bytes go), so the destination refuses a part
/// damaged on its way. The source's full-object CRC when it has one, whose
/// value the completion then carries, so the destination also refuses an
/// object whose bytes are not the source's; else CRC64NVME. None once the
/// destination refused checksums
/// ([`crate::backend::s3::checksum_refusal`]).
fn streamed_checksum(source: Option<&Checksum>) -> Option<(SdkChecksumAlgorithm, ChecksumType)> {
    if !sends_checksums() {
        return None;
    }
    let algorithm = source
        .filter(|c| c.full_object && c.algorithm.crc().is_some())
        .map_or(ChecksumAlgorithm::Crc64Nvme, |c| c.algorithm);
    Some((
        SdkChecksumAlgorithm::from(algorithm.name()),
        ChecksumType::FullObject,
    ))
}

/// The checksum algorithm and type to create a copy's upload with, so the
/// copy keeps its source's checksum: a full-object one of the same
/// algorithm, whatever the part layout; a composite one only where the
/// parts mirror the source's (the same count), else none, and S3 gives the
/// copy its default CRC64NVME. CRC64NVME is always full-object
/// ("Checking object integrity", "Using full object checksums for
/// multipart upload",
/// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html>).
pub fn upload_checksum(
    source: Option<&Checksum>,
    parts: usize,
) -> (Option<SdkChecksumAlgorithm>, Option<ChecksumType>) {
    let Some(source) = source else {
        return (None, None);
    };
    let algorithm = SdkChecksumAlgorithm::from(source.algorithm.name());
    if source.full_object {
        let full = matches!(
            source.algorithm,
            ChecksumAlgorithm::Crc64Nvme | ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32c
        );
        return if full {
            (Some(algorithm), Some(ChecksumType::FullObject))
        } else {
            (None, None) // SHA checksums of multipart objects are composite only
        };
    }
    let mirrored =
        source.value.rsplit_once('-').map(|(_, n)| n) == Some(parts.to_string().as_str());
    if mirrored {
        (Some(algorithm), Some(ChecksumType::Composite))
    } else {
        (None, None)
    }
}

/// Abort an upload after `err`; the error returned says if aborting failed too.
pub async fn abort_after(
    copier: &Copier,
    entry: &ObjectEntry,
    upload_id: &str,
    err: CopyError,
) -> CopyError {
    copier
        .upload_target(entry)
        .abort_after(upload_id, err)
        .await
}

/// The destination object of a multipart upload, whatever fills its parts
/// (UploadPartCopy, or bytes read here from a file or another endpoint):
/// starting, completing and aborting are the same for all of them.
#[derive(Debug, Clone)]
pub struct UploadTarget<'a> {
    pub client: &'a aws_sdk_s3::Client,
    pub bucket: &'a str,
    pub key: String,
    pub expected_owner: Option<String>,
    /// Every request of an upload, aborts and the search for stale uploads
    /// included, pays on a requester-pays bucket.
    pub request_payer: bool,
}

impl Copier {
    pub fn upload_target(&self, entry: &ObjectEntry) -> UploadTarget<'_> {
        UploadTarget {
            client: &self.destination_client,
            bucket: &self.destination.bucket,
            key: self.destination.key_for(&entry.key),
            expected_owner: self.options.expected_dest_owner.clone(),
            request_payer: self.options.request_payer,
        }
    }
}

impl UploadTarget<'_> {
    /// Abort an upload after `err`; the error returned says if aborting
    /// failed too.
    pub async fn abort_after(&self, upload_id: &str, err: CopyError) -> CopyError {
        if let Err(failure) = self.abort(upload_id).await {
            tracing::error!(key = %self.key, upload_id, error = %failure.message, "could not abort a multipart upload");
            if let CopyError::Failed(mut f) = err {
                f.message = format!(
                    "{}; and aborting upload {upload_id} failed: {}",
                    f.message, failure.message
                );
                return CopyError::Failed(f);
            }
        }
        err
    }

    async fn abort(&self, upload_id: &str) -> Result<(), S3Failure> {
        self.client
            .abort_multipart_upload()
            .bucket(self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .set_request_payer(requester_pays(self.request_payer))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }

    /// Complete an upload with all its parts. An answer lost after the
    /// server completed it (a broken connection, a timeout) makes the
    /// SDK's retry find the upload gone: the object is then there with
    /// exactly the ETag these parts give, which is checked.
    pub async fn complete(
        &self,
        upload_id: &str,
        mut parts: Vec<CompletedPart>,
        checksum: Option<&Checksum>,
    ) -> Result<Option<String>, CopyError> {
        parts.sort_by_key(|p| p.part_number());
        let expected = multipart_etag(&parts);
        // A full-object checksum goes with the completion: S3 computes the
        // object's own and refuses the completion if they differ, so a copy
        // whose bytes are not its source's never becomes the object.
        let full = checksum.filter(|c| c.full_object);
        let value = |algorithm| {
            full.filter(|c| c.algorithm == algorithm)
                .map(|c| c.value.clone())
        };
        let complete = self
            .client
            .complete_multipart_upload()
            .bucket(self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .set_expected_bucket_owner(self.expected_owner.clone())
            .set_request_payer(requester_pays(self.request_payer))
            .set_checksum_crc64_nvme(value(ChecksumAlgorithm::Crc64Nvme))
            .set_checksum_crc32(value(ChecksumAlgorithm::Crc32))
            .set_checksum_crc32_c(value(ChecksumAlgorithm::Crc32c))
            .set_checksum_type(full.map(|_| ChecksumType::FullObject));
        match complete.send().await {
            Ok(done) => Ok(done.e_tag().map(|e| e.trim_matches('"').to_owned())),
            Err(e) => {
                let failure = classify(&e);
                if failure.code == "NoSuchUpload"
                    && let Some(expected) = expected
                    && self.etag().await.as_deref() == Some(expected.as_str())
                {
                    tracing::info!(key = %self.key, upload_id, "the upload was completed by an attempt whose answer was lost");
                    return Ok(Some(expected));
                }
                Err(CopyError::from_failure(failure))
            }
        }
    }

    async fn etag(&self) -> Option<String> {
        self.client
            .head_object()
            .bucket(self.bucket)
            .key(&self.key)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .send()
            .await
            .ok()?
            .e_tag()
            .map(|e| e.trim_matches('"').to_owned())
    }
}

/// Abort every open upload to this object's destination key but `ours`:
/// those a killed run left, and one whose `CreateMultipartUpload` answer was
/// lost and retried. Best effort: a failure here costs storage, not data, so
/// it is logged and the copy goes on.
pub async fn abort_other_uploads(copier: &Copier, entry: &ObjectEntry, ours: &str) {
    copier.upload_target(entry).abort_others(ours).await
}

impl UploadTarget<'_> {
    /// [`abort_other_uploads`] for any upload target.
    pub async fn abort_others(&self, ours: &str) {
        let destination_key = &self.key;
        // No paginator in the SDK for this one: markers by hand.
        let (mut key_marker, mut upload_id_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(self.bucket)
                .prefix(destination_key)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_id_marker.take())
                .set_expected_bucket_owner(self.expected_owner.clone())
                .set_request_payer(requester_pays(self.request_payer))
                .send()
                .await;
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    let failure = classify(&e);
                    tracing::warn!(key = %destination_key, error = %failure.message, "could not list open uploads to clean up");
                    return;
                }
            };
            // The prefix also matches longer keys; only this key's uploads go.
            let others = page.uploads().iter().filter_map(|u| {
                (u.key() == Some(destination_key.as_str()) && u.upload_id() != Some(ours))
                    .then(|| u.upload_id())
                    .flatten()
            });
            for upload_id in others {
                match self.abort(upload_id).await {
                    Ok(_) => {
                        tracing::info!(key = %destination_key, upload_id, "aborted an upload an earlier attempt left open");
                    }
                    Err(failure) => {
                        tracing::warn!(key = %destination_key, upload_id, error = %failure.message, "could not abort an upload an earlier attempt left open");
                    }
                }
            }
            if page.is_truncated() != Some(true) {
                return;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            upload_id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && upload_id_marker.is_none() {
                return; // a server that says "more" but gives no marker
            }
        }
    }
}

/// Copy the parts `indexes` (0-based positions in the upload's layout;
/// part numbers are one more) of an upload, in parallel; returns them in
/// part order.
pub async fn copy_parts(
    copier: &Copier,
    entry: &ObjectEntry,
    upload: &Upload,
    indexes: std::ops::Range<usize>,
) -> Result<Vec<CompletedPart>, CopyError> {
    let (upload_id, algorithm) = (upload.upload_id.as_str(), upload.algorithm);
    let source_key = copier.source.key_for(&entry.key);
    let destination_key = copier.destination.key_for(&entry.key);
    let source = copy_source(
        &copier.source.bucket,
        &source_key,
        entry.version_id.as_deref(),
    );
    // The futures are built up front: a closure mapped over a stream inside
    // an async fn trips rustc's higher-ranked Send check once spawned.
    let requests: Vec<_> = upload.layout[indexes.clone()]
        .iter()
        .zip(indexes)
        .map(|((start, end), index)| {
            let part_number = index as i32 + 1;
            let streamed = copier.options.stream.then(|| {
                copier.stream_part(entry, (upload_id, part_number), (*start, *end), algorithm)
            });
            let request = copier
                .destination_client
                .upload_part_copy()
                .bucket(&copier.destination.bucket)
                .key(&destination_key)
                .upload_id(upload_id)
                .part_number(part_number)
                .copy_source(&source)
                .copy_source_range(format!("bytes={start}-{end}"))
                .copy_source_if_match(quoted(&entry.etag))
                .set_expected_bucket_owner(copier.options.expected_dest_owner.clone())
                .set_expected_source_bucket_owner(copier.options.expected_source_owner.clone())
                .set_request_payer(requester_pays(copier.options.request_payer));
            async move {
                if let Some(streamed) = streamed {
                    return streamed.await;
                }
                let output = request
                    .send()
                    .await
                    .map_err(|e| CopyError::from_failure(classify(&e)))?;
                let result = output.copy_part_result();
                let field = |get: fn(&aws_sdk_s3::types::CopyPartResult) -> Option<&str>| {
                    result.and_then(get).map(str::to_owned)
                };
                // A composite upload needs each part's checksum back at
                // completion; S3 computed them for the part copies.
                Ok::<_, CopyError>(
                    CompletedPart::builder()
                        .part_number(part_number)
                        .set_e_tag(field(|r| r.e_tag()))
                        .set_checksum_crc32(field(|r| r.checksum_crc32()))
                        .set_checksum_crc32_c(field(|r| r.checksum_crc32_c()))
                        .set_checksum_sha1(field(|r| r.checksum_sha1()))
                        .set_checksum_sha256(field(|r| r.checksum_sha256()))
                        .set_checksum_crc64_nvme(field(|r| r.checksum_crc64_nvme()))
                        .build(),
                )
            }
        })
        .collect();
    let mut parts: Vec<CompletedPart> = futures::stream::iter(requests)
        .buffer_unordered(copier.options.part_concurrency)
        .try_collect()
        .await?;
    parts.sort_by_key(|p| p.part_number());
    Ok(parts)
}

/// Complete an upload with all its parts.
pub async fn complete_upload(
    copier: &Copier,
    entry: &ObjectEntry,
    upload_id: &str,
    parts: Vec<CompletedPart>,
    checksum: Option<&Checksum>,
) -> Result<Option<String>, CopyError> {
    copier
        .upload_target(entry)
        .complete(upload_id, parts, checksum)
        .await
}

/// The ETag S3 gives an object completed from `parts`: the MD5 of the
/// parts' binary MD5s, then `-` and the part count. `None` when a part's
/// ETag is not an MD5 (some S3-compatible servers), so it cannot be known.
pub fn multipart_etag(parts: &[CompletedPart]) -> Option<String> {
    use md5::{Digest, Md5};
    let mut md5s = Md5::new();
    for part in parts {
        let hex = part.e_tag()?.trim_matches('"');
        if hex.len() != 32 {
            return None;
        }
        for i in (0..32).step_by(2) {
            md5s.update([u8::from_str_radix(&hex[i..i + 2], 16).ok()?]);
        }
    }
    let digest = md5s.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("{hex}-{}", parts.len()))
}

/// The source's own part layout, when it was uploaded in parts and the
/// server tells us (HEAD with `partNumber`). Most uploaders use equal parts
/// but the last, which one HEAD of part 1 reveals; otherwise every part is
/// asked for (HEADs cost a tenth of a copy request).
async fn source_layout(
    copier: &Copier,
    entry: &ObjectEntry,
    source_key: &str,
) -> Result<Option<Layout>, CopyError> {
    let EtagShape::Multipart(count) = etag_shape(&entry.etag) else {
        return Ok(None);
    };
    let count = u64::from(count);
    let part_size = |part: i32| {
        let head = copier
            .source_client
            .head_object()
            .bucket(&copier.source.bucket)
            .key(source_key)
            .set_version_id(entry.version_id.clone())
            .part_number(part)
            // No If-Match here: some servers (moto) apply it to the part's
            // ETag. Every UploadPartCopy is conditional on the object's ETag,
            // which is the check that matters.
            .set_expected_bucket_owner(copier.options.expected_source_owner.clone())
            .set_request_payer(requester_pays(copier.options.request_payer));
        async move {
            let out = head.send().await.map_err(|e| classify(&e))?;
            Ok::<_, S3Failure>((
                out.content_length().unwrap_or(0).max(0) as u64,
                out.parts_count(),
            ))
        }
    };
    let (first, reported) = match part_size(1).await {
        Ok(found) => found,
        // A passing fault is retried with the copy: falling back would
        // give the copy other parts, so another ETag than its source's,
        // which the next run cannot prove equal by ETag.
        Err(failure) if failure.class == crate::base::error::RetryClass::Retryable => {
            return Err(CopyError::from_failure(failure));
        }
        Err(failure) => {
            tracing::warn!(key = %entry.key, error = %failure.message, "cannot read the source's part layout; using the default part size");
            return Ok(None);
        }
    };
    if reported.map(|n| n as u64) != Some(count) || first == 0 {
        return Ok(None);
    }
    if (count - 1) * first < entry.size && entry.size <= count * first {
        return Ok(Some(uniform_layout(entry.size, first)));
    }
    let heads: Vec<_> = (1..=count as i32).map(part_size).collect();
    let sizes: Vec<(u64, Option<i32>)> = futures::stream::iter(heads)
        .buffered(16)
        .try_collect()
        .await
        .map_err(CopyError::from_failure)?;
    if sizes.iter().map(|(s, _)| s).sum::<u64>() != entry.size {
        return Ok(None);
    }
    let mut layout = Vec::with_capacity(sizes.len());
    let mut start = 0;
    for (size, _) in sizes {
        layout.push((start, start + size - 1));
        start += size;
    }
    Ok(Some(layout))
}

/// The source's tags as the `x-amz-tagging` query string. A server that does
/// not implement tagging (Garage answers NotImplemented) costs the tags, not
/// the object: the copy goes ahead with a warning in the report.
pub(crate) async fn source_tagging(
    copier: &Copier,
    source_key: &str,
    version: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, CopyError> {
    let request = copier
        .source_client
        .get_object_tagging()
        .bucket(&copier.source.bucket)
        .key(source_key)
        .set_version_id(version.map(str::to_owned))
        .set_expected_bucket_owner(copier.options.expected_source_owner.clone())
        .set_request_payer(requester_pays(copier.options.request_payer));
    match request.send().await {
        Ok(out) if out.tag_set().is_empty() => Ok(None),
        Ok(out) => Ok(Some(
            out.tag_set()
                .iter()
                .map(|t| {
                    format!(
                        "{}={}",
                        utf8_percent_encode(t.key(), NON_ALPHANUMERIC),
                        utf8_percent_encode(t.value(), NON_ALPHANUMERIC)
                    )
                })
                .collect::<Vec<_>>()
                .join("&"),
        )),
        Err(e) => {
            let failure = classify(&e);
            if failure.code == "NotImplemented" || failure.http_status == Some(501) {
                warnings.push(
                    "tags not copied: the source server does not implement object tagging".into(),
                );
                Ok(None)
            } else {
                Err(CopyError::from_failure(failure))
            }
        }
    }
}
