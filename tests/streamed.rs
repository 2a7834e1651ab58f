//! Copies that stream through this machine (GET, then PUT or UploadPart)
//! when the two sides cannot copy server-side: two endpoints (here moto
//! directly and moto behind the fault proxy, which S3-fanout cannot know
//! are one server), or `--stream`. Proven by the requests each side got:
//! no CopyObject or UploadPartCopy anywhere.

mod support;

use std::time::Duration;

use aws_sdk_s3::Client;
use serde_json::Value;
use support::fault_proxy::*;
use support::*;

const MIB: usize = 1024 * 1024;

/// Objects of every kind a stream must carry: metadata, tags and content
/// headers; empty; above the 8 MiB threshold in one PUT; in 5 MiB parts.
async fn seed(s3: &Client, bucket: &str) {
    put_with(
        s3,
        bucket,
        "docs/report final+v2.pdf",
        body(1, 3_000),
        PutExtras {
            content_type: Some("application/pdf".into()),
            metadata: vec![("owner".into(), "finance".into())],
            tags: vec![("class".into(), "internal".into())],
            cache_control: Some("max-age=60".into()),
            ..PutExtras::default()
        },
    )
    .await;
    put(s3, bucket, "empty", Vec::new()).await;
    put(s3, bucket, "ünïcödé/ключ", body(2, 10)).await;
    put(s3, bucket, "big/single.bin", body(3, 9 * MIB + 5)).await;
    put_multipart(s3, bucket, "big/parts.bin", 12 * MIB, 5 * MIB).await;
    for i in 0..30 {
        put(
            s3,
            bucket,
            &format!("many/{i:02}"),
            body(10 + i, 100 + i as usize),
        )
        .await;
    }
}

async fn everything(s3: &Client, bucket: &str) -> Vec<(String, Vec<u8>, String)> {
    let mut out = Vec::new();
    for listed in list_all(s3, bucket, "").await {
        let bytes = get_bytes(s3, bucket, &listed.key).await;
        out.push((listed.key, bytes, listed.etag));
    }
    out
}

fn streamed_sync(proxy: &FaultProxy, src: &str, dst: &str, extra: &[&str]) -> (i32, Value) {
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));
    let moto_endpoint = moto().endpoint.clone();
    let mut args = vec![
        "sync",
        &source,
        &destination,
        "--source-endpoint-url",
        proxy.endpoint(),
        "--dest-endpoint-url",
        &moto_endpoint,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = run_cli(&args);
    let summary = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", out.stdout, out.stderr));
    (out.status, summary)
}

fn requests(summary: &Value, op: &str) -> u64 {
    summary["requests"][op].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn two_endpoints_stream_every_object_with_its_metadata_and_etag() {
    // GIVEN a source reached through another endpoint than the destination
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "stream").await;
    seed(&s3, &src).await;
    let proxy = FaultProxy::start(&moto().endpoint);

    // WHEN they are synced
    let (code, run) = streamed_sync(&proxy, &src, &dst, &[]);

    // THEN every object arrived through GETs and PUTs, not server-side
    assert_eq!(code, 0, "{run}");
    assert_eq!(count(&run, "copied"), 35);
    assert_eq!(count(&run, "verify_mismatched"), 0);
    for op in ["CopyObject", "UploadPartCopy"] {
        assert_eq!(requests(&run, op), 0, "{op}: {run}");
    }
    assert!(requests(&run, "GetObject") >= 35);
    assert_eq!(
        proxy.count_op(Op::PutObject),
        0,
        "nothing written at the source"
    );
    // AND bytes and ETags are the source's: one PUT for a one-PUT object,
    // even above the threshold, and the source's 5 MiB parts for the other
    assert_eq!(everything(&s3, &src).await, everything(&s3, &dst).await);
    // AND headers, metadata and tags came along
    let copy = head(&s3, &dst, "docs/report final+v2.pdf").await;
    assert_eq!(copy.content_type(), Some("application/pdf"));
    assert_eq!(copy.cache_control(), Some("max-age=60"));
    assert_eq!(copy.metadata().unwrap()["owner"], "finance");
    assert_eq!(
        tags(&s3, &dst, "docs/report final+v2.pdf").await,
        vec![("class".to_owned(), "internal".to_owned())]
    );
    assert_eq!(list_multipart_uploads(&s3, &dst).await, 0);

    // WHEN it runs again
    let (code, again) = streamed_sync(&proxy, &src, &dst, &[]);
    // THEN everything compares equal: nothing read, nothing written
    assert_eq!(code, 0, "{again}");
    assert_eq!(count(&again, "skip_equal"), 35, "{again}");
    assert_eq!(
        requests(&again, "GetObject") + requests(&again, "PutObject"),
        0
    );
}

#[tokio::test]
async fn stream_forces_client_side_copies_on_one_endpoint() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "stream-flag").await;
    seed(&s3, &src).await;
    let (code, run) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &["--stream"],
    );
    assert_eq!(code, 0, "{run}");
    assert_eq!(
        requests(&run, "CopyObject") + requests(&run, "UploadPartCopy"),
        0
    );
    assert!(requests(&run, "UploadPart") >= 3, "{run}");
    assert_eq!(everything(&s3, &src).await, everything(&s3, &dst).await);
}

#[tokio::test]
async fn a_stream_through_faults_and_a_kill_converges() {
    // GIVEN a source behind random 503s and resets, and slow part reads
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "stream-kill").await;
    seed(&s3, &src).await;
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.add_rule(
        Rule::on(Op::GetObject)
            .key("big/parts.bin")
            .delay(Duration::from_secs(2)),
    );

    // WHEN a streamed sync is killed while the multipart object streams
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));
    let mut child = cli()
        .args(["sync", &source, &destination])
        .args(["--source-endpoint-url", proxy.endpoint()])
        .args(["--dest-endpoint-url", &moto().endpoint])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(proxy.wait_for(Op::GetObject, 1, Duration::from_secs(30)));
    while list_multipart_uploads(&s3, &dst).await == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(proxy.wait_idle(Duration::from_secs(10)));
    assert_eq!(
        list_multipart_uploads(&s3, &dst).await,
        1,
        "left open by the kill"
    );

    // AND it runs again under random faults on every source request
    proxy.clear_rules();
    proxy.add_random_faults(&src, 0x57_12EA);
    let (code, run) = streamed_sync(&proxy, &src, &dst, &["--retry-mode", "standard"]);

    // THEN it converges: equal, no upload left open, the faults retried
    assert_eq!(code, 0, "{run}");
    assert!(proxy.faults_injected() > 0);
    assert!(count(&run, "retries") > 0, "{run}");
    assert_eq!(everything(&s3, &src).await, everything(&s3, &dst).await);
    assert_eq!(list_multipart_uploads(&s3, &dst).await, 0);
}
