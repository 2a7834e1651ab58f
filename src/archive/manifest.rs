//! The manifest: JSON Lines, a [`ManifestHeader`] line, then one
//! [`ManifestEntry`] per listed object in ascending key order.
//!
//! It is written to a temp-file spool while the export lists (so memory does
//! not grow with the bucket) and read back a line at a time, in order, which
//! is what lets the importer merge-join it with a destination listing and
//! the exporter with the current listing of a delta. Every line is held to
//! its cap ([`crate::archive::format::MAX_OBJECT_LINE_BYTES`]) on the way
//! in and on the way out, so one line never costs more memory than that.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use tempfile::TempPath;

use super::codec::Consumed;
use super::error::ArchiveError;
use super::format::{
    FORMAT_VERSION, MANIFEST_EXPANSION_ALLOWANCE, MANIFEST_FORMAT, MAX_HEADER_LINE_BYTES,
    MAX_MANIFEST_EXPANSION, MAX_NOT_EXPORTED_MESSAGE_BYTES, MAX_OBJECT_LINE_BYTES, ManifestEntry,
    ManifestHeader,
};
use crate::model::entry::ObjectEntry;

/// The cap on manifest line `line_no` (from 1), its newline included.
fn line_cap(line_no: u64) -> u64 {
    if line_no <= 1 {
        MAX_HEADER_LINE_BYTES
    } else {
        MAX_OBJECT_LINE_BYTES
    }
}

fn line_too_long(line_no: u64) -> String {
    let what = if line_no <= 1 {
        "the header line"
    } else {
        "an object line"
    };
    format!(
        "manifest line {line_no} is longer than {} bytes, the format's cap for {what}: the archive is damaged or was not written by s3-fanout export",
        line_cap(line_no)
    )
}

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
        writer.line(1, header)?;
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
        // The header is line 1.
        let line_no = self.objects + 2;
        match &entry.not_exported {
            Some(not) if not.message.len() > MAX_NOT_EXPORTED_MESSAGE_BYTES => {
                let mut clamped = entry.clone();
                if let Some(not) = &mut clamped.not_exported {
                    let mut end = MAX_NOT_EXPORTED_MESSAGE_BYTES - '…'.len_utf8();
                    while !not.message.is_char_boundary(end) {
                        end -= 1;
                    }
                    not.message.truncate(end);
                    not.message.push('…');
                }
                self.line(line_no, &clamped)?;
            }
            _ => self.line(line_no, entry)?,
        }
        self.objects += 1;
        self.last_key = Some(entry.key.clone());
        Ok(())
    }

    /// Write one line, within the cap a reader holds it to: an export must
    /// never write an archive its import refuses.
    fn line(&mut self, line_no: u64, value: &impl serde::Serialize) -> Result<(), ArchiveError> {
        let mut text = serde_json::to_vec(value)
            .map_err(|e| ArchiveError::io("writing the manifest spool")(e.into()))?;
        text.push(b'\n');
        if text.len() as u64 > line_cap(line_no) {
            return Err(ArchiveError::io(format!(
                "writing manifest line {line_no}, {} bytes",
                text.len()
            ))(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "over the format's cap of {} bytes for one line: the source server returned more headers, metadata or tags than S3 allows",
                    line_cap(line_no)
                ),
            )));
        }
        self.out
            .write_all(&text)
            .map_err(ArchiveError::io("writing the manifest spool"))
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
    buffer: Vec<u8>,
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
            buffer: Vec::new(),
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

    /// The next line, without its newline. Read through `take`, so a line
    /// over its cap costs the cap in memory, not the line's length: a
    /// `--since-manifest` file is read without the archive check's caps.
    fn next_line(&mut self) -> Result<Option<&str>, ArchiveError> {
        self.buffer.clear();
        let cap = line_cap(self.line_no + 1);
        let read = (&mut self.lines)
            .take(cap)
            .read_until(b'\n', &mut self.buffer)
            .map_err(ArchiveError::io(format!(
                "reading {}",
                self.shown_as.display()
            )))?;
        if read == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        if !self.buffer.ends_with(b"\n") {
            let why = if read as u64 == cap {
                line_too_long(self.line_no)
            } else {
                format!("manifest line {} is cut short", self.line_no)
            };
            return Err(ArchiveError::refused(&self.shown_as, why));
        }
        let line = &self.buffer[..self.buffer.len() - 1];
        std::str::from_utf8(line).map(Some).map_err(|_| {
            ArchiveError::refused(
                &self.shown_as,
                format!("manifest line {} is not UTF-8", self.line_no),
            )
        })
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

/// Why a manifest streaming out of an archive was stopped. It travels in the
/// `io::Error` its [`CappedSpool`] returns, so the check can refuse the
/// archive with this reason rather than call it damaged.
#[derive(Debug)]
pub struct OverCap(String);

impl std::fmt::Display for OverCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OverCap {}

impl OverCap {
    fn error(why: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, OverCap(why))
    }

    /// The reason, if `err` is a cap's.
    pub fn reason(err: &io::Error) -> Option<&str> {
        err.get_ref()?
            .downcast_ref::<OverCap>()
            .map(|over| over.0.as_str())
    }
}

/// The manifest's bytes on their way out of an archive into its spool, held
/// to the format's caps as they pass: each line to its own, and the whole to
/// [`MAX_MANIFEST_EXPANSION`] times the archive bytes the stream used
/// meanwhile. The trailer, which holds the object count, comes after the
/// manifest, so these are the caps that can hold while it streams. A write
/// past one fails, and that ends the copy: decompression stops within one
/// buffer of the cap, and neither disk nor memory sees the rest.
pub struct CappedSpool<W> {
    out: W,
    consumed: Consumed,
    consumed_at_start: u64,
    written: u64,
    /// The line being written (from 1) and its bytes so far.
    line_no: u64,
    line_len: u64,
}

impl<W: Write> CappedSpool<W> {
    /// `consumed` is the archive stream's count, read when the manifest
    /// entry starts.
    pub fn new(out: W, consumed: Consumed) -> Self {
        Self {
            out,
            consumed_at_start: consumed.get(),
            consumed,
            written: 0,
            line_no: 1,
            line_len: 0,
        }
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    fn check(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let (len, ends) = match rest.iter().position(|&b| b == b'\n') {
                Some(at) => (at + 1, true),
                None => (rest.len(), false),
            };
            self.line_len += len as u64;
            if self.line_len > line_cap(self.line_no) {
                return Err(OverCap::error(line_too_long(self.line_no)));
            }
            if ends {
                self.line_no += 1;
                self.line_len = 0;
            }
            rest = &rest[len..];
        }
        self.written += bytes.len() as u64;
        let used = self.consumed.get().saturating_sub(self.consumed_at_start);
        let allowed = MAX_MANIFEST_EXPANSION
            .saturating_mul(used)
            .saturating_add(MANIFEST_EXPANSION_ALLOWANCE);
        if self.written > allowed {
            return Err(OverCap::error(format!(
                "the manifest expands to more than {allowed} bytes out of {used} bytes of the archive, past the format's cap of {MAX_MANIFEST_EXPANSION} times (plus {MANIFEST_EXPANSION_ALLOWANCE} bytes): no export writes a manifest that repetitive (a decompression bomb?)"
            )));
        }
        Ok(())
    }
}

impl<W: Write> Write for CappedSpool<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.check(bytes)?;
        self.out.write_all(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
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
            version_id: None,
            key: key.into(),
            size,
            etag: etag.into(),
            last_modified_ms: 0,
            storage_class: None,
            checksum: None,
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
    fn lines_over_their_cap_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let head = serde_json::to_string(&header()).unwrap();
        let refusal = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let mut reader = match ManifestReader::open(&path, &path) {
                Ok(reader) => reader,
                Err(err) => return err.to_string(),
            };
            loop {
                match reader.next_entry() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("{name}: read to the end"),
                    Err(err) => return err.to_string(),
                }
            }
        };
        // A line one byte over the cap (its newline included), as a key.
        let at_cap = |cap: u64| {
            let bare = serde_json::to_string(&entry("", 1, "e")).unwrap().len() as u64;
            "k".repeat((cap - 1 - bare) as usize)
        };
        let fits = serde_json::to_string(&entry(&at_cap(MAX_OBJECT_LINE_BYTES), 1, "e")).unwrap();
        assert_eq!(fits.len() as u64 + 1, MAX_OBJECT_LINE_BYTES);
        let over = format!("{head}\n{fits}\n{}\n", fits.replacen("\"k", "\"kk", 1));
        let why = refusal("over", over);
        assert!(
            why.contains("manifest line 3 is longer than 131072 bytes"),
            "{why}"
        );
        // A header line padded with spaces past its cap: still JSON.
        let padded = format!(
            "{}{}\n",
            &head[..head.len() - 1],
            " ".repeat(16 * 1024) + "}"
        );
        let why = refusal("header", padded);
        assert!(
            why.contains("manifest line 1 is longer than 16384 bytes")
                && why.contains("header line"),
            "{why}"
        );
        // A multi-byte character cut at the cap is the length's fault.
        let long = format!("{head}\n{}\n", "é".repeat(MAX_OBJECT_LINE_BYTES as usize));
        let why = refusal("utf8", long);
        assert!(why.contains("longer than"), "{why}");
    }

    #[test]
    fn the_writer_clamps_messages_and_never_writes_a_line_over_the_cap() {
        let mut writer = ManifestWriter::create(&header()).unwrap();
        let mut failed = entry("a", 1, "x");
        failed.not_exported = Some(crate::archive::format::NotExported {
            code: "InternalError".into(),
            message: "é".repeat(3000),
            skipped: false,
        });
        writer.push(&failed).unwrap();
        let mut huge = entry("b", 1, "x");
        huge.export = Some(crate::archive::format::Exported {
            entry: crate::archive::format::object_entry_name(1),
            length: 1,
            sha256: String::new(),
            md5: String::new(),
            part_size: None,
            headers: crate::archive::format::ObjectHeaders {
                metadata: [("m".to_owned(), "v".repeat(200 * 1024))].into(),
                ..Default::default()
            },
            tags: Vec::new(),
        });
        let err = writer.push(&huge).unwrap_err().to_string();
        assert!(
            err.contains("over the format's cap of 131072 bytes"),
            "{err}"
        );
        let (spool, objects) = writer.finish().unwrap();
        assert_eq!(objects, 1);
        let mut reader = ManifestReader::open_spool(spool, Path::new("m")).unwrap();
        let message = reader
            .next_entry()
            .unwrap()
            .unwrap()
            .not_exported
            .unwrap()
            .message;
        assert!(
            message.len() <= MAX_NOT_EXPORTED_MESSAGE_BYTES,
            "{}",
            message.len()
        );
        assert!(message.starts_with("éé") && message.ends_with('…'));
        assert!(reader.next_entry().unwrap().is_none());
    }

    #[test]
    fn a_capped_spool_stops_at_a_long_line_or_past_the_expansion_cap() {
        let over = |spool: &mut CappedSpool<Vec<u8>>, bytes: &[u8]| {
            let err = spool.write(bytes).unwrap_err();
            OverCap::reason(&err).expect("a cap's error").to_owned()
        };
        // Lines are measured across writes; the header has its own cap.
        let mut spool = CappedSpool::new(Vec::new(), Consumed::default());
        spool.write_all(&[b'h'; 16 * 1024 - 1]).unwrap();
        spool.write_all(b"\n").unwrap();
        spool.write_all(&[b'o'; 100 * 1024]).unwrap();
        spool.write_all(&[b'o'; 28 * 1024 - 1]).unwrap();
        let why = over(&mut spool, b"oo");
        assert!(
            why.contains("manifest line 2 is longer than 131072"),
            "{why}"
        );
        assert_eq!(spool.into_inner().len(), 16 * 1024 + 128 * 1024 - 1);

        // Nothing of the archive consumed: 1 MiB of lines, and no more.
        let mut spool = CappedSpool::new(Vec::new(), Consumed::default());
        spool
            .write_all(&vec![b'\n'; MANIFEST_EXPANSION_ALLOWANCE as usize])
            .unwrap();
        let why = over(&mut spool, b"\n");
        assert!(why.contains("decompression bomb"), "{why}");
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
            version_id: None,
            key: key.into(),
            size,
            etag: etag.into(),
            last_modified_ms: 9,
            storage_class: None,
            checksum: None,
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
