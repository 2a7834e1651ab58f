//! The keys a run wrote, kept while few, and whether verifying them by HEAD
//! costs less than listing both sides again.

use std::sync::Mutex;

use crate::model::prices::PriceTable;

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
    // The built-in price table's LIST and HEAD, the same numbers `plan`
    // prices a run with; only their ratio matters here.
    let prices = PriceTable::built_in_shared();
    // Whole millionths of the currency, so the comparison is exact at the
    // break-even point, where floating point could tip either way.
    let price = |op| {
        let per_1000 = prices
            .s3_request_price(op)
            .expect("the built-in table prices LIST and HEAD");
        (per_1000 * 1e6).round() as u64
    };
    let pages = |n: u64| n.div_ceil(page_size.max(1)).max(1);
    let pages = pages(source) + pages(destination);
    written <= MAX_WRITTEN_KEYS as u64
        && written * 2 * price("HeadObject") <= pages * price("ListObjectsV2")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A HEAD costs 0.0004 and a LIST 0.005 per 1,000 (us-east-1): a HEAD
    /// on both sides of one key costs 0.16 of a listed page, so 12 keys
    /// beat re-listing two pages, 13 do not, and exactly 25 keys tie with
    /// four pages, where HEADs win.
    #[test]
    fn heads_win_up_to_the_break_even_point_of_the_built_in_prices() {
        assert!(heads_are_cheaper(12, 1, 1, 1000));
        assert!(!heads_are_cheaper(13, 1, 1, 1000));
        assert!(heads_are_cheaper(25, 2000, 2000, 1000));
        assert!(!heads_are_cheaper(26, 2000, 2000, 1000));
        assert!(!heads_are_cheaper(
            MAX_WRITTEN_KEYS as u64 + 1,
            u64::MAX / 4,
            0,
            1
        ));
    }
}
