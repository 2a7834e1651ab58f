//! Incremental replication (`Replication=true`): the replicator, the event
//! queue it consumes with its own dead-letter queue and alarm, the queue
//! policy S3 and EventBridge send through, and the EventBridge rule that
//! forwards the source bucket's object events. None of it is deployed
//! unless asked for.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::Check;
use crate::eval::{Params, params};
use crate::iam::render;
use crate::model::{FUNCTION_BINARIES, REPLICATOR, Template};
use crate::queues::{
    check_dead_letter_alarm_of, check_event_source, check_max_receive_count_of,
    check_visibility_covers, dead_letter_alarms,
};
use crate::values::{get_att, number, one_or_many, ref_name, scalar};

pub const S3_SERVICE: &str = "s3.amazonaws.com";
pub const EVENTS_SERVICE: &str = "events.amazonaws.com";

/// The one EventBridge rule whose target is the event queue.
pub fn object_events_rule(t: &Template) -> Result<(&str, &Value), String> {
    let (queue_id, _) = t.event_queue()?;
    let rules: Vec<_> = t
        .of_type("AWS::Events::Rule")
        .into_iter()
        .filter(|(_, rule)| {
            t.props(rule)
                .get("Targets")
                .map(one_or_many)
                .unwrap_or_default()
                .iter()
                .any(|target| target.get("Arn").and_then(get_att) == Some((queue_id, "Arn")))
        })
        .collect();
    ensure!(
        rules.len() == 1,
        "expected one AWS::Events::Rule targeting {queue_id}, found {}",
        rules.len()
    );
    Ok(rules[0])
}

/// The queue policies attached to the queue `queue_id`.
fn policies_of<'a>(t: &'a Template, queue_id: &str) -> Vec<(&'a str, &'a Value)> {
    t.of_type("AWS::SQS::QueuePolicy")
        .into_iter()
        .filter(|(_, policy)| {
            t.props(policy)
                .get("Queues")
                .map(one_or_many)
                .unwrap_or_default()
                .iter()
                .any(|q| ref_name(q) == Some(queue_id))
        })
        .collect()
}

/// Replication's resources are deployed exactly when `Replication` is
/// "true" (default "false"), and turning it on adds to the stack without
/// changing what a full sync deploys.
pub fn check_replication_is_optional(t: &Template) -> Check {
    ensure!(
        t.default_of("Replication").as_deref() == Some("false"),
        "Replication must default to \"false\""
    );
    ensure!(
        t.allowed_values("Replication") == ["true", "false"],
        "Replication must allow exactly \"true\" and \"false\""
    );
    let (replicator, _) = t.function(REPLICATOR)?;
    let role = t.function_role(replicator)?;
    let (queue, _) = t.event_queue()?;
    let (dlq, _) = t.dead_letter_queue_of(queue)?;
    let (rule, _) = object_events_rule(t)?;
    let mut parts = vec![replicator, role, queue, dlq, rule];
    parts.extend(policies_of(t, queue).into_iter().map(|(id, _)| id));
    parts.extend(dead_letter_alarms(t, dlq).into_iter().map(|(id, _)| id));

    let off = t.deployed(&Params::new());
    let on = t.deployed(&params(&[("Replication", "true")]));
    for id in parts {
        ensure!(
            on.resources().contains_key(id),
            "{id} must be deployed with Replication=true"
        );
        ensure!(
            !off.resources().contains_key(id),
            "{id} is deployed with Replication=false (the default): give it Condition ReplicationEnabled"
        );
    }
    let lost: Vec<_> = off
        .resources()
        .keys()
        .filter(|id| !on.resources().contains_key(*id))
        .collect();
    ensure!(
        lost.is_empty(),
        "Replication=true must only add resources, but leaves out {lost:?}"
    );
    let functions = off.of_type("AWS::Serverless::Function").len();
    ensure!(
        functions == FUNCTION_BINARIES.len() - 1,
        "without replication the stack must deploy the four full-sync functions, deploys {functions}"
    );
    Ok(())
}

/// The event queue: the replicator's own (not the work queue), encrypted,
/// its visibility timeout at least 6x the replicator's timeout, redriven to
/// its own dead-letter queue after MaxReceiveCount receives (the number
/// the replicator reads too), with an alarm on that queue; the replicator's
/// event source reports batch item failures and has MaximumConcurrency,
/// both from the replicator's parameters.
pub fn check_event_queue(t: &Template) -> Check {
    let (queue_id, queue) = t.event_queue()?;
    let (work_id, _) = t.work_queue()?;
    let (work_dlq, _) = t.dead_letter_queue()?;
    ensure!(
        queue_id != work_id && queue_id != work_dlq,
        "the replicator must consume its own queue, not {queue_id}"
    );
    let (dlq_id, _) = t.dead_letter_queue_of(queue_id)?;
    ensure!(
        ![queue_id, work_id, work_dlq].contains(&dlq_id),
        "{queue_id} must redrive to its own dead-letter queue, not {dlq_id}"
    );
    ensure!(
        t.props(queue).get("SqsManagedSseEnabled") == Some(&Value::Bool(true)),
        "{queue_id} must set SqsManagedSseEnabled: true (S3 and EventBridge cannot use the aws/sqs KMS key)"
    );
    check_visibility_covers(t, REPLICATOR)?;
    check_max_receive_count_of(t, REPLICATOR)?;
    check_dead_letter_alarm_of(t, queue_id)?;
    check_event_source(t, REPLICATOR)?;

    let event = t.sqs_event(REPLICATOR)?;
    for (field, parameter, default, min, max) in [
        ("/BatchSize", "ReplicatorBatchSize", "10", 1.0, 10.0),
        (
            "/ScalingConfig/MaximumConcurrency",
            "ReplicatorMaxConcurrency",
            "20",
            2.0,
            1000.0,
        ),
    ] {
        ensure!(
            event.pointer(field) == Some(&json!({ "Ref": parameter })),
            "the replicator's SQS event{} must !Ref {parameter}, is {:?}",
            field.replace('/', "."),
            event.pointer(field)
        );
        let spec = t.parameter(parameter).expect("referenced above");
        ensure!(
            t.default_of(parameter).as_deref() == Some(default)
                && spec.get("MinValue").and_then(number) == Some(min)
                && spec.get("MaxValue").and_then(number) == Some(max),
            "{parameter} must default to {default} within {min}-{max}"
        );
    }
    // A message moved to the dead-letter queue keeps its enqueue time.
    let retention = |id: &str| {
        t.eval_number(
            t.props(&t.resources()[id])
                .get("MessageRetentionPeriod")
                .unwrap_or(&Value::Null),
            &Params::new(),
        )
    };
    ensure!(
        retention(queue_id).unwrap_or(345_600.0) < retention(dlq_id).unwrap_or(0.0),
        "{dlq_id} must keep messages longer than {queue_id}"
    );
    Ok(())
}

/// The EventBridge rule: enabled on the default bus, matching `aws.s3`
/// events of detail-type exactly "Object Created" and "Object Deleted" for
/// the SourceBucket parameter's bucket, keys under SourcePrefix when one is
/// set, and sending them to the event queue and nowhere else.
pub fn check_object_events_rule(t: &Template) -> Check {
    let (queue_id, _) = t.event_queue()?;
    let (id, rule) = object_events_rule(t)?;
    let p = t.props(rule);
    ensure!(
        p.get("State").and_then(Value::as_str) == Some("ENABLED"),
        "{id} must be ENABLED"
    );
    ensure!(
        p.get("EventBusName")
            .is_none_or(|b| b.as_str() == Some("default")),
        "{id} must be on the default bus, where S3 sends its events"
    );
    let targets = p.get("Targets").map(one_or_many).unwrap_or_default();
    ensure!(
        targets.len() == 1 && targets[0].get("RoleArn").is_none(),
        "{id} must have one target, {queue_id}, authorized by the queue policy (no RoleArn)"
    );
    let pattern = p
        .get("EventPattern")
        .ok_or_else(|| format!("{id} has no EventPattern"))?;
    ensure!(
        pattern.get("source") == Some(&json!(["aws.s3"])),
        "{id} must match source [\"aws.s3\"], matches {:?}",
        pattern.get("source")
    );
    let detail_types: Vec<String> = pattern
        .get("detail-type")
        .map(one_or_many)
        .unwrap_or_default()
        .into_iter()
        .filter_map(scalar)
        .collect();
    let want: BTreeSet<&str> = ["Object Created", "Object Deleted"].into();
    ensure!(
        detail_types.len() == want.len()
            && detail_types
                .iter()
                .map(String::as_str)
                .collect::<BTreeSet<_>>()
                == want,
        "{id} detail-type must be exactly {want:?}, is {detail_types:?}"
    );
    ensure!(
        pattern.pointer("/detail/bucket/name") == Some(&json!([{"Ref": "SourceBucket"}])),
        "{id} must match detail.bucket.name [!Ref SourceBucket], matches {:?}",
        pattern.pointer("/detail/bucket/name")
    );
    // Keys under SourcePrefix only, and every key without one.
    for (prefix, want) in [("", None), ("data/", Some(json!([{"prefix": "data/"}])))] {
        let evaluated = t.eval(pattern, &params(&[("SourcePrefix", prefix)]));
        let key = evaluated.pointer("/detail/object/key");
        ensure!(
            key == want.as_ref(),
            "with SourcePrefix {prefix:?}, {id} must match detail.object.key {want:?}, matches {key:?}"
        );
        let fields: Vec<&String> = evaluated
            .get("detail")
            .and_then(Value::as_object)
            .map(|d| d.keys().collect())
            .unwrap_or_default();
        ensure!(
            fields.iter().all(|f| *f == "bucket" || *f == "object"),
            "{id} must filter detail on bucket and object only, filters {fields:?}"
        );
    }
    Ok(())
}

/// The `Condition` entry for `key` (IAM keys ignore case) under one of
/// `operators`; `IfExists` and negated operators do not count, since they
/// let a request without the key through.
fn condition_value<'a>(statement: &'a Value, operators: &[&str], key: &str) -> Option<&'a Value> {
    statement
        .get("Condition")?
        .as_object()?
        .iter()
        .filter(|(operator, _)| operators.contains(&operator.as_str()))
        .find_map(|(_, entries)| {
            entries
                .as_object()?
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
}

/// The event queue's policy: S3 and EventBridge may send to it, each only
/// for its one resource (aws:SourceArn the source bucket, or the rule), S3
/// also only from the bucket's owner (aws:SourceAccount, the
/// SourceAccountId parameter or this account); no other principal, and no
/// queue policy anywhere allows `*`.
pub fn check_event_queue_policy(t: &Template) -> Check {
    for statement in t
        .statements()
        .iter()
        .filter(|s| s.allows() && t.resource_type(&s.owner) == Some("AWS::SQS::QueuePolicy"))
    {
        let principal = statement.body.get("Principal").unwrap_or(&Value::Null);
        let everyone = principal == "*"
            || principal
                .as_object()
                .is_some_and(|p| p.values().flat_map(one_or_many).any(|v| v == "*"));
        ensure!(
            !everyone && statement.body.get("NotPrincipal").is_none(),
            "{}: a queue policy allows every principal: {}",
            statement.owner,
            statement.body
        );
    }
    let (queue_id, _) = t.event_queue()?;
    let (rule_id, _) = object_events_rule(t)?;
    let policies = policies_of(t, queue_id);
    ensure!(
        policies.len() == 1,
        "{queue_id} must have one AWS::SQS::QueuePolicy, has {}",
        policies.len()
    );
    let (policy_id, _) = policies[0];
    let mut services = BTreeSet::new();
    for statement in t.statements_of(policy_id) {
        ensure!(
            statement.allows(),
            "{policy_id}: unexpected statement {}",
            statement.body
        );
        let principal = statement.body.get("Principal").unwrap_or(&Value::Null);
        let service = principal
            .as_object()
            .filter(|p| p.len() == 1)
            .and_then(|p| p.get("Service"))
            .and_then(Value::as_str)
            .and_then(|s| [S3_SERVICE, EVENTS_SERVICE].into_iter().find(|known| *known == s))
            .ok_or_else(|| {
                format!("{policy_id}: principal {principal} must be one service, {S3_SERVICE} or {EVENTS_SERVICE}")
            })?;
        ensure!(
            statement.actions() == ["sqs:SendMessage"]
                && statement.resources() == [format!("${{{queue_id}.Arn}}")],
            "{policy_id}: {service} may only sqs:SendMessage to {queue_id}, statement {}",
            statement.body
        );
        let source_arn =
            condition_value(&statement.body, &["ArnEquals", "ArnLike"], "aws:SourceArn")
                .ok_or_else(|| {
                    format!("{policy_id}: {service} without an ArnEquals aws:SourceArn condition (confused deputy)")
                })?;
        let source_account =
            condition_value(&statement.body, &["StringEquals"], "aws:SourceAccount");
        match service {
            S3_SERVICE => {
                ensure!(
                    render(source_arn) == ["arn:${AWS::Partition}:s3:::${SourceBucket}"],
                    "{policy_id}: S3 may only send for the source bucket, aws:SourceArn is {source_arn}"
                );
                // A bucket ARN has no account in it: anyone could own a
                // bucket of that name after this one is deleted.
                let account = source_account.ok_or_else(|| {
                    format!("{policy_id}: S3 without a StringEquals aws:SourceAccount condition")
                })?;
                let own = t.eval(account, &Params::new());
                let other = t.eval(account, &params(&[("SourceAccountId", "111122223333")]));
                ensure!(
                    own == json!({"Ref": "AWS::AccountId"}) && other == json!("111122223333"),
                    "{policy_id}: aws:SourceAccount must be SourceAccountId, or this account when it is empty; is {account}"
                );
            }
            _ => {
                ensure!(
                    get_att(source_arn) == Some((rule_id, "Arn")),
                    "{policy_id}: EventBridge may only send for {rule_id}, aws:SourceArn is {source_arn}"
                );
                ensure!(
                    source_account == Some(&json!({"Ref": "AWS::AccountId"})),
                    "{policy_id}: EventBridge's aws:SourceAccount must be this account, is {source_account:?}"
                );
            }
        }
        services.insert(service);
    }
    ensure!(
        services == BTreeSet::from([S3_SERVICE, EVENTS_SERVICE]),
        "{policy_id} must let both S3 (native notifications) and EventBridge send, lets {services:?}"
    );
    ensure!(
        t.parameter("SourceAccountId")
            .and_then(|p| p.get("AllowedPattern"))
            .and_then(Value::as_str)
            == Some("^([0-9]{12})?$")
            && t.default_of("SourceAccountId").as_deref() == Some(""),
        "SourceAccountId must default to empty and be constrained to ^([0-9]{{12}})?$"
    );
    Ok(())
}
