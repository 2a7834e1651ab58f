//! One proven pair, and how entries are stored: sorted JSON lines in
//! zstd chunks (with zstd's content checksum, so damage is found, not
//! read), named by a small manifest with each chunk's key range.

use std::io::{BufRead, BufReader, Read, Write};

use serde::{Deserialize, Serialize};

use crate::model::entry::ObjectEntry;

/// A pair proven equal although its ETags differ: its key, size and the
/// two ETags it had when proven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proven {
    pub key: String,
    pub size: u64,
    pub source_etag: String,
    pub destination_etag: String,
}

impl Proven {
    /// The entry for two objects proven equal, as they are now.
    pub fn of(source: &ObjectEntry, destination: &ObjectEntry) -> Proven {
        Proven {
            key: source.key.clone(),
            size: source.size,
            source_etag: source.etag.clone(),
            destination_etag: destination.etag.clone(),
        }
    }

    /// Whether this entry proves the listed pair equal: both ETags and the
    /// size are what was proven. Any write to either side since then
    /// changed an ETag.
    pub fn proves(&self, source: &ObjectEntry, destination: &ObjectEntry) -> bool {
        self.key == source.key
            && self.key == destination.key
            && self.size == source.size
            && self.size == destination.size
            && self.source_etag == source.etag
            && self.destination_etag == destination.etag
    }
}

/// Entries per chunk: a chunk is what one cursor holds compressed in
/// memory (about 2 MB), and a range's first lookup reads from the start of
/// the chunk that holds it.
pub const CHUNK_ENTRIES: usize = 50_000;

/// zstd's level for chunks and runs: fast, and these lines compress well.
pub const LEVEL: i32 = 3;

/// The manifest's name in the store. It is written last, in one step, so
/// it always names a complete set of chunks.
pub const MANIFEST: &str = "manifest.json";

/// The manifest's format version.
pub const FORMAT: u32 = 1;

/// The committed ledger: its chunks in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The source and destination this ledger is about.
    pub source: String,
    pub destination: String,
    pub chunks: Vec<ChunkInfo>,
    /// The last journal object whose entries this ledger holds
    /// ([`crate::backend::ledger::journal`]): the next fold reads only
    /// later ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_through: Option<String>,
}

/// One chunk: its name in the store and the keys it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    pub name: String,
    pub first: String,
    pub last: String,
    pub entries: u64,
}

/// Encode sorted entries as one zstd stream of JSON lines.
pub fn encode<'a, T: Serialize + 'a>(
    entries: impl IntoIterator<Item = &'a T>,
    into: impl Write,
) -> std::io::Result<()> {
    let mut encoder = zstd::Encoder::new(into, LEVEL)?;
    encoder.include_checksum(true)?;
    for entry in entries {
        serde_json::to_writer(&mut encoder, entry)?;
        encoder.write_all(b"\n")?;
    }
    encoder.finish()?.flush()
}

/// Check a whole zstd stream against its content checksum without keeping
/// what it decodes: a chunk is checked before its first entry is used, as
/// zstd can only tell damage at the end of a frame.
pub fn check(compressed: impl Read) -> std::io::Result<()> {
    let mut decoder = zstd::Decoder::new(compressed)?;
    std::io::copy(&mut decoder, &mut std::io::sink()).map(|_| ())
}

/// The entries of one zstd stream of JSON lines, one at a time: ledger
/// entries, or another store's in the same format (a directory's file
/// digests). An error (damage, a line that is not an entry) ends the
/// stream with that error.
pub struct Decoded<R: Read, T = Proven> {
    lines: std::io::Lines<BufReader<zstd::Decoder<'static, BufReader<R>>>>,
    entry: std::marker::PhantomData<T>,
}

impl<R: Read, T> Decoded<R, T> {
    pub fn new(compressed: R) -> std::io::Result<Self> {
        Ok(Decoded {
            lines: BufReader::new(zstd::Decoder::new(compressed)?).lines(),
            entry: std::marker::PhantomData,
        })
    }
}

impl<R: Read, T: serde::de::DeserializeOwned> Iterator for Decoded<R, T> {
    type Item = std::io::Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        let line = self.lines.next()?;
        Some(line.and_then(|line| {
            serde_json::from_str(&line)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str) -> Proven {
        Proven {
            key: key.into(),
            size: 3,
            source_etag: "s".into(),
            destination_etag: "d".into(),
        }
    }

    #[test]
    fn entries_round_trip_whatever_their_keys() {
        let entries = vec![entry("a\tb"), entry("line\nbreak"), entry("ü/\"q\"")];
        let mut bytes = Vec::new();
        encode(&entries, &mut bytes).unwrap();
        let back: Vec<Proven> = Decoded::new(&bytes[..])
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, entries);
    }

    #[test]
    fn damage_is_an_error_not_an_entry() {
        let entries: Vec<Proven> = (0..1000).map(|i| entry(&format!("k{i:05}"))).collect();
        let mut bytes = Vec::new();
        encode(&entries, &mut bytes).unwrap();
        check(bytes.as_slice()).unwrap();
        for at in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 5] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x55;
            assert!(
                check(damaged.as_slice()).is_err(),
                "damage at byte {at} went unnoticed"
            );
        }
        assert!(
            check(&bytes[..bytes.len() - 1]).is_err(),
            "a cut chunk passed"
        );
    }

    #[test]
    fn an_entry_proves_only_the_pair_it_was_made_for() {
        let object = |etag: &str| ObjectEntry {
            version_id: None,
            key: "k".into(),
            size: 3,
            etag: etag.into(),
            last_modified_ms: 0,
            storage_class: None,
            checksum: None,
        };
        let proven = Proven::of(&object("s"), &object("d"));
        assert!(proven.proves(&object("s"), &object("d")));
        assert!(!proven.proves(&object("s2"), &object("d")));
        assert!(!proven.proves(&object("s"), &object("d2")));
        let bigger = ObjectEntry {
            version_id: None,
            size: 4,
            ..object("s")
        };
        assert!(!proven.proves(&bigger, &object("d")));
    }
}
