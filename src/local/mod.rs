//! A directory on this machine as one side of a sync.
//!
//! The pipeline is the same as between buckets: [`walk`] lists the tree as
//! [`ObjectEntry`]s in S3's key order, so the same merge-join diffs it
//! against a bucket; [`upload`] and [`download`] move one object each way;
//! [`etag`] computes a file's ETag the way S3 would, only when a diff or a
//! verification needs it; [`posix`] carries uid, gid, mode and mtime as user
//! metadata. A relative key is the file's path below the directory with `/`
//! between components.

pub mod download;
pub mod etag;
pub mod posix;
pub mod upload;
pub mod walk;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::error::{RetryClass, S3Failure};
use crate::listing::ObjectEntry;
use crate::report::{ReportRow, ReportRows, Stats, TaskStatus};

/// The directory side of a sync, shared by its listing and its transfers.
pub struct LocalDir {
    pub root: PathBuf,
    /// Compute files' ETags for pairs of equal size (`--mode etag`).
    pub hash_etags: bool,
    /// The part size this run uploads with: the first guess for the layout
    /// of a `-N` ETag.
    pub part_size: u64,
    /// Where problems met while walking go (unreadable directories,
    /// names that cannot be keys, special files): a walk reports them
    /// instead of leaving them out unsaid.
    pub problems: Option<(Arc<ReportRows>, Arc<Stats>)>,
    /// Paths already reported: the verification walks the tree again.
    pub reported: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for LocalDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDir")
            .field("root", &self.root)
            .field("hash_etags", &self.hash_etags)
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

impl LocalDir {
    /// The file a relative key names, refusing keys that are not a plain
    /// relative path: `..` or `.` components, empty components (`a//b`, a
    /// leading `/`), or a trailing `/`. A bucket can hold such keys; written
    /// as files they would land outside the directory or on top of another
    /// key's file, so they are reported, never written.
    pub fn path_for(&self, relative: &str) -> Result<PathBuf, S3Failure> {
        let unsafe_key = |why: &str| S3Failure {
            code: "UnsafeKey".into(),
            http_status: None,
            message: format!(
                "the key cannot be a file below {}: {why}",
                self.root.display()
            ),
            class: RetryClass::NonRetryable,
        };
        if relative.is_empty() || relative.split('/').any(str::is_empty) {
            return Err(unsafe_key("it has an empty path component"));
        }
        if relative.contains('\0') {
            return Err(unsafe_key("it contains a NUL byte"));
        }
        let path = Path::new(relative);
        if !path.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(unsafe_key("it has a `.` or `..` component"));
        }
        Ok(self.root.join(path))
    }

    /// Report a problem with one path of the tree, once.
    pub fn report(&self, relative: &str, status: TaskStatus, code: &str, message: &str) {
        let Some((rows, stats)) = &self.problems else {
            tracing::warn!(path = relative, code, message, "local file problem");
            return;
        };
        let first_time = self
            .reported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(relative.to_owned());
        if !first_time || rows.already_reported(relative) {
            return;
        }
        Stats::add(
            if status == TaskStatus::Failed {
                &stats.failed
            } else {
                &stats.warnings
            },
            1,
        );
        rows.push(
            relative,
            ReportRow::new(
                &self.root.display().to_string(),
                relative,
                status,
                code,
                None,
                message,
            ),
        );
    }
}

/// A file system error as the failure a report row carries. Interrupted
/// and would-block errors are worth another try; the rest are not.
pub fn io_failure(what: &str, path: &Path, err: &std::io::Error) -> S3Failure {
    use std::io::ErrorKind::*;
    let (code, class) = match err.kind() {
        NotFound => ("LocalNotFound", RetryClass::NonRetryable),
        PermissionDenied => ("LocalAccessDenied", RetryClass::NonRetryable),
        Interrupted | WouldBlock | TimedOut => ("LocalIoError", RetryClass::Retryable),
        StorageFull => ("LocalDiskFull", RetryClass::NonRetryable),
        _ => ("LocalIoError", RetryClass::NonRetryable),
    };
    S3Failure {
        code: code.into(),
        http_status: None,
        message: format!("{what} {}: {err}", path.display()),
        class,
    }
}

/// A file's entry from its metadata: no ETag until one is needed.
pub fn file_entry(relative: &str, meta: &std::fs::Metadata) -> ObjectEntry {
    ObjectEntry {
        key: relative.to_owned(),
        size: meta.len(),
        etag: String::new(),
        last_modified_ms: posix::mtime_ms(meta),
        storage_class: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_would_escape_or_collide_are_refused() {
        let dir = LocalDir {
            root: "/restore".into(),
            hash_etags: false,
            part_size: 8 << 20,
            problems: None,
            reported: Default::default(),
        };
        assert_eq!(
            dir.path_for("a/b c/ü.txt").unwrap(),
            Path::new("/restore/a/b c/ü.txt")
        );
        for bad in [
            "../etc/passwd",
            "a/../../x",
            "./a",
            "a//b",
            "/abs",
            "dir/",
            "",
        ] {
            let failure = dir.path_for(bad).unwrap_err();
            assert_eq!(failure.code, "UnsafeKey", "{bad}");
        }
    }
}
