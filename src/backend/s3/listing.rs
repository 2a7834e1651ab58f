//! Stage 1: list a key range of one location as a stream of [`ObjectEntry`].
//!
//! Each listing runs in its own task, one or two pages ahead of its consumer,
//! so the source and destination listings proceed in parallel and copying
//! starts with the first page. Memory is bounded by `PAGES_AHEAD` pages.

use aws_sdk_s3::Client;
use aws_sdk_s3::types::EncodingType;
use futures::Stream;
use tokio::sync::mpsc;

use std::sync::Arc;

use crate::backend::s3::list_page::{Page, ReadPage};
use crate::base::error::{SyncError, classify};
use crate::model::entry::{ObjectEntry, Side};
use crate::model::keyspace::MovableEnd;
use crate::model::location::{KeyRange, S3Location};
use crate::model::options::{SyncOptions, requester_pays};
use crate::model::s3_shape::MAX_PAGE_SIZE;

/// Pages a listing may run ahead of its consumer: enough to hide one request's
/// latency, small enough that memory does not depend on the bucket's size.
const PAGES_AHEAD: usize = 2;

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

/// Who is listing what: a location on the client that reaches it.
#[derive(Debug, Clone)]
pub struct ListTarget {
    pub client: Client,
    pub location: S3Location,
    pub expected_owner: Option<String>,
    pub request_payer: bool,
    /// Keys per ListObjectsV2 page ([`MAX_PAGE_SIZE`] but in tests).
    pub page_size: i32,
}

impl ListTarget {
    /// Full pages of `location`, as `client` reaches it.
    pub fn new(
        client: &Client,
        location: &S3Location,
        expected_owner: Option<String>,
        request_payer: bool,
    ) -> ListTarget {
        ListTarget {
            client: client.clone(),
            location: location.clone(),
            expected_owner,
            request_payer,
            page_size: MAX_PAGE_SIZE,
        }
    }

    /// One side of a run, as its options say: that side's expected owner,
    /// requester pays, and the page size.
    pub fn for_side(
        client: &Client,
        location: &S3Location,
        options: &SyncOptions,
        side: Side,
    ) -> ListTarget {
        let owner = match side {
            Side::Source => &options.copy.expected_source_owner,
            Side::Destination => &options.copy.expected_dest_owner,
        };
        ListTarget {
            page_size: options.list_page_size,
            ..ListTarget::new(client, location, owner.clone(), options.copy.request_payer)
        }
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
    let (tx, rx) = mpsc::channel::<Result<Vec<ObjectEntry>, SyncError>>(PAGES_AHEAD);
    let taker = end.clone();
    tokio::spawn(async move {
        let result = list_pages(&target, &range, end.as_ref(), &tx).await;
        if let Err(err) = result {
            // The consumer may be gone (cancelled); nothing else to tell then.
            let _ = tx.send(Err(err)).await;
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        let page = rx.recv().await?;
        Some((page, rx))
    })
    .flat_map(|page| {
        let items: Vec<Result<ObjectEntry, SyncError>> = match page {
            Ok(entries) => entries.into_iter().map(Ok).collect(),
            Err(err) => vec![Err(err)],
        };
        futures::stream::iter(items)
    })
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
    let location = &target.location;
    let list_prefix = location.key_for(&range.prefix);
    let start_after = range.list_start_after().map(|s| location.key_for(&s));
    let mut token: Option<String> = None;
    let mut previous: Option<String> = None;
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
            if let Some(prev) = &previous
                && key.as_str() <= prev.as_str()
            {
                return Err(SyncError::ListingOrder {
                    location: location.to_string(),
                    previous: prev.clone(),
                    next: key,
                });
            }
            let Some(relative) = location.relative(&key) else {
                previous = Some(key);
                continue;
            };
            if range.is_past_end(relative) {
                reached_end = true;
                break;
            }
            if !range.contains(relative) {
                previous = Some(key);
                continue;
            }
            entries.push(object.entry(relative));
            previous = Some(key);
        }
        token = page.next_continuation_token;
        if let Some((end, side)) = movable {
            let more = !reached_end && token.is_some() && page.is_truncated;
            reached_end |= end.admit(*side, &mut entries, |e| e.key.as_str(), more);
        }
        if !entries.is_empty() && tx.send(Ok(entries)).await.is_err() {
            return Ok(()); // consumer gone
        }
        if reached_end || token.is_none() || !page.is_truncated {
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

/// Decode a key from a listing with `encoding-type=url`. S3 form-encodes
/// (a space may arrive as `+`, a literal `+` always as `%2B`), so `+` is a
/// space and `%XX` an escaped byte.
pub fn form_decode(encoded: &str) -> Result<String, SyncError> {
    let spaced = encoded.replace('+', " ");
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(&spaced).collect();
    String::from_utf8(bytes).map_err(|_| {
        SyncError::Config(format!(
            "the server listed a key that is not UTF-8 once decoded: {encoded:?}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decode_handles_plus_percent_and_unicode() {
        assert_eq!(form_decode("a+b").unwrap(), "a b");
        assert_eq!(form_decode("a%2Bb").unwrap(), "a+b");
        assert_eq!(form_decode("%2541").unwrap(), "%41");
        assert_eq!(form_decode("%C3%BC/%C3%B1").unwrap(), "ü/ñ");
        assert_eq!(form_decode("a%20b").unwrap(), "a b");
        assert_eq!(form_decode("/lead//x%20").unwrap(), "/lead//x ");
        assert!(form_decode("%FF").is_err());
    }
}
