//! Stage 1: list a key range of one location as a stream of [`ObjectEntry`].
//!
//! Each listing runs in its own task, one or two pages ahead of its consumer,
//! so the source and destination listings proceed in parallel and copying
//! starts with the first page. Memory is bounded by `PAGES_AHEAD` pages
//! (`key_walk::paged`, which every listing runs through).

use aws_sdk_s3::types::EncodingType;
use futures::Stream;
use tokio::sync::mpsc;

use std::sync::Arc;

pub use crate::backend::s3::key_walk::form_decode;
use crate::backend::s3::key_walk::{KeyWalk, Place, hand_on, paged};
use crate::backend::s3::list_page::{Page, ReadPage};
pub use crate::backend::s3::list_target::ListTarget;
use crate::base::error::{RetryClass, S3Failure, SyncError, classify};
use crate::model::entry::{ObjectEntry, Side};
use crate::model::keyspace::MovableEnd;
use crate::model::location::KeyRange;
use crate::model::options::requester_pays;
use crate::model::s3_shape::MAX_PAGE_SIZE;

/// The full key of a listed object, decoded if the page was URL-encoded.
pub fn listed_key(
    object: &aws_sdk_s3::types::Object,
    url_encoded: bool,
) -> Result<String, SyncError> {
    let raw = object.key().unwrap_or_default();
    if url_encoded {
        form_decode(raw)
    } else {
        Ok(raw.to_owned())
    }
}

/// List `range` of `target` in ascending key order. The stream ends after the
/// last key of the range, or with the first error: an error is never an end,
/// so a failed listing can not make present objects look absent.
pub fn list_range(
    target: ListTarget,
    range: KeyRange,
) -> impl Stream<Item = Result<ObjectEntry, SyncError>> + Send + 'static {
    list_range_until(target, range, None)
}

/// [`list_range`], stopping at an end that may move down while it lists
/// (see [`MovableEnd`]); `side` says which cursor this listing keeps.
pub fn list_range_until(
    target: ListTarget,
    range: KeyRange,
    end: Option<(Arc<MovableEnd>, Side)>,
) -> impl Stream<Item = Result<ObjectEntry, SyncError>> + Send + 'static {
    let taker = end.clone();
    paged(move |tx| async move { list_pages(&target, &range, end.as_ref(), &tx).await })
        // The end may have moved down since a page was listed: keys from it on
        // are the new range's, so this side ends before them.
        .take_while(move |item| {
            let take = match (item, &taker) {
                (Ok(entry), Some((end, side))) => end.pass(*side, &entry.key),
                _ => true,
            };
            std::future::ready(take)
        })
}

use futures::StreamExt;

async fn list_pages(
    target: &ListTarget,
    range: &KeyRange,
    movable: Option<&(Arc<MovableEnd>, Side)>,
    tx: &mpsc::Sender<Result<Vec<ObjectEntry>, SyncError>>,
) -> Result<(), SyncError> {
    if let Some(as_of_ms) = target.as_of_ms {
        return crate::backend::s3::listing_versions::list_version_pages(
            target, range, movable, tx, as_of_ms,
        )
        .await;
    }
    let location = &target.location;
    let list_prefix = location.key_for(&range.prefix);
    let start_after = range.list_start_after().map(|s| location.key_for(&s));
    let mut token: Option<String> = None;
    let mut walk = KeyWalk::new(&target.location, range, false);
    loop {
        // Read by this crate's page parser where it can, by the SDK where
        // it cannot (list_page.rs): the same objects either way.
        let read = ReadPage::default();
        let output = list_request(target, &list_prefix)
            .max_keys(target.page_size.clamp(1, MAX_PAGE_SIZE))
            .set_start_after(start_after.clone())
            .set_continuation_token(token.take())
            .customize()
            .interceptor(read.clone())
            .send()
            .await
            .map_err(|e| SyncError::s3(format!("listing {location}"), classify(&e)))?;
        let page = read.take().unwrap_or_else(|| Page::from_sdk(&output));

        let mut entries = Vec::with_capacity(page.objects.len());
        let mut reached_end = false;
        for mut object in page.objects {
            // The entry is made from the relative key: the listed one is
            // moved out, not copied, on this per-key path.
            let key = if page.url_encoded {
                form_decode(&object.key)?
            } else {
                std::mem::take(&mut object.key)
            };
            match walk.place(&key)? {
                Place::PastEnd => {
                    reached_end = true;
                    break;
                }
                Place::Outside => {}
                Place::In(start) => entries.push(object.entry(&key[start..])),
            }
            walk.passed(key);
        }
        token = page.next_continuation_token;
        // "More, but from nowhere" would end the listing early: a key not
        // listed must never read as a key absent.
        if page.is_truncated && token.is_none() {
            return Err(SyncError::s3(
                format!("listing {location}"),
                S3Failure {
                    code: "TruncatedWithoutToken".into(),
                    http_status: None,
                    message: "the server says the listing goes on but names no NextContinuationToken to go on from".into(),
                    class: RetryClass::NonRetryable,
                },
            ));
        }
        let more = page.is_truncated;
        if hand_on(movable, entries, more, reached_end, tx).await {
            return Ok(());
        }
    }
}

/// A ListObjectsV2 request for `prefix` (a full key prefix) of `target`,
/// with what every listing sends.
pub(crate) fn list_request(
    target: &ListTarget,
    prefix: &str,
) -> aws_sdk_s3::operation::list_objects_v2::builders::ListObjectsV2FluentBuilder {
    let request = target
        .client
        .list_objects_v2()
        .bucket(&target.location.bucket)
        .prefix(prefix)
        // XML 1.0 cannot carry some characters that S3 keys may hold;
        // URL encoding makes every key survive the trip.
        .encoding_type(EncodingType::Url)
        .set_expected_bucket_owner(target.expected_owner.clone());
    request.set_request_payer(requester_pays(target.request_payer))
}

/// Whether the source has a key under `prefix` (relative to the target's
/// location) after `key`: a one-key listing, to probe where keys end.
pub async fn any_key_after(
    target: &ListTarget,
    prefix: &str,
    key: &str,
) -> Result<bool, SyncError> {
    let location = &target.location;
    let page = list_request(target, &location.key_for(prefix))
        .start_after(location.key_for(key))
        .max_keys(1)
        .send()
        .await
        .map_err(|e| SyncError::s3(format!("listing {location}"), classify(&e)))?;
    Ok(!page.contents().is_empty())
}
