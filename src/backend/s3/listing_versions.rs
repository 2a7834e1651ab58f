//! Stage 1 for `--as-of`: list a key range of a versioned bucket as it was
//! at a point in time, as the same stream of [`ObjectEntry`] a listing of
//! current objects gives, each entry naming its version.
//!
//! ListObjectVersions lists keys in ascending order and each key's
//! versions and delete markers newest first, so [`AsOfSelector`] decides
//! each key as its entries arrive, whatever the number of versions and
//! wherever a page ends. Memory stays one page per listing, and ranges,
//! pieces and movable ends work as they do on object listings: a range's
//! start is a `KeyMarker` (S3 lists from the first version of the next
//! key), so every piece sees every version of its keys.

use std::sync::Arc;

use aws_sdk_s3::types::{BucketVersioningStatus, EncodingType};
use futures::Stream;
use tokio::sync::mpsc;

use crate::backend::s3::key_walk::{KeyWalk, Keyed, Place, form_decode, hand_on, paged};
use crate::backend::s3::list_target::ListTarget;
use crate::backend::s3::version_page::ReadVersions;
use crate::base::error::{RetryClass, S3Failure, SyncError, classify};
use crate::model::entry::{ObjectEntry, Side};
use crate::model::keyspace::MovableEnd;
use crate::model::location::KeyRange;
use crate::model::options::requester_pays;
use crate::model::s3_shape::MAX_PAGE_SIZE;
use crate::model::versions::{AsOfSelector, ListedVersion};

pub(crate) async fn list_version_pages(
    target: &ListTarget,
    range: &KeyRange,
    movable: Option<&(Arc<MovableEnd>, Side)>,
    tx: &mpsc::Sender<Result<Vec<ObjectEntry>, SyncError>>,
    as_of_ms: i64,
) -> Result<(), SyncError> {
    check_versioned(target).await?;
    let mut selector = AsOfSelector::new(as_of_ms);
    version_pages(target, range, movable, tx, |listed| selector.push(listed)).await
}

/// Every version and delete marker of `range`, in listing order (keys
/// ascending, each key's entries newest first): a key's whole history,
/// for `--all-versions`. The caller checks the bucket's versioning.
pub fn list_all_versions(
    target: ListTarget,
    range: KeyRange,
) -> impl Stream<Item = Result<ListedVersion, SyncError>> + Send + 'static {
    paged(move |tx| async move { version_pages(&target, &range, None, &tx, Some).await })
}

/// Page through ListObjectVersions over `range`, handing on what `pick`
/// makes of each entry in the range.
async fn version_pages<T: Keyed>(
    target: &ListTarget,
    range: &KeyRange,
    movable: Option<&(Arc<MovableEnd>, Side)>,
    tx: &mpsc::Sender<Result<Vec<T>, SyncError>>,
    mut pick: impl FnMut(ListedVersion) -> Option<T>,
) -> Result<(), SyncError> {
    let location = &target.location;
    let list_prefix = location.key_for(&range.prefix);
    let mut key_marker = range.list_start_after().map(|s| location.key_for(&s));
    let mut version_marker: Option<String> = None;
    let mut walk = KeyWalk::new(&target.location, range, true);
    loop {
        let read = ReadVersions::default();
        target
            .client
            .list_object_versions()
            .bucket(&location.bucket)
            .prefix(&list_prefix)
            .max_keys(target.page_size.clamp(1, MAX_PAGE_SIZE))
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            // As for ListObjectsV2: every key survives the XML.
            .encoding_type(EncodingType::Url)
            .set_expected_bucket_owner(target.expected_owner.clone())
            .set_request_payer(requester_pays(target.request_payer))
            .customize()
            .interceptor(read.clone())
            .send()
            .await
            .map_err(|e| {
                SyncError::s3(format!("listing the versions of {location}"), classify(&e))
            })?;
        // No fallback to the SDK's reading, which loses the order of
        // versions and delete markers (version_page.rs).
        let page = read.take().ok_or_else(|| {
            SyncError::s3(
                format!("listing the versions of {location}"),
                S3Failure {
                    code: "UnreadableListing".into(),
                    http_status: None,
                    message: "the server's ListObjectVersions answer is not a ListVersionsResult this tool can read".into(),
                    class: RetryClass::NonRetryable,
                },
            )
        })?;
        let url_encoded = page.url_encoded;
        let decode = |key: &str| {
            if url_encoded {
                form_decode(key)
            } else {
                Ok(key.to_owned())
            }
        };

        let mut entries = Vec::new();
        let mut reached_end = false;
        let mut last_relative = None;
        for listed in page.entries {
            let key = decode(&listed.object.key)?;
            match walk.place(&key)? {
                Place::PastEnd => {
                    reached_end = true;
                    break;
                }
                Place::Outside => {}
                Place::In(start) => {
                    let relative = &key[start..];
                    last_relative = Some(relative.to_owned());
                    entries.extend(pick(listed.version(relative)));
                }
            }
            walk.passed(key);
        }
        // Keys absent at the time give no entries, so the entries alone
        // may not show that a moved end was passed.
        if let (Some((end, _)), Some(last)) = (movable, &last_relative) {
            reached_end |= end.is_past(last);
        }
        key_marker = page.next_key_marker.as_deref().map(decode).transpose()?;
        version_marker = page.next_version_id_marker;
        // "More, but from nowhere" would end the listing early: a key
        // not listed must never read as a key absent.
        if page.is_truncated && key_marker.is_none() {
            return Err(SyncError::s3(
                format!("listing the versions of {location}"),
                S3Failure {
                    code: "TruncatedWithoutMarker".into(),
                    http_status: None,
                    message: "the server says the listing goes on but names no NextKeyMarker to go on from".into(),
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

/// Refuse a bucket that has never had versioning on: it keeps no history,
/// and a listing "as of" a time would quietly be today's objects filtered
/// by date. A bucket whose versioning is suspended keeps the versions made
/// while it was on, so it is listed. Every listing asks (one request), so
/// the first page of a run is its check, as for a missing bucket, and the
/// merge-join decides nothing before it.
async fn check_versioned(target: &ListTarget) -> Result<(), SyncError> {
    let bucket = &target.location.bucket;
    match versioning(target, "source").await? {
        Some(_) => Ok(()),
        None => Err(SyncError::Config(format!(
            "--as-of needs a versioned source, and bucket {bucket:?} has never had versioning \
             enabled: it keeps no earlier versions to restore"
        ))),
    }
}

/// A bucket's versioning status: `None` for one that has never had it on.
pub async fn versioning(
    target: &ListTarget,
    side: &str,
) -> Result<Option<BucketVersioningStatus>, SyncError> {
    let bucket = &target.location.bucket;
    let answer = target
        .client
        .get_bucket_versioning()
        .bucket(bucket)
        .set_expected_bucket_owner(target.expected_owner.clone())
        .send()
        .await
        .map_err(|e| {
            SyncError::s3(
                format!("reading the versioning of the {side} bucket {bucket:?}"),
                classify(&e),
            )
        })?;
    Ok(answer.status().cloned())
}
