//! A side of a sync, as the engine sees it: something that lists a key
//! range in order, can be asked where its folders are, and knows whether
//! its pairs need content ETags computed. The engine calls these methods
//! and never matches on the backend behind them, as rclone's `fs/march`
//! walks two `Fs` through one interface.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;

use crate::backend::local::dir::LocalDir;
use crate::backend::local::etag::with_file_etags;
use crate::backend::local::walk::list_dir;
use crate::backend::s3::folders::sub_prefixes;
use crate::backend::s3::listing::{ListTarget, any_key_after, list_range_until};
use crate::backend::s3::preflight::bucket_problem;
use crate::base::error::SyncError;
use crate::model::entry::{ObjectEntry, Pair, Side};
use crate::model::keyspace::MovableEnd;
use crate::model::location::{KeyRange, Location};

/// One side's listing: a bucket, or a directory walked in the same order.
#[derive(Debug, Clone)]
pub enum Listing {
    S3(ListTarget),
    Local(Arc<LocalDir>),
}

impl Listing {
    pub fn location(&self) -> Location {
        match self {
            Listing::S3(target) => Location::S3(target.location.clone()),
            Listing::Local(dir) => Location::Local(dir.root.clone()),
        }
    }

    /// Whether listing a range as several pieces at once pays: a bucket
    /// lists one request after another, so pieces multiply its speed; a
    /// directory's cost is the disk, and it is walked as one stream.
    pub fn lists_in_pieces(&self) -> bool {
        matches!(self, Listing::S3(_))
    }

    /// List `range` in ascending key order, stopping at `end` (which may
    /// move down while it lists). With `preflight`, a first page that fails
    /// in a way that means the bucket cannot be used at all (missing,
    /// forbidden, another region) is said plainly as a configuration
    /// error; anything else stays the S3 error it was. A directory has no
    /// "first page" to fail: a missing upload source was refused with the
    /// options, a missing restore destination lists as empty, unreadable
    /// parts are reported.
    pub fn list(
        &self,
        range: &KeyRange,
        side: Side,
        end: Option<(Arc<MovableEnd>, Side)>,
        preflight: bool,
    ) -> BoxStream<'static, Result<ObjectEntry, SyncError>> {
        let target = match self {
            Listing::S3(target) => target.clone(),
            Listing::Local(dir) => return list_dir(dir.clone(), range.clone()).boxed(),
        };
        let (location, expected_owner) = (target.location.clone(), target.expected_owner.clone());
        let mut first = preflight;
        list_range_until(target, range.clone(), end)
            .map(move |item| {
                let was_first = std::mem::replace(&mut first, false);
                match item {
                    Err(SyncError::S3 { context, failure }) if was_first => {
                        match bucket_problem(
                            &failure,
                            side.name(),
                            &location.bucket,
                            expected_owner.as_deref(),
                        ) {
                            Some(why) => Err(SyncError::Config(why)),
                            None => Err(SyncError::S3 { context, failure }),
                        }
                    }
                    other => other,
                }
            })
            .boxed()
    }

    /// The folders one level below `prefix` (relative keys), from at most
    /// `pages` delimiter pages; a directory offers none, as it is never
    /// listed in pieces.
    pub async fn folders_below(
        &self,
        prefix: &str,
        pages: usize,
    ) -> Result<Vec<String>, SyncError> {
        match self {
            Listing::S3(target) => sub_prefixes(target, prefix, pages).await,
            Listing::Local(_) => Ok(Vec::new()),
        }
    }

    /// Whether this side has a key under `prefix` after `key`: a one-key
    /// probe of where keys end.
    pub async fn any_key_after(&self, prefix: &str, key: &str) -> Result<bool, SyncError> {
        match self {
            Listing::S3(target) => any_key_after(target, prefix, key).await,
            Listing::Local(_) => Ok(false),
        }
    }

    /// `pairs` with this side's ETags filled in where the comparison needs
    /// them and the side cannot list them: a directory synced in `etag`
    /// mode hashes its files, a few at a time. A bucket lists its ETags.
    pub fn with_content_etags(
        &self,
        pairs: BoxStream<'static, Result<Pair, SyncError>>,
        side: Side,
    ) -> BoxStream<'static, Result<Pair, SyncError>> {
        match self {
            Listing::Local(dir) if dir.hash_etags => with_file_etags(pairs, dir.clone(), side),
            _ => pairs,
        }
    }
}
