//! The file digests a directory remembers between runs: each file's ETag,
//! with the fingerprint its `stat` gave when it was read. A file whose
//! fingerprint is unchanged costs a `stat` next time, not a read of its
//! bytes, so a no-op re-sync of a 5 GiB tree no longer reads 5 GiB.
//!
//! s5cmd and rclone skip reading by comparing sizes and modification
//! times, and so miss a rewrite of the same size whose mtime was set back
//! (`touch -d`, `cp -p`, an archive extracted over the tree). The
//! fingerprint here is the device, inode, size, mtime *and ctime*: the
//! kernel moves a file's ctime to the present on every write and every
//! change of its times, and no call sets it back, so a file with the
//! same fingerprint has not been written since it was taken.
//!
//! Timestamps are coarse (a clock tick on Linux, 2 s for mtimes on FAT),
//! so a write in the same tick as the `stat` can leave the fingerprint
//! unchanged: git's "racily clean" problem. A digest is therefore kept
//! only for a file whose mtime and ctime were both settled when it was
//! `stat`ed ([`settle_time`]: 100 ms on a local file system with
//! nanosecond times, else 2 s), and whose fingerprint was the same after
//! the read as before it. A younger file is read again next time.
//!
//! The digests live beside the ledger of proven pairs, when that is a
//! local directory, as one zstd stream of JSON lines in key order. A pass
//! over the directory (the write phase, a verification by re-listing)
//! reads the old stream with one cursor beside the walk, which is in key
//! order too, and writes a new one; a pass that ends renames the new over
//! the old, an interrupted one leaves the old. A digest the pass did not
//! need is not carried over. A lost, stale or damaged store costs reads,
//! never a wrong "equal": a digest is used only with its fingerprint.

use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::backend::ledger::proven::{Decoded, LEVEL, check};
use crate::model::s3_shape::{EtagShape, etag_shape};

/// How old a file's mtime and ctime must be for its digest to be kept,
/// where its file system is not known to keep fine times: FAT's mtime
/// granularity, and room for a network file system's clock (its server
/// stamps the times).
pub const SETTLED: Duration = Duration::from_secs(2);

/// The same on a local Linux file system that keeps nanosecond times. The
/// kernel stamps a write with its coarse clock, at most one tick (10 ms at
/// HZ=100) behind the real time, so a write after a `stat` that found both
/// times this old gets a later ctime: ten ticks of margin. Without it a
/// restore's verification, which reads each file moments after writing
/// it, kept no digest for the files written last, and the next re-sync of
/// a 5 GiB tree read its large files again.
pub const SETTLED_FINE: Duration = Duration::from_millis(100);

/// Local file systems whose inodes keep nanosecond times (`statfs`
/// magic numbers, linux/magic.h): ext2/3/4, XFS, Btrfs, tmpfs, F2FS, ZFS,
/// and overlayfs, which shows its upper layer's times. An ext4 made with
/// 128-byte inodes keeps whole seconds; [`settle_time`] tells by the ctime.
const FINE_TIMES: [u32; 7] = [
    0xEF53,      // ext2, ext3, ext4
    0x5846_5342, // XFS
    0x9123_683E, // Btrfs
    0x0102_1994, // tmpfs
    0xF2F5_2010, // F2FS
    0x2FC1_2FC1, // ZFS
    0x794C_7630, // overlayfs
];

/// How long a file on a file system with `statfs` magic `fs` (`None`:
/// unknown) must have been unchanged, given one of its ctimes: fine only
/// where the file system is local, keeps fine times, and this ctime has a
/// fraction of a second (a whole one may be all the inode can hold).
pub fn settle_time(fs: Option<u32>, ctime_ns: i128) -> Duration {
    let fine = fs.is_some_and(|magic| FINE_TIMES.contains(&magic));
    if fine && ctime_ns % 1_000_000_000 != 0 {
        SETTLED_FINE
    } else {
        SETTLED
    }
}

/// The `statfs` magic number of the file system holding `path`.
#[cfg(target_os = "linux")]
pub fn file_system_of(path: &Path) -> Option<u32> {
    // The field's width differs by architecture; every magic fits 32 bits.
    rustix::fs::statfs(path).ok().map(|fs| fs.f_type as u32)
}

#[cfg(not(target_os = "linux"))]
pub fn file_system_of(_: &Path) -> Option<u32> {
    None
}

/// The store's file name, in the ledger's directory.
const FILE_NAME: &str = "file-digests.zst";

/// At most this many ETags are remembered per file (its MD5 and the
/// multipart layouts it was compared in).
const ETAGS_KEPT: usize = 4;

/// What `stat` says about a file that a write would change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl Fingerprint {
    /// The fingerprint of the file at `path` (links followed, as the file
    /// is read), and whether it was settled ([`settle_time`]) when taken.
    /// `None` where the platform has no ctime.
    pub fn of(path: &Path) -> std::io::Result<Option<(Fingerprint, bool)>> {
        Ok(Self::unsettled_for(path)?.map(|(print, left)| (print, left.is_zero())))
    }

    /// [`Fingerprint::of`], after waiting for the file to settle if it
    /// will within [`SETTLED_FINE`]: a restore's verification reaches the
    /// files it wrote last moments after writing them, and would otherwise
    /// keep no digest of them. Every file's wait ends by a tenth of a
    /// second after the last write, so a pass waits that long at most.
    pub fn of_settling(path: &Path) -> std::io::Result<Option<(Fingerprint, bool)>> {
        match Self::unsettled_for(path)? {
            Some((_, left)) if !left.is_zero() && left <= SETTLED_FINE => {
                std::thread::sleep(left);
                Self::of(path)
            }
            taken => Ok(taken.map(|(print, left)| (print, left.is_zero()))),
        }
    }

    /// The file's fingerprint, and how much longer it must stay unchanged
    /// to be settled ([`settle_time`]; zero if it is).
    fn unsettled_for(path: &Path) -> std::io::Result<Option<(Fingerprint, Duration)>> {
        let observed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let metadata = std::fs::metadata(path)?;
        Ok(Self::from_metadata(&metadata).map(|print| {
            let settle = settle_time(file_system_of(path), print.ctime_ns);
            let settled_at = print.mtime_ns.max(print.ctime_ns) + settle.as_nanos() as i128;
            let left = u64::try_from(settled_at - observed).unwrap_or(0);
            (print, Duration::from_nanos(left))
        }))
    }

    #[cfg(unix)]
    fn from_metadata(metadata: &std::fs::Metadata) -> Option<Fingerprint> {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
        Some(Fingerprint {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.size(),
            mtime_ns: ns(metadata.mtime(), metadata.mtime_nsec()),
            ctime_ns: ns(metadata.ctime(), metadata.ctime_nsec()),
        })
    }

    #[cfg(not(unix))]
    fn from_metadata(_: &std::fs::Metadata) -> Option<Fingerprint> {
        None
    }
}

/// One file's remembered ETags, with the fingerprint they belong to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub key: String,
    pub print: Fingerprint,
    pub etags: Vec<String>,
}

impl Remembered {
    /// The file's ETag in the shape of `remote` (the ETag of the object it
    /// is compared with), if remembered and decisive: an MD5 decides alone;
    /// a `-N` ETag only when it is `remote` itself, since another layout
    /// of the same part count might still match.
    pub fn etag_like(&self, remote: &str) -> Option<&str> {
        let shape = etag_shape(remote);
        self.etags
            .iter()
            .find(|etag| match shape {
                EtagShape::Single => etag_shape(etag) == EtagShape::Single,
                EtagShape::Multipart(_) => etag.as_str() == remote,
            })
            .map(String::as_str)
    }

    /// This digest with `etag` remembered too (first, so it is the last
    /// dropped).
    pub fn with(mut self, etag: String) -> Remembered {
        self.etags.retain(|e| *e != etag);
        self.etags.insert(0, etag);
        self.etags.truncate(ETAGS_KEPT);
        self
    }
}

/// Where a directory's digests are kept.
#[derive(Debug, Clone)]
pub struct FileDigests {
    path: PathBuf,
}

impl FileDigests {
    /// The digests kept in `dir` (the ledger's directory).
    pub fn in_dir(dir: &Path) -> FileDigests {
        FileDigests {
            path: dir.join(FILE_NAME),
        }
    }

    /// Start a pass: the stored digests, checked whole (zstd finds damage
    /// only at a frame's end, and a damaged digest must not be used), and
    /// a new store being written beside them. Blocking: reads the store.
    pub fn pass(&self) -> DigestPass {
        let old = match std::fs::File::open(&self.path) {
            Ok(file) => match check(BufReader::new(file)) {
                Ok(()) => std::fs::File::open(&self.path)
                    .and_then(|file| Decoded::new(BufReader::new(file))),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let old = old
            .inspect_err(|e| {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(digests = %self.path.display(), error = %e, "the remembered file digests cannot be read; this run reads the files instead");
                }
            })
            .ok();
        let next = self.new_store().inspect_err(|e| tracing::warn!(digests = %self.path.display(), error = %e, "cannot write file digests; the next run reads the files again")).ok();
        DigestPass {
            old,
            peeked: None,
            next,
            path: self.path.clone(),
        }
    }

    fn new_store(&self) -> std::io::Result<NewStore> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = tempfile::NamedTempFile::new_in(self.path.parent().unwrap_or(Path::new(".")))?;
        let mut encoder = zstd::Encoder::new(BufWriter::new(file), LEVEL)?;
        encoder.include_checksum(true)?;
        Ok(NewStore { encoder })
    }
}

struct NewStore {
    encoder: zstd::Encoder<'static, BufWriter<tempfile::NamedTempFile>>,
}

/// One pass over a directory in key order: the old digests, read with one
/// cursor, and the new ones, written in the same order.
pub struct DigestPass {
    old: Option<Decoded<BufReader<std::fs::File>, Remembered>>,
    peeked: Option<Remembered>,
    next: Option<NewStore>,
    path: PathBuf,
}

impl DigestPass {
    /// The stored digest of `key`, if any. Keys must come in ascending
    /// order: the entries before `key` are passed over for good.
    pub fn lookup(&mut self, key: &str) -> Option<Remembered> {
        loop {
            if self.peeked.is_none() {
                match self.old.as_mut()?.next() {
                    Some(Ok(digest)) => self.peeked = Some(digest),
                    Some(Err(e)) => {
                        // Checked whole when opened: an error here is the
                        // file changing under the run. Read files instead.
                        tracing::warn!(error = %e, "reading the remembered file digests failed");
                        self.old = None;
                        return None;
                    }
                    None => {
                        self.old = None;
                        return None;
                    }
                }
            }
            let peeked = self.peeked.as_ref()?;
            match peeked.key.as_str().cmp(key) {
                std::cmp::Ordering::Less => self.peeked = None,
                std::cmp::Ordering::Equal => return self.peeked.take(),
                std::cmp::Ordering::Greater => return None,
            }
        }
    }

    /// Remember `digest` in the new store. Digests must come in ascending
    /// key order. A failed write leaves the old store in place.
    pub fn keep(&mut self, digest: &Remembered) {
        let Some(next) = self.next.as_mut() else {
            return;
        };
        let written = serde_json::to_writer(&mut next.encoder, digest)
            .map_err(std::io::Error::from)
            .and_then(|()| next.encoder.write_all(b"\n"));
        if let Err(e) = written {
            tracing::warn!(error = %e, "writing file digests failed; the next run reads the files again");
            self.next = None;
        }
    }

    /// The pass saw the whole directory: its digests replace the old ones.
    /// Blocking: flushes and renames the store.
    pub fn finish(mut self) {
        let Some(next) = self.next.take() else {
            return;
        };
        let saved = next
            .encoder
            .finish()
            .and_then(|writer| writer.into_inner().map_err(|e| e.into_error()))
            .and_then(|file| {
                file.as_file().sync_all()?;
                file.persist(&self.path).map_err(|e| e.error)?;
                Ok(())
            });
        if let Err(e) = saved {
            tracing::warn!(digests = %self.path.display(), error = %e, "could not save file digests; the next run reads the files again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(key: &str, etags: &[&str]) -> Remembered {
        Remembered {
            key: key.to_owned(),
            print: Fingerprint {
                dev: 1,
                ino: 2,
                size: 3,
                mtime_ns: 4,
                ctime_ns: 5,
            },
            etags: etags.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn a_finished_pass_is_what_the_next_one_reads_in_key_order() {
        let state = tempfile::tempdir().unwrap();
        let digests = FileDigests::in_dir(&state.path().join("ledger"));
        let mut pass = digests.pass();
        assert_eq!(pass.lookup("a"), None, "nothing stored yet");
        for key in ["a", "b/c", "b0", "ü"] {
            pass.keep(&digest(key, &["d41d8cd98f00b204e9800998ecf8427e"]));
        }
        pass.finish();

        let mut pass = digests.pass();
        assert_eq!(pass.lookup("a").unwrap().key, "a");
        // "b/c" is passed over: it is not carried into the next store.
        assert_eq!(pass.lookup("b0").unwrap().key, "b0");
        assert_eq!(pass.lookup("c"), None);
        assert_eq!(pass.lookup("ü").unwrap().key, "ü");
        assert_eq!(pass.lookup("z"), None);
        // An interrupted pass (dropped unfinished) leaves the store as it was.
        drop(pass);
        assert_eq!(
            std::fs::read_dir(state.path().join("ledger"))
                .unwrap()
                .count(),
            1,
            "no temporary file left behind"
        );
        assert!(digests.pass().lookup("b/c").is_some());
    }

    #[test]
    fn a_damaged_store_is_not_read() {
        let state = tempfile::tempdir().unwrap();
        let digests = FileDigests::in_dir(state.path());
        let mut pass = digests.pass();
        for key in ["a", "b", "c"] {
            pass.keep(&digest(key, &["x"]));
        }
        pass.finish();
        let path = state.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(digests.pass().lookup("a"), None);
    }

    #[test]
    fn an_md5_decides_alone_and_a_part_etag_only_when_it_matches() {
        let remembered = digest("k", &["aaaa-2", "bbbb"]);
        assert_eq!(remembered.etag_like("cccc"), Some("bbbb"));
        assert_eq!(remembered.etag_like("aaaa-2"), Some("aaaa-2"));
        // Another `-2`: another layout might match, so the file is read.
        assert_eq!(remembered.etag_like("dddd-2"), None);
        assert_eq!(digest("k", &["aaaa-2"]).etag_like("bbbb"), None);
        let more = remembered.with("eeee-3".into()).with("bbbb".into());
        assert_eq!(more.etags, ["bbbb", "eeee-3", "aaaa-2"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_file_written_moments_ago_is_not_settled_and_an_old_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"now").unwrap();
        let (_, settled) = Fingerprint::of(&path).unwrap().unwrap();
        assert!(!settled, "just written");
        // An old mtime does not make it settled: the ctime is still now.
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        let (print, settled) = Fingerprint::of(&path).unwrap().unwrap();
        assert!(!settled, "its ctime moved to now");
        assert_eq!(print.size, 3);
    }

    #[cfg(unix)]
    #[test]
    fn an_unchanged_file_settles_after_its_file_systems_settle_time() {
        // GIVEN a file just written (on this machine's ext4 or tmpfs the
        // settle time is a tenth of a second, elsewhere 2 s)
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"now").unwrap();
        let (print, settled) = Fingerprint::of(&path).unwrap().unwrap();
        assert!(!settled, "just written");
        let settle = settle_time(file_system_of(&path), print.ctime_ns);
        // WHEN it is left alone for that long
        std::thread::sleep(settle + Duration::from_millis(20));
        // THEN it is settled, with the same fingerprint
        let (again, settled) = Fingerprint::of(&path).unwrap().unwrap();
        assert_eq!(again, print);
        assert!(settled, "unchanged for {settle:?}");
    }

    #[test]
    fn only_a_local_file_system_with_sub_second_times_settles_fast() {
        let ext4 = Some(0xEF53);
        let with_fraction = 1_700_000_000_123_456_789;
        assert_eq!(settle_time(ext4, with_fraction), SETTLED_FINE);
        assert_eq!(settle_time(Some(0x0102_1994), with_fraction), SETTLED_FINE);
        // An ext4 with 128-byte inodes keeps whole seconds.
        assert_eq!(settle_time(ext4, 1_700_000_000_000_000_000), SETTLED);
        // NFS (its server's clock), FAT (2 s mtimes), unknown.
        assert_eq!(settle_time(Some(0x6969), with_fraction), SETTLED);
        assert_eq!(settle_time(Some(0x4d44), with_fraction), SETTLED);
        assert_eq!(settle_time(None, with_fraction), SETTLED);
    }
}
