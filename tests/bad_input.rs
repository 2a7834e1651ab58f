//! Bad input ends before any write, with a clear message and exit code 2.

mod support;

use support::*;

fn sync(args: &[&str]) -> CliOutput {
    let endpoint = moto().endpoint.clone();
    let mut all = vec!["sync"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--endpoint-url", &endpoint, "--no-progress"]);
    run_cli(&all)
}

#[tokio::test]
async fn malformed_urls_are_refused_with_exit_2() {
    let s3 = s3().await;
    let dst = unique_bucket("badurl-dst");
    create_bucket(&s3, &dst).await;
    for (src, why) in [
        ("my-bucket/key", "expected s3://BUCKET"),
        ("http://my-bucket", "expected s3://BUCKET"),
        ("s3://", "bucket name is empty"),
        ("s3://a", "3 to 255 characters"),
        ("s3://has space/x", "contains ' '"),
    ] {
        let out = sync(&[src, &format!("s3://{dst}")]);
        assert_eq!(out.status, 2, "{src}: {}", out.stderr);
        assert!(out.stderr.contains(why), "{src}: {}", out.stderr);
    }
    assert!(list_all(&s3, &dst, "").await.is_empty());
}

#[tokio::test]
async fn a_missing_bucket_is_named_and_nothing_is_written() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "nobkt").await;
    put(&s3, &src, "a", body(1, 3)).await;

    let out = sync(&["s3://does-not-exist-bucket", &format!("s3://{dst}")]);
    assert_eq!(out.status, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the source bucket \"does-not-exist-bucket\" does not exist"),
        "{}",
        out.stderr
    );

    let out = sync(&[&format!("s3://{src}"), "s3://no-such-destination"]);
    assert_eq!(out.status, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the destination bucket \"no-such-destination\" does not exist"),
        "{}",
        out.stderr
    );
    assert!(list_all(&s3, &dst, "").await.is_empty());
}

#[tokio::test]
async fn overlapping_ranges_are_refused_before_any_request() {
    let s3 = s3().await;
    let bucket = unique_bucket("overlap");
    create_bucket(&s3, &bucket).await;
    put(&s3, &bucket, "data/a", body(1, 3)).await;

    for (src, dst) in [
        ("data", "data/backup"),
        ("data/backup", "data"),
        ("", "copy"),
    ] {
        let out = sync(&[
            &format!("s3://{bucket}/{src}"),
            &format!("s3://{bucket}/{dst}"),
        ]);
        assert_eq!(out.status, 2, "{src} -> {dst}: {}", out.stderr);
        assert!(out.stderr.contains("overlaps"), "{}", out.stderr);
    }
    let keys: Vec<String> = list_all(&s3, &bucket, "")
        .await
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(keys, vec!["data/a"]);
}

#[test]
fn conflicting_and_invalid_options_exit_2() {
    for (args, why) in [
        (
            vec!["s3://aaa", "s3://bbb", "--max-delete", "3"],
            "--max-delete only makes sense with --delete",
        ),
        (
            vec!["s3://aaa", "s3://bbb", "--multipart-threshold", "1KiB"],
            "--multipart-threshold",
        ),
        (
            vec!["s3://aaa", "s3://bbb", "--storage-class", "COLD"],
            "--storage-class",
        ),
        (
            vec!["s3://aaa", "s3://bbb", "--modified-since", "yesterday"],
            "--modified-since",
        ),
        (vec!["s3://aaa", "s3://bbb", "--include", "a["], "--include"),
        (
            vec!["s3://aaa", "s3://bbb", "--mode", "checksum"],
            "invalid value",
        ),
    ] {
        let out = sync(&args);
        assert_eq!(out.status, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(why), "{args:?}: {}", out.stderr);
    }
}
