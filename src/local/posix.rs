//! POSIX attributes as S3 user metadata, in s3fs's format: `uid`, `gid`,
//! `mode` (decimal `st_mode`, file type bits included) and `mtime` (whole
//! seconds since the epoch). s3fs mounts then show the files as they were
//! on the NAS, and a restore puts them back.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The user metadata an upload carries with `--posix-metadata`.
pub fn metadata_of(meta: &std::fs::Metadata) -> HashMap<String, String> {
    HashMap::from([
        ("uid".to_owned(), meta.uid().to_string()),
        ("gid".to_owned(), meta.gid().to_string()),
        ("mode".to_owned(), meta.mode().to_string()),
        ("mtime".to_owned(), meta.mtime().to_string()),
    ])
}

/// A file's modification time in milliseconds since the epoch.
pub fn mtime_ms(meta: &std::fs::Metadata) -> i64 {
    meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000
}

/// What a restore applies to a downloaded file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restore {
    /// Seconds and nanoseconds since the epoch.
    pub mtime: Option<(i64, i64)>,
    pub mode: Option<u32>,
    pub owner: Option<(u32, u32)>,
}

impl Restore {
    /// The object's own time, and with `posix` its stored attributes
    /// (whose mtime, when present, wins: it is the file's original time).
    pub fn from_object(
        last_modified_ms: i64,
        metadata: Option<&HashMap<String, String>>,
        posix: bool,
    ) -> Restore {
        let mut restore = Restore {
            mtime: Some((
                last_modified_ms.div_euclid(1000),
                last_modified_ms.rem_euclid(1000) * 1_000_000,
            )),
            ..Restore::default()
        };
        let Some(metadata) = metadata.filter(|_| posix) else {
            return restore;
        };
        let number = |name: &str| {
            metadata
                .get(name)
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        if let Some(mtime) = number("mtime") {
            restore.mtime = Some((mtime, 0));
        }
        // Permission bits only: the type bits say "regular file", which it is.
        restore.mode = number("mode").map(|m| (m & 0o7777) as u32);
        if let (Some(uid), Some(gid)) = (number("uid"), number("gid")) {
            restore.owner = Some((uid as u32, gid as u32));
        }
        restore
    }

    /// Apply to `path`. Ownership needs root; a non-root restore keeps the
    /// files its own, as `tar` does, and says so once per file in the log.
    pub fn apply(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if let Some((uid, gid)) = self.owner {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
            } else {
                tracing::debug!(path = %path.display(), "not root: ownership not restored");
            }
        }
        if let Some(mode) = self.mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        if let Some((secs, nanos)) = self.mtime {
            let time = std::time::UNIX_EPOCH
                + std::time::Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32);
            let file = std::fs::File::options().write(true).open(path)?;
            file.set_times(std::fs::FileTimes::new().set_modified(time))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_attributes_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let stored = metadata_of(&meta);
        assert_eq!(stored["mode"], meta.mode().to_string());

        let mut wanted = stored.clone();
        wanted.insert("mode".into(), (0o100000 | 0o640).to_string());
        wanted.insert("mtime".into(), "1000000000".into());
        let restore = Restore::from_object(1_700_000_000_123, Some(&wanted), true);
        assert_eq!(restore.mode, Some(0o640));
        assert_eq!(restore.mtime, Some((1_000_000_000, 0)));
        restore.apply(&path).unwrap();
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(after.mode() & 0o7777, 0o640);
        assert_eq!(after.mtime(), 1_000_000_000);

        // Without --posix-metadata only the object's time is applied.
        let plain = Restore::from_object(1_700_000_000_123, Some(&wanted), false);
        assert_eq!(plain.mtime, Some((1_700_000_000, 123_000_000)));
        assert_eq!((plain.mode, plain.owner), (None, None));
        plain.apply(&path).unwrap();
        assert_eq!(
            mtime_ms(&std::fs::metadata(&path).unwrap()),
            1_700_000_000_123
        );
    }
}
