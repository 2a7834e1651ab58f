//! What moving one object ends in, whichever backend moved it: copied (with
//! its caveats) or a failure that carries its retry class.

use crate::base::error::{RetryClass, S3Failure};
use crate::model::entry::ObjectEntry;
use crate::report::TaskStatus;

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
    /// The source ETag copied and the new destination ETag, where the
    /// answer told it: a pair the copy itself proves equal (it was
    /// conditional on that source ETag), even where the two differ (KMS).
    pub etags: Option<(String, String)>,
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
            // S3 answers a GET of an archived object InvalidObjectState;
            // CopyObject's documented error is ObjectNotInActiveTierError
            // ("The source object of the COPY action is not in the active
            // tier", <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html>),
            // and servers answer either for a copy.
            ("InvalidObjectState" | "ObjectNotInActiveTierError", _) => {
                CopyError::Archived(failure)
            }
            ("PreconditionFailed", _) | (_, Some(412)) => CopyError::SourceChanged,
            // A version deleted for good since it was listed (`--as-of`).
            ("NoSuchKey" | "NoSuchVersion", _) => CopyError::Vanished,
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

    /// How this error reads in a report, in the S3 Batch Operations
    /// columns; `None` for a cancelled copy, which is not an outcome. The
    /// one wording of every runtime: the CLI's rows, the copier's results
    /// and the replicator's records.
    pub fn reported(&self) -> Option<Reported> {
        let (status, code, http_status, message) = match self {
            CopyError::Cancelled => return None,
            CopyError::Archived(f) => (
                TaskStatus::Skipped,
                "SkippedArchived".to_owned(),
                f.http_status,
                format!("archived object, restore it first: {}", f.message),
            ),
            CopyError::SseC(f) => (
                TaskStatus::Skipped,
                "SkippedSSEC".to_owned(),
                f.http_status,
                format!(
                    "SSE-C object, cannot be copied without the customer key: {}",
                    f.message
                ),
            ),
            CopyError::Vanished => (
                TaskStatus::Warning,
                "SourceDeleted".to_owned(),
                Some(404),
                "the source object was deleted after it was listed".to_owned(),
            ),
            CopyError::SourceChanged => (
                TaskStatus::Failed,
                "PreconditionFailed".to_owned(),
                Some(412),
                "the source changed while it was being copied".to_owned(),
            ),
            CopyError::Failed(f) => (
                TaskStatus::Failed,
                f.code.clone(),
                f.http_status,
                f.message.clone(),
            ),
        };
        Some(Reported {
            status,
            code,
            http_status,
            message,
        })
    }
}

/// A [`CopyError`] as a report states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub status: TaskStatus,
    pub code: String,
    pub http_status: Option<u16>,
    pub message: String,
}

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
