//! A file's ETag, as S3 gives it to an object with the same bytes: the MD5
//! of the contents for a single PUT; for a multipart upload, the MD5 of the
//! parts' binary MD5s, then `-` and the part count.
//!
//! A `-N` ETag depends on the part size the uploader chose, which S3 does
//! not keep. So the layout is inferred: the sizes that give exactly N parts
//! for the object's size, tried in the order uploaders use them (this run's
//! part size, the AWS CLI's and boto3's 8 MiB, S3's minimum 5 MiB, ...,
//! then the object's size over N rounded up to a MiB). The first whose
//! ETag matches is the layout. If none does, the file differs (or was
//! uploaded with an unusual layout) and is uploaded again.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use md5::{Digest, Md5};

use super::digests::{DigestPass, Fingerprint, Remembered};
use super::dir::LocalDir;
use crate::base::error::{S3Failure, SyncError};
use crate::model::checksum::{Checksum, ChecksumAlgorithm};
use crate::model::entry::{Pair, Side};
use crate::model::s3_shape::{EtagShape, etag_shape};
use crate::report::Stats;

/// The full-object checksum S3 stores for an object with this file's
/// bytes, in `algorithm` (a KMS object's identity, where its ETag is
/// none); `None` for the SHAs, which S3 keeps only per part.
pub fn file_checksum(
    path: &Path,
    size: u64,
    algorithm: ChecksumAlgorithm,
) -> std::io::Result<Option<Checksum>> {
    let Some(crc) = algorithm.crc() else {
        return Ok(None);
    };
    Ok(Some(Checksum {
        algorithm,
        value: algorithm.encode(crc_of_range(path, 0, size, crc)?),
        full_object: true,
    }))
}

/// The CRC of `length` bytes of `path` from `offset`.
pub fn crc_of_range(
    path: &Path,
    offset: u64,
    length: u64,
    crc: crc_fast::CrcAlgorithm,
) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut digest = crc_fast::Digest::new(crc);
    let mut left = length;
    let mut buffer = vec![0u8; (1 << 20).min(length.max(1) as usize)];
    while left > 0 {
        let want = buffer.len().min(left as usize);
        let read = file.read(&mut buffer[..want])?;
        if read == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file is shorter than when it was listed",
            ));
        }
        digest.update(&buffer[..read]);
        left -= read as u64;
    }
    Ok(digest.finalize())
}

/// Files whose ETags are computed at once: reading is the disk's work,
/// hashing a core's, so a few in flight keep both busy.
const HASHING_AT_ONCE: usize = 4;

/// Give the directory's entry of each pair of equal size the ETag it would
/// have as an object shaped like its counterpart's. Other pairs differ by
/// presence or size, which decides them without reading a byte. A file
/// that cannot be read keeps an ETag that matches nothing, so it is
/// transferred (where its read error is reported) rather than skipped.
///
/// Where the directory remembers digests ([`super::digests`]), a file
/// whose fingerprint is unchanged is a `stat`; the files read are
/// remembered for the next pass, which starts once the old digests are
/// read and checked.
pub fn with_file_etags(
    pairs: BoxStream<'static, Result<Pair, SyncError>>,
    dir: Arc<LocalDir>,
    local: Side,
) -> BoxStream<'static, Result<Pair, SyncError>> {
    let Some(digests) = dir.digests.clone() else {
        return hashed(pairs, dir, local, None);
    };
    let mut pairs = Some(pairs);
    futures::stream::once(tokio::task::spawn_blocking(move || digests.pass()))
        .map(move |pass| {
            let pairs = pairs.take().expect("one pass");
            let pass = pass
                .inspect_err(|e| tracing::warn!(error = %e, "opening the file digests failed"))
                .ok();
            hashed(pairs, dir.clone(), local, pass)
        })
        .flatten()
        .boxed()
}

/// [`with_file_etags`], with the digests of this pass, if any.
fn hashed(
    pairs: BoxStream<'static, Result<Pair, SyncError>>,
    dir: Arc<LocalDir>,
    local: Side,
    pass: Option<DigestPass>,
) -> BoxStream<'static, Result<Pair, SyncError>> {
    let pass = pass.map(|p| Arc::new(std::sync::Mutex::new(p)));
    let looking = pass.clone();
    let keeping = pass.clone();
    let hashed = pairs
        .map(move |pair| {
            let dir = dir.clone();
            // Looked up here, in key order, before the files are read
            // (a few at once, finishing in any order).
            let remembered = match (&pair, &looking) {
                (Ok(Pair::Both(source, destination)), Some(pass))
                    if source.size == destination.size =>
                {
                    let key = &source.key;
                    pass.lock().unwrap_or_else(|p| p.into_inner()).lookup(key)
                }
                _ => None,
            };
            let remembering = looking.is_some();
            async move {
                let Ok(Pair::Both(source, destination)) = pair else {
                    return (pair, None);
                };
                if source.size != destination.size {
                    return (Ok(Pair::Both(source, destination)), None);
                }
                let (mut file, remote) = match local {
                    Side::Source => (source, destination),
                    Side::Destination => (destination, source),
                };
                let path = dir.path_for(&file.key);
                let (key, size, remote_etag, part_size) = (
                    file.key.clone(),
                    file.size,
                    remote.etag.clone(),
                    dir.part_size,
                );
                let known = tokio::task::spawn_blocking(move || {
                    let path = path.map_err(|f: S3Failure| f.message)?;
                    let remembered = (remembering, remembered);
                    file_etag(&path, key, size, &remote_etag, part_size, remembered)
                        .map_err(|e| format!("reading {}: {e}", path.display()))
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
                let (etag, keep) = match known {
                    Ok(known) => {
                        if let Some((_, stats)) = &dir.problems {
                            let counter = if known.read {
                                &stats.file_etags_read
                            } else {
                                &stats.file_etags_remembered
                            };
                            Stats::add(counter, 1);
                        }
                        (known.etag, known.keep)
                    }
                    Err(why) => {
                        tracing::warn!(key = %file.key, why, "could not compute the file's ETag");
                        // Shaped like the object's, so the two are compared
                        // (and differ), not set aside as incomparable.
                        let etag = match etag_shape(&remote.etag) {
                            EtagShape::Single => UNREADABLE.to_owned(),
                            EtagShape::Multipart(n) => format!("{UNREADABLE}-{n}"),
                        };
                        (etag, None)
                    }
                };
                file.etag = etag;
                let pair = match local {
                    Side::Source => Pair::Both(file, remote),
                    Side::Destination => Pair::Both(remote, file),
                };
                (Ok(pair), keep)
            }
        })
        .buffered(HASHING_AT_ONCE)
        .map(move |(pair, keep)| {
            // Back in key order: the new store is written in it.
            if let (Some(pass), Some(digest)) = (&keeping, keep) {
                pass.lock().unwrap_or_else(|p| p.into_inner()).keep(&digest);
            }
            pair
        });
    let Some(pass) = pass else {
        return hashed.boxed();
    };
    // Only a pass that saw the whole stream replaces the stored digests.
    let finish = futures::stream::once(async move {
        let pass = Arc::into_inner(pass).map(|p| p.into_inner().unwrap_or_else(|p| p.into_inner()));
        if let Some(pass) = pass {
            let _ = tokio::task::spawn_blocking(move || pass.finish()).await;
        }
    })
    .filter_map(|()| futures::future::ready(None));
    hashed.chain(finish).boxed()
}

/// A file's ETag, and whether it was read to get it (else a remembered
/// digest gave it), with the digest to remember for the next pass.
struct FileEtag {
    etag: String,
    read: bool,
    keep: Option<Remembered>,
}

/// The ETag of the file at `path` in the shape of `remote`: from the
/// digest `remembered` when its fingerprint is the file's, else read.
/// `remembering`: a digest kept is stored for the next pass, so a file
/// about to settle is worth the wait ([`Fingerprint::of_settling`]).
fn file_etag(
    path: &Path,
    key: String,
    size: u64,
    remote: &str,
    part_size: u64,
    (remembering, remembered): (bool, Option<Remembered>),
) -> std::io::Result<FileEtag> {
    let before = if remembering {
        Fingerprint::of_settling(path)?
    } else {
        Fingerprint::of(path)?
    };
    let remembered = remembered.filter(|r| before.is_some_and(|(print, _)| print == r.print));
    if let Some(etag) = remembered.as_ref().and_then(|r| r.etag_like(remote)) {
        return Ok(FileEtag {
            etag: etag.to_owned(),
            read: false,
            keep: remembered.clone(),
        });
    }
    let etag = etag_like(path, size, remote, part_size)?;
    // Remembered only if settled before the read and unchanged by its end.
    let keep = match (before, Fingerprint::of(path)?) {
        (Some((print, true)), Some((after, _))) if print == after && print.size == size => {
            Some(match remembered {
                Some(digest) => digest.with(etag.clone()),
                None => Remembered {
                    key,
                    print,
                    etags: vec![etag.clone()],
                },
            })
        }
        _ => None,
    };
    Ok(FileEtag {
        etag,
        read: true,
        keep,
    })
}

/// The ETag of a file that could not be read: equal to no object's.
const UNREADABLE: &str = "unreadable";

const MIB: u64 = 1024 * 1024;
/// Part sizes common tools upload with: the AWS CLI and boto3 (8), S3's
/// minimum and rclone (5), s3cmd (15), 16 and 64 (many SDK defaults),
/// s5cmd (50), 100.
const COMMON_PART_SIZES: [u64; 8] = [8, 5, 16, 15, 50, 64, 100, 128];

/// The ETag of the file at `path` (`size` bytes) in the shape of `remote`,
/// the ETag of the object it is compared with.
pub fn etag_like(path: &Path, size: u64, remote: &str, part_size: u64) -> std::io::Result<String> {
    let parts = match etag_shape(remote) {
        EtagShape::Single => return md5_etag(path, size, None),
        EtagShape::Multipart(parts) => parts as u64,
    };
    let mut tried = Vec::new();
    for candidate in part_size_candidates(size, parts, part_size) {
        let etag = md5_etag(path, size, Some(candidate))?;
        if etag == remote {
            return Ok(etag);
        }
        tried.push(etag);
    }
    // No layout matches: any `-N` ETag of this file will do to say so
    // (one of the same shape, so the two are compared and differ).
    Ok(tried
        .into_iter()
        .next()
        .unwrap_or_else(|| format!("no-layout-{parts}")))
}

/// Part sizes that cut `size` bytes into exactly `parts` parts, most likely
/// first, without repeats.
pub fn part_size_candidates(size: u64, parts: u64, part_size: u64) -> Vec<u64> {
    let even = size.div_ceil(parts.max(1)).div_ceil(MIB) * MIB;
    let mut candidates: Vec<u64> = std::iter::once(part_size)
        .chain(COMMON_PART_SIZES.iter().map(|m| m * MIB))
        .chain(std::iter::once(even))
        .filter(|p| *p > 0 && size.div_ceil(*p) == parts)
        .collect();
    let mut seen = std::collections::HashSet::new();
    candidates.retain(|p| seen.insert(*p));
    candidates
}

/// The MD5 ETag of a file's first `size` bytes, whole (`None`) or in parts.
///
/// A multipart ETag's parts are hashed on several threads at once. MD5 is
/// one core's work at about 600 MB/s, and verifying a restore is mostly
/// MD5 (a quarter of the machine's CPU in `perf` for a tree of large
/// files). The parts are independent, so a large file no longer keeps one
/// core busy while the others wait for it.
pub fn md5_etag(path: &Path, size: u64, part_size: Option<u64>) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    let Some(part_size) = part_size.filter(|p| *p > 0) else {
        return Ok(hex(&md5_of_range(&file, 0, size)?));
    };
    // An empty file is one empty part, as S3 makes it.
    let parts = size.div_ceil(part_size).max(1);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get() as u64)
        .clamp(1, HASHING_THREADS)
        .min(parts);
    let per_thread = parts.div_ceil(threads);
    let hash_parts = |first: u64| -> std::io::Result<Vec<u8>> {
        let mut digests = Vec::new();
        for part in first..(first + per_thread).min(parts) {
            let start = part * part_size;
            let length = part_size.min(size - start);
            digests.extend_from_slice(&md5_of_range(&file, start, length)?);
        }
        Ok(digests)
    };
    let digests = std::thread::scope(|scope| {
        let hashing: Vec<_> = (1..threads)
            .map(|t| scope.spawn(move || hash_parts(t * per_thread)))
            .collect();
        // This thread takes the first share rather than waiting.
        let mut digests = hash_parts(0)?;
        for thread in hashing {
            digests.extend(thread.join().expect("hashing a file's parts panicked")?);
        }
        Ok::<_, std::io::Error>(digests)
    })?;
    Ok(format!("{}-{parts}", hex(&Md5::digest(&digests))))
}

/// Threads that hash one file's parts at once.
const HASHING_THREADS: u64 = 4;

/// The MD5 of `length` bytes of `file` from `start`, or of fewer where the
/// file ends sooner (then the ETag is simply another file's).
fn md5_of_range(file: &std::fs::File, start: u64, length: u64) -> std::io::Result<[u8; 16]> {
    use std::os::unix::fs::FileExt;
    // Up to four files at once, each on up to four threads: 256 KiB a
    // read keeps their buffers to 4 MiB in all, and MD5 no slower.
    let mut buffer = vec![0u8; ((256 * 1024).min(length) as usize).max(1)];
    let mut digest = Md5::new();
    let mut done = 0;
    while done < length {
        let want = buffer.len().min((length - done) as usize);
        let read = match file.read_at(&mut buffer[..want], start + done) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        digest.update(&buffer[..read]);
        done += read as u64;
    }
    Ok(digest.finalize().into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_match_what_s3_computes() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        // md5("hello")
        assert_eq!(
            md5_etag(&path, 5, None).unwrap(),
            "5d41402abc4b2a76b9719d911017c592"
        );
        // Two parts, "hel" and "lo": md5(md5("hel") ++ md5("lo")), checked
        // against the definition computed here independently.
        let both: Vec<u8> = [Md5::digest(b"hel"), Md5::digest(b"lo")].concat();
        let expected = format!("{}-2", hex(&Md5::digest(&both)));
        assert_eq!(md5_etag(&path, 5, Some(3)).unwrap(), expected);
        assert_eq!(
            etag_like(&path, 5, "x-1", 3)
                .unwrap()
                .rsplit_once('-')
                .unwrap()
                .1,
            "1"
        );
        std::fs::write(&path, b"").unwrap();
        assert_eq!(
            md5_etag(&path, 0, None).unwrap(),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
    }

    #[test]
    fn parts_hashed_on_several_threads_give_the_etag_of_one_pass() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let bytes: Vec<u8> = (0..20u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        // Seven parts of 3 bytes, the last of 2: more parts than threads,
        // and a count that does not divide among them.
        let parts: Vec<u8> = bytes
            .chunks(3)
            .flat_map(|c| Md5::digest(c).to_vec())
            .collect();
        let expected = format!("{}-7", hex(&Md5::digest(&parts)));
        assert_eq!(md5_etag(&path, 20, Some(3)).unwrap(), expected);
        // One part, and an empty file as one empty part.
        assert_eq!(
            md5_etag(&path, 20, Some(32)).unwrap(),
            format!("{}-1", hex(&Md5::digest(Md5::digest(&bytes))))
        );
        std::fs::write(&path, b"").unwrap();
        assert_eq!(
            md5_etag(&path, 0, Some(3)).unwrap(),
            format!("{}-1", hex(&Md5::digest(Md5::digest(b""))))
        );
    }

    #[test]
    fn layouts_are_inferred_from_the_part_count() {
        let size = 20 * MIB + 1;
        // 3 parts: 8 MiB (AWS CLI) fits, as does the even 7 MiB split;
        // 5 MiB (5 parts) and 16 MiB (2 parts) do not.
        let candidates = part_size_candidates(size, 3, 8 * MIB);
        assert_eq!(candidates, vec![8 * MIB, 7 * MIB]);
        assert!(candidates.iter().all(|p| size.div_ceil(*p) == 3));
        // An unusual size still gets the even split.
        assert_eq!(
            part_size_candidates(7 * MIB * 3, 3, 8 * MIB),
            vec![8 * MIB, 7 * MIB]
        );
    }
}
