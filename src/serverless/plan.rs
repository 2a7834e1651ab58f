//! Split a key range into shards that list in parallel.
//!
//! Shards are cut at common prefixes (`ListObjectsV2` with a `/` delimiter),
//! refined one level deeper while there are fewer than wanted, and thinned
//! evenly when there are more than allowed. Consecutive shards share their
//! boundary (one ends before it, the next starts at it), so together they
//! hold every key of the range exactly once: boundaries only change how the
//! work is divided, never what is synced.

use aws_sdk_s3::types::EncodingType;

use crate::error::{SyncError, classify};
use crate::listing::{ListTarget, form_decode};
use crate::location::KeyRange;

/// Delimiter pages read per prefix: a flat prefix with millions of keys has
/// no sub-prefixes to find, and the planner must answer in seconds. Splitting
/// flat keyspaces on sampled keys is the lister's job, not the planner's.
const MAX_PAGES_PER_PREFIX: usize = 5;
/// Prefixes refined per level, so planning costs a bounded number of requests.
const MAX_REFINED: usize = 200;
const MAX_DEPTH: usize = 3;

/// Shards tiling `range` of `target`: at least `want` where the keyspace
/// allows, at most `max`.
pub async fn plan_shards(
    target: &ListTarget,
    range: &KeyRange,
    want: usize,
    max: usize,
) -> Result<Vec<KeyRange>, SyncError> {
    let mut boundaries = sub_prefixes(target, &range.prefix).await?;
    let mut depth = 1;
    while boundaries.len() < want && depth < MAX_DEPTH && !boundaries.is_empty() {
        if boundaries.len() > MAX_REFINED {
            break;
        }
        let mut deeper = Vec::new();
        for prefix in &boundaries {
            let children = sub_prefixes(target, prefix).await?;
            // A prefix with no sub-prefixes stays one boundary.
            if children.is_empty() {
                deeper.push(prefix.clone());
            } else {
                // The parent stays a boundary too: objects directly under it
                // sort before its first child.
                deeper.push(prefix.clone());
                deeper.extend(children);
            }
        }
        if deeper.len() == boundaries.len() {
            break;
        }
        boundaries = deeper;
        depth += 1;
    }
    boundaries.retain(|b| range.contains(b) || range_starts_before(range, b));
    boundaries.sort();
    boundaries.dedup();
    Ok(tile(range, thin(boundaries, max.saturating_sub(1))))
}

/// True when boundary `b` lies inside the range's bounds (a boundary need
/// not be a key of the range; it only has to fall between its ends).
fn range_starts_before(range: &KeyRange, b: &str) -> bool {
    b.starts_with(&range.prefix)
        && range.start_at.as_deref().is_none_or(|s| b > s)
        && range.start_after.as_deref().is_none_or(|s| b > s)
        && !range.is_past_end(b)
}

/// Keep at most `keep` boundaries, evenly spread.
fn thin(boundaries: Vec<String>, keep: usize) -> Vec<String> {
    if boundaries.len() <= keep {
        return boundaries;
    }
    if keep == 0 {
        return Vec::new();
    }
    let step = boundaries.len() as f64 / keep as f64;
    (0..keep)
        .map(|i| boundaries[((i as f64 + 0.5) * step) as usize].clone())
        .collect()
}

/// The shards between consecutive boundaries.
pub fn tile(range: &KeyRange, boundaries: Vec<String>) -> Vec<KeyRange> {
    let mut shards = Vec::with_capacity(boundaries.len() + 1);
    let mut start_at = range.start_at.clone();
    for boundary in boundaries {
        shards.push(KeyRange {
            prefix: range.prefix.clone(),
            start_at: start_at.take(),
            start_after: range.start_after.clone(),
            end_before: Some(boundary.clone()),
        });
        start_at = Some(boundary);
    }
    shards.push(KeyRange {
        prefix: range.prefix.clone(),
        start_at,
        start_after: range.start_after.clone(),
        end_before: range.end_before.clone(),
    });
    shards
}

/// The common prefixes one level below `prefix` (relative keys).
async fn sub_prefixes(target: &ListTarget, prefix: &str) -> Result<Vec<String>, SyncError> {
    let location = &target.location;
    let mut found = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES_PER_PREFIX {
        let page = target
            .client
            .list_objects_v2()
            .bucket(&location.bucket)
            .prefix(location.key_for(prefix))
            .delimiter("/")
            .encoding_type(EncodingType::Url)
            .set_continuation_token(token)
            .set_expected_bucket_owner(target.expected_owner.clone())
            .send()
            .await
            .map_err(|e| SyncError::s3(format!("planning shards of {location}"), classify(&e)))?;
        let url_encoded = page.encoding_type() == Some(&EncodingType::Url);
        for common in page.common_prefixes() {
            let raw = common.prefix().unwrap_or_default();
            let full = if url_encoded {
                form_decode(raw)?
            } else {
                raw.to_owned()
            };
            if let Some(relative) = location.relative(&full) {
                found.push(relative.to_owned());
            }
        }
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the boundaries, every key of the range falls in exactly
        /// one shard.
        #[test]
        fn shards_hold_every_key_once(
            mut boundaries in proptest::collection::vec("[a-c/]{1,4}", 0..12),
            keys in proptest::collection::vec("[a-c/]{0,5}", 0..60),
            keep in 0usize..15,
        ) {
            boundaries.sort();
            boundaries.dedup();
            let range = KeyRange::all();
            let shards = tile(&range, thin(boundaries, keep));
            prop_assert!(shards.len() <= keep + 1);
            for key in keys {
                let holders = shards.iter().filter(|s| s.contains(&key)).count();
                prop_assert_eq!(holders, 1, "key {:?} in {} shards of {:?}", key, holders, shards);
            }
        }
    }

    #[test]
    fn a_range_with_bounds_keeps_them_in_its_first_and_last_shard() {
        let range = KeyRange {
            start_after: Some("a".into()),
            end_before: Some("m".into()),
            ..KeyRange::default()
        };
        let shards = tile(&range, vec!["c/".into(), "f/".into()]);
        assert_eq!(shards.len(), 3);
        assert!(!shards[0].contains("a"));
        assert!(shards[0].contains("b"));
        assert!(shards[1].contains("c/"));
        assert!(shards[2].contains("f/x"));
        assert!(!shards[2].contains("m"));
    }
}
