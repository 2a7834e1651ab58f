//! `s3-fanout plan`: its predictions against what the sync then does,
//! counted at the server (the fault proxy in front of moto records every
//! request it forwards).

mod support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::fault_proxy::FaultProxy;
use support::*;

const MIB: usize = 1024 * 1024;

/// Requests by operation, as the proxy saw them.
fn seen(proxy: &FaultProxy) -> BTreeMap<String, u64> {
    let mut by_op = BTreeMap::new();
    for request in proxy.requests() {
        *by_op.entry(format!("{:?}", request.op)).or_default() += 1;
    }
    by_op
}

fn predicted(requests: &Value) -> BTreeMap<String, u64> {
    requests
        .as_object()
        .expect("requests by operation")
        .iter()
        .map(|(op, n)| (op.clone(), n.as_u64().expect("a count")))
        .collect()
}

/// Each operation within 1% (and at least within one request, for the
/// operations a handful of objects cost), and the total within 1%.
fn assert_within_one_percent(predicted: &BTreeMap<String, u64>, actual: &BTreeMap<String, u64>) {
    let ops: std::collections::BTreeSet<&String> = predicted.keys().chain(actual.keys()).collect();
    for op in ops {
        let (p, a) = (
            predicted.get(op).copied().unwrap_or(0),
            actual.get(op).copied().unwrap_or(0),
        );
        let slack = (a as f64 * 0.01).max(1.0);
        assert!(
            (p as f64 - a as f64).abs() <= slack,
            "{op}: plan said {p}, the sync made {a}\nplan:   {predicted:?}\nactual: {actual:?}"
        );
    }
    let (p, a): (u64, u64) = (predicted.values().sum(), actual.values().sum());
    assert!(
        (p as f64 - a as f64).abs() <= a as f64 * 0.01,
        "total: plan said {p}, the sync made {a}"
    );
}

/// `s3-fanout COMMAND SRC DST --json` through `proxy`; it must succeed.
fn json_via(proxy: &FaultProxy, command: &str, src: &str, dst: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        command,
        src,
        dst,
        "--endpoint-url",
        proxy.endpoint(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = run_cli(&args);
    out.assert_success();
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{command} --json is not JSON ({e}): {}", out.stdout))
}

fn plan_json(proxy: &FaultProxy, src: &str, dst: &str, extra: &[&str]) -> Value {
    json_via(proxy, "plan", src, dst, extra)
}

fn sync_via(proxy: &FaultProxy, src: &str, dst: &str, extra: &[&str]) -> Value {
    json_via(proxy, "sync", src, dst, extra)
}

/// A source of 2,400 small objects, a few multipart ones, and a
/// destination that already has some of them, equal or not, and some of
/// its own.
async fn seeded(tag: &str) -> (String, String) {
    let client = s3().await;
    let (src, dst) = bucket_pair(&client, tag).await;
    let puts = futures::stream::iter(0..2_400u64)
        .map(|i| {
            let client = client.clone();
            let src = src.clone();
            async move {
                put(
                    &client,
                    &src,
                    &format!("data/{:02}/obj-{i:05}", i % 40),
                    body(i, 64 + (i % 7) as usize * 100),
                )
                .await;
            }
        })
        .buffer_unordered(32);
    futures::StreamExt::collect::<Vec<()>>(puts).await;
    for i in 0..3 {
        put_multipart(&client, &src, &format!("big/part-{i}"), 11 * MIB, 5 * MIB).await;
    }
    // Equal at the destination: 400 keys; different: 100; its own: 150.
    for i in 0..500u64 {
        let key = format!("data/{:02}/obj-{i:05}", i % 40);
        let len = 64 + (i % 7) as usize * 100;
        let bytes = if i < 400 {
            body(i, len)
        } else {
            body(i + 1, len)
        };
        put(&client, &dst, &key, bytes).await;
    }
    for i in 0..150u64 {
        put(&client, &dst, &format!("stale/{i:04}"), body(i, 10)).await;
    }
    (format!("s3://{src}"), format!("s3://{dst}"))
}

use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_plan_predicts_the_syncs_requests_within_one_percent() {
    let (src, dst) = seeded("plan").await;
    let proxy = FaultProxy::start(&moto().endpoint);
    // S3 stores a checksum with every object; moto does not. The 100
    // destination objects written after their sources with other bytes
    // are proven different by them: two HEADs each, which the plan prices.
    proxy.s3_checksums();

    let plan = plan_json(&proxy, &src, &dst, &["--delete"]);
    // The plan costs listings only.
    let plan_requests = seen(&proxy);
    assert_eq!(
        plan_requests.keys().collect::<Vec<_>>(),
        ["ListObjectsV2"],
        "the plan itself only lists: {plan_requests:?}"
    );
    let work = &plan["work"];
    assert_eq!(work["listed_source"], 2_403);
    assert_eq!(work["copy"]["objects"], 2_400 - 500 + 3);
    assert_eq!(work["update"]["objects"], 100);
    assert_eq!(work["delete"], 150);
    assert_eq!(work["skip"]["equal"], 400);
    assert!(work["copy"]["bytes"].as_u64().unwrap() > (33 * MIB) as u64);

    // `check` HEADs the 100 pairs of one size whose ETags differ; `check
    // --checksum` every pair of one size, the 400 equal ones too. Both
    // exit 1 (the pairs differ, and most keys are missing), writing nothing.
    for (extra, key, pairs) in [
        (&[][..], "check", 100u64),
        (&["--checksum"][..], "check_checksum", 500),
    ] {
        let estimate = &plan[key];
        assert_eq!(estimate["pairs_headed"], pairs, "{key}: {estimate}");
        proxy.clear_log();
        let mut args = vec![
            "check",
            &src,
            &dst,
            "--endpoint-url",
            proxy.endpoint(),
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = run_cli(&args);
        assert_eq!(out.status, 1, "{key}: {}", out.stderr);
        assert_within_one_percent(&predicted(&estimate["s3_requests"]), &seen(&proxy));
    }

    proxy.clear_log();
    let summary = sync_via(&proxy, &src, &dst, &["--delete"]);
    let actual = seen(&proxy);
    assert_eq!(count(&summary, "copied"), 2_400 - 500 + 3);
    assert_eq!(count(&summary, "updated"), 100);
    assert_eq!(count(&summary, "deleted"), 150);
    assert_within_one_percent(&predicted(&plan["local"]["s3_requests"]), &actual);
    // The proxy and the client count the same requests.
    assert_eq!(
        predicted(&summary["requests"]),
        actual,
        "the sync's own count matches the server's"
    );

    // The cost follows from the requests and the table: about 2,000 COPY
    // requests and a few listings at $0.005 per 1,000.
    let local_cost = plan["local"]["total_usd"].as_f64().unwrap();
    assert!((0.009..0.02).contains(&local_cost), "{local_cost}");
    assert!(plan["local"]["wall_secs"].as_f64().unwrap() > 0.0);
    let serverless = &plan["serverless"];
    // 2,003 copies and updates and 150 deletes, in batches of at most 100.
    let messages = serverless["sqs_messages"].as_u64().unwrap();
    assert!((22..=25).contains(&messages), "{messages} messages");
    assert_eq!(serverless["lambda_invocations"]["copier"], messages);
    assert!(serverless["state_transitions"].as_u64().unwrap() > 10);
    assert!(serverless["total_usd"].as_f64().unwrap() > local_cost);
    // AND the same run at the first-copy settings: the same messages, ten
    // to a copier invocation, and its write phase no longer
    let tuned = &plan["serverless_first_copy"];
    assert_eq!(tuned["stack"]["copier_batch_size"], 10);
    assert_eq!(tuned["sqs_messages"], messages);
    assert_eq!(tuned["lambda_invocations"]["copier"], messages.div_ceil(10));
    assert!(tuned["write_secs"].as_f64().unwrap() <= serverless["write_secs"].as_f64().unwrap());
    assert_eq!(plan["prices"]["region"], "us-east-1");

    // Planned again after the sync: nothing to do, and the prediction is
    // the re-run's requests (one listing of each side).
    proxy.clear_log();
    let again = plan_json(&proxy, &src, &dst, &["--delete"]);
    assert_eq!(again["work"]["copy"]["objects"], 0);
    assert!(again["serverless_first_copy"].is_null(), "nothing to copy");
    proxy.clear_log();
    sync_via(&proxy, &src, &dst, &["--delete"]);
    assert_within_one_percent(&predicted(&again["local"]["s3_requests"]), &seen(&proxy));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_price_table_from_a_file_changes_the_cost_and_a_bad_one_is_refused() {
    let client = s3().await;
    let (src, dst) = bucket_pair(&client, "plan-prices").await;
    for i in 0..20u64 {
        put(&client, &src, &format!("k{i}"), body(i, 100)).await;
    }
    let (src, dst) = (format!("s3://{src}"), format!("s3://{dst}"));
    let proxy = FaultProxy::start(&moto().endpoint);
    let built_in = plan_json(&proxy, &src, &dst, &[]);

    let mut table: Value =
        serde_json::from_str(include_str!("../src/model/prices-us-east-1.json")).unwrap();
    table["s3"]["tiers_per_1000_requests"]["put_copy_post_list"] = 5.0.into();
    table["region"] = "eu-west-1".into();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prices.json");
    std::fs::write(&file, table.to_string()).unwrap();
    let custom = plan_json(&proxy, &src, &dst, &["--prices", file.to_str().unwrap()]);
    let ratio = custom["local"]["cost_usd"]["s3_requests"].as_f64().unwrap()
        / built_in["local"]["cost_usd"]["s3_requests"]
            .as_f64()
            .unwrap();
    assert!((999.0..1001.0).contains(&ratio), "{ratio}");
    assert_eq!(custom["prices"]["region"], "eu-west-1");

    // Human output names the table's date and region.
    let out = run_cli(&["plan", &src, &dst, "--endpoint-url", proxy.endpoint()]);
    out.assert_success();
    assert!(out.stdout.contains("copy 20"), "{}", out.stdout);
    assert!(
        out.stdout.contains("us-east-1 USD, 2026-11-01"),
        "{}",
        out.stdout
    );

    std::fs::write(&file, "{\"date\": \"x\"}").unwrap();
    let bad = run_cli(&[
        "plan",
        &src,
        &dst,
        "--endpoint-url",
        proxy.endpoint(),
        "--prices",
        file.to_str().unwrap(),
    ]);
    assert_eq!(bad.status, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("not a price table"), "{}", bad.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_local_time_uses_the_rate_a_previous_run_measured() {
    let client = s3().await;
    let (src, dst) = bucket_pair(&client, "plan-rate").await;
    for i in 0..60u64 {
        put(&client, &src, &format!("k{i:03}"), body(i, 100)).await;
    }
    let (src, dst) = (format!("s3://{src}"), format!("s3://{dst}"));
    let proxy = FaultProxy::start(&moto().endpoint);
    let reports = tempfile::tempdir().unwrap();
    let report_dir = reports.path().to_str().unwrap();
    // Sync half, so the report directory holds a run that copied.
    sync_via(
        &proxy,
        &src,
        &dst,
        &["--report", report_dir, "--include", "k0*"],
    );
    for i in 60..120u64 {
        put(
            &client,
            src.trim_start_matches("s3://"),
            &format!("k{i:03}"),
            body(i, 100),
        )
        .await;
    }
    let plan = plan_json(&proxy, &src, &dst, &["--report", report_dir]);
    let basis = plan["local"]["rate"]["basis"].as_str().unwrap();
    assert!(basis.starts_with("measured by run "), "{basis}");
    let without = plan_json(&proxy, &src, &dst, &[]);
    let basis = without["local"]["rate"]["basis"].as_str().unwrap();
    assert!(basis.starts_with("assumed"), "{basis}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_bucket_is_a_clear_usage_error() {
    let out = run_cli(&[
        "plan",
        "s3://no-such-bucket-for-plan",
        "s3://nor-this-one",
        "--endpoint-url",
        &moto().endpoint,
    ]);
    assert_eq!(out.status, 2, "{}", out.stderr);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_plan_of_an_upload_predicts_its_puts_and_parts() {
    let client = s3().await;
    let bucket = unique_bucket("plan-up");
    create_bucket(&client, &bucket).await;
    let dir = tempfile::tempdir().unwrap();
    for i in 0..300u64 {
        let sub = dir.path().join(format!("d{:02}", i % 12));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{i:04}.bin")), body(i, 50 + i as usize)).unwrap();
    }
    // Above the 8 MiB threshold: 3 parts each.
    for i in 0..2u64 {
        std::fs::write(dir.path().join(format!("big-{i}.bin")), body(i, 17 * MIB)).unwrap();
    }
    let (src, dst) = (
        dir.path().to_str().unwrap().to_owned(),
        format!("s3://{bucket}"),
    );
    let proxy = FaultProxy::start(&moto().endpoint);
    let plan = plan_json(&proxy, &src, &dst, &[]);
    assert_eq!(plan["work"]["copy"]["objects"], 302);
    assert!(
        plan["serverless"].is_null(),
        "the serverless runtime syncs buckets"
    );
    assert!(plan["local"]["s3_requests"]["UploadPart"] == 6, "{plan}");
    proxy.clear_log();
    sync_via(&proxy, &src, &dst, &[]);
    assert_within_one_percent(&predicted(&plan["local"]["s3_requests"]), &seen(&proxy));
}
