//! Verify a whole archive before anything is applied.
//!
//! One sequential read: every entry must be where the format puts it
//! (object entries numbered from 1 without gaps, then the manifest, then
//! the trailer, then nothing), every object entry as long as its header
//! says (a cut archive ends inside one), the manifest's SHA-256 and size as
//! the trailer says, and then every exported object's length and SHA-256 as
//! its manifest line says, each entry claimed by exactly one line. The
//! manifest is kept in a temp file for the import to read, held to the
//! format's caps on its way there ([`CappedSpool`]: a decompression bomb is
//! refused at the cap, not after it filled the disk); the per-entry
//! digests go through a temp file too, so memory stays flat however many
//! objects the archive holds.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use tempfile::TempPath;

use super::codec::{Compression, Consumed, open_counted_tar_stream, sniff};
use super::digest::{Digested, digest_all};
use super::error::ArchiveError;
use super::format::{
    ARCHIVE_FORMAT, FORMAT_VERSION, MANIFEST_ENTRY, MAX_TRAILER_BYTES, ManifestHeader,
    TRAILER_ENTRY, Trailer, manifest_size_cap, object_entry_name, object_entry_seq,
};
use super::manifest::{CappedSpool, ManifestReader, OverCap};

/// An archive that passed every check.
#[derive(Debug)]
pub struct CheckedArchive {
    pub path: PathBuf,
    pub compression: Compression,
    /// The manifest, copied out of the archive.
    pub manifest: TempPath,
    pub header: ManifestHeader,
    pub trailer: Trailer,
}

/// Read and check all of `path`; see the module docs for what is checked.
pub fn check_archive(path: &Path) -> Result<CheckedArchive, ArchiveError> {
    let compression = sniff(path)
        .map_err(ArchiveError::io(format!("reading {}", path.display())))?
        .ok_or_else(|| {
            ArchiveError::refused(
                path,
                "not an s3-fanout archive: neither a tar nor a zstd-compressed tar",
            )
        })?;
    let (digests_file, digests_path) = tempfile::NamedTempFile::new()
        .map_err(ArchiveError::io("creating a temp file"))?
        .into_parts();
    let mut entries = Entries {
        digests: BufWriter::new(digests_file),
        manifest: None,
        trailer: None,
        objects: 0,
        object_bytes: 0,
    };
    entries.read(path, compression)?;
    let Entries {
        digests,
        manifest,
        trailer,
        objects,
        object_bytes,
    } = entries;
    let Some(trailer) = trailer else {
        return Err(ArchiveError::refused(
            path,
            match manifest {
                None => {
                    "no manifest and no trailer: the archive is truncated or was not written by s3-fanout export"
                }
                Some(_) => "no trailer: the archive is truncated",
            },
        ));
    };
    let Some((manifest, manifest_digest)) = manifest else {
        unreachable!("a trailer is only accepted after a manifest");
    };
    check_trailer(path, &trailer, &manifest_digest, (objects, object_bytes))?;
    finish_digests(digests)?;
    let header = check_entries_against_manifest(path, &manifest, &digests_path, &trailer)?;
    Ok(CheckedArchive {
        path: path.to_owned(),
        compression,
        manifest,
        header,
        trailer,
    })
}

/// What the one pass over the archive's entries found.
struct Entries {
    /// Each object entry's "length sha256", a line each, in entry order.
    digests: BufWriter<File>,
    /// The manifest's spool and digest.
    manifest: Option<(TempPath, Digested)>,
    trailer: Option<Trailer>,
    objects: u64,
    object_bytes: u64,
}

/// The refusal of an archive a read broke off in.
fn damaged(path: &Path) -> impl Fn(std::io::Error) -> ArchiveError + '_ {
    move |e| {
        ArchiveError::refused(
            path,
            format!("the archive is damaged or cut short (truncated?): {e}"),
        )
    }
}

/// The refusal of an entry shorter than its header says.
fn cut(path: &Path, name: &str, got: u64, declared: u64) -> ArchiveError {
    ArchiveError::refused(
        path,
        format!("entry {name:?} is cut short: {got} of {declared} bytes (truncated archive)"),
    )
}

impl Entries {
    /// Every entry, in order, each where the format puts it.
    fn read(&mut self, path: &Path, compression: Compression) -> Result<(), ArchiveError> {
        let refused = |why: String| ArchiveError::refused(path, why);
        let (stream, consumed) = open_counted_tar_stream(path, compression)
            .map_err(ArchiveError::io(format!("reading {}", path.display())))?;
        let mut archive = tar::Archive::new(stream);
        // Raw: every header is an entry of its own; GNU long names and PAX
        // extensions (which this tool never writes) show up as the unexpected
        // entries they are instead of silently renaming the next one.
        let entries = archive.entries().map_err(damaged(path))?.raw(true);
        for entry in entries {
            let mut entry = entry.map_err(damaged(path))?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            if self.trailer.is_some() {
                return Err(refused(format!("entry {name:?} follows the trailer")));
            }
            if !entry.header().entry_type().is_file() {
                return Err(refused(format!("entry {name:?} is not a regular file")));
            }
            if let Some(seq) = object_entry_seq(&name) {
                self.object(path, &name, seq, &mut entry)?;
            } else if name == MANIFEST_ENTRY {
                self.manifest(path, &name, &consumed, &mut entry)?;
            } else if name == TRAILER_ENTRY {
                self.trailer(path, &name, &mut entry)?;
            } else {
                return Err(refused(format!("unexpected entry {name:?}")));
            }
        }
        Ok(())
    }

    /// Object entry `seq`: the next in number, before the manifest; its
    /// digest goes to the temp file.
    fn object(
        &mut self,
        path: &Path,
        name: &str,
        seq: u64,
        entry: &mut tar::Entry<impl Read>,
    ) -> Result<(), ArchiveError> {
        let refused = |why: String| ArchiveError::refused(path, why);
        if self.manifest.is_some() {
            return Err(refused(format!(
                "object entry {name:?} follows the manifest"
            )));
        }
        if seq != self.objects + 1 {
            return Err(refused(format!(
                "expected entry {:?}, found {name:?}",
                object_entry_name(self.objects + 1)
            )));
        }
        let declared = entry.size();
        let digest = digest_all(entry, &mut std::io::sink()).map_err(damaged(path))?;
        if digest.length != declared {
            return Err(cut(path, name, digest.length, declared));
        }
        writeln!(self.digests, "{} {}", digest.length, digest.sha256)
            .map_err(ArchiveError::io("writing a temp file"))?;
        self.objects += 1;
        self.object_bytes += digest.length;
        Ok(())
    }

    /// The one manifest entry, spooled to a temp file under the format's
    /// caps.
    fn manifest(
        &mut self,
        path: &Path,
        name: &str,
        consumed: &Consumed,
        entry: &mut tar::Entry<impl Read>,
    ) -> Result<(), ArchiveError> {
        if self.manifest.is_some() {
            return Err(ArchiveError::refused(path, "two manifest entries"));
        }
        let declared = entry.size();
        let (file, spool) = tempfile::NamedTempFile::new()
            .map_err(ArchiveError::io("creating the manifest spool"))?
            .into_parts();
        let mut out = CappedSpool::new(BufWriter::new(file), consumed.clone());
        let digest = digest_all(entry, &mut out).map_err(|e| match OverCap::reason(&e) {
            Some(why) => ArchiveError::refused(path, why.to_owned()),
            None => damaged(path)(e),
        })?;
        out.into_inner()
            .flush()
            .map_err(ArchiveError::io("writing the manifest spool"))?;
        if digest.length != declared {
            return Err(cut(path, name, digest.length, declared));
        }
        self.manifest = Some((spool, digest));
        Ok(())
    }

    /// The trailer: after the manifest, small, and JSON.
    fn trailer(
        &mut self,
        path: &Path,
        name: &str,
        entry: &mut tar::Entry<impl Read>,
    ) -> Result<(), ArchiveError> {
        let refused = |why: String| ArchiveError::refused(path, why);
        if self.manifest.is_none() {
            return Err(refused("the trailer comes before any manifest".into()));
        }
        let declared = entry.size();
        if declared > MAX_TRAILER_BYTES {
            return Err(refused(format!("the trailer is {declared} bytes long")));
        }
        let mut text = Vec::new();
        entry.read_to_end(&mut text).map_err(damaged(path))?;
        if text.len() as u64 != declared {
            return Err(cut(path, name, text.len() as u64, declared));
        }
        self.trailer = Some(
            serde_json::from_slice(&text)
                .map_err(|e| refused(format!("the trailer is not readable: {e}")))?,
        );
        Ok(())
    }
}

/// The trailer against what the pass found: its format, the manifest's
/// size cap and checksum, and the object entries' count and bytes.
fn check_trailer(
    path: &Path,
    trailer: &Trailer,
    manifest_digest: &Digested,
    (objects, object_bytes): (u64, u64),
) -> Result<(), ArchiveError> {
    let refused = |why: String| ArchiveError::refused(path, why);
    if trailer.format != ARCHIVE_FORMAT || trailer.version != FORMAT_VERSION {
        return Err(refused(format!(
            "the trailer says {} version {}; this s3-fanout reads {ARCHIVE_FORMAT} version {FORMAT_VERSION}",
            trailer.format, trailer.version
        )));
    }
    // The size cap, now that the count is known: the line caps held while
    // the manifest streamed, and the line count is matched to this one when
    // the manifest is read again (check_entries_against_manifest).
    if trailer.manifest_bytes > manifest_size_cap(trailer.manifest_objects) {
        return Err(refused(format!(
            "the trailer says the manifest has {} bytes for {} objects, over the format's cap of {} bytes",
            trailer.manifest_bytes,
            trailer.manifest_objects,
            manifest_size_cap(trailer.manifest_objects)
        )));
    }
    if trailer.manifest_sha256 != manifest_digest.sha256
        || trailer.manifest_bytes != manifest_digest.length
    {
        return Err(refused(format!(
            "the manifest does not match the trailer's checksum (SHA-256 {} of {} bytes, expected {} of {} bytes): it was altered or damaged",
            manifest_digest.sha256,
            manifest_digest.length,
            trailer.manifest_sha256,
            trailer.manifest_bytes
        )));
    }
    if trailer.object_entries != objects || trailer.object_bytes != object_bytes {
        return Err(refused(format!(
            "the archive has {objects} object entries ({object_bytes} bytes), the trailer says {} ({} bytes)",
            trailer.object_entries, trailer.object_bytes
        )));
    }
    Ok(())
}

/// Flush the digests' temp file, for the second pass to read.
fn finish_digests(mut digests: BufWriter<File>) -> Result<(), ArchiveError> {
    digests
        .flush()
        .map_err(ArchiveError::io("writing a temp file"))
}

/// Walk the manifest and the entries' digests together: each exported
/// line names the next entry, with its length and SHA-256.
fn check_entries_against_manifest(
    path: &Path,
    manifest: &Path,
    digests: &Path,
    trailer: &Trailer,
) -> Result<ManifestHeader, ArchiveError> {
    let refused = |why: String| ArchiveError::refused(path, why);
    let mut reader = ManifestReader::open(manifest, path)?;
    let mut records =
        BufReader::new(File::open(digests).map_err(ArchiveError::io("reading a temp file"))?)
            .lines();
    let (mut lines, mut seq) = (0u64, 0u64);
    while let Some(entry) = reader.next_entry()? {
        lines += 1;
        let Some(export) = &entry.export else {
            continue;
        };
        seq += 1;
        let expected = object_entry_name(seq);
        if export.entry != expected {
            return Err(refused(format!(
                "manifest line {} names entry {:?} where {expected:?} comes next",
                reader.line_no(),
                export.entry
            )));
        }
        let Some(record) = records.next() else {
            return Err(refused(format!(
                "manifest line {} names entry {expected:?}, which the archive does not have",
                reader.line_no()
            )));
        };
        let record = record.map_err(ArchiveError::io("reading a temp file"))?;
        let (length, sha256) = record.split_once(' ').unwrap_or_default();
        if length != export.length.to_string() || sha256 != export.sha256 {
            return Err(refused(format!(
                "entry {expected:?} (key {:?}) does not match its checksum: {length} bytes with SHA-256 {sha256}, the manifest says {} bytes with SHA-256 {}; it was altered or damaged",
                entry.key, export.length, export.sha256
            )));
        }
        if entry.not_exported.is_none() && export.length != entry.size {
            return Err(refused(format!(
                "manifest line {} says key {:?} has {} bytes but its entry has {}",
                reader.line_no(),
                entry.key,
                entry.size,
                export.length
            )));
        }
    }
    if records.next().is_some() {
        return Err(refused(format!(
            "the archive has {} object entries, the manifest names {seq}",
            trailer.object_entries
        )));
    }
    if lines != trailer.manifest_objects {
        return Err(refused(format!(
            "the manifest lists {lines} objects, the trailer says {}",
            trailer.manifest_objects
        )));
    }
    Ok(reader.header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::format::{
        Baseline, Exported, MANIFEST_FORMAT, ManifestEntry, ObjectHeaders,
    };
    use crate::archive::manifest::ManifestWriter;
    use crate::archive::writer::TarWriter;
    use crate::model::entry::ObjectEntry;

    /// An archive of `objects` (key, bytes), all exported, plus `kept`, a
    /// key listed but not exported.
    fn build(
        dir: &Path,
        name: &str,
        compression: Compression,
        objects: &[(&str, &[u8])],
    ) -> PathBuf {
        let path = dir.join(name);
        let mut tar = TarWriter::new(File::create(&path).unwrap(), compression, 0).unwrap();
        let mut manifest = ManifestWriter::create(&ManifestHeader {
            format: MANIFEST_FORMAT.into(),
            version: FORMAT_VERSION,
            source: "s3://src/".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            since: Baseline::Full,
        })
        .unwrap();
        for (key, bytes) in objects {
            let appended = tar.append_object(0, bytes.len() as u64, *bytes).unwrap();
            assert!(appended.complete);
            let mut line = ManifestEntry::from_listed(&ObjectEntry {
                version_id: None,
                key: (*key).into(),
                size: bytes.len() as u64,
                etag: appended.digest.md5.clone(),
                last_modified_ms: 0,
                storage_class: None,
                checksum: None,
            });
            line.export = Some(Exported {
                entry: appended.name,
                length: appended.digest.length,
                sha256: appended.digest.sha256,
                md5: appended.digest.md5,
                part_size: None,
                headers: ObjectHeaders::default(),
                tags: vec![],
            });
            manifest.push(&line).unwrap();
        }
        manifest
            .push(&ManifestEntry::from_listed(&ObjectEntry {
                version_id: None,
                key: "zz-kept".into(),
                size: 1,
                etag: "e".into(),
                last_modified_ms: 0,
                storage_class: None,
                checksum: None,
            }))
            .unwrap();
        let (spool, lines) = manifest.finish().unwrap();
        tar.finish(&spool, lines).unwrap();
        path
    }

    const OBJECTS: &[(&str, &[u8])] = &[("a", b"first body"), ("b/../c", b""), ("d", b"third")];

    fn refusal(path: &Path) -> String {
        match check_archive(path) {
            Err(err @ ArchiveError::Refused { .. }) => err.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_written_archive_checks_plain_and_compressed() {
        let dir = tempfile::tempdir().unwrap();
        for compression in [Compression::None, Compression::Zstd] {
            let path = build(dir.path(), "a", compression, OBJECTS);
            let checked = check_archive(&path).unwrap();
            assert_eq!(checked.compression, compression);
            assert_eq!(checked.trailer.object_entries, 3);
            assert_eq!(checked.trailer.manifest_objects, 4);
            assert_eq!(checked.header.source, "s3://src/");
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for compression in [Compression::None, Compression::Zstd] {
            let path = build(dir.path(), "t", compression, OBJECTS);
            let whole = std::fs::read(&path).unwrap();
            // The last 1,024 bytes of a plain tar are its end-of-archive
            // blocks: without them every entry is still there and checked.
            let end = match compression {
                Compression::None => whole.len() - 1024,
                Compression::Zstd => whole.len(),
            };
            let cut = dir.path().join("cut");
            for len in (0..end).step_by(97).chain([end - 1]) {
                std::fs::write(&cut, &whole[..len]).unwrap();
                let why = refusal(&cut);
                assert!(why.contains("refusing"), "{len}: {why}");
            }
        }
    }

    #[test]
    fn an_altered_object_or_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = build(dir.path(), "x", Compression::None, OBJECTS);
        let whole = std::fs::read(&path).unwrap();
        let at = |needle: &[u8]| {
            whole
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap()
        };

        let mut object = whole.clone();
        object[at(b"first body") + 3] ^= 0x01;
        std::fs::write(&path, &object).unwrap();
        let why = refusal(&path);
        assert!(why.contains("does not match its checksum"), "{why}");

        let mut manifest = whole.clone();
        let key = at(b"\"key\":\"d\"");
        manifest[key + 7] = b'e';
        std::fs::write(&path, &manifest).unwrap();
        let why = refusal(&path);
        assert!(
            why.contains("does not match the trailer's checksum"),
            "{why}"
        );
    }

    /// An archive of no objects whose manifest is `manifest`, its trailer
    /// claiming `objects` lines: checksums right, contents whatever a test
    /// needs.
    fn with_manifest(
        dir: &Path,
        compression: Compression,
        manifest: &[u8],
        objects: u64,
    ) -> PathBuf {
        let spool = dir.join("spool");
        std::fs::write(&spool, manifest).unwrap();
        let path = dir.join("m.tar");
        let tar = TarWriter::new(File::create(&path).unwrap(), compression, 0).unwrap();
        tar.finish(&spool, objects).unwrap();
        path
    }

    fn header_line() -> String {
        let header = ManifestHeader {
            format: MANIFEST_FORMAT.into(),
            version: FORMAT_VERSION,
            source: "s3://src/".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            since: Baseline::Full,
        };
        serde_json::to_string(&header).unwrap() + "\n"
    }

    #[test]
    fn a_manifest_line_over_its_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = header_line().into_bytes();
        manifest.extend(std::iter::repeat_n(b'x', 200 * 1024));
        manifest.push(b'\n');
        for compression in [Compression::None, Compression::Zstd] {
            let path = with_manifest(dir.path(), compression, &manifest, 1);
            let why = refusal(&path);
            assert!(
                why.contains("manifest line 2 is longer than 131072 bytes"),
                "{why}"
            );
        }
    }

    #[test]
    fn a_manifest_over_the_size_cap_for_its_count_is_refused() {
        // Two lines within the line cap, for an archive that says it lists
        // one object: 16 KiB + 1 x 128 KiB allowed, 200 KiB there.
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = header_line().into_bytes();
        for _ in 0..2 {
            manifest.extend(std::iter::repeat_n(b' ', 100 * 1024));
            manifest.push(b'\n');
        }
        let path = with_manifest(dir.path(), Compression::None, &manifest, 1);
        let why = refusal(&path);
        assert!(
            why.contains("for 1 objects, over the format's cap of 147456 bytes"),
            "{why}"
        );
    }

    #[test]
    fn a_manifest_that_expands_past_the_cap_is_refused_before_it_is_spooled() {
        // 8 MiB of empty lines: zstd stores them as 4-byte blocks of 128 KiB,
        // 32,768 times smaller, far past the 4,096 any real manifest needs.
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = header_line().into_bytes();
        manifest.resize(manifest.len() + (8 << 20), b'\n');
        let path = with_manifest(dir.path(), Compression::Zstd, &manifest, 0);
        let why = refusal(&path);
        assert!(why.contains("decompression bomb"), "{why}");
        // Not a line count: the same manifest, uncompressed, is refused for
        // what it is (blank lines) only once the trailer has vouched for it.
        let path = with_manifest(dir.path(), Compression::None, &manifest, 0);
        let why = refusal(&path);
        assert!(!why.contains("decompression bomb"), "{why}");
    }

    #[test]
    fn foreign_or_extra_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("foreign.tar");
        let mut builder = tar::Builder::new(File::create(&path).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        builder
            .append_data(&mut header, "etc/passwd", &b"hi"[..])
            .unwrap();
        builder.finish().unwrap();
        assert!(refusal(&path).contains("unexpected entry \"etc/passwd\""));

        let good = build(dir.path(), "g", Compression::None, OBJECTS);
        let mut bytes = std::fs::read(&good).unwrap();
        bytes.truncate(bytes.len() - 1024);
        let mut builder = tar::Builder::new(bytes);
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        builder
            .append_data(&mut header, "extra", &b"x"[..])
            .unwrap();
        std::fs::write(&path, builder.into_inner().unwrap()).unwrap();
        assert!(refusal(&path).contains("follows the trailer"));

        std::fs::write(&path, b"not a tar at all").unwrap();
        assert!(refusal(&path).contains("not an s3-fanout archive"));
    }
}
