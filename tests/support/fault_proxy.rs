//! A fault-injecting HTTP proxy on loopback, between the CLI (or the
//! functions of the local stack, for S3 and SQS) and moto.
//!
//! moto answers every request promptly and correctly. Real S3 does not: it
//! throttles (503 SlowDown), answers some copies `200 OK` with an `<Error>`
//! body, refuses archived and SSE-C sources, and honours
//! `x-amz-copy-source-if-match`, which moto ignores. The proxy forwards every
//! request to moto unchanged, except those that match a [`Rule`], and records
//! every request so a test can count attempts per operation and key.
//!
//! ```ignore
//! let proxy = FaultProxy::start(&moto().endpoint);
//! proxy.add_rule(Rule::on(Op::CopyObject).key("k").times(3).respond(503, SLOW_DOWN_XML));
//! // run the CLI with `--endpoint-url proxy.endpoint()`
//! assert_eq!(proxy.count(Op::CopyObject, "k"), 4);
//! ```
//!
//! Besides rules there are two switches that make moto behave like S3:
//! [`FaultProxy::enforce_copy_source_if_match`] and
//! [`FaultProxy::rewrite_source_before_first_copy`] (the source changing
//! between the listing and the copy, at a moment a test controls). Three
//! more give moto S3 semantics it lacks, all off by default: SSE-KMS ETags
//! ([`FaultProxy::kms_etags`]) and S3's additional checksums
//! ([`FaultProxy::s3_checksums`], [`FaultProxy::no_default_checksums`]);
//! see [`s3_semantics`].
//!
//! One S3 behaviour is always emulated: a DeleteObjects whose objects carry
//! an `ETag` deletes each only if it still has that ETag (S3's conditional
//! deletes). moto 5.1.22 honours `If-Match` on DeleteObject but ignores the
//! per-object ETag of DeleteObjects, so the proxy carries such a request out
//! itself, one conditional DeleteObject per object at moto, and answers as
//! S3 does (see [`delete_objects_conditionally`]).
//!
//! The proxy runs on a thread and Tokio runtime of its own: tests block on
//! the CLI (`run_cli`), and that must not stall the proxy the CLI talks to.
//! It only listens on and connects to 127.0.0.1. Requests are read whole
//! (the CLI sends no large bodies: copies are server-side); responses are
//! streamed back. moto does not check signatures, so the `Host` header is
//! rewritten to moto's address without re-signing.
//!
//! A failure of the proxy itself (moto refusing the proxy's own HEAD or PUT)
//! must not become a dropped connection that the SDK retries, which would
//! hide that the fault was never injected: it is recorded instead, and
//! [`FaultProxy::assert_no_errors`] fails the test.

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{
    AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, ETAG, HOST, HeaderName,
};
use hyper::http::request::Parts;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use percent_encoding::{percent_decode_str, utf8_percent_encode};

// A child module, so that it sees the proxy's internals and comes along
// wherever this file is mounted (examples/soak.rs takes it by path).
#[path = "s3_semantics.rs"]
mod s3_semantics;
use s3_semantics::Semantics;

/// S3's throttling answer, sent with status 503.
pub const SLOW_DOWN_XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>FAULTPROXY</RequestId><HostId>fault-proxy</HostId></Error>";

/// The body S3 sends with `200 OK` when a CopyObject, UploadPartCopy or
/// CompleteMultipartUpload fails after the status line has gone out.
pub const INTERNAL_ERROR_XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message><RequestId>FAULTPROXY</RequestId><HostId>fault-proxy</HostId></Error>";

/// A copy of an object in Glacier Flexible Retrieval or Deep Archive that
/// has not been restored, sent with status 403.
pub const INVALID_OBJECT_STATE_XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidObjectState</Code><Message>The operation is not valid for the object's storage class</Message><StorageClass>GLACIER</StorageClass><RequestId>FAULTPROXY</RequestId><HostId>fault-proxy</HostId></Error>";

/// A copy of an SSE-C object without the customer key, sent with status 400.
/// The message is S3's own, word for word.
pub const SSE_C_XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidRequest</Code><Message>The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.</Message><RequestId>FAULTPROXY</RequestId><HostId>fault-proxy</HostId></Error>";

/// What S3-compatible servers (and S3 for some request-rate limits) send
/// with status 429.
pub const TOO_MANY_REQUESTS_XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>TooManyRequests</Code><Message>Please reduce your request rate.</Message><RequestId>FAULTPROXY</RequestId><HostId>fault-proxy</HostId></Error>";

/// SQS's (JSON protocol) answer to a request it failed, sent with 500.
pub const DYNAMODB_INTERNAL_ERROR_JSON: &str = "{\"__type\":\"com.amazonaws.dynamodb.v20120810#InternalServerError\",\"message\":\"Internal server error\"}";
pub const SQS_INTERNAL_ERROR_JSON: &str = "{\"__type\":\"com.amazonaws.sqs#InternalError\",\"message\":\"We encountered an internal error. Please try again.\"}";

/// S3's answer, with 404, to a part copy or completion of an upload that
/// was aborted or is already complete.
pub const NO_SUCH_UPLOAD_XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.</Message><RequestId>FAULTPROXY</RequestId><HostId>fault-proxy</HostId></Error>";

/// What an S3-compatible server without a feature (conditional deletes,
/// say) answers, with status 501.
pub const NOT_IMPLEMENTED_XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NotImplemented</Code><Message>A header you provided implies functionality that is not implemented</Message><RequestId>FAULTPROXY</RequestId><HostId>fault-proxy</HostId></Error>";

/// Sent with status 403.
pub const ACCESS_DENIED_XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message><RequestId>FAULTPROXY</RequestId><HostId>fault-proxy</HostId></Error>";

/// What [`FaultProxy::enforce_copy_source_if_match`] answers, with 412.
const PRECONDITION_FAILED_XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message><Condition>x-amz-copy-source-If-Match</Condition><RequestId>FAULTPROXY</RequestId><HostId>fault-proxy</HostId></Error>";

/// For the proxy's own requests to moto. moto does not verify signatures,
/// but treats a request with no `Authorization` at all as anonymous and
/// refuses it on a private object.
const DUMMY_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";

const COPY_SOURCE: HeaderName = HeaderName::from_static("x-amz-copy-source");
const COPY_SOURCE_IF_MATCH: HeaderName = HeaderName::from_static("x-amz-copy-source-if-match");

/// An S3 operation, as told from method, path, query and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    ListBuckets,
    CreateBucket,
    HeadBucket,
    ListObjectsV2,
    ListMultipartUploads,
    HeadObject,
    GetObject,
    GetObjectTagging,
    PutObject,
    PutObjectTagging,
    DeleteObject,
    /// POST `?delete` on a bucket.
    DeleteObjects,
    /// PUT with `x-amz-copy-source` and no `partNumber`.
    CopyObject,
    /// PUT with `partNumber` and a body.
    UploadPart,
    /// PUT with `x-amz-copy-source` and `partNumber`.
    UploadPartCopy,
    /// POST `?uploads`.
    CreateMultipartUpload,
    /// POST `?uploadId=`.
    CompleteMultipartUpload,
    /// DELETE `?uploadId=`.
    AbortMultipartUpload,
    /// GET `?uploadId=` on a key.
    ListParts,
    /// SQS (JSON protocol, told by `X-Amz-Target: AmazonSQS.<Action>`).
    SendMessage,
    SendMessageBatch,
    ReceiveMessage,
    DeleteMessage,
    DeleteMessageBatch,
    ChangeMessageVisibility,
    GetQueueAttributes,
    Other,
}

/// One request the proxy received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub op: Op,
    pub method: String,
    pub bucket: String,
    /// The object key, percent-decoded; `None` for bucket-level requests.
    pub key: Option<String>,
    /// The path as sent (still percent-encoded).
    pub path: String,
    /// The raw query string.
    pub query: String,
    pub part_number: Option<u32>,
    /// `x-amz-copy-source` as sent.
    pub copy_source: Option<String>,
    pub copy_source_if_match: Option<String>,
    /// `x-amz-expected-bucket-owner` and `x-amz-source-expected-bucket-owner`.
    pub expected_owner: Option<String>,
    pub expected_source_owner: Option<String>,
    /// Whether `x-amz-request-payer: requester` was sent.
    pub request_payer: bool,
    /// Names of ACL headers sent (`x-amz-acl`, `x-amz-grant-*`), which a
    /// bucket with BucketOwnerEnforced refuses.
    pub acl_headers: Vec<String>,
    /// The checksum a write carried: its `x-amz-checksum-*` header, or the
    /// one its `x-amz-trailer` names (sent after an `aws-chunked` body).
    pub checksum: Option<String>,
    /// Whether that checksum came in the trailer.
    pub trailer: bool,
    /// `x-amz-target` of a JSON-protocol call (not S3's): the service and
    /// operation, `DynamoDB_20120810.Query`, `AmazonSQS.SendMessageBatch`.
    pub target: Option<String>,
    /// The status answered (by moto or the proxy); `None` while in flight.
    pub status: Option<u16>,
    /// Whether the proxy answered itself instead of moto.
    pub injected: bool,
    /// When it arrived (milliseconds since the epoch), before any delay a
    /// rule adds: when its sender sent it.
    pub at_ms: i64,
}

/// What a matching [`Rule`] does.
#[derive(Debug, Clone)]
enum Fault {
    /// Answer with this status and body instead of forwarding.
    Respond { status: u16, body: String },
    /// Wait, then forward.
    Delay(Duration),
    /// Forward, then cut the connection half-way through the response: the
    /// server has acted (a copy is made), the client never learns it.
    Reset,
    /// Flip one bit of the bytes in flight: of the request body when it has
    /// one (an upload), else of the answer's (a GET).
    Corrupt,
}

/// A seeded pseudo-random draw per matching request, so a "10% of
/// requests" fault hits the same requests in the same order on every run
/// with the same traffic.
#[derive(Debug, Clone)]
struct Sample {
    fraction: f64,
    state: u64,
}

impl Sample {
    fn hit(&mut self) -> bool {
        let draw = splitmix64(&mut self.state) >> 11;
        (draw as f64) < self.fraction * (1u64 << 53) as f64
    }
}

/// The next value of a splitmix64 sequence: fast, tiny and good enough for
/// test data and fault draws, where reproducibility is what matters.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fault for requests of one operation (or any, see [`Rule::any`]),
/// optionally narrowed to one key (the key in the request path: for a copy,
/// the *destination* key), bucket, query and part number. Applies to every
/// matching request unless limited with [`RuleBuilder::times`] or thinned
/// with [`RuleBuilder::fraction`].
#[derive(Debug, Clone)]
pub struct Rule {
    /// `None`: any operation.
    op: Option<Op>,
    key: Option<String>,
    bucket: Option<String>,
    query: Option<String>,
    part: Option<u32>,
    /// `x-amz-target` of a JSON-protocol call (DynamoDB's, say).
    target: Option<String>,
    /// `None`: forever.
    remaining: Option<u32>,
    /// Matching requests still to let through before the rule applies.
    skip: u32,
    sample: Option<Sample>,
    fault: Fault,
}

/// A [`Rule`] being described; `respond` or `delay` finish it, so a rule
/// without a fault cannot exist.
#[derive(Debug, Clone)]
#[must_use = "finish the rule with .respond(..) or .delay(..)"]
pub struct RuleBuilder {
    op: Option<Op>,
    key: Option<String>,
    bucket: Option<String>,
    query: Option<String>,
    part: Option<u32>,
    target: Option<String>,
    remaining: Option<u32>,
    skip: u32,
    sample: Option<Sample>,
}

impl Rule {
    pub fn on(op: Op) -> RuleBuilder {
        Self::builder(Some(op))
    }

    /// A rule for every operation (narrow it with `bucket`, `fraction`...).
    pub fn any() -> RuleBuilder {
        Self::builder(None)
    }

    fn builder(op: Option<Op>) -> RuleBuilder {
        RuleBuilder {
            op,
            key: None,
            bucket: None,
            query: None,
            part: None,
            target: None,
            remaining: None,
            skip: 0,
            sample: None,
        }
    }

    /// Whether the rule is for this request, before any random draw.
    fn matches(&self, request: &Recorded) -> bool {
        self.op.is_none_or(|op| op == request.op)
            && self.remaining != Some(0)
            && self
                .key
                .as_ref()
                .is_none_or(|k| request.key.as_ref() == Some(k))
            && self.bucket.as_ref().is_none_or(|b| &request.bucket == b)
            && self
                .query
                .as_ref()
                .is_none_or(|q| request.query.contains(q.as_str()))
            && self.part.is_none_or(|p| request.part_number == Some(p))
            && self
                .target
                .as_ref()
                .is_none_or(|t| request.target.as_ref() == Some(t))
    }
}

impl RuleBuilder {
    /// Only requests for this object key (decoded, relative to the bucket).
    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }

    /// Only JSON-protocol calls with this `x-amz-target`
    /// (`DynamoDB_20120810.BatchGetItem`); use with [`Rule::any`].
    pub fn target(mut self, target: &str) -> Self {
        self.target = Some(target.to_owned());
        self
    }

    /// Only requests to this bucket (for bucket-level operations such as
    /// listings, where there is no key to match).
    pub fn bucket(mut self, bucket: &str) -> Self {
        self.bucket = Some(bucket.to_owned());
        self
    }

    /// Only requests whose raw query string contains `fragment`
    /// (`continuation-token=` picks the second and later listing pages).
    pub fn query_contains(mut self, fragment: &str) -> Self {
        self.query = Some(fragment.to_owned());
        self
    }

    /// Only this part number (UploadPart, UploadPartCopy).
    pub fn part(mut self, part_number: u32) -> Self {
        self.part = Some(part_number);
        self
    }

    /// Let the first `n` matching requests through untouched; the rule
    /// applies from the next one (the second checkpoint, not the first).
    pub fn skip(mut self, n: u32) -> Self {
        self.skip = n;
        self
    }

    /// Apply to the first `n` matching requests only; later ones are
    /// forwarded.
    pub fn times(mut self, n: u32) -> Self {
        self.remaining = Some(n);
        self
    }

    /// Apply to about `fraction` (0.0 to 1.0) of the matching requests,
    /// drawn from a sequence seeded with `seed`. A request the draw spares
    /// goes on to the next rule.
    pub fn fraction(mut self, fraction: f64, seed: u64) -> Self {
        self.sample = Some(Sample {
            fraction,
            state: seed,
        });
        self
    }

    /// Answer `status` with an XML `body` instead of forwarding.
    pub fn respond(self, status: u16, body: &str) -> Rule {
        self.finish(Fault::Respond {
            status,
            body: body.to_owned(),
        })
    }

    /// Forward after waiting `delay`. Delays add up and do not stop the
    /// search: a request can be slowed by one rule and failed by another
    /// (latency on everything, plus faults on some).
    pub fn delay(self, delay: Duration) -> Rule {
        self.finish(Fault::Delay(delay))
    }

    /// Forward, then send the status line, the headers and half the body,
    /// and close the connection (or close it without any answer when the
    /// response has no body): the server did the work, the client sees a
    /// broken connection and must retry something that already happened.
    pub fn reset(self) -> Rule {
        self.finish(Fault::Reset)
    }

    /// Forward with one bit of the body flipped in the middle: an upload's
    /// on its way to the server, or, for a request without a body, the
    /// answer's on its way back. What only a checksum can catch: lengths
    /// and headers are untouched.
    pub fn corrupt(self) -> Rule {
        self.finish(Fault::Corrupt)
    }

    fn finish(self, fault: Fault) -> Rule {
        Rule {
            op: self.op,
            key: self.key,
            bucket: self.bucket,
            query: self.query,
            part: self.part,
            target: self.target,
            remaining: self.remaining,
            skip: self.skip,
            sample: self.sample,
            fault,
        }
    }
}

/// A one-shot change to a source object, see
/// [`FaultProxy::rewrite_source_before_first_copy`].
#[derive(Debug)]
struct SourceRewrite {
    key: String,
    body: Vec<u8>,
    done: bool,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    /// Buckets whose names start with the first of a pair answered by the
    /// second, another loopback server (the synthetic endpoint): moto
    /// behind, for the stack's own buckets and other services.
    routes: Vec<(String, String)>,
    enforce_if_match: bool,
    /// Buckets that answer as requester-pays buckets do.
    requester_pays: Vec<String>,
    rewrites: Vec<SourceRewrite>,
    /// Keys whose first part copy reads one byte further on.
    shifted_part_copies: Vec<String>,
    log: Vec<Recorded>,
    in_flight: usize,
    /// The most requests in flight at once since the log was last cleared.
    peak_in_flight: usize,
    /// The proxy's own failures.
    errors: Vec<String>,
}

/// What the proxy shares between connections.
struct Shared {
    /// `http://127.0.0.1:PORT` of moto.
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    state: Arc<Mutex<State>>,
    /// The S3 behaviour emulated on top of moto, see [`s3_semantics`].
    semantics: Arc<Semantics>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// A running proxy; stopped when dropped.
pub struct FaultProxy {
    endpoint: String,
    state: Arc<Mutex<State>>,
    semantics: Arc<Semantics>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Start a proxy on a free loopback port in front of `upstream`
    /// (`http://127.0.0.1:PORT`, moto's endpoint).
    pub fn start(upstream: &str) -> Self {
        // The tests must never send traffic off this machine.
        assert!(
            upstream.starts_with("http://127.0.0.1:"),
            "the proxy only forwards to loopback, not {upstream}"
        );
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .expect("bind a loopback port for the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let endpoint = format!("http://{}", listener.local_addr().expect("proxy address"));
        let state = Arc::new(Mutex::new(State::default()));
        let (shutdown, stop) = tokio::sync::oneshot::channel();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let shared_state = state.clone();
        let semantics = Arc::new(Semantics::default());
        let shared_semantics = semantics.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                runtime.block_on(async move {
                    let shared = Arc::new(Shared {
                        upstream,
                        client: Client::builder(TokioExecutor::new()).build_http(),
                        state: shared_state,
                        semantics: shared_semantics,
                    });
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    serve(listener, shared, stop).await;
                });
                // Dropping the runtime here cancels connections still open.
            })
            .expect("spawn the proxy thread");
        FaultProxy {
            endpoint,
            state,
            semantics,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, for `--endpoint-url`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("proxy state poisoned")
    }

    /// Add a rule. When several match a request, the first added applies.
    pub fn add_rule(&self, rule: Rule) {
        self.state().rules.push(rule);
    }

    /// Fail requests to `bucket` at random, as a bad day of S3 does: 10%
    /// answered 503 SlowDown, and 5% forwarded and then cut off mid-answer.
    /// The draws come from `seed`, so a run with the same traffic meets the
    /// same faults.
    pub fn add_random_faults(&self, bucket: &str, seed: u64) {
        self.add_rule(
            Rule::any()
                .bucket(bucket)
                .fraction(0.10, seed)
                .respond(503, SLOW_DOWN_XML),
        );
        self.add_rule(Rule::any().bucket(bucket).fraction(0.05, !seed).reset());
    }

    /// Remove the rules for JSON-protocol calls with this `x-amz-target`.
    pub fn remove_target_rules(&self, target: &str) {
        self.state()
            .rules
            .retain(|rule| rule.target.as_deref() != Some(target));
    }

    /// Remove every rule: from now on everything is forwarded (the switches
    /// below stay as they are).
    pub fn clear_rules(&self) {
        self.state().rules.clear();
    }

    /// Make CopyObject and UploadPartCopy honour `x-amz-copy-source-if-match`
    /// as S3 does: the proxy HEADs the source at moto and answers 412
    /// `PreconditionFailed` when its ETag is not the one asked for.
    /// Make `bucket` a requester-pays bucket, as S3 has them and moto does
    /// not: a request to it without `x-amz-request-payer: requester` is
    /// refused with 403 AccessDenied ("Requester Pays buckets": "If the
    /// requester doesn't include the parameter x-amz-request-payer ... the
    /// request fails with 403 Forbidden",
    /// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/RequesterPaysBuckets.html>;
    /// "Downloading objects in Requester Pays buckets",
    /// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/ObjectsinRequesterPaysBuckets.html>).
    pub fn requester_pays(&self, bucket: &str) {
        self.state().requester_pays.push(bucket.to_owned());
    }

    pub fn enforce_copy_source_if_match(&self) {
        self.state().enforce_if_match = true;
    }

    /// Just before forwarding the first CopyObject whose *source* key is
    /// `key`, overwrite that source object at moto with `body`: the source
    /// changes between the listing and the copy, deterministically.
    pub fn rewrite_source_before_first_copy(&self, key: &str, body: Vec<u8>) {
        self.state().rewrites.push(SourceRewrite {
            key: key.to_owned(),
            body,
            done: false,
        });
    }

    /// Objects in `bucket` answer with SSE-KMS ETags, which are not the MD5
    /// of their bytes, and conditions naming them are judged as S3 does;
    /// see [`s3_semantics`].
    pub fn kms_etags(&self, bucket: &str) {
        self.semantics.kms_etags(bucket);
    }

    /// S3's additional checksums, for every bucket: verified on upload,
    /// kept by copies, returned in checksum mode; see [`s3_semantics`].
    pub fn s3_checksums(&self) {
        self.semantics.s3_checksums();
    }

    /// Objects in `bucket` that got no explicit checksum have none, as
    /// objects written before S3 began adding CRC64NVME by default (December
    /// 2024). Implies nothing else: it matters only with
    /// [`FaultProxy::s3_checksums`].
    pub fn no_default_checksums(&self, bucket: &str) {
        self.semantics.no_default_checksums(bucket);
    }

    /// Answer a write whose checksum comes in the trailer of an
    /// `aws-chunked` body with 501 NotImplemented, as S3-compatible servers
    /// without trailer support do (each in its own words; see
    /// `checksum_refusal.rs`).
    pub fn refuse_trailers(&self) {
        self.semantics.refuse_trailers();
    }

    /// Make the first UploadPartCopy (part 1) of `key` copy its range one
    /// byte further on: a part of the right size with the wrong bytes, as
    /// a bug or bad hardware would make it. Only a full-object checksum
    /// handed to CompleteMultipartUpload can catch that.
    pub fn shift_first_part_copy(&self, key: &str) {
        self.state().shifted_part_copies.push(key.to_owned());
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().log.clone()
    }

    /// Send requests for buckets named `prefix…` to `upstream` (loopback)
    /// instead of moto: listings of millions of keys from the synthetic
    /// endpoint, with the stack's own state in moto.
    pub fn route_buckets(&self, prefix: &str, upstream: &str) {
        assert!(
            upstream.starts_with("http://127.0.0.1:"),
            "the proxy only forwards to loopback, not {upstream}"
        );
        let upstream = upstream.trim_end_matches('/').to_owned();
        self.state().routes.push((prefix.to_owned(), upstream));
    }

    /// Forget the requests recorded so far (before a re-run, say), and
    /// the peak of requests in flight.
    pub fn clear_log(&self) {
        let mut state = self.state();
        state.log.clear();
        state.peak_in_flight = state.in_flight;
    }

    /// The most requests that were in flight at once since the proxy
    /// started or its log was last cleared.
    pub fn peak_in_flight(&self) -> usize {
        self.state().peak_in_flight
    }

    /// Requests of `op` for object `key`.
    pub fn count(&self, op: Op, key: &str) -> usize {
        self.state()
            .log
            .iter()
            .filter(|r| r.op == op && r.key.as_deref() == Some(key))
            .count()
    }

    /// Requests of `op`, any key.
    pub fn count_op(&self, op: Op) -> usize {
        self.state().log.iter().filter(|r| r.op == op).count()
    }

    /// Requests the proxy answered itself, cut short, or failed a
    /// precondition on: the faults injected so far.
    pub fn faults_injected(&self) -> usize {
        self.state().log.iter().filter(|r| r.injected).count()
    }

    /// Panic if the proxy failed at something of its own (a rewrite or an
    /// if-match check that moto refused): the fault was then not injected.
    pub fn assert_no_errors(&self) {
        let errors = self.state().errors.clone();
        assert!(errors.is_empty(), "the fault proxy failed: {errors:#?}");
    }

    /// Block until at least `n` requests of `op` have arrived; false on timeout.
    pub fn wait_for(&self, op: Op, n: usize, timeout: Duration) -> bool {
        poll_until(timeout, || self.count_op(op) >= n)
    }

    /// Block until no request is being handled: every delayed request has
    /// been forwarded and answered, even if its client is gone; false on
    /// timeout.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        poll_until(timeout, || self.state().in_flight == 0)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        let stream = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, shared.clone()));
            // Keep-alive is hyper's default; a client hanging up is no error here.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Marks a request as finished, with the status it got, when dropped: on
/// every way out of [`process`], a panic included.
struct InFlight {
    state: Arc<Mutex<State>>,
    index: usize,
    status: Option<u16>,
    injected: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.state.lock().expect("proxy state poisoned");
        state.in_flight -= 1;
        // The log may have been cleared meanwhile.
        if let Some(entry) = state.log.get_mut(self.index) {
            entry.status = self.status;
            entry.injected = self.injected;
        }
    }
}

/// What to do with one request, decided under the lock: the delays of the
/// matching rules, then the first matching fault, else the one-shot rewrite
/// and the if-match check.
struct Plan {
    delay: Duration,
    action: Action,
}

enum Action {
    Respond {
        status: u16,
        body: String,
    },
    Reset,
    Corrupt,
    Forward {
        rewrite: Option<Vec<u8>>,
        check_if_match: bool,
        /// A DeleteObjects, whose per-object ETags the proxy enforces.
        conditional_deletes: bool,
    },
}

/// Returned to hyper to make it close the connection without an answer.
#[derive(Debug)]
struct Hangup;

impl std::fmt::Display for Hangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fault proxy: connection reset on purpose")
    }
}

impl std::error::Error for Hangup {}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<ProxyBody>, Hangup> {
    // A task of its own, so a request is carried through to moto even when
    // the client hangs up (hyper then drops this future): S3 too completes a
    // copy whose client stopped waiting, and `wait_idle` can only promise
    // that moto has seen everything if nothing is cut off half-way.
    let task = tokio::spawn(process(request, shared.clone()));
    match task.await {
        Ok(answer) => answer,
        Err(e) => {
            let why = format!("handling a request: {e}");
            shared.record_error(why.clone());
            Ok(canned(502, &why))
        }
    }
}

async fn process(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<ProxyBody>, Hangup> {
    let (mut parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Ok(canned(
                502,
                &format!("fault proxy: reading the request: {e}"),
            ));
        }
    };
    let recorded = describe(&parts);
    shift_part_copy(&shared, &recorded, &mut parts);

    let (plan, mut guard) = {
        let mut state = shared.state.lock().expect("proxy state poisoned");
        let plan = plan(&mut state, &recorded);
        state.log.push(recorded.clone());
        state.in_flight += 1;
        state.peak_in_flight = state.peak_in_flight.max(state.in_flight);
        let guard = InFlight {
            state: shared.state.clone(),
            index: state.log.len() - 1,
            status: None,
            injected: false,
        };
        (plan, guard)
    };

    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    let response = match plan.action {
        Action::Respond { status, body } => {
            guard.injected = true;
            canned(status, &body)
        }
        Action::Reset => {
            guard.injected = true;
            let (response, _) =
                s3_semantics::exchange(&shared, &recorded, parts, body, async |parts, body, _| {
                    (forward(&shared, parts, body).await, false)
                })
                .await;
            guard.status = Some(response.status().as_u16());
            return cut_short(response).await;
        }
        Action::Corrupt => {
            guard.injected = true;
            let upload = !body.is_empty();
            let body = if upload { flip_a_bit(body) } else { body };
            let (response, _) =
                s3_semantics::exchange(&shared, &recorded, parts, body, async |parts, body, _| {
                    (forward(&shared, parts, body).await, false)
                })
                .await;
            if upload {
                response
            } else {
                let (parts, body) = response.into_parts();
                let bytes = match body.collect().await {
                    Ok(collected) => flip_a_bit(collected.to_bytes()),
                    Err(e) => return Ok(canned(502, &format!("fault proxy: {e}"))),
                };
                Response::from_parts(
                    parts,
                    Full::new(bytes).map_err(|never| match never {}).boxed(),
                )
            }
        }
        Action::Forward {
            rewrite,
            check_if_match,
            conditional_deletes,
        } => {
            if let (Some(new_body), Some(source)) = (rewrite, recorded.copy_source.as_deref())
                && let Err(why) = overwrite_source(&shared, source, new_body).await
            {
                shared.record_error(why);
            }
            // `judged`: the emulated S3 semantics have already held the
            // copy to its `x-amz-copy-source-if-match` (a KMS ETag).
            let (response, injected) = s3_semantics::exchange(
                &shared,
                &recorded,
                parts,
                body,
                async |parts, body, judged| {
                    if conditional_deletes && has_etag_element(&body) {
                        let (response, refused) =
                            delete_objects_conditionally(&shared, &recorded, &body)
                                .await
                                .unwrap_or_else(|why| {
                                    shared.record_error(why.clone());
                                    (canned(502, &why), false)
                                });
                        // moto alone would have deleted what the proxy kept.
                        return (response, refused);
                    }
                    let precondition_failed = check_if_match
                        && !judged
                        && if_match_fails(&shared, &recorded)
                            .await
                            .unwrap_or_else(|why| {
                                shared.record_error(why);
                                false
                            });
                    if precondition_failed {
                        (canned(412, PRECONDITION_FAILED_XML), true)
                    } else {
                        (forward(&shared, parts, body).await, false)
                    }
                },
            )
            .await;
            guard.injected = injected;
            response
        }
    };
    guard.status = Some(response.status().as_u16());
    Ok(response)
}

/// `bytes` with the lowest bit of its middle byte flipped.
fn flip_a_bit(bytes: Bytes) -> Bytes {
    let mut bytes = bytes.to_vec();
    let at = bytes.len() / 2;
    if let Some(middle) = bytes.get_mut(at) {
        *middle ^= 1;
    }
    Bytes::from(bytes)
}

/// Shift the copy-source range of a part copy [`FaultProxy::shift_first_part_copy`] named.
fn shift_part_copy(shared: &Shared, recorded: &Recorded, parts: &mut Parts) {
    if recorded.op != Op::UploadPartCopy || recorded.part_number != Some(1) {
        return;
    }
    let Some(key) = recorded.key.as_deref() else {
        return;
    };
    {
        let mut state = shared.state.lock().expect("proxy state poisoned");
        let Some(at) = state.shifted_part_copies.iter().position(|k| k == key) else {
            return;
        };
        state.shifted_part_copies.remove(at);
    }
    let range = HeaderName::from_static("x-amz-copy-source-range");
    let shifted = parts
        .headers
        .get(&range)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()? + 1, b.parse::<u64>().ok()? + 1)));
    match shifted {
        Some((start, end)) => {
            let value = format!("bytes={start}-{end}");
            parts
                .headers
                .insert(range, value.parse().expect("a header value"));
        }
        None => shared.record_error(format!("no range to shift in the part copy of {key}")),
    }
}

/// The response's head and the first half of its body, then a broken
/// connection; a response with no body is not answered at all. The
/// `Content-Length` still promises the whole body, so the client cannot
/// take the half for the whole.
async fn cut_short(response: Response<ProxyBody>) -> Result<Response<ProxyBody>, Hangup> {
    let (parts, body) = response.into_parts();
    let Ok(collected) = body.collect().await else {
        return Err(Hangup);
    };
    let whole = collected.to_bytes();
    if whole.is_empty() {
        return Err(Hangup);
    }
    let half = whole.slice(..whole.len() / 2);
    let frames = futures::stream::iter([
        Ok(hyper::body::Frame::data(half)),
        Err(Box::new(Hangup) as BoxError),
    ]);
    Ok(Response::from_parts(
        parts,
        http_body_util::StreamBody::new(frames).boxed(),
    ))
}

fn plan(state: &mut State, request: &Recorded) -> Plan {
    let mut delay = Duration::ZERO;
    if !request.request_payer && state.requester_pays.contains(&request.bucket) {
        return Plan {
            delay,
            action: Action::Respond {
                status: 403,
                body: ACCESS_DENIED_XML.to_owned(),
            },
        };
    }
    for rule in state.rules.iter_mut() {
        if !rule.matches(request) || rule.sample.as_mut().is_some_and(|s| !s.hit()) {
            continue;
        }
        if rule.skip > 0 {
            rule.skip -= 1;
            continue;
        }
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
        }
        let action = match &rule.fault {
            Fault::Delay(d) => {
                delay += *d;
                continue;
            }
            Fault::Respond { status, body } => Action::Respond {
                status: *status,
                body: body.clone(),
            },
            Fault::Reset => Action::Reset,
            Fault::Corrupt => Action::Corrupt,
        };
        return Plan { delay, action };
    }
    // Only a copy that goes on to moto uses up the one-shot rewrite.
    let rewrite = match (
        request.op,
        request.copy_source.as_deref().map(copy_source_key),
    ) {
        (Op::CopyObject, Some(source_key)) => state
            .rewrites
            .iter_mut()
            .find(|r| !r.done && r.key == source_key)
            .map(|r| {
                r.done = true;
                r.body.clone()
            }),
        _ => None,
    };
    let check_if_match = state.enforce_if_match
        && matches!(request.op, Op::CopyObject | Op::UploadPartCopy)
        && request.copy_source_if_match.is_some();
    Plan {
        delay,
        action: Action::Forward {
            rewrite,
            check_if_match,
            conditional_deletes: request.op == Op::DeleteObjects,
        },
    }
}

/// Record what a request is: operation, bucket, key and the headers tests ask about.
fn describe(parts: &Parts) -> Recorded {
    let path = parts
        .uri
        .path()
        .strip_prefix('/')
        .unwrap_or(parts.uri.path());
    // Path-style: the first segment is the bucket, the rest the encoded key
    // (which may itself start with `/` or contain `//`).
    let (bucket, key) = match path.split_once('/') {
        Some((bucket, key)) if !key.is_empty() => (bucket, Some(decode(key))),
        Some((bucket, _)) => (bucket, None),
        None => (path, None),
    };
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            (decode(name), decode(value))
        })
        .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let header = |name: &HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let copy_source = header(&COPY_SOURCE);

    let has = |name: &str| param(name).is_some();
    let copy = copy_source.is_some();
    let sqs_action = header(&HeaderName::from_static("x-amz-target"))
        .and_then(|t| t.strip_prefix("AmazonSQS.").map(str::to_owned));
    let op = match (parts.method.as_str(), key.is_some()) {
        _ if sqs_action.is_some() => match sqs_action.as_deref().unwrap_or_default() {
            "SendMessage" => Op::SendMessage,
            "SendMessageBatch" => Op::SendMessageBatch,
            "ReceiveMessage" => Op::ReceiveMessage,
            "DeleteMessage" => Op::DeleteMessage,
            "DeleteMessageBatch" => Op::DeleteMessageBatch,
            "ChangeMessageVisibility" => Op::ChangeMessageVisibility,
            "GetQueueAttributes" => Op::GetQueueAttributes,
            _ => Op::Other,
        },
        ("GET", false) if bucket.is_empty() => Op::ListBuckets,
        ("GET", false) if has("list-type") => Op::ListObjectsV2,
        ("GET", false) if has("uploads") => Op::ListMultipartUploads,
        ("HEAD", false) => Op::HeadBucket,
        ("PUT", false) => Op::CreateBucket,
        ("POST", false) if has("delete") => Op::DeleteObjects,
        ("PUT", true) if copy && has("partNumber") => Op::UploadPartCopy,
        ("PUT", true) if copy => Op::CopyObject,
        ("PUT", true) if has("partNumber") => Op::UploadPart,
        ("PUT", true) if has("tagging") => Op::PutObjectTagging,
        ("PUT", true) => Op::PutObject,
        ("POST", true) if has("uploads") => Op::CreateMultipartUpload,
        ("POST", true) if has("uploadId") => Op::CompleteMultipartUpload,
        ("DELETE", true) if has("uploadId") => Op::AbortMultipartUpload,
        ("DELETE", true) => Op::DeleteObject,
        ("GET", true) if has("tagging") => Op::GetObjectTagging,
        ("GET", true) if has("uploadId") => Op::ListParts,
        ("GET", true) => Op::GetObject,
        ("HEAD", true) => Op::HeadObject,
        _ => Op::Other,
    };
    Recorded {
        op,
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        method: parts.method.to_string(),
        bucket: decode(bucket),
        key,
        part_number: param("partNumber").and_then(|n| n.parse().ok()),
        path: parts.uri.path().to_owned(),
        query,
        copy_source,
        copy_source_if_match: header(&COPY_SOURCE_IF_MATCH),
        expected_owner: header(&HeaderName::from_static("x-amz-expected-bucket-owner")),
        expected_source_owner: header(&HeaderName::from_static(
            "x-amz-source-expected-bucket-owner",
        )),
        request_payer: header(&HeaderName::from_static("x-amz-request-payer"))
            .is_some_and(|v| v.eq_ignore_ascii_case("requester")),
        acl_headers: parts
            .headers
            .keys()
            .map(HeaderName::as_str)
            .filter(|n| *n == "x-amz-acl" || n.starts_with("x-amz-grant-"))
            .map(str::to_owned)
            .collect(),
        trailer: parts.headers.contains_key("x-amz-trailer"),
        target: header(&HeaderName::from_static("x-amz-target")),
        checksum: header(&HeaderName::from_static("x-amz-trailer")).or_else(|| {
            parts
                .headers
                .keys()
                .map(HeaderName::as_str)
                .find(|n| {
                    n.strip_prefix("x-amz-checksum-").is_some_and(|a| {
                        ["crc64nvme", "crc32", "crc32c", "sha1", "sha256"].contains(&a)
                    })
                })
                .map(str::to_owned)
        }),
        status: None,
        injected: false,
    }
}

fn decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// `x-amz-copy-source` is `[/]bucket/encoded-key[?versionId=..]`: the path
/// of the source object at moto, still encoded.
fn copy_source_path(copy_source: &str) -> String {
    let source = copy_source.split('?').next().unwrap_or_default();
    format!("/{}", source.trim_start_matches('/'))
}

/// The decoded key of an `x-amz-copy-source`.
fn copy_source_key(copy_source: &str) -> String {
    let path = copy_source_path(copy_source);
    let encoded = path[1..]
        .split_once('/')
        .map(|(_, key)| key)
        .unwrap_or_default();
    decode(encoded)
}

fn canned(status: u16, body: &str) -> Response<ProxyBody> {
    // S3 answers in XML; SQS's JSON protocol in JSON.
    let content_type = if body.starts_with('{') {
        "application/x-amz-json-1.0"
    } else {
        "application/xml"
    };
    Response::builder()
        .status(StatusCode::from_u16(status).expect("valid status"))
        .header(CONTENT_TYPE, content_type)
        .header("x-amz-request-id", "FAULTPROXY")
        .body(
            Full::new(Bytes::from(body.to_owned()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("a canned response")
}

/// Headers that belong to one connection, not to the request.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

async fn forward(shared: &Shared, parts: Parts, body: Bytes) -> Response<ProxyBody> {
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    // Path-style: the bucket is the path's first segment.
    let bucket = parts.uri.path().trim_start_matches('/');
    let bucket = bucket.split('/').next().unwrap_or_default();
    let upstream = {
        let state = shared.state.lock().expect("proxy state poisoned");
        state
            .routes
            .iter()
            .find(|(prefix, _)| !bucket.is_empty() && bucket.starts_with(prefix.as_str()))
            .map(|(_, upstream)| upstream.clone())
    };
    let upstream = upstream.as_deref().unwrap_or(&shared.upstream);
    let mut builder = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{upstream}{path_and_query}"));
    for (name, value) in &parts.headers {
        // Host is set from the upstream URI by the client.
        if name != HOST && name != CONTENT_LENGTH && !hop_by_hop(name) {
            builder = builder.header(name, value);
        }
    }
    // The body was read whole, so its length is known (even if it came chunked).
    if !body.is_empty() || parts.headers.contains_key(CONTENT_LENGTH) {
        builder = builder.header(CONTENT_LENGTH, body.len());
    }
    let request = match builder.body(Full::new(body)) {
        Ok(request) => request,
        Err(e) => return canned(502, &format!("fault proxy: building the request: {e}")),
    };
    match shared.client.request(request).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            parts.headers.remove(CONNECTION);
            parts.headers.remove("keep-alive");
            Response::from_parts(parts, body.map_err(BoxError::from).boxed())
        }
        Err(e) => canned(502, &format!("fault proxy: moto did not answer: {e}")),
    }
}

impl Shared {
    fn record_error(&self, why: String) {
        self.state
            .lock()
            .expect("proxy state poisoned")
            .errors
            .push(why);
    }
}

/// PUT `body` over the copy's source object at moto.
async fn overwrite_source(shared: &Shared, copy_source: &str, body: Vec<u8>) -> Result<(), String> {
    let request = Request::builder()
        .method(Method::PUT)
        .uri(format!(
            "{}{}",
            shared.upstream,
            copy_source_path(copy_source)
        ))
        .header(AUTHORIZATION, DUMMY_AUTHORIZATION)
        .header(CONTENT_LENGTH, body.len())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("building the rewrite of {copy_source}: {e}"))?;
    let response = shared
        .client
        .request(request)
        .await
        .map_err(|e| format!("rewriting {copy_source}: {e}"))?;
    let status = response.status();
    // Read the body so the connection goes back to the pool.
    let _ = response.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("rewriting {copy_source}: moto answered {status}"))
    }
}

/// Whether the copy's `x-amz-copy-source-if-match` names another ETag than
/// the source's current one. A source moto cannot find is left to moto, which
/// answers NoSuchKey as S3 would.
async fn if_match_fails(shared: &Shared, request: &Recorded) -> Result<bool, String> {
    let (Some(source), Some(wanted)) = (&request.copy_source, &request.copy_source_if_match) else {
        return Ok(false);
    };
    let head = Request::builder()
        .method(Method::HEAD)
        .uri(format!("{}{}", shared.upstream, copy_source_path(source)))
        .header(AUTHORIZATION, DUMMY_AUTHORIZATION)
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("building the HEAD of {source}: {e}"))?;
    let response = shared
        .client
        .request(head)
        .await
        .map_err(|e| format!("HEAD {source}: {e}"))?;
    let status = response.status();
    let current = response
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned();
    let _ = response.into_body().collect().await;
    if status == StatusCode::NOT_FOUND {
        return Ok(false);
    }
    if !status.is_success() {
        return Err(format!("HEAD {source}: moto answered {status}"));
    }
    // If-Match may list several ETags, or `*` for "exists".
    Ok(!wanted
        .split(',')
        .map(|t| t.trim().trim_matches('"'))
        .any(|t| t == "*" || t == current))
}

/// Whether a DeleteObjects body names an ETag for any object.
fn has_etag_element(body: &Bytes) -> bool {
    String::from_utf8_lossy(body).contains("<ETag>")
}

/// One object of a DeleteObjects request body.
#[derive(Debug)]
struct DeleteEntry {
    key: String,
    etag: Option<String>,
}

/// A DeleteObjects with per-object ETags, carried out as S3 does it: each
/// object is deleted only if its current ETag is the one given; the others
/// are reported under `<Error>` with `PreconditionFailed`, a key that does
/// not exist with `NoSuchKey`, and the answer is `200 OK` either way. See
/// "How to perform conditional deletes",
/// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-deletes.html>:
/// "If the precondition fails, the response for that object is captured in
/// the `<Error>` element of the response body". Each object becomes one
/// DeleteObject with `If-Match` at moto, which moto does enforce (412, or
/// 404 for a missing key), so the check and the delete are one step there
/// as in S3. Returns the answer and whether any object was kept.
async fn delete_objects_conditionally(
    shared: &Shared,
    request: &Recorded,
    body: &Bytes,
) -> Result<(Response<ProxyBody>, bool), String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("DeleteObjects body: {e}"))?;
    let quiet = element(text, "Quiet").is_some_and(|q| q.trim() == "true");
    let entries: Vec<DeleteEntry> = elements(text, "Object")
        .into_iter()
        .map(|object| {
            Ok(DeleteEntry {
                key: xml_unescape(
                    element(object, "Key").ok_or("a DeleteObjects object without a Key")?,
                ),
                etag: element(object, "ETag").map(xml_unescape),
            })
        })
        .collect::<Result<_, &str>>()?;
    // Several at once, as S3 works through a request's objects; in order.
    use futures::StreamExt;
    // By index: a stream over borrowed entries trips the higher-ranked
    // lifetime check of the spawned request future.
    let answers: Vec<Result<(StatusCode, String), String>> =
        futures::stream::iter(0..entries.len())
            .map(|i| delete_if_match(shared, &request.bucket, &entries[i]))
            .buffered(16)
            .collect()
            .await;
    let mut result = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    let mut refused = false;
    for (entry, answer) in entries.iter().zip(answers) {
        let (status, answer) = answer?;
        let key = xml_escape(&entry.key);
        if status.is_success() {
            if !quiet {
                result.push_str(&format!("<Deleted><Key>{key}</Key></Deleted>"));
            }
            continue;
        }
        refused = true;
        let code = element(&answer, "Code")
            .map(str::to_owned)
            .unwrap_or_else(|| {
                match status {
                    StatusCode::PRECONDITION_FAILED => "PreconditionFailed",
                    StatusCode::NOT_FOUND => "NoSuchKey",
                    _ => "InternalError",
                }
                .to_owned()
            });
        let message = element(&answer, "Message")
            .map(xml_unescape)
            .unwrap_or_else(|| format!("moto answered {status}"));
        result.push_str(&format!(
            "<Error><Key>{key}</Key><Code>{}</Code><Message>{}</Message></Error>",
            xml_escape(&code),
            xml_escape(&message)
        ));
    }
    result.push_str("</DeleteResult>");
    Ok((canned(200, &result), refused))
}

/// One DeleteObject at moto, with `If-Match` when the entry has an ETag:
/// moto's status and body.
async fn delete_if_match(
    shared: &Shared,
    bucket: &str,
    entry: &DeleteEntry,
) -> Result<(StatusCode, String), String> {
    let path = format!(
        "/{}/{}",
        utf8_percent_encode(bucket, PATH_SEGMENT),
        utf8_percent_encode(&entry.key, PATH_SEGMENT)
    );
    let mut delete = Request::builder()
        .method(Method::DELETE)
        .uri(format!("{}{path}", shared.upstream))
        .header(AUTHORIZATION, DUMMY_AUTHORIZATION);
    if let Some(etag) = &entry.etag {
        delete = delete.header("If-Match", etag);
    }
    let delete = delete
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("building the DELETE of {path}: {e}"))?;
    let response = shared
        .client
        .request(delete)
        .await
        .map_err(|e| format!("DELETE {path}: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Characters kept literal in a path segment of a request to moto (the
/// RFC 3986 unreserved set, and `/`, which a key may hold).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// The text of the first `<name>` element of `xml`.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

/// The text of every `<name>` element of `xml`, in order.
fn elements<'a>(mut xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut found = Vec::new();
    while let Some(start) = xml.find(&open) {
        let rest = &xml[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        found.push(&rest[..end]);
        xml = &rest[end + close.len()..];
    }
    found
}

/// XML character data back to text: the five named entities and numeric
/// ones (the SDK writes control characters as `&#xD;` and the like).
fn xml_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let Some(semi) = after.find(';') else {
            out.push_str(&rest[amp..]);
            return out;
        };
        let entity = &after[..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Text as XML character data; control characters as numeric references,
/// which XML 1.0 allows for all but NUL (not in an S3 key either).
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 => out.push_str(&format!("&#x{:X};", c as u32)),
            c => out.push(c),
        }
    }
    out
}
