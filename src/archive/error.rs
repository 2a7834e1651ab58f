//! Errors of `export` and `import` as a whole (per-object problems are
//! report rows, never these), each with its retry class and exit code.

use crate::base::error::{RetryClass, SyncError};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive (or a previous manifest) is not one this tool wrote, or
    /// it was truncated or altered since: nothing was applied. Exit 2.
    #[error("refusing {path}: {why}")]
    Refused { path: String, why: String },
    /// The archive passed its check, then read differently while it was
    /// applied (it was replaced or the disk is failing). What was applied
    /// before was checked entry by entry; the rest was not applied. Exit 1.
    #[error(
        "{path} changed while it was being applied ({why}); what was applied before is correct, the rest was not applied"
    )]
    ChangedDuringImport { path: String, why: String },
    /// A local file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sync(#[from] SyncError),
}

impl ArchiveError {
    pub fn refused(path: &std::path::Path, why: impl Into<String>) -> Self {
        ArchiveError::Refused {
            path: path.display().to_string(),
            why: why.into(),
        }
    }

    /// A closure for `map_err` on I/O results.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| ArchiveError::Io { context, source }
    }

    pub fn retry_class(&self) -> RetryClass {
        use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
        match self {
            // The same bytes will fail the same checks.
            ArchiveError::Refused { .. } | ArchiveError::ChangedDuringImport { .. } => {
                RetryClass::NonRetryable
            }
            ArchiveError::Io { source, .. } => match source.kind() {
                Interrupted | TimedOut | WouldBlock => RetryClass::Retryable,
                _ => RetryClass::NonRetryable,
            },
            ArchiveError::Sync(err) => err.retry_class(),
        }
    }

    /// 2 for a refused archive or bad usage (nothing was written), 130 for
    /// Ctrl-C, 1 for anything that stopped a run under way.
    pub fn exit_code(&self) -> i32 {
        match self {
            ArchiveError::Refused { .. } | ArchiveError::Sync(SyncError::Config(_)) => 2,
            ArchiveError::Sync(SyncError::Cancelled) => 130,
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_archive_is_exit_2_and_not_retryable() {
        let err = ArchiveError::refused(std::path::Path::new("a.tar"), "no trailer");
        assert_eq!(err.to_string(), "refusing a.tar: no trailer");
        assert_eq!(err.exit_code(), 2);
        assert_eq!(err.retry_class(), RetryClass::NonRetryable);
        let io = ArchiveError::io("reading a.tar")(std::io::Error::from(
            std::io::ErrorKind::Interrupted,
        ));
        assert_eq!(io.retry_class(), RetryClass::Retryable);
        assert_eq!(io.exit_code(), 1);
    }
}
