//! The Lambda side of the local stack: an HTTP server that answers Lambda
//! `Invoke` (`POST /2015-03-31/functions/{name}/invocations`) by running the
//! project's handlers, and forwards every other request to moto.
//!
//! moto's Step Functions interpreter sends its `lambda:invoke` tasks to
//! `http://localhost:$MOTO_PORT`; moto started with `MOTO_PORT` set to this
//! router's port makes the real state machine call the real handlers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_LENGTH, HOST};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::serverless::{FunctionEnv, planner, reporter};

/// Function time limits, as in `infra/template.yaml`: the handlers read
/// their deadline from the context, exactly as on Lambda.
const PLANNER_TIMEOUT: Duration = Duration::from_secs(60);
const REPORTER_TIMEOUT: Duration = Duration::from_secs(300);

struct Router {
    env: Arc<FunctionEnv>,
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    env: Arc<FunctionEnv>,
    upstream: String,
    cancel: CancellationToken,
) {
    let router = Arc::new(Router {
        env,
        upstream,
        client: Client::builder(TokioExecutor::new()).build_http(),
    });
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "router: accept failed");
                    continue;
                }
            },
        };
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let router = router.clone();
                async move { Ok::<_, Infallible>(router.handle(request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(status: u16, body: Vec<u8>, function_error: bool) -> Response<Full<Bytes>> {
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if function_error {
        response = response.header("x-amz-function-error", "Unhandled");
    }
    response
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

impl Router {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(err) => {
                return respond(
                    400,
                    format!("{{\"message\":\"{err}\"}}").into_bytes(),
                    false,
                );
            }
        };
        let path = parts.uri.path().to_owned();
        if let Some(name) = path
            .strip_prefix("/2015-03-31/functions/")
            .and_then(|rest| rest.strip_suffix("/invocations"))
        {
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            return self.invoke(function_name(&name), &body).await;
        }
        self.forward(parts, body).await
    }

    async fn invoke(&self, name: &str, payload: &[u8]) -> Response<Full<Bytes>> {
        let env = &self.env;
        tracing::debug!(function = name, "invoke");
        let result = if name.ends_with("planner") {
            call(payload, name, PLANNER_TIMEOUT, |e| planner::handle(e, env)).await
        } else if name.ends_with("reporter") {
            call(payload, name, REPORTER_TIMEOUT, |e| {
                reporter::handle(e, env)
            })
            .await
        } else {
            return respond(
                404,
                format!("{{\"Type\":\"User\",\"message\":\"Function not found: {name}\"}}")
                    .into_bytes(),
                false,
            );
        };
        match result {
            Ok(output) => respond(200, output, false),
            // Lambda answers a function error with 200 and this header; the
            // body's errorType is what Retry and Catch match.
            Err(diagnostic) => respond(
                200,
                serde_json::json!({
                    "errorType": diagnostic.error_type,
                    "errorMessage": diagnostic.error_message,
                })
                .to_string()
                .into_bytes(),
                true,
            ),
        }
    }

    async fn forward(
        &self,
        parts: hyper::http::request::Parts,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let mut builder = Request::builder()
            .method(parts.method.clone())
            .uri(format!("{}{path_and_query}", self.upstream));
        for (name, value) in &parts.headers {
            if name != HOST && name != CONTENT_LENGTH && name != CONNECTION {
                builder = builder.header(name, value);
            }
        }
        builder = builder.header(CONTENT_LENGTH, body.len());
        let Ok(request) = builder.body(Full::new(body)) else {
            return respond(
                502,
                b"{\"message\":\"router: bad request\"}".to_vec(),
                false,
            );
        };
        match self.client.request(request).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                parts.headers.remove(CONNECTION);
                parts.headers.remove(CONTENT_LENGTH);
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                Response::from_parts(parts, Full::new(body))
            }
            Err(err) => respond(
                502,
                format!("{{\"message\":\"router: moto did not answer: {err}\"}}").into_bytes(),
                false,
            ),
        }
    }
}

/// `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]` or a bare name.
fn function_name(given: &str) -> &str {
    match given.split_once(":function:") {
        Some((_, rest)) => rest.split(':').next().unwrap_or(rest),
        None => given,
    }
}

/// Run a handler on a JSON payload with a Lambda context and deadline.
async fn call<E, O, F, Fut>(
    payload: &[u8],
    function_name: &str,
    timeout: Duration,
    handler: F,
) -> Result<Vec<u8>, Diagnostic>
where
    E: DeserializeOwned,
    O: Serialize,
    F: FnOnce(LambdaEvent<E>) -> Fut,
    Fut: std::future::Future<Output = Result<O, Diagnostic>>,
{
    let event: E = serde_json::from_slice(payload).map_err(|e| Diagnostic {
        error_type: "NonRetryable".into(),
        error_message: format!("the event does not match the handler: {e}"),
    })?;
    let output = handler(LambdaEvent::new(event, context(function_name, timeout))).await?;
    Ok(serde_json::to_vec(&output).unwrap_or_else(|_| b"null".to_vec()))
}

/// A Lambda context for `function_name` whose deadline is `timeout` from
/// now. The name is what Lambda's runtime reads from
/// `AWS_LAMBDA_FUNCTION_NAME`: the functions' metrics carry it.
pub fn context(function_name: &str, timeout: Duration) -> Context {
    let mut context = Context::default();
    context.env_config = std::sync::Arc::new(lambda_runtime::Config {
        function_name: function_name.to_owned(),
        ..lambda_runtime::Config::default()
    });
    context.deadline = (SystemTime::now() + timeout)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    context.request_id = format!("local-{:x}", rand_id());
    context
}

fn rand_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_come_from_arns_or_names() {
        assert_eq!(
            function_name("arn:aws:lambda:us-east-1:123456789012:function:s3-fanout-lister"),
            "s3-fanout-lister"
        );
        assert_eq!(
            function_name("arn:aws:lambda:us-east-1:1:function:x-planner:live"),
            "x-planner"
        );
        assert_eq!(function_name("s3-fanout-reporter"), "s3-fanout-reporter");
    }
}
