//! End-to-end behaviour of `s3-fanout sync` against a real S3 API server
//! (moto on loopback), through the real binary and the real SDK.

mod support;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, StorageClass};
use serde_json::Value;
use support::*;

const MIB: usize = 1024 * 1024;

/// The listing as (key, size, etag) without storage class, for equality.
async fn contents(client: &Client, bucket: &str, prefix: &str) -> Vec<(String, u64, String)> {
    list_all(client, bucket, prefix)
        .await
        .into_iter()
        .map(|l| (l.key[prefix.len()..].to_owned(), l.size, l.etag))
        .collect()
}

#[tokio::test]
async fn full_sync_makes_destination_equal_then_rerun_only_lists() {
    // GIVEN a source with objects under several prefixes and an empty destination
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "full").await;
    for i in 0..120u64 {
        put(
            &s3,
            &src,
            &format!("p{}/obj-{i:04}", i % 7),
            body(i, (i * 37 % 3000) as usize),
        )
        .await;
    }

    // WHEN it is synced
    let (code, summary) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &["--concurrency", "16"],
    );

    // THEN the destination equals the source, verified, exit 0
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "copied"), 120);
    assert_eq!(count(&summary, "verify_checked"), 120);
    assert_eq!(count(&summary, "verify_mismatched"), 0);
    assert_eq!(contents(&s3, &src, "").await, contents(&s3, &dst, "").await);
    assert_eq!(get_bytes(&s3, &dst, "p3/obj-0010").await, body(10, 370));

    // WHEN it runs again at once
    let (code, summary) = sync_json(&format!("s3://{src}"), &format!("s3://{dst}"), &[]);

    // THEN nothing is copied and the only requests are listings
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "copied") + count(&summary, "updated"), 0);
    assert_eq!(count(&summary, "skip_equal"), 120);
    let requests = summary["requests"].as_object().unwrap();
    assert_eq!(
        requests.keys().collect::<Vec<_>>(),
        vec!["ListObjectsV2"],
        "{requests:?}"
    );
    // One page per side and nothing else: no separate preflight, and with
    // nothing written no second listing to verify what was just compared.
    assert_eq!(requests["ListObjectsV2"], 2, "{requests:?}");
    assert_eq!(count(&summary, "verify_checked"), 120);
}

/// Keys that tools commonly mangle: each must arrive as itself.
fn awkward_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "unicode/ü/ñ/日本語.txt",
        "with space/a b.txt",
        "plus+sign.txt",
        "a+b",
        "a b",
        "percent%41.txt",
        "%2B literal",
        "/leading-slash.txt",
        "a//b",
        "trailing-space ",
        "tab\tkey",
        "quote\"and'apos",
        "emoji/🦀.bin",
        "xml<&>chars",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // S3's maximum: 1,024 bytes of UTF-8 (ü is two bytes).
    let long = format!("long/{}", "ü".repeat(509)) + "x";
    assert_eq!(long.len(), 1024);
    keys.push(long);
    keys
}

#[tokio::test]
async fn awkward_keys_round_trip_byte_for_byte() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "keys").await;
    let keys = awkward_keys();
    for (i, key) in keys.iter().enumerate() {
        put(&s3, &src, key, body(i as u64, 10 + i)).await;
    }

    let (code, summary) = sync_json(&format!("s3://{src}"), &format!("s3://{dst}"), &[]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "copied"), keys.len() as u64);

    let mut expected: Vec<String> = keys.clone();
    expected.sort();
    let got: Vec<String> = list_all(&s3, &dst, "")
        .await
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(
        got, expected,
        "distinct keys must stay distinct and unchanged"
    );
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            get_bytes(&s3, &dst, key).await,
            body(i as u64, 10 + i),
            "content of {key:?}"
        );
    }

    // And a re-run agrees that they are all there.
    let (code, summary) = sync_json(&format!("s3://{src}"), &format!("s3://{dst}"), &[]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "skip_equal"), keys.len() as u64);
}

#[tokio::test]
async fn sync_into_a_destination_prefix_maps_relative_keys() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "pfx").await;
    put(&s3, &src, "data/x/1", body(1, 5)).await;
    put(&s3, &src, "data/y", body(2, 5)).await;
    put(&s3, &src, "data2/not-included", body(3, 5)).await;

    let (code, summary) = sync_json(
        &format!("s3://{src}/data"),
        &format!("s3://{dst}/backup/2024"),
        &[],
    );

    assert_eq!(code, 0, "{summary}");
    let got: Vec<String> = list_all(&s3, &dst, "")
        .await
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(
        got,
        vec!["backup/2024/x/1", "backup/2024/y"],
        "data2/ is not under data/"
    );
}

#[tokio::test]
async fn sizes_from_zero_to_above_the_threshold_and_multipart_copies_keep_their_etag() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "size").await;
    let plain_sizes = [0, 1, 5 * MIB - 1, 5 * MIB, 5 * MIB + 1, 11 * MIB];
    for size in plain_sizes {
        put(&s3, &src, &format!("plain/{size}"), body(size as u64, size)).await;
    }
    // Sources uploaded in parts: 8 MiB parts (the layout aws-cli uses), and
    // 5 MiB parts, one of them below the threshold.
    let mp_8 = put_multipart(&s3, &src, "mp/8mib-parts", 20 * MIB + 123, 8 * MIB).await;
    let mp_5 = put_multipart(&s3, &src, "mp/5mib-parts", 12 * MIB, 5 * MIB).await;
    let mp_small = put_multipart(&s3, &src, "mp/below-threshold", 5 * MIB + 10, 5 * MIB).await;
    // One part: a `-1` ETag, which a single CopyObject would turn into a
    // plain MD5 that can never be compared again.
    let mp_one = put_multipart(&s3, &src, "mp/one-part", 100_000, 5 * MIB).await;

    let (code, summary) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &["--multipart-threshold", "5MiB", "--part-size", "5MiB"],
    );

    // Plain sources above the threshold get a new multipart layout, so their
    // ETag changes shape: verified by size only, which the run reports.
    assert!(code == 0 || code == 3, "{summary}");
    assert_eq!(count(&summary, "failed"), 0, "{summary}");
    assert_eq!(count(&summary, "verify_mismatched"), 0);
    for size in plain_sizes {
        let key = format!("plain/{size}");
        assert_eq!(
            get_bytes(&s3, &dst, &key).await,
            body(size as u64, size),
            "{key}"
        );
    }
    let dst_listing = list_all(&s3, &dst, "mp/").await;
    let etag_of = |key: &str| {
        dst_listing
            .iter()
            .find(|l| l.key == key)
            .map(|l| l.etag.clone())
            .unwrap()
    };
    assert_eq!(etag_of("mp/8mib-parts"), mp_8, "8 MiB layout mirrored");
    assert_eq!(etag_of("mp/5mib-parts"), mp_5, "5 MiB layout mirrored");
    assert_eq!(
        etag_of("mp/below-threshold"),
        mp_small,
        "multipart source below the threshold mirrored too"
    );
    assert_eq!(
        etag_of("mp/one-part"),
        mp_one,
        "a one-part upload keeps its -1 ETag"
    );
    assert_eq!(
        get_bytes(&s3, &dst, "mp/8mib-parts").await,
        multipart_body("mp/8mib-parts", 20 * MIB + 123)
    );
    assert_eq!(
        list_multipart_uploads(&s3, &dst).await,
        0,
        "no orphaned multipart uploads"
    );

    // The mirrored copies are proven equal next time, not "unverified".
    let (_, again) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &["--multipart-threshold", "5MiB", "--part-size", "5MiB"],
    );
    assert_eq!(
        count(&again, "copied") + count(&again, "updated"),
        0,
        "{again}"
    );
    // The plain sources above the threshold (5MiB+1, 11MiB) got a new
    // layout, so their ETags differ; each copy proved its pair (it was
    // conditional on the source's ETag), and the ledger says so.
    assert_eq!(count(&again, "skip_unverified"), 0, "{again}");
    assert_eq!(
        count(&again, "proven_by_ledger"),
        2,
        "the two copies with a new layout are proven by the ledger: {again}"
    );
    assert_eq!(count(&again, "skip_equal"), 10, "{again}");
}

/// A multipart upload with content headers, metadata, tags and storage class.
async fn put_multipart_with_attributes(s3: &Client, bucket: &str, key: &str) -> String {
    let data = multipart_body(key, 11 * MIB);
    let upload = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type("application/x-custom")
        .cache_control("max-age=60")
        .metadata("owner", "team-a")
        .tagging("class=gold&note=a%20b")
        .storage_class(StorageClass::StandardIa)
        .send()
        .await
        .unwrap();
    let id = upload.upload_id().unwrap();
    let mut parts = Vec::new();
    for (i, chunk) in data.chunks(5 * MIB).enumerate() {
        let n = i as i32 + 1;
        let out = s3
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await
            .unwrap();
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .set_e_tag(out.e_tag)
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap()
        .e_tag
        .unwrap()
}

#[tokio::test]
async fn metadata_content_type_tags_and_storage_class_are_preserved() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "attr").await;
    put_with(
        &s3,
        &src,
        "single",
        body(7, 1000),
        PutExtras {
            content_type: Some("text/csv".into()),
            metadata: vec![("owner".into(), "team-a".into())],
            tags: vec![
                ("class".into(), "gold".into()),
                ("note".into(), "a b".into()),
            ],
            storage_class: Some("STANDARD_IA".into()),
            cache_control: Some("max-age=60".into()),
            content_disposition: Some("attachment".into()),
        },
    )
    .await;
    put_multipart_with_attributes(&s3, &src, "multi").await;
    put_with(
        &s3,
        &src,
        "glacier-ir",
        body(8, 10),
        PutExtras {
            storage_class: Some("GLACIER_IR".into()),
            ..Default::default()
        },
    )
    .await;

    let (code, summary) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &["--multipart-threshold", "5MiB"],
    );
    assert_eq!(code, 0, "{summary}");

    for key in ["single", "multi"] {
        let head = head(&s3, &dst, key).await;
        let expected_type = if key == "single" {
            "text/csv"
        } else {
            "application/x-custom"
        };
        assert_eq!(head.content_type(), Some(expected_type), "{key}");
        assert_eq!(head.cache_control(), Some("max-age=60"), "{key}");
        assert_eq!(
            head.metadata().unwrap().get("owner").map(String::as_str),
            Some("team-a"),
            "{key}"
        );
        assert_eq!(
            tags(&s3, &dst, key).await,
            vec![
                ("class".to_string(), "gold".to_string()),
                ("note".to_string(), "a b".to_string())
            ],
            "{key}"
        );
    }
    assert_eq!(
        head(&s3, &dst, "single").await.content_disposition(),
        Some("attachment")
    );
    let classes: Vec<(String, Option<String>)> = list_all(&s3, &dst, "")
        .await
        .into_iter()
        .map(|l| (l.key, l.storage_class))
        .collect();
    assert_eq!(
        classes,
        vec![
            ("glacier-ir".to_string(), Some("GLACIER_IR".to_string())),
            ("multi".to_string(), Some("STANDARD_IA".to_string())),
            ("single".to_string(), Some("STANDARD_IA".to_string())),
        ],
        "the source's storage class, not a silent STANDARD"
    );
}

#[tokio::test]
async fn storage_class_override_applies_to_every_copy() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "sc").await;
    put(&s3, &src, "a", body(1, 10)).await;
    put_multipart(&s3, &src, "b", 6 * MIB, 5 * MIB).await;

    let (code, summary) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &["--storage-class", "GLACIER_IR"],
    );
    assert_eq!(code, 0, "{summary}");
    for listed in list_all(&s3, &dst, "").await {
        assert_eq!(
            listed.storage_class.as_deref(),
            Some("GLACIER_IR"),
            "{}",
            listed.key
        );
    }
}

#[tokio::test]
async fn report_is_written_to_an_s3_prefix() {
    let s3 = s3().await;
    let (src, dst, reports) = (
        unique_bucket("rep-src"),
        unique_bucket("rep-dst"),
        unique_bucket("rep-out"),
    );
    for bucket in [&src, &dst, &reports] {
        create_bucket(&s3, bucket).await;
    }
    put(&s3, &src, "a", body(1, 10)).await;
    // A multipart source whose copy was written later in one PUT: the ETags
    // cannot be compared, which gives the report one warning row.
    put_multipart(&s3, &src, "mp", 6 * MIB, 5 * MIB).await;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    put(&s3, &dst, "mp", multipart_body("mp", 6 * MIB)).await;

    let (code, summary) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &["--report", &format!("s3://{reports}/nightly")],
    );

    assert_eq!(code, 3, "{summary}");
    let run_id = summary["run_id"].as_str().unwrap();
    assert_eq!(
        summary["summary_json"],
        format!("s3://{reports}/nightly/{run_id}/summary.json")
    );
    let written: Value = serde_json::from_slice(
        &get_bytes(&s3, &reports, &format!("nightly/{run_id}/summary.json")).await,
    )
    .unwrap();
    assert_eq!(written["counts"]["copied"], 1);
    assert_eq!(written["status"], "warnings");
    let csv = String::from_utf8(
        get_bytes(&s3, &reports, &format!("nightly/{run_id}/failures.csv")).await,
    )
    .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert_eq!(
        lines[0],
        "Bucket,Key,VersionId,TaskStatus,ErrorCode,HTTPStatusCode,ResultMessage"
    );
    assert!(
        lines[1].starts_with(&format!("{src},mp,,warning,Unverified,,")),
        "{csv}"
    );
}

#[tokio::test]
async fn sse_option_encrypts_copies() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "sse").await;
    put(&s3, &src, "a", body(1, 10)).await;
    put_multipart(&s3, &src, "b", 6 * MIB, 5 * MIB).await;

    let (code, summary) = sync_json(
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &["--sse", "AES256"],
    );

    assert_eq!(code, 0, "{summary}");
    for key in ["a", "b"] {
        assert_eq!(
            head(&s3, &dst, key)
                .await
                .server_side_encryption()
                .map(|s| s.as_str()),
            Some("AES256"),
            "{key}"
        );
    }
}
