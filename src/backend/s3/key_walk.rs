//! What every listing does with the keys of its pages, whichever
//! operation listed them: decode them, check that they ascend, place them
//! in or past the range listed, and hand the range's entries on, kept to a
//! movable end.

use std::future::Future;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::base::error::SyncError;
use crate::model::entry::{ObjectEntry, Side};
use crate::model::keyspace::MovableEnd;
use crate::model::location::{KeyRange, S3Location};
use crate::model::versions::ListedVersion;

/// Where a listing's keys fall in the range it lists: checked to ascend
/// (an error is never an end, nor is a server's misordering), made
/// relative, and placed outside, in or past the range.
pub(crate) struct KeyWalk<'a> {
    location: &'a S3Location,
    range: &'a KeyRange,
    previous: Option<String>,
    /// A key may come several times in a row (its versions).
    repeats: bool,
}

/// Where a listed key falls.
pub(crate) enum Place {
    /// Not this range's (before its start, or outside the location).
    Outside,
    /// In the range; the relative key starts at this byte of the key.
    In(usize),
    /// At or past the range's end: the listing is done.
    PastEnd,
}

impl<'a> KeyWalk<'a> {
    pub(crate) fn new(location: &'a S3Location, range: &'a KeyRange, repeats: bool) -> Self {
        KeyWalk {
            location,
            range,
            previous: None,
            repeats,
        }
    }

    /// Place the next listed (full, decoded) key.
    pub(crate) fn place(&self, key: &str) -> Result<Place, SyncError> {
        if let Some(previous) = &self.previous {
            let misordered = if self.repeats {
                key < previous.as_str()
            } else {
                key <= previous.as_str()
            };
            if misordered {
                return Err(SyncError::ListingOrder {
                    location: self.location.to_string(),
                    previous: previous.clone(),
                    next: key.to_owned(),
                });
            }
        }
        let Some(relative) = self.location.relative(key) else {
            return Ok(Place::Outside);
        };
        if self.range.is_past_end(relative) {
            return Ok(Place::PastEnd);
        }
        if !self.range.contains(relative) {
            return Ok(Place::Outside);
        }
        Ok(Place::In(key.len() - relative.len()))
    }

    /// `key`, just placed, is the one the next must not come before.
    pub(crate) fn passed(&mut self, key: String) {
        self.previous = Some(key);
    }
}

/// What a listing hands on: something with a (relative) key.
pub(crate) trait Keyed {
    fn key(&self) -> &str;
}

impl Keyed for ObjectEntry {
    fn key(&self) -> &str {
        &self.key
    }
}

impl Keyed for ListedVersion {
    fn key(&self) -> &str {
        &self.entry.key
    }
}

/// Pages a listing may run ahead of its consumer: enough to hide one request's
/// latency, small enough that memory does not depend on the bucket's size.
const PAGES_AHEAD: usize = 2;

/// A listing run in its own task, one or two pages ahead of its consumer,
/// as a stream of its entries: `list` sends pages; its error, if any, ends
/// the stream (an error is never an end).
pub(crate) fn paged<T, F, Fut>(list: F) -> impl Stream<Item = Result<T, SyncError>> + Send + 'static
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<Result<Vec<T>, SyncError>>) -> Fut,
    Fut: Future<Output = Result<(), SyncError>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<Vec<T>, SyncError>>(PAGES_AHEAD);
    let listing = list(tx.clone());
    tokio::spawn(async move {
        if let Err(err) = listing.await {
            // The consumer may be gone (cancelled); nothing else to tell then.
            let _ = tx.send(Err(err)).await;
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        let page = rx.recv().await?;
        Some((page, rx))
    })
    .flat_map(|page| {
        let items: Vec<Result<T, SyncError>> = match page {
            Ok(entries) => entries.into_iter().map(Ok).collect(),
            Err(err) => vec![Err(err)],
        };
        futures::stream::iter(items)
    })
}

/// Hand one page's entries on, kept to a movable end if there is one, and
/// count the page towards a cut. `more`: the server has more pages.
/// Returns whether the listing is over (the end reached, nothing more, or
/// the consumer gone).
pub(crate) async fn hand_on<T: Keyed>(
    movable: Option<&(Arc<MovableEnd>, Side)>,
    mut entries: Vec<T>,
    more: bool,
    mut reached_end: bool,
    tx: &mpsc::Sender<Result<Vec<T>, SyncError>>,
) -> bool {
    if let Some((end, side)) = movable {
        reached_end |= end.admit(*side, &mut entries, |e| e.key(), more && !reached_end);
    }
    if !entries.is_empty() && tx.send(Ok(entries)).await.is_err() {
        return true; // consumer gone
    }
    reached_end || !more
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
