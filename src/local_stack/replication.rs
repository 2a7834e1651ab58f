//! Replication on this machine: what the template deploys when
//! `Replication=true`, made in moto.
//!
//! - the event queue, with a redrive policy to its dead-letter queue;
//! - the source bucket's notification configuration, sending object
//!   created and removed events under the source prefix to the event queue
//!   (moto's S3 delivers them, as S3 does);
//! - the event source mapping, feeding the real [`Replicator`].
//!
//! It runs on its own or inside [`super::start`]; tests start one per pair
//! of buckets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use tokio_util::sync::CancellationToken;

use crate::base::client::{build_s3_client, build_sqs_client};
use crate::base::error::{SyncError, classify};
use crate::model::location::S3Location;
use crate::model::options::DiffMode;
use crate::serverless::FunctionEnv;
use crate::serverless::env::StackConfig;
use crate::serverless::replicator::Replicator;

use super::event_source::{self, EventSourceOptions, Target};
use super::resources::{create_redriven_queue, settings};

#[derive(Debug, Clone)]
pub struct ReplicationOptions {
    pub moto_endpoint: String,
    /// The endpoint the replicator uses for S3 (default: moto); a fault
    /// injecting proxy goes here.
    pub functions_s3_endpoint: Option<String>,
    /// Queue names start with this.
    pub name: String,
    /// `s3://bucket/prefix` on each side; both buckets must exist.
    pub source: String,
    pub destination: String,
    pub mode: Option<DiffMode>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub replicate_deletes: bool,
    /// Append each key's new versions and delete markers to its history
    /// (the template's `ReplicateAllVersions`).
    pub replicate_all_versions: bool,
    pub visibility_timeout_secs: u32,
    pub max_receive_count: u32,
    pub batch_size: i32,
    pub max_concurrency: usize,
    pub function_timeout: Duration,
    pub function_max_attempts: Option<u32>,
    pub duplicate_deliveries: bool,
}

impl ReplicationOptions {
    pub fn new(moto_endpoint: &str, name: &str, source: &str, destination: &str) -> Self {
        ReplicationOptions {
            moto_endpoint: moto_endpoint.to_owned(),
            functions_s3_endpoint: None,
            name: name.to_owned(),
            source: source.to_owned(),
            destination: destination.to_owned(),
            mode: None,
            include: Vec::new(),
            exclude: Vec::new(),
            replicate_deletes: false,
            replicate_all_versions: false,
            // As the work queue's: a handed-back event is retried within
            // seconds here (the template sets 6x the replicator's timeout).
            visibility_timeout_secs: 6,
            max_receive_count: 3,
            // The template's default: S3 sends one record per message, so a
            // batch of 10 is 10 keys reconciled at once by one invocation.
            batch_size: 10,
            max_concurrency: 4,
            function_timeout: Duration::from_secs(300),
            function_max_attempts: None,
            duplicate_deliveries: false,
        }
    }
}

/// A running replication: its queues and its replicator.
pub struct Replication {
    pub event_queue_url: String,
    pub event_queue_arn: String,
    pub dead_letter_queue_url: String,
    pub replicator: Arc<Replicator>,
}

/// Create the queues, point the source bucket's notifications at the event
/// queue, and start the event source mapping, which runs until `cancel`.
pub async fn start(
    options: &ReplicationOptions,
    cancel: CancellationToken,
) -> Result<Replication, SyncError> {
    let fail = |what: &str, message: String| {
        SyncError::Config(format!("local replication: {what}: {message}"))
    };
    let moto = settings(&options.moto_endpoint);
    let sqs = build_sqs_client(&moto).await;
    let ((event_queue_url, event_queue_arn), (dead_letter_queue_url, _)) = create_redriven_queue(
        &sqs,
        &format!("{}-events", options.name),
        &format!("{}-events-dlq", options.name),
        options.visibility_timeout_secs,
        options.max_receive_count,
    )
    .await
    .map_err(|e| fail("creating the event queue and its dead-letter queue", e))?;

    let source: S3Location = options.source.parse()?;
    let s3 = build_s3_client(&moto, None).await;
    let mut queue = QueueConfiguration::builder()
        .id(format!("{}-replication", options.name))
        .queue_arn(&event_queue_arn)
        .events(Event::from("s3:ObjectCreated:*"))
        .events(Event::from("s3:ObjectRemoved:*"));
    if !source.prefix.is_empty() {
        let rule = FilterRule::builder()
            .name(FilterRuleName::Prefix)
            .value(&source.prefix)
            .build();
        queue = queue.filter(
            NotificationConfigurationFilter::builder()
                .key(S3KeyFilter::builder().filter_rules(rule).build())
                .build(),
        );
    }
    let queue = queue
        .build()
        .map_err(|e| fail("the notification configuration", e.to_string()))?;
    s3.put_bucket_notification_configuration()
        .bucket(&source.bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(queue)
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            fail(
                "configuring the source bucket's notifications",
                classify(&e).message,
            )
        })?;

    let globs = |globs: &[String]| serde_json::to_string(globs).expect("strings serialise");
    let vars: HashMap<&str, String> = HashMap::from([
        (
            "S3_FANOUT_ENDPOINT_URL",
            options
                .functions_s3_endpoint
                .clone()
                .unwrap_or_else(|| options.moto_endpoint.clone()),
        ),
        // Required of every function; the replicator keeps no run state.
        (
            "S3_FANOUT_REPORT_BUCKET",
            format!("{}-reports", options.name),
        ),
        ("S3_FANOUT_SOURCE", options.source.clone()),
        ("S3_FANOUT_DESTINATION", options.destination.clone()),
        (
            "S3_FANOUT_MODE",
            options
                .mode
                .map(|m| format!("{m:?}").to_ascii_lowercase())
                .unwrap_or_default(),
        ),
        ("S3_FANOUT_INCLUDE", globs(&options.include)),
        ("S3_FANOUT_EXCLUDE", globs(&options.exclude)),
        (
            "S3_FANOUT_REPLICATE_DELETES",
            options.replicate_deletes.to_string(),
        ),
        (
            "S3_FANOUT_REPLICATE_ALL_VERSIONS",
            options.replicate_all_versions.to_string(),
        ),
        (
            "S3_FANOUT_DEAD_LETTER_QUEUE_URL",
            dead_letter_queue_url.clone(),
        ),
        (
            "S3_FANOUT_MAX_RECEIVE_COUNT",
            options.max_receive_count.to_string(),
        ),
        (
            "S3_FANOUT_MAX_ATTEMPTS",
            options
                .function_max_attempts
                .map(|n| n.to_string())
                .unwrap_or_default(),
        ),
    ]);
    let config = StackConfig::from_vars(|name| vars.get(name).cloned())?;
    let mut env = FunctionEnv::new(config).await;
    env.sqs = sqs.clone(); // SQS goes to moto even when S3 goes through a proxy
    let replicator = Arc::new(
        Replicator::new(&env)
            .await?
            .with_function_name(&format!("{}-replicator", options.name)),
    );

    tokio::spawn(event_source::run(
        sqs,
        Target::Replicator(replicator.clone()),
        EventSourceOptions {
            queue_url: event_queue_url.clone(),
            queue_arn: event_queue_arn.clone(),
            batch_size: options.batch_size,
            max_concurrency: options.max_concurrency,
            function_timeout: options.function_timeout,
            duplicate_deliveries: options.duplicate_deliveries,
        },
        cancel,
    ));
    Ok(Replication {
        event_queue_url,
        event_queue_arn,
        dead_letter_queue_url,
        replicator,
    })
}
