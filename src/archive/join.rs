//! The manifest against a destination listing, key by key.
//!
//! Both are in ascending key order, so one pass holding one line of each
//! joins them: O(1) memory, as the sync's own merge-join. The import plans
//! with it and verifies with it; [`compare`] is the one rule both use.

use std::cmp::Ordering;

use futures::{Stream, StreamExt};

use super::error::ArchiveError;
use super::format::ManifestEntry;
use super::manifest::ManifestReader;
use crate::base::error::SyncError;
use crate::model::entry::ObjectEntry;
use crate::model::s3_shape::etag_shape;

/// One key of the join.
#[derive(Debug)]
pub enum Joined {
    /// Listed in the manifest, absent at the destination.
    Manifest(ManifestEntry),
    Both(ManifestEntry, ObjectEntry),
    /// At the destination only.
    Destination(ObjectEntry),
}

/// Call `each` for every key of the manifest and the listing, in order.
/// A listing error ends the join with that error: a failed listing is not
/// an empty destination.
pub async fn join_with_destination(
    mut manifest: ManifestReader,
    listing: impl Stream<Item = Result<ObjectEntry, SyncError>>,
    mut each: impl FnMut(Joined) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    let mut listing = std::pin::pin!(listing.peekable());
    let mut line = manifest.next_entry()?;
    loop {
        if let Some(Err(_)) = listing.as_mut().peek().await
            && let Some(Err(err)) = listing.next().await
        {
            return Err(err.into());
        }
        let order = match (&line, listing.as_mut().peek().await) {
            (None, None) => return Ok(()),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(m), Some(Ok(d))) => m.key.as_str().cmp(d.key.as_str()),
            (Some(_), Some(Err(_))) => unreachable!("errors are taken above"),
        };
        let joined = match order {
            Ordering::Less => {
                let m = line.take().expect("peeked");
                line = manifest.next_entry()?;
                Joined::Manifest(m)
            }
            Ordering::Greater => match listing.next().await {
                Some(Ok(d)) => Joined::Destination(d),
                _ => unreachable!("peeked as an entry"),
            },
            Ordering::Equal => {
                let m = line.take().expect("peeked");
                line = manifest.next_entry()?;
                match listing.next().await {
                    Some(Ok(d)) => Joined::Both(m, d),
                    _ => unreachable!("peeked as an entry"),
                }
            }
        };
        each(joined)?;
    }
}

/// How a destination object stands against its manifest line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// Same size and the same ETag.
    Equal,
    /// Same size; the ETags cannot be compared (different multipart
    /// shapes, or a source ETag that is not an MD5), so equality is
    /// probable, not proven.
    SizeOnly,
    Different,
}

/// Compare a destination object with the manifest's line for its key. ETags
/// are compared only when they can prove something, as in the sync's diff:
/// never a `-N` ETag with a single-part one or one of another part count.
pub fn compare(line: &ManifestEntry, destination: &ObjectEntry) -> Match {
    if line.size != destination.size {
        return Match::Different;
    }
    match line.comparable_etag() {
        Some(etag) if etag_shape(etag) == etag_shape(&destination.etag) => {
            if etag == destination.etag {
                Match::Equal
            } else {
                Match::Different
            }
        }
        _ => Match::SizeOnly,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::format::{Baseline, FORMAT_VERSION, MANIFEST_FORMAT, ManifestHeader};
    use crate::archive::manifest::ManifestWriter;

    fn object(key: &str, size: u64, etag: &str) -> ObjectEntry {
        ObjectEntry {
            version_id: None,
            key: key.into(),
            size,
            etag: etag.into(),
            last_modified_ms: 0,
            storage_class: None,
            checksum: None,
        }
    }

    fn manifest(keys: &[&str]) -> ManifestReader {
        let mut writer = ManifestWriter::create(&ManifestHeader {
            format: MANIFEST_FORMAT.into(),
            version: FORMAT_VERSION,
            source: "s3://b/".into(),
            created_at: String::new(),
            since: Baseline::Full,
        })
        .unwrap();
        for key in keys {
            writer
                .push(&ManifestEntry::from_listed(&object(key, 1, "e")))
                .unwrap();
        }
        let (spool, _) = writer.finish().unwrap();
        ManifestReader::open_spool(spool, std::path::Path::new("m")).unwrap()
    }

    #[tokio::test]
    async fn joins_both_sides_in_key_order() {
        let listing = futures::stream::iter(
            ["a", "c", "d"]
                .map(|k| Ok(object(k, 1, "e")))
                .into_iter()
                .collect::<Vec<_>>(),
        );
        let mut seen = Vec::new();
        join_with_destination(manifest(&["b", "c", "e"]), listing, |j| {
            seen.push(match j {
                Joined::Manifest(m) => format!("m:{}", m.key),
                Joined::Both(m, _) => format!("both:{}", m.key),
                Joined::Destination(d) => format!("d:{}", d.key),
            });
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(seen, ["d:a", "m:b", "both:c", "d:d", "m:e"]);
    }

    #[tokio::test]
    async fn a_listing_error_ends_the_join() {
        let listing = futures::stream::iter(vec![
            Ok(object("a", 1, "e")),
            Err(SyncError::Config("listing failed".into())),
        ]);
        let mut seen = 0;
        let result = join_with_destination(manifest(&["z"]), listing, |_| {
            seen += 1;
            Ok(())
        })
        .await;
        assert!(result.unwrap_err().to_string().contains("listing failed"));
        assert_eq!(
            seen, 1,
            "the manifest's remaining key is not called missing"
        );
    }

    #[test]
    fn etags_of_different_shapes_only_prove_the_size() {
        let line = ManifestEntry::from_listed(&object("k", 5, "abc-3"));
        assert_eq!(compare(&line, &object("k", 5, "abc-3")), Match::Equal);
        assert_eq!(compare(&line, &object("k", 5, "abd-3")), Match::Different);
        assert_eq!(compare(&line, &object("k", 5, "abc")), Match::SizeOnly);
        assert_eq!(compare(&line, &object("k", 5, "abc-2")), Match::SizeOnly);
        assert_eq!(compare(&line, &object("k", 6, "abc-3")), Match::Different);
    }
}
