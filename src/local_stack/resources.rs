//! Resources the local stack creates in moto: client settings for the
//! emulator, and queues with a dead-letter queue behind them.

use std::collections::HashMap;

use aws_sdk_sqs::types::QueueAttributeName;

use crate::base::client::ClientSettings;
use crate::base::error::classify;
use crate::model::options::ClientFlags;

pub fn settings(endpoint: &str) -> ClientSettings {
    ClientFlags {
        endpoint_url: Some(endpoint.to_owned()),
        ..ClientFlags::default()
    }
    .settings(None, None)
}

/// A queue whose messages move to a dead-letter queue after
/// `max_receive_count` receives, as the template's queues do. Returns the
/// (URL, ARN) of each.
pub async fn create_redriven_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    dead_letter_name: &str,
    visibility_timeout_secs: u32,
    max_receive_count: u32,
) -> Result<((String, String), (String, String)), String> {
    let dead_letter = create_queue(sqs, dead_letter_name, HashMap::new()).await?;
    let redrive = serde_json::json!({"deadLetterTargetArn": dead_letter.1, "maxReceiveCount": max_receive_count});
    let queue = create_queue(
        sqs,
        name,
        HashMap::from([
            (
                QueueAttributeName::VisibilityTimeout,
                visibility_timeout_secs.to_string(),
            ),
            (QueueAttributeName::RedrivePolicy, redrive.to_string()),
        ]),
    )
    .await?;
    Ok((queue, dead_letter))
}

/// Create a queue (or find it, if it exists with the same attributes) and
/// return its URL and ARN.
pub async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> Result<(String, String), String> {
    let url = sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes))
        .send()
        .await
        .map_err(|e| classify(&e).message)?
        .queue_url
        .unwrap_or_default();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| classify(&e).message)?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default();
    Ok((url, arn))
}

/// The run counters' table, keyed and expiring as the template's
/// `RunTable`; one a previous stack of the same name left is reused.
pub async fn create_run_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<String, String> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        TimeToLiveSpecification,
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("name and type are set")
    };
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("name and type are set")
    };
    let created = dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(attribute("pk"))
        .attribute_definitions(attribute("sk"))
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(err) => {
            let failure = classify(&err);
            if failure.code != "ResourceInUseException" {
                return Err(failure.message);
            }
            return Ok(name.to_owned());
        }
    }
    dynamodb
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()
                .expect("name and flag are set"),
        )
        .send()
        .await
        .map_err(|e| classify(&e).message)?;
    Ok(name.to_owned())
}
