//! S3 event notifications, as they arrive in the body of an SQS message.
//!
//! Three shapes reach the event queue:
//!
//! - S3's own notification (`{"Records": [...]}`), sent by a bucket's
//!   notification configuration, possibly wrapped in an SNS envelope when a
//!   topic fans it out;
//! - the EventBridge event (`"source": "aws.s3"`, `"detail-type": "Object
//!   Created"`), sent by a rule, which is how buckets that already have a
//!   notification configuration (a bucket has only one) are wired;
//! - `s3:TestEvent`, which S3 sends once when a notification configuration is
//!   saved. It names no object.
//!
//! The two shapes encode keys by different rules, so each is decoded by its
//! own:
//!
//! - **Native notifications are form-encoded**: a space is `+`, a plus
//!   `%2B`, any other byte may be `%XX`. AWS documents it: "The object key
//!   name value is URL encoded. For example, "red flower.jpg" becomes
//!   "red+flower.jpg"" (Amazon S3 User Guide, *Event message structure*,
//!   <https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html>).
//! - **EventBridge's `detail.object.key` is read as percent-encoded, `+`
//!   literal**: a space is `%20`, a plus `+`. AWS's page for this shape
//!   (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html>)
//!   says nothing about encoding. AWS's media lake guidance found that
//!   form-decoding it read `video+data.mp4` as `video data.mp4`, which was
//!   then never found (aws-solutions-library-samples/guidance-for-medialake-on-aws
//!   PR #21: "spaces → `%20`, plus signs stay as `+`", tested with
//!   `test+b.png` and `%2B++ %20.mp3`). That project's code as merged since
//!   (`lambdas/ingest/s3/index.py`) instead uses the key as it arrives, not
//!   decoded at all. The two readings agree on every key without a `%XX`
//!   sequence in it; where they differ, the key as it arrived is kept as
//!   another reading.
//!
//! Because neither rule is documented for both shapes, a key is never
//! concluded absent from one reading: each [`ObjectEvent`] carries, besides
//! the key by its shape's rule, the other plausible readings (the key as it
//! arrived; for EventBridge also its form-decoded reading), and the
//! replicator tries them in order when the first is absent at the source
//! before it acts on absence.
//!
//! Only the bucket, the key and the event's time are kept: the replicator
//! reconciles the key's current state, so what the event says happened does
//! not matter, only that something happened to that key.

use serde_json::Value;

use crate::backend::s3::listing::form_decode;

/// One object an event names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    pub bucket: String,
    /// Decoded by its shape's rule.
    pub key: String,
    /// Other readings of the key as it arrived, most plausible first, none
    /// equal to `key` or to each other. The replicator tries them in order
    /// only when `key` is absent at the source.
    pub alternatives: Vec<String>,
    /// `ObjectCreated:Put`, `ObjectRemoved:Delete`, `Object Created`, ...
    pub event_name: String,
    /// When S3 says it happened, in ms since the epoch; the replication lag
    /// is measured from it.
    pub event_time_ms: Option<i64>,
}

/// What one SQS message holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventBody {
    /// `s3:TestEvent`: nothing to replicate.
    Test,
    Objects(Vec<ObjectEvent>),
}

/// Parse a message body. An error means the message is not an S3 event this
/// replicator understands; retrying cannot change that.
pub fn parse_body(body: &str) -> Result<EventBody, String> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| format!("the message is not JSON: {e}"))?;
    parse_value(&value, true)
}

fn parse_value(value: &Value, unwrap_sns: bool) -> Result<EventBody, String> {
    if value["Event"] == "s3:TestEvent" {
        return Ok(EventBody::Test);
    }
    if let Some(records) = value.get("Records") {
        let records = records.as_array().ok_or("\"Records\" is not an array")?;
        return records
            .iter()
            .enumerate()
            .map(|(i, record)| native_record(record).map_err(|e| format!("record {i}: {e}")))
            .collect::<Result<_, _>>()
            .map(EventBody::Objects);
    }
    if value["source"] == "aws.s3" && value.get("detail-type").is_some() {
        return eventbridge_event(value).map(|event| EventBody::Objects(vec![event]));
    }
    // S3 → SNS → SQS without raw message delivery: the notification is a
    // JSON string in the envelope's Message.
    if unwrap_sns
        && value["Type"] == "Notification"
        && let Some(message) = value["Message"].as_str()
    {
        let inner: Value = serde_json::from_str(message)
            .map_err(|e| format!("the SNS notification's Message is not JSON: {e}"))?;
        return parse_value(&inner, false);
    }
    Err("not an S3 event notification (no \"Records\", no EventBridge \"source\": \"aws.s3\", not s3:TestEvent)".into())
}

fn native_record(record: &Value) -> Result<ObjectEvent, String> {
    let s3 = record.get("s3").ok_or("no \"s3\" member")?;
    let bucket = string(&s3["bucket"]["name"], "s3.bucket.name")?;
    let arrived = string(&s3["object"]["key"], "s3.object.key")?;
    let (key, alternatives) = native_key(&arrived)?;
    Ok(ObjectEvent {
        bucket,
        key,
        alternatives,
        event_name: record["eventName"].as_str().unwrap_or_default().to_owned(),
        event_time_ms: record["eventTime"].as_str().and_then(parse_time),
    })
}

fn eventbridge_event(event: &Value) -> Result<ObjectEvent, String> {
    let detail = event
        .get("detail")
        .ok_or("an EventBridge event without \"detail\"")?;
    let bucket = string(&detail["bucket"]["name"], "detail.bucket.name")?;
    let arrived = string(&detail["object"]["key"], "detail.object.key")?;
    let event_time_ms = match &event["time"] {
        Value::String(time) => parse_time(time),
        // Not what S3 sends, but what some emulators do: seconds.
        Value::Number(seconds) => seconds.as_f64().map(|s| (s * 1000.0) as i64),
        _ => None,
    };
    let (key, alternatives) = eventbridge_key(&arrived);
    Ok(ObjectEvent {
        bucket,
        key,
        alternatives,
        event_name: event["detail-type"].as_str().unwrap_or_default().to_owned(),
        event_time_ms,
    })
}

fn string(value: &Value, what: &str) -> Result<String, String> {
    match value.as_str() {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(format!("no {what}")),
    }
}

/// A native notification's key: form-decoded, and the key as it arrived if
/// that differs (a sender that did not encode it: some S3-compatible stores,
/// hand-written test events). A key that is not UTF-8 once form-decoded is
/// not one S3 sent, so the message is refused.
fn native_key(arrived: &str) -> Result<(String, Vec<String>), String> {
    let key = form_decode(arrived)
        .map_err(|_| format!("the key {arrived:?} is not UTF-8 once form-decoded"))?;
    Ok(readings(key, [arrived.to_owned()]))
}

/// An EventBridge event's key: percent-decoded with `+` left literal; then
/// the key as it arrived, for the case that EventBridge sends it unencoded
/// (then `a%2Bb` is a key of its own); then the form-decoded reading, for
/// the case that it sends the native encoding after all. A reading that is
/// not UTF-8 is dropped, and the key as it arrived always is one, so this
/// never fails: `100%FF` can only be a key sent unencoded.
fn eventbridge_key(arrived: &str) -> (String, Vec<String>) {
    let form_decoded = form_decode(arrived).ok();
    match String::from_utf8(percent_encoding::percent_decode_str(arrived).collect()) {
        Ok(decoded) => readings(
            decoded,
            [Some(arrived.to_owned()), form_decoded]
                .into_iter()
                .flatten(),
        ),
        Err(_) => readings(arrived.to_owned(), form_decoded),
    }
}

/// `key`, and the others that differ from it and from each other, in order.
fn readings(key: String, others: impl IntoIterator<Item = String>) -> (String, Vec<String>) {
    let mut alternatives: Vec<String> = Vec::new();
    for other in others {
        if other != key && !alternatives.contains(&other) {
            alternatives.push(other);
        }
    }
    (key, alternatives)
}

/// ISO 8601 as S3 writes it (`2026-11-22T02:00:00.123Z`). A time without
/// an offset is taken as UTC.
fn parse_time(text: &str) -> Option<i64> {
    use aws_smithy_types::date_time::{DateTime, Format};
    let zoned = if text.ends_with('Z') || text.contains('+') {
        text.to_owned()
    } else {
        format!("{text}Z")
    };
    DateTime::from_str(&zoned, Format::DateTime)
        .ok()?
        .to_millis()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn native(key: &str) -> String {
        json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-11-22T02:00:00.250Z", "eventName": "ObjectCreated:Put",
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "c",
                   "bucket": {"name": "src", "arn": "arn:aws:s3:::src"},
                   "object": {"key": key, "size": 5, "eTag": "e", "sequencer": "0A"}}
        }]})
        .to_string()
    }

    fn objects(body: &str) -> Vec<ObjectEvent> {
        match parse_body(body).unwrap() {
            EventBody::Objects(objects) => objects,
            EventBody::Test => panic!("not a test event"),
        }
    }

    #[test]
    fn native_keys_are_form_decoded_and_keep_the_key_as_it_arrived() {
        for (encoded, key) in [
            ("a+b", "a b"),
            ("a%2Bb", "a+b"),
            ("%2541", "%41"),
            ("%C3%BC/%C3%B1", "ü/ñ"),
            ("dir/x%3Dy%3B", "dir/x=y;"),
        ] {
            let got = objects(&native(encoded));
            assert_eq!(got[0].key, key, "{encoded}");
            assert_eq!(got[0].alternatives, [encoded], "{encoded}");
            assert_eq!(got[0].bucket, "src");
            assert_eq!(got[0].event_time_ms, Some(1_795_312_800_250));
        }
    }

    /// A fixture of `tests/fixtures/events/keys/`, as S3 would send it.
    macro_rules! key_fixture {
        ($name:literal) => {
            include_str!(concat!("../../tests/fixtures/events/keys/", $name, ".json"))
                .replace("__BUCKET__", "src")
                .replace("__TIME__", "2026-11-22T02:00:00.250Z")
        };
    }

    /// The one object of a fixture: its key, its other readings.
    fn key_of(body: &str) -> (Vec<u8>, Vec<String>) {
        let got = objects(body);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].bucket, "src");
        assert_eq!(got[0].event_time_ms, Some(1_795_312_800_250));
        (got[0].key.as_bytes().to_vec(), got[0].alternatives.clone())
    }

    #[test]
    fn native_fixtures_parse_to_their_exact_key_by_form_decoding() {
        for (body, key, others) in [
            (key_fixture!("s3-put-space"), "a b", &["a+b"][..]),
            (key_fixture!("s3-put-plus"), "a+b", &["a%2Bb"]),
            (key_fixture!("s3-put-percent-2b"), "a%2Bb", &["a%252Bb"]),
            (key_fixture!("s3-put-percent"), "100%", &["100%25"]),
            (
                key_fixture!("s3-put-unicode"),
                "ü/ñ.txt",
                &["%C3%BC/%C3%B1.txt"],
            ),
        ] {
            assert_eq!(
                key_of(&body),
                (
                    key.as_bytes().to_vec(),
                    others.iter().map(|o| o.to_string()).collect()
                ),
                "{key}"
            );
        }
    }

    #[test]
    fn eventbridge_fixtures_parse_to_their_exact_key_by_percent_decoding_with_plus_literal() {
        for (body, key, others) in [
            (
                key_fixture!("eventbridge-object-created-space"),
                "a b",
                &["a%20b"][..],
            ),
            // The form reading of `a+b` is its space-holding twin: tried
            // only if `a+b` is absent at the source.
            (
                key_fixture!("eventbridge-object-created-plus"),
                "a+b",
                &["a b"],
            ),
            (
                key_fixture!("eventbridge-object-created-percent-2b"),
                "a%2Bb",
                &["a%252Bb"],
            ),
            (
                key_fixture!("eventbridge-object-created-percent"),
                "100%",
                &["100%25"],
            ),
            (
                key_fixture!("eventbridge-object-created-unicode"),
                "ü/ñ.txt",
                &["%C3%BC/%C3%B1.txt"],
            ),
        ] {
            assert_eq!(
                key_of(&body),
                (
                    key.as_bytes().to_vec(),
                    others.iter().map(|o| o.to_string()).collect()
                ),
                "{key}"
            );
        }
    }

    #[test]
    fn an_eventbridge_key_that_decodes_to_no_utf8_is_read_as_it_arrived() {
        // Percent-decoded `100%FF` is not UTF-8, so EventBridge cannot have
        // encoded it: it is the key itself, sent unencoded.
        let (key, others) = eventbridge_key("100%FF");
        assert_eq!(key, "100%FF");
        assert!(others.is_empty(), "{others:?}");
        // An unencoded key with a valid escape in it keeps its raw reading.
        assert_eq!(
            eventbridge_key("a%2Bb c+d"),
            (
                "a+b c+d".to_owned(),
                vec!["a%2Bb c+d".to_owned(), "a+b c d".to_owned()]
            )
        );
        assert_eq!(
            eventbridge_key("plain/key.txt"),
            ("plain/key.txt".to_owned(), vec![])
        );
    }

    #[test]
    fn times_without_an_offset_or_with_microseconds_are_utc() {
        assert_eq!(parse_time("2026-11-22T02:00:00Z"), Some(1_795_312_800_000));
        assert_eq!(
            parse_time("2026-11-22T02:00:00.250123"),
            Some(1_795_312_800_250)
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn an_sns_envelope_is_unwrapped_once() {
        let wrapped = json!({"Type": "Notification", "Message": native("k%20")}).to_string();
        assert_eq!(objects(&wrapped)[0].key, "k ");
        let twice = json!({"Type": "Notification", "Message": wrapped}).to_string();
        assert!(parse_body(&twice).is_err());
    }

    #[test]
    fn unreadable_bodies_say_why() {
        assert!(parse_body("not json").unwrap_err().contains("not JSON"));
        assert!(parse_body("{}").unwrap_err().contains("not an S3 event"));
        assert!(
            parse_body(r#"{"Records": [{"s3": {"bucket": {"name": "b"}}}]}"#)
                .unwrap_err()
                .contains("record 0: no s3.object.key")
        );
        assert!(
            parse_body(&native("%FF"))
                .unwrap_err()
                .contains("not UTF-8")
        );
    }
}
