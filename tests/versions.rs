//! `--as-of`: a versioned bucket synced as it was at a point in time, into
//! a bucket and into a directory, through the real binary against moto.
//!
//! moto lists versions unlike S3; `scripts/moto_server.py` answers
//! ListObjectVersions as S3 does (interleaved versions and delete markers,
//! markers, URL encoding), so nothing here passes because moto is kind.
//! The history is `support::versioned`'s.

mod support;

use std::collections::BTreeMap;

use support::versioned::*;
use support::*;

fn sync_as_of(src: &str, dst: &str, time: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["--as-of", time];
    args.extend_from_slice(extra);
    sync_json(src, dst, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_each_step_into_an_empty_bucket_restores_that_snapshot_and_a_rerun_copies_nothing() {
    let s3 = s3().await;
    let h = history(&s3, "asof").await;
    let src = format!("s3://{}", h.bucket);
    for (i, (time, expected)) in h.steps.iter().enumerate() {
        // GIVEN an empty destination
        let dst = unique_bucket(&format!("asof-dst{i}"));
        create_bucket(&s3, &dst).await;

        // WHEN the source is synced as of the step's time (pages of two,
        // so a key's versions span pages)
        let (code, summary) = sync_as_of(
            &src,
            &format!("s3://{dst}"),
            time,
            &["--list-page-size", "2", "--part-size", "5MiB"],
        );

        // THEN the destination is the snapshot: keys, bytes, metadata,
        // tags, and the ETags of the versions then
        assert_eq!(code, 0, "step {i}: {summary}");
        assert_eq!(count(&summary, "verify_mismatched"), 0, "{summary}");
        let got = snapshot_of(&s3, &dst).await;
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "step {i} at {time}"
        );
        for (key, want) in expected {
            let have = &got[key];
            assert!(have.bytes == want.bytes, "step {i}: bytes of {key}");
            let mut metadata = want.metadata.clone();
            metadata.sort();
            assert_eq!(have.metadata, metadata, "step {i}: metadata of {key}");
            assert_eq!(have.tags, want.tags, "step {i}: tags of {key}");
        }
        let dst_etags: BTreeMap<String, String> = contents(&s3, &dst)
            .await
            .into_iter()
            .map(|(k, _, e)| (k, e))
            .collect();
        assert_eq!(
            dst_etags,
            etags_at(&s3, &h.bucket, expected).await,
            "step {i}: ETags (a multipart version keeps its parts)"
        );

        // WHEN it runs again
        let (code, summary) = sync_as_of(&src, &format!("s3://{dst}"), time, &[]);

        // THEN nothing is copied
        assert_eq!(code, 0, "{summary}");
        assert_eq!(
            count(&summary, "copied") + count(&summary, "updated"),
            0,
            "step {i}: {summary}"
        );
        assert_eq!(count(&summary, "skip_equal"), expected.len() as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_into_a_directory_restores_the_files_of_that_time() {
    let s3 = s3().await;
    let h = history(&s3, "asofdir").await;
    let (time, expected) = &h.steps[1];
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("restore");

    let (code, summary) = sync_as_of(
        &format!("s3://{}", h.bucket),
        target.to_str().unwrap(),
        time,
        &[],
    );

    assert_eq!(code, 0, "{summary}");
    let mut files = BTreeMap::new();
    for entry in walkdir(&target) {
        let relative = entry
            .strip_prefix(&target)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        files.insert(relative, std::fs::read(&entry).unwrap());
    }
    let want: BTreeMap<String, Vec<u8>> = expected
        .iter()
        .map(|(k, v)| (k.clone(), v.bytes.clone()))
        .collect();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    assert!(files == want, "the bytes of step 2");

    // A re-run copies nothing.
    let (code, summary) = sync_as_of(
        &format!("s3://{}", h.bucket),
        target.to_str().unwrap(),
        time,
        &[],
    );
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "copied") + count(&summary, "updated"), 0);
}

fn walkdir(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_with_delete_removes_exactly_what_was_absent_then_and_plan_says_so_first() {
    let s3 = s3().await;
    let h = history(&s3, "asofdel").await;
    let src = format!("s3://{}", h.bucket);
    // GIVEN a destination holding the source as it is now (step 4), plus
    // an object of its own
    let dst = unique_bucket("asofdel-dst");
    create_bucket(&s3, &dst).await;
    let dst_url = format!("s3://{dst}");
    let (code, summary) = sync_json(&src, &dst_url, &[]);
    assert_eq!(code, 0, "{summary}");
    put(&s3, &dst, "only-here", body(9, 9)).await;
    let (time, expected) = &h.steps[1];

    // WHEN plan is asked, before anything happens
    let out = run_cli(&[
        "plan",
        &src,
        &dst_url,
        "--as-of",
        time,
        "--delete",
        "--endpoint-url",
        &moto().endpoint,
        "--json",
    ]);
    out.assert_success();
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();

    // THEN it shows the deletes (dir/b, deleted then, and only-here), the
    // copies (a and dir/c, deleted since) and the update (big/one.bin)
    let work = &plan["work"];
    assert_eq!(work["delete"], 2, "{plan}");
    assert_eq!(work["copy"]["objects"], 2, "{plan}");
    assert_eq!(work["update"]["objects"], 1, "{plan}");
    assert_eq!(contents(&s3, &dst).await.len(), 5, "plan wrote nothing");

    // WHEN the sync runs
    let (code, summary) = sync_as_of(&src, &dst_url, time, &["--delete"]);

    // THEN the destination is the snapshot of step 2, nothing more
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "deleted"), 2, "{summary}");
    let got = snapshot_of(&s3, &dst).await;
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (key, want) in expected {
        assert!(got[key].bytes == want.bytes, "bytes of {key}");
    }

    // AND check, as of the same time, finds them equal; as of step 3, not
    let check = |time: &str| {
        run_cli(&[
            "check",
            &src,
            &dst_url,
            "--as-of",
            time,
            "--endpoint-url",
            &moto().endpoint,
        ])
        .status
    };
    assert_eq!(check(time), 0);
    assert_ne!(check(&h.steps[2].0), 0);
}

#[tokio::test]
async fn as_of_refuses_an_unversioned_source_a_directory_and_a_bad_time_before_any_write() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "asofbad").await;
    put(&s3, &src, "k", body(1, 10)).await;
    let (src, dst_url) = (format!("s3://{src}"), format!("s3://{dst}"));
    let dir = tempfile::tempdir().unwrap();
    let endpoint = moto().endpoint.clone();
    for (args, says) in [
        (
            vec!["sync", &src, &dst_url, "--as-of", "2026-01-01"],
            "never had versioning",
        ),
        (
            vec!["sync", &src, &dst_url, "--as-of", "last tuesday"],
            "--as-of \"last tuesday\" is not a date",
        ),
        (
            vec![
                "sync",
                dir.path().to_str().unwrap(),
                &dst_url,
                "--as-of",
                "2026-01-01",
            ],
            "is a directory",
        ),
        (
            vec!["plan", &src, &dst_url, "--as-of", "2026-01-01"],
            "never had versioning",
        ),
    ] {
        let mut args = args.clone();
        args.extend(["--endpoint-url", &endpoint]);
        let out = run_cli(&args);
        assert_eq!(out.status, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
    assert!(contents(&s3, &dst).await.is_empty(), "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_restored_in_place_as_of_a_past_time_is_that_snapshot_and_keeps_its_history() {
    let s3 = s3().await;
    let h = history(&s3, "asofin").await;
    let location = format!("s3://{}", h.bucket);
    let (time, expected) = &h.steps[1];
    let versions_before = version_count(&s3, &h.bucket).await;

    // WHEN the bucket is synced onto itself as of step 2, with --delete
    let (code, summary) = sync_as_of(&location, &location, time, &["--delete"]);

    // THEN it is that snapshot now, and every earlier version is still
    // there (a restore adds versions and delete markers, never removes)
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "verify_mismatched"), 0, "{summary}");
    let got = snapshot_of(&s3, &h.bucket).await;
    assert!(got == *expected, "{got:?}");
    assert!(version_count(&s3, &h.bucket).await > versions_before);
    let (code, summary) = sync_as_of(&location, &location, time, &["--delete"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "copied") + count(&summary, "updated"), 0);
    assert_eq!(count(&summary, "deleted"), 0);

    // AND without --as-of, a location onto itself is still refused
    let out = run_cli(&[
        "sync",
        &location,
        &location,
        "--endpoint-url",
        &moto().endpoint,
    ]);
    assert_eq!(out.status, 2, "{}", out.stderr);
    assert!(out.stderr.contains("overlaps the source"), "{}", out.stderr);
}

async fn version_count(client: &aws_sdk_s3::Client, bucket: &str) -> usize {
    let out = client
        .list_object_versions()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    out.versions().len() + out.delete_markers().len()
}

#[tokio::test]
async fn a_version_in_glacier_then_is_skipped_archived_and_the_rest_is_restored() {
    let s3 = s3().await;
    // GIVEN a key whose version then is in GLACIER (moto refuses to copy it,
    // as S3 does: InvalidObjectState), overwritten since in STANDARD
    let bucket = versioned_bucket(&s3, "asofcold").await;
    let cold = PutExtras {
        storage_class: Some("GLACIER".into()),
        ..PutExtras::default()
    };
    put_with(&s3, &bucket, "cold", body(1, 50), cold).await;
    put(&s3, &bucket, "warm", body(2, 50)).await;
    let then = newest_time(&s3, &bucket).await;
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    put(&s3, &bucket, "cold", body(3, 50)).await;
    let dst = unique_bucket("asofcold-dst");
    create_bucket(&s3, &dst).await;

    // WHEN it is restored as of then
    let (code, summary) = sync_as_of(
        &format!("s3://{bucket}"),
        &format!("s3://{dst}"),
        &then,
        &[],
    );

    // THEN the archived version is reported as skipped, nothing of the
    // current one is copied in its place, and the run ends with warnings
    assert_eq!(code, 3, "{summary}");
    assert_eq!(count(&summary, "skipped_archived"), 1, "{summary}");
    assert_eq!(count(&summary, "copied"), 1);
    assert_eq!(
        contents(&s3, &dst)
            .await
            .into_iter()
            .map(|(k, _, _)| k)
            .collect::<Vec<_>>(),
        ["warm"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_as_of_a_time_carries_that_snapshot_and_imports_as_it() {
    let s3 = s3().await;
    let h = history(&s3, "asofexp").await;
    let (time, expected) = &h.steps[2];
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("then.tar");
    let endpoint = moto().endpoint.clone();

    // WHEN the source is exported as of step 3
    let out = run_cli(&[
        "export",
        &format!("s3://{}", h.bucket),
        archive.to_str().unwrap(),
        "--as-of",
        time,
        "--endpoint-url",
        &endpoint,
    ]);
    out.assert_success();

    // THEN importing it gives that snapshot: keys, bytes, metadata, tags
    let dst = unique_bucket("asofexp-dst");
    create_bucket(&s3, &dst).await;
    let out = run_cli(&[
        "import",
        archive.to_str().unwrap(),
        &format!("s3://{dst}"),
        "--endpoint-url",
        &endpoint,
    ]);
    out.assert_success();
    let got = snapshot_of(&s3, &dst).await;
    assert!(got == *expected, "{got:?}");

    // AND an export as of a time from an unversioned bucket is refused
    let plain = unique_bucket("asofexp-plain");
    create_bucket(&s3, &plain).await;
    let out = run_cli(&[
        "export",
        &format!("s3://{plain}"),
        dir.path().join("no.tar").to_str().unwrap(),
        "--as-of",
        time,
        "--endpoint-url",
        &endpoint,
    ]);
    assert_eq!(out.status, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("never had versioning"),
        "{}",
        out.stderr
    );
    assert!(!dir.path().join("no.tar").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_versions_reproduces_every_history_in_order_a_rerun_copies_nothing_and_new_versions_are_appended()
 {
    let s3 = s3().await;
    let h = history(&s3, "allv").await;
    let dst = versioned_bucket(&s3, "allv-dst").await;
    let (src_url, dst_url) = (format!("s3://{}", h.bucket), format!("s3://{dst}"));

    // WHEN plan is asked first THEN it counts every version and marker
    let out = run_cli(&[
        "plan",
        &src_url,
        &dst_url,
        "--all-versions",
        "--endpoint-url",
        &moto().endpoint,
        "--json",
    ]);
    out.assert_success();
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(plan["work"]["copy"]["objects"], 9, "{plan}");
    assert_eq!(plan["work"]["delete"], 3, "{plan}");

    // WHEN every version is copied
    let (code, summary) = sync_json(
        &src_url,
        &dst_url,
        &["--all-versions", "--part-size", "5MiB"],
    );

    // THEN each key's history is the source's, oldest first, delete
    // markers included, and verified
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "verify_mismatched"), 0, "{summary}");
    // a1 a2 b1 b2 c1 odd big1 big2 d1: 9 versions; 3 delete markers
    assert_eq!(count(&summary, "copied"), 9, "{summary}");
    assert_eq!(count(&summary, "deleted"), 3, "{summary}");
    assert!(
        count(&summary, "listed_pieces") > 1,
        "listed as several ranges at once, cut at folders: {summary}"
    );
    assert_same_histories(&s3, &h.bucket, &dst).await;

    // WHEN it runs again THEN nothing is written
    let (code, summary) = sync_json(&src_url, &dst_url, &["--all-versions"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(
        count(&summary, "copied") + count(&summary, "deleted"),
        0,
        "{summary}"
    );
    assert_eq!(count(&summary, "skip_equal"), 6);

    // AND check finds every history equal; once the source gains
    // versions (a made again, dir/d deleted), it finds the two keys behind
    let check = || {
        run_cli(&[
            "check",
            &src_url,
            &dst_url,
            "--all-versions",
            "--endpoint-url",
            &moto().endpoint,
            "--json",
        ])
    };
    let out = check();
    assert_eq!(out.status, 0, "{}", out.stderr);
    put(&s3, &h.bucket, "a", body(9, 90)).await;
    delete(&s3, &h.bucket, "dir/d").await;
    let out = check();
    assert_eq!(out.status, 1, "{}", out.stderr);
    let audit: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(count(&audit, "verify_mismatched"), 2, "{audit}");
    assert_eq!(count(&audit, "listed_source"), 6, "{audit}");

    // THEN the next run appends exactly those
    let (code, summary) = sync_json(&src_url, &dst_url, &["--all-versions"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "copied"), 1, "{summary}");
    assert_eq!(count(&summary, "deleted"), 1, "{summary}");
    assert_same_histories(&s3, &h.bucket, &dst).await;
}

#[tokio::test]
async fn all_versions_refuses_an_unversioned_side_before_any_write() {
    let s3 = s3().await;
    let versioned = versioned_bucket(&s3, "allvbad").await;
    put(&s3, &versioned, "k", body(1, 10)).await;
    let (plain_src, plain_dst) = bucket_pair(&s3, "allvbad").await;
    put(&s3, &plain_src, "k", body(1, 10)).await;
    for (src, dst, says) in [
        (
            &versioned,
            &plain_dst,
            "versioning enabled on the destination",
        ),
        (&plain_src, &versioned, "needs a versioned source"),
    ] {
        let out = run_cli(&[
            "sync",
            &format!("s3://{src}"),
            &format!("s3://{dst}"),
            "--all-versions",
            "--endpoint-url",
            &moto().endpoint,
        ]);
        assert_eq!(out.status, 2, "{}", out.stderr);
        assert!(out.stderr.contains(says), "{}", out.stderr);
        assert!(out.stderr.contains(dst.as_str()) || out.stderr.contains(src.as_str()));
    }
    assert!(contents(&s3, &plain_dst).await.is_empty());
    assert_eq!(contents(&s3, &versioned).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_versions_places_copies_whose_etags_differ_by_their_origin_id() {
    const MIB: usize = 1024 * 1024;
    let s3 = s3().await;
    // GIVEN multipart versions copied in other parts (--no-mirror-parts),
    // so no copy has its source's ETag, as with a KMS destination
    let src = versioned_bucket(&s3, "allvkms").await;
    put_multipart(&s3, &src, "big", 11 * MIB, 5 * MIB).await;
    put_multipart(&s3, &src, "big", 6 * MIB, 5 * MIB).await;
    let dst = versioned_bucket(&s3, "allvkms-dst").await;
    // and a key of the destination's own, which is kept
    put(&s3, &dst, "own", body(7, 7)).await;
    let (src_url, dst_url) = (format!("s3://{src}"), format!("s3://{dst}"));
    let args = ["--all-versions", "--no-mirror-parts", "--part-size", "8MiB"];
    let (code, summary) = sync_json(&src_url, &dst_url, &args);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "copied"), 2, "{summary}");
    assert_eq!(count(&summary, "extraneous_kept"), 1, "{summary}");
    assert_eq!(histories(&s3, &dst).await["own"].len(), 1);
    let (s, d) = (histories(&s3, &src).await, histories(&s3, &dst).await);
    assert_ne!(s["big"][0].2, d["big"][0].2, "other ETags");

    // WHEN it runs again THEN the newest copy's origin id places the
    // history (one HEAD), and nothing is copied
    let (code, summary) = sync_json(&src_url, &dst_url, &args);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "copied"), 0, "{summary}");
    assert_eq!(count(&summary, "skip_equal"), 1);
    assert!(summary["requests"]["HeadObject"].as_u64().unwrap() >= 1);

    // AND a new version is appended once
    put(&s3, &src, "big", body(3, 30)).await;
    let (code, summary) = sync_json(&src_url, &dst_url, &args);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "copied"), 1, "{summary}");
    assert_eq!(histories(&s3, &dst).await["big"].len(), 3);
}

#[tokio::test]
async fn a_version_page_that_says_more_but_names_no_marker_fails_the_run_rather_than_end_it() {
    use support::fault_proxy::{FaultProxy, Rule};
    let s3 = s3().await;
    let src = versioned_bucket(&s3, "asoftrunc").await;
    // GIVEN a source of a and b, whose version listing stops after a,
    // saying there is more but not where from; b at the destination too
    put(&s3, &src, "a", body(1, 10)).await;
    put(&s3, &src, "b", body(2, 10)).await;
    let dst = unique_bucket("asoftrunc-dst");
    create_bucket(&s3, &dst).await;
    put(&s3, &dst, "b", body(2, 10)).await;
    let proxy = FaultProxy::start(&moto().endpoint);
    // A page that is truncated, with no NextKeyMarker to go on from.
    proxy.add_rule(Rule::any().bucket(&src).query_contains("versions").respond(
        200,
        r#"<?xml version="1.0" encoding="UTF-8"?><ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>true</IsTruncated><Version><Key>a</Key><VersionId>v1</VersionId><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>"x"</ETag><Size>10</Size></Version></ListVersionsResult>"#,
    ));

    let out = run_cli(&[
        "sync",
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        "--as-of",
        "2026-06-01",
        "--delete",
        "--endpoint-url",
        proxy.endpoint(),
    ]);

    // THEN the run fails and says why, and b is kept: a key never listed
    // is not absent (as of a past time, no HEAD of the source would
    // catch it before the delete)
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("NextKeyMarker"), "{}", out.stderr);
    assert_eq!(contents(&s3, &dst).await.len(), 1, "b kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_versions_between_two_endpoints_streams_every_history_in_order() {
    use support::fault_proxy::FaultProxy;
    let s3 = s3().await;
    // GIVEN the history reached through another endpoint than the
    // versioned destination (moto behind the proxy: s3-fanout cannot know
    // they are one server, so it streams)
    let h = history(&s3, "allv-stream").await;
    let dst = versioned_bucket(&s3, "allv-stream-dst").await;
    let proxy = FaultProxy::start(&moto().endpoint);
    let (src_url, dst_url) = (format!("s3://{}", h.bucket), format!("s3://{dst}"));
    let moto_endpoint = moto().endpoint.clone();
    let sync = || {
        let out = run_cli(&[
            "sync",
            &src_url,
            &dst_url,
            "--all-versions",
            "--source-endpoint-url",
            proxy.endpoint(),
            "--dest-endpoint-url",
            &moto_endpoint,
            "--part-size",
            "5MiB",
            "--json",
        ]);
        let summary: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", out.stdout, out.stderr));
        (out.status, summary)
    };

    // WHEN every version is copied
    let (code, summary) = sync();

    // THEN through GETs and PUTs, each key's history is the source's,
    // oldest first, with its markers and each copy's origin
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["requests"]["CopyObject"].as_u64().unwrap_or(0), 0);
    assert_eq!(count(&summary, "copied"), 9, "{summary}");
    assert_eq!(count(&summary, "deleted"), 3, "{summary}");
    assert_eq!(count(&summary, "verify_mismatched"), 0, "{summary}");
    assert_same_histories(&s3, &h.bucket, &dst).await;

    // WHEN it runs again THEN nothing is written
    let (code, summary) = sync();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(
        count(&summary, "copied") + count(&summary, "deleted"),
        0,
        "{summary}"
    );
}

#[tokio::test]
async fn all_versions_refuses_a_directory_on_either_side_before_any_write() {
    let s3 = s3().await;
    let versioned = versioned_bucket(&s3, "allvdir").await;
    put(&s3, &versioned, "k", body(1, 10)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display().to_string();
    for (src, dst) in [
        (format!("s3://{versioned}"), path.clone()),
        (path.clone(), format!("s3://{versioned}")),
    ] {
        let out = run_cli(&[
            "sync",
            &src,
            &dst,
            "--all-versions",
            "--endpoint-url",
            &moto().endpoint,
        ]);
        assert_eq!(out.status, 2, "{}", out.stderr);
        assert!(
            out.stderr.contains("between two versioned buckets"),
            "{}",
            out.stderr
        );
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    assert_eq!(version_count(&s3, &versioned).await, 1);
}
