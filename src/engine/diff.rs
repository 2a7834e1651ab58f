//! Stage 2: diff a range of the source against the same range of the
//! destination.
//!
//! [`merge_join`] walks both ascending listings at once, holding one entry of
//! each: O(1) memory whatever the bucket's size, and no HEAD per object.
//! [`decide`] then turns each pair into an [`Action`] under the run's
//! [`DiffOptions`]. Both are pure, so the CLI, the Lambdas and the property
//! tests all run the same code.

use std::cmp::Ordering;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::base::error::SyncError;
use crate::model::entry::{ObjectEntry, Pair};
use crate::model::options::{DiffMode, DiffOptions};
use crate::model::s3_shape::etag_shape;

/// What the sync does with one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// New at the destination.
    Copy { source: ObjectEntry },
    /// Present at the destination but different.
    Update {
        source: ObjectEntry,
        destination: ObjectEntry,
    },
    /// Present only at the destination, and `--delete` is on.
    Delete { destination: ObjectEntry },
    /// Same size, and ETags that cannot decide: equal copies of an SSE-KMS
    /// or SSE-C object have different ETags, and multipart layouts give
    /// other ones. The ledger of proven pairs, or the two stored checksums
    /// (a HEAD of each side), decide instead ([`crate::engine::prove`]).
    Compare {
        source: ObjectEntry,
        destination: ObjectEntry,
    },
    /// Nothing to do.
    Skip {
        key: String,
        size: u64,
        reason: SkipReason,
    },
}

impl Action {
    /// The key the action is about (relative to its side's location).
    pub fn key(&self) -> &str {
        match self {
            Action::Copy { source }
            | Action::Update { source, .. }
            | Action::Compare { source, .. } => &source.key,
            Action::Delete { destination } => &destination.key,
            Action::Skip { key, .. } => key,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Equal under the diff mode.
    Equal,
    /// Same size and the copy is newer, but the ETags are not comparable
    /// (different multipart layouts): probably equal, not proven.
    Unverified,
    /// Left out by --include/--exclude.
    Filtered,
    /// A key ending in `/` (a console "folder"), synced with a directory:
    /// a directory is not an object, and such a key cannot be a file.
    FolderMarker,
    /// Source object older than --modified-since.
    NotModifiedSince,
    /// Only at the destination, and --delete is off.
    ExtraneousKept,
}

/// The result of comparing two objects with the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Same,
    SameUnverified,
    Differs,
    /// Same size and ETags that differ, where the source has not changed
    /// since the copy: only a ledger entry or checksums can tell.
    Unproven,
}

/// Compare two objects under `mode`. In `etag` mode, equal ETags are
/// equal; ETags that differ decide nothing by themselves (KMS, multipart
/// layouts), unless the source is newer than its copy: then it changed
/// since, and is copied without asking anything more. Otherwise the pair
/// is [`Comparison::Unproven`]; with `time_fallback` off (the verify pass,
/// after the copies) every pair of differing ETags is.
pub fn compare(
    source: &ObjectEntry,
    destination: &ObjectEntry,
    mode: DiffMode,
    time_fallback: bool,
) -> Comparison {
    match mode {
        DiffMode::Etag if source.size == destination.size && source.etag != destination.etag => {
            if time_fallback && newer(source, destination) {
                Comparison::Differs
            } else {
                Comparison::Unproven
            }
        }
        _ => compare_without_checksums(source, destination, mode, time_fallback),
    }
}

/// Compare two objects with what the listings alone tell. In `etag` mode,
/// ETags of one shape decide; ETags of different shapes (other multipart
/// layouts) cannot, and when `time_fallback` is on an equal-sized copy at
/// least as new as its source is "probably the same"
/// ([`Comparison::SameUnverified`]), while a copy older than its source
/// differs. With `time_fallback` off (the verify pass) the size alone
/// decides. This is the rule where no checksum can prove a pair.
pub fn compare_without_checksums(
    source: &ObjectEntry,
    destination: &ObjectEntry,
    mode: DiffMode,
    time_fallback: bool,
) -> Comparison {
    match mode {
        DiffMode::Missing => Comparison::Same,
        DiffMode::Size if source.size == destination.size => Comparison::Same,
        _ if source.size != destination.size => Comparison::Differs,
        DiffMode::Size => Comparison::Same,
        DiffMode::Mtime if newer(source, destination) => Comparison::Differs,
        DiffMode::Mtime => Comparison::Same,
        DiffMode::Etag => {
            if etag_shape(&source.etag) == etag_shape(&destination.etag) {
                if source.etag == destination.etag {
                    Comparison::Same
                } else {
                    Comparison::Differs
                }
            } else if !time_fallback || !newer(source, destination) {
                Comparison::SameUnverified
            } else {
                Comparison::Differs
            }
        }
    }
}

/// Whether the source changed after its copy was made, in whole seconds:
/// S3 keeps LastModified to the second, so a file changed at 12:00:00.7
/// and uploaded at 12:00:00.9 would otherwise be "newer" than its own copy
/// forever, and copied again on every run.
fn newer(source: &ObjectEntry, destination: &ObjectEntry) -> bool {
    source.last_modified_ms.div_euclid(1000) > destination.last_modified_ms.div_euclid(1000)
}

/// Decide what to do with one pair.
pub fn decide(pair: Pair, options: &DiffOptions) -> Action {
    decide_with(pair, options, true)
}

/// [`decide`], choosing whether non-comparable ETags fall back to timestamps
/// (the write pass) or to size alone (the verify pass, which runs after the
/// copies and so cannot use "the copy is newer" as evidence).
pub fn decide_with(pair: Pair, options: &DiffOptions, time_fallback: bool) -> Action {
    if options.folder_markers_skipped && pair.key().ends_with('/') {
        let (key, size) = match pair {
            Pair::SourceOnly(e) | Pair::DestinationOnly(e) | Pair::Both(e, _) => (e.key, e.size),
        };
        return Action::Skip {
            key,
            size,
            reason: SkipReason::FolderMarker,
        };
    }
    if !options.filter.matches(pair.key()) {
        let (key, size) = match pair {
            Pair::SourceOnly(e) | Pair::DestinationOnly(e) | Pair::Both(e, _) => (e.key, e.size),
        };
        return Action::Skip {
            key,
            size,
            reason: SkipReason::Filtered,
        };
    }
    let too_old = |e: &ObjectEntry| {
        options
            .modified_since
            .is_some_and(|since| e.last_modified_ms < since.to_millis().unwrap_or(i64::MIN))
    };
    match pair {
        Pair::SourceOnly(source) | Pair::Both(source, _) if too_old(&source) => Action::Skip {
            key: source.key,
            size: source.size,
            reason: SkipReason::NotModifiedSince,
        },
        Pair::SourceOnly(source) => Action::Copy { source },
        Pair::DestinationOnly(destination) if options.delete => Action::Delete { destination },
        Pair::DestinationOnly(destination) => Action::Skip {
            key: destination.key,
            size: destination.size,
            reason: SkipReason::ExtraneousKept,
        },
        Pair::Both(source, destination) => {
            match compare(&source, &destination, options.mode, time_fallback) {
                Comparison::Same => Action::Skip {
                    key: source.key,
                    size: source.size,
                    reason: SkipReason::Equal,
                },
                Comparison::SameUnverified => Action::Skip {
                    key: source.key,
                    size: source.size,
                    reason: SkipReason::Unverified,
                },
                Comparison::Differs => Action::Update {
                    source,
                    destination,
                },
                Comparison::Unproven => Action::Compare {
                    source,
                    destination,
                },
            }
        }
    }
}

type EntryStream = Pin<
    Box<
        futures::stream::Peekable<
            Pin<Box<dyn Stream<Item = Result<ObjectEntry, SyncError>> + Send>>,
        >,
    >,
>;

/// Join two ascending listings of the same range by key. Errors from either
/// side end the join: a listing that failed is not a listing that ended.
pub fn merge_join<S, D>(
    source: S,
    destination: D,
) -> impl Stream<Item = Result<Pair, SyncError>> + Send
where
    S: Stream<Item = Result<ObjectEntry, SyncError>> + Send + 'static,
    D: Stream<Item = Result<ObjectEntry, SyncError>> + Send + 'static,
{
    let boxed =
        |s: Pin<Box<dyn Stream<Item = Result<ObjectEntry, SyncError>> + Send>>| -> EntryStream {
            Box::pin(s.peekable())
        };
    let state = (boxed(Box::pin(source)), boxed(Box::pin(destination)), false);
    futures::stream::unfold(state, |(mut src, mut dst, failed)| async move {
        if failed {
            return None;
        }
        /// Which side to take next, decided before either is consumed.
        enum Next {
            Source,
            Destination,
            Both,
        }
        let next = match (src.as_mut().peek().await, dst.as_mut().peek().await) {
            (None, None) => return None,
            (Some(Err(_)), _) | (Some(Ok(_)), None) => Next::Source,
            (_, Some(Err(_))) | (None, Some(Ok(_))) => Next::Destination,
            (Some(Ok(s)), Some(Ok(d))) => match s.key.as_str().cmp(d.key.as_str()) {
                Ordering::Less => Next::Source,
                Ordering::Greater => Next::Destination,
                Ordering::Equal => Next::Both,
            },
        };
        let item = match next {
            Next::Source => src.next().await.map(|r| r.map(Pair::SourceOnly)),
            Next::Destination => dst.next().await.map(|r| r.map(Pair::DestinationOnly)),
            Next::Both => match (src.next().await, dst.next().await) {
                (Some(Ok(s)), Some(Ok(d))) => Some(Ok(Pair::Both(s, d))),
                _ => unreachable!("both sides were peeked as Ok"),
            },
        }?;
        let failed = item.is_err();
        Some((item, (src, dst, failed)))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::model::filter::KeyFilter;

    fn entry(key: &str, size: u64, etag: &str, t: i64) -> ObjectEntry {
        ObjectEntry {
            version_id: None,
            key: key.into(),
            size,
            etag: etag.into(),
            last_modified_ms: t,
            storage_class: None,
            checksum: None,
        }
    }

    fn options(mode: DiffMode, delete: bool) -> DiffOptions {
        DiffOptions {
            mode,
            modified_since: None,
            filter: KeyFilter::allow_all(),
            delete,
            folder_markers_skipped: false,
        }
    }

    #[test]
    fn folder_markers_are_skipped_beside_a_directory() {
        let mut with_dir = options(DiffMode::Etag, true);
        with_dir.folder_markers_skipped = true;
        for pair in [
            Pair::SourceOnly(entry("photos/", 0, "e", 0)),
            Pair::DestinationOnly(entry("photos/", 0, "e", 0)),
        ] {
            assert!(matches!(
                decide(pair.clone(), &with_dir),
                Action::Skip {
                    reason: SkipReason::FolderMarker,
                    ..
                }
            ));
            assert!(!matches!(
                decide(pair, &options(DiffMode::Etag, true)),
                Action::Skip { .. }
            ));
        }
    }

    #[test]
    fn multipart_etags_compare_only_with_the_same_shape() {
        let src = entry("k", 10, "aaa-3", 100_000);
        let rule = compare_without_checksums;
        assert_eq!(
            rule(&src, &entry("k", 10, "aaa-3", 50_000), DiffMode::Etag, true),
            Comparison::Same
        );
        assert_eq!(
            rule(
                &src,
                &entry("k", 10, "bbb-3", 200_000),
                DiffMode::Etag,
                true
            ),
            Comparison::Differs
        );
        // Different layouts: fall back to size and time, never guess.
        assert_eq!(
            rule(
                &src,
                &entry("k", 10, "bbb-2", 200_000),
                DiffMode::Etag,
                true
            ),
            Comparison::SameUnverified
        );
        assert_eq!(
            rule(
                &src,
                &entry("k", 10, "0123abc", 200_000),
                DiffMode::Etag,
                true
            ),
            Comparison::SameUnverified
        );
        assert_eq!(
            rule(&src, &entry("k", 10, "bbb-2", 50_000), DiffMode::Etag, true),
            Comparison::Differs
        );
        assert_eq!(
            rule(
                &src,
                &entry("k", 11, "bbb-2", 200_000),
                DiffMode::Etag,
                true
            ),
            Comparison::Differs
        );
        // Verify pass: no time fallback, size decides.
        assert_eq!(
            rule(
                &src,
                &entry("k", 10, "bbb-2", 50_000),
                DiffMode::Etag,
                false
            ),
            Comparison::SameUnverified
        );
    }

    /// Equal sizes and ETags that differ prove nothing (KMS, layouts) where
    /// the copy is at least as new as its source: checksums decide. A
    /// source newer than its copy changed since, and is copied outright;
    /// in verification (no times) every such pair is for checksums. Newer
    /// in whole seconds: a copy made in the second its source last changed
    /// (S3 lists 100.000 for a write at 100.9) is not older than it.
    #[test]
    fn etags_that_differ_are_unproven_unless_the_source_is_newer() {
        let src = entry("k", 10, "aaa", 100_700);
        for other in ["bbb", "bbb-2"] {
            assert_eq!(
                compare(&src, &entry("k", 10, other, 200_000), DiffMode::Etag, true),
                Comparison::Unproven
            );
            assert_eq!(
                compare(&src, &entry("k", 10, other, 100_000), DiffMode::Etag, true),
                Comparison::Unproven
            );
            assert_eq!(
                compare(&src, &entry("k", 10, other, 50_000), DiffMode::Etag, true),
                Comparison::Differs
            );
            assert_eq!(
                compare(&src, &entry("k", 10, other, 50_000), DiffMode::Etag, false),
                Comparison::Unproven
            );
        }
        assert_eq!(
            compare(&src, &entry("k", 10, "aaa", 50_000), DiffMode::Etag, true),
            Comparison::Same
        );
        assert_eq!(
            compare(&src, &entry("k", 9, "bbb", 200_000), DiffMode::Etag, true),
            Comparison::Differs
        );
        assert_eq!(
            compare(&src, &entry("k", 10, "bbb", 200_000), DiffMode::Size, true),
            Comparison::Same
        );
    }

    #[test]
    fn modes_ignore_what_they_do_not_compare() {
        let src = entry("k", 10, "aaa", 100);
        let other = entry("k", 11, "bbb", 100);
        assert_eq!(
            compare(&src, &other, DiffMode::Missing, true),
            Comparison::Same
        );
        assert_eq!(
            compare(&src, &other, DiffMode::Size, true),
            Comparison::Differs
        );
        assert_eq!(
            compare(&src, &entry("k", 10, "bbb", 1), DiffMode::Size, true),
            Comparison::Same
        );
    }

    #[test]
    fn mtime_mode_copies_a_newer_source_or_another_size() {
        let src = entry("k", 10, "aaa", 100_700);
        // S3's time of a copy made in the same second as the change.
        let same_time = entry("k", 10, "bbb", 100_000);
        let newer_copy = entry("k", 10, "bbb", 200_000);
        let older_copy = entry("k", 10, "aaa", 99_999);
        for time_fallback in [true, false] {
            let mtime = |d: &ObjectEntry| compare(&src, d, DiffMode::Mtime, time_fallback);
            assert_eq!(mtime(&same_time), Comparison::Same);
            assert_eq!(mtime(&newer_copy), Comparison::Same);
            assert_eq!(mtime(&older_copy), Comparison::Differs);
            assert_eq!(mtime(&entry("k", 11, "aaa", 500)), Comparison::Differs);
        }
    }

    #[test]
    fn delete_only_with_the_flag_and_filters_protect_keys() {
        let only_dst = Pair::DestinationOnly(entry("x", 1, "e", 0));
        assert!(matches!(
            decide(only_dst.clone(), &options(DiffMode::Etag, false)),
            Action::Skip {
                reason: SkipReason::ExtraneousKept,
                ..
            }
        ));
        assert!(matches!(
            decide(only_dst.clone(), &options(DiffMode::Etag, true)),
            Action::Delete { .. }
        ));
        let mut filtered = options(DiffMode::Etag, true);
        filtered.filter = KeyFilter::new(&[], &["x".into()]).unwrap();
        assert!(matches!(
            decide(only_dst, &filtered),
            Action::Skip {
                reason: SkipReason::Filtered,
                ..
            }
        ));
    }

    #[test]
    fn modified_since_skips_older_sources() {
        let mut opts = options(DiffMode::Etag, false);
        opts.modified_since = Some(aws_smithy_types::DateTime::from_millis(1_000));
        assert!(matches!(
            decide(Pair::SourceOnly(entry("a", 1, "e", 999)), &opts),
            Action::Skip {
                reason: SkipReason::NotModifiedSince,
                ..
            }
        ));
        assert!(matches!(
            decide(Pair::SourceOnly(entry("a", 1, "e", 1_000)), &opts),
            Action::Copy { .. }
        ));
    }

    fn run_join(src: Vec<ObjectEntry>, dst: Vec<ObjectEntry>) -> Vec<Pair> {
        let s = futures::stream::iter(src.into_iter().map(Ok));
        let d = futures::stream::iter(dst.into_iter().map(Ok));
        futures::executor::block_on(merge_join(s, d).map(|r| r.unwrap()).collect())
    }

    #[test]
    fn an_error_ends_the_join_instead_of_looking_like_the_end() {
        let s = futures::stream::iter(vec![
            Ok(entry("a", 1, "e", 0)),
            Err(SyncError::Config("page 2 failed".into())),
            Ok(entry("z", 1, "e", 0)),
        ]);
        let d = futures::stream::iter(vec![Ok(entry("b", 1, "e", 0)), Ok(entry("c", 1, "e", 0))]);
        let out: Vec<_> = futures::executor::block_on(merge_join(s, d).collect());
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(matches!(out[0], Ok(Pair::SourceOnly(_))));
        assert!(out[1].is_err());
    }

    /// Keys drawn from a small alphabet with multi-byte characters, so
    /// prefixes collide and byte order differs from char-count order.
    fn key_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("a"),
                Just("b"),
                Just("/"),
                Just(" "),
                Just("ü"),
                Just("+"),
                Just("~")
            ],
            1..6,
        )
        .prop_map(|parts| parts.concat())
    }

    fn side_strategy() -> impl Strategy<Value = BTreeMap<String, (u64, String, i64)>> {
        proptest::collection::btree_map(
            key_strategy(),
            (
                0u64..3,
                prop_oneof![
                    Just("e1".to_string()),
                    Just("e2".to_string()),
                    Just("m1-2".to_string()),
                    Just("m2-3".to_string())
                ],
                0i64..3,
            ),
            0..40,
        )
    }

    fn entries(side: &BTreeMap<String, (u64, String, i64)>) -> Vec<ObjectEntry> {
        side.iter()
            .map(|(k, (size, etag, t))| entry(k, *size, etag, *t))
            .collect()
    }

    proptest! {
        /// The streaming merge-join agrees with a naive in-memory reference:
        /// every key of either side exactly once, in byte order, paired right.
        #[test]
        fn merge_join_matches_in_memory_reference(src in side_strategy(), dst in side_strategy()) {
            let joined = run_join(entries(&src), entries(&dst));
            let mut all_keys: Vec<&String> = src.keys().chain(dst.keys()).collect();
            all_keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            all_keys.dedup();
            prop_assert_eq!(joined.len(), all_keys.len());
            for (pair, key) in joined.iter().zip(all_keys) {
                prop_assert_eq!(pair.key(), key.as_str());
                let expected = match (src.contains_key(key), dst.contains_key(key)) {
                    (true, true) => "both",
                    (true, false) => "source",
                    _ => "destination",
                };
                let got = match pair { Pair::Both(..) => "both", Pair::SourceOnly(_) => "source", Pair::DestinationOnly(_) => "destination" };
                prop_assert_eq!(got, expected);
            }
        }

        /// Applying the plan to the destination makes it equal to the source
        /// (under etag mode with --delete), whatever the two sides held.
        #[test]
        fn applying_the_plan_converges(src in side_strategy(), dst in side_strategy()) {
            let opts = options(DiffMode::Etag, true);
            let mut result = dst.clone();
            for pair in run_join(entries(&src), entries(&dst)) {
                match decide(pair, &opts) {
                    // Here an ETag stands for the content, so the checksums
                    // a Compare asks for differ, and it copies.
                    Action::Copy { source } | Action::Update { source, .. } | Action::Compare { source, .. } => {
                        result.insert(source.key.clone(), src[&source.key].clone());
                    }
                    Action::Delete { destination } => { result.remove(&destination.key); }
                    Action::Skip { key, reason, .. } => {
                        prop_assert!(matches!(reason, SkipReason::Equal | SkipReason::Unverified), "{key}: {reason:?}");
                        let (s, d) = (&src[&key], &dst[&key]);
                        prop_assert_eq!(s.0, d.0, "skipped a size difference");
                        if etag_shape(&s.1) == etag_shape(&d.1) { prop_assert_eq!(&s.1, &d.1); }
                        result.insert(key.clone(), s.clone());
                    }
                }
            }
            prop_assert_eq!(result, src);
        }
    }
}
