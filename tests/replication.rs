//! Incremental replication from S3 events.
//!
//! Handler tests feed the real replicator fixture events
//! (`tests/fixtures/events/`: S3's native notification, the EventBridge
//! event, a test event; `keys/` holds both shapes for awkward keys, encoded
//! as each shape encodes them) against moto, with a fault-injecting proxy where a
//! failure or a race has to be made to happen. End-to-end tests let moto's
//! S3 send its own notifications to an SQS queue, and the local event source
//! mapping deliver them to the replicator, as on AWS.

mod support;

use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_s3::Client;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use s3_fanout::base::client::{ClientSettings, build_sqs_client};
use s3_fanout::local_stack::replication::{self, ReplicationOptions};
use s3_fanout::report::emf;
use s3_fanout::serverless::FunctionEnv;
use s3_fanout::serverless::env::StackConfig;
use s3_fanout::serverless::replicator::{Invocation, Outcome, Replicator};
use support::fault_proxy::{FaultProxy, Op, Rule};
use support::*;
use tokio_util::sync::CancellationToken;

/// Keys that break naive decoding: a space (`+` in events), a plus (`%2B`),
/// a percent sign, non-ASCII, and S3's longest key (1,024 bytes).
fn awkward_keys() -> Vec<String> {
    let mut keys: Vec<String> = ["a b", "a+b", "%41", "ü/ñ"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    keys.push(format!("deep/{}", "k".repeat(1024 - 5)));
    keys
}

/// Form-encode a key as S3 does in native events: a space is `+`, anything
/// but letters, digits and `-_.~/` is `%XX`.
fn form_encode(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b' ' => "+".to_owned(),
            b if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// Encode a key as EventBridge is reported to: percent-encoding with `+`
/// left literal, so a space is `%20` (see `src/serverless/events.rs`).
fn eventbridge_encode(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b if b.is_ascii_alphanumeric() || b"-_.~/+".contains(&b) => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn now_iso() -> String {
    aws_smithy_types::DateTime::from(SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap()
}

/// A fixture event about `key` of `bucket`, as S3 would send it now: the
/// key encoded as the fixture's shape encodes it.
fn fixture(name: &str, bucket: &str, key: &str) -> String {
    let encoded = match name.starts_with("eventbridge") {
        true => eventbridge_encode(key),
        false => form_encode(key),
    };
    fixture_as_sent(name, bucket, &encoded)
}

/// A fixture event whose key field holds `sent`, whatever the shape's rule.
fn fixture_as_sent(name: &str, bucket: &str, sent: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/events/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .replace("__BUCKET__", bucket)
        .replace("__KEY__", sent)
        .replace("__TIME__", &now_iso())
}

fn message(id: &str, body: &str) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = Some(id.into());
    m.body = Some(body.into());
    m.attributes
        .insert("ApproximateReceiveCount".into(), "1".into());
    m
}

fn deadline() -> SystemTime {
    SystemTime::now() + Duration::from_secs(120)
}

fn moto_settings() -> ClientSettings {
    ClientSettings {
        endpoint_url: Some(moto().endpoint.clone()),
        force_path_style: true,
        region: Some(REGION.into()),
        ..Default::default()
    }
}

/// A replicator as the template configures one, reaching S3 at `endpoint`.
async fn replicator(
    endpoint: &str,
    source: &str,
    destination: &str,
    vars: &[(&str, &str)],
) -> Replicator {
    let mut all = vec![
        ("S3_FANOUT_ENDPOINT_URL", endpoint),
        ("S3_FANOUT_REPORT_BUCKET", "unused-by-the-replicator"),
        ("S3_FANOUT_SOURCE", source),
        ("S3_FANOUT_DESTINATION", destination),
    ];
    all.extend_from_slice(vars);
    let config = StackConfig::from_vars(|name| {
        all.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    })
    .expect("a valid configuration");
    let mut env = FunctionEnv::new(config).await;
    env.sqs = build_sqs_client(&moto_settings()).await;
    Replicator::new(&env).await.expect("a replicator")
}

fn outcome<'a>(invocation: &'a Invocation, key: &str) -> &'a Outcome {
    &invocation
        .keys
        .iter()
        .find(|k| k.key == key)
        .unwrap_or_else(|| panic!("no report for {key:?}: {:#?}", invocation.keys))
        .outcome
}

fn handed_back(invocation: &Invocation) -> Vec<&str> {
    invocation
        .response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect()
}

/// The `S3FanoutError` attribute of each message waiting in a dead-letter
/// queue; receiving hides them for the queue's visibility timeout.
async fn dead_letter_reasons(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<String> {
    sqs.receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default()
        .iter()
        .map(|m| {
            m.message_attributes()
                .and_then(|a| a.get("S3FanoutError"))
                .and_then(|v| v.string_value())
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// The invocation's EMF records, each checked as CloudWatch would, merged.
fn metric(invocation: &Invocation, name: &str) -> Vec<f64> {
    let mut values = Vec::new();
    for line in &invocation.metric_lines {
        let record = emf::validate_line(line).unwrap_or_else(|why| panic!("{why}: {line}"));
        match &record[name] {
            serde_json::Value::Number(n) => values.push(n.as_f64().unwrap()),
            serde_json::Value::Array(many) => {
                values.extend(many.iter().map(|v| v.as_f64().unwrap()))
            }
            _ => {}
        }
    }
    values
}

#[tokio::test(flavor = "multi_thread")]
async fn native_and_eventbridge_events_replicate_awkward_keys_and_test_events_are_ignored() {
    let s3 = s3().await;
    let (src, dst_native) = bucket_pair(&s3, "repl-shapes").await;
    let dst_bridge = unique_bucket("repl-shapes-eb");
    create_bucket(&s3, &dst_bridge).await;
    let keys = awkward_keys();
    assert_eq!(keys.last().unwrap().len(), 1024);
    for (i, key) in keys.iter().enumerate() {
        put(&s3, &src, key, body(i as u64, 100 + i)).await;
    }

    // The same keys through each shape, each into its own destination: a
    // key decoded wrongly would land under another name there.
    for (shape, dst) in [
        ("s3-put", &dst_native),
        ("eventbridge-object-created", &dst_bridge),
    ] {
        let replicator = replicator(
            &moto().endpoint,
            &format!("s3://{src}"),
            &format!("s3://{dst}"),
            &[],
        )
        .await;
        let mut records = vec![message("test", &fixture("s3-test-event", &src, ""))];
        for (i, key) in keys.iter().enumerate() {
            records.push(message(&format!("m{i}"), &fixture(shape, &src, key)));
        }
        let invocation = replicator.replicate(records, deadline()).await;
        assert!(
            handed_back(&invocation).is_empty(),
            "{:#?}",
            invocation.keys
        );
        assert_eq!(invocation.test_events, 1);
        for key in &keys {
            assert!(
                matches!(outcome(&invocation, key), Outcome::Replicated { .. }),
                "{shape} {key:?}: {:?}",
                outcome(&invocation, key)
            );
        }
        assert_eq!(
            contents(&s3, dst).await,
            contents(&s3, &src).await,
            "{shape}"
        );
        assert_eq!(metric(&invocation, "Replicated"), [5.0]);
        assert_eq!(metric(&invocation, "Failed"), [0.0]);
        let lags = metric(&invocation, "ReplicationLag");
        assert_eq!(lags.len(), 5, "one lag per replicated key");
        assert!(lags.iter().all(|l| (0.0..60_000.0).contains(l)), "{lags:?}");
    }
}

/// `tests/fixtures/events/keys/{shape}-{name}.json`: each shape's event for
/// an awkward key, encoded as that shape encodes it, and the key it names.
const KEY_FIXTURES: [(&str, &str); 5] = [
    ("space", "a b"),
    ("plus", "a+b"),
    ("percent-2b", "a%2Bb"),
    ("percent", "100%"),
    ("unicode", "ü/ñ.txt"),
];

/// The other readings of those fixtures' keys that are not themselves one
/// of the keys: a fixture read wrongly would reconcile one of these, or
/// another fixture's key, instead of its own.
const DECOYS: [&str; 4] = ["a%20b", "a%252Bb", "100%25", "%C3%BC/%C3%B1.txt"];

fn key_fixture(shape: &str, name: &str, bucket: &str) -> String {
    let body = fixture_as_sent(&format!("keys/{shape}-{name}"), bucket, "");
    assert!(!body.contains("__KEY__"), "keys/ fixtures hold their key");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn each_shape_s_fixture_for_each_awkward_key_replicates_exactly_that_key() {
    // GIVEN every fixture's key at the source, and beside them the other
    // readings of those keys
    let s3 = s3().await;
    let src = unique_bucket("repl-keys");
    create_bucket(&s3, &src).await;
    for (i, (_, key)) in KEY_FIXTURES.iter().enumerate() {
        put(&s3, &src, key, body(i as u64, 40 + i)).await;
    }
    for (i, decoy) in DECOYS.iter().enumerate() {
        put(&s3, &src, decoy, body(100 + i as u64, 80 + i)).await;
    }

    for shape in ["s3-put", "eventbridge-object-created"] {
        let dst = unique_bucket("repl-keys-dst");
        create_bucket(&s3, &dst).await;
        let replicator = replicator(
            &moto().endpoint,
            &format!("s3://{src}"),
            &format!("s3://{dst}"),
            &[("S3_FANOUT_REPLICATE_DELETES", "true")],
        )
        .await;
        for (name, key) in KEY_FIXTURES {
            // WHEN the shape's event for one key arrives alone
            let event = message(name, &key_fixture(shape, name, &src));
            let invocation = replicator.replicate(vec![event], deadline()).await;

            // THEN that key, read by the shape's own rule, is copied
            assert!(handed_back(&invocation).is_empty(), "{shape} {name}");
            let [report] = &invocation.keys[..] else {
                panic!("{shape} {name}: {:#?}", invocation.keys)
            };
            assert_eq!(report.key.as_bytes(), key.as_bytes(), "{shape} {name}");
            assert_eq!(report.read_as_other, None, "{shape} {name}");
            assert!(
                matches!(report.outcome, Outcome::Replicated { .. }),
                "{shape} {name}: {report:?}"
            );
            assert_eq!(
                get_bytes(&s3, &dst, key).await,
                get_bytes(&s3, &src, key).await,
                "{shape} {name}"
            );
        }
        // AND nothing else: no decoy, no key under another name
        let mut want: Vec<&str> = KEY_FIXTURES.iter().map(|(_, key)| *key).collect();
        want.sort();
        let got: Vec<String> = list_all(&s3, &dst, "")
            .await
            .into_iter()
            .map(|l| l.key)
            .collect();
        assert_eq!(got, want, "{shape}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plus_key_through_eventbridge_is_replicated_and_never_read_as_its_space_holding_twin() {
    // GIVEN `video+data.mp4` at the source, and at the destination a
    // `video data.mp4` that has no source, with deletes replicated
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "repl-twin").await;
    let plus = body(1, 64);
    put(&s3, &src, "video+data.mp4", plus.clone()).await;
    let twin = body(2, 48);
    put(&s3, &dst, "video data.mp4", twin.clone()).await;
    let twin_etag = head(&s3, &dst, "video data.mp4").await.e_tag;
    let proxy = FaultProxy::start(&moto().endpoint);
    let replicator = replicator(
        proxy.endpoint(),
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &[("S3_FANOUT_REPLICATE_DELETES", "true")],
    )
    .await;
    let untouched = |proxy: &FaultProxy| {
        for op in [Op::HeadObject, Op::CopyObject, Op::DeleteObject] {
            assert_eq!(proxy.count(op, "video data.mp4"), 0, "{op:?}");
        }
    };

    // WHEN EventBridge reports it created, `+` left literal in its key
    let created = fixture("eventbridge-object-created", &src, "video+data.mp4");
    assert!(created.contains(r#""key": "video+data.mp4""#), "{created}");
    let invocation = replicator
        .replicate(vec![message("created", &created)], deadline())
        .await;

    // THEN it is copied, and its twin is neither read, copied nor deleted
    assert!(
        handed_back(&invocation).is_empty(),
        "{:#?}",
        invocation.keys
    );
    assert!(
        matches!(
            outcome(&invocation, "video+data.mp4"),
            Outcome::Replicated { .. }
        ),
        "{:#?}",
        invocation.keys
    );
    assert_eq!(invocation.keys.len(), 1, "{:#?}", invocation.keys);
    assert_eq!(get_bytes(&s3, &dst, "video+data.mp4").await, plus);
    assert_eq!(get_bytes(&s3, &dst, "video data.mp4").await, twin);
    assert_eq!(head(&s3, &dst, "video data.mp4").await.e_tag, twin_etag);
    untouched(&proxy);

    // AND WHEN it is deleted at the source and EventBridge reports that,
    // every reading of the key is absent: only its own copy is deleted
    s3.delete_object()
        .bucket(&src)
        .key("video+data.mp4")
        .send()
        .await
        .unwrap();
    let deleted = fixture("eventbridge-object-deleted", &src, "video+data.mp4");
    let invocation = replicator
        .replicate(vec![message("deleted", &deleted)], deadline())
        .await;
    assert_eq!(*outcome(&invocation, "video+data.mp4"), Outcome::Deleted);
    let left: Vec<String> = list_all(&s3, &dst, "")
        .await
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(left, ["video data.mp4"]);
    assert_eq!(get_bytes(&s3, &dst, "video data.mp4").await, twin);
    assert_eq!(proxy.count(Op::DeleteObject, "video data.mp4"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_rule_s_reading_is_absent_the_reading_that_exists_is_replicated_and_the_other_copy_kept()
 {
    // GIVEN events whose key field is not encoded by their shape's rule, each
    // key at the source, and at the destination a copy with no source under
    // the name the rule reads, with deletes replicated
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "repl-readings").await;
    // (shape, key field as sent, the key at the source, the rule's reading)
    let cases = [
        // A sender that did not form-encode (some S3-compatible stores).
        ("s3-put", "a+b", "a+b", "a b"),
        // EventBridge sending the key unencoded, as media lake's code now
        // assumes it does.
        ("eventbridge-object-created", "x%2By", "x%2By", "x+y"),
        // EventBridge form-encoding after all.
        ("eventbridge-object-created", "p+q", "p q", "p+q"),
    ];
    for (i, (_, _, key, read)) in cases.iter().enumerate() {
        put(&s3, &src, key, body(i as u64, 30 + i)).await;
        put(&s3, &dst, read, body(50 + i as u64, 20 + i)).await;
    }
    let before = contents(&s3, &dst).await;
    let proxy = FaultProxy::start(&moto().endpoint);
    let replicator = replicator(
        proxy.endpoint(),
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &[("S3_FANOUT_REPLICATE_DELETES", "true")],
    )
    .await;

    // WHEN their events arrive
    let records = cases
        .iter()
        .enumerate()
        .map(|(i, (shape, sent, _, _))| {
            message(&format!("m{i}"), &fixture_as_sent(shape, &src, sent))
        })
        .collect();
    let invocation = replicator.replicate(records, deadline()).await;

    // THEN the key that exists is copied, reported with the rule's reading,
    // and the rule's reading's copy is left as it was
    assert!(
        handed_back(&invocation).is_empty(),
        "{:#?}",
        invocation.keys
    );
    for (_, sent, key, read) in cases {
        let report = invocation.keys.iter().find(|k| k.key == key);
        let report = report.unwrap_or_else(|| panic!("{sent}: {:#?}", invocation.keys));
        assert!(
            matches!(report.outcome, Outcome::Replicated { .. }),
            "{report:?}"
        );
        assert_eq!(report.read_as_other.as_deref(), Some(read), "{report:?}");
        assert_eq!(
            get_bytes(&s3, &dst, key).await,
            get_bytes(&s3, &src, key).await
        );
    }
    assert_eq!(proxy.count_op(Op::DeleteObject), 0);
    let after = contents(&s3, &dst).await;
    for copy in &before {
        assert!(after.contains(copy), "{copy:?} changed: {after:#?}");
    }
    assert_eq!(after.len(), before.len() + cases.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reading_whose_source_head_fails_is_not_taken_as_absent() {
    // GIVEN a native event whose key field holds `m+n` unencoded, nothing at
    // the source under either reading, `m n` at the destination, deletes
    // replicated, and the source HEAD of `m+n` throttled
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "repl-head-fails").await;
    put(&s3, &dst, "m n", body(1, 20)).await;
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.add_rule(Rule::on(Op::HeadObject).key("m+n").respond(
        503,
        "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
    ));
    let replicator = replicator(
        proxy.endpoint(),
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &[
            ("S3_FANOUT_REPLICATE_DELETES", "true"),
            ("S3_FANOUT_MAX_ATTEMPTS", "1"),
        ],
    )
    .await;

    // WHEN it arrives
    let event = message("m", &fixture_as_sent("s3-put", &src, "m+n"));
    let invocation = replicator.replicate(vec![event], deadline()).await;

    // THEN the key is not known absent: nothing is deleted, and the message
    // is handed back for another try
    assert_eq!(handed_back(&invocation), ["m"], "{:#?}", invocation.keys);
    assert!(
        matches!(
            outcome(&invocation, "m+n"),
            Outcome::Failed {
                retryable: true,
                ..
            }
        ),
        "{:#?}",
        invocation.keys
    );
    assert_eq!(proxy.count_op(Op::DeleteObject), 0);
    assert_eq!(get_bytes(&s3, &dst, "m n").await, body(1, 20));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_event_is_acknowledged_without_any_s3_request() {
    // GIVEN a replicator whose S3 traffic goes through a recording proxy
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "repl-test-event").await;
    let proxy = FaultProxy::start(&moto().endpoint);
    let replicator = replicator(
        proxy.endpoint(),
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &[],
    )
    .await;
    proxy.clear_log();

    // WHEN the s3:TestEvent S3 sends on configuring notifications arrives
    let test_event = message("t", &fixture("s3-test-event", &src, ""));
    let invocation = replicator.replicate(vec![test_event], deadline()).await;

    // THEN it is acknowledged, and nothing was asked of S3
    assert!(
        handed_back(&invocation).is_empty(),
        "{:#?}",
        invocation.keys
    );
    assert_eq!(invocation.test_events, 1);
    assert!(invocation.keys.is_empty(), "{:#?}", invocation.keys);
    assert_eq!(proxy.requests().len(), 0, "{:#?}", proxy.requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gone_source_key_is_deleted_at_the_destination_only_when_deletes_are_replicated() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "repl-deletes").await;
    put(&s3, &src, "kept at source", body(1, 10)).await;
    put(&s3, &dst, "kept at source", body(1, 10)).await;
    for key in ["gone one", "gone+two"] {
        put(&s3, &dst, key, body(2, 10)).await;
    }
    let events = |src: &str| {
        vec![
            message("d1", &fixture("s3-delete", src, "gone one")),
            message(
                "d2",
                &fixture("eventbridge-object-deleted", src, "gone+two"),
            ),
            // Late: the key was deleted and put again since.
            message("d3", &fixture("s3-delete", src, "kept at source")),
        ]
    };
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));

    let keeping = replicator(&moto().endpoint, &source, &destination, &[]).await;
    let invocation = keeping.replicate(events(&src), deadline()).await;
    assert_eq!(
        *outcome(&invocation, "gone one"),
        Outcome::DeleteNotPropagated
    );
    assert_eq!(
        *outcome(&invocation, "gone+two"),
        Outcome::DeleteNotPropagated
    );
    assert_eq!(list_all(&s3, &dst, "").await.len(), 3, "nothing deleted");

    let deleting = replicator(
        &moto().endpoint,
        &source,
        &destination,
        &[("S3_FANOUT_REPLICATE_DELETES", "true")],
    )
    .await;
    let invocation = deleting.replicate(events(&src), deadline()).await;
    assert!(handed_back(&invocation).is_empty());
    assert_eq!(*outcome(&invocation, "gone one"), Outcome::Deleted);
    assert_eq!(*outcome(&invocation, "gone+two"), Outcome::Deleted);
    assert_eq!(*outcome(&invocation, "kept at source"), Outcome::InSync);
    assert_eq!(contents(&s3, &dst).await, contents(&s3, &src).await);
    assert_eq!(metric(&invocation, "Deleted"), [2.0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_of_other_buckets_outside_the_prefix_or_excluded_are_ignored() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "repl-filter").await;
    for key in ["data/a.txt", "data/b.tmp", "other/c.txt"] {
        put(&s3, &src, key, body(3, 10)).await;
    }
    let replicator = replicator(
        &moto().endpoint,
        &format!("s3://{src}/data/"),
        &format!("s3://{dst}/backup/"),
        &[("S3_FANOUT_EXCLUDE", r#"["*.tmp"]"#)],
    )
    .await;
    let records = vec![
        message("1", &fixture("s3-put", &src, "data/a.txt")),
        message("2", &fixture("s3-put", &src, "data/b.tmp")),
        message(
            "3",
            &fixture("eventbridge-object-created", &src, "other/c.txt"),
        ),
        message(
            "4",
            &fixture("s3-put", "someone-elses-bucket", "data/z.txt"),
        ),
    ];
    let invocation = replicator.replicate(records, deadline()).await;
    assert!(handed_back(&invocation).is_empty());
    assert!(matches!(
        outcome(&invocation, "data/a.txt"),
        Outcome::Replicated { .. }
    ));
    let ignored: Vec<&str> = invocation
        .keys
        .iter()
        .filter(|k| matches!(k.outcome, Outcome::Ignored { .. }))
        .map(|k| k.bucket.as_str())
        .collect();
    assert_eq!(ignored.len(), 3, "{:#?}", invocation.keys);
    let dst_keys: Vec<String> = list_all(&s3, &dst, "")
        .await
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(dst_keys, ["backup/a.txt"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn retryable_failures_are_handed_back_and_the_rest_go_to_the_dead_letter_queue_with_a_reason()
{
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "repl-fail").await;
    for key in ["fine", "denied", "slow", "archived"] {
        put(&s3, &src, key, body(4, 10)).await;
    }
    let sqs = build_sqs_client(&moto_settings()).await;
    let dlq = sqs
        .create_queue()
        .queue_name(unique_bucket("repl-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.add_rule(Rule::on(Op::HeadObject).key("denied").respond(403, ""));
    proxy.add_rule(Rule::on(Op::CopyObject).key("slow").respond(
        503,
        "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
    ));
    proxy.add_rule(Rule::on(Op::CopyObject).key("archived").respond(
        403,
        "<Error><Code>InvalidObjectState</Code><Message>The operation is not valid for the object's storage class</Message></Error>",
    ));
    let replicator = replicator(
        proxy.endpoint(),
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &[
            ("S3_FANOUT_DEAD_LETTER_QUEUE_URL", &dlq),
            ("S3_FANOUT_MAX_ATTEMPTS", "1"),
            ("S3_FANOUT_MAX_RECEIVE_COUNT", "3"),
        ],
    )
    .await;
    let records = vec![
        message("m-fine", &fixture("s3-put", &src, "fine")),
        message("m-denied", &fixture("s3-put", &src, "denied")),
        message("m-slow", &fixture("s3-put", &src, "slow")),
        message("m-archived", &fixture("s3-put", &src, "archived")),
        message("m-junk", "{\"not\": \"an event\"}"),
    ];
    let invocation = replicator.replicate(records, deadline()).await;

    assert_eq!(
        handed_back(&invocation),
        ["m-slow"],
        "only a retry can help SlowDown"
    );
    assert!(matches!(
        outcome(&invocation, "fine"),
        Outcome::Replicated { .. }
    ));
    assert!(matches!(
        outcome(&invocation, "archived"),
        Outcome::Skipped { code, .. } if code == "SkippedArchived"
    ));
    assert!(matches!(
        outcome(&invocation, "denied"),
        Outcome::Failed {
            retryable: false,
            ..
        }
    ));
    assert_eq!(invocation.unreadable, 1);
    assert_eq!(invocation.dead_lettered, 2);
    assert_eq!(
        metric(&invocation, "Failed"),
        [3.0],
        "denied, slow and the unreadable message"
    );
    assert_eq!(metric(&invocation, "Skipped"), [1.0]);

    let mut reasons = dead_letter_reasons(&sqs, &dlq).await;
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].starts_with("AccessDenied: denied"),
        "{reasons:?}"
    );
    assert!(reasons[1].starts_with("UnreadableEvent"), "{reasons:?}");
    assert_eq!(contents(&s3, &dst).await.len(), 1, "only `fine` was copied");

    // On its last receive, the SlowDown event goes to the dead-letter queue
    // with its reason, instead of bare by SQS's redrive.
    let mut last = message("m-slow", &fixture("s3-put", &src, "slow"));
    last.attributes
        .insert("ApproximateReceiveCount".into(), "3".into());
    let invocation = replicator.replicate(vec![last], deadline()).await;
    assert!(handed_back(&invocation).is_empty());
    assert_eq!(invocation.dead_lettered, 1);
    let reasons = dead_letter_reasons(&sqs, &dlq).await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    let reason = &reasons[0];
    assert!(reason.starts_with("SlowDown: slow"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_that_lands_after_a_newer_copy_is_repaired_before_the_invocation_ends() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "repl-race").await;
    // The key was copied as v1, then deleted at the source: its delete event
    // is being handled while the key is put again (v2) and that event too.
    put(&s3, &dst, "k", body(1, 50)).await;
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.add_rule(
        Rule::on(Op::DeleteObject)
            .key("k")
            .times(1)
            .delay(Duration::from_millis(1500)),
    );
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));
    let vars = [("S3_FANOUT_REPLICATE_DELETES", "true")];
    let late = replicator(proxy.endpoint(), &source, &destination, &vars).await;
    let prompt = replicator(proxy.endpoint(), &source, &destination, &vars).await;

    let delete_event = message("delete", &fixture("s3-delete", &src, "k"));
    let deleting =
        tokio::spawn(async move { late.replicate(vec![delete_event], deadline()).await });
    assert!(proxy.wait_for(Op::DeleteObject, 1, Duration::from_secs(10)));
    let v2 = body(2, 60);
    put(&s3, &src, "k", v2.clone()).await;
    let put_event = message("put", &fixture("s3-put", &src, "k"));
    let copying = prompt.replicate(vec![put_event], deadline()).await;
    assert!(matches!(outcome(&copying, "k"), Outcome::Replicated { .. }));

    // The delayed delete now removes v2 at the destination; the invocation
    // that sent it sees the source is back and copies it again.
    let deleting = deleting.await.unwrap();
    let report = deleting.keys.iter().find(|k| k.key == "k").unwrap();
    assert!(
        matches!(report.outcome, Outcome::Replicated { .. }) && report.rounds == 2,
        "{report:?}"
    );
    assert_eq!(get_bytes(&s3, &dst, "k").await, v2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_copy_cannot_land_over_a_newer_one_and_events_out_of_order_converge() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "repl-stale").await;
    put(&s3, &src, "k", body(1, 50)).await;
    let proxy = FaultProxy::start(&moto().endpoint);
    // moto ignores x-amz-copy-source-if-match; S3 does not.
    proxy.enforce_copy_source_if_match();
    proxy.add_rule(
        Rule::on(Op::CopyObject)
            .key("k")
            .times(1)
            .delay(Duration::from_millis(1500)),
    );
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));
    let slow = replicator(proxy.endpoint(), &source, &destination, &[]).await;
    let fast = replicator(proxy.endpoint(), &source, &destination, &[]).await;

    let first = message("v1", &fixture("s3-put", &src, "k"));
    let stale = tokio::spawn(async move { slow.replicate(vec![first], deadline()).await });
    assert!(proxy.wait_for(Op::CopyObject, 1, Duration::from_secs(10)));
    let v2 = body(2, 70);
    put(&s3, &src, "k", v2.clone()).await;
    let second = message("v2", &fixture("s3-put", &src, "k"));
    fast.replicate(vec![second], deadline()).await;
    stale.await.unwrap();
    assert_eq!(get_bytes(&s3, &dst, "k").await, v2);

    // The first event delivered again, last: nothing changes, nothing is copied.
    let copies = proxy.count(Op::CopyObject, "k");
    let again = fast
        .replicate(
            vec![message("v1-again", &fixture("s3-put", &src, "k"))],
            deadline(),
        )
        .await;
    assert_eq!(*outcome(&again, "k"), Outcome::InSync);
    assert_eq!(proxy.count(Op::CopyObject, "k"), copies);
    assert_eq!(get_bytes(&s3, &dst, "k").await, v2);
    proxy.assert_no_errors();
}

// ------------------------------------------------------------ end to end

/// Poll until the destination lists exactly what the source does.
async fn converges(s3: &Client, src: &str, dst: &str, timeout: Duration) {
    let started = Instant::now();
    loop {
        let (want, got) = (contents(s3, src).await, contents(s3, dst).await);
        if want == got {
            return;
        }
        if started.elapsed() > timeout {
            panic!("no convergence in {timeout:?}:\nsource {want:#?}\ndestination {got:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Poll until no message is waiting or in flight.
async fn drained(sqs: &aws_sdk_sqs::Client, queue_url: &str, timeout: Duration) {
    let started = Instant::now();
    loop {
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        let count = |name| {
            attributes
                .get(&name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        if count(QueueAttributeName::ApproximateNumberOfMessages) == 0
            && count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible) == 0
        {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{queue_url} not drained in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn dead_letters(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<String> {
    sqs.receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.body.unwrap_or_default())
        .collect()
}

/// Replication between two fresh buckets, from moto's own notifications.
async fn replicating(
    tag: &str,
    tune: impl FnOnce(&mut ReplicationOptions),
) -> (
    Client,
    String,
    String,
    replication::Replication,
    CancellationToken,
) {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, tag).await;
    let mut options = ReplicationOptions::new(
        &moto().endpoint,
        &unique_bucket(tag),
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
    );
    options.replicate_deletes = true;
    tune(&mut options);
    let cancel = CancellationToken::new();
    let replication = replication::start(&options, cancel.clone())
        .await
        .expect("replication starts");
    (s3, src, dst, replication, cancel)
}

#[tokio::test(flavor = "multi_thread")]
async fn puts_overwrites_and_deletes_at_the_source_appear_at_the_destination() {
    let (s3, src, dst, replication, cancel) = replicating("repl-e2e", |_| {}).await;
    let mut keys = awkward_keys();
    keys.extend((0..20).map(|i| format!("logs/{i:02}.json")));
    for (i, key) in keys.iter().enumerate() {
        put(&s3, &src, key, body(i as u64, 200 + i)).await;
    }
    put_with(
        &s3,
        &src,
        "with/metadata",
        body(99, 300),
        PutExtras {
            content_type: Some("application/x-custom".into()),
            metadata: vec![("owner".into(), "platform".into())],
            tags: vec![("team".into(), "storage".into())],
            storage_class: Some("STANDARD_IA".into()),
            ..Default::default()
        },
    )
    .await;
    put_multipart(&s3, &src, "big/multipart", 6 * 1024 * 1024, 5 * 1024 * 1024).await;
    converges(&s3, &src, &dst, Duration::from_secs(60)).await;

    let copy = head(&s3, &dst, "with/metadata").await;
    assert_eq!(copy.content_type(), Some("application/x-custom"));
    assert_eq!(
        copy.metadata()
            .and_then(|m| m.get("owner"))
            .map(String::as_str),
        Some("platform")
    );
    assert_eq!(
        copy.storage_class().map(|c| c.as_str()),
        Some("STANDARD_IA")
    );
    assert_eq!(
        tags(&s3, &dst, "with/metadata").await,
        [("team".into(), "storage".into())]
    );

    // Overwrite some, delete others.
    for (i, key) in keys.iter().enumerate().step_by(2) {
        put(&s3, &src, key, body(1000 + i as u64, 50)).await;
    }
    for key in keys.iter().skip(1).step_by(4) {
        s3.delete_object()
            .bucket(&src)
            .key(key)
            .send()
            .await
            .unwrap();
    }
    converges(&s3, &src, &dst, Duration::from_secs(60)).await;
    for key in keys.iter().step_by(2) {
        assert_eq!(
            get_bytes(&s3, &dst, key).await,
            get_bytes(&s3, &src, key).await
        );
    }

    let sqs = build_sqs_client(&moto_settings()).await;
    drained(&sqs, &replication.event_queue_url, Duration::from_secs(30)).await;
    assert!(
        dead_letters(&sqs, &replication.dead_letter_queue_url)
            .await
            .is_empty()
    );
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_order_and_duplicated_deliveries_converge() {
    // Every batch delivered twice, and up to four invocations at once:
    // events of one key are handled by different invocations, in any order.
    let (s3, src, dst, replication, cancel) = replicating("repl-order", |o| {
        o.duplicate_deliveries = true;
        o.batch_size = 3;
        o.max_concurrency = 4;
    })
    .await;
    let keys: Vec<String> = (0..12).map(|i| format!("churn/{i:02}")).collect();
    // Bursts: put, overwrite, delete, put again, for every key at once.
    for round in 0..4u64 {
        let puts = keys.iter().enumerate().map(|(i, key)| {
            let (s3, src) = (s3.clone(), src.clone());
            async move {
                if round == 2 && i % 3 == 0 {
                    s3.delete_object()
                        .bucket(&src)
                        .key(key)
                        .send()
                        .await
                        .unwrap();
                } else {
                    put(&s3, &src, key, body(round * 100 + i as u64, 64 + i)).await;
                }
            }
        });
        futures::future::join_all(puts).await;
    }
    for key in keys.iter().step_by(5) {
        s3.delete_object()
            .bucket(&src)
            .key(key)
            .send()
            .await
            .unwrap();
    }
    converges(&s3, &src, &dst, Duration::from_secs(90)).await;

    // Events delivered late, after everything else: a delete for a key that
    // exists again and a put for one that is gone.
    let sqs = build_sqs_client(&moto_settings()).await;
    for (shape, key) in [
        ("s3-delete", &keys[1]),
        ("eventbridge-object-created", &keys[0]),
    ] {
        sqs.send_message()
            .queue_url(&replication.event_queue_url)
            .message_body(fixture(shape, &src, key))
            .send()
            .await
            .unwrap();
    }
    drained(&sqs, &replication.event_queue_url, Duration::from_secs(30)).await;
    assert_eq!(contents(&s3, &dst).await, contents(&s3, &src).await);
    for key in contents(&s3, &src).await.iter().map(|c| &c.0) {
        assert_eq!(
            get_bytes(&s3, &dst, key).await,
            get_bytes(&s3, &src, key).await
        );
    }
    assert!(
        dead_letters(&sqs, &replication.dead_letter_queue_url)
            .await
            .is_empty()
    );
    cancel.cancel();
}

/// A KMS destination, whose ETags are never its source's: a duplicate
/// event finds the pair equal by its stored checksums and copies nothing;
/// a same-size overwrite at the destination is found by them and repaired.
#[tokio::test(flavor = "multi_thread")]
async fn into_a_kms_destination_checksums_decide_what_etags_cannot() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "repl-kms").await;
    put(&s3, &src, "k", body(1, 300)).await;
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.s3_checksums();
    proxy.kms_etags(&dst);
    let replicator = replicator(
        proxy.endpoint(),
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &[],
    )
    .await;
    let event = || message("m", &fixture("s3-put", &src, "k"));

    let first = replicator.replicate(vec![event()], deadline()).await;
    assert!(
        matches!(outcome(&first, "k"), Outcome::Replicated { .. }),
        "{:#?}",
        first.keys
    );
    proxy.clear_log();
    let again = replicator.replicate(vec![event()], deadline()).await;
    assert!(
        matches!(outcome(&again, "k"), Outcome::InSync),
        "{:#?}",
        again.keys
    );
    assert_eq!(proxy.count_op(Op::CopyObject), 0);

    put(&s3, &dst, "k", body(2, 300)).await;
    let repaired = replicator.replicate(vec![event()], deadline()).await;
    assert!(
        matches!(outcome(&repaired, "k"), Outcome::Replicated { .. }),
        "{:#?}",
        repaired.keys
    );
    assert_eq!(get_bytes(&s3, &dst, "k").await, body(1, 300));
}

/// `fixture`, with the version id a versioned bucket's events carry
/// (`s3.object.versionId` natively, `detail.object.version-id` through
/// EventBridge: "Event message structure",
/// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html>,
/// and "EventBridge message structure",
/// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html>).
fn versioned_fixture(name: &str, bucket: &str, key: &str, version_id: &str) -> String {
    let mut event: serde_json::Value = serde_json::from_str(&fixture(name, bucket, key)).unwrap();
    if name.starts_with("eventbridge") {
        event["detail"]["object"]["version-id"] = version_id.into();
    } else {
        event["Records"][0]["s3"]["object"]["versionId"] = version_id.into();
        // A delete without a version id in a versioned bucket makes a
        // delete marker, and says so.
        if name == "s3-delete" {
            event["Records"][0]["eventName"] = "ObjectRemoved:DeleteMarkerCreated".into();
        }
    }
    event.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_of_a_versioned_source_reconcile_the_key_s_current_state_whatever_version_they_name()
{
    use support::versioned::{delete, versioned_bucket};
    let s3 = s3().await;
    // GIVEN a versioned source whose key was put twice, and events naming
    // each version, the older one arriving last
    let src = versioned_bucket(&s3, "repl-vers").await;
    let dst = unique_bucket("repl-vers-dst");
    create_bucket(&s3, &dst).await;
    put(&s3, &src, "k", body(1, 10)).await;
    put(&s3, &src, "k", body(2, 20)).await;
    let versions = s3.list_object_versions().bucket(&src).send().await.unwrap();
    let ids: Vec<String> = versions
        .versions()
        .iter()
        .map(|v| v.version_id().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2);
    let (newer, older) = (&ids[0], &ids[1]);
    let replicator = replicator(
        &moto().endpoint,
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &[("S3_FANOUT_REPLICATE_DELETES", "true")],
    )
    .await;

    // WHEN they are replicated
    let invocation = replicator
        .replicate(
            vec![
                message(
                    "v2",
                    &versioned_fixture("eventbridge-object-created", &src, "k", newer),
                ),
                message("v1", &versioned_fixture("s3-put", &src, "k", older)),
            ],
            deadline(),
        )
        .await;

    // THEN the destination holds the current version, not the one the
    // last event named
    assert!(
        handed_back(&invocation).is_empty(),
        "{:#?}",
        invocation.keys
    );
    assert_eq!(get_bytes(&s3, &dst, "k").await, body(2, 20));

    // WHEN the key is deleted (a delete marker) and that event arrives
    delete(&s3, &src, "k").await;
    let marker = s3
        .list_object_versions()
        .bucket(&src)
        .send()
        .await
        .unwrap()
        .delete_markers()[0]
        .version_id()
        .unwrap()
        .to_owned();
    let invocation = replicator
        .replicate(
            vec![message(
                "dm",
                &versioned_fixture("s3-delete", &src, "k", &marker),
            )],
            deadline(),
        )
        .await;

    // THEN the key is gone at the destination too
    assert_eq!(*outcome(&invocation, "k"), Outcome::Deleted);
    assert!(list_all(&s3, &dst, "").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_all_versions_replicator_appends_each_new_version_and_marker_once_whatever_the_order() {
    use support::versioned::{assert_same_histories, delete, histories, versioned_bucket};
    let s3 = s3().await;
    // GIVEN a versioned source whose key was put twice, a versioned
    // destination, and events naming each version, the older one last
    let src = versioned_bucket(&s3, "repl-allv").await;
    let dst = versioned_bucket(&s3, "repl-allv-dst").await;
    put(&s3, &src, "k", body(1, 10)).await;
    put(&s3, &src, "k", body(2, 20)).await;
    let ids: Vec<String> = histories(&s3, &src).await["k"]
        .iter()
        .map(|(_, id, _)| id.clone())
        .collect();
    let (older, newer) = (&ids[0], &ids[1]);
    let replicator = replicator(
        &moto().endpoint,
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
        &[("S3_FANOUT_REPLICATE_ALL_VERSIONS", "true")],
    )
    .await;
    let created = |id: &str, version: &str| {
        message(
            id,
            &versioned_fixture("eventbridge-object-created", &src, "k", version),
        )
    };

    // WHEN the newer event is replicated, then the older one, late
    let first = replicator
        .replicate(vec![created("v2", newer)], deadline())
        .await;
    let late = replicator
        .replicate(vec![created("v1", older)], deadline())
        .await;

    // THEN the destination's history is the source's, each version once,
    // oldest first with its origin: the late event appended nothing
    assert!(
        matches!(outcome(&first, "k"), Outcome::Replicated { bytes: 30, .. }),
        "{:#?}",
        first.keys
    );
    assert_eq!(*outcome(&late, "k"), Outcome::InSync);
    assert_same_histories(&s3, &src, &dst).await;

    // WHEN the key is deleted (a delete marker) and put again, and the
    // events arrive, the marker's twice
    delete(&s3, &src, "k").await;
    let marker = histories(&s3, &src).await["k"][2].1.clone();
    let deleted = message("dm", &versioned_fixture("s3-delete", &src, "k", &marker));
    let invocation = replicator.replicate(vec![deleted], deadline()).await;
    assert_eq!(*outcome(&invocation, "k"), Outcome::Deleted);
    let deleted = message("dm2", &versioned_fixture("s3-delete", &src, "k", &marker));
    let again = replicator.replicate(vec![deleted], deadline()).await;
    assert_eq!(*outcome(&again, "k"), Outcome::InSync);
    put(&s3, &src, "k", body(3, 30)).await;
    let newest = histories(&s3, &src).await["k"][3].1.clone();
    let invocation = replicator
        .replicate(vec![created("v3", &newest)], deadline())
        .await;

    // THEN the marker and the new version are appended in order
    assert!(
        matches!(
            outcome(&invocation, "k"),
            Outcome::Replicated { bytes: 30, .. }
        ),
        "{:#?}",
        invocation.keys
    );
    assert_same_histories(&s3, &src, &dst).await;
    assert_eq!(histories(&s3, &dst).await["k"].len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_all_versions_replicator_refuses_an_unversioned_destination_before_any_event() {
    use support::versioned::versioned_bucket;
    let s3 = s3().await;
    let src = versioned_bucket(&s3, "repl-allv-unv").await;
    let dst = unique_bucket("repl-allv-unv-dst");
    create_bucket(&s3, &dst).await;
    let config = StackConfig::from_vars(|name| {
        [
            ("S3_FANOUT_ENDPOINT_URL", moto().endpoint.clone()),
            ("S3_FANOUT_REPORT_BUCKET", "unused".into()),
            ("S3_FANOUT_SOURCE", format!("s3://{src}")),
            ("S3_FANOUT_DESTINATION", format!("s3://{dst}")),
            ("S3_FANOUT_REPLICATE_ALL_VERSIONS", "true".into()),
        ]
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
    })
    .unwrap();
    let env = FunctionEnv::new(config).await;
    let err = Replicator::new(&env).await.err().expect("refused");
    let why = err.to_string();
    assert!(why.contains(&dst) && why.contains("versioning"), "{why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replicating_stack_with_all_versions_appends_each_history_as_events_arrive() {
    use support::versioned::{assert_same_histories, delete, histories, versioned_bucket};
    let s3 = s3().await;
    // GIVEN versioned buckets and the local stack's replication, from
    // moto's own notifications, appending versions. One invocation at a
    // time: two at once on one key can append a version twice (the
    // book's whole-histories page says so, and VALIDATE reports it).
    let src = versioned_bucket(&s3, "repl-allv-e2e").await;
    let dst = versioned_bucket(&s3, "repl-allv-e2e-dst").await;
    let mut options = ReplicationOptions::new(
        &moto().endpoint,
        &unique_bucket("repl-allv-e2e"),
        &format!("s3://{src}"),
        &format!("s3://{dst}"),
    );
    options.replicate_all_versions = true;
    options.max_concurrency = 1;
    let cancel = CancellationToken::new();
    let replication = replication::start(&options, cancel.clone())
        .await
        .expect("replication starts");

    // WHEN keys are put and one overwritten
    for (i, key) in ["a", "b", "dir/c"].iter().enumerate() {
        put(&s3, &src, key, body(i as u64, 100 + i)).await;
    }
    put(&s3, &src, "a", body(10, 110)).await;
    // THEN each destination history becomes the source's, in order
    same_shapes(&s3, &src, &dst).await;

    // WHEN, all that appended, keys are deleted (delete markers) and one
    // made again: the last event of dir/c is its marker's
    // (s3:ObjectRemoved:DeleteMarkerCreated, which scripts/moto_server.py
    // sends as S3 does)
    delete(&s3, &src, "b").await;
    put(&s3, &src, "b", body(11, 120)).await;
    delete(&s3, &src, "dir/c").await;
    // THEN the markers are appended too, in order
    same_shapes(&s3, &src, &dst).await;
    let sqs = build_sqs_client(&moto_settings()).await;
    drained(&sqs, &replication.event_queue_url, Duration::from_secs(30)).await;
    // AND, every event handled, nothing was appended twice
    assert_same_histories(&s3, &src, &dst).await;
    assert_eq!(histories(&s3, &dst).await["b"].len(), 3);
    assert!(
        dead_letters(&sqs, &replication.dead_letter_queue_url)
            .await
            .is_empty()
    );
    cancel.cancel();
}

/// Poll until every key's history at `dst` has the shape of its history at
/// `src`: the same versions (by ETag) and delete markers, in order.
async fn same_shapes(s3: &Client, src: &str, dst: &str) {
    use support::versioned::histories;
    let shape = |h: std::collections::BTreeMap<String, Vec<(bool, String, String)>>| {
        h.into_iter()
            .map(|(k, v)| (k, v.into_iter().map(|(m, _, e)| (m, e)).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    };
    let started = Instant::now();
    loop {
        let (want, got) = (
            shape(histories(s3, src).await),
            shape(histories(s3, dst).await),
        );
        if want == got {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no convergence:\nsource {want:#?}\ndestination {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
