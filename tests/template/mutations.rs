//! The checks can fail: each `*_is_caught` test breaks a copy of the template
//! (or the placeholder set) the way a careless edit would, and asserts that
//! the check returns `Err`.

use serde_json::{Value, json};

use crate::functions::check_functions_build;
use crate::model::{COPIER, Template, load};
use crate::permissions::{
    check_delete_only_when_allowed, check_kms, check_least_privilege, check_no_star_resources,
    check_no_wildcard_writes,
};
use crate::queues::{
    check_copier_event_source, check_dead_letter_alarm, check_max_receive_count,
    check_queues_encrypted, check_visibility_timeout,
};
use crate::state_machine::{asl_placeholders, check_state_machine};
use crate::{Check, assert_ok};

/// A copy of the template with `edit` applied to its JSON form.
fn broken(edit: impl FnOnce(&mut Value)) -> Template {
    let mut doc = load().doc;
    edit(&mut doc);
    Template::new(doc)
}

fn set(doc: &mut Value, pointer: &str, value: Value) {
    *doc.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("template has no {pointer}")) = value;
}

fn copier_id(doc: &Value) -> String {
    Template::new(doc.clone())
        .function(COPIER)
        .expect("copier")
        .0
        .to_string()
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

fn assert_caught(check: Check, what: &str) {
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
            "Effect": "Allow", "Action": "s3:GetObject",
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${SourceBucket}/${SourcePrefix}*"}
        }));
    });
    assert_caught(check_least_privilege(&t), "lister reading source objects");
    let t = broken(|d| {
        role_statements(d, COPIER).retain(|s| s.get("Sid") != Some(&json!("ReadSourceObjects")));
    });
    assert_caught(
        check_least_privilege(&t),
        "copier unable to read the source",
    );
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
fn unconditional_kms_is_caught() {
    let t = broken(|d| {
        role_statements(d, COPIER).push(json!({
            "Effect": "Allow", "Action": "kms:Decrypt",
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/x"}
        }));
    });
    assert_caught(check_kms(&t), "KMS without a key configured");
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
