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
