//! Diff modes, filters, deletion and dry runs, against moto through the CLI.

mod support;

use support::*;

const MIB: usize = 1024 * 1024;

async fn keys(bucket: &str) -> Vec<String> {
    list_all(&s3().await, bucket, "")
        .await
        .into_iter()
        .map(|l| l.key)
        .collect()
}

/// Two buckets with: a key only at the source, a key equal on both sides, a
/// key with the same size but other content, and a key with another size.
async fn differing_pair(tag: &str) -> (String, String) {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, tag).await;
    put(&s3, &src, "new", body(1, 10)).await;
    put(&s3, &src, "equal", body(2, 10)).await;
    put(&s3, &dst, "equal", body(2, 10)).await;
    put(&s3, &src, "same-size", body(3, 10)).await;
    put(&s3, &dst, "same-size", body(4, 10)).await;
    put(&s3, &src, "other-size", body(5, 10)).await;
    put(&s3, &dst, "other-size", body(5, 11)).await;
    (src, dst)
}

#[tokio::test]
async fn missing_mode_copies_only_absent_keys() {
    let (src, dst) = differing_pair("missing").await;
    let (code, s) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &["--mode", "missing"],
    );
    assert_eq!(code, 0, "{s}");
    assert_eq!((count(&s, "copied"), count(&s, "updated")), (1, 0));
    assert_eq!(
        get_bytes(&s3().await, &dst, "other-size").await,
        body(5, 11),
        "left alone"
    );
}

#[tokio::test]
async fn size_mode_updates_only_size_differences() {
    let (src, dst) = differing_pair("size").await;
    let (code, s) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &["--mode", "size"],
    );
    assert_eq!(code, 0, "{s}");
    assert_eq!((count(&s, "copied"), count(&s, "updated")), (1, 1));
    let s3 = s3().await;
    assert_eq!(get_bytes(&s3, &dst, "other-size").await, body(5, 10));
    assert_eq!(
        get_bytes(&s3, &dst, "same-size").await,
        body(4, 10),
        "same size: not compared further"
    );
}

#[tokio::test]
async fn etag_mode_is_the_default_and_catches_same_size_changes() {
    let (src, dst) = differing_pair("etag").await;
    let (code, s) = sync_json(&format!("s3://{src}"), &format!("s3://{dst}"), &[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(
        (
            count(&s, "copied"),
            count(&s, "updated"),
            count(&s, "skip_equal")
        ),
        (1, 2, 1)
    );
    assert_eq!(get_bytes(&s3().await, &dst, "same-size").await, body(3, 10));
}

#[tokio::test]
async fn incomparable_multipart_etags_fall_back_to_size_and_time_and_say_unverified() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "fb").await;
    // The destination copy was written first, in one PUT (plain ETag)...
    let data = multipart_body("k", 6 * MIB);
    put(&s3, &dst, "older-copy", data.clone()).await;
    put(&s3, &dst, "resized", data[..100].to_vec()).await;
    // ...and the source objects in parts, later (S3 times have 1 s resolution).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    put_multipart(&s3, &src, "older-copy", 6 * MIB, 5 * MIB).await;
    put_multipart(&s3, &src, "resized", 6 * MIB, 5 * MIB).await;
    // A copy newer than its multipart source, same size: probably equal.
    put_multipart(&s3, &src, "newer-copy", 6 * MIB, 5 * MIB).await;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    put(
        &s3,
        &dst,
        "newer-copy",
        multipart_body("newer-copy", 6 * MIB),
    )
    .await;

    let (code, s) = sync_json(&format!("s3://{src}"), &format!("s3://{dst}"), &[]);

    // The copy older than its source and the resized one are updated; the
    // newer same-size copy is kept, reported as unverified: exit 3.
    assert_eq!(code, 3, "{s}");
    assert_eq!(count(&s, "updated"), 2, "{s}");
    assert_eq!(count(&s, "skip_unverified"), 1, "{s}");
    assert_eq!(
        count(&s, "skip_equal"),
        0,
        "never called equal on incomparable ETags"
    );
    assert_eq!(count(&s, "verify_mismatched"), 0, "{s}");
    let csv = std::fs::read_to_string(
        s["failures_csv"]
            .as_str()
            .expect("the warning is in the report"),
    )
    .unwrap();
    assert!(
        csv.contains(&format!("{src},newer-copy,,warning,Unverified")),
        "{csv}"
    );
}

#[tokio::test]
async fn delete_removes_extraneous_keys_only_with_the_flag() {
    let (src, dst) = differing_pair("del").await;
    let s3 = s3().await;
    put(&s3, &dst, "extra-1", body(9, 3)).await;
    put(&s3, &dst, "extra-2", body(9, 3)).await;

    let (code, s) = sync_json(&format!("s3://{src}"), &format!("s3://{dst}"), &[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(count(&s, "extraneous_kept"), 2);
    assert!(keys(&dst).await.contains(&"extra-1".to_string()));

    let (code, s) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &["--delete"],
    );
    assert_eq!(code, 0, "{s}");
    assert_eq!(count(&s, "deleted"), 2);
    assert_eq!(keys(&dst).await, keys(&src).await);
}

#[tokio::test]
async fn max_delete_caps_deletions_and_fails_the_run_with_a_row_per_refusal() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "maxdel").await;
    put(&s3, &src, "keep", body(1, 3)).await;
    for i in 0..5 {
        put(&s3, &dst, &format!("extra-{i}"), body(i, 3)).await;
    }

    let (code, s) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &["--delete", "--max-delete", "2"],
    );

    assert_eq!(code, 1, "{s}");
    assert_eq!(count(&s, "deleted"), 2);
    assert_eq!(count(&s, "failed"), 3);
    assert_eq!(
        count(&s, "verify_mismatched"),
        0,
        "refusals are reported once, not again by verify"
    );
    assert_eq!(
        keys(&dst).await,
        vec!["extra-2", "extra-3", "extra-4", "keep"]
    );
    let csv = std::fs::read_to_string(s["failures_csv"].as_str().unwrap()).unwrap();
    assert_eq!(csv.matches("MaxDeleteExceeded").count(), 3, "{csv}");
}

#[tokio::test]
async fn dry_run_plans_and_writes_nothing() {
    let (src, dst) = differing_pair("dry").await;
    let before = list_all(&s3().await, &dst, "").await;
    let endpoint = moto().endpoint.clone();

    let out = run_cli(&[
        "sync",
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        "--endpoint-url",
        &endpoint,
        "--dry-run",
        "-v",
        "--no-progress",
    ]);

    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("(dry run) copy    new"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("(dry run) update  same-size"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("nothing was written"), "{}", out.stdout);
    assert_eq!(list_all(&s3().await, &dst, "").await, before);

    let (code, s) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &["--dry-run", "--delete"],
    );
    assert_eq!(code, 0, "{s}");
    assert_eq!(
        (
            count(&s, "plan_copy"),
            count(&s, "plan_update"),
            count(&s, "copied")
        ),
        (1, 2, 0)
    );
    let requests = s["requests"].as_object().unwrap();
    assert_eq!(
        requests.keys().collect::<Vec<_>>(),
        vec!["ListObjectsV2"],
        "{requests:?}"
    );
}

#[tokio::test]
async fn include_and_exclude_filters_select_keys_on_both_sides() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "flt").await;
    for key in [
        "logs/a.log",
        "logs/debug/b.log",
        "logs/c.tmp",
        "data/d.csv",
        "e.log",
    ] {
        put(&s3, &src, key, body(1, 4)).await;
    }
    put(&s3, &dst, "logs/old.tmp", body(2, 4)).await;

    let (code, s) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &[
            "--include",
            "logs/*",
            "--include",
            "*.log",
            "--exclude",
            "logs/debug/*",
            "--exclude",
            "*.tmp",
            "--delete",
        ],
    );

    assert_eq!(code, 0, "{s}");
    assert_eq!(
        keys(&dst).await,
        vec!["e.log", "logs/a.log", "logs/old.tmp"],
        "excluded keys are neither copied nor deleted"
    );
    assert_eq!(count(&s, "skip_filtered"), 4, "{s}");
}

#[tokio::test]
async fn modified_since_copies_only_recent_source_objects() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "since").await;
    put(&s3, &src, "old", body(1, 4)).await;
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let cutoff = aws_smithy_types::DateTime::from(std::time::SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    put(&s3, &src, "new", body(2, 4)).await;

    let (code, s) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &["--modified-since", &cutoff],
    );

    assert_eq!(code, 0, "{s}");
    assert_eq!(keys(&dst).await, vec!["new"]);
    assert_eq!(count(&s, "skip_not_modified"), 1);
}

#[tokio::test]
async fn a_request_rate_cap_spaces_every_request_of_the_run() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "rate").await;
    for i in 0..8 {
        put(&s3, &src, &format!("k{i}"), body(i, 10)).await;
    }
    let started = std::time::Instant::now();
    let (code, s) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &["--max-requests-per-second", "10", "--concurrency", "8"],
    );
    let elapsed = started.elapsed();
    assert_eq!(code, 0, "{s}");
    assert_eq!(count(&s, "copied"), 8);
    let requests: u64 = s["requests"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    // N requests spaced 100 ms apart take at least (N - 1) × 100 ms: a lower
    // bound, which a slow machine only makes easier to meet. Uncapped, moto
    // answers these in well under a second.
    let floor = std::time::Duration::from_millis(100 * (requests - 1));
    assert!(
        elapsed >= floor,
        "{requests} requests in {elapsed:?}, under the cap's floor of {floor:?}"
    );
}

#[test]
fn a_zero_request_rate_is_refused() {
    let out = run_cli(&[
        "sync",
        "s3://a-b-c",
        "s3://d-e-f",
        "--max-requests-per-second",
        "0",
    ]);
    assert_eq!(out.status, 2);
    assert!(
        out.stderr
            .contains("--max-requests-per-second must be at least 1"),
        "{}",
        out.stderr
    );
}
