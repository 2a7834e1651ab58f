//! The serverless runtime simulated at sizes this machine cannot hold
//! (issue 21). The real planner (`engine::shards::plan_shards`) cuts a
//! bucket of 100M or 1B keys served by the synthetic endpoint (listings are
//! computed, nothing is stored), the endpoint weighs each shard exactly
//! (`/__synthetic/keys`), and `plan`'s serverless model
//! (`plan::serverless::estimate`: lister invocations of several streams
//! ending their tasks at 2M keys or their stop margin, the event sources'
//! ramp of 300 invocations a minute, the listers' and copiers' concurrency,
//! S3's per-prefix write rate, SQS, Lambda, Step Functions history, the run
//! counters, the price table) gives the time, invocations, history events,
//! requests and cost of an unchanged night and of a first copy of small
//! objects, at AWS's rates (`src/model/prices-us-east-1.json`), not this
//! machine's. With LISTERS 300 the first copy is also priced at the
//! first-copy settings (`StackShape::for_a_first_copy`).
//!
//!     cargo run --release --example serverless_simulation -- ENDPOINT [KEYS,..] [LAYOUTS] [LISTERS,..] [local:RATE[:STREAMS]]
//!
//! `scripts/bench-serverless-simulation.sh` starts the endpoint and runs it;
//! the README quotes its output as simulated.
//!
//! LISTERS is the listers' concurrency (`ListingConcurrency`), each
//! listing the template's default `ListerStreams` tasks at once; the
//! copiers are the template's defaults but for the first-copy settings' row.
//!
//! `local:RATE[:STREAMS]` models the local stack instead, to hold the model
//! against `scripts/bench-serverless-scale.sh`'s measurements: lister
//! invocations of 25 s (of which 20 s listing), STREAMS streams each (1;
//! the local stack has had 2 since aa903d7), RATE keys a second a stream
//! (both sides, as the listers' metrics showed there), event sources that
//! start every invocation at once (the local stack's do not ramp), shards
//! planned for the execution input's default `shard_concurrency` of 16,
//! and LISTERS listing at once.

use std::io::{Read, Write};

use s3_fanout::backend::s3::listing::ListTarget;
use s3_fanout::base::client::{ClientSettings, build_s3_client};
use s3_fanout::engine::shards::plan_shards;
use s3_fanout::model::location::{KeyRange, S3Location};
use s3_fanout::model::prices::PriceTable;
use s3_fanout::plan::requests::Requests;
use s3_fanout::plan::serverless::{Inputs, StackShape, estimate};
use s3_fanout::plan::tally::BatchCost;

/// `GET path` of the synthetic endpoint's control API, as JSON.
fn control(endpoint: &str, path: &str) -> serde_json::Value {
    let address = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("the synthetic endpoint");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (_, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn encode(key: &str) -> String {
    percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Keys of `bucket` from `from` (inclusive) to `before` (exclusive).
fn keys_between(endpoint: &str, bucket: &str, from: Option<&str>, before: Option<&str>) -> u64 {
    let mut query = format!("bucket={bucket}");
    if let Some(from) = from {
        query.push_str(&format!("&from={}", encode(from)));
    }
    if let Some(before) = before {
        query.push_str(&format!("&before={}", encode(before)));
    }
    control(endpoint, &format!("/__synthetic/keys?{query}"))["keys"]
        .as_u64()
        .expect("a key count")
}

/// The smallest string after every string starting with `prefix`.
fn successor(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).expect("ASCII");
        }
    }
    String::new()
}

/// Keys under the busiest top-level prefix (all of them for a flat key space).
async fn busiest_prefix(
    client: &aws_sdk_s3::Client,
    endpoint: &str,
    bucket: &str,
    keys: u64,
) -> u64 {
    let listed = client
        .list_objects_v2()
        .bucket(bucket)
        .delimiter("/")
        .send()
        .await
        .expect("a delimiter listing");
    listed
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .map(|p| keys_between(endpoint, bucket, Some(p), Some(&successor(p))))
        .max()
        .unwrap_or(keys)
}

fn stack(shard_concurrency: u64, lister_streams: u64) -> StackShape {
    // The template's defaults, but for the listers' concurrency.
    StackShape {
        copier_concurrency: 50,
        copier_batch_size: 1,
        copier_task_concurrency: 16,
        shard_concurrency,
        lister_streams,
        lister_max_keys: s3_fanout::serverless::env::DEFAULT_LISTER_MAX_KEYS,
        architecture: "arm64".into(),
        validate: true,
        notifications: false,
    }
}

fn minutes(secs: f64) -> String {
    if secs >= 3600.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.1} min", secs / 60.0)
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .expect("ENDPOINT of scripts/bench/synthetic_s3.py");
    let list = |arg: Option<String>, default: &str| -> Vec<String> {
        arg.unwrap_or_else(|| default.to_owned())
            .split(',')
            .map(str::to_owned)
            .collect()
    };
    let sizes: Vec<u64> = list(args.next(), "100000000,1000000000")
        .iter()
        .map(|k| k.parse().expect("KEYS"))
        .collect();
    let layouts = list(args.next(), "dirs,flat,uuid,skewed");
    let listers: Vec<u64> = list(args.next(), "16,256")
        .iter()
        .map(|k| k.parse().expect("LISTERS"))
        .collect();
    let local: Option<(f64, u64)> = args.next().map(|a| {
        let spec = a.strip_prefix("local:").expect("local:RATE[:STREAMS]");
        let (rate, streams) = spec.split_once(':').unwrap_or((spec, "1"));
        (
            rate.parse().expect("RATE, keys a second a stream"),
            streams.parse().expect("STREAMS, streams a lister"),
        )
    });
    let local_rate = local.map(|(rate, _)| rate);
    // The local stack's runs are compared to the second.
    let time = |secs: f64| {
        if local.is_some() {
            format!("{secs:.1} s")
        } else {
            minutes(secs)
        }
    };
    let settings = ClientSettings {
        endpoint_url: Some(endpoint.clone()),
        force_path_style: true,
        region: Some("us-east-1".into()),
        ..Default::default()
    };
    let client = build_s3_client(&settings, None).await;
    let mut prices = PriceTable::built_in();
    // The template's ListerStreams; the local stack's runs were measured
    // at the rate their metrics showed a stream for both sides together
    // (its CPU is this machine's, shared, not Lambda's).
    let mut streams = s3_fanout::serverless::env::DEFAULT_LISTER_STREAMS;
    if let Some((rate, local_streams)) = local {
        prices.assumptions.lister_timeout_secs = 25.0;
        prices.assumptions.list_keys_per_second = rate / 2.0;
        prices.assumptions.lister_cpu_us_per_key = 0.0;
        prices.assumptions.esm_start_invocations = 1_000.0;
        streams = local_streams;
    }
    println!(
        "| layout | keys | run | listers | shards | largest / mean | ranges | lister invocations | polls | history events | listing | write phase | S3's bound | wall | wall / bound | S3 requests | cost |"
    );
    println!(
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for &keys in &sizes {
        for layout in &layouts {
            let bucket = format!("syn-{keys}-{layout}");
            let location: S3Location = format!("s3://{bucket}").parse().unwrap();
            let target = ListTarget::new(&client, &location, None, false);
            let busiest = busiest_prefix(&client, &endpoint, &bucket, keys).await;
            for &concurrency in &listers {
                // The planner's own numbers: 4 shards a lister, at most 256.
                let planned_for = if local_rate.is_some() {
                    16
                } else {
                    concurrency
                };
                let want = s3_fanout::engine::shards::shards_wanted(planned_for as u32, 256);
                let shards = plan_shards(&target, &KeyRange::default(), want, 256)
                    .await
                    .expect("the planner cuts the bucket");
                let shard_keys: Vec<u64> = shards
                    .iter()
                    .map(|s| {
                        keys_between(
                            &endpoint,
                            &bucket,
                            s.start_at.as_deref(),
                            s.end_before.as_deref(),
                        )
                    })
                    .collect();
                let total: u64 = shard_keys.iter().sum();
                assert_eq!(total, keys, "{layout}: the shards tile the bucket");
                let mean = total as f64 / shards.len() as f64;
                let largest = *shard_keys.iter().max().unwrap() as f64 / mean;
                let no_requests = Requests::new();
                // An unchanged night: both sides listed once, nothing sent.
                let night = estimate(
                    stack(concurrency, streams),
                    Inputs {
                        shards: shards.len() as u64,
                        shard_keys: &shard_keys,
                        busiest_prefix_writes: 0,
                        listed_source: keys,
                        listed_destination: keys,
                        destination_after: keys,
                        transfer_requests: &no_requests,
                        batches: &[],
                        planner_requests: &no_requests,
                    },
                    &prices,
                )
                .unwrap();
                // A first copy of small objects: a CopyObject each, batches
                // of 100 as the listers cut them; at the first-copy
                // settings too when LISTERS is theirs (shards planned for it).
                let batch = BatchCost::small_copies(100, &prices.assumptions);
                let batches = vec![batch; keys.div_ceil(100) as usize];
                let copies = Requests::from([("CopyObject".to_owned(), keys)]);
                let first_copy = |stack: StackShape| {
                    estimate(
                        stack,
                        Inputs {
                            shards: shards.len() as u64,
                            shard_keys: &shard_keys,
                            busiest_prefix_writes: busiest,
                            listed_source: keys,
                            listed_destination: 0,
                            destination_after: keys,
                            transfer_requests: &copies,
                            batches: &batches,
                            planner_requests: &no_requests,
                        },
                        &prices,
                    )
                    .unwrap()
                };
                let first = first_copy(stack(concurrency, streams));
                let tuned_stack = stack(concurrency, streams).for_a_first_copy();
                let tuned = (local_rate.is_none() && concurrency == tuned_stack.shard_concurrency)
                    .then(|| first_copy(tuned_stack));
                let mut runs = vec![("unchanged night", &night)];
                if local_rate.is_none() {
                    runs.push(("first copy", &first));
                }
                if let Some(tuned) = &tuned {
                    runs.push(("first copy, first-copy settings", tuned));
                }
                for (run, e) in runs {
                    println!(
                        "| {layout} | {keys} | {run} | {} | {} | {largest:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | ${:.2} |",
                        e.stack.shard_concurrency,
                        shards.len(),
                        e.ranges,
                        e.lambda_invocations["lister"],
                        e.progress_polls,
                        e.history_events,
                        time(e.listing_secs),
                        time(e.write_secs),
                        time(e.partition_bound_secs),
                        time(e.wall_secs),
                        ratio(e.wall_secs, e.partition_bound_secs),
                        e.s3_requests.values().sum::<u64>(),
                        e.total_usd
                    );
                }
            }
        }
    }
}

/// The wall time over S3's bound for the copies, where there are copies.
fn ratio(wall_secs: f64, bound_secs: f64) -> String {
    if bound_secs > 0.0 {
        format!("{:.3}×", wall_secs / bound_secs)
    } else {
        String::new()
    }
}
