//! Checks on the Lambda functions: Rust builds by cargo-lambda from the
//! workspace on provided.al2023 and the Architecture parameter, a log group
//! with retention each, and the environment the code reads.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::Check;
use crate::iam::render;
use crate::model::{COPIER, FUNCTION_BINARIES, REPLICATOR, Template, infra_dir};
use crate::workspace::{dependency_line, function_crate_dir, workspace_list};

/// The directory a function's CodeUri names, relative to the template.
pub fn code_dir(t: &Template, function: &Value) -> Result<PathBuf, String> {
    let uri = t
        .function_prop(function, "CodeUri")
        .and_then(|v| v.as_str().map(str::to_string))
        .ok_or("function without a string CodeUri")?;
    // canonicalize: the template's own directory is where SAM resolves it.
    infra_dir()
        .join(&uri)
        .canonicalize()
        .map_err(|e| format!("CodeUri {uri} does not exist relative to infra/: {e}"))
}

/// (h) Five Rust functions, built by cargo-lambda from the workspace, on
/// provided.al2023 and the Architecture parameter (default arm64).
pub fn check_functions_build(t: &Template) -> Check {
    let functions = t.of_type("AWS::Serverless::Function");
    let binaries: BTreeSet<&str> = functions
        .iter()
        .filter_map(|(_, f)| f.pointer("/Metadata/BuildProperties/Binary")?.as_str())
        .collect();
    ensure!(
        functions.len() == FUNCTION_BINARIES.len()
            && binaries == FUNCTION_BINARIES.iter().copied().collect(),
        "expected one function per binary {FUNCTION_BINARIES:?}, found {binaries:?} in {} functions",
        functions.len()
    );
    let architecture = t
        .parameter("Architecture")
        .ok_or("no Architecture parameter")?;
    ensure!(
        architecture.get("Default").and_then(Value::as_str) == Some("arm64"),
        "Architecture must default to arm64"
    );
    ensure!(
        t.allowed_values("Architecture") == ["arm64", "x86_64"],
        "Architecture must allow exactly arm64 and x86_64"
    );
    for (id, function) in functions {
        ensure!(
            function
                .pointer("/Metadata/BuildMethod")
                .and_then(Value::as_str)
                == Some("rust-cargolambda"),
            "{id} must have Metadata.BuildMethod rust-cargolambda"
        );
        ensure!(
            t.function_prop(function, "Runtime") == Some(json!("provided.al2023")),
            "{id} must run on provided.al2023"
        );
        ensure!(
            t.function_prop(function, "Architectures") == Some(json!([{ "Ref": "Architecture" }])),
            "{id} Architectures must be [!Ref Architecture]"
        );
        let binary = function
            .pointer("/Metadata/BuildProperties/Binary")
            .and_then(Value::as_str)
            .expect("checked above");
        // SAM runs `cargo lambda build --bin <Binary>` in CodeUri. In the
        // function's own crate, cargo builds that package alone, so the
        // library comes without the CLI's features; at the workspace root it
        // would select every default member and unify their features.
        let dir = code_dir(t, function)?;
        let root = crate::model::repo()
            .canonicalize()
            .map_err(|e| format!("repository root: {e}"))?;
        let crate_dir = function_crate_dir(&root, binary)
            .ok_or_else(|| format!("{id}: no crate under functions/ builds {binary}"))?
            .canonicalize()
            .map_err(|e| format!("{id}: {e}"))?;
        ensure!(
            dir == crate_dir,
            "{id}: CodeUri is {}, not the crate that builds {binary} ({})",
            dir.display(),
            crate_dir.display()
        );
        let member = crate_dir
            .strip_prefix(&root)
            .expect("under root")
            .to_string_lossy()
            .into_owned();
        let workspace = fs::read_to_string(root.join("Cargo.toml"))
            .map_err(|e| format!("cannot read the workspace's Cargo.toml: {e}"))?;
        ensure!(
            workspace_list(&workspace, "members").contains(&member),
            "{member} (package {binary}) is not a member of the workspace at {}",
            root.display()
        );
        let manifest = fs::read_to_string(crate_dir.join("Cargo.toml"))
            .map_err(|e| format!("{id}: no Cargo.toml in {member}: {e}"))?;
        ensure!(
            dependency_line(&manifest, "s3-fanout")
                .is_some_and(|line| line.contains("default-features = false")),
            "{member}/Cargo.toml must depend on s3-fanout with default-features = false: \
             the CLI's features (local stack server, archives, stack controls) stay out of the Lambda"
        );
    }
    Ok(())
}

/// Each function logs to a group created here, with a retention, named as
/// Lambda names it, and deployed under the same condition as the function
/// (no orphan group without it, no function logging to a group never made).
pub fn check_log_groups(t: &Template) -> Check {
    let groups = t.of_type("AWS::Logs::LogGroup");
    for (id, function) in t.of_type("AWS::Serverless::Function") {
        let name = t
            .props(function)
            .get("FunctionName")
            .and_then(|n| render(n).into_iter().next())
            .ok_or_else(|| format!("{id} has no FunctionName: its log group name is unknown"))?;
        let expected = format!("/aws/lambda/{name}");
        let group = groups.iter().find(|(_, g)| {
            t.props(g)
                .get("LogGroupName")
                .is_some_and(|n| render(n) == [expected.clone()])
        });
        let (group_id, group) =
            group.ok_or_else(|| format!("{id} has no AWS::Logs::LogGroup named {expected}"))?;
        ensure!(
            t.props(group).get("RetentionInDays") == Some(&json!({"Ref": "LogRetentionDays"})),
            "{group_id} must set RetentionInDays: !Ref LogRetentionDays"
        );
        ensure!(
            group.get("Condition") == function.get("Condition"),
            "{group_id} must have the Condition of {id} ({:?}), has {:?}",
            function.get("Condition"),
            group.get("Condition")
        );
    }
    ensure!(
        t.default_of("LogRetentionDays").as_deref() == Some("30"),
        "LogRetentionDays should default to 30"
    );
    Ok(())
}

/// Every function gets the configuration the code reads, from the right
/// parameters: the stack's (Globals, Include and Exclude among them, so the
/// nightly sync and replication filter keys alike), the work queue for
/// the lister, copier and reporter, and the replicator's own.
pub fn check_environment(t: &Template) -> Check {
    let common = [
        (
            "S3_FANOUT_SOURCE",
            json!({"Fn::Sub": "s3://${SourceBucket}/${SourcePrefix}"}),
        ),
        (
            "S3_FANOUT_DESTINATION",
            json!({"Fn::Sub": "s3://${DestinationBucket}/${DestinationPrefix}"}),
        ),
        ("S3_FANOUT_MODE", json!({"Ref": "Mode"})),
        ("S3_FANOUT_ALLOW_DELETE", json!({"Ref": "AllowDelete"})),
        ("S3_FANOUT_INCLUDE", json!({"Ref": "Include"})),
        ("S3_FANOUT_EXCLUDE", json!({"Ref": "Exclude"})),
        ("S3_FANOUT_REPORT_BUCKET", json!({"Ref": "ReportBucket"})),
        ("S3_FANOUT_REPORT_PREFIX", json!({"Ref": "ReportPrefix"})),
        // The destination's key fixes every copy's encryption (the planner
        // refuses an input naming another, the replicator applies it).
        (
            "S3_FANOUT_SSE",
            json!({"Fn::If": ["HasDestinationKmsKey", "aws:kms", ""]}),
        ),
        (
            "S3_FANOUT_SSE_KMS_KEY_ID",
            json!({"Ref": "DestinationKmsKeyArn"}),
        ),
        ("RUST_LOG", json!("info")),
    ];
    let queue = t.work_queue()?.0.to_string();
    for binary in FUNCTION_BINARIES {
        let (id, function) = t.function(binary)?;
        let env = t.environment(function);
        for (name, value) in &common {
            ensure!(
                env.get(*name) == Some(value),
                "{id} {name} must be {value}, is {:?}",
                env.get(*name)
            );
        }
        let needs_queue = [COPIER, "s3-fanout-lister", "s3-fanout-reporter"].contains(&binary);
        let has_queue = env.contains_key("S3_FANOUT_WORK_QUEUE_URL");
        ensure!(
            has_queue == needs_queue
                && (!has_queue
                    || env.get("S3_FANOUT_WORK_QUEUE_URL") == Some(&json!({"Ref": queue}))),
            "{id} S3_FANOUT_WORK_QUEUE_URL must be !Ref {queue} exactly for the lister, copier and reporter"
        );
    }
    // The run counters, for the functions that count batches and ranges or
    // read them.
    for binary in FUNCTION_BINARIES {
        let (id, function) = t.function(binary)?;
        let counts = [
            COPIER,
            "s3-fanout-lister",
            "s3-fanout-reporter",
            "s3-fanout-planner",
        ]
        .contains(&binary);
        let table = t.environment(function).get("S3_FANOUT_RUN_TABLE").cloned();
        ensure!(
            table == counts.then(|| json!({"Ref": "RunTable"})),
            "{id} S3_FANOUT_RUN_TABLE must be !Ref RunTable exactly for the planner, lister, copier and reporter, is {table:?}"
        );
    }
    // The range queue: the planner starts a pass there, listers take and
    // hand on its tasks, a range's last copier sends it to VALIDATE, the
    // reporter reads its depth.
    for binary in FUNCTION_BINARIES {
        let (id, function) = t.function(binary)?;
        let uses = [
            "s3-fanout-planner",
            "s3-fanout-lister",
            COPIER,
            "s3-fanout-reporter",
        ]
        .contains(&binary);
        let queue = t
            .environment(function)
            .get("S3_FANOUT_RANGE_QUEUE_URL")
            .cloned();
        ensure!(
            queue == uses.then(|| json!({"Ref": "RangeQueue"})),
            "{id} S3_FANOUT_RANGE_QUEUE_URL must be !Ref RangeQueue exactly for the planner, lister, copier and reporter, is {queue:?}"
        );
    }
    for binary in [COPIER, REPLICATOR] {
        let (id, function) = t.function(binary)?;
        ensure!(
            t.environment(function).get("S3_FANOUT_COPY_CONCURRENCY")
                == Some(&json!({"Ref": "CopierTaskConcurrency"})),
            "{id} S3_FANOUT_COPY_CONCURRENCY must !Ref CopierTaskConcurrency"
        );
    }
    // The replicator's own: deletes (whose value check_delete_only_when_allowed
    // compares with its role), the event dead-letter queue it sends
    // unfixable events to, and the receive count it gives up at.
    let (replicator_id, replicator) = t.function(REPLICATOR)?;
    let env = t.environment(replicator);
    let (event_queue, _) = t.event_queue()?;
    let (event_dlq, _) = t.dead_letter_queue_of(event_queue)?;
    let own = [
        ("S3_FANOUT_REPLICATE_DELETES", None),
        (
            "S3_FANOUT_DEAD_LETTER_QUEUE_URL",
            Some(json!({"Ref": event_dlq})),
        ),
        (
            "S3_FANOUT_MAX_RECEIVE_COUNT",
            Some(json!({"Ref": "MaxReceiveCount"})),
        ),
    ];
    for (name, want) in own {
        let have = env.get(name);
        ensure!(
            have.is_some() && (want.is_none() || have == want.as_ref()),
            "{replicator_id} {name} must be {}, is {have:?}",
            want.map_or("set".to_string(), |w| w.to_string())
        );
    }
    let defaults = [
        ("Mode", "etag"),
        ("ReportPrefix", "runs/"),
        ("SourcePrefix", ""),
        ("DestinationPrefix", ""),
        ("CopierTimeout", "900"),
        ("CopierBatchSize", "1"),
        ("CopierMaxConcurrency", "50"),
        ("CopierTaskConcurrency", "16"),
        ("ReportRetentionDays", "90"),
        ("Include", ""),
        ("Exclude", ""),
        ("ScheduleExpression", "cron(0 2 * * ? *)"),
        ("ScheduleTimezone", "UTC"),
        ("ScheduleEnabled", "true"),
        ("Replication", "false"),
        ("ReplicateDeletes", "false"),
        ("SourceAccountId", ""),
        ("ReplicatorBatchSize", "10"),
        ("ReplicatorMaxConcurrency", "20"),
    ];
    for (name, default) in defaults {
        ensure!(
            t.default_of(name).as_deref() == Some(default),
            "parameter {name} must default to {default:?}, is {:?}",
            t.default_of(name)
        );
    }
    ensure!(
        t.allowed_values("Mode") == ["missing", "size", "etag"],
        "Mode must allow missing, size and etag"
    );
    Ok(())
}

/// Source text without `//` comments, so a comment that says
/// "not #[tokio::main]" reads as nothing. (Naive about `//` inside string
/// literals, which the binaries' mains do not have.)
fn code_of(source: &str) -> String {
    source
        .lines()
        .map(|line| line.split_once("//").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One binary's `main.rs`: a plain `fn main` whose first statement starts
/// the runtime with `s3_fanout::base::allocator::tuned_runtime()`, which tunes
/// the allocator and only then builds the runtime. `#[tokio::main]`, or a
/// runtime built any other way, starts the runtime's threads before
/// `tune()` runs, against its SAFETY comment (mallopt while other threads
/// allocate).
pub fn check_binary_main(name: &str, source: &str) -> Check {
    let code = code_of(source);
    for banned in [
        "tokio::main",
        "async fn main",
        "runtime::Builder",
        "Runtime::new",
    ] {
        ensure!(
            !code.contains(banned),
            "{name}: `{banned}` builds a runtime before the allocator is tuned; start with s3_fanout::base::allocator::tuned_runtime() in a plain fn main"
        );
    }
    let (_, after) = code
        .split_once("fn main(")
        .ok_or_else(|| format!("{name}: no fn main"))?;
    let body = after
        .split_once('{')
        .map(|(_, body)| body)
        .ok_or_else(|| format!("{name}: fn main has no body"))?;
    let first = body.split(';').next().unwrap_or_default();
    ensure!(
        first.contains("allocator::tuned_runtime()"),
        "{name}: fn main must begin by starting the runtime with s3_fanout::base::allocator::tuned_runtime(), begins with {:?}",
        first.trim()
    );
    Ok(())
}

/// `tuned_runtime` itself tunes before it builds.
pub fn check_tuned_runtime(source: &str) -> Check {
    let code = code_of(source);
    let (_, body) = code
        .split_once("pub fn tuned_runtime(")
        .ok_or("src/base/allocator.rs has no pub fn tuned_runtime")?;
    let body = body.split("\n}").next().unwrap_or_default();
    let tune = body.find("tune();");
    let build = body.find("Builder::new_multi_thread");
    ensure!(
        matches!((tune, build), (Some(t), Some(b)) if t < b),
        "tuned_runtime must call tune() before Builder::new_multi_thread, body: {body}"
    );
    Ok(())
}

/// Every function crate's main and the CLI's, and the helper they share.
pub fn check_binary_mains() -> Check {
    let root = crate::model::repo();
    let mut mains = vec![root.join("src/main.rs")];
    for binary in FUNCTION_BINARIES {
        let dir = function_crate_dir(&root, binary)
            .ok_or_else(|| format!("no crate under functions/ builds {binary}"))?;
        mains.push(dir.join("src/main.rs"));
    }
    for path in mains {
        let source = fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        check_binary_main(&path.display().to_string(), &source)?;
    }
    let allocator = fs::read_to_string(root.join("src/base/allocator.rs"))
        .map_err(|e| format!("cannot read src/base/allocator.rs: {e}"))?;
    check_tuned_runtime(&allocator)
}
