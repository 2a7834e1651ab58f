//! `s3-fanout sync --failure-threshold N`: how many failed objects a run
//! tolerates before it fails as a whole, as the serverless runtime's
//! `failure_threshold` does (tests/serverless.rs).
//!
//! Over the threshold the run's error says how many objects failed, the
//! threshold, and where the report is. At or below it there is no such
//! error, but the failures are still reported and the exit code is still 1,
//! as `s3-fanout run --wait` exits for a tolerated serverless run: the exit
//! code says whether every object is synced.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::fault_proxy::{FaultProxy, INTERNAL_ERROR_XML, Op, Rule};
use support::*;

const POISON: &str = "poison/key";

/// A source of three good objects and one whose copy S3 answers 500
/// InternalError every time, and a proxy in front of moto that does so.
async fn poisoned_pair(tag: &str) -> (aws_sdk_s3::Client, String, String, FaultProxy) {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, tag).await;
    // Seeded straight at moto: only the CLI's requests meet the proxy.
    for i in 0..3 {
        put(&s3, &src, &format!("ok/{i}"), body(i, 20)).await;
    }
    put(&s3, &src, POISON, body(99, 20)).await;
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.add_rule(
        Rule::on(Op::CopyObject)
            .bucket(&dst)
            .key(POISON)
            .respond(500, INTERNAL_ERROR_XML),
    );
    (s3, src, dst, proxy)
}

/// Sync through `proxy`, giving up on a request after two attempts (the
/// poisoned copy fails either way; more attempts only cost time).
fn sync_via(proxy: &FaultProxy, src: &str, dst: &str, extra: &[&str]) -> CliOutput {
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));
    let mut args = vec![
        "sync",
        &source,
        &destination,
        "--endpoint-url",
        proxy.endpoint(),
        "--no-progress",
        "--retry-mode",
        "standard",
        "--max-attempts",
        "2",
    ];
    args.extend_from_slice(extra);
    let out = run_cli(&args);
    proxy.assert_no_errors();
    assert!(
        proxy.count(Op::CopyObject, POISON) >= 2,
        "the poisoned copy was attempted and retried"
    );
    out
}

/// The lines of stderr that are the CLI's own error (not log lines).
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.starts_with("error: "))
        .collect()
}

/// failures.csv as (Key, TaskStatus, ErrorCode, HTTPStatusCode) rows.
fn failure_rows(path: &Path) -> Vec<(String, String, String, String)> {
    let mut reader = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    reader
        .records()
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("{path:?}: {e}"));
            (r[1].into(), r[3].into(), r[4].into(), r[5].into())
        })
        .collect()
}

fn poison_row() -> Vec<(String, String, String, String)> {
    vec![(
        POISON.into(),
        "failed".into(),
        "InternalError".into(),
        "500".into(),
    )]
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// The one run folder a report directory holds.
fn only_run_folder(report_dir: &Path) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(report_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs.into_iter().next().unwrap()
}

#[tokio::test]
async fn by_default_one_failed_object_fails_the_run_and_its_error_names_the_report() {
    // GIVEN a key whose copy always fails
    let (s3, src, dst, proxy) = poisoned_pair("thr-default").await;
    let report = tempfile::tempdir().unwrap();

    // WHEN it is synced with the default threshold (0) and a report folder
    let out = sync_via(
        &proxy,
        &src,
        &dst,
        &["--json", "--report", report.path().to_str().unwrap()],
    );

    // THEN the run fails, and its error, on stderr and in the summary, says
    // how many objects failed, the threshold, and where summary.json is
    assert_eq!(out.status, 1, "{}", out.stderr);
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();
    let summary_json = summary["summary_json"].as_str().expect("summary_json");
    let expected = format!("1 objects failed (threshold 0); report: {summary_json}");
    assert_eq!(summary["error"], expected.as_str());
    assert_eq!(
        error_lines(&out.stderr),
        [format!("error: {expected}")],
        "{}",
        out.stderr
    );
    // AND that path is the summary.json written, which says the same
    let folder = only_run_folder(report.path());
    assert_eq!(Path::new(summary_json), folder.join("summary.json"));
    let written = read_json(&folder.join("summary.json"));
    assert_eq!(written["error"], expected.as_str());
    assert_eq!(written["summary_json"], summary_json);
    assert_eq!(written["failure_threshold"], 0);
    assert_eq!(count(&written, "failed"), 1);
    // AND the report lists the key, once; the other objects were copied
    assert_eq!(failure_rows(&folder.join("failures.csv")), poison_row());
    assert_eq!(count(&written, "copied"), 3);
    assert_eq!(count(&written, "verify_mismatched"), 0);
    let copied: Vec<String> = list_all(&s3, &dst, "")
        .await
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(copied, ["ok/0", "ok/1", "ok/2"]);

    // AND without --report the error names the failures.csv the CLI kept
    proxy.clear_log();
    let out = sync_via(&proxy, &src, &dst, &["--json"]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();
    let failures_csv = summary["failures_csv"].as_str().expect("failures_csv");
    let expected = format!("1 objects failed (threshold 0); report: {failures_csv}");
    assert_eq!(summary["error"], expected.as_str());
    assert_eq!(error_lines(&out.stderr), [format!("error: {expected}")]);
    assert_eq!(failure_rows(Path::new(failures_csv)), poison_row());
}

#[tokio::test]
async fn failures_within_the_threshold_are_reported_and_still_exit_1_without_an_error() {
    // GIVEN a key whose copy always fails
    let (s3, src, dst, proxy) = poisoned_pair("thr-tolerated").await;
    let report = tempfile::tempdir().unwrap();

    // WHEN one failed object is tolerated
    let out = sync_via(
        &proxy,
        &src,
        &dst,
        &[
            "--failure-threshold",
            "1",
            "--report",
            report.path().to_str().unwrap(),
        ],
    );

    // THEN the run has no error, yet exits 1 as the serverless runtime's
    // `run --wait` does for a run within its threshold: the key is not synced
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert_eq!(error_lines(&out.stderr), Vec::<&str>::new());
    let folder = only_run_folder(report.path());
    let written = read_json(&folder.join("summary.json"));
    assert_eq!(written["error"], Value::Null);
    assert_eq!(written["status"], "failed");
    assert_eq!(written["exit_code"], 1);
    assert_eq!(written["failure_threshold"], 1);
    assert_eq!(count(&written, "failed"), 1);
    // AND the failure is still in the report and printed, with the reason
    // the run did not fail
    assert_eq!(failure_rows(&folder.join("failures.csv")), poison_row());
    assert!(
        out.stdout.contains("failed   InternalError") && out.stdout.contains(POISON),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("tolerated  1 failed, within the failure threshold of 1"),
        "{}",
        out.stdout
    );
    assert_eq!(list_all(&s3, &dst, "").await.len(), 3);

    // AND the threshold is a bound, not a switch: two failed objects are
    // one too many for it
    put(&s3, &src, "poison/two", body(98, 20)).await;
    proxy.add_rule(
        Rule::on(Op::CopyObject)
            .bucket(&dst)
            .key("poison/two")
            .respond(500, INTERNAL_ERROR_XML),
    );
    let out = sync_via(&proxy, &src, &dst, &["--failure-threshold", "1", "--json"]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();
    let error = summary["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("2 objects failed (threshold 1); report: "),
        "{summary}"
    );
}

#[tokio::test]
async fn fail_fast_stops_the_run_once_failures_pass_the_threshold_and_says_why() {
    // GIVEN 1,000 objects of which every 20th is refused for good
    // (AccessDenied, as a missing KMS grant answers)
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "thr-failfast").await;
    futures::future::join_all((0..1000).map(|i| {
        let (s3, src) = (s3.clone(), src.clone());
        async move { put(&s3, &src, &format!("ff/{i:04}"), body(i, 20)).await }
    }))
    .await;
    let proxy = FaultProxy::start(&moto().endpoint);
    for i in (7..1000).step_by(20) {
        proxy.add_rule(
            Rule::on(Op::CopyObject)
                .bucket(&dst)
                .key(&format!("ff/{i:04}"))
                .respond(403, support::fault_proxy::ACCESS_DENIED_XML),
        );
    }
    let report = tempfile::tempdir().unwrap();

    // WHEN it is synced failing fast past 10 failures
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));
    let out = run_cli(&[
        "sync",
        &source,
        &destination,
        "--endpoint-url",
        proxy.endpoint(),
        "--no-progress",
        "--json",
        "--concurrency",
        "8",
        "--failure-threshold",
        "10",
        "--fail-fast",
        "--report",
        report.path().to_str().unwrap(),
    ]);

    // THEN it stops: exit 1, and the error (stderr and summary) says after
    // how many failures, and where the report is
    assert_eq!(out.status, 1, "{}", out.stderr);
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();
    let error = summary["error"].as_str().unwrap_or_default();
    let failures: u64 = error
        .strip_prefix("stopped: failure threshold 10 passed after ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the error says why: {error:?}"));
    assert!(failures > 10, "{error}");
    let summary_json = summary["summary_json"].as_str().expect("summary_json");
    assert!(
        error.ends_with(&format!("; report: {summary_json}")),
        "{error}"
    );
    assert_eq!(error_lines(&out.stderr), [format!("error: {error}")]);
    assert_eq!(summary["status"], "failed");
    assert_eq!(summary["stopped"]["reason"], "failure_threshold");
    // AND far fewer than the 1,000 objects were attempted; those it did not
    // start are counted dropped, and the failures are the report's rows
    let attempted = proxy.count_op(Op::CopyObject);
    println!("{attempted} copies attempted, stopped after {failures} failures");
    assert!(attempted < 500, "{attempted} copies attempted");
    assert!(count(&summary, "dropped") > 0, "{summary}");
    assert_eq!(count(&summary, "failed"), failures);
    let folder = only_run_folder(report.path());
    assert_eq!(
        failure_rows(&folder.join("failures.csv")).len() as u64,
        failures
    );
    assert_eq!(list_multipart_uploads(&s3, &dst).await, 0);
}
