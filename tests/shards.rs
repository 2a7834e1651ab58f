//! The serverless planner's shards at the size the runtime exists for,
//! against the synthetic endpoint (`scripts/bench/synthetic_s3.py`), whose
//! listings of a million keys are computed, not stored, in the layouts
//! users have: even prefixes, flat numbered keys, random UUIDs, and one hot
//! prefix holding 90% of the keys.

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

/// How the planner cut one layout: keys per shard, and its listings.
struct Cut {
    sizes: Vec<u64>,
    listings: u64,
}

impl Cut {
    fn largest(&self) -> u64 {
        *self.sizes.iter().max().unwrap()
    }

    fn mean(&self) -> u64 {
        KEYS / self.sizes.len() as u64
    }
}

/// Plan the 64 shards the stack wants for `syn-KEYS-LAYOUT`, and weigh each
/// with the endpoint's key count (no listing).
async fn cut(server: &Synthetic, layout: &str) -> Cut {
    let settings = ClientSettings {
        endpoint_url: Some(server.endpoint.clone()),
        force_path_style: true,
        region: Some(REGION.into()),
        ..Default::default()
    };
    let client = build_s3_client(&settings, None).await;
    let bucket = format!("syn-{KEYS}-{layout}");
    let options = SyncOptions::try_from(SyncSpec {
        source: format!("s3://{bucket}"),
        destination: format!("s3://{bucket}-twin"),
        ..SyncSpec::default()
    })
    .unwrap();
    let (source, _) = options.buckets().unwrap();
    let target = ListTarget::for_side(&client, source, &options, Side::Source);
    let before = listings(server);
    let shards = plan_shards(&target, &options.range, 64, 256).await.unwrap();
    let listings = listings(server) - before;
    let sizes = shards.iter().map(|s| keys_in(server, &bucket, s)).collect();
    Cut { sizes, listings }
}

fn listings(server: &Synthetic) -> u64 {
    server.counts()["ops"]["ListObjectsV2"]
        .as_u64()
        .unwrap_or(0)
}

/// Keys of `bucket` in `shard`, by the endpoint's count.
fn keys_in(server: &Synthetic, bucket: &str, shard: &KeyRange) -> u64 {
    let encode = |k: &str| {
        percent_encoding::utf8_percent_encode(k, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let mut query = format!("bucket={bucket}");
    if let Some(from) = &shard.start_at {
        query.push_str(&format!("&from={}", encode(from)));
    }
    if let Some(before) = &shard.end_before {
        query.push_str(&format!("&before={}", encode(before)));
    }
    assert!(
        shard.start_after.is_none() && shard.prefix.is_empty(),
        "{shard:?}"
    );
    server.get(&format!("/__synthetic/keys?{query}"))["keys"]
        .as_u64()
        .unwrap()
}

/// GIVEN a million keys in each layout
/// WHEN the serverless planner cuts each into the 64 shards it wants
/// THEN the shards tile every layout, in a bounded number of listings
/// AND every layout makes shards of even size: no shard holds more than
/// twice the mean. Before: cuts at 1, 2, 4, … pages past the first page
/// left 49% of a flat keyspace in the last of 21 shards; UUIDs read as
/// digits where the first page showed only digits left 40% in one; the
/// hot prefix, never looked into once there were 64 top-level prefixes,
/// was one shard of 90%.
#[tokio::test]
async fn shards_tile_every_layout_evenly() {
    let server = Synthetic::start();
    for layout in ["dirs", "flat", "uuid", "skewed"] {
        let cut = cut(&server, layout).await;
        eprintln!(
            "layout {layout:7} shards {:3} largest {:7} mean {:6} ({:.1}x) listings {}",
            cut.sizes.len(),
            cut.largest(),
            cut.mean(),
            cut.largest() as f64 / cut.mean() as f64,
            cut.listings
        );
        assert_eq!(
            cut.sizes.iter().sum::<u64>(),
            KEYS,
            "{layout}: the shards tile the keys"
        );
        // A page of the top level and one of each of its hundred prefixes
        // (for sub-prefixes), or the probes for a flat keyspace's end.
        assert!(
            cut.listings <= 110,
            "{layout}: {} listings to plan",
            cut.listings
        );
        assert!(
            cut.sizes.len() >= 32,
            "{layout}: {} shards",
            cut.sizes.len()
        );
        assert!(
            cut.largest() <= 2 * cut.mean(),
            "{layout}: largest {}, mean {}: {:?}",
            cut.largest(),
            cut.mean(),
            cut.sizes
        );
    }
}
