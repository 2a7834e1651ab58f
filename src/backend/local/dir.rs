//! The directory itself: where it is, which side it is, how it is read and
//! written, and the entry and failure a file becomes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

use super::confined::Confined;

use crate::base::error::{RetryClass, S3Failure};
use crate::model::entry::ObjectEntry;
use crate::report::{ReportRow, ReportRows, Stats, TaskStatus};

/// The longest file name Linux file systems take (`NAME_MAX`), in bytes.
pub const NAME_MAX: usize = 255;

/// Which side of the sync the directory is, which decides how links in it
/// are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirRole {
    /// Uploaded from: links are followed, as `aws s3 sync` does.
    Source,
    /// Restored into: links are never followed, walked, written through or
    /// deleted through. With `delete`, each link the walk meets is reported,
    /// since the directory will not end up equal to the bucket there.
    Destination { delete: bool },
}

/// The directory side of a sync, shared by its listing and its transfers.
pub struct LocalDir {
    pub root: PathBuf,
    pub role: DirRole,
    /// Compute files' ETags for pairs of equal size (`--mode etag`).
    pub hash_etags: bool,
    /// Where the ETags computed are remembered with each file's
    /// fingerprint, so an unchanged file is not read again next run.
    pub digests: Option<super::digests::FileDigests>,
    /// The part size this run uploads with: the first guess for the layout
    /// of a `-N` ETag.
    pub part_size: u64,
    /// Where problems met while walking go (unreadable directories,
    /// names that cannot be keys, special files): a walk reports them
    /// instead of leaving them out unsaid.
    pub problems: Option<(Arc<ReportRows>, Arc<Stats>)>,
    /// Paths already reported: the verification walks the tree again.
    pub reported: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The restore target, opened (and created) by the first write or
    /// delete, then used by descriptor for the rest of the run: a root
    /// swapped for another directory mid-run is not written to.
    pub target: OnceLock<Confined>,
}

/// A key as a file's place: the directories below the root, then its name.
/// Each segment is a plain name (no `/`, `.`, `..` or NUL, at most
/// [`NAME_MAX`] bytes), so resolving it segment by segment can only
/// descend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPath<'a> {
    pub dirs: Vec<&'a str>,
    pub name: &'a str,
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
    /// The place of a relative key below the directory, refusing keys that
    /// are not a plain relative path: `.` or `..` segments, empty ones
    /// (`a//b`, a leading or trailing `/`), a NUL byte, a name longer than
    /// [`NAME_MAX`], or a name of this tool's partial files. A bucket can
    /// hold such keys; written as files they would land outside the
    /// directory, or on the file of another key (`p/./q` on `p/q`), so they
    /// are reported, never written. The key is split on `/` itself:
    /// `Path::components` drops `.` segments, which is how `p/./q` once
    /// merged into `p/q`.
    pub fn key_path<'a>(&self, relative: &'a str) -> Result<KeyPath<'a>, S3Failure> {
        let unsafe_key = |why: &str| S3Failure {
            code: "UnsafeKey".into(),
            http_status: None,
            message: format!(
                "the key cannot be a file below {}: {why}",
                self.root.display()
            ),
            class: RetryClass::NonRetryable,
        };
        if relative.contains('\0') {
            return Err(unsafe_key("it contains a NUL byte"));
        }
        let mut segments: Vec<&str> = relative.split('/').collect();
        for segment in &segments {
            match *segment {
                "" => return Err(unsafe_key("it has an empty path segment")),
                "." | ".." => return Err(unsafe_key("it has a `.` or `..` segment")),
                s if s.len() > NAME_MAX => {
                    return Err(unsafe_key(&format!(
                        "a segment is {} bytes, over the {NAME_MAX} a file name can have",
                        s.len()
                    )));
                }
                _ => {}
            }
        }
        let name = segments.pop().expect("split yields at least one segment");
        if is_partial_name(name) {
            return Err(unsafe_key(
                "its name has the form of this tool's partial downloads, which it would collide with",
            ));
        }
        Ok(KeyPath {
            dirs: segments,
            name,
        })
    }

    /// The file a relative key names, checked as [`LocalDir::key_path`].
    /// For reading; writes go through [`LocalDir::target`].
    pub fn path_for(&self, relative: &str) -> Result<PathBuf, S3Failure> {
        self.key_path(relative)?;
        Ok(self.root.join(relative))
    }

    /// The restore target, opened once; created when `create`. `None`:
    /// it does not exist and was not to be created.
    pub fn target(&self, create: bool) -> Result<Option<&Confined>, S3Failure> {
        if let Some(target) = self.target.get() {
            return Ok(Some(target));
        }
        match Confined::open(&self.root, create) {
            Ok(Some(target)) => {
                // A concurrent first use may have set it: either is the root.
                let _ = self.target.set(target);
                Ok(self.target.get())
            }
            Ok(None) => Ok(None),
            Err(e) => Err(io_failure("opening the directory", &self.root, &e)),
        }
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
        // A link (or a file) where the key needs a directory: see confined.rs.
        NotADirectory => ("UnsafePath", RetryClass::NonRetryable),
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
        version_id: None,
        key: relative.to_owned(),
        size: meta.len(),
        etag: String::new(),
        last_modified_ms: super::posix::mtime_ms(meta),
        storage_class: None,
        checksum: None,
    }
}

/// Partial downloads are named `.NAME` + this (or `.HASH` + this, for a
/// name too long to take the suffix); listings of a restore target skip
/// them, and keys of that form are refused, so no key's file is another
/// key's partial.
pub const PARTIAL_SUFFIX: &str = ".s3-fanout-partial";

/// Whether a file name has the form of this tool's partial files.
pub fn is_partial_name(name: &str) -> bool {
    name.len() > PARTIAL_SUFFIX.len() + 1 && name.starts_with('.') && name.ends_with(PARTIAL_SUFFIX)
}

/// The partial file of `name`: `.NAME.s3-fanout-partial`, or where that
/// would pass [`NAME_MAX`], a hash of the name in its place, so every name
/// that can be a file can also be downloaded.
pub fn partial_name(name: &str) -> String {
    let plain = format!(".{name}{PARTIAL_SUFFIX}");
    if plain.len() <= NAME_MAX {
        return plain;
    }
    let digest = Sha256::digest(name.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(".{hex}{PARTIAL_SUFFIX}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restore_dir() -> LocalDir {
        LocalDir {
            root: "/restore".into(),
            role: DirRole::Destination { delete: false },
            hash_etags: false,
            digests: None,
            part_size: 8 << 20,
            problems: None,
            reported: Default::default(),
            target: Default::default(),
        }
    }

    #[test]
    fn keys_that_would_escape_or_collide_are_refused() {
        let dir = restore_dir();
        assert_eq!(
            dir.path_for("a/b c/ü.txt").unwrap(),
            Path::new("/restore/a/b c/ü.txt")
        );
        assert_eq!(
            dir.key_path("p/q").unwrap(),
            KeyPath {
                dirs: vec!["p"],
                name: "q"
            }
        );
        let long = "n".repeat(NAME_MAX);
        assert_eq!(dir.key_path(&long).unwrap().name, long);
        // Not partial names: no leading dot, or another suffix.
        for fine in ["x.s3-fanout-partial", ".x.s3-fanout-partial2", "...", ".a"] {
            assert!(dir.key_path(fine).is_ok(), "{fine}");
        }
        for bad in [
            "../etc/passwd",
            "a/../../x",
            "./a",
            "p/./q",
            "p/../q",
            "p/.",
            "a//b",
            "/abs",
            "dir/",
            "",
            "a\0b",
            &"n".repeat(NAME_MAX + 1),
            ".q.s3-fanout-partial",
            "p/.q.s3-fanout-partial",
        ] {
            let failure = dir.key_path(bad).unwrap_err();
            assert_eq!(failure.code, "UnsafeKey", "{bad}");
            assert_eq!(dir.path_for(bad).unwrap_err().code, "UnsafeKey", "{bad}");
        }
    }
}
