//! Failures real S3 produces and moto does not, injected by a proxy between
//! the CLI and moto (`support::fault_proxy`): throttling, 200-with-error
//! copies, sources that change between listing and copy, archived and SSE-C
//! sources, denied keys, failed part copies, Ctrl-C and SIGKILL.
//!
//! Each test checks the whole contract of a run: exit code, summary counts,
//! the rows of failures.csv, and what is at the destination.

mod support;

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use aws_sdk_s3::Client;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use support::fault_proxy::*;
use support::*;

const MIB: usize = 1024 * 1024;

/// `extra` plus `--retry-mode standard`, for the throttling tests.
///
/// The CLI defaults to adaptive retries, and this SDK version's adaptive
/// rate limiter charges a throttled retry 10 tokens at a refill rate of
/// 0.5 token/s while few requests have been sent, so each retry after a
/// SlowDown waits up to the 20 s maximum backoff (measured here: 8, 11 and
/// 18 s for three SlowDowns; 34 s for the run instead of 3 s). These tests
/// are about attempts and the report, not about that limiter.
fn standard_retries<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--retry-mode", "standard"];
    args.extend_from_slice(extra);
    args
}

/// One row of failures.csv (the S3 Batch Operations completion-report columns).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Row {
    #[serde(rename = "Bucket")]
    bucket: String,
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "VersionId")]
    version_id: String,
    #[serde(rename = "TaskStatus")]
    status: String,
    #[serde(rename = "ErrorCode")]
    code: String,
    #[serde(rename = "HTTPStatusCode")]
    http: String,
    #[serde(rename = "ResultMessage")]
    message: String,
}

/// What one CLI run produced.
struct Run {
    code: i32,
    summary: Value,
    rows: Vec<Row>,
}

impl Run {
    fn count(&self, name: &str) -> u64 {
        self.summary["counts"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no count {name} in {}", self.summary))
    }

    /// The rows as (key, TaskStatus, ErrorCode, HTTPStatusCode), for one-line asserts.
    fn row_summaries(&self) -> Vec<(String, String, String, String)> {
        self.rows
            .iter()
            .map(|r| {
                (
                    r.key.clone(),
                    r.status.clone(),
                    r.code.clone(),
                    r.http.clone(),
                )
            })
            .collect()
    }
}

fn row(key: &str, status: &str, code: &str, http: &str) -> (String, String, String, String) {
    (key.into(), status.into(), code.into(), http.into())
}

/// Run `s3-fanout sync s3://SRC s3://DST --json` through `proxy`, with a
/// report directory so failures.csv is always written (empty or not).
fn sync_via(proxy: &FaultProxy, src: &str, dst: &str, extra: &[&str]) -> Run {
    let report = tempfile::tempdir().expect("a report directory");
    let report_dir = report.path().display().to_string();
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));
    let mut args = vec![
        "sync",
        &source,
        &destination,
        "--endpoint-url",
        proxy.endpoint(),
        "--json",
        "--report",
        &report_dir,
    ];
    args.extend_from_slice(extra);
    let out = run_cli(&args);
    proxy.assert_no_errors();
    let summary = parse_summary(&out.stdout, &out.stderr);
    let rows = read_rows(&summary);
    Run {
        code: out.status,
        summary,
        rows,
    }
}

fn parse_summary(stdout: &str, stderr: &str) -> Value {
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("stdout is not a JSON summary ({e}):\n{stdout}\n{stderr}"))
}

fn read_rows(summary: &Value) -> Vec<Row> {
    let path = summary["failures_csv"]
        .as_str()
        .unwrap_or_else(|| panic!("no failures_csv in {summary}"));
    let mut reader = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    reader
        .deserialize()
        .map(|r| r.unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

fn small_key(i: usize) -> String {
    format!("obj-{i:03}")
}

fn small_body(i: usize) -> Vec<u8> {
    body(i as u64, 100 + i)
}

/// A source holding `n` small objects (`obj-000`, ...), an empty destination,
/// and a proxy in front of moto.
async fn fixture(tag: &str, n: usize) -> (Client, String, String, FaultProxy) {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, tag).await;
    // Seeded straight at moto, not through the proxy: only the CLI's
    // requests are recorded.
    for i in 0..n {
        put(&s3, &src, &small_key(i), small_body(i)).await;
    }
    (s3, src, dst, FaultProxy::start(&moto().endpoint))
}

#[tokio::test]
async fn proxy_without_rules_forwards_everything_and_records_each_operation() {
    // GIVEN a proxy with no rules in front of moto
    let (s3, src, dst, proxy) = fixture("proxy-plain", 3).await;

    // WHEN the CLI syncs through it
    let run = sync_via(&proxy, &src, &dst, &[]);

    // THEN the sync is as good as a direct one, and every copy was seen once
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(run.count("copied"), 3);
    assert_eq!(run.rows, vec![]);
    assert_eq!(contents(&s3, &src).await, contents(&s3, &dst).await);
    for i in 0..3 {
        assert_eq!(proxy.count(Op::CopyObject, &small_key(i)), 1);
    }
    let copy = proxy
        .requests()
        .into_iter()
        .find(|r| r.op == Op::CopyObject)
        .expect("a copy was recorded");
    assert_eq!(copy.bucket, dst);
    assert!(
        copy.copy_source
            .as_deref()
            .is_some_and(|s| s.starts_with(&format!("{src}/obj-"))),
        "{copy:?}"
    );
    assert!(
        copy.copy_source_if_match.is_some(),
        "copies are conditional on the listed ETag: {copy:?}"
    );
    assert_eq!(copy.status, Some(200));
    // A page a side, then verification of the 3 keys written by a HEAD on
    // each side (cheaper than a page a side again).
    assert_eq!(proxy.count_op(Op::ListObjectsV2), 2);
    assert_eq!(proxy.count_op(Op::HeadObject), 6);
}

#[tokio::test]
async fn slowdown_three_times_is_retried_and_nothing_is_lost() {
    // GIVEN one key whose CopyObject is throttled three times
    let (s3, src, dst, proxy) = fixture("slowdown-3", 5).await;
    proxy.add_rule(
        Rule::on(Op::CopyObject)
            .key("obj-002")
            .times(3)
            .respond(503, SLOW_DOWN_XML),
    );

    // WHEN it is synced with the default number of attempts (10)
    let run = sync_via(&proxy, &src, &dst, &standard_retries(&[]));

    // THEN the fourth attempt succeeds and every object arrives
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(proxy.count(Op::CopyObject, "obj-002"), 4);
    assert_eq!(run.count("copied"), 5);
    assert_eq!(run.count("failed"), 0);
    assert_eq!(run.rows, vec![]);
    assert_eq!(contents(&s3, &src).await, contents(&s3, &dst).await);
    assert_eq!(get_bytes(&s3, &dst, "obj-002").await, small_body(2));
}

/// Seed `n` small objects, in and out of folders, and two multipart ones.
async fn seed_mixed(s3: &Client, bucket: &str, n: usize) {
    futures::stream::iter(0..n)
        .for_each_concurrent(16, |i| async move {
            let key = match i % 3 {
                0 => small_key(i),
                1 => format!("logs/{}", small_key(i)),
                _ => format!("data/2026/{}", small_key(i)),
            };
            put(s3, bucket, &key, small_body(i)).await;
        })
        .await;
    for key in ["big/a.bin", "big/b.bin"] {
        put_multipart(s3, bucket, key, 12 * MIB, 5 * MIB).await;
    }
}

#[tokio::test]
async fn a_whole_sync_under_random_503s_and_resets_ends_equal_and_reports_its_retries() {
    // GIVEN 240 small objects and two multipart ones
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "random-faults").await;
    seed_mixed(&s3, &src, 240).await;
    let proxy = FaultProxy::start(&moto().endpoint);
    // AND the two answers whose loss is hardest to recover from, lost once
    // each: an upload created but never heard of (it must not stay open),
    // and an upload completed whose completion was never heard of (the
    // retry finds no upload, yet the copy is done).
    proxy.add_rule(Rule::on(Op::CreateMultipartUpload).times(1).reset());
    let completed = || {
        Rule::on(Op::CompleteMultipartUpload)
            .key("big/a.bin")
            .times(1)
    };
    proxy.add_rule(completed().reset());
    // S3 has forgotten an upload once it is complete, and answers the
    // SDK's retry so; moto completes it a second time.
    proxy.add_rule(completed().respond(404, NO_SUCH_UPLOAD_XML));
    // AND 15% of every other request failing at random
    proxy.add_random_faults(&src, 0x5EED);
    proxy.add_random_faults(&dst, 0x5EED + 1);

    // WHEN the CLI syncs through it
    let run = sync_via(
        &proxy,
        &src,
        &dst,
        &standard_retries(&["--multipart-threshold", "5MiB"]),
    );

    // THEN it succeeds, the destination equals the source, and nothing is
    // left open
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(run.count("copied"), 242);
    assert_eq!(run.count("failed"), 0);
    assert_eq!(run.rows, vec![]);
    assert_eq!(contents(&s3, &src).await, contents(&s3, &dst).await);
    assert_eq!(list_multipart_uploads(&s3, &dst).await, 0, "no open upload");
    // AND the report counts one retry per fault injected (but the
    // NoSuchUpload, which is an answer to act on, not to send again): none
    // was hidden, none went unanswered
    let injected = proxy.faults_injected() as u64;
    assert!(injected > 25, "only {injected} faults were injected");
    assert_eq!(run.count("retries"), injected - 1, "{}", run.summary);

    // WHEN it runs again with the faults still on
    let again = sync_via(&proxy, &src, &dst, &standard_retries(&[]));

    // THEN there is nothing to copy
    assert_eq!(again.code, 0, "{}", again.summary);
    assert_eq!(again.count("copied"), 0);
    assert_eq!(again.count("skip_equal"), 242);
}

#[tokio::test]
async fn too_many_requests_429_on_listing_and_copies_is_retried_as_throttling() {
    // GIVEN a server that answers 429, as some S3-compatible ones throttle:
    // the first listing page twice, and one key's copy three times in a row
    let (s3, src, dst, proxy) = fixture("too-many", 5).await;
    proxy.add_rule(
        Rule::on(Op::ListObjectsV2)
            .bucket(&src)
            .times(2)
            .respond(429, TOO_MANY_REQUESTS_XML),
    );
    proxy.add_rule(
        Rule::on(Op::CopyObject)
            .key("obj-003")
            .times(3)
            .respond(429, TOO_MANY_REQUESTS_XML),
    );

    // WHEN it is synced
    let run = sync_via(&proxy, &src, &dst, &standard_retries(&[]));

    // THEN every 429 was retried, counted as throttling, and nothing lost
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(run.count("copied"), 5);
    assert_eq!(run.count("retries"), 5);
    assert_eq!(run.summary["copy_concurrency"]["throttled_responses"], 5);
    assert_eq!(proxy.count(Op::CopyObject, "obj-003"), 4);
    assert_eq!(contents(&s3, &src).await, contents(&s3, &dst).await);
}

#[tokio::test]
async fn throttling_halves_the_copies_in_flight_and_the_run_still_completes() {
    // GIVEN a bucket whose first CopyObject requests are throttled
    let (s3, src, dst, proxy) = fixture("slowdown-adaptive", 40).await;
    proxy.add_rule(
        Rule::on(Op::CopyObject)
            .times(4)
            .respond(503, SLOW_DOWN_XML),
    );

    // WHEN it is synced with up to 16 copies in flight
    let run = sync_via(
        &proxy,
        &src,
        &dst,
        &standard_retries(&["--concurrency", "16"]),
    );

    // THEN the limit was cut below its start of 8, and nothing was lost
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(run.count("copied"), 40);
    let adaptive = &run.summary["copy_concurrency"];
    assert_eq!(adaptive["throttled_responses"], 4, "{adaptive}");
    assert!(
        adaptive["throttle_cuts"].as_u64().unwrap() >= 1,
        "{adaptive}"
    );
    assert!(adaptive["lowest"].as_u64().unwrap() <= 4, "{adaptive}");
    assert_eq!(contents(&s3, &src).await, contents(&s3, &dst).await);
}

#[tokio::test]
async fn without_throttling_copies_in_flight_grow_past_their_start() {
    let (_s3, src, dst, proxy) = fixture("adaptive-grows", 60).await;
    let run = sync_via(&proxy, &src, &dst, &["--concurrency", "32"]);
    assert_eq!(run.code, 0, "{}", run.summary);
    let adaptive = &run.summary["copy_concurrency"];
    // The first window of 8 copies sets the latency baseline and doubles
    // the limit; beyond that it grows only while moto's latency holds.
    assert!(adaptive["highest"].as_u64().unwrap() >= 16, "{adaptive}");
    assert_eq!(adaptive["throttle_cuts"], 0, "{adaptive}");
}

#[tokio::test]
async fn slowdown_forever_fails_only_that_key_with_its_503() {
    // GIVEN one key whose CopyObject is always throttled
    let (s3, src, dst, proxy) = fixture("slowdown-forever", 5).await;
    proxy.add_rule(
        Rule::on(Op::CopyObject)
            .key("obj-003")
            .respond(503, SLOW_DOWN_XML),
    );

    // WHEN it is synced with three attempts per request
    let run = sync_via(
        &proxy,
        &src,
        &dst,
        &standard_retries(&["--max-attempts", "3"]),
    );

    // THEN that key, and only it, is a failed row carrying S3's code and status
    assert_eq!(run.code, 1, "{}", run.summary);
    assert_eq!(proxy.count(Op::CopyObject, "obj-003"), 3);
    assert_eq!(run.count("copied"), 4);
    assert_eq!(run.count("failed"), 1);
    assert_eq!(
        run.count("verify_mismatched"),
        0,
        "the missing key is reported once, not again by verify"
    );
    assert_eq!(
        run.row_summaries(),
        vec![row("obj-003", "failed", "SlowDown", "503")]
    );
    assert_eq!(run.rows[0].bucket, src);
    assert_eq!(run.rows[0].version_id, "", "an unversioned bucket");
    let mut expected = contents(&s3, &src).await;
    expected.retain(|(key, _, _)| key != "obj-003");
    assert_eq!(contents(&s3, &dst).await, expected);
}

#[tokio::test]
async fn copy_answering_200_with_an_error_body_is_retried() {
    // GIVEN a CopyObject that S3 answers `200 OK` with an <Error> body, once
    let (s3, src, dst, proxy) = fixture("copy-200-error", 3).await;
    proxy.add_rule(
        Rule::on(Op::CopyObject)
            .key("obj-001")
            .times(1)
            .respond(200, INTERNAL_ERROR_XML),
    );

    // WHEN it is synced
    let run = sync_via(&proxy, &src, &dst, &[]);

    // THEN the 200 is taken for the error it is, retried, and the object arrives
    assert_eq!(
        proxy.count(Op::CopyObject, "obj-001"),
        2,
        "the 200-with-error answer must be retried"
    );
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(run.count("copied"), 3);
    assert_eq!(run.rows, vec![]);
    assert_eq!(get_bytes(&s3, &dst, "obj-001").await, small_body(1));
    assert_eq!(contents(&s3, &src).await, contents(&s3, &dst).await);
}

#[tokio::test]
async fn part_copy_and_complete_answering_200_with_an_error_body_are_retried() {
    // GIVEN a multipart copy whose part 1 copy and whose completion are each
    // answered `200 OK` with an <Error> body, once
    let (s3, src, dst, proxy) = fixture("mp-200-error", 0).await;
    let etag = put_multipart(&s3, &src, "big.bin", 12 * MIB, 5 * MIB).await;
    proxy.add_rule(
        Rule::on(Op::UploadPartCopy)
            .part(1)
            .times(1)
            .respond(200, INTERNAL_ERROR_XML),
    );
    proxy.add_rule(
        Rule::on(Op::CompleteMultipartUpload)
            .times(1)
            .respond(200, INTERNAL_ERROR_XML),
    );

    // WHEN it is synced with multipart copies
    let run = sync_via(&proxy, &src, &dst, &["--multipart-threshold", "5MiB"]);

    // THEN both are retried and the copy is whole, with the source's ETag
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(
        proxy.count(Op::UploadPartCopy, "big.bin"),
        4,
        "3 parts, part 1 twice"
    );
    assert_eq!(proxy.count(Op::CompleteMultipartUpload, "big.bin"), 2);
    assert_eq!(run.count("copied"), 1);
    assert_eq!(run.rows, vec![]);
    assert_eq!(list_all(&s3, &dst, "").await[0].etag, etag);
    assert_eq!(list_multipart_uploads(&s3, &dst).await, 0);
}

#[tokio::test]
async fn source_changed_between_listing_and_copy_is_relisted_and_the_new_version_copied() {
    // GIVEN a source key that is overwritten after the listing, just before
    // its copy, and a server that honours x-amz-copy-source-if-match
    let (s3, src, dst, proxy) = fixture("source-changed", 3).await;
    let new_content = b"the new version, written after the listing".to_vec();
    proxy.enforce_copy_source_if_match();
    proxy.rewrite_source_before_first_copy("obj-001", new_content.clone());

    // WHEN it is synced
    let run = sync_via(&proxy, &src, &dst, &[]);

    // THEN the first copy fails its precondition, the key is listed again,
    // and the version now at the source is the one copied
    let copies: Vec<Recorded> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.op == Op::CopyObject && r.key.as_deref() == Some("obj-001"))
        .collect();
    assert_eq!(
        copies
            .iter()
            .map(|c| (c.status, c.injected))
            .collect::<Vec<_>>(),
        vec![(Some(412), true), (Some(200), false)]
    );
    assert_ne!(
        copies[0].copy_source_if_match, copies[1].copy_source_if_match,
        "the second copy asks for the new ETag"
    );
    assert!(
        proxy
            .requests()
            .iter()
            .any(|r| r.op == Op::ListObjectsV2 && r.query.contains("prefix=obj-001")),
        "the changed key was listed again"
    );
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(run.count("copied"), 3);
    assert_eq!(run.count("failed"), 0);
    assert_eq!(run.count("source_changed"), 1, "reported as changed");
    assert_eq!(run.rows, vec![]);
    assert_eq!(get_bytes(&s3, &dst, "obj-001").await, new_content);
    assert_eq!(contents(&s3, &src).await, contents(&s3, &dst).await);
}

#[tokio::test]
async fn a_source_that_changes_again_during_its_second_copy_fails_and_the_next_run_converges() {
    // GIVEN a source key overwritten before its first copy, and again
    // before the copy of the version found on listing it again
    let (s3, src, dst, proxy) = fixture("changed-twice", 3).await;
    proxy.enforce_copy_source_if_match();
    proxy.rewrite_source_before_first_copy("obj-001", b"second version".to_vec());
    proxy.rewrite_source_before_first_copy("obj-001", b"third version".to_vec());

    // WHEN it is synced
    let run = sync_via(&proxy, &src, &dst, &[]);

    // THEN neither stale version is copied: the key is reported failed
    assert_eq!(run.code, 1, "{}", run.summary);
    assert_eq!(run.count("copied"), 2);
    assert_eq!(run.count("failed"), 1);
    assert_eq!(
        run.row_summaries(),
        vec![row("obj-001", "failed", "PreconditionFailed", "412")]
    );
    assert!(
        run.rows[0].message.contains("changed twice"),
        "{:?}",
        run.rows[0]
    );
    assert_eq!(proxy.count(Op::CopyObject, "obj-001"), 2);
    assert!(
        list_all(&s3, &dst, "obj-001").await.is_empty(),
        "nothing stale copied"
    );

    // WHEN it runs again with the source still
    let rerun = sync_via(&proxy, &src, &dst, &[]);

    // THEN the version now at the source is copied
    assert_eq!(rerun.code, 0, "{}", rerun.summary);
    assert_eq!(rerun.count("copied"), 1);
    assert_eq!(get_bytes(&s3, &dst, "obj-001").await, b"third version");
    assert_eq!(contents(&s3, &src).await, contents(&s3, &dst).await);
}

#[tokio::test]
async fn archived_source_is_skipped_after_one_attempt() {
    // GIVEN a key whose copy S3 refuses because it is in Glacier
    let (s3, src, dst, proxy) = fixture("archived", 4).await;
    proxy.add_rule(
        Rule::on(Op::CopyObject)
            .key("obj-000")
            .respond(403, INVALID_OBJECT_STATE_XML),
    );

    // WHEN it is synced
    let run = sync_via(&proxy, &src, &dst, &[]);

    // THEN it is tried once (a retry cannot restore it), reported as
    // skipped-archived, and the run ends with warnings
    assert_eq!(proxy.count(Op::CopyObject, "obj-000"), 1);
    assert_eq!(run.code, 3, "{}", run.summary);
    assert_eq!(run.count("skipped_archived"), 1);
    assert_eq!(run.count("copied"), 3);
    assert_eq!(run.count("failed"), 0);
    assert_eq!(
        run.row_summaries(),
        vec![row("obj-000", "skipped", "SkippedArchived", "403")]
    );
    let copied: Vec<String> = list_all(&s3, &dst, "")
        .await
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(copied, ["obj-001", "obj-002", "obj-003"]);
}

#[tokio::test]
async fn sse_c_source_is_skipped_not_failed() {
    // GIVEN a key encrypted with a customer-provided key
    let (s3, src, dst, proxy) = fixture("sse-c", 3).await;
    proxy.add_rule(
        Rule::on(Op::CopyObject)
            .key("obj-002")
            .respond(400, SSE_C_XML),
    );

    // WHEN it is synced
    let run = sync_via(&proxy, &src, &dst, &[]);

    // THEN it is reported as skipped (never silently), once, with warnings
    assert_eq!(proxy.count(Op::CopyObject, "obj-002"), 1);
    assert_eq!(run.code, 3, "{}", run.summary);
    assert_eq!(run.count("skipped_sse_c"), 1);
    assert_eq!(run.count("copied"), 2);
    assert_eq!(run.count("failed"), 0);
    assert_eq!(
        run.row_summaries(),
        vec![row("obj-002", "skipped", "SkippedSSEC", "400")]
    );
    assert!(
        run.rows[0].message.contains("Server Side Encryption"),
        "{:?}",
        run.rows[0]
    );
    let copied: Vec<String> = list_all(&s3, &dst, "")
        .await
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(copied, ["obj-000", "obj-001"]);
}

#[tokio::test]
async fn access_denied_fails_one_key_and_a_rerun_converges() {
    // GIVEN a key the copier may not read
    let (s3, src, dst, proxy) = fixture("denied", 4).await;
    proxy.add_rule(
        Rule::on(Op::CopyObject)
            .key("obj-001")
            .respond(403, ACCESS_DENIED_XML),
    );

    // WHEN it is synced
    let run = sync_via(&proxy, &src, &dst, &[]);

    // THEN that key fails after one attempt and the others are copied
    assert_eq!(run.code, 1, "{}", run.summary);
    assert_eq!(
        proxy.count(Op::CopyObject, "obj-001"),
        1,
        "AccessDenied is not retried"
    );
    assert_eq!(run.count("copied"), 3);
    assert_eq!(run.count("failed"), 1);
    assert_eq!(
        run.row_summaries(),
        vec![row("obj-001", "failed", "AccessDenied", "403")]
    );
    assert_eq!(list_all(&s3, &dst, "").await.len(), 3);

    // WHEN access is granted and it runs again
    proxy.clear_rules();
    proxy.clear_log();
    let rerun = sync_via(&proxy, &src, &dst, &[]);

    // THEN only the missing key is copied and the buckets are equal
    assert_eq!(rerun.code, 0, "{}", rerun.summary);
    assert_eq!(rerun.count("copied"), 1);
    assert_eq!(rerun.count("skip_equal"), 3);
    assert_eq!(rerun.rows, vec![]);
    assert_eq!(proxy.count_op(Op::CopyObject), 1);
    assert_eq!(contents(&s3, &src).await, contents(&s3, &dst).await);
}

#[tokio::test]
async fn failed_part_copy_aborts_the_multipart_upload() {
    // GIVEN a 12 MiB source uploaded in 5 MiB parts, and part 2 of its copy denied
    let (s3, src, dst, proxy) = fixture("mp-fail", 1).await;
    put_multipart(&s3, &src, "big.bin", 12 * MIB, 5 * MIB).await;
    proxy.add_rule(
        Rule::on(Op::UploadPartCopy)
            .key("big.bin")
            .part(2)
            .respond(403, ACCESS_DENIED_XML),
    );

    // WHEN it is synced with multipart copies
    let run = sync_via(&proxy, &src, &dst, &["--multipart-threshold", "5MiB"]);

    // THEN the object fails, its upload is aborted (nothing left to bill),
    // and the small object still arrives
    assert_eq!(run.code, 1, "{}", run.summary);
    assert_eq!(proxy.count(Op::CreateMultipartUpload, "big.bin"), 1);
    assert_eq!(proxy.count(Op::AbortMultipartUpload, "big.bin"), 1);
    assert_eq!(proxy.count(Op::CompleteMultipartUpload, "big.bin"), 0);
    assert_eq!(run.count("failed"), 1);
    assert_eq!(run.count("copied"), 1);
    assert_eq!(
        run.row_summaries(),
        vec![row("big.bin", "failed", "AccessDenied", "403")]
    );
    assert_eq!(
        list_multipart_uploads(&s3, &dst).await,
        0,
        "the upload was aborted"
    );
    let copied: Vec<String> = list_all(&s3, &dst, "")
        .await
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(copied, ["obj-000"]);
}

/// Send `signal` (`-INT`, `-KILL`) to a process with kill(1).
fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}: {status}");
}

/// Wait up to `timeout` for a spawned CLI to exit; returns (exit code,
/// stdout). A CLI that does not exit is killed and the test fails.
fn wait_for_exit(child: std::process::Child, timeout: Duration) -> (i32, String) {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    // wait_with_output drains both pipes, so a chatty child cannot block on them.
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => {
            let output = output.expect("wait for the CLI");
            eprintln!(
                "--- stderr ---\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            (
                output.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&output.stdout).into_owned(),
            )
        }
        Err(_) => {
            send_signal(pid, "-KILL");
            panic!("the CLI did not exit within {timeout:?}");
        }
    }
}

#[tokio::test]
async fn ctrl_c_mid_multipart_copy_exits_130_aborts_the_upload_and_a_rerun_converges() {
    // GIVEN a multipart copy whose part copies each take 3 s
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "ctrl-c").await;
    put_multipart(&s3, &src, "big.bin", 12 * MIB, 5 * MIB).await;
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.add_rule(Rule::on(Op::UploadPartCopy).delay(Duration::from_secs(3)));

    // WHEN Ctrl-C arrives while its parts are being copied
    let report = tempfile::tempdir().expect("a report directory");
    let child = cli()
        .args([
            "sync",
            &format!("s3://{src}"),
            &format!("s3://{dst}"),
            "--endpoint-url",
            proxy.endpoint(),
        ])
        .args([
            "--json",
            "--multipart-threshold",
            "5MiB",
            "--report",
            &report.path().display().to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the CLI");
    // The first part copy is proof that the upload exists and is mid-copy.
    assert!(
        proxy.wait_for(Op::UploadPartCopy, 1, Duration::from_secs(20)),
        "no part copy started"
    );
    assert_eq!(proxy.count_op(Op::CreateMultipartUpload), 1);
    send_signal(child.id(), "-INT");
    let (code, stdout) = wait_for_exit(child, Duration::from_secs(10));

    // THEN the CLI reports an interrupted run, exit 130, with the upload aborted
    let summary = parse_summary(&stdout, "");
    assert_eq!(code, 130, "{summary}");
    assert_eq!(summary["status"], "interrupted");
    assert_eq!(summary["counts"]["copied"], 0);
    assert_eq!(
        summary["counts"]["failed"], 0,
        "a cancelled copy is not a failure"
    );
    assert_eq!(read_rows(&summary), vec![]);
    assert_eq!(proxy.count_op(Op::AbortMultipartUpload), 1);
    assert_eq!(proxy.count_op(Op::CompleteMultipartUpload), 0);
    // Part copies still held by the proxy reach moto after the abort and
    // must find no upload to add to.
    assert!(
        proxy.wait_idle(Duration::from_secs(10)),
        "delayed part copies did not drain"
    );
    // S3 answers those 404 NoSuchUpload; moto 500 (a KeyError on the
    // upload id). Either way none of them may have succeeded.
    let late_parts: Vec<Option<u16>> = proxy
        .requests()
        .iter()
        .filter(|r| r.op == Op::UploadPartCopy)
        .map(|r| r.status)
        .collect();
    assert!(
        late_parts
            .iter()
            .all(|status| status.is_some_and(|s| s >= 400)),
        "every part copy arrived after the abort and failed: {late_parts:?}"
    );
    assert_eq!(
        list_multipart_uploads(&s3, &dst).await,
        0,
        "no orphaned upload"
    );
    assert_eq!(list_all(&s3, &dst, "").await, vec![]);

    // WHEN it runs again without the delay
    proxy.clear_rules();
    let rerun = sync_via(&proxy, &src, &dst, &["--multipart-threshold", "5MiB"]);

    // THEN it converges
    assert_eq!(rerun.code, 0, "{}", rerun.summary);
    assert_eq!(rerun.count("copied"), 1);
    assert_eq!(rerun.rows, vec![]);
    assert_eq!(contents(&s3, &src).await, contents(&s3, &dst).await);
    assert_eq!(list_multipart_uploads(&s3, &dst).await, 0);
}

#[tokio::test]
async fn sigkill_mid_run_then_rerun_copies_only_what_is_missing() {
    // GIVEN 300 small objects whose copies each take 50 ms, four at a time,
    // and a multipart one whose part copies take 3 s
    const TOTAL: usize = 300;
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "sigkill").await;
    // 16 at a time: quick, without flooding moto.
    futures::stream::iter(0..TOTAL)
        .for_each_concurrent(16, |i| {
            let (s3, src) = (&s3, &src);
            async move {
                put(s3, src, &small_key(i), small_body(i)).await;
            }
        })
        .await;
    put_multipart(&s3, &src, "big.bin", 12 * MIB, 5 * MIB).await;
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.add_rule(Rule::on(Op::CopyObject).delay(Duration::from_millis(50)));
    proxy.add_rule(Rule::on(Op::UploadPartCopy).delay(Duration::from_secs(3)));

    // WHEN the CLI is killed with SIGKILL part-way through
    let child = cli()
        .args([
            "sync",
            &format!("s3://{src}"),
            &format!("s3://{dst}"),
            "--endpoint-url",
            proxy.endpoint(),
        ])
        .args([
            "--json",
            "--concurrency",
            "4",
            "--multipart-threshold",
            "5MiB",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the CLI");
    // About a second of copying (4 at a time, 50 ms each): some done, most not.
    assert!(
        proxy.wait_for(Op::CopyObject, 60, Duration::from_secs(20))
            && proxy.wait_for(Op::UploadPartCopy, 1, Duration::from_secs(20)),
        "copies did not start"
    );
    send_signal(child.id(), "-KILL");
    let (code, _) = wait_for_exit(child, Duration::from_secs(10));
    assert_eq!(code, -1, "ended by a signal");
    // Copies the proxy was holding may still land; let them, so what the
    // re-run finds is fixed.
    assert!(
        proxy.wait_idle(Duration::from_secs(10)),
        "delayed copies did not drain"
    );
    let already_there = list_all(&s3, &dst, "").await.len();
    assert!(
        already_there > 0 && already_there < TOTAL,
        "killed mid-run: {already_there} of {TOTAL} copied"
    );
    assert_eq!(
        list_multipart_uploads(&s3, &dst).await,
        1,
        "the kill left the big object's upload open"
    );

    // WHEN it runs again without the delays
    proxy.clear_rules();
    proxy.clear_log();
    let rerun = sync_via(
        &proxy,
        &src,
        &dst,
        &["--concurrency", "16", "--multipart-threshold", "5MiB"],
    );

    // THEN it converges, copying exactly what was missing and nothing twice
    assert_eq!(rerun.code, 0, "{}", rerun.summary);
    let missing = (TOTAL + 1 - already_there) as u64;
    assert_eq!(rerun.count("skip_equal"), already_there as u64);
    assert_eq!(rerun.count("copied"), missing);
    assert_eq!(
        rerun.count("copied") + rerun.count("skip_equal"),
        TOTAL as u64 + 1
    );
    assert_eq!(proxy.count_op(Op::CopyObject), TOTAL - already_there);
    assert_eq!(rerun.rows, vec![]);
    assert_eq!(contents(&s3, &src).await, contents(&s3, &dst).await);
    // AND the upload the killed run left open was aborted
    assert_eq!(proxy.count_op(Op::AbortMultipartUpload), 1);
    assert_eq!(list_multipart_uploads(&s3, &dst).await, 0, "no open upload");
}

/// S3's answer to a KMS-encrypted copy sent without SigV4: an
/// InvalidRequest about encryption that is not the SSE-C one.
const KMS_SIGV4_XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidRequest</Code><Message>Requests specifying Server Side Encryption with AWS KMS managed keys require AWS Signature Version 4.</Message><RequestId>FAULTPROXY</RequestId></Error>";

// Regression: `CopyError::from_failure` (src/backend/outcome.rs) once called any
// InvalidRequest whose message contained "encrypt", "customer" or "sse" an
// SSE-C object, turning real failures into `skipped` rows and exit 3.
#[tokio::test]
async fn an_invalid_request_about_kms_is_a_failure_not_an_sse_c_skip() {
    // GIVEN a copy refused with an InvalidRequest that mentions encryption
    // but is not about a customer-provided key
    let (s3, src, dst, proxy) = fixture("kms-invalid", 2).await;
    proxy.add_rule(
        Rule::on(Op::CopyObject)
            .key("obj-000")
            .respond(400, KMS_SIGV4_XML),
    );

    // WHEN it is synced
    let run = sync_via(&proxy, &src, &dst, &[]);

    // THEN the object failed (someone must fix the configuration); it was
    // not deliberately skipped
    assert_eq!(
        run.row_summaries(),
        vec![row("obj-000", "failed", "InvalidRequest", "400")]
    );
    assert_eq!(run.code, 1, "{}", run.summary);
    assert_eq!(run.count("skipped_sse_c"), 0);
    let copied: Vec<String> = list_all(&s3, &dst, "")
        .await
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(copied, ["obj-001"]);
}

#[tokio::test]
async fn a_source_listing_that_fails_midway_stops_the_run_and_deletes_nothing() {
    // GIVEN a source of two listing pages, and a destination holding keys that
    // are on the source's second page
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "lstfail").await;
    for i in 0..1_050 {
        put(&s3, &src, &format!("k{i:05}"), small_body(i)).await;
    }
    for i in 1_000..1_050 {
        put(&s3, &dst, &format!("k{i:05}"), small_body(i)).await;
    }
    // WHEN the source's second page is denied, with --delete on
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.add_rule(
        Rule::on(Op::ListObjectsV2)
            .bucket(&src)
            .query_contains("continuation-token=")
            .respond(403, ACCESS_DENIED_XML),
    );
    let run = sync_via(&proxy, &src, &dst, &["--delete"]);

    // THEN the run fails and names the listing, and the destination keys the
    // failed page would have shown are not mistaken for extraneous ones
    assert_eq!(run.code, 1, "{}", run.summary);
    let error = run.summary["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("listing s3://{src}/")) && error.contains("AccessDenied"),
        "{error}"
    );
    assert_eq!(run.count("deleted"), 0);
    assert_eq!(proxy.count_op(Op::DeleteObject), 0);
    assert_eq!(proxy.count_op(Op::DeleteObjects), 0);
    assert_eq!(
        list_all(&s3, &dst, "").await.len(),
        1_050 - 1_000 + run.count("copied") as usize
    );
}

#[tokio::test]
async fn a_denied_destination_bucket_is_a_configuration_error_before_any_write() {
    let (s3, src, dst, proxy) = fixture("denied-bucket", 3).await;
    proxy.add_rule(
        Rule::on(Op::ListObjectsV2)
            .bucket(&dst)
            .respond(403, ACCESS_DENIED_XML),
    );
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));

    let out = run_cli(&[
        "sync",
        &source,
        &destination,
        "--endpoint-url",
        proxy.endpoint(),
        "--no-progress",
    ]);

    assert_eq!(out.status, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "access to the destination bucket \"{dst}\" is denied"
        )),
        "{}",
        out.stderr
    );
    let writes: Vec<Op> = proxy
        .requests()
        .iter()
        .map(|r| r.op)
        .filter(|op| *op != Op::ListObjectsV2)
        .collect();
    assert_eq!(writes, vec![], "nothing but the preflight listings");
    assert!(list_all(&s3, &dst, "").await.is_empty());
}

#[tokio::test]
async fn expected_bucket_owners_are_sent_on_every_request_and_no_acl_header_ever() {
    // GIVEN a small and a multipart source, and owners for both buckets
    let (s3, src, dst, proxy) = fixture("owners", 2).await;
    put_multipart(&s3, &src, "mp", 6 * MIB, 5 * MIB).await;
    put(&s3, &dst, "extra", small_body(9)).await;

    let run = sync_via(
        &proxy,
        &src,
        &dst,
        &[
            "--expected-source-owner",
            "111111111111",
            "--expected-dest-owner",
            "222222222222",
            "--delete",
        ],
    );

    // THEN every request carries the owner of the bucket it addresses, and
    // copies also carry the source's owner
    assert_eq!(run.code, 0, "{}", run.summary);
    let requests = proxy.requests();
    let ops: std::collections::BTreeSet<String> =
        requests.iter().map(|r| format!("{:?}", r.op)).collect();
    for op in [
        "CopyObject",
        "UploadPartCopy",
        "CreateMultipartUpload",
        "CompleteMultipartUpload",
        "HeadObject",
        "GetObjectTagging",
        // Deletes go out in batches, a thousand to a DeleteObjects.
        "DeleteObjects",
        "ListObjectsV2",
    ] {
        assert!(ops.contains(op), "{op} was not exercised: {ops:?}");
    }
    for r in &requests {
        let expected = if r.bucket == src {
            "111111111111"
        } else {
            "222222222222"
        };
        assert_eq!(
            r.expected_owner.as_deref(),
            Some(expected),
            "{:?} {} {:?}",
            r.op,
            r.bucket,
            r.key
        );
        if matches!(r.op, Op::CopyObject | Op::UploadPartCopy) {
            assert_eq!(
                r.expected_source_owner.as_deref(),
                Some("111111111111"),
                "{:?} {:?}",
                r.op,
                r.key
            );
        }
        // Buckets with BucketOwnerEnforced (the default since 2023) refuse
        // any request that sets an ACL.
        assert_eq!(
            r.acl_headers,
            Vec::<String>::new(),
            "{:?} {:?}",
            r.op,
            r.key
        );
    }
}

/// What S3 answers to a successful CopyObject.
const COPY_OK_XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyObjectResult><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>&quot;00000000000000000000000000000000&quot;</ETag></CopyObjectResult>";

/// A sync of `n` objects through a server that acknowledges the copy of
/// `obj-001` without making it: the write phase believes it, verification
/// does not, whichever way it checks.
async fn verify_catches_a_copy_acknowledged_but_never_made(tag: &str, n: usize) -> Run {
    let (s3, src, dst, proxy) = fixture(tag, n).await;
    proxy.add_rule(
        Rule::on(Op::CopyObject)
            .key(&small_key(1))
            .respond(200, COPY_OK_XML),
    );

    let run = sync_via(&proxy, &src, &dst, &[]);

    assert_eq!(run.count("copied"), n as u64);
    assert_eq!(run.count("verify_mismatched"), 1);
    assert_eq!(run.code, 1, "{}", run.summary);
    assert_eq!(
        run.row_summaries(),
        vec![row(&small_key(1), "failed", "MissingAtDestination", "")]
    );
    assert_eq!(list_all(&s3, &dst, "").await.len(), n - 1);
    run
}

#[tokio::test]
async fn verify_by_head_catches_a_copy_the_server_acknowledged_but_never_made() {
    // 3 keys written, where listing again would take a page a side: two
    // HEADs a key cost less, so the written keys are checked by HEAD.
    let run = verify_catches_a_copy_acknowledged_but_never_made("lying-head", 3).await;
    assert_eq!(run.count("verify_heads"), 3, "{}", run.summary);
    assert_eq!(run.count("verify_checked"), 3);
    assert_eq!(run.summary["requests"]["HeadObject"], 6, "{}", run.summary);
    assert_eq!(
        run.summary["requests"]["ListObjectsV2"], 2,
        "{}",
        run.summary
    );
}

#[tokio::test]
async fn verify_by_listing_catches_a_copy_the_server_acknowledged_but_never_made() {
    // 20 keys written: 40 HEADs would cost more than a page a side again.
    let run = verify_catches_a_copy_acknowledged_but_never_made("lying-list", 20).await;
    assert_eq!(run.count("verify_heads"), 0, "{}", run.summary);
    assert_eq!(run.count("verify_checked"), 20);
    assert!(
        run.summary["requests"]["HeadObject"].is_null(),
        "{}",
        run.summary
    );
    assert_eq!(
        run.summary["requests"]["ListObjectsV2"], 4,
        "{}",
        run.summary
    );
}

#[tokio::test]
async fn an_object_page_that_says_more_but_names_no_token_fails_the_run_rather_than_end_it() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "trunc").await;
    // GIVEN a source of a and b, whose listing stops after a, saying
    // there is more but not where from
    put(&s3, &src, "a", body(1, 10)).await;
    put(&s3, &src, "b", body(2, 10)).await;
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.add_rule(Rule::on(Op::ListObjectsV2).bucket(&src).respond(
        200,
        r#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>true</IsTruncated><Contents><Key>a</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>"x"</ETag><Size>10</Size></Contents></ListBucketResult>"#,
    ));

    let out = run_cli(&[
        "sync",
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        "--endpoint-url",
        proxy.endpoint(),
    ]);

    // THEN the run fails and says why (it ended there, and reported
    // success with b never looked at)
    assert_ne!(out.status, 0);
    assert!(
        out.stderr.contains("NextContinuationToken"),
        "{}",
        out.stderr
    );
}
