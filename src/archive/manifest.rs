//! The manifest: JSON Lines, a [`ManifestHeader`] line, then one
//! [`ManifestEntry`] per listed object in ascending key order.
//!
//! It is written to a temp-file spool while the export lists (so memory does
//! not grow with the bucket) and read back a line at a time, in order, which
//! is what lets the importer merge-join it with a destination listing and
//! the exporter with the current listing of a delta.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::TempPath;

use super::check::check_archive;
use super::codec::sniff;
use super::error::ArchiveError;
use super::format::{FORMAT_VERSION, MANIFEST_FORMAT, ManifestEntry, ManifestHeader};
use crate::listing::ObjectEntry;

/// A manifest being spooled to a temp file.
pub struct ManifestWriter {
    out: BufWriter<File>,
    path: TempPath,
    objects: u64,
    last_key: Option<String>,
}

impl ManifestWriter {
    pub fn create(header: &ManifestHeader) -> Result<Self, ArchiveError> {
        let (file, path) = tempfile::NamedTempFile::new()
            .map_err(ArchiveError::io("creating the manifest spool"))?
            .into_parts();
        let mut writer = ManifestWriter {
            out: BufWriter::new(file),
            path,
            objects: 0,
            last_key: None,
        };
        writer.line(header)?;
        Ok(writer)
    }

    /// Add the next object. Keys must come in listing order: a manifest out
    /// of order would make the importer's merge-join call objects missing.
    pub fn push(&mut self, entry: &ManifestEntry) -> Result<(), ArchiveError> {
        if let Some(last) = &self.last_key {
            assert!(
                entry.key.as_str() > last.as_str(),
                "manifest keys out of order: {last:?} then {:?}",
                entry.key
            );
        }
        self.line(entry)?;
        self.objects += 1;
        self.last_key = Some(entry.key.clone());
        Ok(())
    }

    fn line(&mut self, value: &impl serde::Serialize) -> Result<(), ArchiveError> {
        let io = ArchiveError::io("writing the manifest spool");
        serde_json::to_writer(&mut self.out, value)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(io)
    }

    /// The spool file and the number of object lines in it.
    pub fn finish(mut self) -> Result<(TempPath, u64), ArchiveError> {
        self.out
            .flush()
            .map_err(ArchiveError::io("writing the manifest spool"))?;
        Ok((self.path, self.objects))
    }
}

/// Reads a manifest back, checking its header, each line's shape and the
/// key order as it goes.
pub struct ManifestReader {
    lines: BufReader<File>,
    /// The name errors give: the archive or file the manifest came from.
    shown_as: PathBuf,
    line_no: u64,
    previous_key: Option<String>,
    buffer: String,
    pub header: ManifestHeader,
    /// Keeps a temp-file manifest alive as long as it is read.
    _spool: Option<TempPath>,
}

impl ManifestReader {
    /// Open the manifest at `path`; errors name `shown_as`.
    pub fn open(path: &Path, shown_as: &Path) -> Result<Self, ArchiveError> {
        let file = File::open(path)
            .map_err(ArchiveError::io(format!("opening {}", shown_as.display())))?;
        let mut reader = ManifestReader {
            lines: BufReader::with_capacity(1 << 16, file),
            shown_as: shown_as.to_owned(),
            line_no: 0,
            previous_key: None,
            buffer: String::new(),
            header: ManifestHeader {
                format: String::new(),
                version: 0,
                source: String::new(),
                created_at: String::new(),
                since: Default::default(),
            },
            _spool: None,
        };
        let refused = |why: String| ArchiveError::refused(shown_as, why);
        let Some(first) = reader.next_line()? else {
            return Err(refused("the manifest is empty".into()));
        };
        let header: ManifestHeader = serde_json::from_str(first).map_err(|e| {
            refused(format!(
                "the manifest's first line is not a manifest header: {e}"
            ))
        })?;
        if header.format != MANIFEST_FORMAT {
            return Err(refused(format!(
                "the manifest's format is {:?}, not {MANIFEST_FORMAT:?}",
                header.format
            )));
        }
        if header.version != FORMAT_VERSION {
            return Err(refused(format!(
                "manifest version {} (this s3-fanout reads version {FORMAT_VERSION})",
                header.version
            )));
        }
        reader.header = header;
        Ok(reader)
    }

    /// [`ManifestReader::open`] on a temp file, which lives as long as the reader.
    pub fn open_spool(spool: TempPath, shown_as: &Path) -> Result<Self, ArchiveError> {
        let mut reader = Self::open(&spool, shown_as)?;
        reader._spool = Some(spool);
        Ok(reader)
    }

    fn next_line(&mut self) -> Result<Option<&str>, ArchiveError> {
        self.buffer.clear();
        let read = self.lines.read_line(&mut self.buffer).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                ArchiveError::refused(&self.shown_as, "the manifest is not UTF-8")
            } else {
                ArchiveError::io(format!("reading {}", self.shown_as.display()))(e)
            }
        })?;
        if read == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        if !self.buffer.ends_with('\n') {
            return Err(ArchiveError::refused(
                &self.shown_as,
                format!("manifest line {} is cut short", self.line_no),
            ));
        }
        Ok(Some(self.buffer.trim_end_matches('\n')))
    }

    /// The next object, `None` after the last.
    pub fn next_entry(&mut self) -> Result<Option<ManifestEntry>, ArchiveError> {
        let Some(line) = self.next_line()? else {
            return Ok(None);
        };
        let entry: ManifestEntry = serde_json::from_str(line).map_err(|e| {
            ArchiveError::refused(
                &self.shown_as,
                format!("manifest line {} is not an object line: {e}", self.line_no),
            )
        })?;
        if let Some(previous) = &self.previous_key
            && entry.key.as_str() <= previous.as_str()
        {
            return Err(ArchiveError::refused(
                &self.shown_as,
                format!(
                    "manifest line {} is out of order: {:?} after {previous:?}",
                    self.line_no, entry.key
                ),
            ));
        }
        self.previous_key = Some(entry.key.clone());
        Ok(Some(entry))
    }

    /// The 1-based number of the last line read (the header is line 1).
    pub fn line_no(&self) -> u64 {
        self.line_no
    }
}

/// `--since-manifest PREV`: a previous archive, or a manifest file taken out
/// of one (`--manifest-out`, or `tar -xOf A manifest.jsonl`). An archive is
/// verified whole first, as an import would, so a delta is never computed
/// against a damaged manifest.
pub fn open_previous(path: &Path) -> Result<ManifestReader, ArchiveError> {
    let kind = sniff(path).map_err(ArchiveError::io(format!("reading {}", path.display())))?;
    if kind.is_some() {
        let checked = check_archive(path)?;
        return ManifestReader::open_spool(checked.manifest, path);
    }
    ManifestReader::open(path, path)
}

/// Answers "is this listed object unchanged since the previous manifest?"
/// for a listing in ascending order, walking the manifest alongside it.
pub struct UnchangedSince {
    previous: ManifestReader,
    peeked: Option<ManifestEntry>,
}

impl UnchangedSince {
    pub fn new(mut previous: ManifestReader) -> Result<Self, ArchiveError> {
        let peeked = previous.next_entry()?;
        Ok(Self { previous, peeked })
    }

    /// Unchanged: the previous manifest lists the key with the same size
    /// and ETag, and did not mark it as missing from its archive (such a key
    /// is exported again until an archive carries it).
    pub fn unchanged(&mut self, entry: &ObjectEntry) -> Result<bool, ArchiveError> {
        while let Some(previous) = &self.peeked
            && previous.key.as_str() < entry.key.as_str()
        {
            self.peeked = self.previous.next_entry()?;
        }
        Ok(self.peeked.as_ref().is_some_and(|previous| {
            previous.key == entry.key
                && previous.size == entry.size
                && previous.etag == entry.etag
                && previous.not_exported.is_none()
        }))
    }

    pub fn header(&self) -> &ManifestHeader {
        &self.previous.header
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::format::Baseline;

    fn header() -> ManifestHeader {
        ManifestHeader {
            format: MANIFEST_FORMAT.into(),
            version: FORMAT_VERSION,
            source: "s3://b/".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            since: Baseline::Full,
        }
    }

    fn entry(key: &str, size: u64, etag: &str) -> ManifestEntry {
        ManifestEntry::from_listed(&ObjectEntry {
            key: key.into(),
            size,
            etag: etag.into(),
            last_modified_ms: 0,
            storage_class: None,
        })
    }

    #[test]
    fn a_spooled_manifest_reads_back_in_order() {
        let mut writer = ManifestWriter::create(&header()).unwrap();
        for key in ["a", "a b", "a/b", "ü"] {
            writer.push(&entry(key, 1, "e")).unwrap();
        }
        let (spool, objects) = writer.finish().unwrap();
        assert_eq!(objects, 4);
        let mut reader = ManifestReader::open_spool(spool, Path::new("m")).unwrap();
        assert_eq!(reader.header, header());
        let mut keys = Vec::new();
        while let Some(e) = reader.next_entry().unwrap() {
            keys.push(e.key);
        }
        assert_eq!(keys, ["a", "a b", "a/b", "ü"]);
    }

    #[test]
    fn unordered_cut_or_foreign_manifests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let head = serde_json::to_string(&header()).unwrap();
        let line = |key| serde_json::to_string(&entry(key, 1, "e")).unwrap();
        let unordered = write("u", format!("{head}\n{}\n{}\n", line("b"), line("a")));
        let mut reader = ManifestReader::open(&unordered, &unordered).unwrap();
        reader.next_entry().unwrap();
        let err = reader.next_entry().unwrap_err().to_string();
        assert!(err.contains("out of order"), "{err}");

        let cut = write("c", format!("{head}\n{}", &line("a")[..10]));
        let mut reader = ManifestReader::open(&cut, &cut).unwrap();
        assert!(
            reader
                .next_entry()
                .unwrap_err()
                .to_string()
                .contains("cut short")
        );

        let foreign = write("f", "{\"hello\":1}\n".into());
        assert!(ManifestReader::open(&foreign, &foreign).is_err());
    }

    #[test]
    fn unchanged_means_same_size_and_etag_and_fully_exported() {
        let mut writer = ManifestWriter::create(&header()).unwrap();
        writer.push(&entry("a", 1, "x")).unwrap();
        writer.push(&entry("c", 1, "x")).unwrap();
        let mut missing = entry("d", 1, "x");
        missing.not_exported = Some(crate::archive::format::NotExported {
            code: "AccessDenied".into(),
            message: "denied".into(),
            skipped: false,
        });
        writer.push(&missing).unwrap();
        writer.push(&entry("e", 1, "x")).unwrap();
        let (spool, _) = writer.finish().unwrap();
        let reader = ManifestReader::open_spool(spool, Path::new("m")).unwrap();
        let mut since = UnchangedSince::new(reader).unwrap();
        let listed = |key: &str, size, etag: &str| ObjectEntry {
            key: key.into(),
            size,
            etag: etag.into(),
            last_modified_ms: 9,
            storage_class: None,
        };
        assert!(since.unchanged(&listed("a", 1, "x")).unwrap());
        assert!(!since.unchanged(&listed("b", 1, "x")).unwrap(), "new key");
        assert!(!since.unchanged(&listed("c", 2, "x")).unwrap(), "size");
        assert!(
            !since.unchanged(&listed("d", 1, "x")).unwrap(),
            "not exported"
        );
        assert!(!since.unchanged(&listed("e", 1, "y")).unwrap(), "etag");
        assert!(
            !since.unchanged(&listed("f", 1, "x")).unwrap(),
            "past the end"
        );
    }
}
