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
//! Keys are form-encoded in both formats: `+` is a space and `%XX` an
//! escaped byte, so `a+b` arrives as `a%2Bb`. Only the bucket, the key and
//! the event's time are kept: the replicator reconciles the key's current
//! state, so what the event says happened does not matter, only that
//! something happened to that key.

use serde_json::Value;

use crate::listing::form_decode;

/// One object an event names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    pub bucket: String,
    /// Decoded.
    pub key: String,
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
    let key = string(&s3["object"]["key"], "s3.object.key")?;
    Ok(ObjectEvent {
        bucket,
        key: decode_key(&key)?,
        event_name: record["eventName"].as_str().unwrap_or_default().to_owned(),
        event_time_ms: record["eventTime"].as_str().and_then(parse_time),
    })
}

fn eventbridge_event(event: &Value) -> Result<ObjectEvent, String> {
    let detail = event
        .get("detail")
        .ok_or("an EventBridge event without \"detail\"")?;
    let bucket = string(&detail["bucket"]["name"], "detail.bucket.name")?;
    let key = string(&detail["object"]["key"], "detail.object.key")?;
    let event_time_ms = match &event["time"] {
        Value::String(time) => parse_time(time),
        // Not what S3 sends, but what some emulators do: seconds.
        Value::Number(seconds) => seconds.as_f64().map(|s| (s * 1000.0) as i64),
        _ => None,
    };
    Ok(ObjectEvent {
        bucket,
        key: decode_key(&key)?,
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

fn decode_key(encoded: &str) -> Result<String, String> {
    form_decode(encoded).map_err(|_| format!("the key {encoded:?} is not UTF-8 once form-decoded"))
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
    fn native_keys_are_form_decoded() {
        for (encoded, key) in [
            ("a+b", "a b"),
            ("a%2Bb", "a+b"),
            ("%2541", "%41"),
            ("%C3%BC/%C3%B1", "ü/ñ"),
            ("dir/x%3Dy%3B", "dir/x=y;"),
        ] {
            let got = objects(&native(encoded));
            assert_eq!(got[0].key, key, "{encoded}");
            assert_eq!(got[0].bucket, "src");
            assert_eq!(got[0].event_time_ms, Some(1_795_312_800_250));
        }
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
