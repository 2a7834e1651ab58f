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

    let via = s3_at(proxy.endpoint()).await;
    for (key, bytes) in [("small.bin", &small), ("big.bin", &big)] {
        let head = via
            .head_object()
            .bucket(&dst)
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
