//! Stopping a serverless run (issue 22): `s3-fanout cancel`, fail-fast past
//! the failure threshold, and Ctrl-C while `run --wait` follows a run, on
//! the local stack (moto's Step Functions running the real state machine).
//!
//! The fleet is slowed at the fault proxy (each copy answered after a
//! delay, as a busy region would), so a run is still copying when it is
//! stopped. Copies are counted where they arrive, at the proxy, by the time
//! they were sent; the stop mark's own time says which came after it.

mod support;

use std::time::Duration;

use aws_sdk_s3::Client;
use futures::StreamExt;
use serde_json::Value;
use support::fault_proxy::{ACCESS_DENIED_XML, Op, Rule};
use support::local_stack::{TestStack, stack_with, status_json};
use support::*;

const MIB: usize = 1024 * 1024;

/// The tests take turns: they share the stack and its proxy's rules (each
/// slows its own destination and clears its rules at the end), and a
/// stopped run's copies are counted against the fleet's whole capacity.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Copier invocations at once (the local stack's event source), messages
/// per invocation, and tasks each message copies at once (the copier's
/// default `S3_FANOUT_COPY_CONCURRENCY`): the copies that can be in flight
/// in the whole fleet.
const COPIERS: usize = 4;
const MESSAGES_PER_INVOCATION: usize = 1;
const TASKS_PER_MESSAGE: usize = 16;
const IN_FLIGHT: usize = COPIERS * MESSAGES_PER_INVOCATION * TASKS_PER_MESSAGE;

/// Every copy answered this late: longer than the copiers' look at the
/// stop mark (every second), so a task slot starts at most one more copy
/// before its invocation sees the mark.
const COPY_DELAY: Duration = Duration::from_millis(1500);

fn stack() -> &'static TestStack {
    stack_with(|options| {
        assert_eq!(options.max_concurrency, COPIERS);
        assert_eq!(options.batch_size as usize, MESSAGES_PER_INVOCATION);
        // Whole ranges a lister invocation: the listing keeps ahead of the
        // slowed copies.
        options.lister_max_keys = None;
        // A batch of slowed copies takes seconds; it must not reappear
        // while its copier still works.
        options.visibility_timeout_secs = 20;
    })
}

fn outputs() -> String {
    stack().outputs_file.display().to_string()
}

/// Run `future` on the stack's runtime (its clients live there).
async fn on_stack<T: Send + 'static>(
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    stack().runtime.spawn(future).await.expect("stack task")
}

/// The run's summary.json, as its reporter wrote it.
async fn summary_of(run_id: &str) -> Value {
    let (store, run_id) = (stack().env.store.clone(), run_id.to_owned());
    on_stack(async move { store.get_json::<Value>(&run_id, "summary.json").await })
        .await
        .expect("summary.json readable")
        .expect("summary.json written")
}

/// `count` small objects `PREFIX/NNNNN` in `bucket`, 32 puts at a time.
async fn seed(s3: &Client, bucket: &str, prefix: &str, count: usize) {
    futures::stream::iter(0..count)
        .for_each_concurrent(32, |i| async move {
            put(s3, bucket, &format!("{prefix}/{i:05}"), body(i as u64, 64)).await;
        })
        .await;
}

/// Start a run and return its id at once.
fn start(src: &str, dst: &str, extra: &[&str]) -> String {
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));
    let outputs = outputs();
    let mut args = vec!["run", "--stack-outputs", &outputs, &source, &destination];
    args.extend_from_slice(extra);
    let out = run_cli(&args);
    assert_eq!(out.status, 0, "{}", out.stderr);
    out.stdout.trim().to_owned()
}

/// Wait until the proxy has seen `n` requests of `op` to `bucket`.
fn wait_for(op: Op, bucket: &str, n: usize, within: Duration) {
    let started = std::time::Instant::now();
    loop {
        let seen = stack()
            .proxy
            .requests()
            .iter()
            .filter(|r| r.op == op && r.bucket == bucket)
            .count();
        if seen >= n {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{seen} of {n} {op:?} to {bucket} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait for the run's execution to end; its last status.
fn wait_until_ended(run_id: &str, within: Duration) -> Value {
    let started = std::time::Instant::now();
    loop {
        let state = status_json(run_id);
        if state["status"] != "RUNNING" {
            return state;
        }
        assert!(
            started.elapsed() < within,
            "run {run_id} still running: {state}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether the work and range queues empty within 90 s of the run's end:
/// the test stack delivers every message twice, and a second delivery may
/// still be in a copier when the report is written (it then copies nothing
/// and deletes its message), or be a range task handed back because the
/// first held its lease (it reappears after the range queue's 30 s
/// visibility timeout, finds the run stopped and is deleted).
async fn queues_empty() -> bool {
    for _ in 0..90 {
        if queues_empty_now().await {
            return true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    false
}

/// Nothing visible, in flight or delayed on the work and range queues.
async fn queues_empty_now() -> bool {
    let env = stack().env.clone();
    on_stack(async move {
        for queue in [&env.config.queue_url, &env.config.range_queue_url] {
            let queue = queue.as_deref().expect("the stack's queues");
            let attributes = env
                .sqs
                .get_queue_attributes()
                .queue_url(queue)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
                .send()
                .await
                .expect("queue attributes");
            let attributes = attributes.attributes().cloned().unwrap_or_default();
            use aws_sdk_sqs::types::QueueAttributeName as A;
            for name in [
                A::ApproximateNumberOfMessages,
                A::ApproximateNumberOfMessagesNotVisible,
                A::ApproximateNumberOfMessagesDelayed,
            ] {
                if attributes.get(&name).map(String::as_str) != Some("0") {
                    return false;
                }
            }
        }
        true
    })
    .await
}

fn n(summary: &Value, name: &str) -> u64 {
    summary["counts"][name].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_mid_copy_stops_the_fleet_at_its_in_flight_copies_and_reports_what_was_done() {
    let _turn = TURN.lock().await;
    let proxy = &stack().proxy;
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "cancel").await;
    // GIVEN 2,000 small objects, one copied in parts by its copier (11 MiB,
    // 5 MiB parts) and one split into part tasks (26 MiB), all slowed
    put_multipart(&s3, &src, "big/inline.bin", 11 * MIB, 5 * MIB).await;
    put_multipart(&s3, &src, "big/split.bin", 26 * MIB, 5 * MIB).await;
    seed(&s3, &src, "obj", 2000).await;
    proxy.add_rule(Rule::on(Op::CopyObject).bucket(&dst).delay(COPY_DELAY));
    proxy.add_rule(
        Rule::on(Op::UploadPartCopy)
            .bucket(&dst)
            .delay(Duration::from_secs(3)),
    );

    // WHEN the run is cancelled while it copies, with an upload open
    let run_id = start(&src, &dst, &[]);
    wait_for(Op::UploadPartCopy, &dst, 1, Duration::from_secs(120));
    wait_for(Op::CopyObject, &dst, 150, Duration::from_secs(120));
    let out = run_cli(&["cancel", "--stack-outputs", &outputs(), &run_id, "--wait"]);

    // THEN the cancel took effect (exit 0), and the execution ended as
    // Cancelled, its cause naming the report
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stderr.contains("cancelled run"), "{}", out.stderr);
    let state = status_json(&run_id);
    assert_eq!(state["status"], "FAILED", "{state}");
    assert_eq!(state["error"], "Cancelled", "{state}");
    let cause = state["cause"].as_str().unwrap_or_default();
    assert!(
        cause.starts_with("cancelled; report: s3://") && cause.contains(&run_id),
        "{cause}"
    );

    // AND no copy started after the mark but one per task slot in flight
    // at the time: a slot whose copy ended before its invocation saw the
    // mark (within a second, less than a copy's delay) started one more
    let env = stack().env.clone();
    let mark_run = run_id.clone();
    let mark = on_stack(async move {
        s3_fanout::serverless::stop::read(env.counters().unwrap(), &mark_run).await
    })
    .await
    .expect("the mark reads")
    .expect("the run is marked");
    let requests = proxy.requests();
    let copies = |after: bool| {
        requests
            .iter()
            .filter(|r| r.bucket == dst && matches!(r.op, Op::CopyObject | Op::UploadPartCopy))
            .filter(|r| (r.at_ms > mark.at_ms) == after)
            .count()
    };
    let (before, after) = (copies(false), copies(true));
    println!("copies before the mark {before}, after it {after} (bound {IN_FLIGHT})");
    assert!(
        after <= IN_FLIGHT,
        "{after} copies started after the mark; the fleet has {IN_FLIGHT} task slots"
    );
    assert!(
        before < 1000,
        "the run was stopped mid-copy: {before} copies before"
    );

    // AND the report says cancelled, with copied + dropped = what was sent
    let summary = summary_of(&run_id).await;
    assert_eq!(summary["status"], "cancelled", "{summary}");
    assert_eq!(summary["stopped"]["reason"], "cancelled", "{summary}");
    let planned = n(&summary, "plan_copy") + n(&summary, "plan_update");
    let settled = n(&summary, "copied") + n(&summary, "updated") + n(&summary, "failed");
    assert!(n(&summary, "dropped") > 0, "{summary}");
    assert!(n(&summary, "dropped_batches") > 0, "{summary}");
    assert_eq!(
        settled + n(&summary, "dropped"),
        planned,
        "every object sent was copied, failed or dropped: {summary}"
    );
    assert!(
        settled >= 100,
        "what was copied before the stop counts: {summary}"
    );

    // AND no upload is left open, and nothing is left on the queues
    assert_eq!(list_multipart_uploads(&s3, &dst).await, 0, "no open upload");
    assert!(queues_empty().await, "the queues are empty");
    proxy.clear_rules();
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_fast_stops_the_run_after_the_threshold_and_says_why() {
    let _turn = TURN.lock().await;
    let proxy = &stack().proxy;
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "failfast").await;
    // GIVEN 1,000 objects, every 20th refused for good (AccessDenied, as a
    // missing KMS grant answers), and copies slowed
    seed(&s3, &src, "ff", 1000).await;
    for i in (7..1000).step_by(20) {
        proxy.add_rule(
            Rule::on(Op::CopyObject)
                .bucket(&dst)
                .key(&format!("ff/{i:05}"))
                .respond(403, ACCESS_DENIED_XML),
        );
    }
    proxy.add_rule(
        Rule::on(Op::CopyObject)
            .bucket(&dst)
            .delay(Duration::from_millis(600)),
    );

    // WHEN it runs failing fast past 10 failures
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));
    let outputs = outputs();
    let out = run_cli(&[
        "run",
        "--stack-outputs",
        &outputs,
        &source,
        &destination,
        "--failure-threshold",
        "10",
        "--fail-fast",
        "--wait",
        "--json",
    ]);

    // THEN it stops: exit 1, the execution Stopped, the report saying why
    assert_eq!(out.status, 1, "{}", out.stderr);
    let summary: Value = serde_json::from_str(&out.stdout).expect("the report prints");
    let run_id = summary["run_id"].as_str().unwrap().to_owned();
    let state = status_json(&run_id);
    assert_eq!(state["error"], "Stopped", "{state}");
    let error = summary["error"].as_str().unwrap_or_default();
    let failures: u64 = error
        .strip_prefix("stopped: failure threshold 10 passed after ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the report says why: {error:?}"));
    assert!(failures > 10, "{error}");
    assert!(error.contains("; report: s3://"), "{error}");
    assert!(
        state["cause"]
            .as_str()
            .unwrap_or_default()
            .starts_with(error.split("; report").next().unwrap()),
        "{state}"
    );
    assert_eq!(
        summary["stopped"]["reason"], "failure_threshold",
        "{summary}"
    );
    // AND far fewer than the 1,000 objects were attempted
    let attempted: std::collections::HashSet<String> = proxy
        .requests()
        .iter()
        .filter(|r| r.bucket == dst && r.op == Op::CopyObject)
        .filter_map(|r| r.key.clone())
        .collect();
    println!(
        "{} objects attempted, stopped after {failures} failures",
        attempted.len()
    );
    assert!(
        attempted.len() < 600,
        "{} objects attempted",
        attempted.len()
    );
    assert!(n(&summary, "dropped") > 0, "{summary}");
    assert!(queues_empty().await, "the queues are empty");
    proxy.clear_rules();
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_names_an_unknown_run_exit_2_and_leaves_a_finished_run_and_its_report_alone() {
    let _turn = TURN.lock().await;
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "cancel-done").await;
    seed(&s3, &src, "d", 20).await;

    // GIVEN no such run THEN cancel exits 2
    let outputs = outputs();
    let out = run_cli(&["cancel", "--stack-outputs", &outputs, "no-such-run-22"]);
    assert_eq!(out.status, 2, "{}", out.stderr);
    assert!(out.stderr.contains("no-such-run-22"), "{}", out.stderr);

    // GIVEN a finished run
    let run_id = start(&src, &dst, &[]);
    let state = wait_until_ended(&run_id, Duration::from_secs(180));
    assert_eq!(state["status"], "SUCCEEDED", "{state}");
    let before = summary_of(&run_id).await;
    // WHEN it is cancelled THEN it says so, exits 0 and changes nothing
    let out = run_cli(&["cancel", "--stack-outputs", &outputs, &run_id]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stderr.contains("has already ended"), "{}", out.stderr);
    assert_eq!(summary_of(&run_id).await, before);
    assert_eq!(status_json(&run_id)["status"], "SUCCEEDED");
}

/// `run --wait` in a pseudo-terminal, interrupted once its copies started;
/// returns the session's transcript, its exit status and the run id.
fn interrupt_run_wait(src: &str, dst: &str, answer: &str) -> (String, String, String) {
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));
    let outputs = outputs();
    let mut command = cli();
    command.args([
        "run",
        "--stack-outputs",
        &outputs,
        &source,
        &destination,
        "--wait",
    ]);
    // The pseudo-terminal is the CLI's stdin too: that is where it asks.
    command.stdin(std::process::Stdio::inherit());
    let mut session = rexpect::session::spawn_command(command, Some(120_000)).expect("a pty");
    let (_, started) = session
        .exp_regex(r"started run [^ ]+")
        .expect("the run starts");
    let run_id = started.trim_start_matches("started run ").to_owned();
    wait_for(Op::CopyObject, dst, 20, Duration::from_secs(120));
    session.send_control('c').expect("Ctrl-C");
    let (asked, _) = session
        .exp_regex(r"\[c\]ancel it / \[l\]eave it running")
        .expect("Ctrl-C asks whether to cancel");
    session.send_line(answer).expect("the answer");
    let rest = session.exp_eof().expect("the CLI ends");
    let status = format!("{:?}", session.process().wait().expect("an exit status"));
    (format!("{asked}{rest}"), status, run_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_in_run_wait_asks_and_cancel_cancels_the_run() {
    let _turn = TURN.lock().await;
    let proxy = &stack().proxy;
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "ctrlc-cancel").await;
    seed(&s3, &src, "c", 300).await;
    proxy.add_rule(Rule::on(Op::CopyObject).bucket(&dst).delay(COPY_DELAY));

    let (transcript, status, run_id) =
        tokio::task::spawn_blocking(move || interrupt_run_wait(&src, &dst, "c"))
            .await
            .unwrap();
    proxy.clear_rules();
    // THEN the run is cancelled: the follower saw it end with its report
    // (exit 130, as the report of a cancelled run says)
    assert!(transcript.contains("cancelled run"), "{transcript}");
    assert!(status.contains("130"), "{status}: {transcript}");
    let state = status_json(&run_id);
    assert_eq!(state["error"], "Cancelled", "{state}");
    assert_eq!(summary_of(&run_id).await["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_in_run_wait_answered_leave_lets_the_run_complete() {
    let _turn = TURN.lock().await;
    let proxy = &stack().proxy;
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "ctrlc-leave").await;
    seed(&s3, &src, "l", 200).await;
    proxy.add_rule(Rule::on(Op::CopyObject).bucket(&dst).delay(COPY_DELAY));

    let (src2, dst2) = (src.clone(), dst.clone());
    let (transcript, status, run_id) =
        tokio::task::spawn_blocking(move || interrupt_run_wait(&src2, &dst2, "l"))
            .await
            .unwrap();
    // THEN the follower leaves (exit 130) and says how to follow or cancel
    assert!(transcript.contains("left run"), "{transcript}");
    assert!(status.contains("130"), "{status}: {transcript}");
    // AND the run goes on to complete, every object copied
    let state = wait_until_ended(&run_id, Duration::from_secs(300));
    proxy.clear_rules();
    assert_eq!(state["status"], "SUCCEEDED", "{state}");
    let summary = summary_of(&run_id).await;
    assert_eq!(n(&summary, "copied"), 200, "{summary}");
    assert_eq!(contents(&s3, &dst).await, contents(&s3, &src).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_a_killed_copier_left_in_a_cancelled_run_is_cleaned_up_by_the_next_run() {
    let _turn = TURN.lock().await;
    let proxy = &stack().proxy;
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "cancel-killed").await;
    put_multipart(&s3, &src, "big/one.bin", 11 * MIB, 5 * MIB).await;
    proxy.add_rule(
        Rule::on(Op::UploadPartCopy)
            .bucket(&dst)
            .delay(Duration::from_secs(3)),
    );
    // GIVEN a copier killed while its multipart copy is open
    let run_id = start(&src, &dst, &[]);
    wait_for(Op::UploadPartCopy, &dst, 1, Duration::from_secs(120));
    assert!(
        stack().crashes.kill_running_copiers() > 0,
        "a copier was killed"
    );
    // WHEN the run is cancelled: the redelivered batch is dropped, and the
    // killed copier's upload stays open (nothing ran to abort it)
    let out = run_cli(&["cancel", "--stack-outputs", &outputs(), &run_id, "--wait"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(status_json(&run_id)["error"], "Cancelled");
    proxy.clear_rules();
    assert_eq!(
        list_multipart_uploads(&s3, &dst).await,
        1,
        "the killed copier's upload"
    );

    // THEN the next run copies the object and aborts that upload (a
    // multipart copy first aborts the uploads others left for its key)
    let next = start(&src, &dst, &[]);
    let state = wait_until_ended(&next, Duration::from_secs(180));
    assert_eq!(state["status"], "SUCCEEDED", "{state}");
    assert_eq!(list_multipart_uploads(&s3, &dst).await, 0, "no open upload");
    assert_eq!(contents(&s3, &dst).await, contents(&s3, &src).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_without_a_terminal_leaves_the_run_going_and_says_so() {
    let _turn = TURN.lock().await;
    let proxy = &stack().proxy;
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "ctrlc-noterm").await;
    seed(&s3, &src, "t", 300).await;
    proxy.add_rule(Rule::on(Op::CopyObject).bucket(&dst).delay(COPY_DELAY));

    // GIVEN run --wait with no terminal (stdin is /dev/null, output piped)
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));
    let outputs = outputs();
    let child = cli()
        .args([
            "run",
            "--stack-outputs",
            &outputs,
            &source,
            &destination,
            "--wait",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the CLI starts");
    let dst2 = dst.clone();
    let out = tokio::task::spawn_blocking(move || {
        wait_for(Op::CopyObject, &dst2, 20, Duration::from_secs(120));
        // WHEN it gets Ctrl-C's signal
        let sent = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        child.wait_with_output().expect("the CLI ends")
    })
    .await
    .unwrap();

    // THEN it leaves the run going, says so and how to stop it (exit 130)
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("no terminal to ask"), "{stderr}");
    let run_id = stderr
        .split("left run ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("it says which run it left: {stderr}"))
        .to_owned();
    assert!(
        stderr.contains(&format!("s3-fanout cancel {run_id}")),
        "{stderr}"
    );
    assert_eq!(status_json(&run_id)["status"], "RUNNING");

    // AND the run can still be cancelled from elsewhere
    let out = run_cli(&["cancel", "--stack-outputs", &outputs, &run_id, "--wait"]);
    proxy.clear_rules();
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(status_json(&run_id)["error"], "Cancelled");
}
