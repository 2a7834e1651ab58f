//! The serverless runtime on this machine, without AWS or Docker.
//!
//! moto provides S3, SQS, SNS and Step Functions, and its Step Functions
//! interpreter executes the real `statemachine/sync.asl.json`, its run
//! notifications (`sns:publish` tasks) included. This module provides the
//! rest: the stack's resources (queues with a redrive policy,
//! the report bucket, the state machine with its substitutions), a Lambda
//! router that runs the project's handlers ([`router`]), and the SQS event
//! source mapping ([`event_source`]), which can also kill copier
//! invocations on a test's request ([`LocalStack::crashes`]).
//!
//! moto must run with `MOTO_PORT` set to the router's port: that is where
//! its interpreter sends `lambda:invoke`.

pub mod event_source;
pub mod replication;
pub mod resources;
pub mod router;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::base::client::{
    ClientSettings, build_dynamodb_client, build_s3_client, build_sfn_client, build_sqs_client,
};
use crate::base::error::{SyncError, classify};
use crate::local_stack::resources::{create_redriven_queue, create_run_table, settings};
use crate::serverless::FunctionEnv;
use crate::serverless::control::StackOutputs;
use crate::serverless::env::StackConfig;

const ACCOUNT: &str = "123456789012";
/// The region every resource of the local stack is in.
const REGION: &str = "us-east-1";

#[derive(Debug, Clone)]
pub struct LocalStackOptions {
    /// moto, started with `MOTO_PORT` = the router's port.
    pub moto_endpoint: String,
    /// Where the router listens.
    pub router: SocketAddr,
    /// The endpoint the functions use for S3 and SQS (default: moto). A
    /// fault-injecting proxy goes here. The emulated event source, which
    /// stands in for AWS's own poller, always talks to moto directly.
    pub functions_endpoint: Option<String>,
    /// Resource names start with this, so several stacks can share a moto.
    pub name: String,
    pub visibility_timeout_secs: u32,
    /// The range queue's: a lister's time limit here.
    pub range_visibility_timeout_secs: u32,
    /// Listers at once (the range queue mapping's MaximumConcurrency).
    pub listing_concurrency: usize,
    /// Range tasks a lister invocation lists at once (the template's
    /// `ListerStreams`: the mapping's BatchSize and the functions'
    /// `S3_FANOUT_LISTER_STREAMS`).
    pub lister_streams: usize,
    /// A lister's time limit: its deadline, and its range tasks' lease.
    pub lister_timeout: Duration,
    pub max_receive_count: u32,
    pub batch_size: i32,
    pub max_concurrency: usize,
    pub copier_timeout: Duration,
    pub lister_max_keys: Option<u64>,
    /// See `StackConfig::journal_settle_ms` (default 300 s).
    pub journal_settle_secs: Option<u64>,
    /// Split objects above this size into part tasks (default 64 GiB).
    pub split_object_bytes: Option<u64>,
    /// The functions' SDK attempts per request (default 10).
    pub function_max_attempts: Option<u32>,
    pub duplicate_deliveries: bool,
    /// Replication from S3 events as well, between these buckets.
    pub replication: Option<replication::ReplicationOptions>,
    /// Run notifications (the template's RunNotifications=true): the name
    /// of an SNS topic, created in moto, that the state machine publishes
    /// each run's ending to. `None` leaves `${RunTopicArn}` empty, as the
    /// template does when notifications are off: no publish is attempted.
    pub run_topic: Option<String>,
    /// The stack's source and destination (the template's bucket and
    /// prefix parameters): each execution's defaults and bounds. `None`:
    /// every execution names its own, as most test runs do.
    pub source: Option<String>,
    pub destination: Option<String>,
}

impl LocalStackOptions {
    pub fn new(moto_endpoint: &str, router: SocketAddr) -> Self {
        LocalStackOptions {
            moto_endpoint: moto_endpoint.to_owned(),
            router,
            functions_endpoint: None,
            name: "s3-fanout".into(),
            // Short, so a handed-back batch is retried within seconds here
            // (the template sets 6x the copier's timeout), yet longer than
            // any copier invocation on this stack's small objects: a message
            // that reappears while its invocation still runs is delivered
            // again, and after maxReceiveCount moved to the DLQ under it.
            visibility_timeout_secs: 6,
            range_visibility_timeout_secs: 30,
            listing_concurrency: 4,
            // Two, not the template's eight: every test's listers then run
            // tasks side by side and pull from the queue, as AWS's do,
            // while four listers of two keep this 2-core machine's load.
            lister_streams: 2,
            lister_timeout: Duration::from_secs(25),
            max_receive_count: 3,
            batch_size: 1,
            max_concurrency: 4,
            copier_timeout: Duration::from_secs(900),
            lister_max_keys: None,
            journal_settle_secs: None,
            function_max_attempts: None,
            split_object_bytes: None,
            duplicate_deliveries: false,
            replication: None,
            run_topic: None,
            source: None,
            destination: None,
        }
    }
}

pub struct LocalStack {
    pub outputs: StackOutputs,
    pub env: Arc<FunctionEnv>,
    /// Fault injection: kills copier invocations as a crashed Lambda
    /// process would lose them (see [`event_source::CopierCrashes`]).
    /// Nothing uses it unless a test does.
    pub crashes: event_source::CopierCrashes,
    cancel: CancellationToken,
}

impl LocalStack {
    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Create the stack's resources in moto and start the router and the event
/// source mapping. They run until the returned stack is dropped.
pub async fn start(options: LocalStackOptions) -> Result<LocalStack, SyncError> {
    let moto = settings(&options.moto_endpoint);
    // Step Functions execution is off in moto unless asked for.
    let config_url = format!("{}/moto-api/config", options.moto_endpoint);
    enable_state_machine_execution(&config_url)
        .await
        .map_err(|e| fail("enabling Step Functions execution in moto", e))?;

    let report_bucket = create_report_bucket(&moto, &options.name).await?;
    let sqs = build_sqs_client(&moto).await;
    let ((queue_url, queue_arn), (dlq_url, _)) = create_redriven_queue(
        &sqs,
        &format!("{}-work", options.name),
        &format!("{}-dlq", options.name),
        options.visibility_timeout_secs,
        options.max_receive_count,
    )
    .await
    .map_err(|e| fail("creating the work queue and its dead-letter queue", e))?;
    // Listers take much longer than copiers: their tasks stay hidden for a
    // lister's time limit, as the template's RangeQueue does.
    let ((ranges_url, ranges_arn), (ranges_dlq_url, _)) = create_redriven_queue(
        &sqs,
        &format!("{}-ranges", options.name),
        &format!("{}-ranges-dlq", options.name),
        options.range_visibility_timeout_secs,
        options.max_receive_count,
    )
    .await
    .map_err(|e| fail("creating the range queue and its dead-letter queue", e))?;
    let state_machine_arn = create_state_machine(&moto, &options).await?;
    let run_table = create_run_table(
        &build_dynamodb_client(&moto).await,
        &format!("{}-runs", options.name),
    )
    .await
    .map_err(|e| fail("creating the run counters' table", e))?;

    let mut vars = function_vars(&options, &report_bucket, &queue_url);
    vars.insert("S3_FANOUT_RUN_TABLE", run_table.clone());
    vars.insert("S3_FANOUT_RANGE_QUEUE_URL", ranges_url.clone());
    let config = StackConfig::from_vars(|name| vars.get(name).cloned())?;
    let env = Arc::new(FunctionEnv::new(config).await);

    let cancel = CancellationToken::new();
    let crashes = start_functions(
        &options,
        &env,
        (sqs, [(&queue_url, queue_arn), (&ranges_url, ranges_arn)]),
        cancel.clone(),
    )
    .await?;
    let replication = match &options.replication {
        Some(replication) => Some(replication::start(replication, cancel.clone()).await?),
        None => None,
    };

    Ok(LocalStack {
        outputs: StackOutputs {
            event_queue_url: replication.as_ref().map(|r| r.event_queue_url.clone()),
            event_dead_letter_queue_url: replication
                .as_ref()
                .map(|r| r.dead_letter_queue_url.clone()),
            state_machine_arn,
            report_bucket_name: report_bucket,
            report_prefix: REPORT_PREFIX.into(),
            work_queue_url: Some(queue_url),
            dead_letter_queue_url: Some(dlq_url),
            range_queue_url: Some(ranges_url),
            range_dead_letter_queue_url: Some(ranges_dlq_url),
            run_table_name: Some(run_table),
            endpoint_url: Some(options.moto_endpoint.clone()),
        },
        env,
        crashes,
        cancel,
    })
}

/// Where in the report bucket the functions keep each run's folder.
const REPORT_PREFIX: &str = "runs/";

fn fail(what: &str, message: String) -> SyncError {
    SyncError::Config(format!("local stack: {what}: {message}"))
}

/// The report bucket, `{name}-reports`; one a previous stack of the same
/// name left is reused.
async fn create_report_bucket(moto: &ClientSettings, name: &str) -> Result<String, SyncError> {
    let s3 = build_s3_client(moto, None).await;
    let report_bucket = format!("{name}-reports");
    if let Err(err) = s3.create_bucket().bucket(&report_bucket).send().await {
        let failure = classify(&err);
        if failure.code != "BucketAlreadyOwnedByYou" && failure.code != "BucketAlreadyExists" {
            return Err(fail("creating the report bucket", failure.message));
        }
    }
    Ok(report_bucket)
}

/// The state machine, from the real definition with the stack's function
/// and topic ARNs substituted; one a previous stack of the same name left
/// is updated to it. Returns its ARN.
async fn create_state_machine(
    moto: &ClientSettings,
    options: &LocalStackOptions,
) -> Result<String, SyncError> {
    let function_arn = |f: &str| {
        format!(
            "arn:aws:lambda:us-east-1:{ACCOUNT}:function:{}-{f}",
            options.name
        )
    };
    // Before the state machine: its first run may publish at once.
    let run_topic_arn = match &options.run_topic {
        Some(name) => create_topic(&options.moto_endpoint, name)
            .await
            .map_err(|e| fail("creating the run notification topic", e))?,
        None => String::new(),
    };
    let definition = crate::serverless::contract::STATE_MACHINE
        .replace("${PlannerFunctionArn}", &function_arn("planner"))
        .replace("${ListerFunctionArn}", &function_arn("lister"))
        .replace("${ReporterFunctionArn}", &function_arn("reporter"))
        .replace("${RunTopicArn}", &run_topic_arn);
    let sfn = build_sfn_client(moto).await;
    let machine_name = format!("{}-sync", options.name);
    match sfn
        .create_state_machine()
        .name(&machine_name)
        .definition(&definition)
        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/{}-sync", options.name))
        .send()
        .await
    {
        Ok(created) => Ok(created.state_machine_arn),
        Err(err) => {
            let failure = classify(&err);
            if failure.code != "StateMachineAlreadyExists" {
                return Err(fail("creating the state machine", failure.message));
            }
            let arn = format!("arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:{machine_name}");
            sfn.update_state_machine()
                .state_machine_arn(&arn)
                .definition(&definition)
                .send()
                .await
                .map_err(|e| fail("updating the state machine", classify(&e).message))?;
            Ok(arn)
        }
    }
}

/// The functions' environment, as the template sets it.
fn function_vars(
    options: &LocalStackOptions,
    report_bucket: &str,
    queue_url: &str,
) -> HashMap<&'static str, String> {
    let functions_endpoint = options
        .functions_endpoint
        .clone()
        .unwrap_or_else(|| options.moto_endpoint.clone());
    let or_empty = |value: Option<String>| value.unwrap_or_default();
    HashMap::from([
        ("S3_FANOUT_SOURCE", or_empty(options.source.clone())),
        (
            "S3_FANOUT_DESTINATION",
            or_empty(options.destination.clone()),
        ),
        ("S3_FANOUT_ENDPOINT_URL", functions_endpoint),
        ("S3_FANOUT_REPORT_BUCKET", report_bucket.to_owned()),
        ("S3_FANOUT_REPORT_PREFIX", REPORT_PREFIX.into()),
        ("S3_FANOUT_WORK_QUEUE_URL", queue_url.to_owned()),
        (
            "S3_FANOUT_MAX_RECEIVE_COUNT",
            options.max_receive_count.to_string(),
        ),
        ("S3_FANOUT_ALLOW_DELETE", "true".into()),
        (
            "S3_FANOUT_LISTER_MAX_KEYS",
            or_empty(options.lister_max_keys.map(|k| k.to_string())),
        ),
        (
            "S3_FANOUT_LISTER_STREAMS",
            options.lister_streams.to_string(),
        ),
        (
            "S3_FANOUT_JOURNAL_SETTLE_SECONDS",
            or_empty(options.journal_settle_secs.map(|s| s.to_string())),
        ),
        (
            "S3_FANOUT_SPLIT_OBJECT_BYTES",
            or_empty(options.split_object_bytes.map(|n| n.to_string())),
        ),
        (
            "S3_FANOUT_MAX_ATTEMPTS",
            or_empty(options.function_max_attempts.map(|n| n.to_string())),
        ),
    ])
}

/// Start the Lambda router and the event source mappings: copiers on the
/// work queue, listers on the range queue; returns the copiers' fault
/// injection.
async fn start_functions(
    options: &LocalStackOptions,
    env: &Arc<FunctionEnv>,
    (sqs, [(queue_url, queue_arn), (ranges_url, ranges_arn)]): (
        aws_sdk_sqs::Client,
        [(&str, String); 2],
    ),
    cancel: CancellationToken,
) -> Result<event_source::CopierCrashes, SyncError> {
    let listener = tokio::net::TcpListener::bind(options.router)
        .await
        .map_err(|e| fail(&format!("listening on {}", options.router), e.to_string()))?;
    tokio::spawn(router::serve(
        listener,
        env.clone(),
        options.moto_endpoint.clone(),
        cancel.clone(),
    ));
    let crashes = event_source::CopierCrashes::default();
    tokio::spawn(event_source::run(
        sqs.clone(),
        event_source::Target::Lister(env.clone()),
        event_source::EventSourceOptions {
            queue_url: ranges_url.to_owned(),
            queue_arn: ranges_arn,
            batch_size: options.lister_streams as i32,
            max_concurrency: options.listing_concurrency,
            function_timeout: options.lister_timeout,
            duplicate_deliveries: options.duplicate_deliveries,
        },
        cancel.clone(),
    ));
    tokio::spawn(event_source::run(
        sqs,
        event_source::Target::Copier {
            env: env.clone(),
            crashes: crashes.clone(),
        },
        event_source::EventSourceOptions {
            queue_url: queue_url.to_owned(),
            queue_arn,
            batch_size: options.batch_size,
            max_concurrency: options.max_concurrency,
            function_timeout: options.copier_timeout,
            duplicate_deliveries: options.duplicate_deliveries,
        },
        cancel,
    ));
    Ok(crashes)
}

/// `POST /moto-api/config {"stepfunctions": {"execute_state_machine": true}}`.
async fn enable_state_machine_execution(url: &str) -> Result<(), String> {
    post(
        url,
        &[("content-type", "application/json")],
        br#"{"stepfunctions": {"execute_state_machine": true}}"#.to_vec(),
    )
    .await
    .map(|_| ())
}

/// Create an SNS topic in moto (or find it: CreateTopic of an existing
/// name returns it) and return its ARN.
pub async fn create_topic(moto_endpoint: &str, name: &str) -> Result<String, String> {
    let answer = sns_query(moto_endpoint, &[("Action", "CreateTopic"), ("Name", name)]).await?;
    answer
        .split_once("<TopicArn>")
        .and_then(|(_, rest)| rest.split_once("</TopicArn>"))
        .map(|(arn, _)| arn.to_owned())
        .ok_or_else(|| format!("no TopicArn in moto's answer: {answer}"))
}

/// One call of SNS's query API on moto, returning its XML answer. Plain
/// HTTP: the crate has no SNS client, and needs none elsewhere (the state
/// machine publishes by itself). moto tells services apart by the
/// credential scope of the Authorization header, and takes its region
/// from there too; it checks no signature.
pub async fn sns_query(moto_endpoint: &str, params: &[(&str, &str)]) -> Result<String, String> {
    let mut body = String::from("Version=2010-03-31");
    for (name, value) in params {
        let value =
            percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC);
        body.push_str(&format!("&{name}={value}"));
    }
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential=local/20250101/{REGION}/sns/aws4_request, SignedHeaders=host, Signature=0"
    );
    post(
        &format!("{moto_endpoint}/"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", &authorization),
        ],
        body.into_bytes(),
    )
    .await
}

/// POST `body` to moto and return its answer's body, or why not.
async fn post(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Result<String, String> {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let mut request = hyper::Request::post(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("moto answered {status}: {body}"))
    }
}
