//! What an archive holds: its entry names, the manifest's lines and the
//! trailer, as serde types. The layout is described in the module docs of
//! [`crate::archive`]; this file is its single definition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::entry::ObjectEntry;

/// The `format` field of a manifest's header line.
pub const MANIFEST_FORMAT: &str = "s3-fanout-manifest";
/// The `format` field of the trailer.
pub const ARCHIVE_FORMAT: &str = "s3-fanout-archive";
/// The one version this code writes and reads. A reader refuses any other:
/// an archive it half understands must not be half applied.
pub const FORMAT_VERSION: u32 = 1;

/// The manifest's entry name, after the last object entry.
pub const MANIFEST_ENTRY: &str = "manifest.jsonl";
/// The trailer's entry name: always the last entry.
pub const TRAILER_ENTRY: &str = "trailer.json";
const OBJECT_DIR: &str = "objects/";
/// The trailer is a few hundred bytes; anything much larger is not one.
pub const MAX_TRAILER_BYTES: u64 = 64 * 1024;

// The manifest's caps. An archive is not authenticated and a zstd stream of
// a few KiB can expand to gigabytes, so a reader must never take a line or a
// manifest at its word. Each cap is derived from what S3 lets one object
// carry, written the way `serde_json` writes it: a control character in a
// string becomes `\u00XX`, so a string takes at most 6 times its bytes.

/// S3's longest key, in UTF-8 bytes.
const S3_MAX_KEY_BYTES: usize = 1024;
/// The most bytes `serde_json` writes for one byte of a string (`\u0001`).
const JSON_ESCAPE: usize = 6;
/// Content headers and `x-amz-meta-*` pairs, as one budget. S3 limits a
/// PUT's request headers to 8 KB, user metadata to 2 KB of them (AWS S3
/// User Guide, "Working with object metadata"); S3-compatible servers allow
/// more (StorageGRID 24 KiB of metadata, Ceph 16,000-byte requests), so 32
/// KiB. They arrived as HTTP field values, which hold no control characters
/// but tab (RFC 9110, 5.5): JSON escapes at most `"`, `\\` and tab, 2 bytes
/// each.
const HEADER_BUDGET_BYTES: usize = 32 * 1024;
const HEADER_ESCAPE: usize = 2;
/// S3 object tags: at most 10, keys of 128 and values of 256 Unicode
/// characters (4 UTF-8 bytes at most), from a set JSON never escapes
/// (letters, digits, spaces, `+ - = . _ : / @`); 8 bytes of `[["",""],`
/// each.
const S3_MAX_TAG_BYTES: usize = 10 * ((128 + 256) * 4 + 8);
/// A `not_exported` message is clamped to this many bytes when written: it
/// is an error message for a person, and may echo a key.
pub const MAX_NOT_EXPORTED_MESSAGE_BYTES: usize = 1024;
/// The rest of an object line: field names, numbers, the entry name,
/// SHA-256 and MD5, ETag (38 characters on AWS), storage class, error code.
const OBJECT_LINE_FIXED_BYTES: usize = 4 * 1024;

/// The longest object line a reader accepts, its newline included: 128 KiB.
/// The parts add up to 95 KiB (key 6 KiB, headers and metadata 64 KiB, tags
/// 15 KiB, message 6 KiB, the rest 4 KiB); the margin is for servers with
/// longer ETags or error codes. A line is buffered whole to be parsed, so
/// this also bounds a reader's memory.
pub const MAX_OBJECT_LINE_BYTES: u64 = 128 * 1024;
const _: () = assert!(
    (S3_MAX_KEY_BYTES * JSON_ESCAPE
        + HEADER_BUDGET_BYTES * HEADER_ESCAPE
        + S3_MAX_TAG_BYTES
        + MAX_NOT_EXPORTED_MESSAGE_BYTES * JSON_ESCAPE
        + OBJECT_LINE_FIXED_BYTES) as u64
        <= MAX_OBJECT_LINE_BYTES
);

/// The longest header line, its newline included: 16 KiB. Its one long field
/// is `source`, `s3://` + a bucket of 63 bytes + a 1,024-byte prefix
/// (6 KiB escaped); two RFC 3339 times and the field names are under 300.
pub const MAX_HEADER_LINE_BYTES: u64 = 16 * 1024;
const _: () =
    assert!((5 + 63 + 1 + S3_MAX_KEY_BYTES * JSON_ESCAPE + 1024) as u64 <= MAX_HEADER_LINE_BYTES);

/// The manifest's size cap: its header line and `objects` object lines,
/// each at its cap. The count is the trailer's, which follows the manifest,
/// so this is checked when the trailer is read; while the manifest streams,
/// the line caps and [`MAX_MANIFEST_EXPANSION`] bound it.
pub fn manifest_size_cap(objects: u64) -> u64 {
    objects
        .saturating_mul(MAX_OBJECT_LINE_BYTES)
        .saturating_add(MAX_HEADER_LINE_BYTES)
}

/// How many times the compressed bytes it occupies a manifest may
/// decompress to (beyond [`MANIFEST_EXPANSION_ALLOWANCE`]). This is the cap
/// that holds before the trailer's count is known, and the one a hostile
/// archive cannot talk its way past: the count is the archive's own claim,
/// the compressed bytes are physically in the file. Real manifests compress
/// 4 to 120 times (zstd level 3: random ETags and times; 1M empty objects
/// with one ETag, one time and sequential keys, 118). The most repetitive
/// one we could build, 100k empty objects whose 1,024-byte keys are 1,015
/// control characters (6 KiB escaped) and a counter, reached 1,536 at level
/// 3 and 2,627 at `zstd --ultra -22 --long`. zstd itself stops near 32,768
/// (a 4-byte RLE block yields 128 KiB), so a bomb expands 8 times less than
/// it could.
pub const MAX_MANIFEST_EXPANSION: u64 = 4096;
/// Decompressed manifest bytes allowed on top of the expansion cap: small
/// manifests compress badly, and the decoder may have taken the block that
/// starts the manifest (at most 128 KiB of output) before it began.
pub const MANIFEST_EXPANSION_ALLOWANCE: u64 = 1024 * 1024;

/// The tar entry name of the `seq`-th exported object (from 1). Generated,
/// never the key: keys can hold `..`, newlines or 1,024 bytes, none of which
/// belongs in a file name that someone may one day extract.
pub fn object_entry_name(seq: u64) -> String {
    format!("{OBJECT_DIR}{seq:09}")
}

/// The sequence number of an object entry name, if it is exactly one that
/// [`object_entry_name`] writes (no other spelling of the same number).
pub fn object_entry_seq(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(OBJECT_DIR)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seq: u64 = digits.parse().ok()?;
    (seq > 0 && object_entry_name(seq) == name).then_some(seq)
}

/// The first line of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestHeader {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    pub version: u32,
    /// The exported location, `s3://bucket/prefix/`; keys below are
    /// relative to it.
    pub source: String,
    /// When the export started (RFC 3339).
    pub created_at: String,
    /// What the export was a delta against, if anything.
    #[serde(default)]
    pub since: Baseline,
}

/// What an export left out because the destination already has it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Baseline {
    /// A full export: every object is in the archive.
    #[default]
    Full,
    /// Objects last modified before `date` were left out.
    Date { date: String },
    /// Objects unchanged since the manifest written at `created_at` were
    /// left out.
    Manifest { created_at: String },
}

/// One line of the manifest after the header: one listed object, in listing
/// order (ascending UTF-8 bytes), so deletions and moves are known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Relative to the header's `source`.
    pub key: String,
    pub size: u64,
    /// Without quotes, as listed (or as read, if it changed meanwhile).
    pub etag: String,
    pub last_modified_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Present when the object's bytes are in the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<Exported>,
    /// Present when the object should have been exported and was not (or
    /// only in part): the importer leaves its key alone and reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_exported: Option<NotExported>,
}

impl ManifestEntry {
    pub fn from_listed(entry: &ObjectEntry) -> Self {
        ManifestEntry {
            key: entry.key.clone(),
            size: entry.size,
            etag: entry.etag.clone(),
            last_modified_ms: entry.last_modified_ms,
            storage_class: entry.storage_class.clone(),
            export: None,
            not_exported: None,
        }
    }

    /// The object's bytes are in the archive, complete, to be applied.
    pub fn applicable(&self) -> Option<&Exported> {
        self.export.as_ref().filter(|_| self.not_exported.is_none())
    }

    /// The ETag the destination should carry, when one can be predicted. A
    /// single-part ETag that is not the MD5 of the bytes (SSE-KMS, SSE-C,
    /// some S3-compatible servers) cannot be reproduced by uploading the
    /// same bytes, so it proves nothing either way: `None`.
    pub fn comparable_etag(&self) -> Option<&str> {
        match &self.export {
            Some(export)
                if !self.etag.contains('-')
                    && !export.md5.is_empty()
                    && export.md5 != self.etag =>
            {
                None
            }
            _ => Some(&self.etag),
        }
    }
}

/// Where an exported object's bytes are, how to check them, and what S3
/// keeps beside them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exported {
    /// Its tar entry, [`object_entry_name`].
    pub entry: String,
    /// Bytes in the entry, and their SHA-256 (lowercase hex).
    pub length: u64,
    pub sha256: String,
    /// MD5 of the bytes (hex): what a single PUT's ETag will be.
    pub md5: String,
    /// For a `-N` ETag: the size of part 1 as the source server reported
    /// it, which gives the importer the part layout that reproduces the
    /// ETag. `None` when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_size: Option<u64>,
    #[serde(default)]
    pub headers: ObjectHeaders,
    /// Tags as (key, value) pairs, in the source's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
}

/// The content headers and user metadata S3 stores with an object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHeaders {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// `x-amz-meta-*`, without the prefix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// Why a changed object is not (fully) in the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotExported {
    /// The S3 error code or one of this tool's (`SourceChangedDuringExport`).
    pub code: String,
    pub message: String,
    /// Archived objects are skipped (a warning), not failed.
    #[serde(default)]
    pub skipped: bool,
}

/// The last entry: checksums and counts of everything before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    /// Always [`ARCHIVE_FORMAT`].
    pub format: String,
    pub version: u32,
    /// SHA-256 (hex) and size of the manifest entry.
    pub manifest_sha256: String,
    pub manifest_bytes: u64,
    /// Object lines in the manifest (the header line not counted).
    pub manifest_objects: u64,
    /// Object entries in the archive, and their bytes.
    pub object_entries: u64,
    pub object_bytes: u64,
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_entry_names_have_one_spelling() {
        assert_eq!(object_entry_name(1), "objects/000000001");
        assert_eq!(object_entry_seq("objects/000000001"), Some(1));
        assert_eq!(object_entry_name(1_234_567_890), "objects/1234567890");
        assert_eq!(object_entry_seq("objects/1234567890"), Some(1_234_567_890));
        for bad in [
            "objects/1",
            "objects/0000000001",
            "objects/000000000",
            "objects/00000000x",
            "objects/",
            "other/000000001",
            "objects/000000001/..",
        ] {
            assert_eq!(object_entry_seq(bad), None, "{bad}");
        }
    }

    #[test]
    fn manifest_lines_round_trip_awkward_keys() {
        let line = ManifestEntry {
            key: "a/../b\nc\"d\u{1F980}".into(),
            size: 3,
            etag: "abc-2".into(),
            last_modified_ms: 5,
            storage_class: None,
            export: None,
            not_exported: None,
        };
        let text = serde_json::to_string(&line).unwrap();
        assert!(!text.contains('\n'), "one line per object: {text}");
        assert_eq!(serde_json::from_str::<ManifestEntry>(&text).unwrap(), line);
    }

    #[test]
    fn single_part_etags_that_are_not_md5s_are_not_comparable() {
        let mut entry = ManifestEntry {
            key: "k".into(),
            size: 1,
            etag: "0cc175b9c0f1b6a831c399e269772661".into(),
            last_modified_ms: 0,
            storage_class: None,
            export: Some(Exported {
                entry: object_entry_name(1),
                length: 1,
                sha256: String::new(),
                md5: "0cc175b9c0f1b6a831c399e269772661".into(),
                part_size: None,
                headers: ObjectHeaders::default(),
                tags: Vec::new(),
            }),
            not_exported: None,
        };
        assert_eq!(entry.comparable_etag(), Some(entry.etag.as_str()));
        entry.etag = "ffffffffffffffffffffffffffffffff".into(); // SSE-KMS
        assert_eq!(entry.comparable_etag(), None);
        entry.etag = "ffffffffffffffffffffffffffffffff-2".into();
        assert!(entry.comparable_etag().is_some());
    }
}
