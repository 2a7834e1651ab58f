//! Run notifications end to end: moto's Step Functions interpreter runs the
//! real `statemachine/sync.asl.json` with `${RunTopicArn}` set (the
//! template's RunNotifications=true), its `sns:publish` tasks publish to a
//! topic in moto, and an SQS queue subscribed to that topic receives what a
//! subscriber would.
//!
//! Every run of this binary publishes to the same topic, so each test
//! subscribes a queue of its own and reads only the notifications of its
//! own run id: exactly one per run, whatever the ending. The other test
//! binaries run the stack without a topic, which is the other branch of
//! every `ShouldNotify*` choice.
//!
//! One difference from AWS shapes the definition: moto's context object
//! holds `$$.Execution.StartTime` as a datetime, which no JSON encoder
//! takes, so the messages carry no start time (SNS's own Timestamp says
//! when the run ended).

mod support;

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;
use support::fault_proxy::{INTERNAL_ERROR_XML, Op, Rule};
use support::local_stack::{TestStack, stack_with, status_json};
use support::*;

/// The run topic's name in this binary's moto.
const TOPIC: &str = "s3-fanout-runs";

/// The stack of this binary: the test stack, with run notifications on.
fn stack() -> &'static TestStack {
    stack_with(|options| options.run_topic = Some(TOPIC.into()))
}

/// Runs take turns, as in the other stack binaries (`one_run_at_a_time`),
/// and here a turn also covers subscribing before the run and reading the
/// queue after it: an async lock, since it is held across those awaits.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `s3-fanout run --stack-outputs <stack> --wait --json ARGS`, by a caller
/// that holds [`TURN`].
fn run_in_turn(args: &[&str]) -> (i32, Option<Value>, CliOutput) {
    let outputs = stack().outputs_file.display().to_string();
    let mut all = vec!["run", "--stack-outputs", &outputs, "--wait", "--json"];
    all.extend_from_slice(args);
    let out = run_cli(&all);
    let summary = serde_json::from_str(&out.stdout).ok();
    (out.status, summary, out)
}

fn moto_settings() -> s3_fanout::base::client::ClientSettings {
    s3_fanout::base::client::ClientSettings {
        endpoint_url: Some(moto().endpoint.clone()),
        region: Some(REGION.into()),
        ..Default::default()
    }
}

/// The run topic's ARN (CreateTopic of an existing name returns it).
async fn topic_arn() -> String {
    s3_fanout::local_stack::create_topic(&moto().endpoint, TOPIC)
        .await
        .expect("the run topic exists")
}

/// One SNS call on moto (the crate has no SNS client).
async fn sns(params: &[(&str, &str)]) -> String {
    s3_fanout::local_stack::sns_query(&moto().endpoint, params)
        .await
        .unwrap_or_else(|e| panic!("SNS {params:?}: {e}"))
}

/// A new queue subscribed to the run topic, as an operator's would be.
async fn subscribed_queue(tag: &str) -> (aws_sdk_sqs::Client, String) {
    let sqs = s3_fanout::base::client::build_sqs_client(&moto_settings()).await;
    let url = sqs
        .create_queue()
        .queue_name(unique_bucket(tag))
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("queue url");
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("queue ARN");
    sns(&[
        ("Action", "Subscribe"),
        ("TopicArn", &topic_arn().await),
        ("Protocol", "sqs"),
        ("Endpoint", &arn),
    ])
    .await;
    (sqs, url)
}

/// One notification as a subscriber sees it: SNS's envelope (Subject,
/// MessageAttributes) around the state machine's JSON message.
#[derive(Debug)]
struct Notification {
    subject: String,
    attributes: Value,
    message: Value,
}

/// Every notification in the queue about `run_id`. The state machine
/// publishes before it ends, and moto delivers to SQS within the publish,
/// so once `run --wait` returns they are all there.
async fn notifications(sqs: &aws_sdk_sqs::Client, queue: &str, run_id: &str) -> Vec<Notification> {
    let mut found = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return found;
        }
        for m in messages {
            let envelope: Value =
                serde_json::from_str(m.body().unwrap_or_default()).expect("an SNS envelope");
            let message: Value =
                serde_json::from_str(envelope["Message"].as_str().expect("a Message"))
                    .expect("the message is JSON");
            if message["run_id"] == run_id {
                found.push(Notification {
                    subject: envelope["Subject"].as_str().unwrap_or_default().to_owned(),
                    attributes: envelope["MessageAttributes"].clone(),
                    message,
                });
            }
            sqs.delete_message()
                .queue_url(queue)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }
}

/// The one notification of a run.
fn only(mut found: Vec<Notification>, run_id: &str) -> Notification {
    assert_eq!(found.len(), 1, "one notification for {run_id}: {found:#?}");
    found.remove(0)
}

/// A notification attribute's value (the envelope's `{"Type", "Value"}`).
fn attribute<'a>(n: &'a Notification, name: &str) -> &'a str {
    n.attributes[name]["Value"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_succeeds_publishes_one_succeeded_notification_with_its_report() {
    stack();
    let _turn = TURN.lock().await;
    let (sqs, queue) = subscribed_queue("n-ok").await;
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "n-ok").await;
    for i in 0..5 {
        put(&s3, &src, &format!("k/{i}"), body(i, 40)).await;
    }

    // GIVEN a stack with a run topic WHEN a run succeeds
    let run_id = unique_bucket("notify-ok");
    let (code, summary, out) = run_in_turn(&[
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        "--run-id",
        &run_id,
    ]);
    assert_eq!(code, 0, "{}", out.stderr);
    assert_eq!(summary.expect("a report")["status"], "ok");

    // THEN one notification says so, with the run's report
    let n = only(notifications(&sqs, &queue, &run_id).await, &run_id);
    assert_eq!(n.subject, "s3-fanout: run succeeded");
    assert_eq!(n.message["status"], "SUCCEEDED");
    assert_eq!(n.message["outcome"], "Synced");
    assert_eq!(attribute(&n, "status"), "SUCCEEDED");
    assert_eq!(attribute(&n, "outcome"), "Synced");
    let report = &n.message["report"];
    assert_eq!(report["status"], "ok", "{report}");
    assert_eq!(report["counts"]["copied"], 5, "{report}");
    assert_eq!(report["failed"], 0);
    assert!(
        report["summary_json"]
            .as_str()
            .unwrap_or_default()
            .ends_with(&format!("runs/{run_id}/summary.json")),
        "{report}"
    );
    assert!(
        n.message["execution_arn"]
            .as_str()
            .unwrap_or_default()
            .ends_with(&format!(":{run_id}")),
        "{}",
        n.message
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_over_its_failure_threshold_publishes_one_sync_failed_notification() {
    stack();
    let _turn = TURN.lock().await;
    let (sqs, queue) = subscribed_queue("n-fail").await;
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "n-fail").await;
    for i in 0..3 {
        put(&s3, &src, &format!("ok/{i}"), body(i, 30)).await;
    }
    put(&s3, &src, "poison/key", body(9, 30)).await;
    // GIVEN a key whose copy fails every time
    stack().proxy.add_rule(
        Rule::on(Op::CopyObject)
            .bucket(&dst)
            .key("poison/key")
            .respond(500, INTERNAL_ERROR_XML),
    );

    // WHEN the run allows no failure
    let run_id = unique_bucket("notify-fail");
    let (code, _, out) = run_in_turn(&[
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        "--run-id",
        &run_id,
    ]);
    assert_eq!(code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("SyncFailed"), "{}", out.stderr);

    // THEN one notification says it failed, why, and where the report is
    let n = only(notifications(&sqs, &queue, &run_id).await, &run_id);
    assert_eq!(
        n.subject,
        "s3-fanout: run failed (more failures than its threshold)"
    );
    assert_eq!(n.message["status"], "FAILED");
    assert_eq!(n.message["outcome"], "SyncFailed");
    assert_eq!(attribute(&n, "status"), "FAILED");
    assert_eq!(n.message["report"]["failed"], 1, "{}", n.message);
    assert_eq!(n.message["report"]["counts"]["copied"], 3, "{}", n.message);
    let cause = n.message["cause"].as_str().unwrap_or_default();
    assert!(
        cause.starts_with("1 objects failed (threshold 0); report: ")
            && cause.ends_with(&format!("runs/{run_id}/summary.json")),
        "the cause is the execution's: {cause}"
    );
    assert_eq!(status_json(&run_id)["status"], "FAILED");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_input_publishes_one_plan_failed_notification_with_the_planners_error() {
    stack();
    let _turn = TURN.lock().await;
    let (sqs, queue) = subscribed_queue("n-plan").await;
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "n-plan").await;
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), br#"{"delet": true}"#).unwrap();

    // GIVEN an execution input the planner refuses WHEN it is run
    let run_id = unique_bucket("notify-plan");
    let (code, _, out) = run_in_turn(&[
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        "--input",
        input.path().to_str().unwrap(),
        "--run-id",
        &run_id,
    ]);
    assert_eq!(code, 2, "{}", out.stderr);

    // THEN one notification says the plan failed, with the planner's error
    let n = only(notifications(&sqs, &queue, &run_id).await, &run_id);
    assert_eq!(
        n.subject,
        "s3-fanout: run refused before any write (PlanFailed)"
    );
    assert_eq!(n.message["status"], "FAILED");
    assert_eq!(n.message["outcome"], "PlanFailed");
    assert_eq!(attribute(&n, "outcome"), "PlanFailed");
    let cause = n.message["error"]["Cause"].as_str().unwrap_or_default();
    assert!(cause.contains("unknown field"), "{}", n.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notification_that_cannot_be_published_leaves_the_runs_outcome_alone() {
    stack();
    // Holds the turn throughout: no other test's run may meet the missing
    // topic, and they subscribe within their own turns, after it is back.
    let _turn = TURN.lock().await;
    let arn = topic_arn().await;
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "n-lost").await;
    put(&s3, &src, "k", body(1, 10)).await;

    // GIVEN the run topic is gone (deleted by hand, say)
    sns(&[("Action", "DeleteTopic"), ("TopicArn", &arn)]).await;
    // WHEN a run succeeds
    let run_id = unique_bucket("notify-lost");
    let (code, summary, out) = run_in_turn(&[
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        "--run-id",
        &run_id,
    ]);
    assert_eq!(topic_arn().await, arn, "the topic is back for the others");

    // THEN it still succeeds, with its report as its output
    assert_eq!(code, 0, "{}", out.stderr);
    assert_eq!(summary.expect("a report")["status"], "ok");
    assert_eq!(status_json(&run_id)["status"], "SUCCEEDED");
    // AND the publish was tried, failed, and was caught
    let sfn = s3_fanout::base::client::build_sfn_client(&moto_settings()).await;
    let execution = format!(
        "{}:{run_id}",
        stack()
            .outputs
            .state_machine_arn
            .replace(":stateMachine:", ":execution:")
    );
    let history = sfn
        .get_execution_history()
        .execution_arn(&execution)
        .max_results(1000)
        .send()
        .await
        .expect("history");
    let entered: Vec<&str> = history
        .events()
        .iter()
        .filter_map(|e| e.state_entered_event_details())
        .map(|d| d.name())
        .collect();
    assert!(entered.contains(&"NotifySynced"), "{entered:?}");
    assert_eq!(entered.last(), Some(&"Synced"), "{entered:?}");
    let failures: Vec<(&str, &str)> = history
        .events()
        .iter()
        .filter_map(|e| e.task_failed_event_details())
        .map(|d| (d.error().unwrap_or_default(), d.cause().unwrap_or_default()))
        .collect();
    assert!(
        failures.iter().any(|(error, _)| error.starts_with("SNS.")),
        "the publish failed: {failures:?}"
    );
}
