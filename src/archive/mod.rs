//! Offline delta archives: carry a bucket's changes across a boundary no
//! network crosses (an air gap, a one-way data diode, a courier).
//!
//! `s3-fanout export SRC ARCHIVE [--since DATE | --since-manifest PREV]`
//! writes what changed plus a manifest of every key; `s3-fanout import
//! ARCHIVE DST [--delete]` checks the whole archive, then makes DST match
//! the manifest: puts what the archive carries, deletes what the manifest
//! no longer lists, and verifies by listing DST again.
//!
//! | file | holds |
//! |---|---|
//! | [`format`](mod@format) | entry names, manifest lines, trailer: the format's one definition |
//! | [`codec`] | plain or zstd tar, told apart by magic bytes |
//! | [`digest`] | SHA-256 and MD5 as bytes pass |
//! | [`writer`] | the tar writer and the thread that streams bodies into it |
//! | [`manifest`] | manifest spool, ordered reader, `--since-manifest` |
//! | [`previous`] | opening a `--since-manifest` archive or manifest |
//! | [`check`] | the whole-archive check an import (and a delta) starts with |
//! | [`fetch`] | reading one source object: GET, headers, tags, part 1 |
//! | [`export`] | the export run |
//! | [`join`] | manifest ⋈ destination listing, and the comparison rule |
//! | [`extract`] | planned objects out of the archive into temp files |
//! | [`layout`] | which upload layout reproduces a source's ETag |
//! | [`put`] | PutObject / multipart upload of one object from a file |
//! | [`import`] | the import run |
//! | [`options`] | flags, validated; [`summary`] the run's summary and report |
//!
//! # The archive format (version 1)
//!
//! A POSIX tar (GNU headers), optionally one zstd stream; a reader goes by
//! the first bytes, not the file name. Entries, in this order and no other:
//!
//! 1. `objects/000000001`, `objects/000000002`, ... — the exported objects'
//!    bytes, numbered from 1 without gaps (more digits past 999,999,999).
//!    Names are generated, never keys: a key may hold `..`, newlines or a
//!    kilobyte of anything, and extracting an archive by hand must not
//!    write outside the directory.
//! 2. `manifest.jsonl` — JSON Lines. Line 1 is a [`format::ManifestHeader`]:
//!    `{"format":"s3-fanout-manifest","version":1,"source":"s3://b/p/",
//!    "created_at":…,"since":{"kind":"full"|"date"|"manifest",…}}`. Then
//!    one [`format::ManifestEntry`] per object of the source's *full*
//!    listing, in listing order (ascending UTF-8 bytes), so deletions and
//!    moves are known: `{"key","size","etag","last_modified_ms",
//!    "storage_class"}`, keys relative to `source`. An exported object's
//!    line adds `"export":{"entry","length","sha256","md5","part_size",
//!    "headers":{content-type, -encoding, -disposition, -language,
//!    cache-control, "metadata":{…}},"tags":[[k,v],…]}`; exported lines
//!    name the object entries in order, each exactly once. An object that
//!    should have been exported but could not be read carries
//!    `"not_exported":{"code","message","skipped"}` (and, if its entry was
//!    cut short mid-read, still its `export`, so the entry is checked like
//!    every other, but it is never applied).
//! 3. `trailer.json` — a [`format::Trailer`]: the manifest's SHA-256 and
//!    size, the manifest's object count, and the object entries' count and
//!    total size.
//!
//! So the trailer vouches for the manifest and the manifest for every
//! object entry: truncation anywhere (a missing trailer, an entry cut
//! short) and any altered byte are found before anything is applied. The
//! checksums detect damage, not an adversary who rewrites the trailer too:
//! for authenticity, sign the archive file across the boundary with your
//! usual tool (gpg, minisign) and check that before importing.
//!
//! **Caps.** A manifest line, its newline included, is at most 16 KiB (the
//! header) or 128 KiB (an object line), and the manifest at most 16 KiB +
//! 128 KiB per object the trailer counts ([`format::manifest_size_cap`]);
//! [`format`](mod@format) derives the numbers from what S3 lets one object carry (a
//! 1,024-byte key, 6 times that escaped; headers and metadata; tags). An
//! export never writes a line past its cap (a `not_exported` message is
//! cut to 1 KiB). The count comes after the manifest and nothing in an
//! archive is authenticated, so while the manifest streams out of the
//! archive it is held to the line caps and to 4,096 times the compressed
//! bytes it comes from, plus 1 MiB ([`format::MAX_MANIFEST_EXPANSION`]):
//! real manifests compress 4 to 120 times, and zstd can reach 32,768. Past
//! any cap the archive is refused at once (exit 2): the rest is neither
//! decompressed nor spooled. So an archive costs an import at most one line
//! cap of memory and 4,096 times its own size of temp disk (plus 1 MiB),
//! whatever its headers and trailer claim.
//!
//! `--since-manifest PREV` takes a previous archive (checked whole first)
//! or a bare manifest file: `--manifest-out`'s copy, or `tar -xOf ARCHIVE
//! manifest.jsonl` (after `zstd -d` for a compressed one). A key is
//! exported again when PREV lacks it, lists another size or ETag, or marks
//! it `not_exported`.
//!
//! # Exit codes
//!
//! As `sync`: 0 done and verified, 1 objects failed (listed in the report)
//! or the run stopped, 2 bad usage or a refused archive (truncated,
//! altered, not an archive, another version: nothing was written), 3
//! warnings only, 130 interrupted.

pub mod check;
pub mod codec;
pub mod digest;
pub mod error;
pub mod export;
pub mod extract;
pub mod fetch;
pub mod format;
pub mod import;
pub mod join;
pub mod layout;
pub mod manifest;
pub mod options;
pub mod previous;
pub mod put;
pub mod summary;
pub mod writer;

pub use error::ArchiveError;
pub use export::run_export;
pub use import::run_import;
pub use options::{ExportOptions, ExportSpec, ImportOptions, ImportSpec};
