//! Errors that carry their retry class.
//!
//! Every failure the library can produce says whether trying again could help.
//! The CLI maps the classes to exit codes and report rows; the Lambda runtime
//! (a later issue) exposes [`SyncError::error_type`] so Step Functions `Retry`
//! and SQS partial-batch responses can match on it.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use serde::Serialize;

/// Whether repeating the same request could succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RetryClass {
    /// Throttling, 5xx, timeouts, connection failures.
    Retryable,
    /// Bad input, missing objects or buckets, denied access, archived objects.
    NonRetryable,
}

/// An S3 request failure, reduced to the fields the report needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct S3Failure {
    /// The S3 error code (`AccessDenied`, `SlowDown`, ...) or a transport kind.
    pub code: String,
    pub http_status: Option<u16>,
    pub message: String,
    pub class: RetryClass,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Bad usage or configuration: reported before any write, exit code 2.
    #[error("{0}")]
    Config(String),
    /// A request failed; `context` says what was being done.
    #[error("{context}: {} ({})", .failure.message, .failure.code)]
    S3 { context: String, failure: S3Failure },
    /// The server listed keys out of order. A merge-join on such a listing
    /// would call present objects missing (and, with `--delete`, delete
    /// them), so the range stops instead.
    #[error(
        "listing of {location} is not in ascending UTF-8 byte order: {previous:?} came before {next:?}; refusing to diff it"
    )]
    ListingOrder {
        location: String,
        previous: String,
        next: String,
    },
    /// The run was cancelled (Ctrl-C).
    #[error("interrupted")]
    Cancelled,
    /// Writing the report failed.
    #[error("writing the report: {0}")]
    Report(String),
}

impl SyncError {
    pub fn retry_class(&self) -> RetryClass {
        match self {
            SyncError::S3 { failure, .. } => failure.class,
            SyncError::Cancelled => RetryClass::Retryable,
            SyncError::Config(_) | SyncError::ListingOrder { .. } | SyncError::Report(_) => {
                RetryClass::NonRetryable
            }
        }
    }

    /// A stable name for the retry class, for Lambda's `errorType`.
    pub fn error_type(&self) -> &'static str {
        match self.retry_class() {
            RetryClass::Retryable => "Retryable",
            RetryClass::NonRetryable => "NonRetryable",
        }
    }

    pub fn s3(context: impl Into<String>, failure: S3Failure) -> Self {
        SyncError::S3 {
            context: context.into(),
            failure,
        }
    }
}

/// S3 error codes that a retry can fix even though the SDK gave up on them.
pub(crate) const RETRYABLE_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
    // The bytes of an upload did not match the checksum sent with them:
    // damaged on the way, so sending them again (read again from the file
    // or source) is the cure; a source that keeps changing runs out of
    // retries and is reported.
    "BadDigest",
];

/// Reduce an SDK error to an [`S3Failure`] with its retry class.
pub fn classify<E, R>(err: &SdkError<E, R>) -> S3Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    match err {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            let status = service.raw().status();
            let code = inner
                .code()
                .map(str::to_owned)
                // HEAD responses have no body, so S3 errors arrive as a bare status.
                .unwrap_or_else(|| status_code_name(status).to_owned());
            let message = inner
                .message()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("HTTP {status}"));
            // 501 Not Implemented is the server's lasting answer to what
            // was asked (a header, a feature), not a passing fault.
            let retryable = (status >= 500 && status != 501)
                || status == 429
                || RETRYABLE_CODES.contains(&code.as_str());
            S3Failure {
                code,
                http_status: Some(status),
                message,
                class: if retryable {
                    RetryClass::Retryable
                } else {
                    RetryClass::NonRetryable
                },
            }
        }
        SdkError::TimeoutError(_) => S3Failure {
            code: "Timeout".into(),
            http_status: None,
            message: "request timed out".into(),
            class: RetryClass::Retryable,
        },
        SdkError::DispatchFailure(dispatch) => S3Failure {
            code: "ConnectionError".into(),
            http_status: None,
            message: format!("{:?}", dispatch.as_connector_error()),
            class: RetryClass::Retryable,
        },
        SdkError::ResponseError(response) => S3Failure {
            code: "ResponseError".into(),
            http_status: Some(response.raw().status()),
            message: "the response could not be read".into(),
            class: RetryClass::Retryable,
        },
        other => S3Failure {
            code: "ClientError".into(),
            http_status: None,
            message: aws_smithy_types::error::display::DisplayErrorContext(other).to_string(),
            class: RetryClass::NonRetryable,
        },
    }
}

/// Access to the HTTP status of a raw response, whatever its type.
pub trait HttpStatus {
    fn status(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

fn status_code_name(status: u16) -> &'static str {
    match status {
        301 => "PermanentRedirect",
        400 => "BadRequest",
        403 => "AccessDenied",
        404 => "NotFound",
        412 => "PreconditionFailed",
        503 => "SlowDown",
        s if s >= 500 => "InternalError",
        _ => "UnknownError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_are_not_retryable() {
        let err = SyncError::Config("bad".into());
        assert_eq!(err.retry_class(), RetryClass::NonRetryable);
        assert_eq!(err.error_type(), "NonRetryable");
    }

    #[test]
    fn s3_failure_keeps_its_class() {
        let err = SyncError::s3(
            "copy",
            S3Failure {
                code: "SlowDown".into(),
                http_status: Some(503),
                message: "slow down".into(),
                class: RetryClass::Retryable,
            },
        );
        assert_eq!(err.error_type(), "Retryable");
        assert_eq!(err.to_string(), "copy: slow down (SlowDown)");
    }
}
