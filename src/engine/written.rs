//! The keys a run wrote, kept while few, and whether verifying them by HEAD
//! costs less than listing both sides again.

use std::sync::Mutex;

/// Price of a LIST and of a HEAD, per 1,000 requests, in tenths of a US
/// cent (S3 Standard, us-east-1: USD 0.005 and 0.0004). Only the ratio
/// matters here.
const LIST_PRICE: u64 = 50;
const HEAD_PRICE: u64 = 4;
/// Written keys kept for verification by HEAD; past this, verification
/// lists again (HEADs would cost more by then anyway, below ~80 million
/// listed objects, and the list stays under a megabyte).
const MAX_WRITTEN_KEYS: usize = 10_000;

/// The keys a run wrote (copied, updated, deleted), while few.
#[derive(Debug)]
pub struct WrittenKeys {
    keys: Mutex<Option<Vec<String>>>,
}

impl Default for WrittenKeys {
    fn default() -> Self {
        WrittenKeys {
            keys: Mutex::new(Some(Vec::new())),
        }
    }
}

impl WrittenKeys {
    pub fn record(&self, key: &str) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let full = keys.as_ref().is_some_and(|k| k.len() >= MAX_WRITTEN_KEYS);
        if full {
            *keys = None; // too many to keep: verification lists again
        } else if let Some(keys) = keys.as_mut() {
            keys.push(key.to_owned());
        }
    }

    /// The written keys, if they are few enough that HEADs of each on both
    /// sides cost less than listing again `source` and `destination`
    /// objects in pages of `page_size`.
    pub fn if_cheaper_than_listing(
        &self,
        source: u64,
        destination: u64,
        page_size: u64,
    ) -> Option<Vec<String>> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let keys = keys.as_ref()?;
        heads_are_cheaper(keys.len() as u64, source, destination, page_size).then(|| keys.clone())
    }
}

/// Whether HEADs of `written` keys on both sides cost less than listing
/// `source` and `destination` objects again in pages of `page_size` (what
/// a run decides, and what `plan` predicts it decides).
pub fn heads_are_cheaper(written: u64, source: u64, destination: u64, page_size: u64) -> bool {
    let pages = |n: u64| n.div_ceil(page_size.max(1)).max(1);
    let pages = pages(source) + pages(destination);
    written <= MAX_WRITTEN_KEYS as u64 && written * 2 * HEAD_PRICE <= pages * LIST_PRICE
}
