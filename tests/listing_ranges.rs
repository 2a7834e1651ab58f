//! Listing a key range against a real server: the unit every runtime shards on.

mod support;

use futures::TryStreamExt;
use s3_fanout::backend::s3::listing::{ListTarget, list_range};
use s3_fanout::engine::shards::plan_shards;
use s3_fanout::model::entry::ObjectEntry;
use s3_fanout::model::location::KeyRange;
use support::*;

async fn target(bucket: &str, location_prefix: &str, page_size: i32) -> ListTarget {
    ListTarget {
        client: s3().await,
        location: format!("s3://{bucket}/{location_prefix}").parse().unwrap(),
        expected_owner: None,
        request_payer: false,
        page_size,
        as_of_ms: None,
    }
}

async fn listed(bucket: &str, location_prefix: &str, range: KeyRange) -> Vec<String> {
    let target = target(
        bucket,
        location_prefix,
        s3_fanout::model::s3_shape::MAX_PAGE_SIZE,
    )
    .await;
    let entries: Vec<ObjectEntry> = list_range(target, range).try_collect().await.unwrap();
    entries.into_iter().map(|e| e.key).collect()
}

#[tokio::test]
async fn a_range_lists_exactly_the_keys_between_its_bounds_across_pages() {
    let s3 = s3().await;
    let bucket = unique_bucket("range");
    create_bucket(&s3, &bucket).await;
    // 1,200 keys under data/ (two pages), plus neighbours outside the prefix.
    for i in 0..1_200 {
        put(&s3, &bucket, &format!("data/{i:05}"), Vec::new()).await;
    }
    put(&s3, &bucket, "data", Vec::new()).await;
    put(&s3, &bucket, "data0/x", Vec::new()).await;

    let all = listed(&bucket, "data", KeyRange::all()).await;
    assert_eq!(
        all.len(),
        1_200,
        "keys are relative to the prefix, neighbours excluded"
    );
    assert_eq!(all.first().map(String::as_str), Some("00000"));

    let range = KeyRange {
        prefix: String::new(),
        start_after: Some("00099".into()),
        end_before: Some("01100".into()),
        ..KeyRange::default()
    };
    let keys = listed(&bucket, "data", range).await;
    assert_eq!(keys.len(), 1_000);
    assert_eq!((keys[0].as_str(), keys[999].as_str()), ("00100", "01099"));

    // Shards that tile the location, by first-level prefix and then by
    // bounds inside one prefix, list every key exactly once, in order.
    let shards = [
        KeyRange {
            prefix: "00".into(),
            start_after: None,
            end_before: Some("00500".into()),
            ..KeyRange::default()
        },
        KeyRange {
            prefix: "00".into(),
            start_after: Some("00499".into()),
            end_before: None,
            ..KeyRange::default()
        },
        KeyRange {
            prefix: "01".into(),
            start_after: None,
            end_before: None,
            ..KeyRange::default()
        },
    ];
    let mut tiled = Vec::new();
    for shard in shards {
        tiled.extend(listed(&bucket, "data", shard).await);
    }
    assert_eq!(tiled, all);
}

#[tokio::test]
async fn the_planner_cuts_a_flat_keyspace_into_shards_that_hold_every_key_once() {
    let s3 = s3().await;
    let bucket = unique_bucket("flat-plan");
    create_bucket(&s3, &bucket).await;
    let keys: Vec<String> = (0..120).map(|i| format!("log-{i:05}.gz")).collect();
    for key in &keys {
        put(&s3, &bucket, key, Vec::new()).await;
    }
    // Pages of 10: a flat keyspace "larger" than one page, no folders.
    let source = target(&bucket, "", 10).await;
    let shards = plan_shards(&source, &KeyRange::all(), 6, 16).await.unwrap();
    assert!(shards.len() >= 4, "{shards:#?}");
    let mut all = Vec::new();
    for shard in shards {
        let entries: Vec<ObjectEntry> = list_range(source.clone(), shard)
            .try_collect()
            .await
            .unwrap();
        all.extend(entries.into_iter().map(|e| e.key));
    }
    assert_eq!(all, keys, "every key once, in order, across the shards");
}

/// GIVEN 100,000 keys over 100 folders (the synthetic endpoint's `dirs`)
/// WHEN a piece that starts at a short cut ("dir-15", as bisection makes
/// them) lists to the next folder
/// THEN the endpoint serves that folder's keys and at most one page past
/// its end, and nothing below the cut. Before: the listing started after
/// "dir-1" and served dir-10/ to dir-14/ again (5,000 keys) on every such
/// piece; a 100k-object no-op on Garage cost 443 listings for 200 pages.
#[tokio::test]
async fn a_piece_starting_at_a_short_cut_lists_nothing_below_it() {
    let server = support::synthetic::Synthetic::start();
    let bucket = "syn-100000-dirs";
    let target = ListTarget {
        client: s3_at(&server.endpoint).await,
        location: format!("s3://{bucket}").parse().unwrap(),
        expected_owner: None,
        request_payer: false,
        page_size: s3_fanout::model::s3_shape::MAX_PAGE_SIZE,
        as_of_ms: None,
    };
    let range = KeyRange {
        start_at: Some("dir-15".into()),
        end_before: Some("dir-16/".into()),
        ..KeyRange::default()
    };
    let served = |server: &support::synthetic::Synthetic| {
        server.counts()["keys"][bucket].as_u64().unwrap_or(0)
    };
    let before = served(&server);
    let entries: Vec<ObjectEntry> = list_range(target, range).try_collect().await.unwrap();
    let served = served(&server) - before;
    assert_eq!(entries.len(), 1_000, "dir-15/ holds 1,000 keys");
    assert!(
        entries.iter().all(|e| e.key.starts_with("dir-15/")),
        "{:?}",
        entries.first()
    );
    assert!(
        served <= 2_000,
        "{served} keys served for a folder of 1,000 (at most a page past its end)"
    );
}

#[tokio::test]
async fn the_page_parser_reads_what_the_sdk_reads_from_a_real_server() {
    use s3_fanout::backend::s3::list_page::{Page, ReadPage};
    // GIVEN keys XML and URLs make awkward, over two pages, in two
    // storage classes
    let s3 = s3().await;
    let bucket = unique_bucket("page-parser");
    create_bucket(&s3, &bucket).await;
    let mut keys: Vec<String> = [
        "a b",
        "a+b",
        "a%2B",
        "ü/日本語",
        "x<y>&z\"'",
        "tab\there",
        "ctl\u{1}x",
        "emoji 🚀",
        "/lead//slash ",
        "semi;colon=eq?q#h",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    keys.extend((0..30).map(|i| format!("many/{i:03}")));
    for (i, key) in keys.iter().enumerate() {
        put(&s3, &bucket, key, body(i as u64, i)).await;
    }
    s3.put_object()
        .bucket(&bucket)
        .key("cold")
        .storage_class(aws_sdk_s3::types::StorageClass::StandardIa)
        .body(Vec::new().into())
        .send()
        .await
        .unwrap();

    // WHEN the bucket is listed page by page, once read by the page parser
    // and once by the SDK
    let mut pages = [Vec::new(), Vec::new()];
    for (parser, pages) in pages.iter_mut().enumerate() {
        let mut token = None;
        loop {
            let request = s3
                .list_objects_v2()
                .bucket(&bucket)
                .max_keys(17)
                .encoding_type(aws_sdk_s3::types::EncodingType::Url)
                .set_continuation_token(token.take());
            let page = if parser == 0 {
                let read = ReadPage::default();
                request
                    .customize()
                    .interceptor(read.clone())
                    .send()
                    .await
                    .unwrap();
                read.take().expect("the page parser read the page")
            } else {
                Page::from_sdk(&request.send().await.unwrap())
            };
            token = page.next_continuation_token.clone();
            let more = page.is_truncated;
            pages.push(page);
            if !more {
                break;
            }
        }
    }

    // THEN both read the same pages: keys, sizes, ETags, times, classes
    let [parsed, by_sdk] = pages;
    assert_eq!(parsed, by_sdk);
    assert!(parsed.len() >= 3, "{} pages", parsed.len());
    let objects: Vec<_> = parsed.iter().flat_map(|p| &p.objects).collect();
    assert_eq!(objects.len(), keys.len() + 1);
    assert!(
        objects
            .iter()
            .all(|o| o.last_modified_ms > 0 && !o.etag.is_empty())
    );
    assert!(
        objects
            .iter()
            .any(|o| o.storage_class.as_deref() == Some("STANDARD_IA"))
    );
}
