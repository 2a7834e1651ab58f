//! Where to cut a key range so that its pieces list in parallel.
//!
//! ListObjectsV2 is one sequential stream of pages per range; the only way
//! to list faster is to list several ranges at once. Three ways to find the
//! cuts, cheapest first:
//!
//! - **Prefixes.** A keyspace with folders (`2024/`, `2025/`) is cut at its
//!   first-level common prefixes: one delimiter request.
//! - **A sample.** A flat keyspace (`img-000001.jpg` …) has no prefixes, but
//!   its first page shows what its keys look like: which characters vary
//!   and how far one page of keys reaches. Cuts are placed beyond that page
//!   at 1, 2, 4, … pages' worth, in that key space ([`KeySpace`]).
//! - **Bisection.** When a piece still lags while listers sit idle, its
//!   remainder is cut in two at the midpoint between where it has got to and
//!   where it ends ([`KeySpace::midpoint`]).
//!
//! A cut only decides how the work is divided, never what is listed: pieces
//! always tile the range, and a misplaced cut costs one extra (partial) page,
//! not a missed key. [`MovableEnd`] is what lets a piece's end move down
//! safely while it is being listed.

use std::sync::Mutex;

use crate::model::entry::Side;
use crate::model::location::KeyRange;

/// How many leading characters (after a common prefix) the key space does
/// arithmetic on: enough to place cuts among billions of keys.
const WIDTH: usize = 8;
/// Keys of a page kept as its sample.
const SAMPLE_KEYS: usize = 32;

/// Keys seen as numbers. After a prefix every sampled key shares (backed off
/// to a separator, so `img-00000` counts from `img-`), each position is a
/// digit whose base is the character class seen there in the sample: a
/// position that held digits counts `0`-`9`, one that held lowercase
/// letters `a`-`z`, others just the characters seen. `img-000123.jpg` then
/// reads as the number 123 in its digit positions, and "one page further"
/// lands where the next page's keys are. Conversions keep the order of
/// strings; a result that rounding put outside its bounds is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    prefix: String,
    /// The digits of each position, ascending.
    positions: Vec<Vec<char>>,
}

impl KeySpace {
    /// The space of `sample`.
    pub fn from_sample<S: AsRef<str>>(sample: &[S]) -> Self {
        let common = sample
            .iter()
            .map(AsRef::as_ref)
            .reduce(common_prefix)
            .unwrap_or_default();
        // Back off to just after the last separator: the characters between
        // it and the first difference are digits that merely did not change
        // within one page.
        let cut = common
            .char_indices()
            .rfind(|(_, c)| !c.is_alphanumeric())
            .map_or(0, |(i, c)| i + c.len_utf8());
        let prefix = common[..cut].to_owned();
        let mut positions: Vec<Vec<char>> = vec![Vec::new(); WIDTH];
        for key in sample {
            for (slot, c) in positions
                .iter_mut()
                .zip(key.as_ref()[prefix.len()..].chars())
            {
                slot.push(c);
            }
        }
        // Lowercase hex (hashes, UUIDs) shows no letter past `f`: its
        // positions count in sixteen, not thirty-six, or cuts land where no
        // key can be.
        let hex = positions.iter().flatten().any(char::is_ascii_lowercase)
            && positions
                .iter()
                .flatten()
                .all(|c| !c.is_ascii_alphabetic() || ('a'..='f').contains(c));
        for slot in &mut positions {
            let seen = std::mem::take(slot);
            for c in &seen {
                match c {
                    '0'..='9' => slot.extend('0'..='9'),
                    'a'..='f' if hex => slot.extend('a'..='f'),
                    'a'..='z' => slot.extend('a'..='z'),
                    'A'..='Z' => slot.extend('A'..='Z'),
                    c => slot.push(*c),
                }
            }
            slot.sort_unstable();
            slot.dedup();
        }
        // Hashes and UUIDs (`00041b7e-…`): one page of them is a sliver of
        // their space, so the leading positions show only digits while the
        // later ones mix digits and letters. Those leading positions are
        // the same alphabet: read as digits alone, the space would end
        // before every key that starts with a letter.
        let mixed = |slot: &Vec<char>| {
            slot.iter().any(char::is_ascii_digit) && slot.iter().any(char::is_ascii_alphabetic)
        };
        if let Some(first_mixed) = positions.iter().position(mixed) {
            let alphabet = positions[first_mixed].clone();
            for slot in &mut positions[..first_mixed] {
                if slot.iter().all(char::is_ascii_digit) {
                    *slot = alphabet.clone();
                }
            }
        }
        // Positions no sampled key reaches end the space.
        positions.retain(|slot| !slot.is_empty());
        KeySpace { prefix, positions }
    }

    /// The key's position: `None` when it is not under the prefix.
    fn to_number(&self, key: &str) -> Option<u128> {
        let mut chars = key.strip_prefix(&self.prefix)?.chars();
        let mut n = 0u128;
        for digits in &self.positions {
            // A character between two digits takes the lower one's place,
            // so the number never exceeds the key's.
            let digit = match chars.next() {
                Some(c) => match digits.binary_search(&c) {
                    Ok(i) => i,
                    Err(i) => i.saturating_sub(1),
                },
                None => 0,
            };
            n = n * digits.len() as u128 + digit as u128;
        }
        Some(n)
    }

    /// The first number past every key under the prefix.
    fn end_number(&self) -> u128 {
        self.positions.iter().map(|d| d.len() as u128).product()
    }

    fn to_key(&self, mut n: u128) -> String {
        let mut chars: Vec<char> = Vec::with_capacity(self.positions.len());
        for digits in self.positions.iter().rev() {
            let base = digits.len() as u128;
            chars.push(digits[(n % base) as usize]);
            n /= base;
        }
        chars.reverse();
        // Trailing lowest digits add nothing but length.
        while chars.len() > 1 && self.positions[chars.len() - 1].first() == chars.last() {
            chars.pop();
        }
        let mut key = self.prefix.clone();
        key.extend(chars);
        key
    }

    /// A key strictly between `low` and `high` (`None`: no upper bound),
    /// near the middle of the keys the space holds between them, or `None`
    /// when the space can find none.
    pub fn midpoint(&self, low: &str, high: Option<&str>) -> Option<String> {
        let lo = self.to_number(low)?;
        let hi = match high {
            Some(h) => self.to_number(h).unwrap_or(self.end_number()),
            None => self.end_number(),
        };
        (hi > lo + 1)
            .then(|| self.to_key(lo + (hi - lo) / 2))
            .filter(|m| m.as_str() > low && high.is_none_or(|h| m.as_str() < h))
    }

    /// How many times the keys from `from` to `past` the keys from `past`
    /// to `end` (`None`: the space's end) are, by their place in the
    /// space; `None` when a key is outside it.
    pub fn ratio_ahead(&self, from: &str, past: &str, end: Option<&str>) -> Option<f64> {
        let (a, b) = (self.to_number(from)?, self.to_number(past)?);
        let c = match end {
            Some(end) => self.to_number(end)?,
            None => self.end_number(),
        };
        (b > a && c >= b).then(|| (c - b) as f64 / (b - a) as f64)
    }

    /// A key as far past `past` as `past` is past `first`: where a range
    /// without an end is cut in two, betting that the keys to come are as
    /// dense as the ones listed.
    pub fn extend(&self, first: &str, past: &str) -> Option<String> {
        let (a, b) = (self.to_number(first)?, self.to_number(past)?);
        let n = b.checked_add((b - a.min(b)).max(1))?;
        (n < self.end_number())
            .then(|| self.to_key(n))
            .filter(|k| k.as_str() > past)
    }

    /// Up to `count` cuts past `from`, for keys a sampled page spread from
    /// `first` to `last` over, at 1, 2, 4, … pages' worth: the keyspace's
    /// size is unknown, so near cuts are dense and far ones sparse, and
    /// bisection evens out whatever turns out too large.
    pub fn cuts_after_page(
        &self,
        first: &str,
        last: &str,
        from: &str,
        count: usize,
    ) -> Vec<String> {
        let (Some(a), Some(z), Some(b)) = (
            self.to_number(first),
            self.to_number(last),
            self.to_number(from),
        ) else {
            return Vec::new();
        };
        let page = (z - a.min(z)).max(1);
        let last = from;
        let mut cuts: Vec<String> = Vec::new();
        let mut reach = page;
        for _ in 0..count {
            let n = b.saturating_add(reach);
            if n >= self.end_number() {
                break;
            }
            let key = self.to_key(n);
            if key.as_str() > last && cuts.last().is_none_or(|c| key > *c) {
                cuts.push(key);
            }
            reach = reach.saturating_mul(2);
        }
        cuts
    }
}

fn common_prefix<'a>(a: &'a str, b: &str) -> &'a str {
    let len = a
        .char_indices()
        .zip(b.chars())
        .take_while(|((_, x), y)| x == y)
        .last()
        .map_or(0, |((i, c), _)| i + c.len_utf8());
    &a[..len]
}

/// The end of a range being listed on both sides, which a scheduler may
/// move down to hand the rest of the range to another lister.
///
/// Each side's lister drops the keys of a page at or past the end
/// ([`MovableEnd::admit`]), so it stops listing there. Its consumer, the
/// piece's merge-join, takes each key through [`MovableEnd::pass`]: under
/// the lock, a key at or past the end ends that side, and any other becomes
/// that side's cursor. [`MovableEnd::cut`] moves the end only past both
/// cursors. So no key either side has already taken can fall beyond the
/// new end, both sides stop at the same key, and the keys from the new end
/// on are exactly the new range's. Cursors follow what was taken, not what
/// was listed: a side whose pages run ahead (a sparse destination lists
/// the whole range in a few pages) does not stop the range being cut.
#[derive(Debug)]
pub struct MovableEnd {
    state: Mutex<EndState>,
    notify: std::sync::Arc<tokio::sync::Notify>,
}

#[derive(Debug, Default)]
struct EndState {
    end: Option<String>,
    /// The last key each side handed on (source, destination).
    cursors: [Option<String>; 2],
    /// The last key the source side has listed, which may be pages ahead
    /// of what it handed on: cuts are placed past it, so those pages are
    /// not listed twice.
    source_listed: Option<String>,
    /// Full pages the source side has listed: evidence that the range is
    /// large enough to be worth a cut.
    full_pages: u64,
    /// Keys spread over the source side's first full page, if it had one.
    sample: Option<Vec<String>>,
    /// Where `full_pages` began counting: the cursor at the last cut or
    /// deferral (`None`: the range's start).
    counted_from: Option<String>,
    finished: bool,
}

impl MovableEnd {
    /// `notify` is woken on every admitted page, so a scheduler can look
    /// for work to split.
    pub fn new(end: Option<String>, notify: std::sync::Arc<tokio::sync::Notify>) -> Self {
        MovableEnd {
            state: Mutex::new(EndState {
                end,
                ..EndState::default()
            }),
            notify,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EndState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep the keys of a page (ascending) that are before the end, and
    /// count the page towards a cut. `full`: the page was a full one and
    /// more follow. Returns true when the end was reached.
    pub fn admit<T>(
        &self,
        side: Side,
        keys: &mut Vec<T>,
        key: impl Fn(&T) -> &str,
        full: bool,
    ) -> bool {
        let mut state = self.lock();
        let before = keys.len();
        if let Some(end) = state.end.clone() {
            keys.retain(|k| key(k) < end.as_str());
        }
        let reached = keys.len() < before;
        if side == Side::Source
            && let Some(last) = keys.last()
        {
            state.source_listed = Some(key(last).to_owned());
        }
        if side == Side::Source && full && !reached {
            state.full_pages += 1;
            if state.sample.is_none() && !keys.is_empty() {
                // Every nth key and the last: enough for the alphabet and
                // the page's reach, without keeping the page.
                let step = (keys.len() / SAMPLE_KEYS).max(1);
                let mut sample: Vec<String> = keys
                    .iter()
                    .step_by(step)
                    .map(|k| key(k).to_owned())
                    .collect();
                let last = key(keys.last().expect("not empty"));
                if sample.last().map(String::as_str) != Some(last) {
                    sample.push(last.to_owned());
                }
                state.sample = Some(sample);
            }
        }
        drop(state);
        self.notify.notify_one();
        reached
    }

    /// Take `key` (the next of `side`, ascending) if it is before the end,
    /// and make it that side's cursor; `false`: the side has reached the end.
    pub fn pass(&self, side: Side, key: &str) -> bool {
        let mut state = self.lock();
        if state.end.as_deref().is_some_and(|end| key >= end) {
            return false;
        }
        state.cursors[side as usize] = Some(key.to_owned());
        true
    }

    /// Whether `key` is at or past the end as it is now.
    pub fn is_past(&self, key: &str) -> bool {
        self.lock().end.as_deref().is_some_and(|end| key >= end)
    }

    /// Count full pages from zero again: the range was looked at and not
    /// cut, so look again only after as many pages more.
    pub fn defer(&self) {
        let mut state = self.lock();
        state.full_pages = 0;
        state.counted_from = state.cursors[Side::Source as usize].clone();
    }

    /// Mark the range done (both sides listed): it can no longer be cut.
    pub fn finish(&self) {
        self.lock().finished = true;
    }

    /// What a scheduler needs to decide on a cut: the key both sides have
    /// handed on and the source has listed up to, the end, the full pages listed since the last cut, and the
    /// first page's sample. `None` once finished.
    pub fn progress(&self) -> Option<Progress> {
        let state = self.lock();
        if state.finished {
            return None;
        }
        let past = state
            .cursors
            .iter()
            .chain([&state.source_listed])
            .flatten()
            .max()
            .cloned();
        Some(Progress {
            past,
            end: state.end.clone(),
            full_pages: state.full_pages,
            counted_from: state.counted_from.clone(),
            sample: state.sample.clone(),
        })
    }

    /// Move the end down to `cut`, if `cut` is past both cursors and before
    /// the end. Returns the old end (the new range's), or `None` when the
    /// cut is no longer possible (a side got there first).
    pub fn cut(&self, cut: &str) -> Option<Option<String>> {
        let mut state = self.lock();
        let past_cursors = state.cursors.iter().flatten().all(|c| c.as_str() < cut);
        let before_end = state.end.as_deref().is_none_or(|e| cut < e);
        if state.finished || !past_cursors || !before_end {
            return None;
        }
        state.full_pages = 0;
        state.counted_from = state.cursors[Side::Source as usize].clone();
        Some(state.end.replace(cut.to_owned()))
    }
}

/// A snapshot of a range being listed, see [`MovableEnd::progress`].
#[derive(Debug, Clone)]
pub struct Progress {
    pub past: Option<String>,
    pub end: Option<String>,
    pub full_pages: u64,
    /// Where those full pages began (`None`: the range's start).
    pub counted_from: Option<String>,
    /// Keys of the first full source page, ascending (first and last
    /// included).
    pub sample: Option<Vec<String>>,
}

// ------------------------------------------------ shards at common prefixes

/// Keep at most `keep` boundaries, evenly spread.
pub fn thin(boundaries: Vec<String>, keep: usize) -> Vec<String> {
    if boundaries.len() <= keep {
        return boundaries;
    }
    if keep == 0 {
        return Vec::new();
    }
    let step = boundaries.len() as f64 / keep as f64;
    (0..keep)
        .map(|i| boundaries[((i as f64 + 0.5) * step) as usize].clone())
        .collect()
}

/// The shards between consecutive boundaries.
pub fn tile(range: &KeyRange, boundaries: Vec<String>) -> Vec<KeyRange> {
    let mut shards = Vec::with_capacity(boundaries.len() + 1);
    let mut start_at = range.start_at.clone();
    for boundary in boundaries {
        shards.push(KeyRange {
            prefix: range.prefix.clone(),
            start_at: start_at.take(),
            start_after: range.start_after.clone(),
            end_before: Some(boundary.clone()),
        });
        start_at = Some(boundary);
    }
    shards.push(KeyRange {
        prefix: range.prefix.clone(),
        start_at,
        start_after: range.start_after.clone(),
        end_before: range.end_before.clone(),
    });
    shards
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hex_keys_count_in_sixteen_even_where_the_first_page_shows_digits() {
        // The first keys of a million random UUIDs: the leading positions
        // have not left `0` yet.
        let space = KeySpace::from_sample(&[
            "00000c6a-2c9d-93f1",
            "0001f3b2-9a0e-1c44",
            "0003e9d0-77af-b2c1",
            "00041bce-0f1d-e8a5",
        ]);
        let middle = space.midpoint("00000c6a", None).unwrap();
        assert!(
            middle.starts_with('7') || middle.starts_with('8'),
            "{middle}"
        );
        assert!(space.to_number("ffffffff") < Some(space.end_number()));
        assert!(space.to_number("ffffffff") > space.to_number("9fffffff"));
    }

    proptest! {
        /// Whatever the boundaries, every key of the range falls in exactly
        /// one shard.
        #[test]
        fn shards_hold_every_key_once(
            mut boundaries in proptest::collection::vec("[a-c/]{1,4}", 0..12),
            keys in proptest::collection::vec("[a-c/]{0,5}", 0..60),
            keep in 0usize..15,
        ) {
            boundaries.sort();
            boundaries.dedup();
            let range = KeyRange::all();
            let shards = tile(&range, thin(boundaries, keep));
            prop_assert!(shards.len() <= keep + 1);
            for key in keys {
                let holders = shards.iter().filter(|s| s.contains(&key)).count();
                prop_assert_eq!(holders, 1, "key {:?} in {} shards of {:?}", key, holders, shards);
            }
        }
    }

    #[test]
    fn a_range_with_bounds_keeps_them_in_its_first_and_last_shard() {
        let range = KeyRange {
            start_after: Some("a".into()),
            end_before: Some("m".into()),
            ..KeyRange::default()
        };
        let shards = tile(&range, vec!["c/".into(), "f/".into()]);
        assert_eq!(shards.len(), 3);
        assert!(!shards[0].contains("a"));
        assert!(shards[0].contains("b"));
        assert!(shards[1].contains("c/"));
        assert!(shards[2].contains("f/x"));
        assert!(!shards[2].contains("m"));
    }

    #[test]
    fn a_flat_keyspace_is_cut_beyond_its_first_page_in_growing_steps() {
        let sample: Vec<String> = (1..=1000).map(|i| format!("img-{i:06}.jpg")).collect();
        let space = KeySpace::from_sample(&sample);
        let cuts = space.cuts_after_page(&sample[0], &sample[999], &sample[999], 4);
        assert_eq!(cuts.len(), 4, "{cuts:?}");
        assert!(cuts[0].as_str() > "img-001000.jpg" && cuts[0].as_str() < "img-003000");
        assert!(cuts.windows(2).all(|w| w[0] < w[1]), "{cuts:?}");
        assert!(cuts[3].as_str() < "img-020000", "{cuts:?}");
    }

    #[test]
    fn a_midpoint_lies_between_its_bounds_or_there_is_none() {
        let space = KeySpace::from_sample(&["a/0001", "a/0999"]);
        let mid = space.midpoint("a/0100", Some("a/0300")).unwrap();
        assert!(mid.as_str() > "a/0150" && mid.as_str() < "a/0250", "{mid}");
        assert!(space.midpoint("a/0100", Some("a/0100")).is_none());
        assert!(space.midpoint("a/01", Some("a/010")).is_none());
        assert!(space.midpoint("a/0999", None).unwrap().as_str() > "a/0999");
        assert!(space.midpoint("b", None).is_none(), "outside the prefix");
    }

    proptest! {
        #[test]
        fn midpoints_are_strictly_between(
            sample in proptest::collection::vec("[a-c0-2/ü]{0,6}", 1..5),
            low in "[a-c0-2/ü]{0,8}",
            high in proptest::option::of("[a-c0-2/ü]{0,8}"),
        ) {
            let space = KeySpace::from_sample(&sample);
            if let Some(mid) = space.midpoint(&low, high.as_deref()) {
                prop_assert!(mid > low);
                prop_assert!(high.as_ref().is_none_or(|h| &mid < h));
            }
        }

        /// Whatever the cuts, a key is handed on by the range it belongs to:
        /// before the cut by the old range, from the cut on by the new one.
        #[test]
        fn a_cut_never_strands_a_key(
            mut keys in proptest::collection::vec("[a-e]{1,4}", 1..40),
            first_batch in 0usize..40,
            cut in "[a-e]{1,4}",
        ) {
            keys.sort();
            keys.dedup();
            let end = MovableEnd::new(None, Default::default());
            let split = first_batch.min(keys.len());
            // Listed all at once, taken in two batches with a cut between.
            let mut listed_ahead: Vec<String> = keys.clone();
            end.admit(Side::Source, &mut listed_ahead, |k| k.as_str(), false);
            let handed: Vec<String> = keys[..split]
                .iter()
                .take_while(|k| end.pass(Side::Source, k))
                .cloned()
                .collect();
            match end.cut(&cut) {
                Some(old_end) => {
                    prop_assert!(old_end.is_none());
                    let rest: Vec<String> = keys[split..]
                        .iter()
                        .take_while(|k| end.pass(Side::Source, k))
                        .cloned()
                        .collect();
                    let new_range: Vec<&String> = keys.iter().filter(|k| k.as_str() >= cut.as_str()).collect();
                    let listed: Vec<&String> = handed.iter().chain(&rest).collect();
                    prop_assert!(listed.iter().all(|k| k.as_str() < cut.as_str()));
                    prop_assert_eq!(listed.len() + new_range.len(), keys.len());
                }
                None => prop_assert!(handed.last().is_some_and(|l| l.as_str() >= cut.as_str())),
            }
        }
    }
}
