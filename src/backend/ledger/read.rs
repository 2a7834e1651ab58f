//! A run's view of the committed ledger. Each listed piece has its own
//! [`Cursor`], asked about keys in ascending order, so the ledger is read
//! as a third sorted stream beside the two listings: one chunk at a time,
//! from the chunk that holds the piece's first key. Memory stays one
//! compressed chunk per piece, whatever the ledger's size.
//!
//! Nothing here fails a run: a missing manifest is an empty ledger, and a
//! damaged manifest or chunk is a warning and no entries from it. Either
//! costs HEADs, never a wrong "equal".

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::ledger::proven::{
    ChunkInfo, Decoded, FORMAT, MANIFEST, Manifest, Proven, check,
};
use crate::backend::ledger::store::StateStore;

/// The committed ledger a run reads.
#[derive(Debug)]
pub struct Ledger {
    store: StateStore,
    manifest: Manifest,
    /// Lookups answered with a matching entry, and chunks read.
    pub hits: AtomicU64,
    pub chunks_read: AtomicU64,
}

impl Ledger {
    /// Read the manifest at `store`, for the pair of locations named.
    /// A ledger written for another source or destination is not used.
    pub async fn open(store: StateStore, source: &str, destination: &str) -> Arc<Ledger> {
        let manifest = match store.get(MANIFEST).await {
            Ok(None) => Manifest::default(),
            Ok(Some(bytes)) => match serde_json::from_slice::<Manifest>(&bytes) {
                Ok(m)
                    if m.format == FORMAT && m.source == source && m.destination == destination =>
                {
                    m
                }
                Ok(m) if m.format != FORMAT => {
                    tracing::warn!(ledger = %store, format = m.format, "the ledger is in another format; proving pairs again (HEADs)");
                    Manifest::default()
                }
                Ok(m) => {
                    tracing::warn!(ledger = %store, source = %m.source, destination = %m.destination, "the ledger is about another pair of locations; not using it");
                    Manifest::default()
                }
                Err(e) => {
                    tracing::warn!(ledger = %store, error = %e, "the ledger's manifest is damaged; proving pairs again (HEADs)");
                    Manifest::default()
                }
            },
            Err(why) => {
                tracing::warn!(ledger = %store, error = %why, "the ledger cannot be read; proving pairs again (HEADs)");
                Manifest::default()
            }
        };
        Arc::new(Ledger {
            store,
            manifest,
            hits: AtomicU64::new(0),
            chunks_read: AtomicU64::new(0),
        })
    }

    /// A ledger of `chunks` in `store` that no manifest names yet: a
    /// serverless shard's chunks from this run's write phase, which its
    /// VALIDATE reads beside the committed ledger.
    pub fn of_chunks(store: StateStore, chunks: Vec<ChunkInfo>) -> Arc<Ledger> {
        Arc::new(Ledger {
            store,
            manifest: Manifest {
                format: FORMAT,
                chunks,
                ..Manifest::default()
            },
            hits: AtomicU64::new(0),
            chunks_read: AtomicU64::new(0),
        })
    }

    pub fn store(&self) -> &StateStore {
        &self.store
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Entries in the committed ledger.
    pub fn entries(&self) -> u64 {
        self.manifest.chunks.iter().map(|c| c.entries).sum()
    }

    /// A cursor for one piece: ask it about keys in ascending order.
    pub fn cursor(self: &Arc<Self>) -> Cursor {
        Cursor {
            ledger: self.clone(),
            next_chunk: None,
            entries: None,
            current: None,
            last_asked: None,
        }
    }

    /// The chunk at `index`, checked whole before its first entry is used.
    async fn chunk(&self, index: usize) -> Option<Decoded<std::io::Cursor<Vec<u8>>>> {
        let info = self.manifest.chunks.get(index)?;
        self.chunks_read.fetch_add(1, Ordering::Relaxed);
        let bytes = match self.store.get(&info.name).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                tracing::warn!(ledger = %self.store, chunk = %info.name, "a ledger chunk is missing; proving its pairs again (HEADs)");
                return None;
            }
            Err(why) => {
                tracing::warn!(ledger = %self.store, error = %why, "a ledger chunk cannot be read; proving its pairs again (HEADs)");
                return None;
            }
        };
        if let Err(e) = check(bytes.as_slice()) {
            tracing::warn!(ledger = %self.store, chunk = %info.name, error = %e, "a ledger chunk is damaged; proving its pairs again (HEADs)");
            return None;
        }
        Decoded::new(std::io::Cursor::new(bytes)).ok()
    }
}

/// One piece's position in the ledger.
pub struct Cursor {
    ledger: Arc<Ledger>,
    /// The next chunk to open once this one ends; `None` before the first
    /// lookup.
    next_chunk: Option<usize>,
    entries: Option<Decoded<std::io::Cursor<Vec<u8>>>>,
    /// The first entry not yet passed.
    current: Option<Proven>,
    last_asked: Option<String>,
}

impl Cursor {
    /// The entry for `key`, if the ledger has one. Keys must come in
    /// ascending order; one that does not (a bug, or a listing out of
    /// order, which the merge-join refuses anyway) is answered `None`.
    pub async fn lookup(&mut self, key: &str) -> Option<Proven> {
        if self.last_asked.as_deref().is_some_and(|last| last >= key) {
            return None;
        }
        self.last_asked = Some(key.to_owned());
        let chunks = &self.ledger.manifest.chunks;
        if self.next_chunk.is_none() {
            // The last chunk starting at or before the key holds it, if any does.
            let at = chunks.partition_point(|c| c.first.as_str() <= key);
            let first = at.saturating_sub(1);
            self.next_chunk = Some(first);
        }
        loop {
            if let Some(current) = &self.current {
                if current.key.as_str() > key {
                    return None;
                }
                if current.key == key {
                    self.ledger.hits.fetch_add(1, Ordering::Relaxed);
                    return self.current.take();
                }
                self.current = None;
            }
            match self.entries.as_mut().and_then(Iterator::next) {
                Some(Ok(entry)) => {
                    self.current = Some(entry);
                    continue;
                }
                Some(Err(e)) => {
                    // Checked whole when opened, so this is a line that is
                    // not an entry: the rest of the chunk is not used.
                    tracing::warn!(ledger = %self.ledger.store, error = %e, "a ledger chunk holds a bad line; proving its pairs again (HEADs)");
                    self.entries = None;
                }
                None => self.entries = None,
            }
            // This chunk is done: open the next, unless it starts past the key.
            let next = self.next_chunk.unwrap_or(0);
            match chunks.get(next) {
                Some(info) if self.entries.is_none() && info.first.as_str() <= key => {
                    self.next_chunk = Some(next + 1);
                    self.entries = self.ledger.chunk(next).await;
                    if self.entries.is_none() {
                        continue;
                    }
                }
                _ => return None,
            }
        }
    }
}
