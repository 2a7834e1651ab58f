//! Copier crashes, end to end: a copier invocation that dies mid-batch (its
//! process killed: no response, its in-flight requests abandoned, none of
//! its messages deleted) is redelivered after the visibility timeout and
//! the run converges, counting every object once; one that dies on every
//! delivery ends in the dead-letter queue, in the report as failed, and in
//! a failed execution.
//!
//! The crashes come from the local stack's event source emulator
//! (`stack().crashes`, see `s3_fanout::local_stack::event_source`), which
//! drops the invocation's future the way Lambda loses a dead process. The
//! fault proxy between the functions and moto slows chosen requests down,
//! so a kill lands while they are in flight, and carries an abandoned
//! request through to moto, as S3 completes a request whose client died.
//!
//! Runs go through the real state machine and the `s3-fanout run` command,
//! one at a time (`one_run_at_a_time`), in this binary's own moto and stack.

mod support;

use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use s3_fanout::local_stack::event_source::KilledBatch;
use s3_fanout::serverless::contract::BatchResult;
use serde_json::Value;
use support::fault_proxy::{Op, Rule};
use support::local_stack::{MAX_RECEIVE_COUNT, one_run_at_a_time, stack, status_json};
use support::*;

const MIB: usize = 1024 * 1024;

/// `s3-fanout run --stack-outputs <test stack> --wait --json ARGS`, with
/// `meanwhile` (the test's crashes) running while the execution does. The
/// CLI runs on a thread of its own; `meanwhile` only waits and kills, and
/// its findings are asserted after the run, so a failed assertion never
/// leaves an execution running into the next test's turn.
fn run_while<T>(args: &[&str], meanwhile: impl FnOnce() -> T) -> (i32, Value, CliOutput, T) {
    let _turn = one_run_at_a_time();
    let outputs = stack().outputs_file.display().to_string();
    let mut all: Vec<String> = ["run", "--stack-outputs", &outputs, "--wait", "--json"]
        .map(str::to_owned)
        .to_vec();
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let cli = std::thread::spawn(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        run_cli(&args)
    });
    let found = meanwhile();
    let out = cli.join().expect("the CLI thread");
    let summary = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}):\n{}\n{}", out.stdout, out.stderr));
    (out.status, summary, out, found)
}

/// Block until the fault proxy has received `n` requests of `op` to
/// `bucket` (the proxy's log spans every test of the binary).
fn wait_for_requests(op: Op, bucket: &str, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if requests_to(op, bucket) >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn requests_to(op: Op, bucket: &str) -> usize {
    stack()
        .proxy
        .requests()
        .iter()
        .filter(|r| r.op == op && r.bucket == bucket)
        .count()
}

/// Requests of `op` to `bucket` the proxy is still holding (delayed, not
/// yet answered): in flight for whoever sent them.
fn in_flight_to(op: Op, bucket: &str) -> usize {
    stack()
        .proxy
        .requests()
        .iter()
        .filter(|r| r.op == op && r.bucket == bucket && r.status.is_none())
        .count()
}

/// Batches of this run that were lost to a kill, once per kill.
fn killed_in_run(run_id: &str) -> Vec<KilledBatch> {
    stack()
        .crashes
        .killed_batches()
        .into_iter()
        .filter(|b| b.run_id == run_id)
        .collect()
}

/// Run `work` on the stack's runtime, where its clients live, and wait for
/// it. From a thread of its own: the caller may be a test's runtime, which
/// must not block inside another runtime.
fn on_stack<T: Send + 'static>(work: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let runtime = stack().runtime.clone();
    std::thread::spawn(move || runtime.block_on(work))
        .join()
        .expect("stack task")
}

/// The copiers' result objects of a run.
fn batch_results(run_id: &str) -> Vec<BatchResult> {
    let (store, run_id) = (stack().env.store.clone(), run_id.to_owned());
    on_stack(async move { store.get_all::<BatchResult>(&run_id, "results/").await })
        .expect("the run's results")
        .into_iter()
        .map(|(_, result)| result)
        .collect()
}

/// Whether every batch of `run_id` lost to a kill was delivered again, that
/// delivery settled, and the batch has its record: it was not forgotten.
/// Which delivery counted it is the first to reach the run counters (the
/// killed one, if the kill came after it counted); the run's exact counts
/// (`assert_converged`) show that it counted once.
fn killed_batches_redelivered(run_id: &str) -> bool {
    // A batch its killed delivery had already counted done lets the run
    // end before SQS delivers it again (after the visibility timeout):
    // give that redelivery its time.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !redelivered_now(run_id) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    redelivered_now(run_id)
}

/// [`killed_batches_redelivered`], as things stand.
fn redelivered_now(run_id: &str) -> bool {
    let results = batch_results(run_id);
    killed_in_run(run_id).iter().all(|lost| {
        stack().crashes.survived_deliveries(run_id, &lost.batch_id) > 0
            && results.iter().any(|r| r.batch_id == lost.batch_id)
    })
}

fn failures_csv(run_id: &str) -> String {
    let (store, run_id) = (stack().env.store.clone(), run_id.to_owned());
    let bytes = on_stack(async move { store.get_bytes(&run_id, "failures.csv").await })
        .expect("reading failures.csv")
        .expect("failures.csv exists");
    String::from_utf8(bytes).expect("UTF-8")
}

/// Every message body in the dead-letter queue, left visible for others.
fn dead_letters() -> Vec<String> {
    let sqs = stack().env.sqs.clone();
    let dlq = stack()
        .outputs
        .dead_letter_queue_url
        .clone()
        .expect("the stack has a dead-letter queue");
    on_stack(async move {
        let mut bodies = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // A receive returns up to 10 of them, in no set order: ask until two
        // receives in a row bring nothing new.
        let mut quiet = 0;
        while quiet < 2 {
            let received = sqs
                .receive_message()
                .queue_url(&dlq)
                .max_number_of_messages(10)
                .visibility_timeout(0)
                .send()
                .await
                .expect("receive from the dead-letter queue");
            let before = seen.len();
            for message in received.messages() {
                if seen.insert(message.message_id().unwrap_or_default().to_owned()) {
                    bodies.push(message.body().unwrap_or_default().to_owned());
                }
            }
            quiet = if seen.len() == before { quiet + 1 } else { 0 };
        }
        bodies
    })
}

/// What every converged run must show: exit 0, a SUCCEEDED execution,
/// each object copied and counted once, and the destination equal to the
/// source (keys, sizes and ETags).
async fn assert_converged(
    s3: &Client,
    (src, dst): (&str, &str),
    run_id: &str,
    (code, summary, out): (i32, &Value, &CliOutput),
    objects: u64,
) {
    assert_eq!(code, 0, "{}\n{}", out.stderr, failures_csv(run_id));
    assert_eq!(status_json(run_id)["status"], "SUCCEEDED");
    assert_eq!(summary["status"], "ok", "{summary}");
    assert_eq!(
        count(summary, "copied"),
        objects,
        "every object counted once, however many attempts it took: {summary}"
    );
    assert_eq!(count(summary, "failed"), 0, "{summary}");
    assert_eq!(count(summary, "verify_checked"), objects, "{summary}");
    assert_eq!(count(summary, "verify_mismatched"), 0, "{summary}");
    assert_eq!(contents(s3, dst).await, contents(s3, src).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn copiers_killed_mid_batch_are_redelivered_and_the_run_converges_counting_each_copy_once() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "crash-batch").await;
    // Four first-level prefixes: four shards, several batches of up to 7
    // keys (the stack's lister page), copied by several invocations at once.
    let mut objects = 0;
    for prefix in ["p", "q", "r", "s"] {
        for i in 0..10 {
            put(
                &s3,
                &src,
                &format!("{prefix}/{i:02}"),
                body(objects, 50 + 13 * i),
            )
            .await;
            objects += 1;
        }
    }
    // GIVEN copies that take a second each at the destination
    stack().proxy.add_rule(
        Rule::on(Op::CopyObject)
            .bucket(&dst)
            .delay(Duration::from_secs(1)),
    );
    let run_id = unique_bucket("crash-batch");

    // WHEN the copiers are killed while their copies are in flight
    let (code, summary, out, (seen, in_flight, killed)) = run_while(
        &[
            &format!("s3://{src}"),
            &format!("s3://{dst}"),
            "--run-id",
            &run_id,
        ],
        || {
            // More copies than one batch's two deliveries send (2 x 7):
            // several invocations are at work by then.
            let seen = wait_for_requests(Op::CopyObject, &dst, 15, Duration::from_secs(90));
            let in_flight = in_flight_to(Op::CopyObject, &dst);
            (seen, in_flight, stack().crashes.kill_running_copiers())
        },
    );
    assert!(seen, "no copy reached the proxy: {}", out.stderr);
    assert!(killed > 0, "no copier invocation was running");
    assert!(in_flight > 0, "no copy was in flight at the kill");
    let lost = killed_in_run(&run_id);
    assert!(!lost.is_empty(), "no batch of this run was killed");

    // THEN the run converges: every object copied and counted exactly once
    assert_converged(&s3, (&src, &dst), &run_id, (code, &summary, &out), objects).await;
    // AND every killed batch was redelivered and done by a later receive
    assert!(
        killed_batches_redelivered(&run_id),
        "a killed batch has no result from a later receive: {lost:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copier_killed_mid_multipart_copy_is_redelivered_and_leaves_no_upload_open() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "crash-mpu").await;
    // GIVEN an object above the multipart threshold (5 MiB for this run)
    // and below the stack's split size (12 MiB), so one invocation copies
    // it with UploadPartCopy: three parts, the source's own layout
    let big = "big/object.bin";
    let etag = put_multipart(&s3, &src, big, 11 * MIB, 5 * MIB).await;
    for i in 0..3 {
        put(&s3, &src, &format!("small/{i}"), body(i, 100)).await;
    }
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), br#"{"multipart_threshold": "5MiB"}"#).unwrap();
    // AND part copies that take a while
    stack().proxy.add_rule(
        Rule::on(Op::UploadPartCopy)
            .bucket(&dst)
            .delay(Duration::from_millis(1500)),
    );
    let run_id = unique_bucket("crash-mpu");

    // WHEN the copier is killed once its first part copies are in flight
    let (code, summary, out, (seen, killed)) = run_while(
        &[
            &format!("s3://{src}"),
            &format!("s3://{dst}"),
            "--run-id",
            &run_id,
            "--input",
            input.path().to_str().unwrap(),
        ],
        || {
            let seen = wait_for_requests(Op::UploadPartCopy, &dst, 1, Duration::from_secs(90));
            (seen, stack().crashes.kill_running_copiers())
        },
    );
    assert!(seen, "no part copy reached the proxy: {}", out.stderr);
    assert!(killed > 0, "no copier invocation was running");
    let lost = killed_in_run(&run_id);
    assert!(
        lost.iter().any(|b| b.keys.iter().any(|k| k == big)),
        "the multipart copy's invocation was not among the killed: {lost:?}"
    );

    // THEN the run converges, the object whole, with the source's layout
    assert_converged(&s3, (&src, &dst), &run_id, (code, &summary, &out), 4).await;
    assert_eq!(head(&s3, &dst, big).await.e_tag(), Some(etag.as_str()));
    assert_eq!(
        get_bytes(&s3, &dst, big).await,
        get_bytes(&s3, &src, big).await
    );
    assert!(
        killed_batches_redelivered(&run_id),
        "a killed batch has no result from a later receive: {lost:?}"
    );
    // AND the killed attempt's upload did not outlive it: the retry aborted
    // it (it was created: its part copies were seen before the kill)
    assert!(requests_to(Op::CreateMultipartUpload, &dst) >= 2);
    assert_eq!(list_multipart_uploads(&s3, &dst).await, 0, "no upload open");
}

/// Regression: a redelivered batch that found its object already copied
/// counted it and moved on, so the upload of a duplicate delivery killed
/// mid-copy stayed open (and billed) for good.
#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_killed_mid_multipart_copy_after_the_object_arrived_leaves_no_upload_open() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "crash-dup").await;
    // GIVEN an object copied in parts within one invocation (three of them),
    // which the test stack delivers twice, one delivery after the other
    let big = "big/object.bin";
    let etag = put_multipart(&s3, &src, big, 11 * MIB, 5 * MIB).await;
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), br#"{"multipart_threshold": "5MiB"}"#).unwrap();
    stack().proxy.add_rule(
        Rule::on(Op::UploadPartCopy)
            .bucket(&dst)
            .delay(Duration::from_millis(1500)),
    );
    // AND the run table's reads failing, so the duplicate cannot see that
    // the first delivery counted the batch done, and copies it again (it
    // would not copy a batch it saw counted)
    let reads = "DynamoDB_20120810.BatchGetItem";
    stack().proxy.add_rule(
        Rule::any()
            .target(reads)
            .respond(500, support::fault_proxy::DYNAMODB_INTERNAL_ERROR_JSON),
    );
    let run_id = unique_bucket("crash-dup");

    // WHEN the first delivery has copied the object and the second, a
    // duplicate, is killed with its own upload half done
    let (code, summary, out, (seen, killed, redelivered)) = run_while(
        &[
            &format!("s3://{src}"),
            &format!("s3://{dst}"),
            "--run-id",
            &run_id,
            "--input",
            input.path().to_str().unwrap(),
        ],
        || {
            // Three parts for the first delivery, then the duplicate's.
            let seen = wait_for_requests(Op::UploadPartCopy, &dst, 4, Duration::from_secs(90));
            let killed = stack().crashes.kill_running_copiers();
            // The first delivery's result already counted the object, so the
            // run may end before the killed batch is redelivered: wait for
            // that too within this turn, so no later test's run meets it.
            let deadline = Instant::now() + Duration::from_secs(60);
            while seen && !redelivered_now(&run_id) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
            (seen, killed, redelivered_now(&run_id))
        },
    );
    stack().proxy.remove_target_rules(reads);
    assert!(
        seen,
        "the duplicate delivery copied no part: {}",
        out.stderr
    );
    assert!(killed > 0, "no copier invocation was running");
    let lost = killed_in_run(&run_id);
    assert!(
        lost.iter().any(|b| b.keys.iter().any(|k| k == big)),
        "the duplicate's invocation was not among the killed: {lost:?}"
    );

    // THEN the run converges (the first delivery's result counts it once)
    assert_converged(&s3, (&src, &dst), &run_id, (code, &summary, &out), 1).await;
    assert_eq!(head(&s3, &dst, big).await.e_tag(), Some(etag.as_str()));
    // AND the redelivered batch finds the object there, and aborts the
    // upload the killed duplicate left open
    assert!(
        redelivered,
        "the killed batch was never redelivered: {lost:?}"
    );
    assert_eq!(list_multipart_uploads(&s3, &dst).await, 0, "no upload open");
}

/// Regression: a copier killed between starting a split object's upload
/// and recording it left that upload open for good: the redelivery started
/// and recorded another, and nothing else knew the first one's id.
#[tokio::test(flavor = "multi_thread")]
async fn a_copier_killed_while_starting_a_split_upload_leaves_no_upload_open() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "crash-split").await;
    // GIVEN an object over the stack's split size (12 MiB): its copier
    // starts the upload, records it, and sends three part tasks
    let huge = "huge/object.bin";
    let etag = put_multipart(&s3, &src, huge, 26 * MIB, 5 * MIB).await;
    put(&s3, &src, "small", body(7, 10)).await;
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), br#"{"multipart_threshold": "5MiB"}"#).unwrap();
    // AND a first CreateMultipartUpload that S3 takes a while to answer
    stack().proxy.add_rule(
        Rule::on(Op::CreateMultipartUpload)
            .bucket(&dst)
            .times(1)
            .delay(Duration::from_millis(1500)),
    );
    let run_id = unique_bucket("crash-split");

    // WHEN the copier is killed while that request is in flight: S3 still
    // creates the upload, but the copier never learns its id
    let (code, summary, out, (seen, killed)) = run_while(
        &[
            &format!("s3://{src}"),
            &format!("s3://{dst}"),
            "--run-id",
            &run_id,
            "--input",
            input.path().to_str().unwrap(),
        ],
        || {
            let seen =
                wait_for_requests(Op::CreateMultipartUpload, &dst, 1, Duration::from_secs(90));
            (seen, stack().crashes.kill_running_copiers())
        },
    );
    assert!(seen, "no upload was started: {}", out.stderr);
    assert!(killed > 0, "no copier invocation was running");
    let lost = killed_in_run(&run_id);
    assert!(
        lost.iter().any(|b| b.keys.iter().any(|k| k == huge)),
        "the splitting invocation was not among the killed: {lost:?}"
    );
    // THEN the redelivered batch splits the object again and the run converges
    assert_converged(&s3, (&src, &dst), &run_id, (code, &summary, &out), 2).await;
    assert_eq!(count(&summary, "split_objects"), 1, "{summary}");
    assert_eq!(head(&s3, &dst, huge).await.e_tag(), Some(etag.as_str()));
    assert_eq!(
        get_bytes(&s3, &dst, huge).await,
        get_bytes(&s3, &src, huge).await
    );
    assert!(
        killed_batches_redelivered(&run_id),
        "a killed batch has no result from a later receive: {lost:?}"
    );
    // AND the upload the killed attempt started (moto created it: the
    // proxy carried the abandoned request through) was aborted, not left
    // to bill
    let creates: Vec<Option<u16>> = stack()
        .proxy
        .requests()
        .iter()
        .filter(|r| r.op == Op::CreateMultipartUpload && r.bucket == dst)
        .map(|r| r.status)
        .collect();
    assert!(creates.len() >= 2, "{creates:?}");
    assert_eq!(creates[0], Some(200), "{creates:?}");
    assert_eq!(list_multipart_uploads(&s3, &dst).await, 0, "no upload open");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_whose_copier_dies_on_every_delivery_ends_in_the_dlq_and_fails_the_run() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "crash-dlq").await;
    let mut others = Vec::new();
    for prefix in ["a", "b"] {
        for i in 0..5 {
            let key = format!("{prefix}/{i}");
            put(&s3, &src, &key, body(others.len() as u64, 80)).await;
            others.push(key);
        }
    }
    // GIVEN a key whose copier invocation dies every time its batch is
    // delivered (alone under its prefix, so alone in its shard and batch;
    // unique, since the switch serves every test of the binary)
    let doomed = format!("lost/{}", unique_bucket("key"));
    put(&s3, &src, &doomed, body(99, 80)).await;
    stack().crashes.always_kill_batches_with_key(&doomed);
    let run_id = unique_bucket("crash-dlq");

    // WHEN a run that allows no failure goes through the state machine
    let (code, summary, out, ()) = run_while(
        &[
            &format!("s3://{src}"),
            &format!("s3://{dst}"),
            "--run-id",
            &run_id,
        ],
        || (),
    );

    // THEN the execution fails on the threshold and the CLI exits 1
    assert_eq!(code, 1, "{}", out.stderr);
    assert_eq!(status_json(&run_id)["status"], "FAILED");
    assert!(out.stderr.contains("SyncFailed"), "{}", out.stderr);
    // AND its batch was delivered exactly maxReceiveCount times, each one
    // lost, and then moved to the dead-letter queue by the redrive policy
    let lost = killed_in_run(&run_id);
    assert_eq!(
        lost.len(),
        MAX_RECEIVE_COUNT as usize,
        "one kill per receive: {lost:?}"
    );
    assert!(
        lost.iter().all(|b| b.keys == [doomed.clone()]),
        "the doomed key's batch holds it alone: {lost:?}"
    );
    let batch_id = lost[0].batch_id.clone();
    let in_dlq: Vec<String> = dead_letters()
        .into_iter()
        .filter(|body| body.contains(&run_id) && body.contains(&batch_id))
        .collect();
    assert_eq!(
        in_dlq.len(),
        1,
        "the lost batch is in the dead-letter queue"
    );
    assert!(in_dlq[0].contains(&doomed), "{}", in_dlq[0]);
    // AND the report lists the key as failed, once: lost with its batch
    // (regression: VALIDATE then found it missing and reported it again,
    // "2 objects failed" for one key)
    assert_eq!(count(&summary, "failed"), 1, "{summary}");
    assert_eq!(
        count(&summary, "verify_mismatched"),
        0,
        "the lost key is reported once, not again by VALIDATE: {summary}"
    );
    assert_eq!(count(&summary, "copied"), others.len() as u64, "{summary}");
    let failures = failures_csv(&run_id);
    let rows: Vec<&str> = failures.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{failures}");
    assert!(
        rows[0].starts_with(&format!("{src},{doomed},,failed,BatchLost,")),
        "{failures}"
    );
    assert!(rows[0].contains(&batch_id), "{failures}");
    // AND every other key was copied; the lost one was not
    let copied: Vec<String> = list_all(&s3, &dst, "")
        .await
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(copied, others);
}
