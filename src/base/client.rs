//! The one place that builds AWS clients.
//!
//! Endpoint, path-style addressing, region, profile, retry mode and attempts,
//! and timeouts all come from [`ClientSettings`]; nothing else in the project
//! calls `aws_config` directly. Source and destination each get a client, so a
//! cross-region or cross-endpoint sync is two settings, not two code paths.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::retries::classifiers::{
    ClassifyRetry, RetryAction, RetryClassifierPriority,
};
use serde::{Deserialize, Serialize};

use crate::base::metrics::RequestCounter;
use crate::base::rate_limit::RateLimitedClient;

/// The SDK's retry strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RetryMode {
    /// Exponential backoff with jitter.
    Standard,
    /// Standard plus a client-side rate limiter that slows down on throttling
    /// (503 SlowDown), which is what a bulk copy against one prefix needs.
    Adaptive,
}

/// How to reach one S3 endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSettings {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    /// Path-style addressing (`http://host/bucket/key`), needed by most
    /// S3-compatible servers and by anything on an IP address.
    pub force_path_style: bool,
    pub retry_mode: RetryMode,
    /// Total attempts per request, first one included.
    pub max_attempts: u32,
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response. S3 keeps a long
    /// CopyObject alive with whitespace, so this bounds stalls, not copies.
    pub read_timeout: Duration,
    /// At most this many requests per second from this client, retries
    /// included (see [`crate::base::rate_limit`]).
    pub max_requests_per_second: Option<u32>,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            region: None,
            profile: None,
            endpoint_url: None,
            force_path_style: false,
            retry_mode: RetryMode::Adaptive,
            // The SDK default of 3 gives up within seconds of a SlowDown.
            // With 10, backoff (exponential with jitter, capped at 20 s per
            // wait) keeps a request alive through about two minutes of
            // throttling. In adaptive mode the client-side limiter adds its
            // own waits after throttling (its refill floor is 0.5 tokens/s,
            // 5 per retry), which is slow for a lone request but is what
            // lowers a whole worker pool's rate under sustained SlowDown.
            max_attempts: 10,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            max_requests_per_second: None,
        }
    }
}

/// The shared configuration every service client starts from: credentials,
/// region, endpoint, retries and timeouts.
async fn shared_config(settings: &ClientSettings) -> aws_config::SdkConfig {
    let retry = match settings.retry_mode {
        RetryMode::Standard => RetryConfig::standard(),
        RetryMode::Adaptive => RetryConfig::adaptive(),
    }
    .with_max_attempts(settings.max_attempts.max(1));
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(settings.connect_timeout)
        .read_timeout(settings.read_timeout)
        .build();

    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry)
        .timeout_config(timeouts);
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &settings.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(endpoint) = &settings.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    let shared = loader.load().await;
    if shared.region().is_none() {
        // S3-compatible servers and local emulators ignore the region, but
        // SigV4 needs one.
        return shared
            .into_builder()
            .region(aws_config::Region::new("us-east-1"))
            .build();
    }
    shared
}

/// The same client (settings, credentials, connection pool) with `counter`
/// seeing its requests too: a counter per copier invocation, where the
/// container's clients are shared by invocations that must not count each
/// other's requests.
pub fn with_counter(client: &Client, counter: &RequestCounter) -> Client {
    Client::from_conf(
        client
            .config()
            .to_builder()
            .interceptor(counter.clone())
            .build(),
    )
}

/// HTTP 429 is throttling, whatever the error code. S3 throttles with 503
/// SlowDown, which the SDK retries; several S3-compatible servers answer
/// 429 with codes the SDK does not know (`TooManyRequests`), and without
/// this a throttled listing would end the run.
#[derive(Debug)]
struct TooManyRequests;

impl ClassifyRetry for TooManyRequests {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        match ctx.response().map(|r| r.status().as_u16()) {
            Some(429) => RetryAction::throttling_error(),
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "s3_fanout::TooManyRequests"
    }

    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::http_status_code_classifier()
    }
}

/// Build an S3 client. `counter`, when given, sees every HTTP attempt.
pub async fn build_s3_client(settings: &ClientSettings, counter: Option<RequestCounter>) -> Client {
    let shared = shared_config(settings).await;
    let mut builder = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(settings.force_path_style)
        // Only compute request checksums where S3 requires them: S3-compatible
        // servers reject the newer default CRC trailers on some operations.
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
        .retry_classifier(TooManyRequests);
    if let Some(counter) = counter {
        builder = builder.interceptor(counter);
    }
    if let Some(rate) = settings.max_requests_per_second {
        // Built as the SDK builds its default client (hyper, rustls with
        // aws-lc, proxies from the environment), then wrapped.
        use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
        use aws_smithy_http_client::{ConnectorBuilder, proxy::ProxyConfig};
        let http = aws_smithy_http_client::Builder::new().build_with_connector_fn(
            |settings, components| {
                let mut connector =
                    ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::AwsLc));
                connector.set_connector_settings(settings.cloned());
                if let Some(components) = components {
                    connector.set_sleep_impl(components.sleep_impl());
                }
                connector.set_proxy_config(Some(ProxyConfig::from_env()));
                connector.build()
            },
        );
        builder = builder.http_client(RateLimitedClient::new(http, rate));
    }
    Client::from_conf(builder.build())
}

/// The SQS client of the serverless runtime (work queue, dead-letter queue).
pub async fn build_sqs_client(settings: &ClientSettings) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&shared_config(settings).await)
}

/// The DynamoDB client of the serverless runtime's run counters.
pub async fn build_dynamodb_client(settings: &ClientSettings) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&shared_config(settings).await)
}

/// The Step Functions client of `s3-fanout run`, `status` and `report`.
#[cfg(feature = "control")]
pub async fn build_sfn_client(settings: &ClientSettings) -> aws_sdk_sfn::Client {
    aws_sdk_sfn::Client::new(&shared_config(settings).await)
}

/// The CloudFormation client that reads a deployed stack's outputs.
#[cfg(feature = "control")]
pub async fn build_cloudformation_client(
    settings: &ClientSettings,
) -> aws_sdk_cloudformation::Client {
    aws_sdk_cloudformation::Client::new(&shared_config(settings).await)
}
