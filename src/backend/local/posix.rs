//! POSIX attributes as S3 user metadata, in s3fs's format: `uid`, `gid`,
//! `mode` (decimal `st_mode`, file type bits included) and `mtime` (whole
//! seconds since the epoch). s3fs mounts then show the files as they were
//! on the NAS, and a restore puts them back.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

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

/// setuid, setgid and sticky: the bits that make a file run as someone
/// else (or change who may delete in a directory).
pub const SPECIAL_BITS: u32 = 0o7000;

/// What a restore takes from an object's stored attributes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreRules {
    /// `--posix-metadata`: owner, mode and mtime from user metadata.
    pub attributes: bool,
    /// `--posix-special-bits`: keep setuid, setgid and sticky bits, only for
    /// files whose owner is restored too.
    pub special_bits: bool,
    /// Whether this process may restore owners (root).
    pub can_chown: bool,
}

impl RestoreRules {
    pub fn new(attributes: bool, special_bits: bool) -> RestoreRules {
        RestoreRules {
            attributes,
            special_bits,
            // SAFETY: geteuid has no preconditions.
            can_chown: unsafe { libc::geteuid() } == 0,
        }
    }
}

/// What a restore applies to a downloaded file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restore {
    /// Seconds and nanoseconds since the epoch.
    pub mtime: Option<(i64, i64)>,
    /// Permission bits, special bits only where allowed.
    pub mode: Option<u32>,
    pub owner: Option<(u32, u32)>,
    /// The stored mode, when special bits in it were masked: the report
    /// says so, since the file does not get what the object asked for.
    pub masked_mode: Option<u32>,
}

impl Restore {
    /// The object's own time, and with `rules.attributes` its stored
    /// attributes (whose mtime, when present, wins: it is the file's
    /// original time).
    ///
    /// Special bits come from whoever wrote the bucket: a restore as root
    /// that kept them would turn any object into a setuid-root program.
    /// So they are masked unless asked for, and even then kept only on a
    /// file whose owner is restored too, so the bits never apply to the
    /// restoring user's own uid by accident.
    pub fn from_object(
        last_modified_ms: i64,
        metadata: Option<&HashMap<String, String>>,
        rules: RestoreRules,
    ) -> Restore {
        let mut restore = Restore {
            mtime: Some((
                last_modified_ms.div_euclid(1000),
                last_modified_ms.rem_euclid(1000) * 1_000_000,
            )),
            ..Restore::default()
        };
        let Some(metadata) = metadata.filter(|_| rules.attributes) else {
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
        if let (Some(uid), Some(gid)) = (number("uid"), number("gid"))
            && let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid))
            && uid != u32::MAX
            && gid != u32::MAX
        {
            restore.owner = Some((uid, gid));
        }
        let owner_restored = restore.owner.is_some() && rules.can_chown;
        // Permission bits only: the type bits say "regular file", which it is.
        restore.mode = number("mode").map(|stored| {
            let mode = (stored & 0o7777) as u32;
            if mode & SPECIAL_BITS != 0 && !(rules.special_bits && owner_restored) {
                restore.masked_mode = Some(stored as u32);
                mode & !SPECIAL_BITS
            } else {
                mode
            }
        });
        restore
    }

    /// The report's warning for masked special bits, if any.
    pub fn warning(&self) -> Option<String> {
        let stored = self.masked_mode?;
        Some(format!(
            "the object's stored mode {stored:#o} has setuid, setgid or sticky bits; restored as {:#o} (keep them with --posix-special-bits, as root, for files whose owner is stored)",
            self.mode.unwrap_or_default()
        ))
    }

    /// Apply to the open file, never by name, so a link swapped in at its
    /// place cannot redirect a chown or chmod. Order matters: chown first
    /// (Linux clears setuid and setgid on a chown, even root's), then the
    /// mode, then the time through the same descriptor, which needs no
    /// write permission by mode, so a read-only file restores for a
    /// non-root user too. Ownership needs root; a non-root restore keeps
    /// the files its own, as `tar` does.
    pub fn apply(&self, file: &std::fs::File, can_chown: bool) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if let Some((uid, gid)) = self.owner {
            if can_chown {
                std::os::unix::fs::fchown(file, Some(uid), Some(gid))?;
            } else {
                tracing::debug!("not root: ownership not restored");
            }
        }
        if let Some(mode) = self.mode {
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        if let Some((secs, nanos)) = self.mtime {
            let time = std::time::UNIX_EPOCH
                + std::time::Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32);
            file.set_times(std::fs::FileTimes::new().set_modified(time))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(special_bits: bool, can_chown: bool) -> RestoreRules {
        RestoreRules {
            attributes: true,
            special_bits,
            can_chown,
        }
    }

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
        let restore = Restore::from_object(1_700_000_000_123, Some(&wanted), rules(false, false));
        assert_eq!(restore.mode, Some(0o640));
        assert_eq!(restore.mtime, Some((1_000_000_000, 0)));
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        restore.apply(&file, false).unwrap();
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(after.mode() & 0o7777, 0o640);
        assert_eq!(after.mtime(), 1_000_000_000);

        // Without --posix-metadata only the object's time is applied.
        let plain = Restore::from_object(1_700_000_000_123, Some(&wanted), RestoreRules::default());
        assert_eq!(plain.mtime, Some((1_700_000_000, 123_000_000)));
        assert_eq!((plain.mode, plain.owner), (None, None));
        plain.apply(&file, false).unwrap();
        assert_eq!(
            mtime_ms(&std::fs::metadata(&path).unwrap()),
            1_700_000_000_123
        );
    }

    #[test]
    fn special_bits_are_masked_unless_asked_for_with_an_owner() {
        let setuid_root = HashMap::from([
            ("mode".to_owned(), (0o104755).to_string()),
            ("uid".to_owned(), "0".to_owned()),
            ("gid".to_owned(), "0".to_owned()),
        ]);
        let masked = Restore::from_object(0, Some(&setuid_root), rules(false, true));
        assert_eq!(masked.mode, Some(0o755));
        assert_eq!(masked.masked_mode, Some(0o104755));
        assert!(masked.warning().unwrap().contains("0o104755"));
        // Asked for, as root with the owner stored: kept.
        let kept = Restore::from_object(0, Some(&setuid_root), rules(true, true));
        assert_eq!((kept.mode, kept.warning()), (Some(0o4755), None));
        // Asked for, but the owner cannot be restored (not root, or none
        // stored): masked, or the bits would apply to the restoring user.
        let not_root = Restore::from_object(0, Some(&setuid_root), rules(true, false));
        assert_eq!(not_root.mode, Some(0o755));
        let mut no_owner = setuid_root.clone();
        no_owner.remove("uid");
        let no_owner = Restore::from_object(0, Some(&no_owner), rules(true, true));
        assert_eq!(no_owner.mode, Some(0o755));
        assert!(no_owner.warning().is_some());
    }
}
