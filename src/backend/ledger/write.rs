//! The next ledger: entries gathered during a run, from any piece or copy
//! worker in any order, and committed at the end.
//!
//! Entries are buffered and written out as sorted runs (temporary zstd
//! files), so memory is one buffer whatever the number of entries. A
//! commit merges every run into chunks in key order (a later entry for a
//! key wins), writes them beside the old chunks under new names, and then
//! writes the manifest that names them: until that one write, the old
//! manifest and its chunks are the ledger, so a run killed at any point
//! leaves a valid one. Only then are chunks no manifest names deleted.
//!
//! Two runs committing to one ledger at once leave one of their manifests;
//! if the other's clean-up deleted chunks that manifest names, those are
//! read as missing, which costs HEADs, never a wrong answer.

use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::backend::ledger::proven::{
    CHUNK_ENTRIES, ChunkInfo, Decoded, FORMAT, MANIFEST, Manifest, Proven, encode,
};
use crate::backend::ledger::store::{CHUNK_PREFIX, StateStore};

/// Entries buffered before a sorted run is written out (about 10 MB).
const RUN_ENTRIES: usize = 65_536;

/// The ledger a run is writing.
pub struct LedgerWriter {
    store: StateStore,
    source: String,
    destination: String,
    /// Names this run's chunks apart from any other run's.
    run_id: String,
    spool: tempfile::TempDir,
    buffer: Mutex<Vec<Proven>>,
    runs: Mutex<Vec<PathBuf>>,
    /// Entries per run and per chunk.
    sizes: (usize, usize),
    recorded: std::sync::atomic::AtomicU64,
}

/// What a commit wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub entries: u64,
    pub chunks: usize,
}

impl LedgerWriter {
    pub fn new(
        store: StateStore,
        source: &str,
        destination: &str,
        run_id: &str,
    ) -> std::io::Result<Self> {
        Ok(LedgerWriter {
            store,
            source: source.to_owned(),
            destination: destination.to_owned(),
            run_id: run_id.to_owned(),
            spool: tempfile::Builder::new()
                .prefix("s3-fanout-ledger-")
                .tempdir()?,
            buffer: Mutex::new(Vec::new()),
            runs: Mutex::new(Vec::new()),
            sizes: (RUN_ENTRIES, CHUNK_ENTRIES),
            recorded: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Smaller runs and chunks, so tests cross their edges.
    #[cfg(test)]
    pub fn with_sizes(mut self, run: usize, chunk: usize) -> Self {
        self.sizes = (run, chunk);
        self
    }

    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// Entries recorded so far (a key recorded twice counts twice).
    pub fn recorded(&self) -> u64 {
        self.recorded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Add one proven pair.
    pub fn record(&self, entry: Proven) {
        self.recorded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let full = {
            let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
            buffer.push(entry);
            (buffer.len() >= self.sizes.0).then(|| std::mem::take(&mut *buffer))
        };
        if let Some(entries) = full
            && let Err(e) = self.write_run(entries)
        {
            // The entries are lost to the next ledger: their pairs cost
            // HEADs next time, nothing worse.
            tracing::warn!(error = %e, "writing the ledger's spool failed; some pairs will be proven again next run");
        }
    }

    /// Withdraw `key`'s entry, recorded or carried over: verification found
    /// the pair different after all. A tombstone (an entry with no ETags),
    /// which wins over the earlier entry in the merge and is dropped there.
    pub fn retract(&self, key: &str) {
        self.record(Proven {
            key: key.to_owned(),
            size: 0,
            source_etag: String::new(),
            destination_etag: String::new(),
        });
    }

    /// Sort `entries` and write them as one run.
    fn write_run(&self, mut entries: Vec<Proven>) -> std::io::Result<()> {
        // Reversed, then a stable sort: of two entries for one key, the one
        // recorded last comes first, and is the one kept.
        entries.reverse();
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        entries.dedup_by(|later, kept| later.key == kept.key);
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.spool.path().join(format!("run-{:06}.zst", runs.len()));
        let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        encode(&entries, file)?;
        runs.push(path);
        Ok(())
    }

    /// Merge everything recorded so far into the ledger and switch to it.
    /// May be called again later: it merges everything again, the entries
    /// recorded since included.
    pub async fn commit(&self) -> Result<Committed, String> {
        let chunks = self.write_chunks().await?;
        switch_to(&self.store, &self.source, &self.destination, chunks, None).await
    }

    /// Merge everything recorded so far into chunks in the store, sorted
    /// and apart, that no manifest names yet.
    pub async fn write_chunks(&self) -> Result<Vec<ChunkInfo>, String> {
        let rest = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|p| p.into_inner()));
        if !rest.is_empty() {
            self.write_run(rest)
                .map_err(|e| format!("writing the ledger's spool: {e}"))?;
        }
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let out = self.spool.path().join(format!("commit-{}", uuid_like()));
        let (prefix, out_dir) = (format!("{CHUNK_PREFIX}{}-", self.run_id), out.clone());
        let per_chunk = self.sizes.1;
        let chunks =
            tokio::task::spawn_blocking(move || merge(&runs, &out_dir, &prefix, per_chunk))
                .await
                .map_err(|e| format!("merging the ledger: {e}"))?
                .map_err(|e| format!("merging the ledger: {e}"))?;
        for chunk in &chunks {
            let bytes = tokio::fs::read(out.join(&chunk.name))
                .await
                .map_err(|e| format!("reading the merged ledger: {e}"))?;
            self.store.put(&chunk.name, bytes).await?;
        }
        let _ = tokio::fs::remove_dir_all(&out).await;
        Ok(chunks)
    }
}

/// Make `chunks` (already in the store, sorted, their key ranges apart)
/// the ledger: write the manifest that names them, the one step that
/// switches, then delete the chunks it does not name. `journal_through`:
/// the last journal object folded into them, if any.
pub async fn switch_to(
    store: &StateStore,
    source: &str,
    destination: &str,
    chunks: Vec<ChunkInfo>,
    journal_through: Option<String>,
) -> Result<Committed, String> {
    let committed = Committed {
        entries: chunks.iter().map(|c| c.entries).sum(),
        chunks: chunks.len(),
    };
    let manifest = Manifest {
        format: FORMAT,
        source: source.to_owned(),
        destination: destination.to_owned(),
        chunks,
        journal_through,
    };
    let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    store.put(MANIFEST, bytes).await?;
    // The switch is made; what no manifest names is garbage now.
    let named: std::collections::HashSet<&str> =
        manifest.chunks.iter().map(|c| c.name.as_str()).collect();
    for name in store.chunks().await.unwrap_or_default() {
        if !named.contains(name.as_str())
            && let Err(why) = store.delete(&name).await
        {
            tracing::warn!(error = %why, "could not delete an old ledger chunk");
        }
    }
    Ok(committed)
}

/// A name no other commit of this process uses.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Merge sorted runs into chunks of `per_chunk` entries in `out`, named
/// `prefix` + a number. Of two entries for one key, the later run's wins.
fn merge(
    runs: &[PathBuf],
    out: &std::path::Path,
    prefix: &str,
    per_chunk: usize,
) -> std::io::Result<Vec<ChunkInfo>> {
    std::fs::create_dir_all(out)?;
    let mut readers: Vec<Decoded<_, Proven>> = Vec::with_capacity(runs.len());
    for run in runs {
        readers.push(Decoded::new(std::io::BufReader::new(std::fs::File::open(
            run,
        )?))?);
    }
    // A min-heap on (key, newest run first): the first of a key is taken,
    // the rest of that key skipped.
    let mut heap = BinaryHeap::new();
    for (index, reader) in readers.iter_mut().enumerate() {
        if let Some(entry) = reader.next().transpose()? {
            heap.push(std::cmp::Reverse((
                entry.key.clone(),
                usize::MAX - index,
                HeapEntry(entry),
            )));
        }
    }
    let mut chunks = Vec::new();
    let mut pending: Vec<Proven> = Vec::with_capacity(per_chunk.min(1024));
    let mut last_key: Option<String> = None;
    let flush = |pending: &mut Vec<Proven>, chunks: &mut Vec<ChunkInfo>| -> std::io::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let name = format!("{prefix}{:06}.zst", chunks.len());
        let file = std::io::BufWriter::new(std::fs::File::create(out.join(&name))?);
        encode(pending.iter(), file)?;
        chunks.push(ChunkInfo {
            name,
            first: pending[0].key.clone(),
            last: pending[pending.len() - 1].key.clone(),
            entries: pending.len() as u64,
        });
        pending.clear();
        Ok(())
    };
    while let Some(std::cmp::Reverse((key, order, HeapEntry(entry)))) = heap.pop() {
        let index = usize::MAX - order;
        if let Some(next) = readers[index].next().transpose()? {
            heap.push(std::cmp::Reverse((
                next.key.clone(),
                order,
                HeapEntry(next),
            )));
        }
        if last_key.as_deref() == Some(key.as_str()) {
            continue;
        }
        last_key = Some(key);
        if entry.source_etag.is_empty() && entry.destination_etag.is_empty() {
            continue; // retracted
        }
        pending.push(entry);
        if pending.len() >= per_chunk {
            flush(&mut pending, &mut chunks)?;
        }
    }
    flush(&mut pending, &mut chunks)?;
    Ok(chunks)
}

/// An entry in the merge heap, ordered by the key and run beside it only.
struct HeapEntry(Proven);

impl PartialEq for HeapEntry {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for HeapEntry {}
impl PartialOrd for HeapEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapEntry {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ledger::read::Ledger;

    fn entry(i: u64, etag: &str) -> Proven {
        Proven {
            key: format!("k{i:06}"),
            size: i,
            source_etag: format!("s{etag}"),
            destination_etag: format!("d{etag}"),
        }
    }

    /// Keys recorded in any order and more than once, across several runs
    /// and chunks, read back in order from cursors starting anywhere.
    #[tokio::test]
    async fn a_committed_ledger_reads_back_sorted_from_any_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::Dir(dir.path().to_owned());
        let writer = LedgerWriter::new(store.clone(), "s3://a", "s3://b", "r1")
            .unwrap()
            .with_sizes(300, 700);
        // Every third key, in a scrambled order; key 30 twice, the later wins.
        let mut keys: Vec<u64> = (0..3000).filter(|i| i % 3 == 0).collect();
        keys.sort_by_key(|i| (i * 7919) % 3001);
        writer.record(entry(30, "old"));
        for &i in &keys {
            writer.record(entry(i, if i == 30 { "new" } else { "x" }));
        }
        // Retracted after it was recorded: gone; recorded again after: back.
        writer.retract("k000033");
        writer.retract("k000036");
        writer.record(entry(36, "x"));
        let committed = writer.commit().await.unwrap();
        assert_eq!(committed.entries, 999);
        assert_eq!(committed.chunks, 2);

        let ledger = Ledger::open(store.clone(), "s3://a", "s3://b").await;
        assert_eq!(ledger.entries(), 999);
        for start in [0u64, 1, 1400, 2097, 2999] {
            let mut cursor = ledger.cursor();
            for i in start..3000 {
                let found = cursor.lookup(&format!("k{i:06}")).await;
                if i == 33 {
                    assert_eq!(found, None, "a retracted entry");
                } else if i % 3 == 0 {
                    let etag = if i == 30 { "new" } else { "x" };
                    assert_eq!(found, Some(entry(i, etag)), "key {i} from {start}");
                } else {
                    assert_eq!(found, None, "key {i} from {start}");
                }
            }
        }
        // Another pair of locations does not use it.
        assert_eq!(Ledger::open(store, "s3://a", "s3://c").await.entries(), 0);
    }

    /// Killed after writing its chunks but before the manifest: the old
    /// ledger is still the ledger. A damaged chunk costs its entries only.
    #[tokio::test]
    async fn a_killed_commit_leaves_the_old_ledger_and_damage_costs_only_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::Dir(dir.path().to_owned());
        let first = LedgerWriter::new(store.clone(), "s", "d", "r1")
            .unwrap()
            .with_sizes(100, 100);
        for i in 0..250 {
            first.record(entry(i, "x"));
        }
        first.commit().await.unwrap();
        let manifest = std::fs::read(dir.path().join(MANIFEST)).unwrap();

        // A second run's chunks, written, then no manifest.
        let second = LedgerWriter::new(store.clone(), "s", "d", "r2").unwrap();
        second.record(entry(7, "other"));
        let rest = std::mem::take(&mut *second.buffer.lock().unwrap());
        second.write_run(rest).unwrap();
        let runs = second.runs.lock().unwrap().clone();
        let out = dir.path().to_owned();
        merge(&runs, &out, "chunk-r2-", 100).unwrap();
        assert_eq!(std::fs::read(dir.path().join(MANIFEST)).unwrap(), manifest);
        let ledger = Ledger::open(store.clone(), "s", "d").await;
        assert_eq!(ledger.cursor().lookup("k000007").await, Some(entry(7, "x")));

        // Damage the middle chunk (keys 100..199).
        let name = &ledger.manifest().chunks[1].name;
        let path = dir.path().join(name);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let ledger = Ledger::open(store, "s", "d").await;
        let mut cursor = ledger.cursor();
        let mut found = Vec::new();
        for i in 0..250 {
            if cursor.lookup(&format!("k{i:06}")).await.is_some() {
                found.push(i);
            }
        }
        let expected: Vec<u64> = (0..100).chain(200..250).collect();
        assert_eq!(found, expected);
    }
}
