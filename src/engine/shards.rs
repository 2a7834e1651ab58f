//! Shards for the serverless runtime: a range cut, before anything is
//! listed, into pieces that lister functions take one each.

use futures::{StreamExt, TryStreamExt};

use crate::backend::s3::folders::{folders, sub_prefixes};
use crate::backend::s3::listing::{ListTarget, any_key_after};
use crate::base::error::SyncError;
use crate::model::keyspace::{KeySpace, thin, tile};
use crate::model::location::KeyRange;

/// Delimiter pages read per prefix: a flat prefix with millions of keys has
/// no sub-prefixes to find, and the planner must answer in seconds.
const MAX_PAGES_PER_PREFIX: usize = 5;
/// Prefixes refined per level, so planning costs a bounded number of requests.
const MAX_REFINED: usize = 200;
const MAX_DEPTH: usize = 3;
/// Prefixes looked into at once.
const REFINE_IN_FLIGHT: usize = 16;

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
        boundaries = flat_cuts(target, &range.prefix, &top.sample, want).await?;
    }
    // One level below the top is always looked at (when there are few
    // enough prefixes to afford it), deeper ones while shards are wanted:
    // a prefix that holds most of the keys (a year of date folders beside
    // a hundred small ones) shows it by its sub-prefixes, and the cuts,
    // thinned evenly over all boundaries, then fall mostly inside it.
    while (boundaries.len() < want || depth == 1) && depth < MAX_DEPTH && !boundaries.is_empty() {
        if boundaries.len() > MAX_REFINED {
            break;
        }
        // Where shards are wanted, a prefix is read up to a few pages for
        // its sub-prefixes; where they are only looked for, one page.
        let pages = if boundaries.len() < want {
            MAX_PAGES_PER_PREFIX
        } else {
            1
        };
        // Built up front: a closure mapped over a stream inside an async fn
        // trips rustc's higher-ranked Send check once spawned.
        let looks: Vec<_> = boundaries
            .iter()
            .map(|prefix| sub_prefixes(target, prefix, pages))
            .collect();
        let found: Vec<Vec<String>> = futures::stream::iter(looks)
            .buffered(REFINE_IN_FLIGHT)
            .try_collect()
            .await?;
        let mut deeper = Vec::new();
        for (prefix, children) in boundaries.iter().zip(found) {
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

/// One-key listings spent finding where a flat keyspace ends, past the
/// doubling that brackets it: the end is then known to within 1/256 of
/// that bracket.
const END_PROBES: usize = 8;

/// Cuts for a flat keyspace (no folders), `want` shards' worth, spread
/// evenly up to where its keys end. Shards are fixed once planned, so
/// cutting at 1, 2, 4, … pages beyond the first, as the local runtime's
/// first cut does, would leave the last shard a third or more of the keys
/// (it holds everything past the last doubling). The end is found with
/// one-key listings instead: the first doubling of the first page's reach
/// with no key after it, by bisection over the doublings, then
/// [`END_PROBES`] bisections of the space between it and the one before.
/// About 15 requests; keys spread unevenly in the key space (a dense run
/// of dates) still make uneven shards, which only cutting while listing
/// can even out.
async fn flat_cuts(
    target: &ListTarget,
    prefix: &str,
    sample: &[String],
    want: usize,
) -> Result<Vec<String>, SyncError> {
    let space = KeySpace::from_sample(sample);
    let (first, last) = (&sample[0], &sample[sample.len() - 1]);
    let doublings = space.cuts_after_page(first, last, last, 64);
    // Keys after a cut: true up to some doubling, false from there on.
    let (mut low, mut high) = (0, doublings.len());
    while low < high {
        let mid = (low + high) / 2;
        if any_key_after(target, prefix, &doublings[mid]).await? {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    let mut below = match low {
        0 => last.clone(),
        n => doublings[n - 1].clone(),
    };
    let mut above = doublings.get(low).cloned();
    for _ in 0..END_PROBES {
        let Some(mid) = space.midpoint(&below, above.as_deref()) else {
            break;
        };
        if any_key_after(target, prefix, &mid).await? {
            below = mid;
        } else {
            above = Some(mid);
        }
    }
    let end = above.unwrap_or(below);
    // Halve every piece between the first key and the end until there are
    // enough, then keep `want - 1` cuts spread over them.
    let mut cuts = vec![first.clone(), end];
    while cuts.len() <= want {
        let mut finer = vec![cuts[0].clone()];
        for pair in cuts.windows(2) {
            if let Some(mid) = space.midpoint(&pair[0], Some(&pair[1])) {
                finer.push(mid);
            }
            finer.push(pair[1].clone());
        }
        if finer.len() == cuts.len() {
            break; // the space cannot be cut finer
        }
        cuts = finer;
    }
    // The first key starts the first shard, and no key lies past the end.
    cuts.pop();
    cuts.remove(0);
    Ok(thin(cuts, want.saturating_sub(1)))
}

/// True when boundary `b` lies inside the range's bounds (a boundary need
/// not be a key of the range; it only has to fall between its ends).
fn range_starts_before(range: &KeyRange, b: &str) -> bool {
    b.starts_with(&range.prefix)
        && range.start_at.as_deref().is_none_or(|s| b > s)
        && range.start_after.as_deref().is_none_or(|s| b > s)
        && !range.is_past_end(b)
}
