//! The serverless planner's shards at the size the runtime exists for,
//! against the synthetic endpoint (`scripts/bench/synthetic_s3.py`), whose
//! listings of a million keys are computed, not stored.

mod support;

use s3_fanout::backend::s3::listing::ListTarget;
use s3_fanout::base::client::{ClientSettings, build_s3_client};
use s3_fanout::engine::shards::plan_shards;
use s3_fanout::model::entry::Side;
use s3_fanout::model::location::KeyRange;
use s3_fanout::model::options::{SyncOptions, SyncSpec};
use support::REGION;
use support::synthetic::Synthetic;

const KEYS: u64 = 1_000_000;

/// The synthetic flat bucket's key of object `i`.
fn key(i: u64) -> String {
    format!("obj-{i:09}")
}

/// The index of the first key at or above `bound` (binary search: the
/// keys sort by their index).
fn first_at_or_above(bound: &str) -> u64 {
    let (mut low, mut high) = (0, KEYS);
    while low < high {
        let mid = (low + high) / 2;
        if key(mid).as_str() < bound {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    low
}

/// How many of the bucket's keys `shard` holds.
fn keys_in(shard: &KeyRange) -> u64 {
    let start = match (&shard.start_at, &shard.start_after) {
        (Some(at), _) => first_at_or_above(at),
        (None, Some(after)) => {
            let i = first_at_or_above(after);
            i + u64::from(i < KEYS && key(i) == *after)
        }
        (None, None) => 0,
    };
    let end = shard.end_before.as_deref().map_or(KEYS, first_at_or_above);
    end.saturating_sub(start)
}

/// GIVEN a flat keyspace of a million keys (`obj-000000000` …), no folders
/// WHEN the serverless planner cuts it into the 64 shards it wants
/// THEN the shards tile it and none holds more than twice the mean: the
/// cuts at 1, 2, 4, … pages past the first left a third or more of the
/// keys in the last shard, which one lister then listed alone
/// AND finding where the keys end took a bounded number of listings
#[tokio::test]
async fn a_flat_keyspace_is_cut_into_shards_of_even_size() {
    let server = Synthetic::start();
    let settings = ClientSettings {
        endpoint_url: Some(server.endpoint.clone()),
        force_path_style: true,
        region: Some(REGION.into()),
        ..Default::default()
    };
    let client = build_s3_client(&settings, None).await;
    let options = SyncOptions::try_from(SyncSpec {
        source: format!("s3://syn-{KEYS}-flat"),
        destination: format!("s3://syn-{KEYS}-flat-twin"),
        ..SyncSpec::default()
    })
    .unwrap();
    let (source, _) = options.buckets().unwrap();
    let target = ListTarget::for_side(&client, source, &options, Side::Source);

    let shards = plan_shards(&target, &options.range, 64, 256).await.unwrap();

    let sizes: Vec<u64> = shards.iter().map(keys_in).collect();
    assert_eq!(sizes.iter().sum::<u64>(), KEYS, "the shards tile the keys");
    assert!(shards.len() >= 32, "{} shards", shards.len());
    let mean = KEYS / shards.len() as u64;
    let largest = *sizes.iter().max().unwrap();
    assert!(
        largest <= 2 * mean,
        "largest {largest}, mean {mean}: {sizes:?}"
    );
    let listings = server.counts()["ops"]["ListObjectsV2"].as_u64().unwrap();
    assert!(listings <= 30, "{listings} listings to plan");
}
