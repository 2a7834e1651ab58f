//! Checks on the queues and the SQS event sources of the copier (the work
//! queue) and the replicator (the event queue): visibility timeout against
//! the consumer's timeout, encryption, partial batch responses and the
//! concurrency cap, each dead-letter queue's alarm, and one maxReceiveCount
//! for SQS and the code.

use serde_json::{Value, json};

use crate::Check;
use crate::eval::{Params, params};
use crate::model::{COPIER, Template};
use crate::values::{get_att, number, one_or_many, ref_name, scalar};

/// AWS guidance for Lambda SQS event sources: the queue's visibility timeout
/// is at least six times the function's timeout.
pub const VISIBILITY_FACTOR: f64 = 6.0;

/// (a) The work queue's visibility timeout is at least 6x the copier's
/// timeout, for the default and for every value CopierTimeout allows.
pub fn check_visibility_timeout(t: &Template) -> Check {
    check_visibility_covers(t, COPIER)
}

/// The visibility timeout of the queue `binary` consumes is at least 6x the
/// function's timeout, for every value the timeout can take.
pub fn check_visibility_covers(t: &Template, binary: &str) -> Check {
    let (_, function) = t.function(binary)?;
    let (queue_id, queue) = t.consumed_queue(binary)?;
    let timeout = t.function_prop(function, "Timeout").ok_or_else(|| {
        format!("{binary} has no Timeout (Lambda's default of 3 s is never right)")
    })?;
    let visibility = t
        .props(queue)
        .get("VisibilityTimeout")
        .ok_or_else(|| format!("{queue_id} has no VisibilityTimeout (the 30 s default)"))?;

    // Every value the copier's timeout can take at deploy time.
    let mut cases = vec![Params::new()];
    if let Some(parameter) = ref_name(&timeout).filter(|p| t.is_parameter(p)) {
        let allowed = t.allowed_values(parameter);
        let spec = t.parameter(parameter).expect("declared");
        ensure!(
            !allowed.is_empty() || spec.get("MaxValue").is_some(),
            "{parameter} must be bounded (AllowedValues or MaxValue) for the visibility timeout to keep up"
        );
        if allowed.is_empty() {
            let max = spec.get("MaxValue").and_then(scalar).expect("MaxValue");
            cases.push(params(&[(parameter, &max)]));
        }
        for value in allowed {
            cases.push(params(&[(parameter, &value)]));
        }
    }
    for case in cases {
        let timeout_s = t.eval_number(&timeout, &case).ok_or_else(|| {
            format!("cannot evaluate the {binary} Timeout {timeout} with {case:?}")
        })?;
        let visibility_s = t.eval_number(visibility, &case).ok_or_else(|| {
            format!("cannot evaluate {queue_id}'s VisibilityTimeout with {case:?}")
        })?;
        ensure!(
            visibility_s >= VISIBILITY_FACTOR * timeout_s,
            "{queue_id} VisibilityTimeout {visibility_s} s < 6 x {binary} Timeout {timeout_s} s (parameters {case:?})"
        );
        ensure!(
            visibility_s <= 43_200.0,
            "{queue_id} VisibilityTimeout {visibility_s} s is above SQS's 12-hour maximum"
        );
        ensure!(
            timeout_s <= 900.0,
            "{binary} Timeout {timeout_s} s is above Lambda's 900 s maximum"
        );
    }
    Ok(())
}

/// (b) Every queue states `SqsManagedSseEnabled: true`.
pub fn check_queues_encrypted(t: &Template) -> Check {
    let queues = t.of_type("AWS::SQS::Queue");
    ensure!(!queues.is_empty(), "no AWS::SQS::Queue in the template");
    for (id, queue) in queues {
        ensure!(
            t.props(queue).get("SqsManagedSseEnabled") == Some(&Value::Bool(true)),
            "{id} must set SqsManagedSseEnabled: true"
        );
    }
    Ok(())
}

/// (c) The copier reports partial batch failures and its concurrency is
/// capped from a parameter.
pub fn check_copier_event_source(t: &Template) -> Check {
    check_event_source(t, COPIER)
}

/// The SQS event source of `binary` reports partial batch failures, caps its
/// concurrency from a bounded parameter, and has no batch a batching window
/// would have to gather.
pub fn check_event_source(t: &Template, binary: &str) -> Check {
    let event = t.sqs_event(binary)?;
    ensure!(
        event.get("FunctionResponseTypes") == Some(&json!(["ReportBatchItemFailures"])),
        "the {binary} SQS event must have FunctionResponseTypes [ReportBatchItemFailures], has {:?}",
        event.get("FunctionResponseTypes")
    );
    let max = event
        .pointer("/ScalingConfig/MaximumConcurrency")
        .ok_or_else(|| format!("the {binary} SQS event has no ScalingConfig.MaximumConcurrency"))?;
    let parameter = ref_name(max).filter(|p| t.is_parameter(p)).ok_or_else(|| {
        format!("the {binary} ScalingConfig.MaximumConcurrency must !Ref a parameter, is {max}")
    })?;
    let spec = t.parameter(parameter).expect("declared");
    let min_value = spec.get("MinValue").and_then(number);
    let max_value = spec.get("MaxValue").and_then(number);
    ensure!(
        min_value.is_some_and(|v| v >= 2.0) && max_value.is_some_and(|v| v <= 1000.0),
        "{parameter} must be bounded to SQS's 2-1000 range, is {min_value:?}-{max_value:?}"
    );
    let batch = event
        .get("BatchSize")
        .ok_or_else(|| format!("the {binary} SQS event has no BatchSize"))?;
    let batch_max = match ref_name(batch).filter(|p| t.is_parameter(p)) {
        Some(p) => t
            .parameter(p)
            .and_then(|s| s.get("MaxValue"))
            .and_then(number),
        None => number(batch),
    };
    ensure!(
        batch_max.is_some_and(|b| b <= 10.0)
            || event.get("MaximumBatchingWindowInSeconds").is_some(),
        "a BatchSize above 10 needs a batching window, which the visibility timeout must then cover"
    );
    Ok(())
}

/// (f) An alarm fires on any visible message in the dead-letter queue.
pub fn check_dead_letter_alarm(t: &Template) -> Check {
    let (work_id, _) = t.work_queue()?;
    check_dead_letter_alarm_of(t, work_id)
}

/// The dead-letter queue of `queue_id` keeps messages 14 days, and an alarm
/// fires on one visible message in it.
pub fn check_dead_letter_alarm_of(t: &Template, queue_id: &str) -> Check {
    let (dlq_id, dlq) = t.dead_letter_queue_of(queue_id)?;
    ensure!(
        t.eval_number(
            t.props(dlq)
                .get("MessageRetentionPeriod")
                .unwrap_or(&Value::Null),
            &Params::new()
        ) == Some(1_209_600.0),
        "{dlq_id} must keep messages 14 days (MessageRetentionPeriod 1209600)"
    );
    let alarms = dead_letter_alarms(t, dlq_id);
    ensure!(
        !alarms.is_empty(),
        "no AWS/SQS ApproximateNumberOfMessagesVisible alarm on {dlq_id}"
    );
    for (id, alarm) in alarms {
        let p = t.props(alarm);
        let threshold = p.get("Threshold").and_then(number);
        let operator = p.get("ComparisonOperator").and_then(Value::as_str);
        let fires_on_one = match (operator, threshold) {
            (Some("GreaterThanThreshold"), Some(x)) => x < 1.0,
            (Some("GreaterThanOrEqualToThreshold"), Some(x)) => x <= 1.0,
            _ => false,
        };
        ensure!(
            fires_on_one,
            "{id} must fire on one message ({operator:?} {threshold:?})"
        );
    }
    Ok(())
}

/// The alarms on the visible messages of the queue `dlq_id`.
pub fn dead_letter_alarms<'a>(t: &'a Template, dlq_id: &str) -> Vec<(&'a str, &'a Value)> {
    t.of_type("AWS::CloudWatch::Alarm")
        .into_iter()
        .filter(|(_, alarm)| {
            let p = t.props(alarm);
            let on_dlq = p
                .get("Dimensions")
                .map(one_or_many)
                .unwrap_or_default()
                .iter()
                .any(|d| {
                    d.get("Name").and_then(Value::as_str) == Some("QueueName")
                        && d.get("Value").and_then(get_att) == Some((dlq_id, "QueueName"))
                });
            p.get("Namespace").and_then(Value::as_str) == Some("AWS/SQS")
                && p.get("MetricName").and_then(Value::as_str)
                    == Some("ApproximateNumberOfMessagesVisible")
                && on_dlq
        })
        .collect()
}

/// (g) maxReceiveCount and the copier's S3_FANOUT_MAX_RECEIVE_COUNT are the
/// same parameter.
pub fn check_max_receive_count(t: &Template) -> Check {
    check_max_receive_count_of(t, COPIER)
}

/// The redrive maxReceiveCount of the queue `binary` consumes and the
/// function's S3_FANOUT_MAX_RECEIVE_COUNT are the same parameter.
pub fn check_max_receive_count_of(t: &Template, binary: &str) -> Check {
    let (queue_id, queue) = t.consumed_queue(binary)?;
    let redrive = t
        .props(queue)
        .pointer("/RedrivePolicy/maxReceiveCount")
        .ok_or_else(|| format!("{queue_id} has no RedrivePolicy.maxReceiveCount"))?;
    let parameter = ref_name(redrive)
        .filter(|p| t.is_parameter(p))
        .ok_or_else(|| format!("{queue_id} maxReceiveCount must !Ref a parameter, is {redrive}"))?;
    let (_, function) = t.function(binary)?;
    let env = t.environment(function);
    ensure!(
        env.get("S3_FANOUT_MAX_RECEIVE_COUNT") == Some(&json!({ "Ref": parameter })),
        "the {binary} S3_FANOUT_MAX_RECEIVE_COUNT must !Ref {parameter}, is {:?}",
        env.get("S3_FANOUT_MAX_RECEIVE_COUNT")
    );
    ensure!(
        t.default_of(parameter).as_deref() == Some("5"),
        "{parameter} should default to 5"
    );
    Ok(())
}
