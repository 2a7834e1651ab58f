//! Stage 3: copy one object server-side.
//!
//! Objects up to the multipart threshold take one `CopyObject`; larger ones,
//! and sources that were uploaded in parts (unless `--no-mirror-parts`), go
//! through [`crate::backend::s3::multipart`], which keeps their `-N` ETag verifiable. Either way the copy is conditional on the
//! ETag the listing saw (`x-amz-copy-source-if-match`): if the source changed
//! in between, the key is listed again and copied once more as it is now, so
//! a sync never writes a version it did not diff. Between endpoints or
//! accounts the same steps stream the bytes instead ([`crate::backend::s3::stream`]).

use aws_sdk_s3::Client;
use aws_sdk_s3::types::{RequestPayer, ServerSideEncryption, StorageClass};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio_util::sync::CancellationToken;

use crate::base::error::{RetryClass, S3Failure, classify};
use crate::model::entry::ObjectEntry;
use crate::model::entry::Side;
use crate::model::location::S3Location;
use crate::model::options::CopyOptions;
use crate::model::s3_shape::quoted;
use crate::model::s3_shape::{EtagShape, etag_shape};

/// Everything a copy needs: both sides and how to write.
#[derive(Debug, Clone)]
pub struct Copier {
    pub source_client: Client,
    pub destination_client: Client,
    pub source: S3Location,
    pub destination: S3Location,
    pub options: CopyOptions,
}

impl Copier {
    /// This copier with both clients reporting to `counter`.
    pub fn counted(&self, counter: &crate::base::metrics::RequestCounter) -> Copier {
        Copier {
            source_client: crate::base::client::with_counter(&self.source_client, counter),
            destination_client: crate::base::client::with_counter(
                &self.destination_client,
                counter,
            ),
            ..self.clone()
        }
    }
}

/// A finished copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub bytes: u64,
    pub multipart: bool,
    /// Things that worked only in part (tags the server cannot copy).
    pub warnings: Vec<String>,
    /// The source changed after it was listed; this is the version found
    /// when it was listed again, not the one first listed.
    pub source_changed: bool,
}

/// Why an object was not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyError {
    Failed(S3Failure),
    /// Glacier Flexible Retrieval or Deep Archive, not restored: retrying is
    /// pointless until someone restores it.
    Archived(S3Failure),
    /// Encrypted with a customer-provided key (SSE-C): S3 cannot read it
    /// without that key, which this tool never has.
    SseC(S3Failure),
    /// The source was deleted after it was listed.
    Vanished,
    /// The source changed after it was listed (412 on the listed ETag).
    SourceChanged,
    Cancelled,
}

impl CopyError {
    pub fn retry_class(&self) -> RetryClass {
        match self {
            CopyError::Failed(f) => f.class,
            CopyError::Cancelled | CopyError::SourceChanged => RetryClass::Retryable,
            _ => RetryClass::NonRetryable,
        }
    }

    /// Sort an S3 failure on a source object into what it means for a sync.
    pub fn from_failure(failure: S3Failure) -> Self {
        let message = failure.message.to_ascii_lowercase();
        match (failure.code.as_str(), failure.http_status) {
            ("InvalidObjectState", _) => CopyError::Archived(failure),
            ("PreconditionFailed", _) | (_, Some(412)) => CopyError::SourceChanged,
            ("NoSuchKey", _) => CopyError::Vanished,
            // S3's own words for a customer-key object; other InvalidRequest
            // errors (a KMS request without SigV4, say) are real failures.
            ("InvalidRequest" | "BadRequest", _)
                if message.contains("stored using a form of server side encryption")
                    && message.contains("correct parameters must be provided") =>
            {
                CopyError::SseC(failure)
            }
            _ => CopyError::Failed(failure),
        }
    }
}

/// Characters kept literal in `x-amz-copy-source`: the RFC 3986 unreserved
/// set and `/`. Everything else, `+` and `%` included, is escaped so that a
/// key like `a+b%41` reaches S3 as itself.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

pub fn copy_source(bucket: &str, key: &str) -> String {
    format!("{bucket}/{}", utf8_percent_encode(key, COPY_SOURCE))
}

impl Copier {
    /// Copy one listed object to the same relative key at the destination.
    pub async fn copy(
        &self,
        entry: &ObjectEntry,
        cancel: &CancellationToken,
    ) -> Result<Copied, CopyError> {
        match self.copy_once(entry, cancel).await {
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
            if multipart_source || entry.size > crate::model::s3_shape::MAX_PART_SIZE {
                crate::backend::s3::multipart::copy_multipart(self, entry, cancel).await
            } else {
                self.stream_single(entry).await
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
        let mut request = self
            .destination_client
            .copy_object()
            .bucket(&self.destination.bucket)
            .key(self.destination.key_for(&entry.key))
            .copy_source(copy_source(
                &self.source.bucket,
                &self.source.key_for(&entry.key),
            ))
            .copy_source_if_match(quoted(&entry.etag))
            .set_storage_class(self.storage_class(entry))
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .set_expected_bucket_owner(self.options.expected_dest_owner.clone())
            .set_expected_source_bucket_owner(self.options.expected_source_owner.clone());
        if self.options.request_payer {
            request = request.request_payer(RequestPayer::Requester);
        }
        request
            .send()
            .await
            .map_err(|e| CopyError::from_failure(classify(&e)))?;
        Ok(Copied {
            bytes: entry.size,
            multipart: false,
            warnings: Vec::new(),
            source_changed: false,
        })
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
        let mut request = self
            .source_client
            .list_objects_v2()
            .bucket(&self.source.bucket)
            .prefix(&key)
            .max_keys(1)
            .encoding_type(aws_sdk_s3::types::EncodingType::Url)
            .set_expected_bucket_owner(self.options.expected_source_owner.clone());
        if self.options.request_payer {
            request = request.request_payer(RequestPayer::Requester);
        }
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
        Ok((listed == key).then(|| ObjectEntry::from_listed(relative, object)))
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

/// HEAD the object at `relative` of `location`, on `side` of a run with
/// `options`: `None` when it does not exist.
pub async fn head_object(
    client: &Client,
    location: &S3Location,
    options: &CopyOptions,
    side: Side,
    relative: &str,
) -> Result<Option<ObjectEntry>, S3Failure> {
    let owner = match side {
        Side::Source => &options.expected_source_owner,
        Side::Destination => &options.expected_dest_owner,
    };
    let mut request = client
        .head_object()
        .bucket(&location.bucket)
        .key(location.key_for(relative))
        .set_expected_bucket_owner(owner.clone());
    if options.request_payer {
        request = request.request_payer(RequestPayer::Requester);
    }
    match request.send().await {
        Ok(head) => Ok(Some(ObjectEntry {
            key: relative.to_owned(),
            size: head.content_length().unwrap_or(0).max(0) as u64,
            etag: head
                .e_tag()
                .unwrap_or_default()
                .trim_matches('"')
                .to_owned(),
            last_modified_ms: head
                .last_modified()
                .and_then(|t| t.to_millis().ok())
                .unwrap_or(0),
            storage_class: head.storage_class().map(|c| c.as_str().to_owned()),
        })),
        Err(err) => {
            let failure = classify(&err);
            match failure.http_status {
                Some(404) => Ok(None),
                Some(403) => absent_behind_403(client, location, options, owner, relative)
                    .await
                    .and_then(|absent| if absent { Ok(None) } else { Err(failure) }),
                _ => Err(failure),
            }
        }
    }
}

/// Whether a key that HEAD answered 403 for is absent.
///
/// S3 answers a HEAD or GET of a missing key with 404 only when the caller
/// has `s3:ListBucket` on the bucket, and with 403 otherwise
/// (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html>,
/// "Permissions"). The stack grants `s3:ListBucket` only under an
/// `s3:prefix` condition, a key that HEAD and GET requests do not carry, so
/// there a missing key is a 403 too. A listing of the key as a prefix is
/// allowed by that condition and tells the two apart: the key, if it
/// exists, is the first listed. So a delete's source check, and the
/// replicator's, never read "denied" as "absent", nor "absent" as
/// "denied". Only a 403 costs this LIST.
async fn absent_behind_403(
    client: &Client,
    location: &S3Location,
    options: &CopyOptions,
    owner: &Option<String>,
    relative: &str,
) -> Result<bool, S3Failure> {
    let key = location.key_for(relative);
    let mut request = client
        .list_objects_v2()
        .bucket(&location.bucket)
        .prefix(&key)
        .max_keys(1)
        .set_expected_bucket_owner(owner.clone());
    if options.request_payer {
        request = request.request_payer(RequestPayer::Requester);
    }
    let page = request.send().await.map_err(|e| classify(&e))?;
    Ok(page.contents().first().and_then(|o| o.key()) != Some(key.as_str()))
}

/// S3's limit of keys in one DeleteObjects request.
pub const MAX_DELETE_KEYS: usize = 1_000;

/// What became of one destination object a run set out to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Gone: deleted now, or already gone (a redelivered batch whose first
    /// delivery deleted it).
    Deleted,
    /// Kept: the source holds the key again (put back after the listing,
    /// or before a batch redriven from the dead-letter queue ran).
    SourceReappeared,
    /// Kept: the destination object is no longer the one listed (the
    /// conditional delete answered 412, or its ETag differs).
    DestinationChanged,
    /// Kept, for now: why, and whether trying again could help.
    Failed(S3Failure),
}

impl DeleteOutcome {
    /// A delete's first condition, from a look at the source key (a HEAD,
    /// or a stat of a file): absent, `Ok`. Anything but a clear "absent"
    /// keeps the object: a present key is [`DeleteOutcome::SourceReappeared`];
    /// any error fails the delete *retryably*, since absence was not
    /// shown (a 403, say, is what S3 answers for a missing key to a caller
    /// without s3:ListBucket, but also for a present one it may not read).
    pub fn unless_source_absent(
        source: Result<Option<ObjectEntry>, S3Failure>,
    ) -> Result<(), DeleteOutcome> {
        match source {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(DeleteOutcome::SourceReappeared),
            Err(failure) => Err(DeleteOutcome::Failed(S3Failure {
                message: format!(
                    "not deleted: could not check that the source is still absent: {}",
                    failure.message
                ),
                class: RetryClass::Retryable,
                ..failure
            })),
        }
    }
}

/// Delete listed destination objects of `location`, [`MAX_DELETE_KEYS`] to
/// a DeleteObjects request, each only if it still has the ETag it was
/// listed with. Returns one outcome per entry, in order.
///
/// The condition is the object's `ETag` element in the request body: S3
/// evaluates it per object, deletes the ones that match and reports the
/// others under `<Error>` (`PreconditionFailed`), in a `200 OK`. See "How
/// to perform conditional deletes",
/// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-deletes.html>
/// (the same page documents `If-Match` on DeleteObject). So a 200 proves
/// nothing by itself: an entry counts as deleted only when the response
/// names it under `<Deleted>` (verbose mode, not quiet), and one it names
/// nowhere fails, retryably.
///
/// An entry without an ETag (a copier message written before delete tasks
/// carried one) is deleted without that condition; its source was checked
/// like any other's.
///
/// S3-compatible servers that predate conditional deletes may refuse the
/// ETag (`NotImplemented`, for the request or per object). For those
/// objects the condition is checked by a HEAD first and the delete sent
/// without it: a write landing between the two is then not protected,
/// which is the best such a server allows. A server that silently ignores
/// the element cannot be told apart here.
pub async fn delete_objects(
    client: &Client,
    location: &S3Location,
    options: &CopyOptions,
    entries: &[ObjectEntry],
    concurrency: usize,
) -> Vec<DeleteOutcome> {
    let mut outcomes = Vec::with_capacity(entries.len());
    for chunk in entries.chunks(MAX_DELETE_KEYS) {
        let mut answered = match delete_chunk(client, location, options, chunk, true).await {
            Ok(answered) => answered,
            Err(failure) if not_implemented(&failure.code, failure.http_status) => {
                vec![DeleteOutcome::Failed(failure); chunk.len()]
            }
            Err(failure) => {
                outcomes.extend(vec![DeleteOutcome::Failed(failure); chunk.len()]);
                continue;
            }
        };
        let refused: Vec<usize> = (0..chunk.len())
            .filter(|&i| match &answered[i] {
                DeleteOutcome::Failed(f) => not_implemented(&f.code, f.http_status),
                _ => false,
            })
            .collect();
        if !refused.is_empty() {
            let again: Vec<ObjectEntry> = refused.iter().map(|&i| chunk[i].clone()).collect();
            let fallback = delete_after_head(client, location, options, &again, concurrency).await;
            for (i, outcome) in refused.into_iter().zip(fallback) {
                answered[i] = outcome;
            }
        }
        outcomes.extend(answered);
    }
    outcomes
}

/// A server that does not do conditional deletes.
fn not_implemented(code: &str, status: Option<u16>) -> bool {
    code == "NotImplemented" || status == Some(501)
}

/// One DeleteObjects request for at most [`MAX_DELETE_KEYS`] entries,
/// conditional on their ETags when `conditional`. `Err`: the request as a
/// whole failed (nothing is known to be deleted).
async fn delete_chunk(
    client: &Client,
    location: &S3Location,
    options: &CopyOptions,
    chunk: &[ObjectEntry],
    conditional: bool,
) -> Result<Vec<DeleteOutcome>, S3Failure> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let identifiers = chunk
        .iter()
        .map(|entry| {
            ObjectIdentifier::builder()
                .key(location.key_for(&entry.key))
                .set_e_tag((conditional && !entry.etag.is_empty()).then(|| quoted(&entry.etag)))
                .build()
                .expect("an object identifier has its key")
        })
        .collect();
    let delete = Delete::builder()
        .set_objects(Some(identifiers))
        // Verbose: every object deleted is named, so none is assumed.
        .quiet(false)
        .build()
        .expect("a delete has its objects");
    let mut request = client
        .delete_objects()
        .bucket(&location.bucket)
        .delete(delete)
        .set_expected_bucket_owner(options.expected_dest_owner.clone());
    if options.request_payer {
        request = request.request_payer(RequestPayer::Requester);
    }
    let response = request.send().await.map_err(|e| classify(&e))?;
    let mut by_key: std::collections::HashMap<&str, DeleteOutcome> =
        std::collections::HashMap::new();
    for deleted in response.deleted() {
        if let Some(key) = deleted.key() {
            by_key.insert(key, DeleteOutcome::Deleted);
        }
    }
    for error in response.errors() {
        let Some(key) = error.key() else { continue };
        let code = error.code().unwrap_or("UnknownError");
        let outcome = match code {
            "PreconditionFailed" => DeleteOutcome::DestinationChanged,
            // A conditional delete of a key that is gone: what the delete
            // was for already holds (an earlier delivery deleted it).
            "NoSuchKey" => DeleteOutcome::Deleted,
            _ => DeleteOutcome::Failed(S3Failure {
                code: code.to_owned(),
                http_status: None,
                message: format!(
                    "DeleteObjects did not delete it: {}",
                    error.message().unwrap_or("no message")
                ),
                class: if crate::base::error::RETRYABLE_CODES.contains(&code) {
                    RetryClass::Retryable
                } else {
                    RetryClass::NonRetryable
                },
            }),
        };
        by_key.insert(key, outcome);
    }
    Ok(chunk
        .iter()
        .map(|entry| {
            by_key
                .get(location.key_for(&entry.key).as_str())
                .cloned()
                .unwrap_or_else(|| {
                    DeleteOutcome::Failed(S3Failure {
                        code: "DeleteNotConfirmed".into(),
                        http_status: Some(200),
                        message: "DeleteObjects answered without naming this key as deleted or failed; it is not counted as deleted".into(),
                        class: RetryClass::Retryable,
                    })
                })
        })
        .collect())
}

/// The fallback for servers without conditional deletes: HEAD each
/// destination object, `concurrency` at once, then delete the ones that
/// still have their listed ETag, unconditionally, in one request.
async fn delete_after_head(
    client: &Client,
    location: &S3Location,
    options: &CopyOptions,
    entries: &[ObjectEntry],
    concurrency: usize,
) -> Vec<DeleteOutcome> {
    use futures::StreamExt;
    // Owned keys, as in `Mover::delete_listed`.
    let keys: Vec<String> = entries.iter().map(|entry| entry.key.clone()).collect();
    let heads: Vec<Result<Option<ObjectEntry>, S3Failure>> =
        futures::stream::iter(keys)
            .map(|key| async move {
                head_object(client, location, options, Side::Destination, &key).await
            })
            .buffered(concurrency.max(1))
            .collect()
            .await;
    let mut outcomes: Vec<Option<DeleteOutcome>> = heads
        .into_iter()
        .zip(entries)
        .map(|(head, listed)| match head {
            Ok(None) => Some(DeleteOutcome::Deleted),
            Ok(Some(now)) if now.etag != listed.etag && !listed.etag.is_empty() => {
                Some(DeleteOutcome::DestinationChanged)
            }
            Ok(Some(_)) => None,
            Err(failure) => Some(DeleteOutcome::Failed(failure)),
        })
        .collect();
    let unchanged: Vec<ObjectEntry> = entries
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| outcome.is_none())
        .map(|(entry, _)| entry.clone())
        .collect();
    let mut deleted = if unchanged.is_empty() {
        Vec::new()
    } else {
        match delete_chunk(client, location, options, &unchanged, false).await {
            Ok(deleted) => deleted,
            Err(failure) => vec![DeleteOutcome::Failed(failure); unchanged.len()],
        }
    }
    .into_iter();
    for outcome in outcomes.iter_mut().filter(|o| o.is_none()) {
        *outcome = deleted.next();
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every entry has an outcome"))
        .collect()
}

/// Delete the destination object at `relative` of `location`.
pub async fn delete_object(
    client: &Client,
    location: &S3Location,
    options: &CopyOptions,
    relative: &str,
) -> Result<(), S3Failure> {
    let mut request = client
        .delete_object()
        .bucket(&location.bucket)
        .key(location.key_for(relative))
        .set_expected_bucket_owner(options.expected_dest_owner.clone());
    if options.request_payer {
        request = request.request_payer(RequestPayer::Requester);
    }
    request.send().await.map(|_| ()).map_err(|e| classify(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_escapes_everything_but_slashes() {
        assert_eq!(copy_source("b", "a b+c%41/ü"), "b/a%20b%2Bc%2541/%C3%BC");
        assert_eq!(copy_source("b", "/lead//x "), "b//lead//x%20");
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
