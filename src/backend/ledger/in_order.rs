//! The next ledger, written by a walk in key order straight into chunks:
//! a serverless lister proves the pairs of its shard one after another, so
//! its entries come sorted and need no spool or merge. Each invocation
//! writes its own chunks (named by run, phase, shard and invocation, so a
//! retried invocation rewrites the same objects) and records them in its
//! checkpoint; the run's report names every shard's chunks in one manifest
//! ([`crate::backend::ledger::write::switch_to`]). Shards do not overlap,
//! so neither do their chunks.
//!
//! Entries are buffered until a chunk is full or the invocation ends.
//! Entries buffered when an invocation dies are not in any chunk: their
//! pairs cost HEADs on the next run, never a wrong "equal".

use std::sync::Mutex;

use crate::backend::ledger::proven::{CHUNK_ENTRIES, ChunkInfo, Proven, encode};
use crate::backend::ledger::store::StateStore;

/// A ledger being written in key order.
pub struct InOrderWriter {
    store: StateStore,
    /// Chunk names are this and a number.
    prefix: String,
    per_chunk: usize,
    state: Mutex<State>,
}

struct State {
    buffer: Vec<Proven>,
    /// The number the next chunk is named with.
    next_chunk: usize,
}

impl InOrderWriter {
    /// Chunks named `prefix` + a number from `first_chunk` (the count an
    /// earlier attempt at the same invocation already wrote).
    pub fn new(store: StateStore, prefix: String, first_chunk: usize) -> Self {
        InOrderWriter {
            store,
            prefix,
            per_chunk: CHUNK_ENTRIES,
            state: Mutex::new(State {
                buffer: Vec::new(),
                next_chunk: first_chunk,
            }),
        }
    }

    /// Smaller chunks, so tests cross their edges.
    #[cfg(test)]
    pub fn with_chunk_entries(mut self, per_chunk: usize) -> Self {
        self.per_chunk = per_chunk.max(1);
        self
    }

    /// Add one proven pair. Keys must ascend: a second entry for the last
    /// key replaces it, and one that goes back (a bug) is dropped, as a
    /// chunk out of order would hide entries from readers.
    pub fn record(&self, entry: Proven) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.buffer.last() {
            Some(last) if last.key == entry.key => {
                state.buffer.pop();
            }
            Some(last) if last.key > entry.key => {
                tracing::warn!(key = %entry.key, after = %last.key, "a ledger entry out of key order was dropped");
                return;
            }
            _ => {}
        }
        state.buffer.push(entry);
    }

    /// Write the full chunks buffered so far; what they hold.
    pub async fn write_full(&self) -> Vec<ChunkInfo> {
        self.write(false).await
    }

    /// Write everything buffered, the last chunk however small.
    pub async fn write_all(&self) -> Vec<ChunkInfo> {
        self.write(true).await
    }

    /// A chunk that cannot be written is a warning and its entries are
    /// lost to the next ledger: a ledger never fails a run.
    async fn write(&self, all: bool) -> Vec<ChunkInfo> {
        let mut written = Vec::new();
        loop {
            let (entries, name) = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let take = if state.buffer.len() >= self.per_chunk {
                    self.per_chunk
                } else if all && !state.buffer.is_empty() {
                    state.buffer.len()
                } else {
                    return written;
                };
                let entries: Vec<Proven> = state.buffer.drain(..take).collect();
                let name = format!("{}{:04}.zst", self.prefix, state.next_chunk);
                state.next_chunk += 1;
                (entries, name)
            };
            let mut bytes = Vec::new();
            if let Err(e) = encode(&entries, &mut bytes) {
                tracing::warn!(error = %e, "encoding a ledger chunk failed; its pairs will be proven again next run");
                continue;
            }
            match self.store.put(&name, bytes).await {
                Ok(()) => written.push(ChunkInfo {
                    first: entries[0].key.clone(),
                    last: entries[entries.len() - 1].key.clone(),
                    entries: entries.len() as u64,
                    name,
                }),
                Err(why) => {
                    tracing::warn!(error = %why, "writing a ledger chunk failed; its pairs will be proven again next run");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ledger::read::Ledger;
    use crate::backend::ledger::write::switch_to;

    fn entry(i: u64, etag: &str) -> Proven {
        Proven {
            key: format!("k{i:06}"),
            size: i,
            source_etag: format!("s{etag}"),
            destination_etag: format!("d{etag}"),
        }
    }

    /// Two "shards" written in key order by several "invocations" each,
    /// named in one manifest, read back from anywhere; a repeated key keeps
    /// its last entry and one out of order is dropped.
    #[tokio::test]
    async fn shards_written_in_order_read_back_as_one_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::Dir(dir.path().to_owned());
        let mut chunks = Vec::new();
        // Shard 1 (keys 500..1000) finishes first; chunks are named apart.
        for (shard, keys) in [(1, 500..1000u64), (0, 0..500)] {
            for (seq, part) in [keys.start..keys.start + 230, keys.start + 230..keys.end]
                .into_iter()
                .enumerate()
            {
                let writer = InOrderWriter::new(
                    store.clone(),
                    format!("chunk-run-validate-{shard:05}-{seq:05}-"),
                    0,
                )
                .with_chunk_entries(100);
                for i in part.filter(|i| i % 2 == 0) {
                    writer.record(entry(i, "old"));
                    writer.record(entry(i, "x"));
                }
                writer.record(entry(0, "backwards"));
                let mut full = writer.write_full().await;
                assert!(full.iter().all(|c| c.entries == 100));
                full.extend(writer.write_all().await);
                chunks.extend(full);
            }
        }
        chunks.sort_by(|a, b| a.first.cmp(&b.first));
        let committed = switch_to(&store, "s", "d", chunks, None).await.unwrap();
        assert_eq!(committed.entries, 500);

        let ledger = Ledger::open(store, "s", "d").await;
        for start in [0u64, 229, 230, 499, 500, 731, 999] {
            let mut cursor = ledger.cursor();
            for i in start..1000 {
                let found = cursor.lookup(&format!("k{i:06}")).await;
                let expected = (i % 2 == 0).then(|| entry(i, "x"));
                assert_eq!(found, expected, "key {i} from {start}");
            }
        }
    }

    /// A retried invocation names its chunks from where the first attempt
    /// stopped, so a manifest never names one object twice.
    #[tokio::test]
    async fn a_retry_numbers_its_chunks_after_the_first_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::Dir(dir.path().to_owned());
        let writer = InOrderWriter::new(store, "chunk-r-sent-00000-00000-".into(), 3);
        writer.record(entry(1, "x"));
        let written = writer.write_all().await;
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].name, "chunk-r-sent-00000-00000-0003.zst");
        assert!(writer.write_all().await.is_empty());
    }
}
