//! Tests of the test bed itself: if these fail, every other integration test
//! would fail for reasons that have nothing to do with s3-fanout.

mod support;

use futures::StreamExt;
use support::*;

const MIB: usize = 1024 * 1024;

#[test]
fn moto_serves_on_loopback_only() {
    let moto = moto();
    assert_eq!(moto.endpoint, format!("http://127.0.0.1:{}", moto.port));
}

#[test]
fn unique_bucket_names_are_distinct_and_valid_s3_names() {
    let names = [
        unique_bucket("Copy_Tests"),
        unique_bucket("copy tests"),
        unique_bucket("--"),
        unique_bucket(&"x".repeat(200)),
    ];
    for name in &names {
        assert!((3..=63).contains(&name.len()), "{name}: bad length");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}: bad character"
        );
        assert!(
            !name.starts_with('-') && !name.ends_with('-'),
            "{name}: bad edge"
        );
    }
    let mut sorted = names.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "{names:?}");
}

#[test]
fn body_is_deterministic_and_seed_dependent() {
    assert_eq!(body(7, 1000), body(7, 1000));
    assert_ne!(body(7, 1000), body(8, 1000));
    // A shorter body is a prefix of a longer one with the same seed.
    assert_eq!(body(7, 13)[..], body(7, 1000)[..13]);
}

#[test]
fn cli_environment_hides_developer_aws_config() {
    let command = cli();
    let envs: Vec<(String, Option<String>)> = command
        .get_envs()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.map(|v| v.to_string_lossy().into_owned()),
            )
        })
        .collect();
    let value = |name: &str| {
        envs.iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    };
    assert_eq!(value("AWS_ACCESS_KEY_ID").as_deref(), Some("testing"));
    assert_eq!(value("AWS_CONFIG_FILE").as_deref(), Some("/dev/null"));
    assert_eq!(
        value("AWS_SHARED_CREDENTIALS_FILE").as_deref(),
        Some("/dev/null")
    );
    assert_eq!(value("NO_COLOR").as_deref(), Some("1"));
    assert!(
        envs.iter().any(|(k, v)| k == "AWS_PROFILE" && v.is_none()),
        "AWS_PROFILE not removed"
    );
}

#[tokio::test]
async fn put_with_keeps_metadata_tags_and_storage_class() {
    let s3 = s3().await;
    let bucket = unique_bucket("harness-attrs");
    create_bucket(&s3, &bucket).await;
    let data = body(1, 1000);

    let etag = put_with(
        &s3,
        &bucket,
        "dir/a b+c.txt",
        data.clone(),
        PutExtras {
            content_type: Some("text/plain".into()),
            metadata: vec![("owner".into(), "team-a".into())],
            tags: vec![
                ("project".into(), "fan out".into()),
                ("env".into(), "a+b=c/d:e".into()),
            ],
            storage_class: Some("STANDARD_IA".into()),
            cache_control: Some("max-age=60".into()),
            content_disposition: Some("attachment".into()),
        },
    )
    .await;

    let head = head(&s3, &bucket, "dir/a b+c.txt").await;
    assert_eq!(head.e_tag(), Some(etag.as_str()));
    assert_eq!(head.content_type(), Some("text/plain"));
    assert_eq!(head.cache_control(), Some("max-age=60"));
    assert_eq!(head.content_disposition(), Some("attachment"));
    assert_eq!(
        head.storage_class().map(|c| c.as_str()),
        Some("STANDARD_IA")
    );
    assert_eq!(
        head.metadata()
            .and_then(|m| m.get("owner"))
            .map(String::as_str),
        Some("team-a")
    );
    assert_eq!(
        tags(&s3, &bucket, "dir/a b+c.txt").await,
        vec![
            ("env".into(), "a+b=c/d:e".into()),
            ("project".into(), "fan out".into())
        ]
    );
    assert_eq!(get_bytes(&s3, &bucket, "dir/a b+c.txt").await, data);
    assert_eq!(
        list_all(&s3, &bucket, "dir/").await,
        vec![Listed {
            key: "dir/a b+c.txt".into(),
            size: 1000,
            etag,
            storage_class: Some("STANDARD_IA".into()),
        }]
    );
}

#[tokio::test]
async fn put_multipart_of_12_mib_in_5_mib_parts_has_a_3_part_etag() {
    let s3 = s3().await;
    let bucket = unique_bucket("harness-multipart");
    create_bucket(&s3, &bucket).await;
    put(&s3, &bucket, "small", b"hello".to_vec()).await;

    let etag = put_multipart(&s3, &bucket, "big.bin", 12 * MIB, 5 * MIB).await;

    assert!(etag.trim_matches('"').ends_with("-3"), "{etag}");
    let listed = list_all(&s3, &bucket, "").await;
    let keys: Vec<&str> = listed.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(keys, ["big.bin", "small"], "listing order");
    assert_eq!(listed[0].size, 12 * MIB as u64);
    assert_eq!(listed[0].etag, etag);
    assert_eq!(
        get_bytes(&s3, &bucket, "big.bin").await,
        multipart_body("big.bin", 12 * MIB)
    );
    assert_eq!(list_multipart_uploads(&s3, &bucket).await, 0);
}

#[tokio::test]
async fn list_multipart_uploads_counts_an_unfinished_upload() {
    let s3 = s3().await;
    let bucket = unique_bucket("harness-pending");
    create_bucket(&s3, &bucket).await;

    s3.create_multipart_upload()
        .bucket(&bucket)
        .key("pending")
        .send()
        .await
        .unwrap();

    assert_eq!(list_multipart_uploads(&s3, &bucket).await, 1);
}

#[tokio::test]
async fn list_all_follows_pages_past_1000_keys() {
    let s3 = s3().await;
    let bucket = unique_bucket("harness-pages");
    create_bucket(&s3, &bucket).await;
    // One more than the 1,000-key page, so a second request is needed.
    // 16 at a time: enough to be quick, few enough not to flood moto.
    futures::stream::iter(0..1001)
        .for_each_concurrent(16, |i| {
            let (s3, bucket) = (&s3, &bucket);
            async move {
                put(s3, bucket, &format!("k/{i:04}"), vec![]).await;
            }
        })
        .await;

    let listed = list_all(&s3, &bucket, "k/").await;

    assert_eq!(listed.len(), 1001);
    assert_eq!(listed.first().map(|l| l.key.as_str()), Some("k/0000"));
    assert_eq!(listed.last().map(|l| l.key.as_str()), Some("k/1000"));
}

#[test]
fn run_cli_captures_exit_code_and_output() {
    let help = run_cli(&["--help"]);
    help.assert_success();
    assert!(help.stdout.contains("Usage"), "{help:?}");

    let bad = run_cli(&["--no-such-flag"]);
    assert_ne!(bad.status, 0);
    assert!(bad.stderr.contains("--no-such-flag"), "{bad:?}");
}
