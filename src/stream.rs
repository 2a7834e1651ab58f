//! Copies that stream through this machine, for two sides a server-side
//! copy cannot bridge: two S3-compatible providers, two accounts with no
//! shared credentials, or a region pair where the user asks for it
//! (`--stream`). GET then PUT for an object up to the threshold; above it,
//! the multipart copy of [`crate::multipart`] with each part a ranged GET
//! then UploadPart instead of an UploadPartCopy, so part layouts, tags,
//! clean-up of left-over uploads and lost completions are handled once.
//!
//! Each object or part is held in memory whole while it is sent: a
//! retried PUT needs its bytes again, and a GET's body cannot be read
//! twice. A [`ByteBudget`] shared by the run's workers bounds what is held
//! at once to concurrency x part size, never the objects' sizes.

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedPart, RequestPayer};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::copy::{Copied, Copier, CopyError, quoted};
use crate::error::{RetryClass, S3Failure, classify};
use crate::listing::ObjectEntry;

const MIB: u64 = 1024 * 1024;

/// Bytes held in memory by streamed copies, in MiB permits.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    permits: Arc<Semaphore>,
    total_mib: u32,
}

impl ByteBudget {
    /// Room for `objects` buffers of `part_size` bytes.
    pub fn new(objects: usize, part_size: u64) -> Self {
        let total = (objects as u64 * part_size.div_ceil(MIB)).clamp(1, u32::MAX as u64 / 2);
        ByteBudget {
            permits: Arc::new(Semaphore::new(total as usize)),
            total_mib: total as u32,
        }
    }

    /// Wait until `bytes` more may be held. A buffer larger than the whole
    /// budget (a source part of a huge layout) waits for all of it.
    pub async fn hold(&self, bytes: u64) -> OwnedSemaphorePermit {
        let mib = (bytes.div_ceil(MIB) as u32).clamp(1, self.total_mib);
        self.permits
            .clone()
            .acquire_many_owned(mib)
            .await
            .expect("the budget's semaphore is never closed")
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_mib as u64 * MIB
    }
}

/// A GET body read to its end; a body that broke off is a retryable
/// failure, which the worker reports or the copier Lambda hands back.
async fn read_body(body: ByteStream, expected: u64, key: &str) -> Result<Bytes, CopyError> {
    let bytes = body
        .collect()
        .await
        .map_err(|e| {
            CopyError::Failed(S3Failure {
                code: "IncompleteBody".into(),
                http_status: None,
                message: format!("reading {key} from the source: {e}"),
                class: RetryClass::Retryable,
            })
        })?
        .into_bytes();
    if bytes.len() as u64 != expected {
        return Err(CopyError::Failed(S3Failure {
            code: "IncompleteBody".into(),
            http_status: None,
            message: format!(
                "the source sent {} of {expected} bytes of {key}",
                bytes.len()
            ),
            class: RetryClass::Retryable,
        }));
    }
    Ok(bytes)
}

impl Copier {
    fn budget(&self) -> Option<&ByteBudget> {
        self.budget.as_ref()
    }

    /// GET a byte range (inclusive) of the source as listed, into memory.
    async fn get_bytes(
        &self,
        entry: &ObjectEntry,
        range: Option<(u64, u64)>,
    ) -> Result<(Bytes, aws_sdk_s3::operation::get_object::GetObjectOutput), CopyError> {
        let key = self.source.key_for(&entry.key);
        let mut request = self
            .source_client
            .get_object()
            .bucket(&self.source.bucket)
            .key(&key)
            .if_match(quoted(&entry.etag))
            .set_range(range.map(|(start, end)| format!("bytes={start}-{end}")))
            .set_expected_bucket_owner(self.options.expected_source_owner.clone());
        if self.options.request_payer {
            request = request.request_payer(RequestPayer::Requester);
        }
        let mut output = request
            .send()
            .await
            .map_err(|e| CopyError::from_failure(classify(&e)))?;
        let expected = range.map_or(entry.size, |(start, end)| end - start + 1);
        let body = std::mem::replace(
            &mut output.body,
            ByteStream::new(aws_smithy_types::body::SdkBody::empty()),
        );
        Ok((read_body(body, expected, &key).await?, output))
    }

    /// Stream one object up to the threshold: GET, then PUT with its
    /// content headers, metadata and tags.
    pub(crate) async fn stream_single(&self, entry: &ObjectEntry) -> Result<Copied, CopyError> {
        let _held = match self.budget() {
            Some(budget) => Some(budget.hold(entry.size).await),
            None => None,
        };
        let (bytes, head) = self.get_bytes(entry, None).await?;
        if head.sse_customer_algorithm().is_some() {
            return Err(CopyError::SseC(S3Failure {
                code: "SSECObject".into(),
                http_status: None,
                message: "the object is encrypted with a customer-provided key (SSE-C)".into(),
                class: RetryClass::NonRetryable,
            }));
        }
        let mut warnings = Vec::new();
        let tagging = if head.tag_count().unwrap_or(0) > 0 {
            let key = self.source.key_for(&entry.key);
            crate::multipart::source_tagging(self, &key, &mut warnings).await?
        } else {
            None
        };
        let (sse, kms_key) = self.encryption();
        let mut request = self
            .destination_client
            .put_object()
            .bucket(&self.destination.bucket)
            .key(self.destination.key_for(&entry.key))
            .content_length(bytes.len() as i64)
            .body(ByteStream::from(bytes))
            .set_metadata(head.metadata().cloned())
            .set_content_type(head.content_type().map(str::to_owned))
            .set_content_encoding(head.content_encoding().map(str::to_owned))
            .set_content_disposition(head.content_disposition().map(str::to_owned))
            .set_content_language(head.content_language().map(str::to_owned))
            .set_cache_control(head.cache_control().map(str::to_owned))
            .set_website_redirect_location(head.website_redirect_location().map(str::to_owned))
            .set_tagging(tagging)
            .set_storage_class(self.storage_class(entry))
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .set_expected_bucket_owner(self.options.expected_dest_owner.clone());
        if self.options.request_payer {
            request = request.request_payer(RequestPayer::Requester);
        }
        request
            .send()
            .await
            .map_err(|e| CopyError::Failed(classify(&e)))?;
        Ok(Copied {
            bytes: entry.size,
            multipart: false,
            warnings,
            source_changed: false,
        })
    }

    /// Stream one part of a multipart copy: a ranged GET of the source as
    /// listed, then UploadPart.
    pub(crate) async fn stream_part(
        &self,
        entry: &ObjectEntry,
        upload_id: &str,
        part_number: i32,
        (start, end): (u64, u64),
    ) -> Result<CompletedPart, CopyError> {
        let _held = match self.budget() {
            Some(budget) => Some(budget.hold(end - start + 1).await),
            None => None,
        };
        let (bytes, _) = self.get_bytes(entry, Some((start, end))).await?;
        let mut request = self
            .destination_client
            .upload_part()
            .bucket(&self.destination.bucket)
            .key(self.destination.key_for(&entry.key))
            .upload_id(upload_id)
            .part_number(part_number)
            .content_length(bytes.len() as i64)
            .body(ByteStream::from(bytes))
            .set_expected_bucket_owner(self.options.expected_dest_owner.clone());
        if self.options.request_payer {
            request = request.request_payer(RequestPayer::Requester);
        }
        let output = request
            .send()
            .await
            .map_err(|e| CopyError::from_failure(classify(&e)))?;
        Ok(CompletedPart::builder()
            .part_number(part_number)
            .set_e_tag(output.e_tag().map(str::to_owned))
            .build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_budget_bounds_bytes_held_at_once() {
        let budget = ByteBudget::new(2, 8 * MIB);
        assert_eq!(budget.total_bytes(), 16 * MIB);
        let a = budget.hold(8 * MIB).await;
        let _b = budget.hold(5 * MIB).await;
        // 13 of 16 MiB held: another 8 MiB must wait for one to go.
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), budget.hold(8 * MIB));
        assert!(waiting.await.is_err());
        drop(a);
        let _c = budget.hold(8 * MIB).await;
        // Larger than the whole budget: waits for all of it, never forever.
        drop(_c);
        drop(_b);
        let _huge = budget.hold(100 * MIB).await;
    }
}
