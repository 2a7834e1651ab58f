//! Operating a serverless run: what its functions tell CloudWatch, what its
//! report says about time, and what `s3-fanout status --watch` shows while
//! it runs.
//!
//! One run on the local stack serves the first three tests: objects to
//! copy (one of whose copies S3 throttles once), objects already equal, and
//! objects whose copy S3 refuses (403). It is started with `s3-fanout run`,
//! followed to its end with `s3-fanout status --watch`, and its functions'
//! EMF lines are read from the test stack's EMF log (`TestStack::emf_log`).
//!
//! The test stack delivers every SQS batch twice (see
//! `support::local_stack`): both deliveries copy and both report it, as a
//! real duplicate delivery would. Copier records are therefore compared with
//! summary.json per batch id, once each.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use s3_fanout::report::emf;
use serde_json::Value;
use support::fault_proxy::{ACCESS_DENIED_XML, Op, Rule, SLOW_DOWN_XML};
use support::local_stack::{one_run_at_a_time, stack, status_json};
use support::*;

const TO_COPY: usize = 30;
const EQUAL: usize = 10;
const REFUSED: usize = 3;

/// The run the first tests look at, made once per test binary.
struct ObservedRun {
    run_id: String,
    /// `s3-fanout status RUN --watch`, from just after the start to the end.
    watch: CliOutput,
    summary: Value,
    /// `status --json` once the run ended.
    state: Value,
    /// This run's EMF records, each already checked by `emf::validate_line`.
    records: Vec<Value>,
}

/// Run `work` on the stack's runtime, which outlives every test.
fn on_stack<T: Send + 'static>(work: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let runtime = stack().runtime.clone();
    std::thread::spawn(move || runtime.block_on(work))
        .join()
        .expect("stack task")
}

fn observed_run() -> &'static ObservedRun {
    static RUN: OnceLock<Result<ObservedRun, String>> = OnceLock::new();
    // A run that failed to happen fails every test that needed it, once.
    let run = RUN.get_or_init(|| {
        std::thread::spawn(observe).join().map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the observed run panicked".into())
        })
    });
    run.as_ref()
        .unwrap_or_else(|why| panic!("no observed run: {why}"))
}

/// Every EMF line of this test binary, each checked as CloudWatch would.
fn emf_records() -> Vec<Value> {
    let text = std::fs::read_to_string(&stack().emf_log).unwrap_or_default();
    text.lines()
        .map(|line| emf::validate_line(line).unwrap_or_else(|why| panic!("{why}: {line}")))
        .collect()
}

fn observe() -> ObservedRun {
    let stack = stack();
    let (src, dst) = on_stack(async {
        let s3 = s3().await;
        let (src, dst) = bucket_pair(&s3, "metrics").await;
        // Under several prefixes, so several shards and lister invocations.
        for i in 0..TO_COPY {
            let key = format!("copy/{}/{i:03}", i % 3);
            put(&s3, &src, &key, body(i as u64, 100 + i * 10)).await;
        }
        for i in 0..EQUAL {
            let key = format!("equal/{i:03}");
            put(&s3, &src, &key, body(1000 + i as u64, 50)).await;
            put(&s3, &dst, &key, body(1000 + i as u64, 50)).await;
        }
        for i in 0..REFUSED {
            put(&s3, &src, &format!("refused/{i}"), body(2000, 20)).await;
        }
        (src, dst)
    });
    for i in 0..REFUSED {
        stack.proxy.add_rule(
            Rule::on(Op::CopyObject)
                .bucket(&dst)
                .key(&format!("refused/{i}"))
                .respond(403, ACCESS_DENIED_XML),
        );
    }
    // One slow copy: the listers finish before the copies do, so the run
    // waits for its copiers at least once, and the watcher sees it.
    stack.proxy.add_rule(
        Rule::on(Op::CopyObject)
            .bucket(&dst)
            .key("copy/2/002")
            .times(1)
            .delay(Duration::from_secs(3)),
    );
    // One throttled copy, which the SDK retries: Retries and Throttles.
    stack.proxy.add_rule(
        Rule::on(Op::CopyObject)
            .bucket(&dst)
            .key("copy/0/000")
            .times(1)
            .respond(503, SLOW_DOWN_XML),
    );

    let _turn = one_run_at_a_time();
    let run_id = unique_bucket("metrics-run");
    let outputs = stack.outputs_file.display().to_string();
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));
    // Within the threshold: the execution succeeds, the exit code says 1.
    let threshold = REFUSED.to_string();
    let started = run_cli(&[
        "run",
        "--stack-outputs",
        &outputs,
        &source,
        &destination,
        "--run-id",
        &run_id,
        "--failure-threshold",
        &threshold,
    ]);
    started.assert_success();
    // Refreshed more often than the default 2 s, so that no phase, however
    // short on this small run, goes unseen.
    let watch = run_cli(&[
        "status",
        "--stack-outputs",
        &outputs,
        "--watch",
        "--interval",
        "0.3",
        &run_id,
    ]);

    let summary = on_stack({
        let (store, run_id) = (stack.env.store.clone(), run_id.clone());
        async move { store.get_json::<Value>(&run_id, "summary.json").await }
    })
    .expect("summary.json is readable")
    .unwrap_or_else(|| panic!("no summary.json: {}", watch.stdout));
    let state = status_json(&run_id);
    let records = emf_records()
        .into_iter()
        .filter(|r| r["run_id"] == run_id.as_str())
        .collect();
    ObservedRun {
        run_id,
        watch,
        summary,
        state,
        records,
    }
}

/// A metric of a record, 0 when absent.
fn metric(record: &Value, name: &str) -> u64 {
    record[name].as_f64().unwrap_or(0.0) as u64
}

fn of_function<'a>(records: &'a [Value], function: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["FunctionName"] == format!("s3-fanout-{function}").as_str())
        .collect()
}

#[test]
fn status_watch_follows_a_run_through_its_phases_and_exits_with_its_status() {
    let run = observed_run();
    let out = &run.watch;
    // THEN it exits as `run --wait` would: the run succeeded within its
    // failure threshold, and its report's exit code is 1
    assert_eq!(run.state["status"], "SUCCEEDED", "{}", out.stderr);
    assert_eq!(run.summary["exit_code"], 1);
    assert_eq!(out.status, 1, "{}\n{}", out.stdout, out.stderr);
    // AND off a terminal it printed plain lines, one per change
    assert!(
        !out.stdout.contains('\u{1b}') && !out.stdout.contains('\r'),
        "no control codes: {:?}",
        out.stdout
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    let progress: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("batches "))
        .collect();
    assert!(progress.len() >= 2, "{}", out.stdout);
    let unique: BTreeSet<&str> = progress.iter().copied().collect();
    assert_eq!(
        unique.len(),
        progress.len(),
        "a line per change: {}",
        out.stdout
    );
    // AND the phases it went through, in the pipeline's order, ending in
    // the report; copying, which waits 2 s for the copiers at least once,
    // is seen
    let order = ["plan", "list and send", "copy", "validate", "report"];
    // (A line from before the execution entered its first state has none.)
    let seen: Vec<usize> = progress
        .iter()
        .filter_map(|l| {
            order
                .iter()
                .position(|phase| l.contains(&format!("  {phase}  ")))
        })
        .collect();
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{}", out.stdout);
    assert!(seen.contains(&2), "the copy phase: {}", out.stdout);
    assert_eq!(seen.last(), Some(&4), "{}", out.stdout);
    // AND the last line has every batch done, the objects copied out of
    // those sent, a rate, and the failures
    let last = progress.last().unwrap();
    let sent = run.state["batches_sent"].as_u64().unwrap();
    assert!(sent > 1, "{}", run.state);
    assert_eq!(run.state["batches_done"], sent);
    assert!(last.starts_with("SUCCEEDED"), "{last}");
    assert!(last.contains(&format!("batches {sent}/{sent}")), "{last}");
    let tasks = TO_COPY + REFUSED;
    assert!(
        last.contains(&format!("{TO_COPY}/{tasks} objects")),
        "{last}"
    );
    assert!(last.contains(&format!("{REFUSED} failed")), "{last}");
    assert!(last.contains("objects/s"), "{last}");
    let rate: f64 = last
        .split(" objects/s")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rate in {last}"));
    assert!(rate >= 0.0);
    // AND where the report is
    let summary_json = run.summary["summary_json"].as_str().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("report ") && l.contains(summary_json)),
        "{}",
        out.stdout
    );
    // AND `status --json` carries the same figures
    assert_eq!(run.state["phase"], "report");
    assert_eq!(run.state["objects_copied"], TO_COPY as u64);
    assert_eq!(run.state["objects_failed"], REFUSED as u64);
    assert_eq!(run.state["tasks_sent"], tasks as u64);
    assert!(run.state["objects_per_sec"].as_f64().unwrap() > 0.0);
    assert!(run.state["elapsed_secs"].as_f64().unwrap() > 0.0);
}

#[test]
fn every_function_emits_valid_emf_and_the_copiers_add_up_to_the_report() {
    let run = observed_run();
    let summary = &run.summary;
    // THEN every line of the log is an EMF record CloudWatch accepts (the
    // records read were validated), under one namespace and dimension set
    assert!(!run.records.is_empty());
    for record in &run.records {
        let directive = &record["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "s3-fanout", "{record}");
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([["FunctionName"]]),
            "{record}"
        );
        for name in [
            "ObjectsCopied",
            "BytesCopied",
            "ObjectsSkipped",
            "ObjectsFailed",
            "Retries",
            "Throttles",
            "BatchDuration",
        ] {
            assert!(record[name].is_number(), "{name} in {record}");
        }
    }
    // AND each function reported
    let names: BTreeSet<&str> = run
        .records
        .iter()
        .filter_map(|r| r["FunctionName"].as_str())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "s3-fanout-copier",
            "s3-fanout-lister",
            "s3-fanout-planner",
            "s3-fanout-reporter"
        ]),
        "{names:?}"
    );

    // AND the copiers' records, once per batch, add up to the report
    let mut by_batch: BTreeMap<&str, &Value> = BTreeMap::new();
    for record in of_function(&run.records, "copier") {
        // A delivery that found its batch counted done copied nothing.
        if record["handed_back"] == false && record["duplicate"] != true {
            by_batch.insert(record["batch_id"].as_str().unwrap(), record);
        }
    }
    let sum = |name: &str| by_batch.values().map(|r| metric(r, name)).sum::<u64>();
    assert_eq!(
        by_batch.len() as u64,
        run.state["batches_done"].as_u64().unwrap()
    );
    assert_eq!(
        sum("ObjectsCopied"),
        count(summary, "copied") + count(summary, "updated")
    );
    assert_eq!(sum("ObjectsCopied"), TO_COPY as u64);
    assert_eq!(sum("BytesCopied"), count(summary, "bytes_copied"));
    assert_eq!(sum("ObjectsFailed"), count(summary, "failed"));
    assert_eq!(sum("ObjectsFailed"), REFUSED as u64);
    // AND the throttled copy shows as a throttle and a retry
    let copiers = of_function(&run.records, "copier");
    let all = |name: &str| copiers.iter().map(|r| metric(r, name)).sum::<u64>();
    assert!(all("Throttles") >= 1, "{copiers:#?}");
    assert!(all("Retries") >= 1, "{copiers:#?}");
    assert!(
        copiers
            .iter()
            .all(|r| r["BatchDuration"].as_f64().unwrap() >= 0.0)
    );

    // AND the listers' records say what was listed, skipped, sent, verified
    let listers = of_function(&run.records, "lister");
    let phase_sum = |phase: &str, name: &str| {
        listers
            .iter()
            .filter(|r| r["phase"] == phase)
            .map(|r| metric(r, name))
            .sum::<u64>()
    };
    let keys = (TO_COPY + EQUAL + REFUSED) as u64;
    assert_eq!(phase_sum("write", "ObjectsListed"), keys);
    assert_eq!(phase_sum("write", "ObjectsSkipped"), EQUAL as u64);
    assert_eq!(
        phase_sum("write", "BatchesSent"),
        run.state["batches_sent"].as_u64().unwrap()
    );
    assert_eq!(
        phase_sum("validate", "ObjectsVerified"),
        count(summary, "verify_checked")
    );
    // VALIDATE lists only the shards whose write phase sent a batch: every
    // key to copy or refused, not the shards of equal keys alone.
    let validated = phase_sum("validate", "ObjectsListed");
    assert!(
        ((TO_COPY + REFUSED) as u64..keys).contains(&validated),
        "{validated} of {keys}"
    );

    // AND the reporter's last progress check saw every batch done
    let reporters = of_function(&run.records, "reporter");
    let last = reporters
        .iter()
        .rfind(|r| r["action"] == "progress")
        .expect("progress checks");
    assert_eq!(metric(last, "BatchesDone"), metric(last, "BatchesSent"));
    assert_eq!(
        metric(last, "BatchesSent"),
        run.state["batches_sent"].as_u64().unwrap()
    );
    // AND the planner reported once for the plan and once for starting
    // VALIDATE, copying nothing
    let all_planners = of_function(&run.records, "planner");
    let (starts, planners): (Vec<&Value>, Vec<&Value>) = all_planners
        .iter()
        .copied()
        .partition(|r| r["action"] == "validate");
    assert_eq!(planners.len(), 1, "{all_planners:#?}");
    assert_eq!(starts.len(), 1, "{all_planners:#?}");
    assert_eq!(starts[0]["run_id"], run.run_id.as_str());
    assert_eq!(metric(planners[0], "ObjectsCopied"), 0);
    assert!(metric(planners[0], "Shards") >= 1);
    assert_eq!(planners[0]["run_id"], run.run_id.as_str());
}

#[test]
fn the_report_has_a_monotonic_timeline_ending_at_the_totals_and_its_phases_in_order() {
    let run = observed_run();
    let summary = &run.summary;
    let timeline = summary["timeline"].as_array().expect("a timeline");
    assert!(timeline.len() >= 2, "{summary}");
    let point = |p: &Value, field: &str| p[field].as_f64().unwrap();
    // THEN it starts at zero and only grows, in time and in outcomes
    assert_eq!(point(&timeline[0], "at_secs"), 0.0);
    assert_eq!(point(&timeline[0], "objects"), 0.0);
    for pair in timeline.windows(2) {
        assert!(
            point(&pair[0], "at_secs") < point(&pair[1], "at_secs"),
            "{pair:?}"
        );
        for field in ["objects", "bytes", "failed"] {
            assert!(point(&pair[0], field) <= point(&pair[1], field), "{pair:?}");
        }
    }
    // AND it ends at the run's totals, at its duration
    let end = timeline.last().unwrap();
    let total = |name: &str| count(summary, name) as f64;
    assert_eq!(point(end, "objects"), total("copied") + total("updated"));
    assert_eq!(point(end, "bytes"), total("bytes_copied"));
    assert_eq!(point(end, "failed"), total("failed"));
    let duration = summary["duration_secs"].as_f64().unwrap();
    assert!((point(end, "at_secs") - duration).abs() < 1e-6, "{summary}");

    // AND the phases come in the pipeline's order, each within the run
    let phases = summary["phases"].as_array().expect("phases");
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["plan", "list and send", "copy", "validate", "report"]
    );
    let starts: Vec<f64> = phases.iter().map(|p| point(p, "started_secs")).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{phases:?}");
    for phase in phases {
        let ends = point(phase, "started_secs") + point(phase, "duration_secs");
        assert!(point(phase, "duration_secs") >= 0.0, "{phase}");
        assert!(ends <= duration + 1e-6, "{phase} ends after the run");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_replicator_emits_the_common_figures_beside_its_own() {
    use s3_fanout::local_stack::replication::{self, ReplicationOptions};
    // GIVEN replication between two buckets, its EMF lines in the stack's log
    let _ = stack();
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "metrics-repl").await;
    let name = unique_bucket("metrics-repl");
    let options = ReplicationOptions::new(
        &moto().endpoint,
        &name,
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
    );
    let cancel = tokio_util::sync::CancellationToken::new();
    replication::start(&options, cancel.clone())
        .await
        .expect("replication starts");

    // WHEN objects are put at the source
    let mut bytes = 0;
    for i in 0..5 {
        let data = body(i, 300 + i as usize);
        bytes += data.len() as u64;
        put(&s3, &src, &format!("r/{i}"), data).await;
    }

    // THEN the replicator's records add up to what it copied
    let function = format!("{name}-replicator");
    let started = Instant::now();
    let records = loop {
        let records: Vec<Value> = emf_records()
            .into_iter()
            .filter(|r| r["FunctionName"] == function.as_str())
            .collect();
        let replicated: u64 = records.iter().map(|r| metric(r, "Replicated")).sum();
        if replicated >= 5 || started.elapsed() > Duration::from_secs(60) {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    cancel.cancel();
    let sum = |name: &str| records.iter().map(|r| metric(r, name)).sum::<u64>();
    assert_eq!(sum("Replicated"), 5, "{records:#?}");
    assert_eq!(sum("ObjectsCopied"), 5);
    assert_eq!(sum("BytesCopied"), bytes);
    assert_eq!(sum("BytesReplicated"), bytes);
    assert_eq!(sum("ObjectsFailed"), 0);
    for record in &records {
        for name in ["ObjectsSkipped", "Retries", "Throttles", "BatchDuration"] {
            assert!(record[name].is_number(), "{name} in {record}");
        }
        assert_eq!(
            record["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["FunctionName"]])
        );
    }
}
