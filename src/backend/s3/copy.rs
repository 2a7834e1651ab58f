//! Stage 3: copy one object server-side.
//!
//! Objects up to the multipart threshold take one `CopyObject`; larger ones,
//! and sources that were uploaded in parts (unless `--no-mirror-parts`), go
//! through [`crate::backend::s3::multipart`], which keeps their `-N` ETag verifiable. Either way the copy is conditional on the
//! ETag the listing saw (`x-amz-copy-source-if-match`): if the source changed
//! in between, the key is listed again and copied once more as it is now, so
//! a sync never writes a version it did not diff. Between endpoints or
//! accounts the same steps stream the bytes instead ([`crate::backend::s3::stream`]).

use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};
use tokio_util::sync::CancellationToken;

use crate::backend::outcome::{Copied, CopyError};
use crate::backend::s3::checksum_refusal::{refuses_checksums, sends_checksums};
use crate::backend::s3::copier::{Copier, copy_source};
use crate::backend::s3::delete::delete_object;
use crate::backend::s3::head::head_object;
use crate::backend::s3::list_page::Listed;
use crate::base::error::{RetryClass, S3Failure, classify};
use crate::model::entry::{ObjectEntry, Side};
use crate::model::options::requester_pays;
use crate::model::s3_shape::{EtagShape, etag_shape, quoted};

impl Copier {
    /// Copy one listed object to the same relative key at the destination.
    pub async fn copy(
        &self,
        entry: &ObjectEntry,
        cancel: &CancellationToken,
    ) -> Result<Copied, CopyError> {
        match self.copy_once(entry, cancel).await {
            // A version never changes: listing the key again would find
            // its current version, which is not the one asked for.
            Err(CopyError::SourceChanged) if entry.version_id.is_some() => {
                Err(CopyError::Failed(S3Failure {
                    code: "PreconditionFailed".into(),
                    http_status: Some(412),
                    message: format!(
                        "version {} no longer has the ETag it was listed with",
                        entry.version_id.as_deref().unwrap_or_default()
                    ),
                    class: RetryClass::NonRetryable,
                }))
            }
            Err(CopyError::SourceChanged) => {
                tracing::info!(key = %entry.key, "source changed since it was listed; listing it again");
                match self.relist(&entry.key).await? {
                    Some(fresh) => self
                        .copy_once(&fresh, cancel)
                        .await
                        .map(|copied| Copied {
                            source_changed: true,
                            ..copied
                        })
                        .map_err(|e| match e {
                        CopyError::SourceChanged => CopyError::Failed(S3Failure {
                            code: "PreconditionFailed".into(),
                            http_status: Some(412),
                            message: "the source changed twice while it was being copied; the next run will copy it".into(),
                            class: RetryClass::Retryable,
                        }),
                        other => other,
                    }),
                    None => Err(CopyError::Vanished),
                }
            }
            other => other,
        }
    }

    async fn copy_once(
        &self,
        entry: &ObjectEntry,
        cancel: &CancellationToken,
    ) -> Result<Copied, CopyError> {
        if cancel.is_cancelled() {
            return Err(CopyError::Cancelled);
        }
        // `-1` counts too: a one-part upload's ETag differs from a plain one.
        let multipart_source = matches!(etag_shape(&entry.etag), EtagShape::Multipart(_));
        if self.options.stream {
            // A stream keeps the source's shape (and so its ETag): one PUT
            // for a one-PUT object, which S3 caps at 5 GiB.
            let stream = async || {
                if multipart_source || entry.size > crate::model::s3_shape::MAX_PART_SIZE {
                    crate::backend::s3::multipart::copy_multipart(self, entry, cancel).await
                } else {
                    self.stream_single(entry).await
                }
            };
            // A destination that refuses the checksums streams send gets
            // the copy once more, without them (the refusal is remembered).
            let checked = sends_checksums();
            match stream().await {
                Err(CopyError::Failed(failure)) if checked && refuses_checksums(&failure, true) => {
                    stream().await
                }
                other => other,
            }
        } else if entry.size > self.options.multipart_threshold
            || (self.options.mirror_parts && multipart_source)
        {
            crate::backend::s3::multipart::copy_multipart(self, entry, cancel).await
        } else {
            self.copy_single(entry).await
        }
    }

    async fn copy_single(&self, entry: &ObjectEntry) -> Result<Copied, CopyError> {
        let (sse, kms_key) = self.encryption();
        // CopyObject copies metadata, content headers and tags by default
        // (MetadataDirective and TaggingDirective COPY), but *not* the storage
        // class: without one it writes STANDARD, silently un-archiving
        // IA/Glacier data. So the source's class is passed explicitly.
        let request = self
            .destination_client
            .copy_object()
            .bucket(&self.destination.bucket)
            .key(self.destination.key_for(&entry.key))
            .copy_source(copy_source(
                &self.source.bucket,
                &self.source.key_for(&entry.key),
                entry.version_id.as_deref(),
            ))
            .copy_source_if_match(quoted(&entry.etag))
            .set_storage_class(self.storage_class(entry))
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .set_expected_bucket_owner(self.options.expected_dest_owner.clone())
            .set_expected_source_bucket_owner(self.options.expected_source_owner.clone())
            .set_request_payer(requester_pays(self.options.request_payer));
        let request = match &self.options.extra_metadata {
            None => request,
            Some(extra) => self.replacing_metadata(request, entry, extra).await?,
        };
        // No checksum algorithm is named, so S3 gives the copy the
        // source's ("CopyObject", checksums:
        // <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html>),
        // and the client computes none of its own (`WhenRequired`).
        let copied = request
            .send()
            .await
            .map_err(|e| CopyError::from_failure(classify(&e)))?;
        let etag = copied
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .map(|e| e.trim_matches('"').to_owned());
        Ok(Copied {
            bytes: entry.size,
            multipart: false,
            warnings: Vec::new(),
            source_changed: false,
            etags: etag.map(|etag| (entry.etag.clone(), etag)),
        })
    }

    /// `request` with the source's user metadata and content headers
    /// replaced by themselves plus `extra`: metadata cannot be added to a
    /// copy, only replaced whole (`x-amz-metadata-directive: REPLACE`),
    /// so the source's are read first. Tags are still copied
    /// (`x-amz-tagging-directive` stays COPY).
    async fn replacing_metadata(
        &self,
        request: aws_sdk_s3::operation::copy_object::builders::CopyObjectFluentBuilder,
        entry: &ObjectEntry,
        extra: &std::collections::HashMap<String, String>,
    ) -> Result<aws_sdk_s3::operation::copy_object::builders::CopyObjectFluentBuilder, CopyError>
    {
        let head = self
            .source_client
            .head_object()
            .bucket(&self.source.bucket)
            .key(self.source.key_for(&entry.key))
            .set_version_id(entry.version_id.clone())
            .if_match(quoted(&entry.etag))
            .set_expected_bucket_owner(self.options.expected_source_owner.clone())
            .set_request_payer(requester_pays(self.options.request_payer))
            .send()
            .await
            .map_err(|e| CopyError::from_failure(classify(&e)))?;
        let mut metadata = head.metadata().cloned().unwrap_or_default();
        metadata.extend(extra.clone());
        Ok(request
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .set_metadata(Some(metadata))
            .set_content_type(head.content_type().map(str::to_owned))
            .set_content_encoding(head.content_encoding().map(str::to_owned))
            .set_content_disposition(head.content_disposition().map(str::to_owned))
            .set_content_language(head.content_language().map(str::to_owned))
            .set_cache_control(head.cache_control().map(str::to_owned))
            .set_website_redirect_location(head.website_redirect_location().map(str::to_owned)))
    }

    /// The storage class for the copy: the override, else the source's own.
    pub fn storage_class(&self, entry: &ObjectEntry) -> Option<StorageClass> {
        self.options.storage_class.clone().or_else(|| {
            entry
                .storage_class
                .as_deref()
                .filter(|class| *class != "STANDARD")
                .map(StorageClass::from)
        })
    }

    pub fn encryption(&self) -> (Option<ServerSideEncryption>, Option<String>) {
        self.options.encryption()
    }

    /// List one key again (after a 412), exactly: a prefix listing returns
    /// the key itself first if it exists, since it sorts before its
    /// extensions.
    async fn relist(&self, relative: &str) -> Result<Option<ObjectEntry>, CopyError> {
        let key = self.source.key_for(relative);
        let request = self
            .source_client
            .list_objects_v2()
            .bucket(&self.source.bucket)
            .prefix(&key)
            .max_keys(1)
            .encoding_type(aws_sdk_s3::types::EncodingType::Url)
            .set_expected_bucket_owner(self.options.expected_source_owner.clone())
            .set_request_payer(requester_pays(self.options.request_payer));
        let page = request
            .send()
            .await
            .map_err(|e| CopyError::from_failure(classify(&e)))?;
        let encoded = page.encoding_type() == Some(&aws_sdk_s3::types::EncodingType::Url);
        let Some(object) = page.contents().first() else {
            return Ok(None);
        };
        let listed = crate::backend::s3::listing::listed_key(object, encoded).map_err(|e| {
            CopyError::Failed(S3Failure {
                code: "InvalidKey".into(),
                http_status: None,
                message: e.to_string(),
                class: RetryClass::NonRetryable,
            })
        })?;
        Ok((listed == key).then(|| Listed::from_sdk(object).entry(relative)))
    }

    /// HEAD one side's object: `None` when it does not exist.
    pub async fn head(&self, side: Side, relative: &str) -> Result<Option<ObjectEntry>, S3Failure> {
        let (client, location) = match side {
            Side::Source => (&self.source_client, &self.source),
            Side::Destination => (&self.destination_client, &self.destination),
        };
        head_object(client, location, &self.options, side, relative).await
    }

    /// Delete one destination object (for `--delete`).
    pub async fn delete(&self, entry: &ObjectEntry) -> Result<(), S3Failure> {
        delete_object(
            &self.destination_client,
            &self.destination,
            &self.options,
            &entry.key,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_escapes_everything_but_slashes() {
        assert_eq!(
            copy_source("b", "a b+c%41/ü", None),
            "b/a%20b%2Bc%2541/%C3%BC"
        );
        assert_eq!(copy_source("b", "/lead//x ", None), "b//lead//x%20");
        assert_eq!(
            copy_source("b", "k?", Some("3/L4kqtJl+w=")),
            "b/k%3F?versionId=3/L4kqtJl%2Bw%3D"
        );
    }

    fn failure(code: &str, status: u16, message: &str) -> S3Failure {
        S3Failure {
            code: code.into(),
            http_status: Some(status),
            message: message.into(),
            class: RetryClass::NonRetryable,
        }
    }

    #[test]
    fn failures_are_sorted_by_what_they_mean() {
        assert!(matches!(
            CopyError::from_failure(failure("InvalidObjectState", 403, "archived")),
            CopyError::Archived(_)
        ));
        assert!(matches!(
            CopyError::from_failure(failure("ObjectNotInActiveTierError", 403, "glacier")),
            CopyError::Archived(_)
        ));
        assert_eq!(
            CopyError::from_failure(failure("NoSuchVersion", 404, "")),
            CopyError::Vanished
        );
        assert_eq!(
            CopyError::from_failure(failure("PreconditionFailed", 412, "")),
            CopyError::SourceChanged
        );
        assert_eq!(
            CopyError::from_failure(failure("NoSuchKey", 404, "")),
            CopyError::Vanished
        );
        assert!(matches!(
            CopyError::from_failure(failure(
                "InvalidRequest",
                400,
                "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object."
            )),
            CopyError::SseC(_)
        ));
        assert!(matches!(
            CopyError::from_failure(failure(
                "InvalidRequest",
                400,
                "Requests specifying Server Side Encryption with AWS KMS managed keys require AWS Signature Version 4."
            )),
            CopyError::Failed(_)
        ));
        assert!(matches!(
            CopyError::from_failure(failure("AccessDenied", 403, "no")),
            CopyError::Failed(_)
        ));
    }
}
