//! Invariants of the AWS SAM stack in `infra/template.yaml`.
//!
//! No AWS account is needed: the template is parsed (CloudFormation short
//! tags such as `!Ref` and `!GetAtt` included), parameter defaults, mappings
//! and conditions are evaluated the way CloudFormation would, and each test
//! asserts one property a failure mode of the fan-out depends on:
//!
//! - queues (`queues.rs`): the work queue's visibility timeout is at least
//!   six times the copier's timeout, for every CopierTimeout allowed; every
//!   queue uses SQS-managed encryption; the copier's SQS event source reports
//!   batch item failures and its concurrency is a bounded parameter; the
//!   dead-letter queue keeps messages 14 days and alarms on one visible
//!   message; the redrive maxReceiveCount and the copier's
//!   `S3_FANOUT_MAX_RECEIVE_COUNT` are the same parameter.
//! - IAM (`permissions.rs`): no S3 write on a wildcard; execution roles name
//!   every resource (no `*`, no SAM or managed policies); each function's role
//!   grants exactly what it needs; `s3:DeleteObject` only to the copier when
//!   AllowDelete is true and to the replicator when Replication and
//!   ReplicateDeletes both are, with each function's environment agreeing;
//!   KMS only for the keys configured.
//! - listing (`list_prefixes.rs`): every s3:ListBucket names one bucket and
//!   is conditioned on s3:prefix inside the stack's prefix of it (none for
//!   a whole bucket), IfExists exactly where the role reads objects there.
//! - functions (`functions.rs`): five Rust functions built by cargo-lambda
//!   from the workspace's (default) members, on provided.al2023 and the
//!   Architecture parameter; the environment the code reads (Include and
//!   Exclude for all, the replicator's dead-letter queue and delete flag,
//!   the destination key's encryption); a log group with retention each,
//!   under the function's condition; every binary's plain `fn main` tunes
//!   the allocator before its runtime starts (no `#[tokio::main]`).
//! - replication (`replication.rs`): deployed only with Replication=true;
//!   the event queue is the replicator's own, encrypted, visibility at least
//!   6x the replicator's timeout, redriven to its own alarmed dead-letter
//!   queue after MaxReceiveCount, consumed with partial batch responses and
//!   a MaximumConcurrency; the EventBridge rule matches `aws.s3` "Object
//!   Created" and "Object Deleted" events of SourceBucket (under SourcePrefix)
//!   and targets the event queue; the queue policy lets only S3 and
//!   EventBridge send, each with aws:SourceArn (and S3 aws:SourceAccount).
//! - the schedule (`schedule.rs`): an EventBridge Scheduler schedule at
//!   ScheduleExpression, ENABLED exactly when ScheduleEnabled is true,
//!   starting the state machine with `{"mode":"etag","validate":true}`, its
//!   role assumable only by Scheduler and allowed only StartExecution on
//!   the state machine; no "placeholder" wording left.
//! - conditions (`conditions.rs`): with the defaults, with replication and
//!   with every option on, nothing deployed refers to a resource those
//!   parameters leave out.
//! - the state machine (`state_machine.rs`): a STANDARD workflow over
//!   `statemachine/sync.asl.json` (a missing file fails), every `${...}`
//!   placeholder in it substituted with a function of this stack (but
//!   `${RunTopicArn}`, see run notifications below), and a role that may
//!   invoke exactly those.
//! - the report bucket (`report_bucket.rs`): encrypted, private, TLS only,
//!   reports expiring; and the stack outputs operators need (`outputs.rs`).
//! - the range queue (`range_queue.rs`): listers take one range task at a
//!   time, capped by ListingConcurrency, redriven to an alarmed DLQ;
//! - the run counters (`run_table.rs`): one on-demand table keyed pk/sk,
//!   items expiring by `expires_at`, encrypted; DynamoDB granted on it
//!   alone (and to whom, exactly, is `permissions.rs`'s to say); the
//!   lister, copier and reporter, and only they, told its name.
//! - monitoring (`monitoring.rs`): each dashboard body is JSON once
//!   substituted, and every metric it draws is one a function emits (the
//!   EMF contract, found in the functions' source) or an AWS metric, with
//!   its right dimension on a resource the same parameters deploy; the
//!   dashboards draw what operators need of runs and, with Replication,
//!   of replication; a failed execution and a replication lag p99 above
//!   ReplicationLagAlarmSeconds (in ms) raise alarms, which notify
//!   AlarmTopicArn exactly when it is set.
//! - run notifications (`notifications.rs`): the topic, its email
//!   subscription and the state machine's sns:Publish on it exist only
//!   with RunNotifications=true (and NotificationEmail); `${RunTopicArn}`
//!   is empty otherwise; in the definition every ending is published with
//!   a topic and none without, and a failed publish ends the run where it
//!   was going.
//!
//! Every check is a function returning `Err` with the reason, so the
//! `*_is_caught` tests in `mutations.rs` (and `monitoring_mutations.rs`)
//! can break a copy of the template or the definition and prove that the
//! check notices. The checks rest on `yaml.rs` (YAML to
//! JSON with CloudFormation tags), `values.rs`, `model.rs` (navigating the
//! template), `eval.rs` (intrinsics and resource conditions for given
//! parameters), `iam.rs` (policy
//! statements) and `workspace.rs` (the cargo manifest); the readers have
//! tests of their own at the end of this file.
//!
//! `scripts/check-infra.sh` runs cfn-lint, checkov, asl-validator and
//! `cargo lambda build` on the same files; `tests/notifications.rs` runs the
//! definition's publishes in moto.

use std::collections::BTreeSet;

use serde_json::json;

use conditions::check_references_resolve;
use eval::params;
use functions::{check_binary_mains, check_environment, check_functions_build, check_log_groups};
use list_prefixes::check_list_bucket_prefixes;
use model::load;
use monitoring::{
    check_alarm_actions, check_dashboards, check_metric_contract_in_source,
    check_replication_lag_alarm, check_run_failed_alarm,
};
use notifications::{check_asl_notifications, check_run_topic, load_asl};
use outputs::check_outputs;
use permissions::{
    check_delete_only_when_allowed, check_kms, check_least_privilege, check_no_star_resources,
    check_no_wildcard_writes, check_replicator_versions,
};
use queues::{
    check_copier_event_source, check_dead_letter_alarm, check_max_receive_count,
    check_queues_encrypted, check_visibility_timeout,
};
use replication::{
    check_event_queue, check_event_queue_policy, check_object_events_rule,
    check_replication_is_optional,
};
use report_bucket::check_report_bucket;
use schedule::{check_nightly_schedule, check_schedule_is_wired};
use state_machine::{asl_placeholders, check_state_machine, placeholders};
use workspace::{dependency_line, manifest_has_table, workspace_list};
use yaml::parse_template;

type Check = Result<(), String>;

/// Fails a check with a formatted reason unless the condition holds.
/// Defined before the `mod`s below so that every module can use it.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        let holds: bool = $cond;
        if !holds {
            return Err(format!($($msg)+));
        }
    };
}

mod conditions;
mod eval;
mod functions;
mod iam;
mod list_prefixes;
mod model;
mod monitoring;
mod monitoring_mutations;
mod mutations;
mod notifications;
mod outputs;
mod permissions;
mod queues;
mod range_queue;
mod replication;
mod report_bucket;
mod run_table;
mod schedule;
mod state_machine;
mod values;
mod workspace;
mod yaml;

/// Fails the test with the check's reason.
fn assert_ok(check: Check) {
    if let Err(reason) = check {
        panic!("{reason}");
    }
}

#[test]
fn work_queue_visibility_timeout_is_at_least_six_times_the_copier_timeout() {
    assert_ok(check_visibility_timeout(&load()));
}

#[test]
fn every_queue_uses_sqs_managed_encryption() {
    assert_ok(check_queues_encrypted(&load()));
}

#[test]
fn copier_reports_batch_item_failures_and_its_concurrency_is_a_parameter() {
    assert_ok(check_copier_event_source(&load()));
}

#[test]
fn no_s3_write_is_granted_on_a_wildcard() {
    assert_ok(check_no_wildcard_writes(&load()));
}

#[test]
fn execution_roles_name_every_resource() {
    assert_ok(check_no_star_resources(&load()));
}

#[test]
fn each_function_has_exactly_the_permissions_it_needs() {
    assert_ok(check_least_privilege(&load()));
}

#[test]
fn delete_object_is_granted_only_when_allow_delete_or_replicate_deletes_allows_it() {
    assert_ok(check_delete_only_when_allowed(&load()));
}

#[test]
fn the_replicator_may_read_versions_only_when_it_replicates_all_versions() {
    assert_ok(check_replicator_versions(&load()));
}

#[test]
fn every_list_bucket_grant_is_conditioned_on_the_stacks_prefix_of_its_bucket() {
    assert_ok(check_list_bucket_prefixes(&load()));
}

#[test]
fn kms_permissions_follow_the_key_parameters() {
    assert_ok(check_kms(&load()));
}

#[test]
fn dead_letter_queue_has_an_alarm_on_visible_messages() {
    assert_ok(check_dead_letter_alarm(&load()));
}

#[test]
fn redrive_max_receive_count_is_the_copiers_max_receive_count() {
    assert_ok(check_max_receive_count(&load()));
}

#[test]
fn functions_are_rust_cargo_lambda_builds_on_al2023_with_the_architecture_parameter() {
    assert_ok(check_functions_build(&load()));
}

#[test]
fn state_machine_substitutes_every_placeholder_and_invokes_only_those_functions() {
    let placeholders = asl_placeholders().unwrap_or_else(|e| panic!("{e}"));
    assert_ok(check_state_machine(&load(), &placeholders));
}

#[test]
fn every_binary_tunes_the_allocator_in_a_plain_main_before_its_runtime_starts() {
    assert_ok(check_binary_mains());
}

#[test]
fn every_function_logs_to_a_log_group_with_retention() {
    assert_ok(check_log_groups(&load()));
}

#[test]
fn report_bucket_is_private_encrypted_tls_only_and_expires_reports() {
    assert_ok(check_report_bucket(&load()));
}

#[test]
fn run_table_is_on_demand_keyed_expiring_and_the_only_dynamodb_resource_granted() {
    assert_ok(run_table::check_run_table(&load()));
}

#[test]
fn functions_get_the_environment_the_code_reads() {
    assert_ok(check_environment(&load()));
}

#[test]
fn stack_outputs_name_what_operators_need() {
    assert_ok(check_outputs(&load()));
}

#[test]
fn replication_is_deployed_only_with_replication_true() {
    assert_ok(check_replication_is_optional(&load()));
}

#[test]
fn nothing_deployed_refers_to_a_resource_its_conditions_leave_out() {
    assert_ok(check_references_resolve(&load()));
}

#[test]
fn event_queue_is_the_replicators_own_encrypted_and_redriven_to_an_alarmed_dead_letter_queue() {
    assert_ok(check_event_queue(&load()));
}

#[test]
fn object_events_rule_sends_the_source_buckets_created_and_deleted_events_to_the_event_queue() {
    assert_ok(check_object_events_rule(&load()));
}

#[test]
fn event_queue_accepts_only_the_source_bucket_and_the_rule() {
    assert_ok(check_event_queue_policy(&load()));
}

#[test]
fn nightly_schedule_starts_an_etag_sync_with_validate_and_follows_schedule_enabled() {
    assert_ok(check_nightly_schedule(&load()));
}

#[test]
fn nothing_calls_the_schedule_a_placeholder_any_more() {
    assert_ok(check_schedule_is_wired(&load()));
}

#[test]
fn dashboards_are_json_and_draw_what_operators_need_from_metrics_that_exist() {
    assert_ok(check_dashboards(&load()));
}

#[test]
fn every_function_metric_the_dashboards_expect_is_written_by_the_functions_code() {
    assert_ok(check_metric_contract_in_source());
}

#[test]
fn a_failed_run_raises_an_alarm_on_the_state_machines_failed_executions() {
    assert_ok(check_run_failed_alarm(&load()));
}

#[test]
fn replication_lag_raises_a_p99_alarm_above_the_seconds_parameter_in_milliseconds() {
    assert_ok(check_replication_lag_alarm(&load()));
}

#[test]
fn alarms_notify_the_alarm_topic_exactly_when_it_is_set() {
    assert_ok(check_alarm_actions(&load()));
}

#[test]
fn run_topic_subscription_and_publish_permission_exist_only_with_run_notifications() {
    assert_ok(check_run_topic(&load()));
}

#[test]
fn every_ending_of_a_run_is_published_with_a_topic_and_none_without() {
    assert_ok(check_asl_notifications(&load_asl()));
}

// ------------------------------------------------ the readers the checks rest on

#[test]
fn workspace_manifest_reader_reads_members_and_default_members() {
    let manifest = "[package]\nname = \"s3-fanout\"\n\n[workspace]\n# comment\nmembers = [\".\", \"functions/a\",\n  \"functions/b\"]\ndefault-members = [\"functions/a\"]\n\n[dependencies]\nx = \"1\"\n";
    assert_eq!(
        workspace_list(manifest, "members"),
        [".", "functions/a", "functions/b"]
    );
    assert_eq!(workspace_list(manifest, "default-members"), ["functions/a"]);
    assert!(workspace_list("[workspace]\nmembers = [\"a\"]\n", "default-members").is_empty());
    assert!(manifest_has_table(manifest, "package"));
    assert_eq!(dependency_line(manifest, "x"), Some("x = \"1\""));
    assert_eq!(
        dependency_line(manifest, "name"),
        Some("name = \"s3-fanout\"")
    );
    assert_eq!(dependency_line(manifest, "y"), None);
}

#[test]
fn placeholder_scan_finds_substitutions_only() {
    let found = placeholders(
        r#"{"Resource": "${ListerFunctionArn}", "InputPath": "$.x", "Next": "${ReporterFunctionArn}"}"#,
    );
    let want: BTreeSet<String> = ["ListerFunctionArn", "ReporterFunctionArn"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, want);
}

#[test]
fn conditions_and_no_value_evaluate_as_cloudformation_does() {
    let t = model::Template::new(parse_template(
        "Parameters:\n  A: {Type: String, Default: \"false\"}\n  B: {Type: String, Default: \"x\"}\n\
         Conditions:\n  IsA: !Equals [!Ref A, \"true\"]\n  Both: !And [!Condition IsA, !Not [!Equals [!Ref B, \"\"]]]\n\
         Resources:\n  Always: {Type: T}\n  OnlyA: {Type: T, Condition: IsA}\n\
         Outputs:\n  O: {Condition: Both, Value: !Ref OnlyA}\n",
    ));
    let value = json!({
        "detail": {"name": [{"Ref": "B"}], "key": {"Fn::If": ["Both", {"prefix": {"Ref": "B"}}, {"Ref": "AWS::NoValue"}]}},
        "list": [{"Fn::If": ["IsA", 1, {"Ref": "AWS::NoValue"}]}, 2],
    });
    assert_eq!(
        t.eval(&value, &params(&[])),
        json!({"detail": {"name": ["x"]}, "list": [2]})
    );
    assert_eq!(
        t.eval(&value, &params(&[("A", "true")])),
        json!({"detail": {"name": ["x"], "key": {"prefix": "x"}}, "list": [1, 2]})
    );
    assert!(!t.condition("Both", &params(&[("A", "true"), ("B", "")])));
    let off = t.deployed(&params(&[]));
    assert!(off.resources().contains_key("Always") && !off.resources().contains_key("OnlyA"));
    assert!(off.section("Outputs").is_empty());
    let on = t.deployed(&params(&[("A", "true")]));
    assert!(on.resources().contains_key("OnlyA") && on.section("Outputs").contains_key("O"));
}

#[test]
fn reference_scan_reads_ref_getatt_and_sub_but_not_literals() {
    let found = conditions::references(&json!({
        "a": {"Ref": "Queue"},
        "b": {"Fn::GetAtt": ["Rule", "Arn"]},
        "c": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${Bucket}/${Log.Arn}${!Literal}"},
        "d": {"Fn::Sub": ["${Local}-${Stack}", {"Local": {"Ref": "Param"}}]},
    }));
    let want: BTreeSet<String> = [
        "AWS::Partition",
        "Bucket",
        "Log",
        "Param",
        "Queue",
        "Rule",
        "Stack",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(found, want);
}

#[test]
fn short_form_tags_parse_to_long_form_intrinsics() {
    let doc = parse_template(
        "a: !Ref X\nb: !GetAtt Q.Arn\nc: !Sub s3://${B}/\nd: !If [C, 1, !Ref AWS::NoValue]\ne: !FindInMap [M, !Ref K, V]\n",
    );
    assert_eq!(doc["a"], json!({"Ref": "X"}));
    assert_eq!(doc["b"], json!({"Fn::GetAtt": ["Q", "Arn"]}));
    assert_eq!(doc["c"], json!({"Fn::Sub": "s3://${B}/"}));
    assert_eq!(
        doc["d"],
        json!({"Fn::If": ["C", 1, {"Ref": "AWS::NoValue"}]})
    );
    assert_eq!(doc["e"], json!({"Fn::FindInMap": ["M", {"Ref": "K"}, "V"]}));
}
