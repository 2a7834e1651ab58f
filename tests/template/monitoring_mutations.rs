//! The monitoring and notification checks can fail: each `*_is_caught`
//! test breaks a copy of the template or of the definition the way a
//! careless edit would, and asserts that the check notices (the pattern of
//! `mutations.rs`, whose helpers these share).

use serde_json::{Value, json};

use crate::monitoring::{
    check_alarm_actions, check_dashboards, check_replication_lag_alarm, check_run_failed_alarm,
};
use crate::mutations::{assert_caught, broken, remove, set};
use crate::notifications::{check_asl_notifications, check_run_topic, load_asl};
use crate::{Check, assert_ok};

/// One careless edit of the template or the definition, in a table of
/// cases.
type Edit<'a> = Box<dyn Fn(&mut Value) + 'a>;

/// Replace `from` with `to` in a dashboard's body text (it must be there).
fn edit_body(doc: &mut Value, dashboard: &str, from: &str, to: &str) {
    let pointer = format!("/Resources/{dashboard}/Properties/DashboardBody/Fn::Sub");
    let body = doc
        .pointer_mut(&pointer)
        .and_then(|b| b.as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no {pointer}"));
    assert!(body.contains(from), "{dashboard}'s body has no {from:?}");
    set(doc, &pointer, json!(body.replacen(from, to, 1)));
}

/// The run dashboard's body with one edit, checked.
fn run_dashboard_with(from: &str, to: &str) -> Check {
    check_dashboards(&broken(|d| edit_body(d, "RunDashboard", from, to)))
}

#[test]
fn a_dashboard_metric_or_dimension_that_does_not_exist_is_caught() {
    assert_ok(check_dashboards(&broken(|_| {})));
    let cases = [
        (
            "\"ObjectsCopied\", \"FunctionName\", \"${CopierFunction}\"",
            "\"ObjectCopied\", \"FunctionName\", \"${CopierFunction}\"",
            "a misspelt metric",
        ),
        (
            "\"ObjectsListed\", \"FunctionName\", \"${ListerFunction}\"",
            "\"ObjectsListed\", \"FunctionName\", \"${CopierFunction}\"",
            "a lister metric on the copier, which never emits it",
        ),
        (
            "\"QueueName\", \"${WorkQueue.QueueName}\"",
            "\"QueueName\", \"${WorkQueue}\"",
            "a queue's URL (its Ref) as the QueueName dimension",
        ),
        (
            "\"FunctionName\", \"${CopierFunction}\", {\"label\": \"copied\"}",
            "\"Function\", \"${CopierFunction}\", {\"label\": \"copied\"}",
            "a dimension the EMF records do not have",
        ),
        (
            "\"${CopierFunction}\", {\"stat\": \"p99\", \"label\": \"p99\"}",
            "\"${CopierFunction}\", {\"stat\": \"P99th\", \"label\": \"p99\"}",
            "a statistic CloudWatch does not know",
        ),
        (
            "\"region\": \"${AWS::Region}\"",
            "\"region\": \"eu-west-1\"",
            "a hard-coded region",
        ),
        (
            "\"bytes / PERIOD(bytes)\"",
            "\"byte / PERIOD(bytes)\"",
            "an expression over a metric id the graph does not have",
        ),
        (
            "\"ExecutionsFailed\", \"StateMachineArn\", \"${SyncStateMachine}\"",
            "\"ExecutionsFailed\", \"StateMachineArn\", \"${SyncStateMachine.Name}\"",
            "the state machine's name where its ARN is the dimension",
        ),
        (
            "\"${CopierFunction}\", {\"label\": \"copied\"}],",
            "\"${CopierFunction}\", {\"label\": \"copied\"}],,",
            "a body that is not JSON",
        ),
        (
            "\"${DeadLetterQueue.QueueName}\"",
            "\"${WorkQueue.QueueName}\"",
            "the dead-letter queue's depth no longer drawn",
        ),
        (
            "\"${ListerFunction}\", {\"stat\": \"p99\", \"label\": \"p99\"}",
            "\"${ListerFunction}\", {\"stat\": \"p90\", \"label\": \"p90\"}",
            "the lister's p99 duration no longer drawn",
        ),
        (
            "\"${CopierFunction}\", {\"label\": \"copied\"}",
            "\"${ReplicatorFunction}\", {\"label\": \"copied\"}",
            "the run dashboard naming the replicator, which defaults leave out",
        ),
        (
            "\"width\": 8, \"height\": 6, \"properties\": {\n      \"title\": \"Work queue",
            "\"width\": 9, \"height\": 6, \"properties\": {\n      \"title\": \"Work queue",
            "two widgets overlapping",
        ),
    ];
    for (from, to, what) in cases {
        assert_caught(run_dashboard_with(from, to), what);
    }
    let t = broken(|d| {
        edit_body(
            d,
            "ReplicationDashboard",
            "{\"stat\": \"p99\", \"label\": \"p99\"}],\n        [\"s3-fanout\", \"ReplicationLag\"",
            "{\"stat\": \"p95\", \"label\": \"p95\"}],\n        [\"s3-fanout\", \"ReplicationLag\"",
        )
    });
    assert_caught(
        check_dashboards(&t),
        "the replication lag p99 no longer drawn",
    );
    let t = broken(|d| remove(d, "/Resources/ReplicationDashboard/Condition"));
    assert_caught(
        check_dashboards(&t),
        "the replication dashboard deployed without the replicator",
    );
}

#[test]
fn a_run_failed_alarm_on_the_wrong_metric_threshold_or_dimension_is_caught() {
    let metric = "/Resources/RunFailedAlarm/Properties/Metrics/0/MetricStat";
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|d| {
                set(
                    d,
                    &format!("{metric}/Metric/Dimensions/0/Value"),
                    json!("arn:aws:states:us-east-1:123456789012:stateMachine:other"),
                )
            }),
            "another state machine's failures",
        ),
        (
            Box::new(|d| set(d, &format!("{metric}/Stat"), json!("Average"))),
            "an average of failures",
        ),
        (
            Box::new(|d| {
                set(
                    d,
                    "/Resources/RunFailedAlarm/Properties/Threshold",
                    json!(1),
                )
            }),
            "an alarm that ignores a single failed run",
        ),
        (
            Box::new(|d| {
                set(
                    d,
                    "/Resources/RunFailedAlarm/Properties/Metrics/2/Expression",
                    json!("FILL(timedout, 0)"),
                )
            }),
            "an expression that leaves failures out",
        ),
        (
            Box::new(|d| {
                set(
                    d,
                    "/Resources/RunFailedAlarm/Properties/TreatMissingData",
                    json!("breaching"),
                )
            }),
            "no failures treated as a failure",
        ),
        (
            Box::new(|d| {
                d["Resources"]["RunFailedAlarm"]["Condition"] = json!("ReplicationEnabled");
            }),
            "the alarm only with replication",
        ),
    ];
    for (edit, what) in cases {
        assert_caught(check_run_failed_alarm(&broken(edit)), what);
    }
}

#[test]
fn a_replication_lag_alarm_in_seconds_on_another_function_or_statistic_is_caught() {
    let props = "/Resources/ReplicationLagAlarm/Properties";
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|d| {
                set(
                    d,
                    &format!("{props}/Threshold"),
                    json!({"Ref": "ReplicationLagAlarmSeconds"}),
                )
            }),
            "seconds compared with milliseconds",
        ),
        (
            Box::new(|d| set(d, &format!("{props}/ExtendedStatistic"), json!("p50"))),
            "the median instead of p99",
        ),
        (
            Box::new(|d| {
                set(
                    d,
                    &format!("{props}/Dimensions/0/Value"),
                    json!({"Ref": "CopierFunction"}),
                )
            }),
            "the copier's lag, which it never reports",
        ),
        (
            Box::new(|d| remove(d, "/Resources/ReplicationLagAlarm/Condition")),
            "the alarm without the replicator",
        ),
        (
            Box::new(|d| {
                set(
                    d,
                    "/Parameters/ReplicationLagAlarmSeconds/AllowedPattern",
                    json!("^[0-9.]+$"),
                )
            }),
            "a parameter that lets 1.5 through (1.5000 ms)",
        ),
        (
            Box::new(|d| set(d, &format!("{props}/EvaluationPeriods"), json!(1))),
            "one slow minute alarming",
        ),
    ];
    for (edit, what) in cases {
        assert_caught(check_replication_lag_alarm(&broken(edit)), what);
    }
}

#[test]
fn alarm_actions_without_the_topic_condition_are_caught() {
    let t = broken(|d| {
        set(
            d,
            "/Resources/ReplicationLagAlarm/Properties/AlarmActions",
            json!([{"Ref": "AlarmTopicArn"}]),
        )
    });
    assert_caught(check_alarm_actions(&t), "an action on an empty topic ARN");
    let t = broken(|d| remove(d, "/Resources/RunFailedAlarm/Properties/AlarmActions"));
    assert_caught(check_alarm_actions(&t), "an alarm that notifies nobody");
}

/// The state machine's inline policy statements.
fn machine_statements(doc: &mut Value) -> &mut Vec<Value> {
    doc.pointer_mut("/Resources/SyncStateMachine/Properties/Policies/0/Statement")
        .and_then(Value::as_array_mut)
        .expect("state machine statements")
}

#[test]
fn a_run_topic_deployed_unencrypted_unconditionally_or_published_to_widely_is_caught() {
    assert_ok(check_run_topic(&broken(|_| {})));
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|d| remove(d, "/Resources/RunTopic/Properties/KmsMasterKeyId")),
            "an unencrypted topic",
        ),
        (
            Box::new(|d| remove(d, "/Resources/RunTopic/Condition")),
            "a topic without RunNotifications",
        ),
        (
            Box::new(|d| {
                set(
                    d,
                    "/Resources/RunTopicEmailSubscription/Condition",
                    json!("RunNotificationsEnabled"),
                )
            }),
            "an email subscription without an address",
        ),
        (
            Box::new(|d| {
                set(
                    d,
                    "/Resources/SyncStateMachine/Properties/DefinitionSubstitutions/RunTopicArn",
                    json!("arn:aws:sns:us-east-1:123456789012:elsewhere"),
                )
            }),
            "a substitution that is not the topic, set or not",
        ),
        (
            Box::new(|d| {
                let statements = machine_statements(d);
                let last = statements.len() - 1;
                let granted = statements[last]["Fn::If"][1].clone();
                statements[last] = granted;
            }),
            "sns:Publish granted without RunNotifications",
        ),
        (
            Box::new(|d| {
                let statements = machine_statements(d);
                let last = statements.len() - 1;
                statements[last]["Fn::If"][1]["Resource"] = json!("*");
            }),
            "sns:Publish on every topic",
        ),
        (
            Box::new(|d| {
                d.pointer_mut("/Resources/CopierRole/Properties/Policies/0/PolicyDocument/Statement")
                    .and_then(Value::as_array_mut)
                    .expect("copier statements")
                    .push(json!({"Effect": "Allow", "Action": "sns:Publish", "Resource": {"Ref": "RunTopic"}}));
            }),
            "a function publishing too",
        ),
    ];
    for (edit, what) in cases {
        assert_caught(check_run_topic(&broken(edit)), what);
    }
}

/// The definition with one edit, checked.
fn asl_with(edit: impl FnOnce(&mut Value)) -> Check {
    let mut asl = load_asl();
    edit(&mut asl);
    check_asl_notifications(&asl)
}

#[test]
fn an_ending_that_skips_its_notification_or_that_a_failed_publish_changes_is_caught() {
    assert_ok(asl_with(|_| {}));
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|a| a["States"]["Plan"]["Catch"][0]["Next"] = json!("PlanFailed")),
            "a plan failure straight to PlanFailed",
        ),
        (
            Box::new(|a| a["States"]["IsOverThreshold"]["Default"] = json!("Synced")),
            "success straight to Synced",
        ),
        (
            Box::new(|a| {
                a["States"]["NotifySyncFailed"]
                    .as_object_mut()
                    .unwrap()
                    .remove("Catch");
            }),
            "a publish error failing the run",
        ),
        (
            Box::new(|a| a["States"]["NotifySynced"]["Catch"][0]["Next"] = json!("SyncFailed")),
            "a failed publish turning success into failure",
        ),
        (
            Box::new(|a| {
                a["States"]["NotifySyncFailed"]["Catch"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("ResultPath");
            }),
            "a caught error replacing the state SyncFailed's cause reads",
        ),
        (
            Box::new(|a| {
                a["States"]["NotifySynced"]
                    .as_object_mut()
                    .unwrap()
                    .remove("ResultPath");
            }),
            "the publish answer replacing the run's output",
        ),
        (
            Box::new(|a| {
                a["States"]["NotifyPlanFailed"]
                    .as_object_mut()
                    .unwrap()
                    .remove("Retry");
            }),
            "no retry of a throttled publish",
        ),
        (
            Box::new(|a| {
                a["States"]["ShouldNotifyReportFailed"]["Choices"][0]["StringEquals"] =
                    json!("none")
            }),
            "publishing with notifications off",
        ),
        (
            Box::new(|a| {
                a["States"]["SyncFailedNotice"]["Parameters"]["message"]["status"] =
                    json!("SUCCEEDED")
            }),
            "a failed run announced as succeeded",
        ),
        (
            Box::new(|a| {
                a["States"]["SyncedNotice"]["Parameters"]["message"]["outcome"] =
                    json!("SyncFailed")
            }),
            "an outcome that is not the ending",
        ),
        (
            Box::new(|a| {
                a["States"]["PlanFailedNotice"]["Parameters"]["topic"] = json!("arn:literal")
            }),
            "a topic that is not the substitution",
        ),
        (
            Box::new(|a| {
                a["States"]["SyncedNotice"]["Parameters"]["subject"] = json!("x".repeat(101))
            }),
            "a subject SNS refuses",
        ),
        (
            Box::new(|a| {
                a["States"]["PlanFailedNotice"]["Parameters"]["message"]["shards.$"] =
                    json!("$.plan.shards")
            }),
            "a notice reading a path its ending may not have (no plan after PlanFailed)",
        ),
        (
            Box::new(|a| {
                a["States"]["NotifySynced"]["Parameters"]["Subject.$"] =
                    json!("States.Format('run {}', $.report.run_id)")
            }),
            "a publish reading beyond what its notice wrote",
        ),
    ];
    for (edit, what) in cases {
        assert_caught(asl_with(edit), what);
    }
}
