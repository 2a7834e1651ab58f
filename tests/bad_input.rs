//! Bad input ends before any write, with a clear message and exit code 2.

mod support;

use support::fault_proxy::{ACCESS_DENIED_XML, FaultProxy, Op, Rule};
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
        // Without s3:// it is a directory to upload, which must exist:
        // a typo never uploads (or with --delete, empties) anything.
        ("my-bucket/key", "the source directory"),
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
    // Two directories are rsync's job; a file is not a directory.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let (dir, file) = (dir.path().display().to_string(), file.display().to_string());
    for (src, dst, why) in [
        (&dir, &dir, "both local directories"),
        (&file, &format!("s3://{dst}"), "is not a directory"),
        (&format!("s3://{dst}"), &file, "is not a directory"),
    ] {
        let out = sync(&[src, dst]);
        assert_eq!(out.status, 2, "{src} {dst}: {}", out.stderr);
        assert!(out.stderr.contains(why), "{src} {dst}: {}", out.stderr);
    }
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

/// The requests a run sent, but for listings: what a preflight failure must
/// leave at zero.
fn writes(proxy: &FaultProxy) -> Vec<(Op, String)> {
    proxy
        .requests()
        .into_iter()
        .filter(|r| r.op != Op::ListObjectsV2)
        .map(|r| (r.op, r.key.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn unknown_flags_are_named_and_nothing_is_written() {
    // GIVEN a source with an object and an empty destination
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "badflag").await;
    put(&s3, &src, "a", body(1, 3)).await;
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));

    // WHEN a flag that does not exist comes before the URLs or after them,
    // or is a misspelling (a typo of --delete must not become a run
    // without deletions)
    for (args, said) in [
        (
            vec!["--no-such-flag", &source, &destination],
            "unexpected argument '--no-such-flag'",
        ),
        (
            vec![&source, &destination, "--no-such-flag"],
            "unexpected argument '--no-such-flag'",
        ),
        (
            vec![&source, &destination, "--delte"],
            "a similar argument exists: '--delete'",
        ),
    ] {
        let out = sync(&args);

        // THEN the run is refused as bad usage, naming the flag (and, for
        // a misspelling, the flag that was meant)
        assert_eq!(out.status, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(said), "{args:?}: {}", out.stderr);
    }
    // AND nothing reached the destination
    assert!(list_all(&s3, &dst, "").await.is_empty());
}

#[tokio::test]
async fn access_denied_listing_a_bucket_is_named_with_exit_2_and_nothing_is_written() {
    // GIVEN a source with objects, an empty destination, and S3 answering
    // 403 AccessDenied to every listing of the source
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "denied").await;
    for key in ["a", "b/c"] {
        put(&s3, &src, key, body(1, 3)).await;
    }
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.add_rule(
        Rule::on(Op::ListObjectsV2)
            .bucket(&src)
            .respond(403, ACCESS_DENIED_XML),
    );
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));
    let through_proxy = |src: &str, dst: &str| {
        run_cli(&[
            "sync",
            src,
            dst,
            "--endpoint-url",
            proxy.endpoint(),
            "--no-progress",
        ])
    };

    // WHEN the CLI syncs through it
    let out = through_proxy(&source, &destination);

    // THEN it stops before any write, as bad configuration, saying access
    // was denied listing the source
    assert_eq!(out.status, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "access to the source bucket \"{src}\" is denied: listing s3://{src} answered AccessDenied"
        )),
        "{}",
        out.stderr
    );
    assert!(proxy.faults_injected() > 0, "the denial was injected");
    assert_eq!(writes(&proxy), vec![], "nothing but listings");
    assert!(list_all(&s3, &dst, "").await.is_empty());

    // AND the same holds for a destination that cannot be listed
    proxy.clear_rules();
    proxy.clear_log();
    proxy.add_rule(
        Rule::on(Op::ListObjectsV2)
            .bucket(&dst)
            .respond(403, ACCESS_DENIED_XML),
    );
    let out = through_proxy(&source, &destination);
    assert_eq!(out.status, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "access to the destination bucket \"{dst}\" is denied: listing s3://{dst} answered AccessDenied"
        )),
        "{}",
        out.stderr
    );
    assert_eq!(writes(&proxy), vec![], "nothing but listings");
    assert!(list_all(&s3, &dst, "").await.is_empty());
}
