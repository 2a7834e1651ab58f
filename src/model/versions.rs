//! A versioned bucket seen as it was at a point in time (`--as-of`, issue
//! 25): of each key's versions, the newest created at or before that time,
//! unless it is a delete marker; a key with no version by then is absent.
//!
//! ListObjectVersions returns keys in ascending order and, within a key,
//! versions and delete markers together from newest to oldest
//! (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectVersions.html>,
//! and "Listing objects in a versioning-enabled bucket" in the S3 user
//! guide). So the first entry of a key at or before the time decides it,
//! and the selector decides as that entry arrives: it holds one key and a
//! flag, whatever the number of versions, and a key's versions may span
//! pages.

use crate::model::entry::ObjectEntry;

/// One entry of a ListObjectVersions listing: a version, or a delete
/// marker (whose `entry` has size 0 and no ETag). `entry.version_id` is
/// always set: S3 names the version of an object written while
/// versioning was off or suspended `null`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedVersion {
    pub entry: ObjectEntry,
    pub delete_marker: bool,
}

impl ListedVersion {
    pub fn version_id(&self) -> &str {
        self.entry.version_id.as_deref().unwrap_or("null")
    }
}

/// Chooses, entry by entry in listing order, each key's version at a point
/// in time.
#[derive(Debug)]
pub struct AsOfSelector {
    as_of_ms: i64,
    /// The key whose versions are arriving, and whether one of them has
    /// decided it already (the rest are older and are passed over).
    key: Option<String>,
    decided: bool,
}

impl AsOfSelector {
    /// `as_of_ms`: milliseconds since the Unix epoch. A version modified at
    /// exactly that time counts (at or before).
    pub fn new(as_of_ms: i64) -> Self {
        AsOfSelector {
            as_of_ms,
            key: None,
            decided: false,
        }
    }

    /// The next listed entry; the version to keep (its entry, naming the
    /// version), if this entry decides its key for a version (a delete
    /// marker decides it for absence).
    pub fn push(&mut self, listed: ListedVersion) -> Option<ObjectEntry> {
        if self.key.as_deref() != Some(listed.entry.key.as_str()) {
            self.key = Some(listed.entry.key.clone());
            self.decided = false;
        }
        if self.decided || listed.entry.last_modified_ms > self.as_of_ms {
            return None;
        }
        self.decided = true;
        (!listed.delete_marker).then_some(listed.entry)
    }
}

/// The versions current at `as_of_ms` of a listing in ListObjectVersions
/// order.
pub fn versions_at(
    listing: impl IntoIterator<Item = ListedVersion>,
    as_of_ms: i64,
) -> impl Iterator<Item = ObjectEntry> {
    let mut selector = AsOfSelector::new(as_of_ms);
    listing
        .into_iter()
        .filter_map(move |listed| selector.push(listed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn version(key: &str, id: &str, at: i64, etag: &str) -> ListedVersion {
        ListedVersion {
            entry: ObjectEntry {
                key: key.into(),
                size: etag.len() as u64,
                etag: etag.into(),
                last_modified_ms: at,
                storage_class: Some("STANDARD".into()),
                checksum: None,
                version_id: Some(id.into()),
            },
            delete_marker: false,
        }
    }

    fn marker(key: &str, id: &str, at: i64) -> ListedVersion {
        ListedVersion {
            delete_marker: true,
            ..version(key, id, at, "")
        }
    }

    /// (key, version id) of what is current at `at`.
    fn at(listing: &[ListedVersion], at: i64) -> Vec<(String, String)> {
        versions_at(listing.to_vec(), at)
            .map(|v| (v.key, v.version_id.unwrap()))
            .collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// One history, as ListObjectVersions lists it: `a` put at 10,
    /// overwritten at 20, deleted at 30, put again at 40; `b` put at 25;
    /// `c` put at 5 and deleted at 15.
    fn history() -> Vec<ListedVersion> {
        vec![
            version("a", "a4", 40, "e4"),
            marker("a", "a3", 30),
            version("a", "a2", 20, "e2"),
            version("a", "a1", 10, "e1"),
            version("b", "b1", 25, "f1"),
            marker("c", "c2", 15),
            version("c", "c1", 5, "g1"),
        ]
    }

    #[test]
    fn each_key_is_its_newest_version_at_or_before_the_time() {
        let h = history();
        assert_eq!(at(&h, 4), pairs(&[]), "before anything existed");
        assert_eq!(at(&h, 5), pairs(&[("c", "c1")]), "at exactly a put");
        assert_eq!(at(&h, 12), pairs(&[("a", "a1"), ("c", "c1")]));
        assert_eq!(at(&h, 15), pairs(&[("a", "a1")]), "c's delete marker");
        assert_eq!(at(&h, 22), pairs(&[("a", "a2")]), "the overwrite");
        assert_eq!(at(&h, 26), pairs(&[("a", "a2"), ("b", "b1")]));
        assert_eq!(at(&h, 30), pairs(&[("b", "b1")]), "a deleted");
        assert_eq!(at(&h, 99), pairs(&[("a", "a4"), ("b", "b1")]), "re-created");
    }

    #[test]
    fn the_chosen_version_keeps_its_own_size_etag_and_time() {
        let chosen: Vec<ObjectEntry> = versions_at(history(), 22).collect();
        assert_eq!(chosen[0].etag, "e2");
        assert_eq!(chosen[0].last_modified_ms, 20);
        assert_eq!(chosen[0].size, 2);
        assert_eq!(chosen[0].version_id.as_deref(), Some("a2"));
    }

    #[test]
    fn a_key_whose_versions_span_pages_is_decided_once() {
        // Fed one entry at a time, as pages arrive: a page may end between
        // two versions of a key.
        let mut selector = AsOfSelector::new(22);
        let kept: Vec<_> = history()
            .into_iter()
            .filter_map(|v| selector.push(v))
            .map(|v| v.version_id.unwrap())
            .collect();
        assert_eq!(kept, ["a2"]);
    }

    proptest! {
        /// Against the definition, on random histories: per key, the
        /// versions at or before the time, the newest of them, kept unless
        /// it is a delete marker.
        #[test]
        fn agrees_with_the_definition(
            histories in prop::collection::btree_map(
                "[a-e]{1,3}",
                prop::collection::vec((1i64..1_000, any::<bool>()), 1..8),
                0..12,
            ),
            as_of in 0i64..1_100,
        ) {
            let mut listing = Vec::new();
            let mut expected = Vec::new();
            for (key, events) in &histories {
                // Creation order is time order; equal times keep their order.
                let mut events = events.clone();
                events.sort_by_key(|(t, _)| *t);
                let made: Vec<ListedVersion> = events
                    .iter()
                    .enumerate()
                    .map(|(i, (t, deleted))| {
                        let id = format!("{key}-{i}");
                        if *deleted { marker(key, &id, *t) } else { version(key, &id, *t, "x") }
                    })
                    .collect();
                if let Some(current) = made.iter().rev().find(|v| v.entry.last_modified_ms <= as_of)
                    && !current.delete_marker
                {
                    expected.push((key.clone(), current.version_id().to_owned()));
                }
                // Listed newest first within the key.
                listing.extend(made.into_iter().rev());
            }
            // In key order, each key at most once.
            prop_assert_eq!(at(&listing, as_of), expected);
        }
    }
}
