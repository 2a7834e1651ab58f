//! The checks can fail: each `*_is_caught` test breaks a copy of the template
//! (or the placeholder set) the way a careless edit would, and asserts that
//! the check returns `Err`.

use serde_json::{Value, json};

use crate::conditions::check_references_resolve;
use crate::functions::{
    check_binary_main, check_environment, check_functions_build, check_log_groups,
    check_tuned_runtime,
};
use crate::list_prefixes::check_list_bucket_prefixes;
use crate::model::{COPIER, REPLICATOR, Template, load};
use crate::outputs::check_outputs;
use crate::permissions::{
    check_delete_only_when_allowed, check_kms, check_least_privilege, check_no_star_resources,
    check_no_wildcard_writes, check_replicator_versions,
};
use crate::queues::{
    check_copier_event_source, check_dead_letter_alarm, check_max_receive_count,
    check_queues_encrypted, check_visibility_timeout,
};
use crate::replication::{
    check_event_queue, check_event_queue_policy, check_object_events_rule,
    check_replication_is_optional,
};
use crate::schedule::{check_nightly_schedule, check_schedule_is_wired};
use crate::state_machine::{asl_placeholders, check_state_machine};
use crate::{Check, assert_ok};

/// One careless edit of the template, in a table of cases.
type Edit<'a> = Box<dyn Fn(&mut Value) + 'a>;

/// A copy of the template with `edit` applied to its JSON form.
pub(crate) fn broken(edit: impl FnOnce(&mut Value)) -> Template {
    let mut doc = load().doc;
    edit(&mut doc);
    Template::new(doc)
}

pub(crate) fn set(doc: &mut Value, pointer: &str, value: Value) {
    *doc.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("template has no {pointer}")) = value;
}

fn copier_id(doc: &Value) -> String {
    function_id(doc, COPIER)
}

fn function_id(doc: &Value, binary: &str) -> String {
    Template::new(doc.clone())
        .function(binary)
        .expect("function")
        .0
        .to_string()
}

/// The pointer to the properties of `binary`'s (one) SQS event.
fn sqs_event_pointer(doc: &Value, binary: &str) -> String {
    let id = function_id(doc, binary);
    let name = doc["Resources"][&id]["Properties"]["Events"]
        .as_object()
        .expect("events")
        .keys()
        .next()
        .expect("one event")
        .clone();
    format!("/Resources/{id}/Properties/Events/{name}/Properties")
}

pub(crate) fn remove(doc: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    doc.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("template has no object {parent}"))
        .remove(key)
        .unwrap_or_else(|| panic!("template has no {pointer}"));
}

fn queue_policy_statement<'a>(doc: &'a mut Value, sid: &str) -> &'a mut Value {
    doc.pointer_mut("/Resources/EventQueuePolicy/Properties/PolicyDocument/Statement")
        .and_then(Value::as_array_mut)
        .expect("queue policy statements")
        .iter_mut()
        .find(|s| s["Sid"] == json!(sid))
        .unwrap_or_else(|| panic!("no queue policy statement {sid}"))
}

fn schedule_role_statements(doc: &mut Value) -> &mut Vec<Value> {
    doc.pointer_mut("/Resources/ScheduleRole/Properties/Policies/0/PolicyDocument/Statement")
        .and_then(Value::as_array_mut)
        .expect("schedule role statements")
}

fn role_statements<'a>(doc: &'a mut Value, function: &str) -> &'a mut Vec<Value> {
    let t = Template::new(doc.clone());
    let (id, _) = t.function(function).expect("function");
    let role = t.function_role(id).expect("role").to_string();
    doc.pointer_mut(&format!(
        "/Resources/{role}/Properties/Policies/0/PolicyDocument/Statement"
    ))
    .and_then(Value::as_array_mut)
    .expect("role statements")
}

pub(crate) fn assert_caught(check: Check, what: &str) {
    assert!(check.is_err(), "the check did not notice: {what}");
}

#[test]
fn visibility_timeout_below_six_times_is_caught() {
    let (queue, _) = load()
        .work_queue()
        .map(|(q, v)| (q.to_string(), v.clone()))
        .unwrap();
    // A fixed value that is fine for the default timeout but not for others...
    let t = broken(|d| {
        set(
            d,
            &format!("/Resources/{queue}/Properties/VisibilityTimeout"),
            json!(5400),
        )
    });
    assert_ok(check_visibility_timeout(&t));
    // ...and one mapping entry below 6x.
    let t = broken(|d| {
        set(
            d,
            "/Mappings/CopierVisibility/300/VisibilityTimeout",
            json!(1500),
        )
    });
    assert_caught(
        check_visibility_timeout(&t),
        "visibility 5x timeout for CopierTimeout=300",
    );
    let t = broken(|d| {
        set(
            d,
            &format!("/Resources/{queue}/Properties/VisibilityTimeout"),
            json!(900),
        )
    });
    assert_caught(check_visibility_timeout(&t), "visibility 1x timeout");
    let t = broken(|d| {
        let copier = copier_id(d);
        set(
            d,
            &format!("/Resources/{copier}/Properties/Timeout"),
            json!(901),
        );
    });
    assert_caught(
        check_visibility_timeout(&t),
        "copier timeout above the mapped value",
    );
}

#[test]
fn unencrypted_queue_is_caught() {
    let t = broken(|d| {
        set(
            d,
            "/Resources/DeadLetterQueue/Properties/SqsManagedSseEnabled",
            json!(false),
        )
    });
    assert_caught(check_queues_encrypted(&t), "DLQ without SSE");
}

#[test]
fn copier_event_source_without_partial_failures_or_cap_is_caught() {
    let event = |d: &Value| {
        let t = Template::new(d.clone());
        let copier = copier_id(d);
        let name = t.resources()[&copier]["Properties"]["Events"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        format!("/Resources/{copier}/Properties/Events/{name}/Properties")
    };
    let t = broken(|d| {
        let e = event(d);
        set(d, &format!("{e}/FunctionResponseTypes"), json!([]));
    });
    assert_caught(check_copier_event_source(&t), "no ReportBatchItemFailures");
    let t = broken(|d| {
        let e = event(d);
        set(
            d,
            &format!("{e}/ScalingConfig/MaximumConcurrency"),
            json!(50),
        );
    });
    assert_caught(
        check_copier_event_source(&t),
        "hard-coded MaximumConcurrency",
    );
}

#[test]
fn wildcard_writes_and_star_resources_are_caught() {
    for resource in [
        json!("*"),
        json!("arn:aws:s3:::*"),
        json!("arn:aws:s3:::*/backup/*"),
        json!({"Fn::Sub": "arn:${AWS::Partition}:s3:::dest-*/x"}),
    ] {
        let t = broken(|d| {
            role_statements(d, COPIER).push(json!({
                "Effect": "Allow", "Action": "s3:Put*", "Resource": resource.clone()
            }));
        });
        assert_caught(
            check_no_wildcard_writes(&t),
            &format!("s3:Put* on {resource}"),
        );
    }
    let t = broken(|d| {
        role_statements(d, "s3-fanout-reporter")
            .push(json!({"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::*"}));
    });
    assert_caught(check_no_wildcard_writes(&t), "s3:* on every bucket");
    let t = broken(|d| {
        role_statements(d, "s3-fanout-planner")
            .push(json!({"Effect": "Allow", "Action": "sqs:ListQueues", "Resource": "*"}));
    });
    assert_caught(check_no_star_resources(&t), "a read action on *");
    // A bucket parameter that could hold "*".
    let t = broken(|d| {
        set(
            d,
            "/Parameters/DestinationBucket/AllowedPattern",
            json!(".*"),
        )
    });
    assert_caught(
        check_no_wildcard_writes(&t),
        "unconstrained bucket parameter",
    );
    // SAM policies would bring managed policies with Resource "*".
    let t = broken(|d| {
        let copier = copier_id(d);
        set(d, &format!("/Resources/{copier}/Properties"), {
            let mut p = d["Resources"][&copier]["Properties"].clone();
            p["Policies"] = json!(["AWSLambdaSQSQueueExecutionRole"]);
            p
        });
    });
    assert_caught(check_no_star_resources(&t), "SAM Policies on a function");
}

#[test]
fn extra_or_missing_permissions_are_caught() {
    let t = broken(|d| {
        role_statements(d, "s3-fanout-lister").push(json!({
            "Effect": "Allow", "Action": "s3:PutObject",
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${SourceBucket}/${SourcePrefix}*"}
        }));
    });
    assert_caught(check_least_privilege(&t), "lister writing source objects");
    // It proves KMS pairs by HEADs: without s3:GetObject on the
    // destination, each would fall back to the listings' rule.
    let t = broken(|d| {
        role_statements(d, "s3-fanout-lister")
            .retain(|s| s.get("Sid") != Some(&json!("ProvePairsByChecksums")));
    });
    assert_caught(check_least_privilege(&t), "lister unable to HEAD a pair");
    let t = broken(|d| {
        role_statements(d, COPIER).retain(|s| s.get("Sid") != Some(&json!("ReadSourceObjects")));
    });
    assert_caught(
        check_least_privilege(&t),
        "copier unable to read the source",
    );
    // A HEAD of a missing destination key would be a 403, not a 404.
    let t = broken(|d| {
        role_statements(d, REPLICATOR).retain(|s| s.get("Sid") != Some(&json!("ListDestination")));
    });
    assert_caught(
        check_least_privilege(&t),
        "replicator without s3:ListBucket on the destination",
    );
    let t = broken(|d| {
        role_statements(d, REPLICATOR).push(json!({
            "Effect": "Allow", "Action": "s3:PutObject",
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${SourceBucket}/${SourcePrefix}*"}
        }));
    });
    assert_caught(check_least_privilege(&t), "replicator writing the source");
    let t = broken(|d| {
        role_statements(d, REPLICATOR).push(json!({
            "Effect": "Allow", "Action": "sqs:SendMessage",
            "Resource": {"Fn::GetAtt": ["WorkQueue", "Arn"]}
        }));
    });
    assert_caught(
        check_least_privilege(&t),
        "replicator sending to the work queue",
    );
}

/// The statement `sid` of `binary`'s role.
fn role_statement<'a>(doc: &'a mut Value, binary: &str, sid: &str) -> &'a mut Value {
    role_statements(doc, binary)
        .iter_mut()
        .find(|s| s.get("Sid") == Some(&json!(sid)))
        .unwrap_or_else(|| panic!("{binary} has no statement {sid}"))
}

#[test]
fn list_bucket_not_held_to_the_stacks_prefix_is_caught() {
    let prefix_like = |operator: &str, param: &str| json!({operator: {"s3:prefix": {"Fn::Sub": format!("${{{param}}}*")}}});
    let cases: Vec<(&str, Edit)> = vec![
        (
            "the lister listing the whole source bucket",
            Box::new(|d| {
                remove(
                    role_statement(d, "s3-fanout-lister", "ListSource"),
                    "/Condition",
                )
            }),
        ),
        (
            "the copier listing the whole report bucket",
            Box::new(|d| remove(role_statement(d, COPIER, "ListRunState"), "/Condition")),
        ),
        (
            "the planner listing the destination under the source's prefix",
            Box::new(|d| {
                role_statement(d, "s3-fanout-planner", "ListDestination")["Condition"] = json!({"Fn::If": ["HasDestinationPrefix", prefix_like("StringLike", "SourcePrefix"), {"Ref": "AWS::NoValue"}]});
            }),
        ),
        (
            "one statement listing both buckets, as the template once had",
            Box::new(|d| {
                let statements = role_statements(d, "s3-fanout-lister");
                statements.retain(|s| s.get("Sid") != Some(&json!("ListDestination")));
                let source = statements
                    .iter_mut()
                    .find(|s| s.get("Sid") == Some(&json!("ListSource")))
                    .expect("ListSource");
                source["Resource"] = json!([
                    {"Fn::Sub": "arn:${AWS::Partition}:s3:::${SourceBucket}"},
                    {"Fn::Sub": "arn:${AWS::Partition}:s3:::${DestinationBucket}"},
                ]);
            }),
        ),
        (
            "a prefix condition on a whole bucket, refusing a listing without prefix",
            Box::new(|d| {
                role_statement(d, "s3-fanout-planner", "ListSource")["Condition"] =
                    prefix_like("StringLike", "SourcePrefix");
            }),
        ),
        (
            "the replicator's HEAD of a missing destination key answered 403",
            Box::new(|d| {
                role_statement(d, REPLICATOR, "ListDestination")["Condition"] = json!({"Fn::If": ["HasDestinationPrefix", prefix_like("StringLike", "DestinationPrefix"), {"Ref": "AWS::NoValue"}]});
            }),
        ),
        (
            "the planner admitted to list a whole bucket by sending no prefix",
            Box::new(|d| {
                role_statement(d, "s3-fanout-planner", "ListSource")["Condition"] = json!({"Fn::If": ["HasSourcePrefix", prefix_like("StringLikeIfExists", "SourcePrefix"), {"Ref": "AWS::NoValue"}]});
            }),
        ),
        (
            "a condition widened with a second pattern",
            Box::new(|d| {
                role_statement(d, "s3-fanout-reporter", "ListRunState")["Condition"] = json!({"StringLikeIfExists": {"s3:prefix": [{"Fn::Sub": "${ReportPrefix}*"}, "*"]}});
            }),
        ),
    ];
    for (what, edit) in cases {
        assert_caught(check_list_bucket_prefixes(&broken(edit)), what);
    }
}

#[test]
fn unconditional_delete_is_caught() {
    let t = broken(|d| {
        role_statements(d, COPIER).push(json!({
            "Effect": "Allow", "Action": "s3:DeleteObject",
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${DestinationBucket}/${DestinationPrefix}*"}
        }));
    });
    assert_caught(
        check_delete_only_when_allowed(&t),
        "DeleteObject without !If",
    );
    // Guarded, but by the wrong branch (granted when AllowDelete is false).
    let t = broken(|d| {
        for s in role_statements(d, COPIER).iter_mut() {
            if let Some(args) = s.get_mut("Fn::If").and_then(Value::as_array_mut)
                && args[0] == json!("DeleteAllowed")
            {
                args.swap(1, 2);
            }
        }
    });
    assert_caught(
        check_delete_only_when_allowed(&t),
        "DeleteObject on the false branch",
    );
    let t = broken(|d| set(d, "/Parameters/AllowDelete/Default", json!("true")));
    assert_caught(
        check_delete_only_when_allowed(&t),
        "AllowDelete defaulting to true",
    );
}

#[test]
fn replicator_deletes_not_following_both_parameters_are_caught() {
    let guard = |condition: &'static str| {
        broken(move |d| {
            for s in role_statements(d, REPLICATOR).iter_mut() {
                if let Some(args) = s.get_mut("Fn::If").and_then(Value::as_array_mut)
                    && args[0] == json!("ReplicatorDeletes")
                {
                    args[0] = json!(condition);
                }
            }
        })
    };
    // Without ReplicateAllVersions' delete markers, its histories would
    // stop at the first one...
    assert_caught(
        check_delete_only_when_allowed(&guard("DeleteReplicated")),
        "replicator deleting only on ReplicateDeletes",
    );
    // Replication alone would delete even with ReplicateDeletes=false...
    assert_caught(
        check_delete_only_when_allowed(&guard("ReplicationEnabled")),
        "replicator deleting whenever it is deployed",
    );
    // ...and AllowDelete is the full sync's switch, not replication's.
    assert_caught(
        check_delete_only_when_allowed(&guard("DeleteAllowed")),
        "replicator deleting on AllowDelete",
    );
    let t = broken(|d| {
        role_statements(d, REPLICATOR).push(json!({
            "Effect": "Allow", "Action": "s3:DeleteObject",
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${DestinationBucket}/${DestinationPrefix}*"}
        }));
    });
    assert_caught(
        check_delete_only_when_allowed(&t),
        "replicator deleting without !If",
    );
    // The copier must not delete because replication does.
    let t = broken(|d| {
        for s in role_statements(d, COPIER).iter_mut() {
            if let Some(args) = s.get_mut("Fn::If").and_then(Value::as_array_mut)
                && args[0] == json!("DeleteAllowed")
            {
                args[0] = json!("DeleteReplicated");
            }
        }
    });
    assert_caught(
        check_delete_only_when_allowed(&t),
        "copier deleting on ReplicateDeletes",
    );
    // The code told to delete while the role may not (or the reverse).
    for told in [json!("true"), json!({"Ref": "AllowDelete"})] {
        let t = broken(|d| {
            let id = function_id(d, REPLICATOR);
            set(
                d,
                &format!(
                    "/Resources/{id}/Properties/Environment/Variables/S3_FANOUT_REPLICATE_DELETES"
                ),
                told.clone(),
            );
        });
        assert_caught(
            check_delete_only_when_allowed(&t),
            &format!("S3_FANOUT_REPLICATE_DELETES {told} disagreeing with the role"),
        );
    }
    let t = broken(|d| {
        let id = function_id(d, REPLICATOR);
        set(
            d,
            &format!(
                "/Resources/{id}/Properties/Environment/Variables/S3_FANOUT_REPLICATE_ALL_VERSIONS"
            ),
            json!("true"),
        );
    });
    assert_caught(
        check_delete_only_when_allowed(&t),
        "S3_FANOUT_REPLICATE_ALL_VERSIONS true whatever the parameter",
    );
    let t = broken(|d| set(d, "/Parameters/ReplicateDeletes/Default", json!("true")));
    assert_caught(
        check_delete_only_when_allowed(&t),
        "ReplicateDeletes defaulting to true",
    );
}

#[test]
fn unconditional_kms_is_caught() {
    let t = broken(|d| {
        role_statements(d, COPIER).push(json!({
            "Effect": "Allow", "Action": "kms:Decrypt",
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/x"}
        }));
    });
    assert_caught(check_kms(&t), "KMS without a key configured");
    let t = broken(|d| {
        role_statements(d, REPLICATOR)
            .retain(|s| s.pointer("/Fn::If/1/Sid") != Some(&json!("DecryptSource")));
    });
    assert_caught(
        check_kms(&t),
        "replicator unable to decrypt an SSE-KMS source",
    );
}

#[test]
fn missing_or_wrong_dead_letter_alarm_is_caught() {
    let t = broken(|d| {
        let resources = d["Resources"].as_object_mut().unwrap();
        resources.retain(|_, r| r["Type"] != json!("AWS::CloudWatch::Alarm"));
    });
    assert_caught(check_dead_letter_alarm(&t), "no alarm");
    let t = broken(|d| {
        set(
            d,
            "/Resources/DeadLetterQueueAlarm/Properties/Threshold",
            json!(10),
        )
    });
    assert_caught(check_dead_letter_alarm(&t), "alarm only at 11 messages");
    let t = broken(|d| {
        set(
            d,
            "/Resources/DeadLetterQueueAlarm/Properties/Dimensions/0/Value",
            json!({"Fn::GetAtt": ["WorkQueue", "QueueName"]}),
        )
    });
    assert_caught(
        check_dead_letter_alarm(&t),
        "alarm on the work queue instead",
    );
}

#[test]
fn diverging_max_receive_counts_are_caught() {
    let t = broken(|d| {
        set(
            d,
            "/Resources/WorkQueue/Properties/RedrivePolicy/maxReceiveCount",
            json!(5),
        )
    });
    assert_caught(check_max_receive_count(&t), "hard-coded maxReceiveCount");
    let t = broken(|d| {
        let copier = copier_id(d);
        set(
            d,
            &format!(
                "/Resources/{copier}/Properties/Environment/Variables/S3_FANOUT_MAX_RECEIVE_COUNT"
            ),
            json!("5"),
        );
    });
    assert_caught(check_max_receive_count(&t), "hard-coded env");
}

#[test]
fn wrong_build_settings_are_caught() {
    let t = broken(|d| set(d, "/Globals/Function/Runtime", json!("provided.al2")));
    assert_caught(check_functions_build(&t), "provided.al2");
    let t = broken(|d| set(d, "/Parameters/Architecture/Default", json!("x86_64")));
    assert_caught(check_functions_build(&t), "x86_64 default");
    let t = broken(|d| {
        let copier = copier_id(d);
        set(
            d,
            &format!("/Resources/{copier}/Metadata/BuildMethod"),
            json!("makefile"),
        );
    });
    assert_caught(check_functions_build(&t), "makefile build");
    let t = broken(|d| {
        let copier = copier_id(d);
        set(
            d,
            &format!("/Resources/{copier}/Properties/CodeUri"),
            json!("../no-such-dir"),
        );
    });
    assert_caught(check_functions_build(&t), "CodeUri elsewhere");
    let t = broken(|d| {
        let id = function_id(d, REPLICATOR);
        d["Resources"].as_object_mut().unwrap().remove(&id);
    });
    assert_caught(check_functions_build(&t), "no replicator function");
}

#[test]
fn log_group_not_following_its_function_is_caught() {
    let t = broken(|d| remove(d, "/Resources/ReplicatorLogGroup/Condition"));
    assert_caught(
        check_log_groups(&t),
        "replicator log group deployed without replication",
    );
}

#[test]
fn missing_environment_is_caught() {
    let t = broken(|d| {
        remove(
            d,
            "/Globals/Function/Environment/Variables/S3_FANOUT_INCLUDE",
        )
    });
    assert_caught(check_environment(&t), "no S3_FANOUT_INCLUDE");
    let t = broken(|d| {
        set(
            d,
            "/Globals/Function/Environment/Variables/S3_FANOUT_EXCLUDE",
            json!({"Ref": "Include"}),
        )
    });
    assert_caught(check_environment(&t), "S3_FANOUT_EXCLUDE from Include");
    let t = broken(|d| {
        remove(
            d,
            "/Globals/Function/Environment/Variables/S3_FANOUT_SSE_KMS_KEY_ID",
        )
    });
    assert_caught(
        check_environment(&t),
        "copies not held to the destination's KMS key",
    );
    let variables = |d: &Value| {
        format!(
            "/Resources/{}/Properties/Environment/Variables",
            function_id(d, REPLICATOR)
        )
    };
    let t = broken(|d| {
        let v = variables(d);
        remove(d, &format!("{v}/S3_FANOUT_DEAD_LETTER_QUEUE_URL"));
    });
    assert_caught(
        check_environment(&t),
        "replicator without its dead-letter queue",
    );
    let t = broken(|d| {
        let v = variables(d);
        set(
            d,
            &format!("{v}/S3_FANOUT_DEAD_LETTER_QUEUE_URL"),
            json!({"Ref": "DeadLetterQueue"}),
        );
    });
    assert_caught(
        check_environment(&t),
        "replicator sending to the work queue's dead-letter queue",
    );
    let t = broken(|d| {
        let v = variables(d);
        d.pointer_mut(&v).unwrap()["S3_FANOUT_WORK_QUEUE_URL"] = json!({"Ref": "WorkQueue"});
    });
    assert_caught(check_environment(&t), "replicator given the work queue");
}

#[test]
fn a_run_table_that_keeps_items_or_is_granted_too_widely_is_caught() {
    use crate::run_table::check_run_table;
    let t = broken(|d| remove(d, "/Resources/RunTable/Properties/TimeToLiveSpecification"));
    assert_caught(check_run_table(&t), "items never expire");
    let t = broken(|d| {
        set(
            d,
            "/Resources/RunTable/Properties/BillingMode",
            json!("PROVISIONED"),
        )
    });
    assert_caught(check_run_table(&t), "provisioned capacity");
    let t = broken(|d| {
        set(
            d,
            "/Resources/RunTable/Properties/KeySchema/1/AttributeName",
            json!("seq"),
        )
    });
    assert_caught(check_run_table(&t), "another sort key than the code's");
    let t = broken(|d| {
        role_statements(d, "s3-fanout-planner").push(json!({
            "Effect": "Allow", "Action": "dynamodb:Query",
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/*"}
        }));
    });
    assert_caught(check_run_table(&t), "DynamoDB on every table");
    // Who gets what on the table is least privilege's to check.
    let t = broken(|d| {
        role_statement(d, COPIER, "CountRun")["Action"] = json!("dynamodb:*");
    });
    assert_caught(check_least_privilege(&t), "the copier granted dynamodb:*");
    let t = broken(|d| {
        role_statement(d, "s3-fanout-reporter", "ReadRunCounts")["Action"] = json!([
            "dynamodb:Query",
            "dynamodb:BatchGetItem",
            "dynamodb:GetItem",
            "dynamodb:PutItem"
        ]);
    });
    assert_caught(check_least_privilege(&t), "the reporter writing counts");
    let t = broken(|d| {
        role_statements(d, "s3-fanout-lister").retain(|s| s.get("Sid") != Some(&json!("CountRun")));
    });
    assert_caught(check_least_privilege(&t), "the lister unable to count");
    let t = broken(|d| {
        role_statement(d, COPIER, "CountRun")["Action"] = json!([
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:BatchGetItem"
        ]);
    });
    assert_caught(
        check_least_privilege(&t),
        "the copier unable to read the run's stop mark",
    );
    let t = broken(|d| {
        role_statements(d, COPIER)
            .retain(|s| s.get("Sid") != Some(&json!("SendCopiedRangesToValidate")));
    });
    assert_caught(
        check_least_privilege(&t),
        "the copier unable to send a copied range to VALIDATE",
    );
    let t = broken(|d| {
        let copier = copier_id(d);
        remove(
            d,
            &format!("/Resources/{copier}/Properties/Environment/Variables/S3_FANOUT_RUN_TABLE"),
        );
    });
    assert_caught(check_environment(&t), "the copier not told the table");
    let t = broken(|d| remove(d, "/Outputs/RunTableName"));
    assert_caught(check_outputs(&t), "no RunTableName output");
}

#[test]
fn missing_outputs_are_caught() {
    let t = broken(|d| remove(d, "/Outputs/EventQueueArn"));
    assert_caught(check_outputs(&t), "no EventQueueArn output");
    let t = broken(|d| remove(d, "/Outputs/NightlyScheduleName"));
    assert_caught(check_outputs(&t), "no NightlyScheduleName output");
}

#[test]
fn replication_deployed_by_default_is_caught() {
    for id in [
        "EventQueue",
        "ReplicatorFunction",
        "ObjectEventsRule",
        "EventQueuePolicy",
    ] {
        let t = broken(|d| remove(d, &format!("/Resources/{id}/Condition")));
        assert_caught(
            check_replication_is_optional(&t),
            &format!("{id} without Condition"),
        );
    }
    let t = broken(|d| set(d, "/Parameters/Replication/Default", json!("true")));
    assert_caught(
        check_replication_is_optional(&t),
        "Replication defaulting to true",
    );
    // Replication must not take the full sync's resources away.
    let t = broken(|d| {
        d["Resources"]["WorkQueue"]["Condition"] = json!("ScheduleIsEnabled");
        d["Conditions"]["ScheduleIsEnabled"] =
            json!({"Fn::Not": [{"Condition": "ReplicationEnabled"}]});
    });
    assert_caught(
        check_replication_is_optional(&t),
        "a resource dropped by Replication=true",
    );
}

#[test]
fn references_to_resources_left_out_are_caught() {
    let t = broken(|d| remove(d, "/Outputs/EventQueueArn/Condition"));
    assert_caught(
        check_references_resolve(&t),
        "EventQueueArn output without Condition",
    );
    let t = broken(|d| remove(d, "/Resources/ReplicatorRole/Condition"));
    assert_caught(
        check_references_resolve(&t),
        "replicator role naming a queue only replication deploys",
    );
    let t = broken(|d| {
        d["Resources"]["ReportBucketPolicy"]["DependsOn"] = json!("EventQueue");
    });
    assert_caught(
        check_references_resolve(&t),
        "DependsOn a resource left out",
    );
}

#[test]
fn event_queue_mistakes_are_caught() {
    let t = broken(|d| {
        set(
            d,
            "/Resources/EventQueue/Properties/VisibilityTimeout",
            json!(900),
        )
    });
    assert_caught(
        check_event_queue(&t),
        "visibility 3x the replicator timeout",
    );
    let t = broken(|d| {
        set(
            d,
            "/Resources/EventQueue/Properties/SqsManagedSseEnabled",
            json!(false),
        )
    });
    assert_caught(check_event_queue(&t), "event queue without SSE");
    assert_caught(check_queues_encrypted(&t), "event queue without SSE");
    let t = broken(|d| {
        set(
            d,
            "/Resources/EventQueue/Properties/RedrivePolicy/deadLetterTargetArn",
            json!({"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}),
        )
    });
    assert_caught(check_event_queue(&t), "events redriven to the work DLQ");
    let t = broken(|d| {
        set(
            d,
            "/Resources/EventQueue/Properties/RedrivePolicy/maxReceiveCount",
            json!(3),
        )
    });
    assert_caught(check_event_queue(&t), "hard-coded event maxReceiveCount");
    let t = broken(|d| {
        let e = sqs_event_pointer(d, REPLICATOR);
        set(
            d,
            &format!("{e}/Queue"),
            json!({"Fn::GetAtt": ["WorkQueue", "Arn"]}),
        );
    });
    assert_caught(check_event_queue(&t), "replicator consuming the work queue");
    let t = broken(|d| {
        let e = sqs_event_pointer(d, REPLICATOR);
        remove(d, &format!("{e}/FunctionResponseTypes"));
    });
    assert_caught(
        check_event_queue(&t),
        "replicator without ReportBatchItemFailures",
    );
    let t = broken(|d| {
        let e = sqs_event_pointer(d, REPLICATOR);
        remove(d, &format!("{e}/ScalingConfig"));
    });
    assert_caught(
        check_event_queue(&t),
        "replicator without MaximumConcurrency",
    );
    let t = broken(|d| {
        let e = sqs_event_pointer(d, REPLICATOR);
        set(
            d,
            &format!("{e}/ScalingConfig/MaximumConcurrency"),
            json!({"Ref": "CopierMaxConcurrency"}),
        );
    });
    assert_caught(
        check_event_queue(&t),
        "replicator capped by the copier's parameter",
    );
    let t = broken(|d| {
        d["Resources"]
            .as_object_mut()
            .unwrap()
            .remove("EventDeadLetterQueueAlarm");
    });
    assert_caught(check_event_queue(&t), "event DLQ without alarm");
}

#[test]
fn object_events_rule_mistakes_are_caught() {
    let pattern = "/Resources/ObjectEventsRule/Properties/EventPattern";
    let cases: Vec<(&str, Edit<'_>)> = vec![
        (
            "another source",
            Box::new(|d| {
                set(
                    d,
                    &format!("{pattern}/source"),
                    json!(["aws.s3", "aws.ec2"]),
                )
            }),
        ),
        (
            "deletes not forwarded",
            Box::new(|d| {
                set(
                    d,
                    &format!("{pattern}/detail-type"),
                    json!(["Object Created"]),
                )
            }),
        ),
        (
            "a third detail-type",
            Box::new(|d| {
                set(
                    d,
                    &format!("{pattern}/detail-type"),
                    json!([
                        "Object Created",
                        "Object Deleted",
                        "Object Restore Completed"
                    ]),
                )
            }),
        ),
        (
            "the destination bucket's events",
            Box::new(|d| {
                set(
                    d,
                    &format!("{pattern}/detail/bucket/name"),
                    json!([{"Ref": "DestinationBucket"}]),
                )
            }),
        ),
        (
            "no key filter for SourcePrefix",
            Box::new(|d| remove(d, &format!("{pattern}/detail/object"))),
        ),
        (
            "rule disabled",
            Box::new(|d| {
                set(
                    d,
                    "/Resources/ObjectEventsRule/Properties/State",
                    json!("DISABLED"),
                )
            }),
        ),
        (
            "events sent to the work queue",
            Box::new(|d| {
                set(
                    d,
                    "/Resources/ObjectEventsRule/Properties/Targets/0/Arn",
                    json!({"Fn::GetAtt": ["WorkQueue", "Arn"]}),
                )
            }),
        ),
    ];
    for (what, edit) in cases {
        assert_caught(check_object_events_rule(&broken(edit)), what);
    }
}

#[test]
fn event_queue_policy_mistakes_are_caught() {
    let t = broken(|d| {
        remove(
            queue_policy_statement(d, "ObjectEventsRule"),
            "/Condition/ArnEquals",
        )
    });
    assert_caught(
        check_event_queue_policy(&t),
        "EventBridge without aws:SourceArn",
    );
    let t = broken(|d| {
        remove(
            queue_policy_statement(d, "SourceBucketNotifications"),
            "/Condition/StringEquals",
        )
    });
    assert_caught(check_event_queue_policy(&t), "S3 without aws:SourceAccount");
    let t = broken(|d| {
        let s = queue_policy_statement(d, "SourceBucketNotifications");
        let arn = s["Condition"]["ArnEquals"].clone();
        remove(s, "/Condition/ArnEquals");
        s["Condition"]["ArnLikeIfExists"] = arn;
    });
    assert_caught(
        check_event_queue_policy(&t),
        "aws:SourceArn that a request without it passes",
    );
    let t = broken(|d| {
        queue_policy_statement(d, "SourceBucketNotifications")["Condition"]["ArnEquals"]["aws:SourceArn"] =
            json!({"Fn::Sub": "arn:${AWS::Partition}:s3:::*"});
    });
    assert_caught(check_event_queue_policy(&t), "any bucket's notifications");
    let t = broken(|d| {
        queue_policy_statement(d, "SourceBucketNotifications")["Condition"]["StringEquals"]["aws:SourceAccount"] =
            json!({"Ref": "AWS::AccountId"});
    });
    assert_caught(
        check_event_queue_policy(&t),
        "aws:SourceAccount ignoring SourceAccountId",
    );
    for principal in [
        json!("*"),
        json!({"AWS": "*"}),
        json!({"AWS": {"Ref": "AWS::AccountId"}}),
    ] {
        let t = broken(|d| {
            queue_policy_statement(d, "ObjectEventsRule")["Principal"] = principal.clone();
        });
        assert_caught(
            check_event_queue_policy(&t),
            &format!("queue policy principal {principal}"),
        );
    }
    let t = broken(|d| {
        queue_policy_statement(d, "ObjectEventsRule")["Action"] = json!("sqs:*");
    });
    assert_caught(
        check_event_queue_policy(&t),
        "EventBridge allowed every SQS action",
    );
    let t = broken(|d| {
        d.pointer_mut("/Resources/EventQueuePolicy/Properties/PolicyDocument/Statement")
            .and_then(Value::as_array_mut)
            .unwrap()
            .retain(|s| s["Sid"] != json!("ObjectEventsRule"));
    });
    assert_caught(check_event_queue_policy(&t), "EventBridge unable to send");
}

#[test]
fn schedule_mistakes_are_caught() {
    let props = "/Resources/NightlySchedule/Properties";
    let cases: Vec<(&str, Edit<'_>)> = vec![
        (
            "hard-coded expression",
            Box::new(|d| {
                set(
                    d,
                    &format!("{props}/ScheduleExpression"),
                    json!("rate(1 day)"),
                )
            }),
        ),
        (
            "another default time",
            Box::new(|d| {
                set(
                    d,
                    "/Parameters/ScheduleExpression/Default",
                    json!("cron(0 3 * * ? *)"),
                )
            }),
        ),
        (
            "always enabled",
            Box::new(|d| set(d, &format!("{props}/State"), json!("ENABLED"))),
        ),
        (
            "disabled by default",
            Box::new(|d| set(d, "/Parameters/ScheduleEnabled/Default", json!("false"))),
        ),
        (
            "deleted instead of disabled",
            Box::new(|d| {
                d["Resources"]["NightlySchedule"]["Condition"] = json!("ScheduleIsEnabled")
            }),
        ),
        (
            "bare OFF read as false",
            Box::new(|d| set(d, &format!("{props}/FlexibleTimeWindow/Mode"), json!(false))),
        ),
        (
            "starting the copier instead",
            Box::new(|d| {
                set(
                    d,
                    &format!("{props}/Target/Arn"),
                    json!({"Fn::GetAtt": ["CopierFunction", "Arn"]}),
                )
            }),
        ),
        (
            "input without VALIDATE",
            Box::new(|d| {
                set(
                    d,
                    &format!("{props}/Target/Input"),
                    json!(r#"{"mode":"etag"}"#),
                )
            }),
        ),
        (
            "input in size mode",
            Box::new(|d| {
                set(
                    d,
                    &format!("{props}/Target/Input"),
                    json!(r#"{"mode":"size","validate":true}"#),
                )
            }),
        ),
        (
            "input not JSON",
            Box::new(|d| set(d, &format!("{props}/Target/Input"), json!("mode=etag"))),
        ),
        (
            "no retry policy",
            Box::new(|d| remove(d, &format!("{props}/Target/RetryPolicy"))),
        ),
        (
            "role assumable by EventBridge rules",
            Box::new(|d| {
                set(
                    d,
                    "/Resources/ScheduleRole/Properties/AssumeRolePolicyDocument/Statement/0/Principal/Service",
                    json!("events.amazonaws.com"),
                )
            }),
        ),
        (
            "role without aws:SourceAccount",
            Box::new(|d| {
                remove(
                    d,
                    "/Resources/ScheduleRole/Properties/AssumeRolePolicyDocument/Statement/0/Condition",
                )
            }),
        ),
        (
            "role allowed every Step Functions action",
            Box::new(|d| schedule_role_statements(d)[0]["Action"] = json!("states:*")),
        ),
        (
            "role starting any state machine",
            Box::new(|d| schedule_role_statements(d)[0]["Resource"] = json!("*")),
        ),
        (
            "role invoking a function too",
            Box::new(|d| {
                schedule_role_statements(d).push(json!({
                    "Effect": "Allow", "Action": "lambda:InvokeFunction",
                    "Resource": {"Fn::GetAtt": ["CopierFunction", "Arn"]}
                }))
            }),
        ),
    ];
    for (what, edit) in cases {
        assert_caught(check_nightly_schedule(&broken(edit)), what);
    }
    let t = broken(|d| schedule_role_statements(d)[0]["Resource"] = json!("*"));
    assert_caught(check_no_star_resources(&t), "schedule role on Resource *");
}

#[test]
fn placeholder_wording_is_caught() {
    let t = broken(|d| {
        set(
            d,
            "/Outputs/SyncSchedule/Description",
            json!("Placeholder until the schedule is wired in a later change."),
        )
    });
    assert_caught(check_schedule_is_wired(&t), "placeholder output");
}

#[test]
fn state_machine_mismatches_are_caught() {
    let asl = asl_placeholders().unwrap_or_else(|e| panic!("{e}"));
    let mut more = asl.clone();
    more.insert("CopierFunctionArn".into());
    assert_caught(
        check_state_machine(&load(), &more),
        "placeholder without substitution",
    );
    let t = broken(|d| {
        d["Resources"]["SyncStateMachine"]["Properties"]["Policies"][0]["Statement"][0]["Resource"]
            .as_array_mut()
            .unwrap()
            .push(json!({"Fn::GetAtt": ["CopierFunction", "Arn"]}));
    });
    assert_caught(
        check_state_machine(&t, &asl),
        "role invoking the copier too",
    );
    let t = broken(|d| {
        d["Resources"]["SyncStateMachine"]["Properties"]["Policies"][0]["Statement"][0]["Resource"]
            .as_array_mut()
            .unwrap()
            .retain(|r| r != &json!({"Fn::Sub": "${ReporterFunction.Arn}:*"}));
    });
    assert_caught(
        check_state_machine(&t, &asl),
        "role missing a qualified ARN",
    );
    let t = broken(|d| {
        set(
            d,
            "/Resources/SyncStateMachine/Properties/Type",
            json!("EXPRESS"),
        )
    });
    assert_caught(check_state_machine(&t, &asl), "express workflow");
}

#[test]
fn a_runtime_started_before_the_allocator_is_tuned_is_caught() {
    // The functions' mains before the fix: tune() ran inside the runtime.
    let tokio_main = "#[tokio::main]\nasync fn main() -> Result<(), Error> {\n    s3_fanout::base::allocator::tune();\n    init_tracing();\n    run(service_fn(|e| handle(e, &env))).await\n}\n";
    let built_first = "fn main() -> Result<(), Error> {\n    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;\n    s3_fanout::base::allocator::tune();\n    rt.block_on(body())\n}\n";
    let tuned_late = "fn main() -> Result<(), Error> {\n    spawn_watchdog_thread();\n    s3_fanout::base::allocator::tuned_runtime()?.block_on(body())\n}\n";
    for (what, source) in [
        ("#[tokio::main] calling tune()", tokio_main),
        ("a runtime built by hand before tune()", built_first),
        ("tuned_runtime() after other work", tuned_late),
    ] {
        assert_caught(check_binary_main("main.rs", source), what);
    }
    let good = "fn main() -> Result<(), Error> {\n    // Not #[tokio::main]: tuned first.\n    s3_fanout::base::allocator::tuned_runtime()?.block_on(body())\n}\n";
    assert_ok(check_binary_main("main.rs", good));
    let swapped = "pub fn tuned_runtime() -> std::io::Result<Runtime> {\n    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build();\n    tune();\n    rt\n}\n";
    assert_caught(check_tuned_runtime(swapped), "tuned_runtime building first");
}

#[test]
fn replicator_version_grants_not_following_replicate_all_versions_are_caught() {
    // Granted whenever replication is on.
    let t = broken(|d| {
        for s in role_statements(d, REPLICATOR).iter_mut() {
            if let Some(args) = s.get_mut("Fn::If").and_then(Value::as_array_mut)
                && args[0] == json!("AllVersionsReplicated")
            {
                args[0] = json!("ReplicationEnabled");
            }
        }
    });
    assert_caught(
        check_replicator_versions(&t),
        "version grants whenever the replicator is deployed",
    );
    // One of them missing: the destination's versions not listable.
    let t = broken(|d| {
        role_statements(d, REPLICATOR)
            .retain(|s| s.pointer("/Fn::If/1/Sid") != Some(&json!("ListDestinationVersions")));
    });
    assert_caught(
        check_replicator_versions(&t),
        "the destination's versions not listable",
    );
}
