//! Shards for the serverless runtime: a range cut, before anything is
//! listed, into pieces that lister functions take one each.

use crate::backend::s3::folders::{folders, sub_prefixes};
use crate::backend::s3::listing::ListTarget;
use crate::base::error::SyncError;
use crate::model::keyspace::{KeySpace, thin, tile};
use crate::model::location::KeyRange;

/// Delimiter pages read per prefix: a flat prefix with millions of keys has
/// no sub-prefixes to find, and the planner must answer in seconds.
const MAX_PAGES_PER_PREFIX: usize = 5;
/// Prefixes refined per level, so planning costs a bounded number of requests.
const MAX_REFINED: usize = 200;
const MAX_DEPTH: usize = 3;

/// How many shards the planner asks for: four per lister that runs at
/// once, so a slow shard does not hold the others back, and no more than
/// the run allows. `plan` predicts the planner with this same rule.
pub fn shards_wanted(shard_concurrency: u32, max_shards: u32) -> usize {
    (shard_concurrency as usize * 4).min(max_shards as usize)
}

/// Shards tiling `range` of `target`: at least `want` where the keyspace
/// allows, at most `max`.
pub async fn plan_shards(
    target: &ListTarget,
    range: &KeyRange,
    want: usize,
    max: usize,
) -> Result<Vec<KeyRange>, SyncError> {
    let top = folders(target, &range.prefix, MAX_PAGES_PER_PREFIX).await?;
    let mut boundaries = top.prefixes;
    let mut depth = 1;
    if boundaries.is_empty() && top.more && top.sample.len() > 1 {
        depth = MAX_DEPTH; // cuts between keys have no folders to refine
        // Flat: cut beyond the first page, as the local runtime does first.
        // Shards are fixed once planned, so nothing re-cuts the last one;
        // its lister loops on its cursor instead.
        let (first, last) = (&top.sample[0], &top.sample[top.sample.len() - 1]);
        boundaries = KeySpace::from_sample(&top.sample).cuts_after_page(
            first,
            last,
            last,
            want.saturating_sub(1),
        );
    }
    while boundaries.len() < want && depth < MAX_DEPTH && !boundaries.is_empty() {
        if boundaries.len() > MAX_REFINED {
            break;
        }
        let mut deeper = Vec::new();
        for prefix in &boundaries {
            let children = sub_prefixes(target, prefix, MAX_PAGES_PER_PREFIX).await?;
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
