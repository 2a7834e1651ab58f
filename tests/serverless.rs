//! The serverless runtime end to end, on this machine: moto's Step
//! Functions interpreter executes the real `statemachine/sync.asl.json`; its
//! Lambda tasks run the project's handlers through the local stack's router;
//! the copier is fed by the event source emulator; runs are started and
//! read through the real `s3-fanout run` and `report` commands.
//!
//! The test stack delivers every SQS batch twice (see
//! `support::local_stack`), so every exact count below also proves that a
//! redelivered batch is not counted twice.

mod support;

use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_s3::Client;
use serde_json::Value;
use support::fault_proxy::{Op, Rule};
use support::local_stack::{MAX_RECEIVE_COUNT, one_run_at_a_time, stack, status_json};
use support::*;

const MIB: usize = 1024 * 1024;

/// The run's failures.csv, for assertion messages.
fn failures_csv(summary: &Value) -> String {
    let run_id = summary["run_id"].as_str().unwrap_or_default().to_owned();
    let store = stack().env.store.clone();
    let handle = stack().runtime.clone();
    std::thread::spawn(move || {
        handle.block_on(async move { store.get_bytes(&run_id, "failures.csv").await })
    })
    .join()
    .ok()
    .and_then(|r| r.ok().flatten())
    .map(|b| String::from_utf8_lossy(&b).into_owned())
    .unwrap_or_default()
}

/// `s3-fanout run --stack-outputs <test stack> --wait --json ARGS`.
fn run(args: &[&str]) -> (i32, Option<Value>, CliOutput) {
    let _turn = one_run_at_a_time();
    run_in_turn(args)
}

/// [`run`] for a caller that already holds [`one_run_at_a_time`].
fn run_in_turn(args: &[&str]) -> (i32, Option<Value>, CliOutput) {
    let outputs = stack().outputs_file.display().to_string();
    let mut all = vec!["run", "--stack-outputs", &outputs, "--wait", "--json"];
    all.extend_from_slice(args);
    let out = run_cli(&all);
    let summary = serde_json::from_str(&out.stdout).ok();
    (out.status, summary, out)
}

/// Keys that exercise encoding everywhere a key travels: listing, the SQS
/// message, the copy source header, the report.
const AWKWARD: &[&str] = &[
    "a b",
    "a+b",
    "%41",
    "ü/ñ",
    "dir//double",
    "trailing space ",
    "/leading",
];

/// A source over several first-level prefixes (so the planner makes several
/// shards, each longer than one lister invocation), awkward keys, and two
/// objects uploaded in parts.
async fn seed_source(client: &Client, bucket: &str) -> usize {
    let mut count = 0;
    for prefix in ["alpha", "beta", "gamma", "delta"] {
        for i in 0..12 {
            let key = format!("{prefix}/{i:03}.dat");
            put(client, bucket, &key, body(count as u64, 100 + i * 37)).await;
            count += 1;
        }
    }
    for key in AWKWARD {
        put(client, bucket, key, body(count as u64, 64)).await;
        count += 1;
    }
    let long = format!("long/{}", "k".repeat(1024 - 5));
    put(client, bucket, &long, b"1,024-byte key".to_vec()).await;
    count += 1;
    put_multipart(client, bucket, "big/one.bin", 11 * MIB, 5 * MIB).await;
    put_multipart(client, bucket, "big/two.bin", 6 * MIB, 5 * MIB).await;
    count + 2
}

#[tokio::test(flavor = "multi_thread")]
async fn a_serverless_run_copies_every_shard_verifies_and_a_rerun_copies_nothing() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "sls-e2e").await;
    let seeded = seed_source(&s3, &src).await as u64;
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));

    // GIVEN a seeded source WHEN a run goes through the state machine
    let (code, summary, out) = run(&[&source, &destination, "--run-id", &unique_bucket("run")]);
    let summary = summary.unwrap_or_else(|| panic!("no report: {}", out.stderr));
    // THEN it succeeds with every object copied once and verified
    assert_eq!(code, 0, "{}", out.stderr);
    assert_eq!(summary["status"], "ok");
    assert_eq!(count(&summary, "listed_source"), seeded);
    assert_eq!(count(&summary, "plan_copy"), seeded);
    assert_eq!(
        count(&summary, "copied"),
        seeded,
        "each copy counted exactly once"
    );
    assert_eq!(count(&summary, "failed"), 0);
    assert_eq!(count(&summary, "verify_checked"), seeded);
    assert_eq!(count(&summary, "verify_mismatched"), 0);
    assert_eq!(contents(&s3, &dst).await, contents(&s3, &src).await);
    let big = head(&s3, &dst, "big/one.bin").await;
    assert!(
        big.e_tag().unwrap_or_default().ends_with("-3\""),
        "the multipart layout is mirrored: {:?}",
        big.e_tag()
    );
    let run_id = summary["run_id"].as_str().unwrap().to_owned();
    assert!(
        summary["summary_json"]
            .as_str()
            .unwrap()
            .ends_with(&format!("runs/{run_id}/summary.json"))
    );
    let state = status_json(&run_id);
    assert_eq!(state["status"], "SUCCEEDED");
    assert!(
        state["batches_sent"].as_u64().unwrap() > 4,
        "several shards sent batches: {state}"
    );
    assert_eq!(state["batches_sent"], state["batches_done"]);

    // WHEN the same sync runs again THEN nothing is copied
    let (code, summary, out) = run(&[&source, &destination]);
    let summary = summary.unwrap_or_else(|| panic!("no report: {}", out.stderr));
    assert_eq!(code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "copied"), 0);
    assert_eq!(count(&summary, "skip_equal"), seeded);
    // AND VALIDATE lists nothing: no shard wrote anything to check
    assert_eq!(count(&summary, "verify_checked"), 0);

    // AND `report` prints the same summary
    let outputs = stack().outputs_file.display().to_string();
    let printed = run_cli(&["report", "--stack-outputs", &outputs, &run_id]);
    assert_eq!(printed.status, 0, "{}", printed.stderr);
    assert!(
        printed.stdout.contains(&format!("copied {seeded}")),
        "{}",
        printed.stdout
    );
}

/// Requests of `op` the stack's proxy answered or cut off itself.
fn injected(op: Op) -> usize {
    stack()
        .proxy
        .requests()
        .iter()
        .filter(|r| r.op == op && r.injected)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_serverless_run_under_random_503s_and_resets_ends_equal_and_reports_its_retries() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "sls-faults").await;
    let seeded = seed_source(&s3, &src).await as u64;
    // GIVEN 15% of the functions' requests to either bucket failing at
    // random: 503 SlowDown, or cut off after the server acted
    stack().proxy.add_random_faults(&src, 0xFA17);
    stack().proxy.add_random_faults(&dst, 0xFA17 + 1);
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));
    // AND the listers' first sends to the work queue failing: two answered
    // 500, then two cut off after SQS took the batch (which then arrives
    // twice). Added in this run's turn, so this run meets them.
    let turn = one_run_at_a_time();
    let sent_before = injected(Op::SendMessageBatch);
    let proxy = &stack().proxy;
    proxy.add_rule(
        Rule::on(Op::SendMessageBatch)
            .times(2)
            .respond(500, support::fault_proxy::SQS_INTERNAL_ERROR_JSON),
    );
    proxy.add_rule(Rule::on(Op::SendMessageBatch).times(2).reset());

    // WHEN a run goes through the state machine
    let run_id = unique_bucket("faulty");
    let (code, summary, out) = run_in_turn(&[&source, &destination, "--run-id", &run_id]);
    drop(turn);
    let summary = summary.unwrap_or_else(|| panic!("no report: {}", out.stderr));
    assert_eq!(injected(Op::SendMessageBatch) - sent_before, 4);

    // THEN it succeeds with the destination equal to the source, every
    // object counted once, and the retries it took in the report
    assert_eq!(code, 0, "{}\n{}", out.stderr, failures_csv(&summary));
    assert_eq!(status_json(&run_id)["status"], "SUCCEEDED");
    assert_eq!(count(&summary, "copied"), seeded);
    assert_eq!(count(&summary, "failed"), 0);
    assert_eq!(count(&summary, "verify_mismatched"), 0);
    assert_eq!(contents(&s3, &dst).await, contents(&s3, &src).await);
    assert_eq!(list_multipart_uploads(&s3, &dst).await, 0, "no open upload");
    assert!(count(&summary, "retries") > 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_that_always_fails_is_reported_and_the_threshold_decides_the_execution() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "sls-fail").await;
    for i in 0..6 {
        put(&s3, &src, &format!("ok/{i}"), body(i, 50)).await;
    }
    put(&s3, &src, "poison/key", body(99, 50)).await;
    // GIVEN a copy that fails with a retryable error every time
    stack().proxy.add_rule(
        Rule::on(Op::CopyObject)
            .bucket(&dst)
            .key("poison/key")
            .respond(500, support::fault_proxy::INTERNAL_ERROR_XML),
    );
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));

    // WHEN the run allows no failure THEN the execution fails, naming the report
    let run_id = unique_bucket("fail");
    let (code, summary, out) = run(&[&source, &destination, "--run-id", &run_id]);
    assert_eq!(code, 1, "{}", out.stderr);
    let summary = summary.unwrap_or_else(|| panic!("no report: {}", out.stderr));
    assert_eq!(count(&summary, "copied"), 6);
    assert_eq!(count(&summary, "failed"), 1);
    assert_eq!(
        count(&summary, "verify_mismatched"),
        0,
        "the failed key is reported once"
    );
    assert!(out.stderr.contains("SyncFailed"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("runs/{run_id}/summary.json")),
        "the cause names the report: {}",
        out.stderr
    );
    let state = status_json(&run_id);
    assert_eq!(state["status"], "FAILED");
    // The batch was handed back until its last receive, then recorded.
    let store = &stack().env.store;
    let failures = String::from_utf8(
        stack()
            .runtime
            .spawn({
                let (store, run_id) = (store.clone(), run_id.clone());
                async move { store.get_bytes(&run_id, "failures.csv").await }
            })
            .await
            .unwrap()
            .unwrap()
            .expect("failures.csv"),
    )
    .unwrap();
    assert!(
        failures.contains("poison/key,,failed,InternalError,500"),
        "{failures}"
    );
    let copies = stack().proxy.count_op(Op::CopyObject);
    assert!(
        copies >= MAX_RECEIVE_COUNT as usize,
        "{copies} copy attempts"
    );

    // WHEN one failure is allowed THEN the execution succeeds, and the
    // report still lists the failure (exit 1, as the CLI's).
    let run_id = unique_bucket("tolerated");
    let (code, summary, out) = run(&[
        &source,
        &destination,
        "--run-id",
        &run_id,
        "--failure-threshold",
        "1",
    ]);
    let summary = summary.unwrap_or_else(|| panic!("no report: {}", out.stderr));
    assert_eq!(status_json(&run_id)["status"], "SUCCEEDED");
    assert_eq!(count(&summary, "failed"), 1);
    assert_eq!(count(&summary, "skip_equal"), 6);
    assert_eq!(code, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_execution_input_fails_the_run_before_any_write() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "sls-bad").await;
    put(&s3, &src, "k", body(1, 10)).await;
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), br#"{"delet": true}"#).unwrap();
    let (code, _, out) = run(&[
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        "--input",
        input.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown field \\\"delet\\\""),
        "{}",
        out.stderr
    );
    assert!(list_all(&s3, &dst, "").await.is_empty());

    // all_versions into a destination whose versioning is off: refused by
    // the planner, naming the bucket, before any write
    let versioned = support::versioned::versioned_bucket(&s3, "sls-bad-v").await;
    put(&s3, &versioned, "k", body(1, 10)).await;
    let (code, _, out) = run(&[
        &format!("s3://{versioned}"),
        &format!("s3://{dst}"),
        "--all-versions",
    ]);
    assert_eq!(code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("versioning enabled on the destination") && out.stderr.contains(&dst),
        "{}",
        out.stderr
    );
    assert!(list_all(&s3, &dst, "").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_three_with_one_unreadable_message_hands_back_exactly_that_one() {
    let stack = stack();
    let env = stack.env.clone();
    let message = |id: &str, body: &str| {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.into());
        m.body = Some(body.into());
        m.attributes
            .insert("ApproximateReceiveCount".into(), "1".into());
        m
    };
    // Two readable batches (of a run without a manifest, on their last
    // receive, so they end in a result) and one unreadable message.
    let empty = |id: &str| {
        format!(r#"{{"version":1,"run_id":"no-such-run","batch_id":"{id}","tasks":[]}}"#)
    };
    let records = vec![
        message("m1", &empty("b1")),
        message("m2", "{not json"),
        message("m3", &empty("b3")),
    ];
    let records: Vec<SqsMessage> = records
        .into_iter()
        .map(|mut m| {
            m.attributes.insert(
                "ApproximateReceiveCount".into(),
                MAX_RECEIVE_COUNT.to_string(),
            );
            m
        })
        .collect();
    let response = stack
        .runtime
        .spawn(async move {
            s3_fanout::serverless::copier::copy_messages(
                &env,
                records,
                std::time::SystemTime::now() + std::time::Duration::from_secs(60),
            )
            .await
        })
        .await
        .unwrap();
    let ids: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(ids, ["m2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_too_large_for_one_invocation_is_copied_by_part_tasks_and_counted_once() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "sls-split").await;
    // GIVEN an object over the stack's split size (12 MiB here): 6 parts of
    // 5 MiB, so three part tasks of two parts each
    let etag = put_multipart(&s3, &src, "huge/object.bin", 26 * MIB, 5 * MIB).await;
    put(&s3, &src, "small", body(7, 10)).await;
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), br#"{"multipart_threshold": "5MiB"}"#).unwrap();

    // WHEN it is synced (every part task delivered twice)
    let (code, summary, out) = run(&[
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        "--input",
        input.path().to_str().unwrap(),
    ]);
    let summary = summary.unwrap_or_else(|| panic!("no report: {}", out.stderr));

    // THEN the object arrives whole, with the source's layout, counted once
    assert_eq!(code, 0, "{}\n{}", out.stderr, failures_csv(&summary));
    assert_eq!(count(&summary, "split_objects"), 1);
    assert_eq!(count(&summary, "copied"), 2);
    assert_eq!(count(&summary, "verify_mismatched"), 0);
    assert_eq!(
        head(&s3, &dst, "huge/object.bin").await.e_tag(),
        Some(etag.as_str())
    );
    assert_eq!(
        get_bytes(&s3, &dst, "huge/object.bin").await,
        get_bytes(&s3, &src, "huge/object.bin").await
    );
    // AND no upload is left open
    assert_eq!(list_multipart_uploads(&s3, &dst).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_run_copies_through_the_copier_function_with_gets_and_puts() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "sls-stream").await;
    // GIVEN objects uploaded in one PUT and in 5 MiB parts, and a run that
    // asks for client-side copies (as across providers or accounts)
    let etag = put_multipart(&s3, &src, "parts.bin", 12 * MIB, 5 * MIB).await;
    for i in 0..6 {
        put(&s3, &src, &format!("small/{i}"), body(40 + i, 2_000)).await;
    }
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), br#"{"stream": true}"#).unwrap();

    // WHEN it runs through the state machine
    let (code, summary, out) = run(&[
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        "--input",
        input.path().to_str().unwrap(),
    ]);
    let summary = summary.unwrap_or_else(|| panic!("no report: {}", out.stderr));

    // THEN the copier functions moved the bytes themselves: PUTs and
    // UploadParts at the destination, never a server-side copy
    assert_eq!(code, 0, "{}\n{}", out.stderr, failures_csv(&summary));
    assert_eq!(count(&summary, "copied"), 7);
    let to_destination = |op: Op| {
        stack()
            .proxy
            .requests()
            .iter()
            .filter(|r| r.op == op && r.bucket == dst)
            .count()
    };
    assert_eq!(
        to_destination(Op::CopyObject) + to_destination(Op::UploadPartCopy),
        0
    );
    assert!(to_destination(Op::PutObject) >= 6);
    assert!(to_destination(Op::UploadPart) >= 3);
    // AND the copies are the source's bytes, the multipart one with its ETag
    assert_eq!(contents(&s3, &dst).await, contents(&s3, &src).await);
    assert_eq!(
        head(&s3, &dst, "parts.bin").await.e_tag(),
        Some(etag.as_str())
    );
    assert_eq!(list_multipart_uploads(&s3, &dst).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_lister_invocation_that_had_stopped_hands_on_its_cursor_and_lists_nothing() {
    use s3_fanout::serverless::contract::{Checkpoint, Phase, ShardCursor};
    use s3_fanout::serverless::lister::{checkpoint_name, list_shard};
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "sls-resume").await;
    // A flat keyspace: one shard, several lister invocations (7 keys each).
    for i in 0..20 {
        put(&s3, &src, &format!("k{i:03}"), body(i, 10)).await;
    }
    let stack = stack();
    let env = stack.env.clone();
    let run_id = unique_bucket("resume");
    let input =
        serde_json::json!({"source": format!("s3://{src}"), "destination": format!("s3://{dst}")});
    let (first, retried, checkpoint) = stack
        .runtime
        .spawn(async move {
            let far = std::time::SystemTime::now() + std::time::Duration::from_secs(600);
            let plan = s3_fanout::serverless::planner::plan(&env, &run_id, &input)
                .await
                .unwrap();
            assert_eq!(plan.shards, vec![0]);
            let start = ShardCursor {
                run_id: run_id.clone(),
                phase: Phase::Write,
                shard: 0,
                seq: 0,
                cursor: None,
                done: false,
                proven_chunks: 0,
                batches_sent: 0,
                range: None,
            };
            // GIVEN an invocation that stopped at its key budget and wrote
            // its last checkpoint, then died before sending the range's
            // next task (SQS delivers its task again)
            let first = list_shard(&env, start.clone(), far).await.unwrap();
            // WHEN the retry runs
            let retried = list_shard(&env, start, far).await.unwrap();
            let checkpoint: Checkpoint = env
                .store
                .get_json(&run_id, &checkpoint_name(Phase::Write, 0, 0))
                .await
                .unwrap()
                .unwrap();
            (first, retried, checkpoint)
        })
        .await
        .unwrap();
    // THEN it hands on the same next task: listing on from there is that
    // task's work, and doing it here too would list and send keys twice
    assert_eq!(first.cursor.as_deref(), Some("k006"));
    assert_eq!(retried, first);
    assert!(checkpoint.ended);
    let ids: Vec<&str> = checkpoint.batches.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["00000-00000-00000"], "nothing sent again");
    assert_eq!(checkpoint.counts.plan_copy, 7, "nothing counted again");
}

/// Checkpoints are spaced, and a crash repeats only what the last one did
/// not cover. One shard of 40 keys, the deadline looked at every 5 keys, a
/// checkpoint every 15 (the stack's defaults: 1,000 and 10,000).
/// GIVEN the invocation's second checkpoint refused, so it dies after
/// sending the batch of keys 15 to 29
/// WHEN Step Functions retries it
/// THEN it resumes from the first checkpoint, sends that batch again under
/// the same id, and ends with every key in exactly one batch and exact
/// counts; the checkpoint was written 4 times (3, and the refused one),
/// where a checkpoint per look would have been 9
#[tokio::test(flavor = "multi_thread")]
async fn checkpoints_are_spaced_and_a_crash_repeats_only_what_the_last_did_not_cover() {
    use s3_fanout::serverless::contract::{Checkpoint, Phase, ShardCursor};
    use s3_fanout::serverless::lister::{checkpoint_name, list_shard};
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "sls-spaced").await;
    for i in 0..40 {
        put(&s3, &src, &format!("c{i:03}"), body(i, 10)).await;
    }
    let stack = stack();
    let mut config = stack.env.config.clone();
    config.lister_max_keys = u64::MAX;
    config.lister_page_keys = 5;
    config.checkpoint_keys = 15;
    let run_id = unique_bucket("spaced");
    let checkpoint_key = format!(
        "{}{run_id}/{}",
        config.report_prefix,
        checkpoint_name(Phase::Write, 0, 0)
    );
    // The stack's copiers copy what is sent: slowed, so the retry lists
    // the lost batch's keys before they arrive and sends them again.
    stack.proxy.add_rule(
        Rule::on(Op::CopyObject)
            .bucket(&dst)
            .delay(std::time::Duration::from_secs(5)),
    );
    stack.proxy.add_rule(
        Rule::on(Op::PutObject)
            .key(&checkpoint_key)
            .skip(1)
            .times(1)
            .respond(403, support::fault_proxy::ACCESS_DENIED_XML),
    );
    let input =
        serde_json::json!({"source": format!("s3://{src}"), "destination": format!("s3://{dst}")});
    let (crashed, retried, checkpoint) = stack
        .runtime
        .spawn(async move {
            let env = s3_fanout::serverless::FunctionEnv::new(config).await;
            let far = std::time::SystemTime::now() + std::time::Duration::from_secs(600);
            let plan = s3_fanout::serverless::planner::plan(&env, &run_id, &input)
                .await
                .unwrap();
            assert_eq!(plan.shards, vec![0]);
            let start = ShardCursor {
                run_id: run_id.clone(),
                phase: Phase::Write,
                shard: 0,
                seq: 0,
                cursor: None,
                done: false,
                proven_chunks: 0,
                batches_sent: 0,
                range: None,
            };
            let crashed = list_shard(&env, start.clone(), far).await;
            let retried = list_shard(&env, start, far).await.unwrap();
            let checkpoint: Checkpoint = env
                .store
                .get_json(&run_id, &checkpoint_name(Phase::Write, 0, 0))
                .await
                .unwrap()
                .unwrap();
            (crashed, retried, checkpoint)
        })
        .await
        .unwrap();
    assert!(
        crashed.is_err(),
        "the refused checkpoint ends the invocation"
    );
    assert!(retried.done);
    assert_eq!(retried.cursor.as_deref(), Some("c039"));
    let batches: Vec<(&str, &str)> = checkpoint
        .batches
        .iter()
        .map(|b| (b.id.as_str(), b.first_key.as_str()))
        .collect();
    assert_eq!(
        batches,
        [
            ("00000-00000-00000", "c000"),
            ("00000-00000-00001", "c015"),
            ("00000-00000-00002", "c030"),
        ],
        "the batch of the lost checkpoint sent again under its id"
    );
    assert_eq!(checkpoint.counts.plan_copy, 40, "every key counted once");
    let writes = stack
        .proxy
        .requests()
        .iter()
        .filter(|r| r.op == Op::PutObject && r.key.as_deref() == Some(checkpoint_key.as_str()))
        .count();
    assert_eq!(writes, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_message_is_handed_back_until_the_redrive_policy_moves_it_to_the_dlq() {
    let stack = stack();
    let env = stack.env.clone();
    let outputs = stack.outputs.clone();
    let marker = unique_bucket("poison");
    let dead = stack
        .runtime
        .spawn(async move {
            let work = outputs.work_queue_url.clone().unwrap();
            let dlq = outputs.dead_letter_queue_url.clone().unwrap();
            // GIVEN a message no copier can read
            env.sqs
                .send_message()
                .queue_url(&work)
                .message_body(format!("not a batch {marker}"))
                .send()
                .await
                .unwrap();
            // THEN after MAX_RECEIVE_COUNT receives (6 s visibility timeout
            // each) it is in the dead-letter queue, and nowhere else
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while std::time::Instant::now() < deadline {
                let received = env
                    .sqs
                    .receive_message()
                    .queue_url(&dlq)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .unwrap();
                for message in received.messages() {
                    if message.body().unwrap_or_default().contains(&marker) {
                        return true;
                    }
                }
            }
            false
        })
        .await
        .unwrap();
    assert!(dead, "the message never reached the dead-letter queue");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lister_returns_its_cursor_before_its_deadline_and_the_next_call_finishes_the_shard() {
    use s3_fanout::serverless::FunctionEnv;
    use s3_fanout::serverless::contract::{Phase, ShardCursor};
    use s3_fanout::serverless::lister::list_shard;
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "sls-deadline").await;
    // Two pages of keys, put 32 at a time: 1,500 connections at once
    // overflow moto's listen backlog on a loaded machine (connect timeouts
    // in a CI run).
    use futures::StreamExt;
    let puts = futures::stream::iter(0..1_500).map(|i| {
        let (s3, src) = (s3.clone(), src.clone());
        async move { put(&s3, &src, &format!("k{i:05}"), Vec::new()).await }
    });
    puts.buffer_unordered(32).collect::<Vec<String>>().await;
    let stack = stack();
    // The stack's lister stops after 7 keys; this one only at its deadline.
    let mut config = stack.env.config.clone();
    config.lister_max_keys = u64::MAX;
    let run_id = unique_bucket("deadline");
    // One shard of all 1,500 keys (the planner would cut a flat keyspace
    // of more than a page into many).
    let input = serde_json::json!({"source": format!("s3://{src}"), "destination": format!("s3://{dst}"), "validate": false, "max_shards": 1});
    let (near, far) = stack
        .runtime
        .spawn(async move {
            let env = FunctionEnv::new(config).await;
            s3_fanout::serverless::planner::plan(&env, &run_id, &input)
                .await
                .unwrap();
            let start = ShardCursor {
                run_id,
                phase: Phase::Validate,
                shard: 0,
                seq: 0,
                cursor: None,
                done: false,
                proven_chunks: 0,
                batches_sent: 0,
                range: None,
            };
            // GIVEN an invocation with a second left (less than the margin
            // a lister keeps for its last page)
            let soon = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
            let near = list_shard(&env, start, soon).await.unwrap();
            // WHEN the state machine calls again with the cursor and time to spare
            let later = std::time::SystemTime::now() + std::time::Duration::from_secs(600);
            let far = list_shard(&env, near.clone(), later).await.unwrap();
            (near, far)
        })
        .await
        .unwrap();
    // THEN the first call stopped after one page and the second finished
    assert!(!near.done);
    assert_eq!(near.cursor.as_deref(), Some("k00999"));
    assert_eq!((far.seq, far.done), (2, true));
    assert_eq!(far.cursor.as_deref(), Some("k01499"));
}

/// A KMS destination (ETags that are not MD5s, emulated by the stack's
/// proxy, with S3's stored checksums): the run copies, VALIDATE proves each
/// copy by its checksums instead of failing it, and records it in the
/// ledger of proven pairs in the report bucket. A re-run copies nothing and
/// makes no HEAD: the ledger proves every pair, in both phases. A same-size
/// overwrite at the destination is found and repaired, and only its pair
/// costs HEADs. The stack's listers stop every 7 keys, so each shard's
/// chunks come from several invocations.
#[tokio::test(flavor = "multi_thread")]
async fn a_kms_destination_validates_by_checksums_and_a_rerun_is_listing_only() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "sls-kms").await;
    let seeded = seed_source(&s3, &src).await as u64;
    let proxy = &stack().proxy;
    proxy.s3_checksums();
    proxy.kms_etags(&dst);
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));
    let sync = |tag: &str| {
        let run_id = unique_bucket(tag);
        let (code, summary, out) = run(&[&source, &destination, "--run-id", &run_id]);
        let summary = summary.unwrap_or_else(|| panic!("no report: {}", out.stderr));
        assert_eq!(code, 0, "{}\n{}", out.stderr, failures_csv(&summary));
        assert_eq!(count(&summary, "verify_mismatched"), 0);
        (run_id, summary)
    };

    let (run_id, first) = sync("kms");
    assert_eq!(count(&first, "copied"), seeded);
    assert_eq!(count(&first, "proven_by_checksum"), seeded, "VALIDATE");
    assert_eq!(count(&first, "ledger_entries"), seeded);
    let ledgers = format!("{}ledgers/", stack().env.config.report_prefix);
    let chunks = contents(&s3, &stack().env.config.report_bucket)
        .await
        .into_iter()
        .filter(|(key, _, _)| key.starts_with(&ledgers) && key.contains(&run_id))
        .count();
    assert!(chunks > 1, "a chunk per VALIDATE invocation: {chunks}");

    let (again_id, again) = sync("kms-again");
    assert_eq!(count(&again, "copied") + count(&again, "updated"), 0);
    assert_eq!(count(&again, "checksum_heads"), 0, "{again}");
    // The write phase sent nothing, so VALIDATE listed nothing: each side
    // was listed once, and the write phase's proofs are the next ledger.
    assert_eq!(count(&again, "proven_by_ledger"), seeded, "the write phase");
    assert_eq!(
        validate_cursors(&s3, &again_id).await,
        (manifest_shards(&s3, &again_id).await, 0)
    );
    assert_eq!(count(&again, "ledger_entries"), seeded);

    let key = "alpha/003.dat";
    put(&s3, &dst, key, body(999, 100 + 3 * 37)).await;
    let (_, repaired) = sync("kms-repair");
    assert_eq!(count(&repaired, "updated"), 1);
    assert_eq!(
        get_bytes(&s3, &dst, key).await,
        get_bytes(&s3, &src, key).await
    );
    // The write phase's pair found different, VALIDATE's copy proven;
    // VALIDATE listed only the shard that wrote.
    assert_eq!(count(&repaired, "checksum_heads"), 4, "{repaired}");
    let in_validate = count(&repaired, "proven_by_ledger") - (seeded - 1);
    assert!(in_validate < seeded - 1, "{repaired}");
    assert_eq!(count(&repaired, "verify_checked"), in_validate + 1);
    assert_eq!(count(&repaired, "ledger_entries"), seeded);

    // The ledger lost (its manifest deleted), as for copies another tool
    // made: each pair costs two HEADs once, in the write phase, whose
    // proofs VALIDATE reads; the run after that makes none.
    let name = s3_fanout::model::options::ledger_name(
        &source.parse().unwrap(),
        &destination.parse().unwrap(),
    );
    s3.delete_object()
        .bucket(&stack().env.config.report_bucket)
        .key(format!("{ledgers}{name}/manifest.json"))
        .send()
        .await
        .unwrap();
    let (_, rebuilt) = sync("kms-rebuilt");
    assert_eq!(count(&rebuilt, "copied") + count(&rebuilt, "updated"), 0);
    assert_eq!(count(&rebuilt, "checksum_heads"), 2 * seeded, "{rebuilt}");
    assert_eq!(count(&rebuilt, "proven_by_checksum"), seeded);
    assert_eq!(count(&rebuilt, "proven_by_ledger"), 0, "no VALIDATE");
    assert_eq!(count(&rebuilt, "ledger_entries"), seeded);
    let (_, after) = sync("kms-after");
    assert_eq!(count(&after, "checksum_heads"), 0, "{after}");
}

/// The shards of a run's VALIDATE, and how many of them listed anything
/// (a checkpoint that got past a key).
async fn validate_cursors(s3: &Client, run_id: &str) -> (usize, usize) {
    let config = &stack().env.config;
    let folder = format!("{}{run_id}/validate/", config.report_prefix);
    let mut shards = std::collections::BTreeSet::new();
    let mut listed = std::collections::BTreeSet::new();
    for (key, _, _) in contents(s3, &config.report_bucket).await {
        let Some(name) = key.strip_prefix(&folder) else {
            continue;
        };
        let shard = name.split('-').next().unwrap_or_default().to_owned();
        let checkpoint: Value =
            serde_json::from_slice(&get_bytes(s3, &config.report_bucket, &key).await).unwrap();
        if !checkpoint["cursor"].is_null() {
            listed.insert(shard.clone());
        }
        shards.insert(shard);
    }
    (shards.len(), listed.len())
}

/// How many shards a run was planned with.
async fn manifest_shards(s3: &Client, run_id: &str) -> usize {
    let config = &stack().env.config;
    let key = format!("{}{run_id}/run.json", config.report_prefix);
    let manifest: Value =
        serde_json::from_slice(&get_bytes(s3, &config.report_bucket, &key).await).unwrap();
    manifest["shards"].as_array().unwrap().len()
}

/// An S3 event message about `key`, as the event queue delivers it.
fn object_created(id: &str, bucket: &str, key: &str) -> SqsMessage {
    let path = format!(
        "{}/tests/fixtures/events/s3-put.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap();
    let body = std::fs::read_to_string(&path)
        .unwrap()
        .replace("__BUCKET__", bucket)
        .replace("__KEY__", key)
        .replace("__TIME__", &now);
    let mut message = SqsMessage::default();
    message.message_id = Some(id.into());
    message.body = Some(body);
    message
        .attributes
        .insert("ApproximateReceiveCount".into(), "1".into());
    message
}

/// The replicator's proofs reach the next run. Keys replicated into a KMS
/// destination (copied, or found equal by their stored checksums) go into
/// the ledger's journal, one object per invocation; the next run folds the
/// journal in at planning and proves every replicated pair from its
/// listings, with no HEAD (without the journal: two per pair), carries
/// them into its ledger, and deletes the journal it folded.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_after_replication_proves_replicated_pairs_by_the_journal() {
    const KEYS: usize = 12;
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "sls-journal").await;
    for i in 0..KEYS {
        put(&s3, &src, &format!("r/{i:02}"), body(i as u64, 200 + i)).await;
    }
    let proxy = &stack().proxy;
    proxy.s3_checksums();
    proxy.kms_etags(&dst);
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));

    // GIVEN every key replicated from its event, and three events
    // delivered again (equal by checksums, copied nothing)
    let mut config = stack().env.config.clone();
    config.source = Some(source.clone());
    config.destination = Some(destination.clone());
    let events: Vec<SqsMessage> = (0..KEYS)
        .map(|i| object_created(&format!("m{i}"), &src, &format!("r/{i:02}")))
        .collect();
    let again: Vec<SqsMessage> = events[..3].to_vec();
    let (first, second) = stack()
        .runtime
        .spawn(async move {
            let env = s3_fanout::serverless::FunctionEnv::new(config).await;
            let replicator = s3_fanout::serverless::replicator::Replicator::new(&env)
                .await
                .unwrap();
            let deadline = std::time::SystemTime::now() + std::time::Duration::from_secs(120);
            let first = replicator.replicate(events, deadline).await;
            let second = replicator.replicate(again, deadline).await;
            (first, second)
        })
        .await
        .unwrap();
    assert_eq!(first.count("replicated"), KEYS, "{:#?}", first.keys);
    assert_eq!(first.journaled, KEYS);
    assert_eq!(second.count("in_sync"), 3, "{:#?}", second.keys);
    assert_eq!(second.journaled, 3);
    let name = s3_fanout::model::options::ledger_name(
        &source.parse().unwrap(),
        &destination.parse().unwrap(),
    );
    let config = &stack().env.config;
    let journal = format!("{}ledgers/{name}/journal-", config.report_prefix);
    let journal_objects = || async {
        contents(&s3, &config.report_bucket)
            .await
            .into_iter()
            .filter(|(key, _, _)| key.starts_with(&journal))
            .count()
    };
    assert_eq!(journal_objects().await, 2, "one object per invocation");

    // WHEN the nightly run comes
    let sync = |tag: &str| {
        let (code, summary, out) = run(&[&source, &destination, "--run-id", &unique_bucket(tag)]);
        let summary = summary.unwrap_or_else(|| panic!("no report: {}", out.stderr));
        assert_eq!(code, 0, "{}\n{}", out.stderr, failures_csv(&summary));
        summary
    };
    let night = sync("journal");

    // THEN it copies nothing and asks nothing: the journal proves every pair
    assert_eq!(count(&night, "copied") + count(&night, "updated"), 0);
    assert_eq!(count(&night, "checksum_heads"), 0, "{night}");
    assert_eq!(
        count(&night, "proven_by_ledger"),
        KEYS as u64,
        "no VALIDATE"
    );
    assert_eq!(count(&night, "ledger_entries"), KEYS as u64);
    // AND the journal it folded is gone; the ledger holds the pairs
    assert_eq!(journal_objects().await, 0);
    let after = sync("journal-after");
    assert_eq!(count(&after, "checksum_heads"), 0, "{after}");
    assert_eq!(count(&after, "proven_by_ledger"), KEYS as u64);
}

/// VALIDATE does not wait for the last copy: a range whose copies are all
/// done is listed again while another range's copies are still going, and
/// every key is still validated exactly once (the stack delivers every
/// message twice, VALIDATE's range tasks included, and the state machine's
/// VALIDATE start sends those still being listed again).
#[tokio::test(flavor = "multi_thread")]
async fn validate_lists_a_copied_range_while_another_still_copies() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "sls-early").await;
    // GIVEN 30 keys under fast/ and 3 under slow/, whose copies each take
    // 8 s more
    for i in 0..30u64 {
        put(&s3, &src, &format!("fast/{i:02}"), body(i, 100)).await;
    }
    for i in 0..3u64 {
        put(&s3, &src, &format!("slow/{i}"), body(100 + i, 100)).await;
    }
    let turn = one_run_at_a_time();
    for i in 0..3u64 {
        let key = format!("slow/{i}");
        stack().proxy.add_rule(
            Rule::on(Op::CopyObject)
                .bucket(&dst)
                .key(&key)
                .delay(std::time::Duration::from_secs(8)),
        );
    }
    // WHEN a run goes through the state machine
    let run_id = unique_bucket("early");
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));
    let (code, summary, out) = run_in_turn(&[&source, &destination, "--run-id", &run_id]);
    drop(turn);
    let summary = summary.unwrap_or_else(|| panic!("no report: {}", out.stderr));
    // THEN it succeeds, and each key is copied once and validated once
    assert_eq!(code, 0, "{}\n{}", out.stderr, failures_csv(&summary));
    assert_eq!(count(&summary, "copied"), 33);
    assert_eq!(count(&summary, "verify_checked"), 33, "{summary}");
    assert_eq!(count(&summary, "verify_mismatched"), 0);
    assert_eq!(contents(&s3, &dst).await, contents(&s3, &src).await);
    // AND VALIDATE began listing before the slow copies were done
    let times = |folder: &str, field: &str| {
        let (s3, folder, field) = (s3.clone(), folder.to_owned(), field.to_owned());
        let config = stack().env.config.clone();
        let prefix = format!("{}{run_id}/{folder}/", config.report_prefix);
        async move {
            let mut times = Vec::new();
            for (key, _, _) in contents(&s3, &config.report_bucket).await {
                if key.starts_with(&prefix) {
                    let body = get_bytes(&s3, &config.report_bucket, &key).await;
                    let value: Value = serde_json::from_slice(&body).unwrap();
                    times.extend(value[&field].as_i64());
                }
            }
            times
        }
    };
    let validate_started = times("validate", "started_at_ms").await;
    let copies_finished = times("results", "finished_at_ms").await;
    let (first_validate, last_copy) = (
        validate_started.iter().min().copied().unwrap_or(i64::MAX),
        copies_finished.iter().max().copied().unwrap_or(0),
    );
    assert!(
        first_validate < last_copy - 2_000,
        "VALIDATE started at {first_validate}, the last copy ended at {last_copy}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_as_of_run_restores_the_source_as_it_was_and_a_rerun_copies_nothing() {
    use support::versioned::{etags_at, history, snapshot_of};
    let s3 = s3().await;
    // S3's checksums, as every object has one: the multipart copy of a
    // version carries that version's full-object CRC to its completion.
    stack().proxy.s3_checksums();
    // GIVEN a versioned source with a history (overwrites, delete markers,
    // a multipart overwrite) and an empty destination
    let h = history(&s3, "sls-asof").await;
    let (time, expected) = &h.steps[1];
    let dst = unique_bucket("sls-asof-dst");
    create_bucket(&s3, &dst).await;
    let (source, destination) = (format!("s3://{}", h.bucket), format!("s3://{dst}"));

    // WHEN a run restores it as of its second step
    let (code, summary, out) = run(&[&source, &destination, "--as-of", time]);
    let summary = summary.unwrap_or_else(|| panic!("no report: {}", out.stderr));

    // THEN the destination is that snapshot: keys, bytes, metadata, tags,
    // and the versions' ETags (the multipart one keeps its parts)
    assert_eq!(code, 0, "{}\n{}", out.stderr, failures_csv(&summary));
    assert_eq!(
        count(&summary, "copied"),
        expected.len() as u64,
        "{summary}"
    );
    assert_eq!(count(&summary, "verify_mismatched"), 0);
    let got = snapshot_of(&s3, &dst).await;
    assert!(got == *expected, "{got:?}");
    let etags: std::collections::BTreeMap<String, String> = contents(&s3, &dst)
        .await
        .into_iter()
        .map(|(k, _, e)| (k, e))
        .collect();
    assert_eq!(etags, etags_at(&s3, &h.bucket, expected).await);

    // WHEN it runs again THEN nothing is copied
    let (code, summary, out) = run(&[&source, &destination, "--as-of", time]);
    let summary = summary.unwrap_or_else(|| panic!("no report: {}", out.stderr));
    assert_eq!(code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "copied") + count(&summary, "updated"), 0);
    assert_eq!(count(&summary, "skip_equal"), expected.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_versions_run_reproduces_every_history_and_a_task_delivered_twice_appends_once() {
    use support::versioned::{assert_same_histories, delete, history, versioned_bucket};
    let s3 = s3().await;
    // GIVEN a versioned source with a history (overwrites, delete markers,
    // a multipart overwrite) and an empty versioned destination
    let h = history(&s3, "sls-allv").await;
    let dst = versioned_bucket(&s3, "sls-allv-dst").await;
    let (source, destination) = (format!("s3://{}", h.bucket), format!("s3://{dst}"));

    // WHEN a run copies every version
    let (code, summary, out) = run(&[&source, &destination, "--all-versions"]);
    let summary = summary.unwrap_or_else(|| panic!("no report: {}", out.stderr));

    // THEN each key's history is the source's, oldest first, with its
    // delete markers, and VALIDATE aligned every key again
    assert_eq!(code, 0, "{}\n{}", out.stderr, failures_csv(&summary));
    // a1 a2 b1 b2 c1 odd big1 big2 d1: 9 versions; 3 delete markers
    assert_eq!(count(&summary, "copied"), 9, "{summary}");
    assert_eq!(count(&summary, "deleted"), 3, "{summary}");
    assert!(count(&summary, "verify_checked") >= 6, "{summary}");
    assert_eq!(count(&summary, "verify_mismatched"), 0, "{summary}");
    assert_same_histories(&s3, &h.bucket, &dst).await;

    // WHEN it runs again THEN nothing is written
    let (code, summary, out) = run(&[&source, &destination, "--all-versions"]);
    let summary = summary.unwrap_or_else(|| panic!("no report: {}", out.stderr));
    assert_eq!(code, 0, "{}", out.stderr);
    assert_eq!(
        count(&summary, "copied") + count(&summary, "deleted"),
        0,
        "{summary}"
    );
    assert_eq!(count(&summary, "skip_equal"), 6, "{summary}");
    let run_id = summary["run_id"].as_str().unwrap().to_owned();

    // WHEN the source gains a version of a, and the task for a reaches
    // copiers twice (SQS delivers at least once; here under two batch
    // ids, so neither is dropped as counted before)
    put(&s3, &h.bucket, "a", body(9, 90)).await;
    let task = r#"{"op":"history","key":"a","entries":1,"bytes":90}"#;
    for batch_id in ["twice-1", "twice-2"] {
        let body = format!(
            r#"{{"version":1,"run_id":"{run_id}","batch_id":"{batch_id}","tasks":[{task}]}}"#
        );
        let mut message = SqsMessage::default();
        message.message_id = Some(batch_id.into());
        message.body = Some(body);
        message
            .attributes
            .insert("ApproximateReceiveCount".into(), "1".into());
        let env = stack().env.clone();
        let response = stack()
            .runtime
            .spawn(async move {
                s3_fanout::serverless::copier::copy_messages(
                    &env,
                    vec![message],
                    std::time::SystemTime::now() + std::time::Duration::from_secs(60),
                )
                .await
            })
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty(), "{batch_id}");
    }
    // THEN the new version is appended once: each delivery listed and
    // aligned the key first, and the second found nothing missing
    let a = |bucket: String| {
        let s3 = s3.clone();
        async move {
            support::versioned::histories(&s3, &bucket).await["a"]
                .iter()
                .filter(|(marker, _, _)| !marker)
                .count()
        }
    };
    assert_eq!(a(dst.clone()).await, a(h.bucket.clone()).await);

    // WHEN dir/d is deleted too and the next run comes THEN it appends
    // exactly that marker, and the histories are the same
    delete(&s3, &h.bucket, "dir/d").await;
    let (code, summary, out) = run(&[&source, &destination, "--all-versions"]);
    let summary = summary.unwrap_or_else(|| panic!("no report: {}", out.stderr));
    assert_eq!(code, 0, "{}\n{}", out.stderr, failures_csv(&summary));
    assert_eq!(count(&summary, "copied"), 0, "{summary}");
    assert_eq!(count(&summary, "deleted"), 1, "{summary}");
    assert_same_histories(&s3, &h.bucket, &dst).await;
}
