//! The range queue (`src/serverless/ranges.rs`): listers take range tasks
//! off it through their event source, ListerStreams an invocation, at
//! most ListingConcurrency invocations at once; a task that fails on every receive ends in
//! an alarmed dead-letter queue; a crashed lister's task comes back soon
//! after the lister's time limit, not six times it.

use serde_json::{Value, json};

use crate::Check;
use crate::eval::Params;
use crate::model::Template;
use crate::mutations::{assert_caught, broken, remove, set};
use crate::queues::{check_dead_letter_alarm_of, check_event_source};
use crate::values::ref_name;

const LISTER: &str = "s3-fanout-lister";

pub fn check_range_queue(t: &Template) -> Check {
    let (queue_id, queue) = t.consumed_queue(LISTER)?;
    ensure!(
        queue_id == "RangeQueue",
        "the lister consumes {queue_id}; the planner, lister and reporter are told RangeQueue"
    );
    check_event_source(t, LISTER)?;
    let event = t.sqs_event(LISTER)?;
    // A stream per task delivered: the batch is ListerStreams, and the
    // function is told the same number, or it would list fewer at once
    // than it was given (and hold the rest until its deadline) or pull
    // past the batch. Standard queues take 1-10 without a batching window.
    ensure!(
        event.get("BatchSize").and_then(ref_name) == Some("ListerStreams"),
        "the lister's SQS event must take ListerStreams range tasks an invocation, BatchSize is {:?}",
        event.get("BatchSize")
    );
    let (_, function) = t.function(LISTER)?;
    let told = t
        .environment(function)
        .get("S3_FANOUT_LISTER_STREAMS")
        .cloned();
    ensure!(
        told.as_ref().and_then(ref_name) == Some("ListerStreams"),
        "the lister must be told S3_FANOUT_LISTER_STREAMS: !Ref ListerStreams, is {told:?}"
    );
    let spec = t
        .parameter("ListerStreams")
        .ok_or("no ListerStreams parameter")?;
    let bound = |name: &str| spec.get(name).and_then(Value::as_f64);
    ensure!(
        bound("MinValue") == Some(1.0) && bound("MaxValue") == Some(10.0),
        "ListerStreams must be within 1-10 (a batch without a batching window), is {spec}"
    );
    let cap = event.pointer("/ScalingConfig/MaximumConcurrency");
    ensure!(
        cap.and_then(ref_name) == Some("ListingConcurrency"),
        "the lister's concurrency must be the documented ListingConcurrency parameter, is {cap:?}"
    );
    // Longer than the lister may run (its lease on the task lasts that
    // long), and not the 6x of the work queue: a crashed lister's range
    // must come back within minutes of its time limit.
    let (_, function) = t.function(LISTER)?;
    let timeout = t
        .function_prop(function, "Timeout")
        .and_then(|v| t.eval_number(&v, &Params::new()))
        .ok_or("the lister has no Timeout")?;
    let visibility = t
        .eval_number(
            t.props(queue)
                .get("VisibilityTimeout")
                .unwrap_or(&Value::Null),
            &Params::new(),
        )
        .ok_or("RangeQueue has no VisibilityTimeout")?;
    ensure!(
        visibility > timeout && visibility <= timeout + 300.0,
        "RangeQueue VisibilityTimeout {visibility} s must exceed the lister's {timeout} s, by at most 5 minutes"
    );
    ensure!(
        t.props(queue).get("SqsManagedSseEnabled") == Some(&json!(true)),
        "RangeQueue must be encrypted"
    );
    check_dead_letter_alarm_of(t, queue_id)?;
    // The same receives as the work queue; the lister reads no count of
    // its own, so only the parameter is compared.
    let redrive = t
        .props(queue)
        .pointer("/RedrivePolicy/maxReceiveCount")
        .and_then(ref_name);
    ensure!(
        redrive == Some("MaxReceiveCount"),
        "RangeQueue maxReceiveCount must !Ref MaxReceiveCount, is {redrive:?}"
    );
    Ok(())
}

#[test]
fn range_queue_feeds_listers_a_task_a_stream_and_redrives_to_an_alarmed_dead_letter_queue() {
    crate::assert_ok(check_range_queue(&crate::model::load()));
}

#[test]
fn range_queue_mistakes_are_caught() {
    let event = "/Resources/ListerFunction/Properties/Events/RangeQueue/Properties";
    let t = broken(|d| set(d, &format!("{event}/BatchSize"), json!(10)));
    assert_caught(
        check_range_queue(&t),
        "ten ranges to a lister told 8 streams",
    );
    let t = broken(|d| {
        remove(
            d,
            "/Resources/ListerFunction/Properties/Environment/Variables/S3_FANOUT_LISTER_STREAMS",
        )
    });
    assert_caught(check_range_queue(&t), "a lister not told its streams");
    let t = broken(|d| set(d, "/Parameters/ListerStreams/MaxValue", json!(100)));
    assert_caught(
        check_range_queue(&t),
        "a batch SQS refuses without a window",
    );
    let t = broken(|d| remove(d, &format!("{event}/ScalingConfig")));
    assert_caught(check_range_queue(&t), "listers without a cap");
    let t = broken(|d| remove(d, &format!("{event}/FunctionResponseTypes")));
    assert_caught(check_range_queue(&t), "no partial batch responses");
    let t = broken(|d| {
        set(
            d,
            "/Resources/RangeQueue/Properties/VisibilityTimeout",
            json!(300),
        )
    });
    assert_caught(
        check_range_queue(&t),
        "a task visible again while its lister runs",
    );
    let t = broken(|d| {
        set(
            d,
            "/Resources/RangeQueue/Properties/VisibilityTimeout",
            json!(5400),
        )
    });
    assert_caught(
        check_range_queue(&t),
        "a crashed lister's range back after 90 minutes",
    );
    let t = broken(|d| remove(d, "/Resources/RangeDeadLetterQueueAlarm"));
    assert_caught(check_range_queue(&t), "no alarm on unlisted ranges");
    let t = broken(|d| {
        set(
            d,
            "/Resources/RangeQueue/Properties/RedrivePolicy/maxReceiveCount",
            json!(100),
        )
    });
    assert_caught(
        check_range_queue(&t),
        "a redrive count apart from MaxReceiveCount",
    );
    let t = broken(|d| {
        set(
            d,
            &format!("{event}/Queue"),
            json!({"Fn::GetAtt": ["WorkQueue", "Arn"]}),
        )
    });
    assert_caught(check_range_queue(&t), "listers on the work queue");
}
