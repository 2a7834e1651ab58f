//! Requester-pays buckets, as S3 has them: the fault proxy refuses any
//! request to such a bucket that lacks `x-amz-request-payer: requester`
//! (moto does not), so a request that forgets the header fails here as it
//! would on AWS.

mod support;

use s3_fanout::backend::s3::listing::ListTarget;
use s3_fanout::backend::s3::preflight::preflight;
use s3_fanout::base::error::SyncError;
use s3_fanout::model::entry::Side;
use support::fault_proxy::{FaultProxy, Op};
use support::*;

/// The serverless planner's bucket check lists as the run will list: with
/// the header when the run pays, so a requester-pays bucket passes; and a
/// run that does not pay is told plainly that listing was denied.
#[tokio::test]
async fn the_bucket_check_of_a_requester_pays_bucket_sends_the_header() {
    let s3 = s3().await;
    let bucket = unique_bucket("rp-check");
    create_bucket(&s3, &bucket).await;
    put(&s3, &bucket, "a", body(1, 10)).await;
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.requester_pays(&bucket);
    let client = s3_at(proxy.endpoint()).await;
    let location = format!("s3://{bucket}").parse().unwrap();

    let paying = ListTarget::new(&client, &location, None, true);
    preflight(&paying, Side::Source)
        .await
        .expect("a run that pays may use a requester-pays bucket");
    let not_paying = ListTarget::new(&client, &location, None, false);
    match preflight(&not_paying, Side::Source).await {
        Err(SyncError::Config(why)) => assert!(why.contains("denied"), "{why}"),
        other => panic!("a run that does not pay is refused, got {other:?}"),
    }
    let listings: Vec<bool> = proxy
        .requests()
        .iter()
        .filter(|r| r.op == Op::ListObjectsV2)
        .map(|r| r.request_payer)
        .collect();
    assert_eq!(listings, [true, false]);
}

/// A whole sync between two requester-pays buckets: listing, copies (one
/// multipart, mirrored part by part), verification and deletes all carry
/// the header, so the run succeeds where any forgotten request would 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_between_requester_pays_buckets_sends_the_header_on_every_request() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "rp-sync").await;
    for i in 0..5 {
        put(&s3, &src, &format!("k{i}"), body(i, 100)).await;
    }
    put_multipart(&s3, &src, "big", 12 * 1024 * 1024, 5 * 1024 * 1024).await;
    put(&s3, &dst, "k0", body(99, 100)).await; // differs: updated
    put(&s3, &dst, "gone", body(7, 10)).await; // destination-only: deleted
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.requester_pays(&src);
    proxy.requester_pays(&dst);

    let out = run_cli(&[
        "sync",
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        "--endpoint-url",
        proxy.endpoint(),
        "--request-payer",
        "--delete",
        "--json",
    ]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    let summary: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(count(&summary, "copied"), 5, "{summary}");
    assert_eq!(count(&summary, "updated"), 1, "{summary}");
    assert_eq!(count(&summary, "deleted"), 1, "{summary}");
    let requests = proxy.requests();
    let ops: std::collections::BTreeSet<String> =
        requests.iter().map(|r| format!("{:?}", r.op)).collect();
    for op in [
        "ListObjectsV2",
        "CopyObject",
        "UploadPartCopy",
        "DeleteObjects",
    ] {
        assert!(ops.contains(op), "the run sent no {op}: {ops:?}");
    }
    let without: Vec<_> = requests.iter().filter(|r| !r.request_payer).collect();
    assert!(without.is_empty(), "sent without the header: {without:?}");
    assert_eq!(contents(&s3, &dst).await.len(), 6);
}

/// An upload of a directory into a requester-pays bucket (one file in
/// parts) and its restore: the upload's multipart requests and the
/// restore's ranged GETs pay too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_and_a_restore_with_a_requester_pays_bucket_send_the_header() {
    let s3 = s3().await;
    let bucket = unique_bucket("rp-dir");
    create_bucket(&s3, &bucket).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("small"), body(3, 1000)).unwrap();
    std::fs::write(dir.path().join("large"), body(4, 20 * 1024 * 1024)).unwrap();
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.requester_pays(&bucket);
    let url = format!("s3://{bucket}/up");
    let up = run_cli(&[
        "sync",
        dir.path().to_str().unwrap(),
        &url,
        "--endpoint-url",
        proxy.endpoint(),
        "--request-payer",
    ]);
    assert_eq!(up.status, 0, "{}\n{}", up.stdout, up.stderr);
    assert!(
        proxy.count_op(Op::UploadPart) >= 2,
        "the large file went in parts"
    );
    let restore = tempfile::tempdir().unwrap();
    let down = run_cli(&[
        "sync",
        &url,
        restore.path().to_str().unwrap(),
        "--endpoint-url",
        proxy.endpoint(),
        "--request-payer",
    ]);
    assert_eq!(down.status, 0, "{}\n{}", down.stdout, down.stderr);
    assert_eq!(
        std::fs::read(restore.path().join("large")).unwrap(),
        body(4, 20 * 1024 * 1024)
    );
    let without: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| !r.request_payer)
        .collect();
    assert!(without.is_empty(), "sent without the header: {without:?}");
}
