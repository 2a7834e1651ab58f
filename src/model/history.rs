//! A key's version history at the source against the copy of it at the
//! destination (`--all-versions`): how much of the source's history the
//! destination already holds, in order, so a run appends only the rest.
//!
//! Version ids cannot be carried over (S3 makes its own), so each copy
//! holds its origin's id in user metadata
//! ([`ORIGIN_VERSION_ID`]), and the destination's history is matched
//! against the source's oldest first: a delete marker against a delete
//! marker, a version against a version of the same size and ETag. When the
//! ETags cannot decide (a KMS destination, a copy made in other parts),
//! the origin id of the destination's newest version says where it stands
//! ([`Alignment::NeedsOrigin`]).

use crate::model::versions::ListedVersion;

/// User metadata of each copy: the source version it was copied from.
pub const ORIGIN_VERSION_ID: &str = "s3fanout-origin-version-id";
/// User metadata of each copy: when its source version was made (RFC 3339).
pub const ORIGIN_LAST_MODIFIED: &str = "s3fanout-origin-last-modified";

/// How a destination's history stands against its source's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alignment {
    /// The destination holds the first `n` entries of the source's history
    /// (oldest first); the rest are to be appended.
    Holds(usize),
    /// The ETags do not decide: the origin version id of the destination's
    /// entry at this index (its newest version, oldest-first index) does.
    NeedsOrigin(usize),
    /// The destination's history is not a copy of the source's (written by
    /// something else, or a version deleted at the source for good).
    Diverged(String),
}

/// Whether a destination entry is a copy of a source entry, by what a
/// listing shows.
fn same(source: &ListedVersion, destination: &ListedVersion) -> bool {
    match (source.delete_marker, destination.delete_marker) {
        (true, true) => true,
        (false, false) => {
            source.entry.size == destination.entry.size
                && source.entry.etag == destination.entry.etag
        }
        _ => false,
    }
}

/// Align two histories of one key, each oldest first.
pub fn align(source: &[ListedVersion], destination: &[ListedVersion]) -> Alignment {
    if destination.len() <= source.len() && source.iter().zip(destination).all(|(s, d)| same(s, d))
    {
        return Alignment::Holds(destination.len());
    }
    match destination.iter().rposition(|d| !d.delete_marker) {
        Some(newest) => Alignment::NeedsOrigin(newest),
        None => Alignment::Diverged(
            "the destination holds only delete markers where the source's history differs".into(),
        ),
    }
}

/// [`Alignment::NeedsOrigin`] decided: the destination entry at `newest`
/// (its newest version) is a copy of the source version `origin`. What
/// follows it at the destination must be delete markers, matched by the
/// source's next entries.
pub fn align_by_origin(
    source: &[ListedVersion],
    destination: &[ListedVersion],
    newest: usize,
    origin: Option<&str>,
) -> Alignment {
    let Some(origin) = origin else {
        return Alignment::Diverged(format!(
            "the destination's newest version has no {ORIGIN_VERSION_ID}: it was not copied by --all-versions"
        ));
    };
    let Some(at) = source.iter().position(|s| s.version_id() == origin) else {
        return Alignment::Diverged(format!(
            "the destination's newest version is a copy of source version {origin}, which the source no longer has"
        ));
    };
    if at != newest {
        // A copy of entry `at` is the destination's entry `newest`: its
        // history before that copy is longer or shorter than the source's
        // (a version appended twice, say, by a task delivered twice at once).
        return Alignment::Diverged(format!(
            "the destination's newest version is a copy of source version {origin}, the source's entry {} oldest first, but is the destination's entry {}",
            at + 1,
            newest + 1
        ));
    }
    let after = &destination[newest + 1..];
    let next = source.get(at + 1..at + 1 + after.len());
    match next {
        Some(next) if next.iter().all(|s| s.delete_marker) => {
            Alignment::Holds(at + 1 + after.len())
        }
        _ => Alignment::Diverged(
            "the destination has delete markers the source's history does not".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::entry::ObjectEntry;

    fn version(id: &str, etag: &str) -> ListedVersion {
        ListedVersion {
            entry: ObjectEntry {
                key: "k".into(),
                size: etag.len() as u64,
                etag: etag.into(),
                last_modified_ms: 0,
                storage_class: None,
                checksum: None,
                version_id: Some(id.into()),
            },
            delete_marker: false,
        }
    }

    fn marker(id: &str) -> ListedVersion {
        ListedVersion {
            delete_marker: true,
            ..version(id, "")
        }
    }

    #[test]
    fn a_destination_that_copies_a_prefix_of_the_history_holds_that_prefix() {
        let source = [version("1", "a"), marker("2"), version("3", "bb")];
        assert_eq!(align(&source, &[]), Alignment::Holds(0));
        let copies = [version("x", "a"), marker("y")];
        assert_eq!(align(&source, &copies), Alignment::Holds(2));
        let all = [version("x", "a"), marker("y"), version("z", "bb")];
        assert_eq!(align(&source, &all), Alignment::Holds(3));
    }

    #[test]
    fn etags_that_do_not_decide_ask_for_the_newest_version_s_origin() {
        let source = [version("1", "a"), marker("2"), version("3", "bb")];
        // KMS copies: other ETags.
        let copies = [version("x", "K1"), marker("y")];
        assert_eq!(align(&source, &copies), Alignment::NeedsOrigin(0));
        assert_eq!(
            align_by_origin(&source, &copies, 0, Some("1")),
            Alignment::Holds(2)
        );
        let all = [version("x", "K1"), marker("y"), version("z", "K3")];
        assert_eq!(align(&source, &all), Alignment::NeedsOrigin(2));
        assert_eq!(
            align_by_origin(&source, &all, 2, Some("3")),
            Alignment::Holds(3)
        );
    }

    #[test]
    fn a_history_that_is_not_a_copy_is_said_to_diverge() {
        let source = [version("1", "a"), version("3", "bb")];
        let other = [version("x", "zz"), marker("y")];
        assert_eq!(align(&source, &other), Alignment::NeedsOrigin(0));
        for origin in [None, Some("gone")] {
            assert!(matches!(
                align_by_origin(&source, &other, 0, origin),
                Alignment::Diverged(_)
            ));
        }
        // The marker after the copy of 1 is not in the source's history.
        assert!(matches!(
            align_by_origin(&source, &other, 0, Some("1")),
            Alignment::Diverged(_)
        ));
        assert!(matches!(
            align(&source, &[marker("m")]),
            Alignment::Diverged(_)
        ));
        // A version appended twice: its copy is not where the source has it.
        let twice = [version("x", "K1"), version("y", "K1"), version("z", "K3")];
        assert!(matches!(
            align_by_origin(&source, &twice, 2, Some("3")),
            Alignment::Diverged(_)
        ));
        // Longer than the source: not a copy of it.
        let longer = [version("x", "a"), version("y", "bb"), version("z", "cc")];
        assert_eq!(align(&source, &longer), Alignment::NeedsOrigin(2));
    }
}
