//! `s3://bucket/prefix` locations and the key ranges every stage works on.
//!
//! A [`KeyRange`] is expressed in *relative* keys (the part after the
//! location's prefix), so the same range means the same keys on the source
//! and the destination. Later runtimes shard a sync by splitting its range.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::base::error::SyncError;

/// A bucket and a key prefix. The prefix is empty or ends in `/`: like
/// `aws s3 sync` and rclone, `s3://b/photos` means the "folder" `photos/`,
/// so it never matches `photos2/...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
}

impl S3Location {
    /// The full key for a key relative to this location.
    pub fn key_for(&self, relative: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + relative.len());
        key.push_str(&self.prefix);
        key.push_str(relative);
        key
    }

    /// The part of `key` after this location's prefix, if it is under it.
    pub fn relative<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_str())
    }

    /// True when the two locations can hold the same key: same bucket and one
    /// prefix inside the other. Syncing such a pair would copy into the range
    /// being listed, and with `--delete` could delete the source.
    pub fn overlaps(&self, other: &S3Location) -> bool {
        self.bucket == other.bucket
            && (self.prefix.starts_with(&other.prefix) || other.prefix.starts_with(&self.prefix))
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

impl From<S3Location> for String {
    fn from(location: S3Location) -> String {
        location.to_string()
    }
}

impl TryFrom<String> for S3Location {
    type Error = SyncError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl FromStr for S3Location {
    type Err = SyncError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| SyncError::Config(format!("invalid S3 URL {url:?}: {why}"));
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("expected s3://BUCKET[/PREFIX]"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("the bucket name is empty"));
        }
        // AWS allows 3-63 lowercase characters today; legacy us-east-1 buckets
        // and S3-compatible servers allow up to 255 with upper case and `_`.
        // Anything else cannot be a bucket on any server, so say so now
        // rather than with an opaque signature error later.
        if bucket.len() < 3 || bucket.len() > 255 {
            return Err(bad("a bucket name has 3 to 255 characters"));
        }
        if let Some(c) = bucket
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(bad(&format!("the bucket name contains {c:?}")));
        }
        if prefix.len() > 1024 {
            return Err(bad("the prefix is longer than S3's 1,024-byte key limit"));
        }
        let mut prefix = prefix.to_owned();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(S3Location {
            bucket: bucket.to_owned(),
            prefix,
        })
    }
}

/// One side of a sync: a bucket and prefix, or a directory on this machine
/// (`s3-fanout sync ./dir s3://b/p` uploads, `s3://b/p ./dir` restores).
/// Relative keys are the same on both: a file's path below the directory,
/// with `/` between components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    S3(S3Location),
    Local(PathBuf),
}

impl Location {
    /// The bucket, when this side is one.
    pub fn s3(&self) -> Option<&S3Location> {
        match self {
            Location::S3(location) => Some(location),
            Location::Local(_) => None,
        }
    }

    /// What a report row names as the "bucket" and "key" of a relative key:
    /// the bucket and full key, or the directory and the file's path in it.
    pub fn row_names(&self, relative: &str) -> (String, String) {
        match self {
            Location::S3(location) => (location.bucket.clone(), location.key_for(relative)),
            Location::Local(root) => (root.display().to_string(), relative.to_owned()),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::S3(location) => location.fmt(f),
            Location::Local(root) => write!(f, "{}", root.display()),
        }
    }
}

impl FromStr for Location {
    type Err = SyncError;

    /// `s3://...` is a bucket; another `scheme://` is refused (so a typo
    /// such as `s4://` never becomes a directory); anything else is a path.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.starts_with("s3://") {
            return text.parse().map(Location::S3);
        }
        if let Some((scheme, _)) = text.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+')
        {
            return Err(SyncError::Config(format!(
                "invalid location {text:?}: expected s3://BUCKET[/PREFIX] or a local directory"
            )));
        }
        if text.is_empty() {
            return Err(SyncError::Config(
                "invalid location \"\": expected s3://BUCKET[/PREFIX] or a local directory".into(),
            ));
        }
        Ok(Location::Local(PathBuf::from(text)))
    }
}

/// A contiguous range of relative keys: those under `prefix`, at or after
/// `start_at`, strictly after `start_after` and strictly before `end_before`.
///
/// Shards are cut at common prefixes (`photos/`), and a key may equal its
/// shard's first boundary (a folder marker), so a shard needs an inclusive
/// start; a lister's cursor is the last key it finished, so it needs an
/// exclusive one. Both can hold at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    #[serde(default)]
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    #[serde(default)]
    pub start_after: Option<String>,
    #[serde(default)]
    pub end_before: Option<String>,
}

/// A string just below `s` in S3's (UTF-8 byte) order, for a listing to
/// start after: `s` with its last character one lower and the highest
/// character after it ("data15" becomes "data14\u{10FFFF}"), so only keys
/// that begin with that lie between the two. Dropping the last character
/// instead ("data1") would list every key from "data10" on again: a
/// bisection's cut is often short, and a piece starting at one re-listed
/// whole folders below it. `None` for the empty string (nothing is below).
pub fn just_below(s: &str) -> Option<String> {
    let mut below = s.to_owned();
    let last = below.pop()?;
    if let Some(lower) = (last as u32)
        .checked_sub(1)
        // One below U+E000 is a surrogate, which no string holds.
        .map(|c| char::from_u32(c).unwrap_or('\u{D7FF}'))
    {
        below.push(lower);
        below.push(char::MAX);
    }
    // After a last U+0000 the shorter string is the one just below; an
    // empty one is no StartAfter at all.
    (!below.is_empty()).then_some(below)
}

impl KeyRange {
    /// Every key of the location.
    pub fn all() -> Self {
        Self::default()
    }

    pub fn contains(&self, relative: &str) -> bool {
        relative.starts_with(&self.prefix)
            && self.start_at.as_deref().is_none_or(|s| relative >= s)
            && self.start_after.as_deref().is_none_or(|s| relative > s)
            && self.end_before.as_deref().is_none_or(|e| relative < e)
    }

    /// The `StartAfter` for a listing of this range: ListObjectsV2 only has an
    /// exclusive start, so an inclusive `start_at` becomes the nearest string
    /// below it ([`just_below`]); keys in between (none in practice) are
    /// dropped by [`KeyRange::contains`].
    pub fn list_start_after(&self) -> Option<String> {
        let below_start_at = self.start_at.as_deref().and_then(just_below);
        match (self.start_after.clone(), below_start_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// The same range, resumed after `cursor` (the last key already handled).
    pub fn resumed_after(&self, cursor: Option<&str>) -> KeyRange {
        let mut range = self.clone();
        if let Some(cursor) = cursor
            && range.start_after.as_deref().is_none_or(|s| cursor > s)
        {
            range.start_after = Some(cursor.to_owned());
        }
        range
    }

    /// True once `relative` is at or past the end of the range, so a listing
    /// in ascending order can stop.
    pub fn is_past_end(&self, relative: &str) -> bool {
        self.end_before.as_deref().is_some_and(|e| relative >= e)
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:?}, after {:?}, before {:?}]",
            self.prefix, self.start_after, self.end_before
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(s: &str) -> S3Location {
        s.parse().unwrap()
    }

    #[test]
    fn parses_bucket_and_folder_prefix() {
        assert_eq!(
            loc("s3://my-bucket"),
            S3Location {
                bucket: "my-bucket".into(),
                prefix: "".into()
            }
        );
        assert_eq!(loc("s3://my-bucket/").prefix, "");
        assert_eq!(loc("s3://my-bucket/photos").prefix, "photos/");
        assert_eq!(loc("s3://my-bucket/a//b/").prefix, "a//b/");
    }

    #[test]
    fn rejects_malformed_urls_with_a_reason() {
        for (url, why) in [
            ("my-bucket/key", "expected s3://"),
            ("http://my-bucket/key", "expected s3://"),
            ("s3://", "empty"),
            ("s3:///key", "empty"),
            ("s3://ab", "3 to 255"),
            ("s3://bad bucket/x", "contains ' '"),
        ] {
            let err = url.parse::<S3Location>().unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }

    #[test]
    fn locations_are_buckets_or_directories() {
        assert_eq!(
            "s3://bkt/a".parse::<Location>().unwrap(),
            Location::S3(loc("s3://bkt/a"))
        );
        assert_eq!(
            "./dir".parse::<Location>().unwrap(),
            Location::Local("./dir".into())
        );
        assert_eq!(
            "my-bucket/key".parse::<Location>().unwrap(),
            Location::Local("my-bucket/key".into())
        );
        for bad in ["http://host/x", "s4://bkt", "", "s3://"] {
            let err = bad.parse::<Location>().unwrap_err().to_string();
            assert!(err.contains("s3://"), "{bad}: {err}");
        }
    }

    #[test]
    fn overlap_means_same_bucket_and_nested_prefixes() {
        assert!(loc("s3://bkt/a").overlaps(&loc("s3://bkt/a/b")));
        assert!(loc("s3://bkt/a/b").overlaps(&loc("s3://bkt/a")));
        assert!(loc("s3://bkt").overlaps(&loc("s3://bkt/x")));
        assert!(!loc("s3://bkt/a").overlaps(&loc("s3://bkt/ab")));
        assert!(!loc("s3://bkt/a").overlaps(&loc("s3://ckt/a")));
    }

    #[test]
    fn range_bounds_are_exclusive() {
        let range = KeyRange {
            prefix: "".into(),
            start_after: Some("b".into()),
            end_before: Some("d".into()),
            ..KeyRange::default()
        };
        assert!(!range.contains("b"));
        assert!(range.contains("b0"));
        assert!(range.contains("c"));
        assert!(!range.contains("d"));
        assert!(range.is_past_end("d"));
        assert!(!range.is_past_end("c~"));
    }

    #[test]
    fn start_at_is_inclusive_and_lists_from_just_below_it() {
        let range = KeyRange {
            start_at: Some("photos/".into()),
            end_before: Some("videos/".into()),
            ..KeyRange::default()
        };
        assert!(range.contains("photos/"));
        assert!(range.contains("photos/a"));
        assert!(
            !range.contains("photos.x"),
            "below start_at, above StartAfter"
        );
        assert!(!range.contains("photo"));
        assert_eq!(
            range.list_start_after().as_deref(),
            Some("photos.\u{10FFFF}"),
            "'/' is one above '.'"
        );
        let resumed = range.resumed_after(Some("photos/a"));
        assert!(!resumed.contains("photos/a"));
        assert!(resumed.contains("photos/b"));
        assert_eq!(resumed.list_start_after().as_deref(), Some("photos/a"));
        // A cursor never moves a range backwards.
        assert_eq!(resumed.resumed_after(Some("a")), resumed);
    }

    #[test]
    fn a_short_cut_lists_from_just_below_it_not_from_its_folder() {
        // A bisection's cut between data13/ and data16/ is "data15": the
        // listing must not start after "data1", which re-lists data10/ to
        // data14/ whole.
        let below = just_below("data15").unwrap();
        assert_eq!(below, "data14\u{10FFFF}");
        for key in ["data10/0000001.bin", "data14/9999999.bin", "data14"] {
            assert!(key < below.as_str(), "{key} would be listed again");
        }
        assert!(below.as_str() < "data15");
        assert_eq!(just_below("x\0").as_deref(), Some("x"));
        assert_eq!(just_below("\0"), None);
        assert_eq!(just_below(""), None);
        assert_eq!(
            just_below("a\u{E000}").as_deref(),
            Some("a\u{D7FF}\u{10FFFF}")
        );
    }

    proptest::proptest! {
        /// Below its argument in UTF-8 byte order (S3's), and above every
        /// key that is below it and does not extend the result itself.
        #[test]
        fn just_below_is_below_and_near(s in "\\PC{1,6}", key in "\\PC{0,8}") {
            let below = just_below(&s);
            if let Some(below) = &below {
                proptest::prop_assert!(below.as_bytes() < s.as_bytes());
                if key.as_bytes() < s.as_bytes() && !key.starts_with(below.as_str()) {
                    proptest::prop_assert!(key.as_bytes() <= below.as_bytes(), "{key:?} in ({below:?}, {s:?})");
                }
            } else {
                proptest::prop_assert!(s == "\0");
            }
        }
    }
}

/// Where summary.json and failures.csv go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportLocation {
    Local(PathBuf),
    S3(S3Location),
}

impl FromStr for ReportLocation {
    type Err = SyncError;
    fn from_str(text: &str) -> Result<Self, SyncError> {
        if text.starts_with("s3://") {
            Ok(ReportLocation::S3(text.parse()?))
        } else if text.is_empty() {
            Err(SyncError::Config(
                "--report needs a directory or an s3:// URL".into(),
            ))
        } else {
            Ok(ReportLocation::Local(PathBuf::from(text)))
        }
    }
}

impl ReportLocation {
    /// Where run `run_id`'s summary.json and failures.csv go, as a path or
    /// an s3:// URL. Known before they are written, so the summary can
    /// name itself, and a run over its failure threshold can say where its
    /// report is.
    pub fn paths(&self, run_id: &str) -> (String, String) {
        match self {
            ReportLocation::Local(dir) => {
                let (summary, csv) = local_report_files(dir, run_id);
                (summary.display().to_string(), csv.display().to_string())
            }
            ReportLocation::S3(prefix) => {
                let (summary, csv) = s3_report_keys(prefix, run_id);
                let url = |key| format!("s3://{}/{key}", prefix.bucket);
                (url(summary), url(csv))
            }
        }
    }
}

impl ReportLocation {
    /// Where run `run_id`'s report.html goes, beside its summary.json.
    pub fn html_path(&self, run_id: &str) -> String {
        let (summary, _) = self.paths(run_id);
        let folder = summary.strip_suffix("summary.json").unwrap_or(&summary);
        format!("{folder}{HTML_NAME}")
    }
}

/// The page's name in a run's folder.
pub const HTML_NAME: &str = "report.html";

/// A run's report files in a local report directory: a folder per run.
pub fn local_report_files(dir: &Path, run_id: &str) -> (PathBuf, PathBuf) {
    let dir = dir.join(run_id);
    (dir.join("summary.json"), dir.join("failures.csv"))
}

/// A run's report keys under an s3:// report prefix: a folder per run.
pub fn s3_report_keys(prefix: &S3Location, run_id: &str) -> (String, String) {
    let base = prefix.key_for(&format!("{run_id}/"));
    (format!("{base}summary.json"), format!("{base}failures.csv"))
}
