//! Bytes damaged on their way are refused, not stored: uploads from a
//! directory carry a CRC64NVME of the file's bytes (each part its own, the
//! completion the whole file's), which S3 checks before it stores anything
//! ("Checking object integrity in Amazon S3",
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html>);
//! restores GET in checksum mode, so the client checks what it receives.
//!
//! The buckets have SSE-KMS ETags (emulated by the fault proxy), so no MD5
//! can catch the damage: only the checksums can. The proxy flips one bit
//! in flight and leaves lengths and headers alone.

mod support;

use aws_sdk_s3::types::{ChecksumMode, ChecksumType};
use s3_fanout::model::checksum::Crc64Nvme;
use support::fault_proxy::{FaultProxy, Op, Rule};
use support::*;

const MIB: usize = 1024 * 1024;

/// A proxy with S3's checksums and KMS ETags for `bucket`.
fn kms_proxy(bucket: &str) -> FaultProxy {
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.s3_checksums();
    proxy.kms_etags(bucket);
    proxy
}

/// GIVEN a directory with a small file and a multipart-sized one, and a KMS
/// destination
/// WHEN they are uploaded, one part's bytes damaged on the way
/// THEN the damaged part is refused (BadDigest), the object that lands is
/// the file's bytes, and both objects carry the file's CRC64NVME as a
/// full-object checksum, the one later comparisons use
#[tokio::test(flavor = "multi_thread")]
async fn uploads_carry_crc64nvme_and_a_damaged_part_never_lands() {
    let s3 = s3().await;
    let (_, dst) = bucket_pair(&s3, "integrity-up").await;
    let dir = tempfile::tempdir().unwrap();
    let small = body(1, 300_000);
    let big = body(2, 11 * MIB);
    std::fs::write(dir.path().join("small.bin"), &small).unwrap();
    std::fs::write(dir.path().join("big.bin"), &big).unwrap();
    let proxy = kms_proxy(&dst);
    proxy.add_rule(
        Rule::on(Op::UploadPart)
            .key("big.bin")
            .part(2)
            .times(1)
            .corrupt(),
    );

    let out = run_cli(&[
        "sync",
        dir.path().to_str().unwrap(),
        &format!("s3://{dst}"),
        "--endpoint-url",
        proxy.endpoint(),
        "--multipart-threshold",
        "5MiB",
        "--part-size",
        "5MiB",
        "--json",
    ]);
    proxy.assert_no_errors();
    let refused = proxy
        .requests()
        .iter()
        .filter(|r| r.op == Op::UploadPart && r.status == Some(400))
        .count();
    assert_eq!(refused, 1, "the damaged part was refused by its checksum");
    // The refused part is retried (or the object reported failed): never
    // stored damaged.
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(get_bytes(&s3, &dst, "big.bin").await, big);
    assert_eq!(get_bytes(&s3, &dst, "small.bin").await, small);

    for (key, bytes) in [("small.bin", &small), ("big.bin", &big)] {
        assert_full_object_crc64nvme(&proxy, &dst, key, bytes).await;
    }
}

/// The object's stored checksum, as S3 answers HEAD in checksum mode
/// through `proxy`, is a full-object CRC64NVME of `bytes`.
async fn assert_full_object_crc64nvme(proxy: &FaultProxy, bucket: &str, key: &str, bytes: &[u8]) {
    let head = s3_at(proxy.endpoint())
        .await
        .head_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.checksum_crc64_nvme(),
        Some(Crc64Nvme::of(bytes).as_str()),
        "{key}"
    );
    assert_eq!(
        head.checksum_type(),
        Some(&ChecksumType::FullObject),
        "{key}"
    );
}

/// GIVEN a KMS source with one object whose bytes are damaged on their way
/// to a restore
/// WHEN it is restored to a directory
/// THEN the client's checksum check refuses the damaged bytes: the file
/// that lands is the object's, whether the retry fetched it again or the
/// key is reported failed
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_refuses_bytes_damaged_on_the_way() {
    let s3 = s3().await;
    let (src, _) = bucket_pair(&s3, "integrity-down").await;
    let bytes = body(3, 200_000);
    put(&s3, &src, "doc.bin", bytes.clone()).await;
    let proxy = kms_proxy(&src);
    proxy.add_rule(Rule::on(Op::GetObject).key("doc.bin").times(1).corrupt());
    let dir = tempfile::tempdir().unwrap();

    let out = run_cli(&[
        "sync",
        &format!("s3://{src}"),
        dir.path().to_str().unwrap(),
        "--endpoint-url",
        proxy.endpoint(),
        "--json",
    ]);
    proxy.assert_no_errors();
    assert_eq!(proxy.faults_injected(), 1);
    let landed = std::fs::read(dir.path().join("doc.bin")).ok();
    match out.status {
        0 => assert_eq!(landed.as_deref(), Some(&bytes[..]), "fetched again"),
        _ => {
            assert!(
                out.stdout.contains("doc.bin") || out.stderr.contains("doc.bin"),
                "{}\n{}",
                out.stdout,
                out.stderr
            );
            assert_eq!(landed, None, "a damaged file was left");
        }
    }
}

/// The requests a run made, by operation.
fn operations(proxy: &FaultProxy) -> Vec<String> {
    let mut ops: Vec<String> = proxy
        .requests()
        .iter()
        .map(|r| format!("{:?}", r.op))
        .collect();
    ops.sort();
    ops.dedup();
    ops
}

/// `sync` through `proxy` with the ledger at `state`: exit code and summary.
fn sync(proxy: &FaultProxy, from: &str, to: &str, state: &str) -> (i32, serde_json::Value) {
    proxy.clear_log();
    let out = run_cli(&[
        "sync",
        from,
        to,
        "--endpoint-url",
        proxy.endpoint(),
        "--state",
        state,
        "--json",
    ]);
    proxy.assert_no_errors();
    let summary = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not a summary ({e}): {}\n{}", out.stdout, out.stderr));
    (out.status, summary)
}

/// GIVEN a directory and a KMS bucket, whose ETags are never a file's MD5
/// WHEN the directory is uploaded, then restored to another directory,
/// each run twice
/// THEN each first run verifies by comparing each file's CRC64NVME with
/// the object's, and each second run copies nothing and makes no HEAD:
/// the ledger of proven pairs holds every pair
#[tokio::test(flavor = "multi_thread")]
async fn a_directory_and_a_kms_bucket_verify_by_checksums_and_rerun_listing_only() {
    let s3 = s3().await;
    let (_, dst) = bucket_pair(&s3, "integrity-dir").await;
    let up = tempfile::tempdir().unwrap();
    let files = 20u64;
    for i in 0..files {
        std::fs::write(
            up.path().join(format!("f{i:02}.txt")),
            body(i, 100 + i as usize * 7),
        )
        .unwrap();
    }
    std::fs::write(up.path().join("big.bin"), body(99, 11 * MIB)).unwrap();
    let proxy = kms_proxy(&dst);
    let state = tempfile::tempdir().unwrap();
    let bucket = format!("s3://{dst}");

    for (from, to, what) in [
        (
            up.path().to_str().unwrap().to_owned(),
            bucket.clone(),
            "upload",
        ),
        (
            bucket.clone(),
            state.path().join("restored").to_str().unwrap().to_owned(),
            "restore",
        ),
    ] {
        let ledger = state.path().join(format!("ledger-{what}"));
        let ledger = ledger.to_str().unwrap();
        let (code, first) = sync(&proxy, &from, &to, ledger);
        assert_eq!(code, 0, "{what}: {first}");
        assert_eq!(count(&first, "copied"), files + 1, "{what}");
        assert_eq!(count(&first, "verify_mismatched"), 0, "{what}");
        assert_eq!(
            count(&first, "proven_by_checksum"),
            files + 1,
            "{what}: {first}"
        );

        let (code, again) = sync(&proxy, &from, &to, ledger);
        assert_eq!(code, 0, "{what}: {again}");
        assert_eq!(
            count(&again, "copied") + count(&again, "updated"),
            0,
            "{what}: {again}"
        );
        assert_eq!(
            count(&again, "proven_by_ledger"),
            files + 1,
            "{what}: {again}"
        );
        assert_eq!(
            operations(&proxy),
            ["ListObjectsV2"],
            "{what}: listings only"
        );
    }
    assert_eq!(
        std::fs::read(state.path().join("restored/big.bin")).unwrap(),
        body(99, 11 * MIB)
    );
}

/// Objects a stream must carry: one PUT, and 5 MiB parts.
async fn seed_stream_source(s3: &aws_sdk_s3::Client, bucket: &str) -> [(&'static str, Vec<u8>); 2] {
    let single = body(4, 300_000);
    put(s3, bucket, "one.bin", single.clone()).await;
    put_multipart(s3, bucket, "parts.bin", 12 * MIB, 5 * MIB).await;
    let parts = get_bytes(s3, bucket, "parts.bin").await;
    [("one.bin", single), ("parts.bin", parts)]
}

/// A streamed sync from behind `from` to behind `to`: two endpoints, so
/// every copy streams through this machine.
fn stream_sync(from: &FaultProxy, to: &FaultProxy, src: &str, dst: &str) -> support::CliOutput {
    from.clear_log();
    to.clear_log();
    let out = run_cli(&[
        "sync",
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        "--source-endpoint-url",
        from.endpoint(),
        "--dest-endpoint-url",
        to.endpoint(),
        "--json",
    ]);
    from.assert_no_errors();
    to.assert_no_errors();
    out
}

/// The writes of object bytes `proxy` saw: PutObject and UploadPart.
fn writes(proxy: &FaultProxy) -> Vec<support::fault_proxy::Recorded> {
    proxy
        .requests()
        .into_iter()
        .filter(|r| matches!(r.op, Op::PutObject | Op::UploadPart))
        .collect()
}

/// GIVEN a source and a KMS destination on two endpoints, so copies stream
/// through this machine, the source once with S3's default CRC64NVME
/// checksums and once with none (objects written before December 2024)
/// WHEN each is synced, one part's bytes damaged on the way
/// THEN every PUT and UploadPart carried a checksum of its bytes: the
/// source's value as a header when it has one, else a CRC64NVME the SDK
/// computed as the bytes went, in the body's trailer; the damaged part was
/// refused and streamed again; every copy has the source's bytes and a
/// full-object CRC64NVME; no upload is left open; a re-run copies nothing
#[tokio::test(flavor = "multi_thread")]
async fn streams_carry_checksums_and_a_damaged_part_never_lands() {
    for source_checksums in [true, false] {
        let s3 = s3().await;
        let (src, dst) = bucket_pair(&s3, "integrity-stream").await;
        let objects = seed_stream_source(&s3, &src).await;
        let from = FaultProxy::start(&moto().endpoint);
        from.s3_checksums();
        if !source_checksums {
            from.no_default_checksums(&src);
        }
        let to = kms_proxy(&dst);
        to.add_rule(
            Rule::on(Op::UploadPart)
                .key("parts.bin")
                .part(2)
                .times(1)
                .corrupt(),
        );

        let out = stream_sync(&from, &to, &src, &dst);
        assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
        let run: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(count(&run, "copied"), 2, "{run}");

        let writes = writes(&to);
        for write in &writes {
            assert!(write.checksum.is_some(), "{write:?} carried no checksum");
        }
        let put = writes.iter().find(|w| w.op == Op::PutObject).unwrap();
        assert_eq!(put.trailer, !source_checksums, "{put:?}");
        assert_eq!(
            put.checksum.as_deref(),
            Some("x-amz-checksum-crc64nvme"),
            "the source's CRC64NVME, or one computed on the way"
        );
        let parts: Vec<_> = writes.iter().filter(|w| w.op == Op::UploadPart).collect();
        assert_eq!(parts.len(), 4, "3 parts, one sent twice: {parts:?}");
        assert!(parts.iter().all(|p| p.trailer), "{parts:?}");
        let refused: Vec<_> = parts.iter().filter(|p| p.status == Some(400)).collect();
        assert_eq!(refused.len(), 1, "the damaged part was refused: {parts:?}");
        assert_eq!(refused[0].part_number, Some(2));

        for (key, bytes) in &objects {
            assert_eq!(&get_bytes(&s3, &dst, key).await, bytes, "{key}");
            assert_full_object_crc64nvme(&to, &dst, key, bytes).await;
        }
        assert_eq!(list_multipart_uploads(&s3, &dst).await, 0);

        let again = stream_sync(&from, &to, &src, &dst);
        assert_eq!(again.status, 0, "{}\n{}", again.stdout, again.stderr);
        let run: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
        assert_eq!(count(&run, "copied") + count(&run, "updated"), 0, "{run}");
    }
}

/// GIVEN a KMS destination whose server refuses checksums in a body's
/// trailer (501 NotImplemented, as S3-compatible servers without trailer
/// support answer), and a source without checksums
/// WHEN a streamed sync copies a one-PUT object and a multipart one
/// THEN each refused copy is made again without a checksum, the refusal
/// is reported once as a warning, and both objects arrive whole
#[tokio::test(flavor = "multi_thread")]
async fn a_destination_refusing_trailers_gets_its_streams_without_them() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "integrity-notrailer").await;
    let objects = seed_stream_source(&s3, &src).await;
    let from = FaultProxy::start(&moto().endpoint);
    from.s3_checksums();
    from.no_default_checksums(&src);
    let to = kms_proxy(&dst);
    to.refuse_trailers();

    let out = stream_sync(&from, &to, &src, &dst);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.stderr.matches("refuses checksums").count(),
        1,
        "{}",
        out.stderr
    );
    let writes = writes(&to);
    let refused: Vec<_> = writes.iter().filter(|w| w.status == Some(501)).collect();
    assert!(!refused.is_empty(), "{writes:?}");
    assert!(refused.iter().all(|w| w.trailer), "{refused:?}");
    let stored: Vec<_> = writes.iter().filter(|w| w.status == Some(200)).collect();
    assert!(stored.iter().all(|w| w.checksum.is_none()), "{stored:?}");
    for (key, bytes) in &objects {
        assert_eq!(&get_bytes(&s3, &dst, key).await, bytes, "{key}");
    }
    assert_eq!(list_multipart_uploads(&s3, &dst).await, 0);
}
