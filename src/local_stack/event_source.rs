//! The SQS event source mapping, emulated: poll a queue, invoke a handler
//! (the copier on the work queue, the replicator on the event queue) with a
//! batch of messages, delete the ones it did not hand back. Like the AWS service, it honours the batch size, the queue's
//! visibility timeout (a handed-back message reappears when it expires),
//! partial batch responses, and `maxReceiveCount` (the queue's redrive
//! policy, which moto applies, moves a message to the dead-letter queue).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::serverless::replicator::Replicator;
use crate::serverless::{FunctionEnv, copier};

/// The function a mapping feeds.
#[derive(Clone)]
pub enum Target {
    Copier(Arc<FunctionEnv>),
    Replicator(Arc<Replicator>),
}

#[derive(Debug, Clone)]
pub struct EventSourceOptions {
    pub queue_url: String,
    pub queue_arn: String,
    /// Messages per invocation (the mapping's BatchSize).
    pub batch_size: i32,
    /// Invocations at once (the mapping's MaximumConcurrency).
    pub max_concurrency: usize,
    /// The function's time limit, for its deadline.
    pub function_timeout: Duration,
    /// Deliver every batch twice, as SQS's at-least-once delivery may.
    pub duplicate_deliveries: bool,
}

pub async fn run(
    sqs: aws_sdk_sqs::Client,
    target: Target,
    options: EventSourceOptions,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(options.max_concurrency.max(1)));
    while !cancel.is_cancelled() {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let received = tokio::select! {
            _ = cancel.cancelled() => return,
            received = sqs
                .receive_message()
                .queue_url(&options.queue_url)
                .max_number_of_messages(options.batch_size.clamp(1, 10))
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send() => received,
        };
        let messages = match received {
            Ok(output) => output.messages.unwrap_or_default(),
            Err(err) => {
                tracing::warn!(error = %crate::error::classify(&err).message, "event source: receive failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let records: Vec<SqsMessage> = messages
            .into_iter()
            .map(|m| {
                let mut record = SqsMessage::default();
                record.attributes = m
                    .attributes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v))
                    .collect::<HashMap<_, _>>();
                record.message_id = m.message_id;
                record.receipt_handle = m.receipt_handle;
                record.body = m.body;
                record.event_source = Some("aws:sqs".into());
                record.event_source_arn = Some(options.queue_arn.clone());
                record
            })
            .collect();
        let (sqs, target, options) = (sqs.clone(), target.clone(), options.clone());
        tokio::spawn(async move {
            let _permit = permit;
            invoke(&sqs, &target, &options, records).await;
        });
    }
}

async fn invoke(
    sqs: &aws_sdk_sqs::Client,
    target: &Target,
    options: &EventSourceOptions,
    records: Vec<SqsMessage>,
) {
    let deliveries = if options.duplicate_deliveries { 2 } else { 1 };
    let mut response = Default::default();
    for _ in 0..deliveries {
        let deadline = std::time::SystemTime::now() + options.function_timeout;
        response = match target {
            Target::Copier(env) => copier::copy_messages(env, records.clone(), deadline).await,
            Target::Replicator(replicator) => {
                let invocation = replicator.replicate(records.clone(), deadline).await;
                for line in &invocation.metric_lines {
                    tracing::debug!(target: "emf", "{line}");
                }
                invocation.response
            }
        };
    }
    let handed_back: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    for record in &records {
        if handed_back.contains(&record.message_id.as_deref().unwrap_or_default()) {
            continue; // reappears after the visibility timeout
        }
        if let Some(handle) = &record.receipt_handle
            && let Err(err) = sqs
                .delete_message()
                .queue_url(&options.queue_url)
                .receipt_handle(handle)
                .send()
                .await
        {
            tracing::warn!(error = %crate::error::classify(&err).message, "event source: delete failed");
        }
    }
}
