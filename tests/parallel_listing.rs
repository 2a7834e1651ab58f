//! Listing one range as several pieces at once (`--list-concurrency`),
//! against a real server. Pages of 10 keys (`--list-page-size`) make a few
//! hundred keys behave like a large bucket: the range is cut once it has
//! listed its first full page, and pieces that list four more while a
//! lister is idle are cut again.
//!
//! What must hold whatever the cuts: every key is listed, diffed and acted
//! on exactly once, on both sides, so the counts are exact and a re-run
//! finds nothing to do.

mod support;

use support::*;

const PIECES: &[&str] = &["--list-page-size", "10", "--list-concurrency", "6"];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = PIECES.to_vec();
    all.extend_from_slice(extra);
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flat_keyspace_in_pieces_copies_updates_and_deletes_every_key_exactly_once() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "pieces-flat").await;
    let keys: Vec<String> = (0..400).map(|i| format!("img-{i:06}.jpg")).collect();
    for (i, key) in keys.iter().enumerate() {
        put(&s3, &src, key, body(i as u64, 16)).await;
    }
    // The destination is sparse (every 20th key, half of them stale), so its
    // listing runs far ahead of the source's: a cut must fall past both.
    for (i, key) in keys.iter().enumerate().step_by(20) {
        let seed = if i % 40 == 0 { i as u64 } else { 9_999 };
        put(&s3, &dst, key, body(seed, 16)).await;
    }
    for extra in ["img-000050x.jpg", "img-000333x.jpg", "zz-extra"] {
        put(&s3, &dst, extra, body(7, 3)).await;
    }

    let (status, summary) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &args(&["--delete", "--verify-by-listing"]),
    );
    assert_eq!(status, 0, "{summary:#}");
    assert!(count(&summary, "listed_pieces") > 1, "{summary:#}");
    assert_eq!(count(&summary, "listed_source"), 400);
    assert_eq!(count(&summary, "listed_destination"), 23);
    assert_eq!(count(&summary, "copied"), 380);
    assert_eq!(count(&summary, "updated"), 10);
    assert_eq!(count(&summary, "skip_equal"), 10);
    assert_eq!(count(&summary, "deleted"), 3);
    // Verification lists in pieces too: every source key checked once.
    assert_eq!(count(&summary, "verify_checked"), 400);
    assert_eq!(count(&summary, "verify_mismatched"), 0);
    assert_eq!(contents(&s3, &dst).await, contents(&s3, &src).await);

    // Unchanged: nothing to do, whatever the pieces.
    let (status, again) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &args(&["--delete"]),
    );
    assert_eq!(status, 0, "{again:#}");
    assert!(count(&again, "listed_pieces") > 1, "{again:#}");
    assert_eq!(count(&again, "listed_source"), 400);
    assert_eq!(count(&again, "listed_destination"), 400);
    assert_eq!(count(&again, "skip_equal"), 400);
    assert_eq!(
        count(&again, "plan_copy") + count(&again, "plan_update") + count(&again, "plan_delete"),
        0
    );
    // 40 pages a side at the least; cuts cost a partly used page a side and
    // a few one-key probes, which must stay a small share.
    let lists = again["requests"]["ListObjectsV2"].as_u64().unwrap_or(0);
    assert!(
        (80..=LISTS_AT_MOST).contains(&lists),
        "{lists} listings: {again:#}"
    );
}

/// A source and destination holding the same `n` small keys.
async fn in_sync_pair(tag: &str, n: u64) -> (String, String) {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, tag).await;
    for i in 0..n {
        let key = format!("k{i:03}");
        put(&s3, &src, &key, body(i, 4)).await;
        put(&s3, &dst, &key, body(i, 4)).await;
    }
    (src, dst)
}

/// 400 keys in pages of 10, both sides: 80 listings and the cuts' cost.
const LISTS_AT_MOST: u64 = 96;

#[tokio::test(flavor = "multi_thread")]
async fn a_range_of_one_page_is_one_stream_at_one_request_a_side() {
    let (src, dst) = in_sync_pair("pieces-page", 9).await;
    // 9 keys in pages of 10: nothing to cut, so one page a side.
    let (status, summary) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &["--list-page-size", "10"],
    );
    assert_eq!(status, 0, "{summary:#}");
    assert_eq!(count(&summary, "listed_pieces"), 1, "{summary:#}");
    assert_eq!(summary["requests"]["ListObjectsV2"], 2, "{summary:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_range_of_a_few_pages_is_cut_after_its_first_and_pays_a_partly_used_page_a_piece() {
    let (src, dst) = in_sync_pair("pieces-small", 95).await;
    // 95 keys in pages of 10 (9 full, 1 partial): after the first page the
    // rest is cut at keys placed from it, so the other listers start at
    // once instead of waiting nine round trips.
    let (status, summary) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &["--list-page-size", "10"],
    );
    assert_eq!(status, 0, "{summary:#}");
    let pieces = count(&summary, "listed_pieces");
    assert!(pieces > 1, "{summary:#}");
    assert_eq!(count(&summary, "listed_source"), 95);
    assert_eq!(count(&summary, "skip_equal"), 95);
    // Ten pages a side; up to a partly used page a side per piece after the
    // first; and the one-key probes that keep cuts within the listing
    // (a bisection over the seven cuts, and one per later cut of an open end).
    let lists = summary["requests"]["ListObjectsV2"].as_u64().unwrap_or(0);
    let bound = 20 + 2 * (pieces - 1) + 3 + pieces;
    assert!(
        (20..=bound).contains(&lists),
        "{lists} listings (at most {bound}) for {pieces} pieces: {summary:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn folders_are_listed_as_pieces_cut_at_their_common_prefixes() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "pieces-folders").await;
    let mut keys = Vec::new();
    for folder in ["2021/", "2022/", "2023/", "2024/", "2025/", "a b/", "ü/"] {
        for i in 0..60 {
            keys.push(format!("{folder}{i:03}"));
        }
        // A folder marker and a key beside the folder, which sort around it.
        keys.push(folder.to_owned());
        keys.push(format!("{}.txt", folder.trim_end_matches('/')));
    }
    keys.extend(["+plus".to_owned(), "%41".to_owned(), "top".to_owned()]);
    for (i, key) in keys.iter().enumerate() {
        put(&s3, &src, key, body(i as u64, 8)).await;
    }
    let (status, summary) = sync_json(&format!("s3://{src}"), &format!("s3://{dst}"), &args(&[]));
    assert_eq!(status, 0, "{summary:#}");
    // The first page is in the first of seven folders, so the six ahead
    // hold about 36 pages: cuts at folders for the free listers, and
    // bisection after that.
    assert!(count(&summary, "listed_pieces") >= 3, "{summary:#}");
    assert_eq!(count(&summary, "listed_source"), keys.len() as u64);
    assert_eq!(count(&summary, "copied"), keys.len() as u64);
    assert_eq!(contents(&s3, &dst).await, contents(&s3, &src).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_piece_lists_one_page_per_thousand_keys_per_side() {
    let (src, dst) = in_sync_pair("pieces-one", 100).await;
    // 100 keys in pages of 10: 10 pages a side, 11 with the empty last.
    let (status, summary) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &["--list-page-size", "10", "--list-concurrency", "1"],
    );
    assert_eq!(status, 0, "{summary:#}");
    assert_eq!(count(&summary, "listed_pieces"), 1);
    let lists = summary["requests"]["ListObjectsV2"].as_u64().unwrap_or(0);
    assert!((20..=22).contains(&lists), "{lists} listings: {summary:#}");
}
