//! `--as-of` at scale (issue 25): a listing of about 100,000 versions and
//! delete markers, served by the synthetic endpoint
//! (`scripts/bench/synthetic_s3.py`, whose `-versions` buckets compute
//! each key's history from its index), seen at a point in time.
//!
//! Listed as one stream, as key ranges one after another, and in pieces by
//! the engine (`engine::pieces`, as `--list-concurrency` does), the same
//! keys come out at the same versions: in order, none twice, none missing.
//! And all of them equal what the history's formula (the server's
//! docstring, written again here from it) says each key held at that time.
//! Pages of odd sizes make a key's versions span pages, and a page end
//! fall between a key's versions and its delete markers.

mod support;

use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use s3_fanout::backend::s3::listing::{ListTarget, list_range};
use s3_fanout::backend::side::Listing;
use s3_fanout::engine::pieces::{PairSink, Sides, list_in_pieces};
use s3_fanout::model::entry::{ObjectEntry, Pair};
use s3_fanout::model::location::KeyRange;
use s3_fanout::report::Stats;
use support::synthetic::Synthetic;

/// 40,000 keys in 100 folders: 99,884 versions and delete markers.
const KEYS: u64 = 40_000;
const BUCKET: &str = "syn-40000-dirs-versions";
/// The pieces' destination: empty (a -copy bucket holds only what is
/// copied into it), so every listed source entry comes out of the join.
const EMPTY: &str = "syn-40000-dirs-copy";

/// 2026-01-01T00:00:00Z: generation j of the history is written on day j.
const EPOCH: i64 = 1_767_225_600;
const DAY: i64 = 86_400;

/// SplitMix64's finaliser, as the server's docstring gives it.
fn mix(x: u64) -> u64 {
    let mut x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Key i's history: `count` entries, entry 0 the oldest.
struct History {
    h: u64,
    g: u64,
    count: u64,
}

impl History {
    fn of(i: u64) -> History {
        let h = mix(i);
        History {
            h,
            g: mix(h),
            count: 1 + h % 4,
        }
    }

    fn marker(&self, j: u64) -> bool {
        j >= 1 && (self.h >> (4 + 4 * j)) % 16 < 5
    }

    fn seconds(&self, j: u64) -> i64 {
        EPOCH + j as i64 * DAY + ((self.g >> (16 * j)) % 65_536) as i64
    }

    fn version_id(&self, j: u64) -> String {
        if j == 0 && (self.h >> 24).is_multiple_of(8) {
            "null".to_owned()
        } else {
            format!("v{j}.{:016x}", self.h)
        }
    }

    fn newest_version(&self) -> u64 {
        (0..self.count).rev().find(|&j| !self.marker(j)).unwrap()
    }

    /// The entry current at `seconds`, if it is a version.
    fn as_of(&self, seconds: i64) -> Option<u64> {
        let j = (0..self.count)
            .rev()
            .find(|&j| self.seconds(j) <= seconds)?;
        (!self.marker(j)).then_some(j)
    }
}

fn key(i: u64) -> String {
    format!("dir-{:02}/obj-{i:09}", i * 100 / KEYS)
}

/// What a listing gave, per key: (key, version id, size, LastModified ms).
type Seen = Vec<(String, String, u64, i64)>;

fn seen(entries: impl IntoIterator<Item = ObjectEntry>) -> Seen {
    entries
        .into_iter()
        .map(|e| {
            let id = e.version_id.expect("a listing as of a time names versions");
            (e.key, id, e.size, e.last_modified_ms)
        })
        .collect()
}

/// The formula's answer: every key present at `seconds`, at its version.
fn expected(seconds: i64) -> Seen {
    (0..KEYS)
        .filter_map(|i| {
            let history = History::of(i);
            let j = history.as_of(seconds)?;
            // The newest version is the plain bucket's object (size 1024 +
            // i % 4096); an older one has size 512 + j.
            let size = if j == history.newest_version() {
                1024 + i % 4096
            } else {
                512 + j
            };
            Some((
                key(i),
                history.version_id(j),
                size,
                history.seconds(j) * 1000,
            ))
        })
        .collect()
}

async fn target(
    server: &Synthetic,
    bucket: &str,
    page_size: i32,
    as_of: Option<i64>,
) -> ListTarget {
    ListTarget {
        client: support::s3_at(&server.endpoint).await,
        location: format!("s3://{bucket}").parse().unwrap(),
        expected_owner: None,
        request_payer: false,
        page_size,
        as_of_ms: as_of.map(|s| s * 1000),
    }
}

async fn listed(target: &ListTarget, range: KeyRange) -> Seen {
    let entries: Vec<ObjectEntry> = list_range(target.clone(), range)
        .try_collect()
        .await
        .unwrap();
    seen(entries)
}

/// Ranges that tile dir-10/ to dir-19/ (prefix `dir-1`), bounded every
/// way a range can be: an end inside a folder, a start at and after a key,
/// a folder prefix, an open end. Their bounds are keys, so each key's
/// versions are in one range.
fn tiles() -> Vec<KeyRange> {
    let at = |s: &str| Some(s.to_owned());
    let within = |range: KeyRange| KeyRange {
        prefix: "dir-1".into(),
        ..range
    };
    vec![
        within(KeyRange {
            end_before: at("dir-12/obj-000004900"),
            ..KeyRange::default()
        }),
        within(KeyRange {
            start_at: at("dir-12/obj-000004900"),
            end_before: at("dir-14"),
            ..KeyRange::default()
        }),
        within(KeyRange {
            start_at: at("dir-14"),
            end_before: at("dir-14/obj-000005777"),
            ..KeyRange::default()
        }),
        within(KeyRange {
            start_after: at("dir-14/obj-000005776"),
            end_before: at("dir-15/"),
            ..KeyRange::default()
        }),
        KeyRange {
            prefix: "dir-15/".into(),
            ..KeyRange::default()
        },
        within(KeyRange {
            start_after: at("dir-15/\u{10FFFF}"),
            end_before: at("dir-18/obj-000007399"),
            ..KeyRange::default()
        }),
        within(KeyRange {
            start_after: at("dir-18/obj-000007398"),
            ..KeyRange::default()
        }),
    ]
}

/// Keeps the source side of every pair a piece hands on.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<ObjectEntry>>>);

impl PairSink for Collect {
    async fn take(&self, pair: Pair) -> bool {
        if let Pair::SourceOnly(source) | Pair::Both(source, _) = pair {
            self.0.lock().unwrap().push(source);
        }
        true
    }
}

/// `range` of the bucket as of `seconds`, listed by the engine in pieces
/// (pages of `page_size`, six listers) against an empty destination; in
/// key order.
async fn in_pieces(
    server: &Synthetic,
    seconds: i64,
    page_size: i32,
    range: KeyRange,
) -> (Seen, u64) {
    let stats = Arc::new(Stats::default());
    let sink = Collect::default();
    let sides = Sides {
        source: Listing::S3(target(server, BUCKET, page_size, Some(seconds)).await),
        destination: Listing::S3(target(server, EMPTY, page_size, None).await),
        range,
        list_concurrency: 6,
        counted: Some(stats.clone()),
        preflight: true,
    };
    list_in_pieces(sides, sink.clone()).await.unwrap();
    let mut entries = std::mem::take(&mut *sink.0.lock().unwrap());
    // Pieces finish in any order; within each, keys ascend.
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    let pieces = stats
        .listed_pieces
        .load(std::sync::atomic::Ordering::Relaxed);
    (seen(entries), pieces)
}

/// Where two listings first part, for a failure message that fits.
fn first_difference(a: &Seen, b: &Seen) -> String {
    let at = a.iter().zip(b).position(|(x, y)| x != y);
    match at {
        Some(n) => format!("entry {n}: {:?} vs {:?}", a[n], b[n]),
        None => format!("lengths {} vs {}", a.len(), b.len()),
    }
}

fn assert_same(what: &str, got: &Seen, want: &Seen) {
    assert!(got == want, "{what}: {}", first_difference(got, want));
}

/// Mid-history: keys at their first, second or third entry, or absent.
const MIDDLE: i64 = EPOCH + DAY + DAY / 2;

/// The bucket as of `seconds` (`range` of it), listed as one stream in
/// pages of a thousand and by the engine in pieces (in pages of 251
/// mid-history, where a page ends inside a key's history on most pages),
/// and for ten folders as seven ranges as well: each must be the formula's
/// answer. Returns how many keys were present.
async fn check(server: &Synthetic, when: &str, seconds: i64, range: KeyRange) -> usize {
    let want: Seen = expected(seconds)
        .into_iter()
        .filter(|(k, ..)| range.contains(k))
        .collect();
    let whole = target(server, BUCKET, 1000, Some(seconds)).await;
    let one = listed(&whole, range.clone()).await;
    assert_same(&format!("one stream, {when}"), &one, &want);
    if range.prefix == "dir-1" {
        let mut ranges = Vec::new();
        for range in tiles() {
            ranges.extend(listed(&whole, range).await);
        }
        assert_same(&format!("seven ranges, {when}"), &ranges, &want);
    }
    let page = if seconds == MIDDLE { 251 } else { 1000 };
    let (pieces, count) = in_pieces(server, seconds, page, range).await;
    assert_same(&format!("in pieces, {when}"), &pieces, &want);
    // With nothing present, no page has a key to place a cut at: the
    // range lists as one piece.
    assert!(want.is_empty() || count > 2, "{when}: {count} pieces");
    want.len()
}

/// GIVEN 40,000 keys with 99,884 versions and delete markers between
/// them (a key has one to four entries, written a day apart; nearly a
/// quarter of keys end deleted, a fifth have a marker between versions,
/// an eighth began as a "null" version)
/// WHEN the bucket is listed as of mid-history as one stream and in
/// pieces by the engine; and ten of its folders (10,000 entries) as of
/// before anything and after everything, as one stream, in pieces and as
/// seven ranges
/// THEN each gives every key present then at its version then (its id,
/// size and time), in key order, none twice, none missing, exactly as the
/// formula says
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_thousand_versions_list_the_same_as_one_stream_as_ranges_and_in_pieces() {
    let server = Synthetic::start();
    let total: u64 = (0..KEYS).map(|i| History::of(i).count).sum();
    assert_eq!(total, 99_884, "the server's docstring's count");
    // dir-10/ to dir-19/: a prefix, so the first cut's folders are all
    // the range's.
    let ten_folders = KeyRange {
        prefix: "dir-1".into(),
        ..KeyRange::default()
    };
    let part: u64 = (KEYS / 10..KEYS / 5).map(|i| History::of(i).count).sum();
    // The three at once: the server and the listings share two cores.
    let (before, middle, after) = tokio::join!(
        check(&server, "before anything", EPOCH - 1, ten_folders.clone()),
        check(&server, "mid-history", MIDDLE, KeyRange::all()),
        check(&server, "after everything", EPOCH + 5 * DAY, ten_folders),
    );
    assert_eq!(before, 0, "nothing existed before the first day");
    assert!(middle > 20_000 && after > 2_500, "{middle}, {after}");
    // Two listings of the whole bucket and six of ten folders,
    // each piece serving at most a page past its end: nothing is listed
    // over and over.
    let served = server.counts()["versions"][BUCKET].as_u64().unwrap();
    let listings = 2 * total + 6 * part;
    assert!(
        (listings..listings + listings / 10).contains(&served),
        "{served} entries served for listings of {listings}"
    );
}

/// GIVEN a key whose second entry is a version
/// WHEN its folder is listed as of exactly the second that version was
/// written, and one second earlier
/// THEN at or before: it is current at its second, the first before it.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_is_current_from_the_very_second_it_was_written() {
    let server = Synthetic::start();
    let i = (12_345..)
        .find(|&i| History::of(i).count >= 3 && !History::of(i).marker(1))
        .unwrap();
    let history = History::of(i);
    let folder = KeyRange {
        prefix: key(i)[..7].to_owned(),
        ..KeyRange::default()
    };
    for (seconds, j) in [(history.seconds(1), 1), (history.seconds(1) - 1, 0)] {
        let source = target(&server, BUCKET, 1000, Some(seconds)).await;
        let got = listed(&source, folder.clone()).await;
        let want: Seen = expected(seconds)
            .into_iter()
            .filter(|(k, ..)| k.starts_with(&folder.prefix))
            .collect();
        assert_same(&format!("as of {seconds}"), &got, &want);
        let version = got.iter().find(|(k, ..)| *k == key(i)).map(|e| &e.1);
        assert_eq!(
            version,
            Some(&history.version_id(j)),
            "key {i} at {seconds}"
        );
    }
}

/// GIVEN the same bucket in pages of three (a key's one to four entries
/// span up to two pages; a page ends between a version and its key's
/// delete marker)
/// WHEN a folder of 400 keys is listed as of mid-history
/// THEN it gives that folder's keys exactly as pages of a thousand do.
#[tokio::test(flavor = "multi_thread")]
async fn pages_of_three_split_keys_between_pages_and_change_nothing() {
    let server = Synthetic::start();
    let seconds = EPOCH + DAY + DAY / 2;
    let folder = KeyRange {
        prefix: "dir-42/".into(),
        ..KeyRange::default()
    };
    let small = target(&server, BUCKET, 3, Some(seconds)).await;
    let got = listed(&small, folder.clone()).await;
    let want: Seen = expected(seconds)
        .into_iter()
        .filter(|(k, ..)| k.starts_with("dir-42/"))
        .collect();
    assert!(want.len() > 200, "{}", want.len());
    assert_same("pages of three", &got, &want);
    // Every entry of the folder was served once: pages of three resume
    // where the last ended (a key and its version), never from a key's
    // first version again.
    let served = server.counts()["versions"][BUCKET].as_u64().unwrap();
    let entries: u64 = (16_800..17_200).map(|i| History::of(i).count).sum();
    assert!(
        (entries..entries + 3).contains(&served),
        "{served} entries served for a folder of {entries}"
    );
    let large = target(&server, BUCKET, 1000, Some(seconds)).await;
    assert_same("pages of 1000", &listed(&large, folder).await, &want);
}
