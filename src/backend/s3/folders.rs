//! A bucket's folders, read with delimiter listings: where the planner and
//! the piece scheduler look first for places to cut a range.

use aws_sdk_s3::types::EncodingType;

use crate::backend::s3::listing::{ListTarget, form_decode};
use crate::base::error::{SyncError, classify};

/// The common prefixes one level below `prefix` (relative keys).
pub async fn sub_prefixes(
    target: &ListTarget,
    prefix: &str,
    max_pages: usize,
) -> Result<Vec<String>, SyncError> {
    Ok(folders(target, prefix, max_pages).await?.prefixes)
}

/// What delimiter pages under a prefix show.
#[derive(Debug, Default)]
pub struct Folders {
    /// Common prefixes one level down (relative keys).
    pub prefixes: Vec<String>,
    /// Keys directly under the prefix on the first page (relative): the
    /// sample for a flat keyspace.
    pub sample: Vec<String>,
    /// Whether the first page was full with more to come.
    pub more: bool,
}

/// The folders one level below `prefix`, and the first page's keys.
pub async fn folders(
    target: &ListTarget,
    prefix: &str,
    max_pages: usize,
) -> Result<Folders, SyncError> {
    let location = &target.location;
    let mut found = Folders::default();
    let mut token = None;
    for page_number in 0..max_pages {
        // Through the listing's own request: the same encoding, expected
        // owner and requester-pays as every page.
        let page = crate::backend::s3::listing::list_request(target, &location.key_for(prefix))
            .delimiter("/")
            .max_keys(target.page_size)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| {
                SyncError::s3(format!("finding the folders of {location}"), classify(&e))
            })?;
        let url_encoded = page.encoding_type() == Some(&EncodingType::Url);
        if page_number == 0 {
            found.more = page.is_truncated() == Some(true);
            for object in page.contents() {
                let key = crate::backend::s3::listing::listed_key(object, url_encoded)?;
                if let Some(relative) = location.relative(&key) {
                    found.sample.push(relative.to_owned());
                }
            }
        }
        for common in page.common_prefixes() {
            let raw = common.prefix().unwrap_or_default();
            let full = if url_encoded {
                form_decode(raw)?
            } else {
                raw.to_owned()
            };
            if let Some(relative) = location.relative(&full) {
                found.prefixes.push(relative.to_owned());
            }
        }
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    Ok(found)
}
