//! An execution input cannot widen a serverless run (issue 18, "Serverless
//! input"), end to end on a local stack deployed, like the template, for one
//! source and one destination prefix: `s3://<src>/data/` to
//! `s3://<dst>/backup/`. Runs go through the real `s3-fanout run --wait`
//! and the real state machine (see `tests/serverless.rs`).
//!
//! - Narrowing only the source, with deletes, narrows the destination by the
//!   same sub-prefix: everything outside it is untouched, byte for byte.
//! - An input whose two sides do not line up is refused by the planner:
//!   exit 2, and nothing written to the destination or the run's state.

mod support;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_sdk_s3::Client;
use serde_json::{Value, json};
use support::local_stack::{TestStack, stack_with};
use support::*;

/// Whole tests take turns, not only their runs: each compares the
/// destination before and after, which the other's run must not change
/// in between.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// This binary's stack buckets: its source and destination parameters.
fn buckets() -> &'static (String, String) {
    static BUCKETS: OnceLock<(String, String)> = OnceLock::new();
    BUCKETS.get_or_init(|| (unique_bucket("narrow-src"), unique_bucket("narrow-dst")))
}

/// The local stack, deployed for `s3://<src>/data` (no trailing slash, as
/// an operator may write it) to `s3://<dst>/backup/`.
fn stack() -> &'static TestStack {
    let (src, dst) = buckets();
    stack_with(|options| {
        options.source = Some(format!("s3://{src}/data"));
        options.destination = Some(format!("s3://{dst}/backup/"));
    })
}

/// The stack's buckets, created once (the caller holds its [`TURN`]).
async fn create_stack_buckets(s3: &Client) {
    static CREATED: AtomicBool = AtomicBool::new(false);
    if !CREATED.swap(true, Ordering::SeqCst) {
        let (src, dst) = buckets();
        create_bucket(s3, src).await;
        create_bucket(s3, dst).await;
    }
}

/// `s3-fanout run --stack-outputs <stack> --wait --json --input <input>`.
fn run_with_input(input: &Value, run_id: &str) -> (i32, Option<Value>, CliOutput) {
    let outputs = stack().outputs_file.display().to_string();
    let file = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(file.path(), input.to_string()).expect("the input is written");
    let out = run_cli(&[
        "run",
        "--stack-outputs",
        &outputs,
        "--wait",
        "--json",
        "--input",
        file.path().to_str().expect("a UTF-8 path"),
        "--run-id",
        run_id,
    ]);
    let summary = serde_json::from_str(&out.stdout).ok();
    (out.status, summary, out)
}

/// Key, size and ETag of every object of `bucket` whose key `keep` accepts.
async fn objects(
    s3: &Client,
    bucket: &str,
    keep: impl Fn(&str) -> bool,
) -> Vec<(String, u64, String)> {
    contents(s3, bucket)
        .await
        .into_iter()
        .filter(|(key, _, _)| keep(key))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn narrowing_only_the_source_with_delete_keeps_everything_outside_the_narrowed_destination() {
    let stack = stack();
    let _turn = TURN.lock().await;
    let s3 = s3().await;
    create_stack_buckets(&s3).await;
    let (src, dst) = buckets();

    // GIVEN a source with 2023 and 2024 under the stack's prefix
    let mut seed = 0;
    let mut put_seeded = async |bucket: &str, key: &str| {
        seed += 1;
        put(&s3, bucket, key, body(seed, 64 + seed as usize)).await;
    };
    for key in [
        "data/2023/a",
        "data/2023/b",
        "data/2024/a",
        "data/2024/b",
        "data/2024/c",
        "data/2024/sub/d",
    ] {
        put_seeded(src, key).await;
    }
    // AND a destination holding copies of both years' first objects, a stale
    // 2024 object, and objects elsewhere under and outside the stack's prefix
    for (from, to) in [
        ("data/2023/a", "backup/2023/a"),
        ("data/2023/b", "backup/2023/b"),
        ("data/2024/a", "backup/2024/a"),
    ] {
        let bytes = get_bytes(&s3, src, from).await;
        put(&s3, dst, to, bytes).await;
    }
    for key in [
        "backup/2024/stale",
        "backup/other/x",
        "backup/root-extra",
        "elsewhere/y",
        "backup/a",
    ] {
        put_seeded(dst, key).await;
    }
    let narrowed = |key: &str| key.starts_with("backup/2024/");
    let outside_before = objects(&s3, dst, |k| !narrowed(k)).await;
    for key in ["backup/2023/a", "backup/other/x", "backup/a", "elsewhere/y"] {
        assert!(outside_before.iter().any(|(k, _, _)| k == key), "{key}");
    }

    // WHEN a run narrows only the source, with deletes
    let input = json!({"source": format!("s3://{src}/data/2024/"), "delete": true});
    let run_id = unique_bucket("narrow-run");
    let (code, summary, out) = run_with_input(&input, &run_id);
    let summary = summary.unwrap_or_else(|| panic!("no report: {}", out.stderr));

    // THEN the run synced 2024 into backup/2024/: three copies, one delete
    assert_eq!(code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "copied"), 3, "{summary}");
    assert_eq!(count(&summary, "deleted"), 1, "{summary}");
    assert_eq!(count(&summary, "failed"), 0, "{summary}");
    // AND every object outside the narrowed destination is as it was
    assert_eq!(objects(&s3, dst, |k| !narrowed(k)).await, outside_before);
    // AND the narrowed destination holds exactly 2024's objects, byte-equal
    let inside: Vec<String> = objects(&s3, dst, narrowed)
        .await
        .into_iter()
        .map(|(key, _, _)| key)
        .collect();
    assert_eq!(
        inside,
        [
            "backup/2024/a",
            "backup/2024/b",
            "backup/2024/c",
            "backup/2024/sub/d"
        ]
    );
    for key in ["a", "b", "c", "sub/d"] {
        assert_eq!(
            get_bytes(&s3, dst, &format!("backup/2024/{key}")).await,
            get_bytes(&s3, src, &format!("data/2024/{key}")).await,
            "{key}"
        );
    }
    // AND the run recorded where it went: its manifest names both narrowed sides
    let manifest = run_json(stack, &run_id)
        .await
        .expect("the planner wrote run.json");
    assert_eq!(manifest["spec"]["source"], format!("s3://{src}/data/2024/"));
    assert_eq!(
        manifest["spec"]["destination"],
        format!("s3://{dst}/backup/2024/")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_input_whose_sides_do_not_line_up_exits_2_and_writes_nothing() {
    let stack = stack();
    let _turn = TURN.lock().await;
    let s3 = s3().await;
    create_stack_buckets(&s3).await;
    let (src, dst) = buckets();
    // Keys of their own: the other test counts what its run copies.
    put(&s3, src, "data/2022/x", body(99, 100)).await;
    put(&s3, dst, "backup/2022/x", body(98, 100)).await;
    let before = contents(&s3, dst).await;

    for (what, input) in [
        (
            "other years",
            json!({"source": format!("s3://{src}/data/2024/"), "destination": format!("s3://{dst}/backup/2023/"), "delete": true}),
        ),
        (
            "other depths",
            json!({"source": format!("s3://{src}/data/2024"), "destination": format!("s3://{dst}/backup/"), "delete": true}),
        ),
    ] {
        // WHEN a run names both sides, narrowed differently
        let run_id = unique_bucket("misaligned");
        let (code, _, out) = run_with_input(&input, &run_id);
        // THEN the planner refuses it as a usage error
        assert_eq!(code, 2, "{what}: {}", out.stderr);
        assert!(
            out.stderr.contains("do not line up"),
            "{what}: {}",
            out.stderr
        );
        // AND nothing was written: not the destination, not the run's state
        assert_eq!(contents(&s3, dst).await, before, "{what}");
        assert!(
            run_json(stack, &run_id).await.is_none(),
            "{what}: run.json was written"
        );
    }
}

/// The run's `run.json` in the stack's report bucket, if the planner wrote it.
async fn run_json(stack: &TestStack, run_id: &str) -> Option<Value> {
    let (store, id) = (stack.env.store.clone(), run_id.to_owned());
    stack
        .runtime
        .spawn(async move { store.get_json::<Value>(&id, "run.json").await })
        .await
        .expect("the read ran")
        .expect("the report bucket answers")
}
