//! S3 behaviour moto lacks, emulated in the fault proxy: the ETags of
//! SSE-KMS objects, and S3's additional checksums. Both are off until a test
//! switches them on ([`super::FaultProxy::kms_etags`],
//! [`super::FaultProxy::s3_checksums`]); then every S3 request
//! of the proxy passes through [`exchange`], which may answer it itself (a
//! failed precondition, a bad digest), translate it for moto, and edit
//! moto's answer.
//!
//! **SSE-KMS ETags.** "Objects created by the PUT Object, POST Object, or
//! Copy operation, or through the AWS Management Console, and are encrypted
//! by SSE-C or SSE-KMS, have ETags that are not an MD5 digest of their
//! object data" (`Object.ETag`,
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/API_Object.html>). moto
//! always answers MD5s, so for a KMS bucket the proxy replaces each ETag by
//! a digest of (bucket, key, moto's ETag, a per-key generation): the same
//! object shows one ETag everywhere, other bytes give another, and every
//! write through the proxy bumps the generation, since on AWS a rewrite with
//! identical bytes gets a new ETag too. Conditions naming such ETags are
//! judged here, in KMS space, and sent on to moto in its own terms.
//!
//! **Additional checksums.** "Checking object integrity in Amazon S3",
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html>:
//! S3 verifies a checksum sent with an upload and refuses a mismatch,
//! stores one with every object (CRC64NVME when the writer named none), and
//! returns it on HEAD and GET with `x-amz-checksum-mode: ENABLED`; a
//! multipart object's checksum is FULL_OBJECT (of all the bytes) or
//! COMPOSITE (a checksum of the parts' checksums, `…-N`). moto 5.1.22 does
//! little of this (HEAD in checksum mode answers nothing for an object PUT
//! with `x-amz-checksum-crc32`; CopyObject drops checksums; there is no
//! CRC64NVME default), so the proxy keeps per object only the algorithm and
//! the layout, strips moto's own checksum headers and elements, and computes
//! every value from moto's current bytes when asked: a value always matches
//! the bytes, out-of-band changes included.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use aws_smithy_types::base64;
use bytes::Bytes;
use crc_fast::CrcAlgorithm;
use http_body_util::{BodyExt, Full};
use hyper::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, ETAG, HeaderMap, HeaderName, HeaderValue,
    IF_MATCH, IF_NONE_MATCH, RANGE, TRANSFER_ENCODING,
};
use hyper::http::request::Parts;
use hyper::http::response::Parts as ResponseParts;
use hyper::{Method, Request, Response, StatusCode};
use md5::Digest as _;
use percent_encoding::utf8_percent_encode;
use sha2::Digest as _;

use super::{
    DUMMY_AUTHORIZATION, Op, PATH_SEGMENT, PRECONDITION_FAILED_XML, ProxyBody, Recorded, Shared,
    canned, copy_source_path, decode, element, elements, xml_escape, xml_unescape,
};

const CHECKSUM_MODE: HeaderName = HeaderName::from_static("x-amz-checksum-mode");
const CHECKSUM_ALGORITHM: HeaderName = HeaderName::from_static("x-amz-checksum-algorithm");
const CHECKSUM_TYPE: HeaderName = HeaderName::from_static("x-amz-checksum-type");
const COPY_SOURCE_IF_MATCH: HeaderName = HeaderName::from_static("x-amz-copy-source-if-match");
const COPY_SOURCE_RANGE: HeaderName = HeaderName::from_static("x-amz-copy-source-range");
const TRAILER: HeaderName = HeaderName::from_static("x-amz-trailer");
const DECODED_LENGTH: HeaderName = HeaderName::from_static("x-amz-decoded-content-length");

/// The switches, and what the emulation remembers between requests.
#[derive(Debug, Default)]
pub struct Semantics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Buckets whose objects answer with SSE-KMS ETags.
    kms: HashSet<String>,
    checksums: bool,
    /// Writes with a trailing checksum are refused, see
    /// [`super::FaultProxy::refuse_trailers`].
    refuse_trailers: bool,
    /// Buckets whose objects without an explicit checksum have none.
    no_default: HashSet<String>,
    /// Writes through the proxy per (bucket, key), for the KMS ETags.
    generations: HashMap<(String, String), u64>,
    /// Checksums chosen explicitly per (bucket, key); any other object has
    /// its bucket's default.
    stored: HashMap<(String, String), Stored>,
    /// Multipart uploads in progress, by UploadId.
    uploads: HashMap<String, Upload>,
}

/// An additional checksum algorithm of S3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Crc64Nvme,
    Crc32,
    Crc32c,
    Sha1,
    Sha256,
}

/// How an object's checksum covers it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    FullObject,
    /// A checksum of the parts' checksums; the part sizes, in order.
    Composite(Vec<u64>),
}

/// An object's checksum, without its value (computed from the bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    algorithm: Algorithm,
    layout: Layout,
}

#[derive(Debug, Clone)]
struct Upload {
    /// `None`: created without one, so S3's default (CRC64NVME,
    /// FULL_OBJECT) applies, unless the bucket has no default.
    algorithm: Option<Algorithm>,
    full_object: bool,
    parts: BTreeMap<u32, Part>,
}

#[derive(Debug, Clone)]
struct Part {
    size: u64,
    /// In the upload's algorithm (CRC64NVME for an upload without one).
    raw: Vec<u8>,
}

/// What the emulation has to do for one request.
#[derive(Debug, Clone, Copy)]
struct Scope {
    /// The request's bucket has KMS ETags.
    kms: bool,
    /// The copy's source bucket has KMS ETags.
    kms_source: bool,
    checksums: bool,
}

/// What [`prepare`] learnt from a request that [`settle`] needs.
#[derive(Debug, Default)]
struct Note {
    /// GET or HEAD of a whole object with `x-amz-checksum-mode: ENABLED`.
    checksum_mode: bool,
    /// The algorithm a PutObject or CopyObject named; for a
    /// CompleteMultipartUpload, that of its full-object value.
    algorithm: Option<Algorithm>,
    /// CreateMultipartUpload: the type asked for, or implied.
    full_object: bool,
    /// UploadPart: the part's checksum.
    part: Option<Part>,
    /// CompleteMultipartUpload: the part numbers, in order, and a value that
    /// only the completed object can be checked against.
    completed_parts: Vec<u32>,
    verify_after: Option<(Algorithm, String)>,
    /// DeleteObjects: the keys asked for.
    keys: Vec<String>,
    /// ListObjectsV2 with `encoding-type=url`.
    url_encoded: bool,
    /// UploadPartCopy: `x-amz-copy-source-range`, whose bytes the part's
    /// checksum is of.
    copy_range: Option<String>,
}

impl Semantics {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("S3 semantics state poisoned")
    }

    pub(super) fn kms_etags(&self, bucket: &str) {
        self.lock().kms.insert(bucket.to_owned());
    }

    pub(super) fn s3_checksums(&self) {
        self.lock().checksums = true;
    }

    pub(super) fn refuse_trailers(&self) {
        self.lock().refuse_trailers = true;
    }

    pub(super) fn no_default_checksums(&self, bucket: &str) {
        self.lock().no_default.insert(bucket.to_owned());
    }

    /// What applies to `request`; `None` when nothing does, and the request
    /// goes to moto untouched.
    fn scope(&self, request: &Recorded) -> Option<Scope> {
        let object_op = matches!(
            request.op,
            Op::HeadObject
                | Op::GetObject
                | Op::PutObject
                | Op::CopyObject
                | Op::UploadPart
                | Op::UploadPartCopy
                | Op::CreateMultipartUpload
                | Op::CompleteMultipartUpload
                | Op::AbortMultipartUpload
                | Op::DeleteObject
                | Op::DeleteObjects
                | Op::ListObjectsV2
        );
        let inner = self.lock();
        let scope = Scope {
            kms: inner.kms.contains(&request.bucket),
            kms_source: copy_source(request).is_some_and(|(bucket, _)| inner.kms.contains(&bucket)),
            checksums: inner.checksums,
        };
        (object_op && (scope.kms || scope.kms_source || scope.checksums)).then_some(scope)
    }

    fn generation(&self, bucket: &str, key: &str) -> u64 {
        let id = (bucket.to_owned(), key.to_owned());
        self.lock().generations.get(&id).copied().unwrap_or(0)
    }

    /// A write through the proxy succeeded: the object has a new ETag.
    fn bump(&self, bucket: &str, key: &str) -> u64 {
        let mut inner = self.lock();
        let generation = inner
            .generations
            .entry((bucket.to_owned(), key.to_owned()))
            .or_insert(0);
        *generation += 1;
        *generation
    }

    /// The object's checksum as S3 would have it, for an object of `len`
    /// bytes: the one chosen for it, else its bucket's default. A composite
    /// layout whose parts do not add up to `len` was overwritten behind the
    /// proxy's back (a test's out-of-band write), which on S3 would have
    /// given it the default.
    fn effective(&self, bucket: &str, key: &str, len: u64) -> Option<Stored> {
        let inner = self.lock();
        let chosen = inner
            .stored
            .get(&(bucket.to_owned(), key.to_owned()))
            .filter(|s| match &s.layout {
                Layout::FullObject => true,
                Layout::Composite(sizes) => sizes.iter().sum::<u64>() == len,
            });
        match chosen {
            Some(stored) => Some(stored.clone()),
            None if inner.no_default.contains(bucket) => None,
            None => Some(Stored {
                algorithm: Algorithm::Crc64Nvme,
                layout: Layout::FullObject,
            }),
        }
    }

    /// Record the checksum a write chose; `None`: the bucket's default.
    fn store(&self, bucket: &str, key: &str, stored: Option<Stored>) {
        let id = (bucket.to_owned(), key.to_owned());
        let mut inner = self.lock();
        match stored {
            Some(stored) => inner.stored.insert(id, stored),
            None => inner.stored.remove(&id),
        };
    }

    fn upload(&self, upload_id: &str) -> Option<Upload> {
        self.lock().uploads.get(upload_id).cloned()
    }

    fn begin_upload(&self, upload_id: &str, upload: Upload) {
        self.lock().uploads.insert(upload_id.to_owned(), upload);
    }

    /// A part uploaded again replaces the earlier one, as in S3.
    fn record_part(&self, upload_id: &str, number: u32, part: Part) {
        if let Some(upload) = self.lock().uploads.get_mut(upload_id) {
            upload.parts.insert(number, part);
        }
    }

    fn take_upload(&self, upload_id: &str) -> Option<Upload> {
        self.lock().uploads.remove(upload_id)
    }
}

impl Algorithm {
    const ALL: [Algorithm; 5] = [
        Algorithm::Crc64Nvme,
        Algorithm::Crc32,
        Algorithm::Crc32c,
        Algorithm::Sha1,
        Algorithm::Sha256,
    ];

    /// As S3 names it in `x-amz-checksum-algorithm` and messages.
    fn name(self) -> &'static str {
        match self {
            Algorithm::Crc64Nvme => "CRC64NVME",
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name.trim()))
    }

    /// `x-amz-checksum-crc64nvme` and the like.
    fn header(self) -> HeaderName {
        HeaderName::from_bytes(format!("x-amz-checksum-{}", self.name().to_lowercase()).as_bytes())
            .expect("a valid header name")
    }

    /// `ChecksumCRC64NVME` and the like, in XML bodies.
    fn element(self) -> String {
        format!("Checksum{}", self.name())
    }

    fn crc(self) -> Option<CrcAlgorithm> {
        match self {
            Algorithm::Crc64Nvme => Some(CrcAlgorithm::Crc64Nvme),
            Algorithm::Crc32 => Some(CrcAlgorithm::Crc32IsoHdlc),
            Algorithm::Crc32c => Some(CrcAlgorithm::Crc32Iscsi),
            Algorithm::Sha1 | Algorithm::Sha256 => None,
        }
    }

    /// The raw checksum of `data`: a CRC as big-endian bytes of its width,
    /// which is what S3 base64-encodes.
    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Algorithm::Crc64Nvme => crc_fast::checksum(CrcAlgorithm::Crc64Nvme, data)
                .to_be_bytes()
                .to_vec(),
            Algorithm::Crc32 | Algorithm::Crc32c => {
                let crc = self.crc().expect("a CRC");
                (crc_fast::checksum(crc, data) as u32)
                    .to_be_bytes()
                    .to_vec()
            }
            Algorithm::Sha1 => sha1(data).to_vec(),
            Algorithm::Sha256 => sha2::Sha256::digest(data).to_vec(),
        }
    }

    /// The full-object CRC of parts given by their CRCs and sizes, as S3
    /// computes a FULL_OBJECT checksum of a multipart upload; `None` for the
    /// SHAs, which cannot be combined (S3 allows them COMPOSITE only).
    fn combine(self, parts: &[&Part]) -> Option<Vec<u8>> {
        let crc = self.crc()?;
        let value = |raw: &[u8]| {
            raw.iter()
                .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte))
        };
        let (first, rest) = parts.split_first()?;
        let whole = rest.iter().fold(value(&first.raw), |acc, part| {
            crc_fast::checksum_combine(crc, acc, value(&part.raw), part.size)
        });
        Some(match self {
            Algorithm::Crc64Nvme => whole.to_be_bytes().to_vec(),
            _ => (whole as u32).to_be_bytes().to_vec(),
        })
    }
}

impl Layout {
    fn name(&self) -> &'static str {
        match self {
            Layout::FullObject => "FULL_OBJECT",
            Layout::Composite(_) => "COMPOSITE",
        }
    }
}

impl Stored {
    /// The value S3 answers for an object with these bytes: base64 of the
    /// checksum, or for COMPOSITE of the checksum of the parts' checksums
    /// joined, with `-N` for N parts.
    fn value(&self, data: &[u8]) -> String {
        match &self.layout {
            Layout::FullObject => base64::encode(self.algorithm.digest(data)),
            Layout::Composite(sizes) => {
                let mut offset = 0usize;
                let raws = sizes.iter().map(|size| {
                    let end = (offset + *size as usize).min(data.len());
                    let raw = self.algorithm.digest(&data[offset..end]);
                    offset = end;
                    raw
                });
                composite(self.algorithm, raws)
            }
        }
    }
}

/// A COMPOSITE value from the parts' raw checksums, in order: base64 of the
/// checksum of them joined, and `-N` for N parts.
fn composite(algorithm: Algorithm, raws: impl Iterator<Item = Vec<u8>>) -> String {
    let (mut joined, mut count) = (Vec::new(), 0);
    for raw in raws {
        joined.extend(raw);
        count += 1;
    }
    format!("{}-{count}", base64::encode(algorithm.digest(&joined)))
}

/// The answer to a request S3 would refuse (boxed: a response is large).
type Refusal = Box<Response<ProxyBody>>;

/// Carry one request through the emulation: [`prepare`] it (which may
/// answer it, as S3 would, without moto), let `send` take it to moto (with
/// `true` when the emulation has already judged its
/// `x-amz-copy-source-if-match`), then [`settle`] moto's answer. Returns the
/// answer and whether the proxy, not moto, decided it.
pub(super) async fn exchange(
    shared: &Shared,
    request: &Recorded,
    mut parts: Parts,
    mut body: Bytes,
    send: impl AsyncFnOnce(Parts, Bytes, bool) -> (Response<ProxyBody>, bool),
) -> (Response<ProxyBody>, bool) {
    if request.trailer && shared.semantics.lock().refuse_trailers {
        return (
            s3_error(
                501,
                "NotImplemented",
                "A header you provided implies functionality that is not implemented: x-amz-trailer",
            ),
            true,
        );
    }
    let Some(scope) = shared.semantics.scope(request) else {
        return send(parts, body, false).await;
    };
    let note = match prepare(shared, request, scope, &mut parts, &mut body).await {
        Ok(note) => note,
        Err(answer) => return (*answer, true),
    };
    let judged = scope.kms_source && request.copy_source_if_match.is_some();
    let (response, injected) = send(parts, body.clone(), judged).await;
    let response = settle(shared, request, scope, note, body, response)
        .await
        .unwrap_or_else(|why| failure(shared, why));
    (response, injected)
}

/// The proxy failed at something of its own: recorded, so
/// `assert_no_errors` fails the test, and answered 502.
fn failure(shared: &Shared, why: String) -> Response<ProxyBody> {
    shared.record_error(why.clone());
    canned(502, &why)
}

/// An S3 error answer.
fn s3_error(status: u16, code: &str, message: &str) -> Response<ProxyBody> {
    canned(
        status,
        &format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message><RequestId>FAULTPROXY</RequestId><HostId>fault-proxy</HostId></Error>",
            xml_escape(message)
        ),
    )
}

/// S3's answer, with 400, to a checksum that does not match the bytes.
fn bad_digest(algorithm: Algorithm) -> Response<ProxyBody> {
    s3_error(
        400,
        "BadDigest",
        &format!(
            "The {} you specified did not match the calculated checksum.",
            algorithm.name()
        ),
    )
}

/// Check and translate the request before moto sees it; `Err` is the
/// answer when S3 would refuse it.
async fn prepare(
    shared: &Shared,
    request: &Recorded,
    scope: Scope,
    parts: &mut Parts,
    body: &mut Bytes,
) -> Result<Note, Refusal> {
    if scope.kms {
        translate_conditions(shared, request, parts).await?;
        if request.op == Op::DeleteObjects && String::from_utf8_lossy(body).contains("<ETag>") {
            *body = translate_delete_etags(shared, request, body)
                .await
                .map_err(|why| failure(shared, why))?;
        }
    }
    if scope.kms_source
        && let Some(wanted) = &request.copy_source_if_match
        && let Some((bucket, key)) = copy_source(request)
    {
        match judge(shared, &bucket, &key, wanted).await {
            Ok(Judged::Fails) => return Err(Box::new(canned(412, PRECONDITION_FAILED_XML))),
            Ok(Judged::Holds(Some(moto))) => set_header(parts, COPY_SOURCE_IF_MATCH, &moto),
            Ok(_) => {}
            Err(why) => return Err(Box::new(failure(shared, why))),
        }
    }
    let mut note = Note {
        url_encoded: param(request, "encoding-type").is_some_and(|e| e == "url"),
        copy_range: parts
            .headers
            .get(&COPY_SOURCE_RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        ..Note::default()
    };
    if request.op == Op::DeleteObjects {
        note.keys = elements(&String::from_utf8_lossy(body), "Object")
            .into_iter()
            .filter_map(|object| element(object, "Key").map(xml_unescape))
            .collect();
    }
    if scope.checksums {
        decode_aws_chunked(parts, body)?;
        prepare_checksums(shared, request, parts, body, &mut note)?;
        // moto's own checksum support is partial and inconsistent: the
        // proxy alone answers for checksums, moto only stores bytes.
        let names: Vec<HeaderName> = parts
            .headers
            .keys()
            .filter(|n| {
                n.as_str().starts_with("x-amz-checksum-")
                    || n.as_str() == "x-amz-sdk-checksum-algorithm"
            })
            .cloned()
            .collect();
        for name in names {
            parts.headers.remove(name);
        }
    }
    Ok(note)
}

/// `If-Match` (and for reads `If-None-Match`) on an object of a KMS bucket
/// names KMS ETags, which moto has never heard of: judge `If-Match` here,
/// answering 412 as S3 does, and hand moto its own ETag where the client's
/// named the current one, so moto still checks atomically with its action.
async fn translate_conditions(
    shared: &Shared,
    request: &Recorded,
    parts: &mut Parts,
) -> Result<(), Refusal> {
    let Some(key) = &request.key else {
        return Ok(());
    };
    let wanted = |parts: &Parts, name: &HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(wanted) = wanted(parts, &IF_MATCH) {
        match judge(shared, &request.bucket, key, &wanted).await {
            Ok(Judged::Fails) => {
                let body =
                    PRECONDITION_FAILED_XML.replace("x-amz-copy-source-If-Match", "If-Match");
                return Err(Box::new(canned(412, &body)));
            }
            Ok(Judged::Holds(Some(moto))) => set_header(parts, IF_MATCH, &moto),
            Ok(_) => {}
            Err(why) => return Err(Box::new(failure(shared, why))),
        }
    }
    if matches!(request.op, Op::GetObject | Op::HeadObject)
        && let Some(wanted) = wanted(parts, &IF_NONE_MATCH)
    {
        // moto answers 304 when the current KMS ETag was named (sent on as
        // moto's); when none of the named ETags is the current one, S3
        // answers the object, even if one of them is the MD5 moto holds.
        match judge(shared, &request.bucket, key, &wanted).await {
            Ok(Judged::Holds(Some(moto))) => set_header(parts, IF_NONE_MATCH, &moto),
            Ok(Judged::Fails) => {
                parts.headers.remove(IF_NONE_MATCH);
            }
            Ok(_) => {}
            Err(why) => return Err(Box::new(failure(shared, why))),
        }
    }
    Ok(())
}

/// An ETag no object at moto has: sent instead of a condition that failed
/// in KMS space, which may name the MD5 moto does hold (S3 would not take
/// it for a KMS object's ETag), so that moto's own check fails too.
const NO_SUCH_ETAG: &str = "\"fault-proxy-no-such-kms-etag\"";

/// The per-object `<ETag>` of a DeleteObjects in a KMS bucket, in moto's
/// terms: the current KMS ETag becomes moto's, any other [`NO_SUCH_ETAG`],
/// so moto answers PreconditionFailed for that object as S3 does.
async fn translate_delete_etags(
    shared: &Shared,
    request: &Recorded,
    body: &Bytes,
) -> Result<Bytes, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("DeleteObjects body: {e}"))?;
    let mut translated = HashMap::new();
    for object in elements(text, "Object") {
        let (Some(key), Some(etag)) = (element(object, "Key"), element(object, "ETag")) else {
            continue;
        };
        let key = xml_unescape(key);
        match judge(shared, &request.bucket, &key, &xml_unescape(etag)).await? {
            Judged::Holds(Some(moto)) => translated.insert(key, moto),
            Judged::Fails => translated.insert(key, NO_SUCH_ETAG.to_owned()),
            Judged::Holds(None) | Judged::Missing => None,
        };
    }
    let rewritten = map_blocks(text, "Object", |object| {
        let key = element(object, "Key").map(xml_unescape);
        match (
            key.and_then(|k| translated.get(&k)),
            element(object, "ETag"),
        ) {
            (Some(moto), Some(etag)) => object.replacen(
                &format!("<ETag>{etag}</ETag>"),
                &format!("<ETag>{}</ETag>", xml_escape(moto)),
                1,
            ),
            _ => object.to_owned(),
        }
    });
    Ok(Bytes::from(rewritten))
}

/// What a condition naming KMS ETags comes to.
enum Judged {
    /// It holds; send moto this ETag instead (`None`: keep the condition,
    /// which is `*`).
    Holds(Option<String>),
    Fails,
    /// No such object: moto answers as S3 does.
    Missing,
}

/// Judge `wanted` (an ETag list, or `*`) against the current KMS ETag of
/// `bucket/key`.
async fn judge(shared: &Shared, bucket: &str, key: &str, wanted: &str) -> Result<Judged, String> {
    let answer = ask_moto(shared, Method::HEAD, &object_path(bucket, key), None).await?;
    if answer.status == StatusCode::NOT_FOUND {
        return Ok(Judged::Missing);
    }
    if !answer.status.is_success() {
        return Err(format!(
            "HEAD {bucket}/{key}: moto answered {}",
            answer.status
        ));
    }
    let moto = answer
        .headers
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let current = kms_etag(bucket, key, &moto, shared.semantics.generation(bucket, key));
    let listed: Vec<&str> = wanted
        .split(',')
        .map(|t| t.trim().trim_matches('"'))
        .collect();
    Ok(if listed.contains(&"*") {
        Judged::Holds(None)
    } else if listed.contains(&current.as_str()) {
        Judged::Holds(Some(moto))
    } else {
        Judged::Fails
    })
}

/// The SSE-KMS ETag (unquoted) of an object whose ETag at moto is
/// `moto_etag`: the same object gives the same one in every answer, other
/// bytes or another write through the proxy give another; a multipart
/// object keeps its `-N`.
fn kms_etag(bucket: &str, key: &str, moto_etag: &str, generation: u64) -> String {
    let moto = moto_etag.trim_matches('"');
    let suffix = moto.rfind('-').map(|i| &moto[i..]).unwrap_or_default();
    let digest = md5::Md5::digest(format!("sse-kms\0{bucket}\0{key}\0{moto}\0{generation}"));
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}{suffix}")
}

/// An `aws-chunked` body, the way a writer sends bytes it cannot checksum
/// beforehand (a stream), decoded to the bytes S3 would store, with its
/// trailing checksum moved into the header it stands for; the rest of the
/// emulation, and moto, then see a plain upload. The framing ("Signature
/// calculations for trailing headers (chunked uploads)",
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming-trailers.html>):
/// chunks of `HEX-SIZE[;chunk-signature=…]\r\nBYTES\r\n`, a chunk of size
/// 0, then the trailing headers `name:value\r\n` that `x-amz-trailer`
/// declared, and an empty line. S3 answers a body cut short or longer than
/// `x-amz-decoded-content-length` with IncompleteBody, and a declared
/// trailer that is missing or not well-formed with MalformedTrailerError.
fn decode_aws_chunked(parts: &mut Parts, body: &mut Bytes) -> Result<(), Refusal> {
    let encodings: Vec<String> = header_text(parts, &CONTENT_ENCODING)
        .split(',')
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    if !encodings.iter().any(|e| e == "aws-chunked") {
        return Ok(());
    }
    let incomplete = || {
        Box::new(s3_error(
            400,
            "IncompleteBody",
            "The request body terminated unexpectedly",
        ))
    };
    let malformed = || {
        Box::new(s3_error(
            400,
            "MalformedTrailerError",
            "The request contained trailing data that was not well-formed or did not conform to our published schema.",
        ))
    };
    let data = &body[..];
    let line_at = |from: usize| -> Option<(usize, usize)> {
        let end = from + data.get(from..)?.windows(2).position(|w| w == b"\r\n")?;
        Some((end, end + 2))
    };
    let mut decoded = Vec::with_capacity(data.len());
    let mut at = 0;
    loop {
        let (end, next) = line_at(at).ok_or_else(incomplete)?;
        let size = std::str::from_utf8(&data[at..end])
            .ok()
            .and_then(|line| line.split(';').next())
            .and_then(|hex| usize::from_str_radix(hex.trim(), 16).ok())
            .ok_or_else(incomplete)?;
        at = next;
        if size == 0 {
            break;
        }
        let chunk = data.get(at..at + size).ok_or_else(incomplete)?;
        if data.get(at + size..at + size + 2) != Some(b"\r\n".as_slice()) {
            return Err(incomplete());
        }
        decoded.extend_from_slice(chunk);
        at += size + 2;
    }
    let mut trailers = HashMap::new();
    loop {
        let (end, next) = line_at(at).ok_or_else(malformed)?;
        let line = std::str::from_utf8(&data[at..end]).map_err(|_| malformed())?;
        at = next;
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or_else(malformed)?;
        trailers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let declared = header_text(parts, &TRAILER);
    if header_text(parts, &DECODED_LENGTH).parse::<usize>().ok() != Some(decoded.len()) {
        return Err(incomplete());
    }
    for name in declared.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let value = trailers
            .get(&name.to_ascii_lowercase())
            .ok_or_else(malformed)?;
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| malformed())?;
        let value = HeaderValue::from_str(value).map_err(|_| malformed())?;
        parts.headers.insert(name, value);
    }
    let others: Vec<String> = encodings
        .into_iter()
        .filter(|e| e != "aws-chunked")
        .collect();
    match others.is_empty() {
        true => parts.headers.remove(CONTENT_ENCODING),
        false => parts.headers.insert(
            CONTENT_ENCODING,
            HeaderValue::from_str(&others.join(",")).map_err(|_| malformed())?,
        ),
    };
    parts.headers.remove(&TRAILER);
    parts.headers.remove(&DECODED_LENGTH);
    parts.headers.insert(
        HeaderName::from_static("x-amz-content-sha256"),
        HeaderValue::from_static("UNSIGNED-PAYLOAD"),
    );
    *body = Bytes::from(decoded);
    Ok(())
}

fn header_text(parts: &Parts, name: &HeaderName) -> String {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The checksum side of [`prepare`]: verify the values a request carries,
/// and note what the answer needs.
fn prepare_checksums(
    shared: &Shared,
    request: &Recorded,
    parts: &Parts,
    body: &Bytes,
    note: &mut Note,
) -> Result<(), Refusal> {
    let given: Vec<(Algorithm, String)> = Algorithm::ALL
        .into_iter()
        .filter_map(|a| {
            let value = parts.headers.get(a.header())?.to_str().ok()?;
            Some((a, value.trim().to_owned()))
        })
        .collect();
    let named = |name: &HeaderName| -> Result<Option<Algorithm>, Refusal> {
        let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok()) else {
            return Ok(None);
        };
        Algorithm::from_name(value).map(Some).ok_or_else(|| {
            Box::new(s3_error(
                400,
                "InvalidRequest",
                &format!("Value for {name} header is invalid."),
            ))
        })
    };
    match request.op {
        Op::HeadObject | Op::GetObject => {
            // S3 returns a checksum for the whole object only, not for a
            // range or one part.
            note.checksum_mode = parts
                .headers
                .get(&CHECKSUM_MODE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"ENABLED"))
                && !parts.headers.contains_key(RANGE)
                && request.part_number.is_none();
        }
        Op::PutObject | Op::UploadPart => {
            for (algorithm, value) in &given {
                if base64::encode(algorithm.digest(body)) != *value {
                    return Err(Box::new(bad_digest(*algorithm)));
                }
            }
            note.algorithm = given.first().map(|(a, _)| *a);
            if request.op == Op::UploadPart
                && let Some(upload) =
                    param(request, "uploadId").and_then(|id| shared.semantics.upload(&id))
            {
                let algorithm = upload.algorithm.unwrap_or(Algorithm::Crc64Nvme);
                note.part = Some(Part {
                    size: body.len() as u64,
                    raw: algorithm.digest(body),
                });
            }
        }
        Op::CopyObject => note.algorithm = named(&CHECKSUM_ALGORITHM)?,
        Op::CreateMultipartUpload => {
            note.algorithm = named(&CHECKSUM_ALGORITHM)?;
            let asked = parts
                .headers
                .get(&CHECKSUM_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_ascii_uppercase);
            // "Checking object integrity": CRC64NVME is FULL_OBJECT only,
            // the SHAs COMPOSITE only, the CRC32s either (COMPOSITE unless
            // asked); no algorithm means S3's default, CRC64NVME.
            note.full_object = match (note.algorithm, asked.as_deref()) {
                (None, _) | (Some(Algorithm::Crc64Nvme), None | Some("FULL_OBJECT")) => true,
                (Some(Algorithm::Sha1 | Algorithm::Sha256), None | Some("COMPOSITE"))
                | (Some(Algorithm::Crc32 | Algorithm::Crc32c), None | Some("COMPOSITE")) => false,
                (Some(Algorithm::Crc32 | Algorithm::Crc32c), Some("FULL_OBJECT")) => true,
                (Some(algorithm), Some(asked)) => {
                    return Err(Box::new(s3_error(
                        400,
                        "InvalidRequest",
                        &format!(
                            "The {} checksum algorithm does not support the {asked} checksum type.",
                            algorithm.name()
                        ),
                    )));
                }
            };
        }
        Op::CompleteMultipartUpload => {
            prepare_completion(shared, request, body, given.first().cloned(), note)?;
        }
        _ => {}
    }
    Ok(())
}

/// A CompleteMultipartUpload: a part checksum the body names must be the
/// part's, and a full-object value (`x-amz-checksum-<alg>`) must be the
/// checksum of the object the parts make. S3 refuses the completion
/// otherwise and leaves the upload, and any earlier object under the key,
/// as they were ("CompleteMultipartUpload",
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompleteMultipartUpload.html>).
/// The proxy does the same when it saw every part (it combines their CRCs,
/// as S3 does for a FULL_OBJECT upload); otherwise it can only check the
/// object moto made, see [`settle_completion`].
fn prepare_completion(
    shared: &Shared,
    request: &Recorded,
    body: &Bytes,
    full_value: Option<(Algorithm, String)>,
    note: &mut Note,
) -> Result<(), Refusal> {
    let text = String::from_utf8_lossy(body);
    let listed: Vec<(u32, &str)> = elements(&text, "Part")
        .into_iter()
        .filter_map(|part| Some((element(part, "PartNumber")?.trim().parse().ok()?, part)))
        .collect();
    note.completed_parts = listed.iter().map(|(number, _)| *number).collect();
    note.algorithm = full_value.as_ref().map(|(a, _)| *a);
    let upload = param(request, "uploadId").and_then(|id| shared.semantics.upload(&id));
    let Some(upload) = upload else {
        note.verify_after = full_value;
        return Ok(());
    };
    let upload_algorithm = upload.algorithm.unwrap_or(Algorithm::Crc64Nvme);
    for (number, part) in &listed {
        let given = element(part, &upload_algorithm.element()).map(str::trim);
        let known = upload.parts.get(number).map(|p| base64::encode(&p.raw));
        if let (Some(given), Some(known)) = (given, known)
            && given != known
        {
            return Err(Box::new(s3_error(
                400,
                "InvalidPart",
                "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
            )));
        }
    }
    let Some((algorithm, value)) = full_value else {
        return Ok(());
    };
    if upload.algorithm.is_some_and(|a| a != algorithm) {
        return Err(Box::new(s3_error(
            400,
            "InvalidRequest",
            &format!(
                "The upload was created using the {} checksum algorithm; the complete request names {}.",
                upload_algorithm.name(),
                algorithm.name()
            ),
        )));
    }
    let seen: Option<Vec<&Part>> = note
        .completed_parts
        .iter()
        .map(|n| upload.parts.get(n))
        .collect();
    let expected = match seen {
        Some(seen) if algorithm == upload_algorithm && upload.full_object => {
            algorithm.combine(&seen).map(base64::encode)
        }
        Some(seen) if algorithm == upload_algorithm => {
            Some(composite(algorithm, seen.iter().map(|p| p.raw.clone())))
        }
        _ => None,
    };
    match expected {
        Some(expected) if expected != value => Err(Box::new(bad_digest(algorithm))),
        Some(_) => Ok(()),
        None => {
            note.verify_after = Some((algorithm, value));
            Ok(())
        }
    }
}

/// Edit moto's answer to what S3 would have answered, and remember what the
/// request changed (generations, checksums, uploads) once moto has done it.
async fn settle(
    shared: &Shared,
    request: &Recorded,
    scope: Scope,
    note: Note,
    request_body: Bytes,
    response: Response<ProxyBody>,
) -> Result<Response<ProxyBody>, String> {
    let (mut head, body) = response.into_parts();
    if scope.checksums {
        let moto_own: Vec<HeaderName> = head
            .headers
            .keys()
            .filter(|n| n.as_str().starts_with("x-amz-checksum-"))
            .cloned()
            .collect();
        for name in moto_own {
            head.headers.remove(name);
        }
    }
    let ok = head.status.is_success();
    let semantics = &shared.semantics;
    let bucket = request.bucket.as_str();
    let key = object_key(request);
    match request.op {
        Op::HeadObject | Op::GetObject => {
            if scope.kms {
                let generation = semantics.generation(bucket, &key);
                rewrite_etag_header(&mut head.headers, bucket, &key, generation);
            }
            if !(scope.checksums && note.checksum_mode && head.status == StatusCode::OK) {
                return Ok(Response::from_parts(head, body));
            }
            if request.op == Op::GetObject {
                // The body goes to the client as moto sent it.
                let data = collect(body).await?;
                add_checksum_headers(shared, &mut head.headers, bucket, &key, &data);
                return Ok(with_body(head, data));
            }
            // A HEAD of a version answers that version's checksum
            // ("HeadObject", versionId:
            // <https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html>).
            let path = match param(request, "versionId") {
                Some(version) => format!(
                    "{}?versionId={}",
                    object_path(bucket, &key),
                    utf8_percent_encode(&version, PATH_SEGMENT)
                ),
                None => object_path(bucket, &key),
            };
            if let Some(data) = fetch(shared, &path, None).await? {
                add_checksum_headers(shared, &mut head.headers, bucket, &key, &data);
            }
            // HEAD keeps moto's empty body and its Content-Length.
            Ok(Response::from_parts(head, body))
        }
        Op::PutObject => {
            if ok && scope.checksums {
                let chosen = note.algorithm.map(|algorithm| Stored {
                    algorithm,
                    layout: Layout::FullObject,
                });
                semantics.store(bucket, &key, chosen);
                add_checksum_headers(shared, &mut head.headers, bucket, &key, &request_body);
            }
            if ok && scope.kms {
                let generation = semantics.bump(bucket, &key);
                rewrite_etag_header(&mut head.headers, bucket, &key, generation);
            }
            Ok(Response::from_parts(head, body))
        }
        Op::UploadPart => {
            if ok
                && let (Some(part), Some(id), Some(number)) =
                    (note.part, param(request, "uploadId"), request.part_number)
            {
                if let Some(algorithm) = semantics.upload(&id).and_then(|u| u.algorithm)
                    && let Ok(value) = HeaderValue::from_str(&base64::encode(&part.raw))
                {
                    head.headers.insert(algorithm.header(), value);
                }
                semantics.record_part(&id, number, part);
            }
            Ok(Response::from_parts(head, body))
        }
        Op::CreateMultipartUpload => {
            let data = collect(body).await?;
            let text = String::from_utf8_lossy(&data);
            if ok
                && scope.checksums
                && let Some(id) = element(&text, "UploadId")
            {
                semantics.begin_upload(
                    id.trim(),
                    Upload {
                        algorithm: note.algorithm,
                        full_object: note.full_object,
                        parts: BTreeMap::new(),
                    },
                );
                if let Some(algorithm) = note.algorithm {
                    let kind = if note.full_object {
                        "FULL_OBJECT"
                    } else {
                        "COMPOSITE"
                    };
                    head.headers.insert(
                        CHECKSUM_ALGORITHM,
                        HeaderValue::from_static(algorithm.name()),
                    );
                    head.headers
                        .insert(CHECKSUM_TYPE, HeaderValue::from_static(kind));
                }
            }
            Ok(with_body(head, data))
        }
        Op::CopyObject | Op::CompleteMultipartUpload => {
            let copy = request.op == Op::CopyObject;
            let result = if copy {
                "CopyObjectResult"
            } else {
                "CompleteMultipartUploadResult"
            };
            let (head, xml) = match written(head, body, result).await? {
                Ok(written) => written,
                Err(passed_on) => return Ok(passed_on),
            };
            let xml = match scope.checksums {
                false => xml,
                true if copy => settle_copy(shared, request, note, xml).await?,
                true => match settle_completion(shared, request, note, xml).await? {
                    Ok(xml) => xml,
                    Err(refusal) => return Ok(refusal),
                },
            };
            let xml = new_version(shared, scope, bucket, &key, xml);
            Ok(with_body(head, Bytes::from(xml)))
        }
        Op::UploadPartCopy => settle_part_copy(shared, request, scope, note, head, body).await,
        Op::AbortMultipartUpload => {
            if ok && let Some(id) = param(request, "uploadId") {
                semantics.take_upload(&id);
            }
            Ok(Response::from_parts(head, body))
        }
        Op::DeleteObject => {
            if ok {
                forget(shared, scope, bucket, &key);
            }
            Ok(Response::from_parts(head, body))
        }
        Op::DeleteObjects => {
            let data = collect(body).await?;
            if ok {
                let text = String::from_utf8_lossy(&data);
                let kept: HashSet<String> = elements(&text, "Error")
                    .into_iter()
                    .filter_map(|e| element(e, "Key").map(xml_unescape))
                    .collect();
                for key in note.keys.iter().filter(|k| !kept.contains(*k)) {
                    forget(shared, scope, bucket, key);
                }
            }
            Ok(with_body(head, data))
        }
        Op::ListObjectsV2 => {
            let data = collect(body).await?;
            if !ok {
                return Ok(with_body(head, data));
            }
            let text = String::from_utf8_lossy(&data);
            let listed = map_blocks(&text, "Contents", |object| {
                let stored_key = element(object, "Key").map(xml_unescape).unwrap_or_default();
                let key = if note.url_encoded {
                    decode(&stored_key)
                } else {
                    stored_key
                };
                let mut object = object.to_owned();
                if scope.kms {
                    let generation = semantics.generation(bucket, &key);
                    object = rewrite_etag_elements(&object, bucket, &key, generation);
                }
                if scope.checksums {
                    object = strip_checksum_elements(&object);
                    let size = element(&object, "Size")
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0);
                    if let Some(stored) = semantics.effective(bucket, &key, size) {
                        object.push_str(&format!(
                            "<ChecksumAlgorithm>{}</ChecksumAlgorithm><ChecksumType>{}</ChecksumType>",
                            stored.algorithm.name(),
                            stored.layout.name()
                        ));
                    }
                }
                object
            });
            Ok(with_body(head, Bytes::from(listed)))
        }
        _ => Ok(Response::from_parts(head, body)),
    }
}

/// An object was deleted through the proxy: a later object under the key
/// is a new write (new KMS ETag), with its own checksum.
fn forget(shared: &Shared, scope: Scope, bucket: &str, key: &str) {
    if scope.kms {
        shared.semantics.bump(bucket, key);
    }
    if scope.checksums {
        shared.semantics.store(bucket, key, None);
    }
}

/// A CopyObject: "If the CopyObject request does not include this
/// x-amz-checksum-algorithm header, the checksum algorithm will be copied
/// from the source object to the destination object (if it's present on
/// the source object)" (`CopyObject`, `x-amz-checksum-algorithm`,
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html>).
/// The copy is written in one piece, so its checksum is FULL_OBJECT even of
/// a composite source; and `CopyObjectResult` carries it
/// (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObjectResult.html>).
/// Returns the `CopyObjectResult` with it.
async fn settle_copy(
    shared: &Shared,
    request: &Recorded,
    note: Note,
    mut xml: String,
) -> Result<String, String> {
    let semantics = &shared.semantics;
    let (bucket, key) = (request.bucket.as_str(), object_key(request));
    xml = strip_checksum_elements(&xml);
    let copy = fetch(shared, &object_path(bucket, &key), None)
        .await?
        .ok_or_else(|| format!("{bucket}/{key} is gone right after its copy"))?;
    let algorithm = note.algorithm.or_else(|| {
        let (source_bucket, source_key) = copy_source(request)?;
        semantics
            .effective(&source_bucket, &source_key, copy.len() as u64)
            .map(|s| s.algorithm)
    });
    let chosen = algorithm.map(|algorithm| Stored {
        algorithm,
        layout: Layout::FullObject,
    });
    semantics.store(bucket, &key, chosen);
    if let Some(stored) = semantics.effective(bucket, &key, copy.len() as u64) {
        xml = insert_checksum_elements(&xml, "CopyObjectResult", &stored, &copy);
    }
    Ok(xml)
}

/// An UploadPartCopy into an upload with a checksum algorithm: S3 answers
/// the part's checksum in `CopyPartResult`, of the bytes copied.
async fn settle_part_copy(
    shared: &Shared,
    request: &Recorded,
    scope: Scope,
    note: Note,
    head: ResponseParts,
    body: ProxyBody,
) -> Result<Response<ProxyBody>, String> {
    if !scope.checksums {
        return Ok(Response::from_parts(head, body));
    }
    let (head, xml) = match written(head, body, "CopyPartResult").await? {
        Ok(written) => written,
        Err(passed_on) => return Ok(passed_on),
    };
    let mut xml = strip_checksum_elements(&xml);
    let upload =
        param(request, "uploadId").and_then(|id| Some((shared.semantics.upload(&id)?, id)));
    if let (Some((upload, id)), Some(number), Some(source)) =
        (upload, request.part_number, request.copy_source.as_deref())
        && let Some(algorithm) = upload.algorithm
    {
        // The bytes of the version the copy names, if it names one.
        let path = match source.split_once('?') {
            Some((_, query)) if query.starts_with("versionId=") => {
                format!("{}?{query}", copy_source_path(source))
            }
            _ => copy_source_path(source),
        };
        let bytes = fetch(shared, &path, note.copy_range.as_deref())
            .await?
            .ok_or_else(|| format!("{path} is gone right after a part copy from it"))?;
        let part = Part {
            size: bytes.len() as u64,
            raw: algorithm.digest(&bytes),
        };
        let element = algorithm.element();
        xml = xml.replacen(
            "</CopyPartResult>",
            &format!(
                "<{element}>{}</{element}></CopyPartResult>",
                base64::encode(&part.raw)
            ),
            1,
        );
        shared.semantics.record_part(&id, number, part);
    }
    Ok(with_body(head, Bytes::from(xml)))
}

/// A CompleteMultipartUpload moto carried out: the object's checksum is the
/// upload's (COMPOSITE with the sizes of the parts listed, in order), or
/// that of a full-object value sent with it, or the bucket's default.
///
/// A full-object value the proxy could not check beforehand (parts it did
/// not see) is checked against the object moto made. S3 would refuse the
/// completion and leave any earlier object under the key in place; moto has
/// already replaced it, so the emulation can only delete what moto made and
/// answer BadDigest (the `Err` answer; `Ok` is the result XML with the
/// object's checksum).
async fn settle_completion(
    shared: &Shared,
    request: &Recorded,
    note: Note,
    mut xml: String,
) -> Result<Result<String, Response<ProxyBody>>, String> {
    let semantics = &shared.semantics;
    let (bucket, key) = (request.bucket.as_str(), object_key(request));
    let path = object_path(bucket, &key);
    let upload = param(request, "uploadId").and_then(|id| semantics.take_upload(&id));
    let object = fetch(shared, &path, None)
        .await?
        .ok_or_else(|| format!("{bucket}/{key} is gone right after its completion"))?;
    if let Some((algorithm, value)) = &note.verify_after
        && base64::encode(algorithm.digest(&object)) != *value
    {
        let deleted = ask_moto(shared, Method::DELETE, &path, None).await?;
        if !deleted.status.is_success() {
            return Err(format!("DELETE {path}: moto answered {}", deleted.status));
        }
        semantics.store(bucket, &key, None);
        return Ok(Err(bad_digest(*algorithm)));
    }
    let chosen = match upload {
        Some(Upload {
            algorithm: Some(algorithm),
            full_object: true,
            ..
        }) => Some(Stored {
            algorithm,
            layout: Layout::FullObject,
        }),
        Some(Upload {
            algorithm: Some(algorithm),
            parts,
            ..
        }) => {
            let sizes: Option<Vec<u64>> = note
                .completed_parts
                .iter()
                .map(|n| parts.get(n).map(|p| p.size))
                .collect();
            match sizes {
                Some(sizes) => Some(Stored {
                    algorithm,
                    layout: Layout::Composite(sizes),
                }),
                None => {
                    shared.record_error(format!(
                        "{bucket}/{key}: a part of a {} upload was not uploaded through the proxy",
                        algorithm.name()
                    ));
                    None
                }
            }
        }
        // Created without an algorithm: a full-object value sent (and
        // checked) chooses one, else the bucket's default applies.
        _ => note.algorithm.map(|algorithm| Stored {
            algorithm,
            layout: Layout::FullObject,
        }),
    };
    semantics.store(bucket, &key, chosen);
    xml = strip_checksum_elements(&xml);
    if let Some(stored) = semantics.effective(bucket, &key, object.len() as u64) {
        xml = insert_checksum_elements(&xml, "CompleteMultipartUploadResult", &stored, &object);
    }
    Ok(Ok(xml))
}

/// moto's answer to a copy or a completion, read whole: the parts and the
/// XML when it holds `result`, else (a failure, which S3 may also send
/// with `200 OK` and an `<Error>` body) the answer to pass on as it is.
async fn written(
    head: ResponseParts,
    body: ProxyBody,
    result: &str,
) -> Result<Result<(ResponseParts, String), Response<ProxyBody>>, String> {
    let data = collect(body).await?;
    let xml = String::from_utf8_lossy(&data).into_owned();
    Ok(
        if head.status.is_success() && xml.contains(&format!("<{result}")) {
            Ok((head, xml))
        } else {
            Err(with_body(head, data))
        },
    )
}

/// A write of `bucket/key` took effect at moto: in a KMS bucket the object
/// has a new ETag, which the `<ETag>` of the answer `xml` shows.
fn new_version(shared: &Shared, scope: Scope, bucket: &str, key: &str, xml: String) -> String {
    if !scope.kms {
        return xml;
    }
    let generation = shared.semantics.bump(bucket, key);
    rewrite_etag_elements(&xml, bucket, key, generation)
}

/// The request's object key; empty for a bucket-level request.
fn object_key(request: &Recorded) -> String {
    request.key.clone().unwrap_or_default()
}

/// `x-amz-checksum-<alg>` and `x-amz-checksum-type` for an object with
/// these bytes, as HEAD, GET and PutObject answer them; nothing for an
/// object without a checksum.
fn add_checksum_headers(
    shared: &Shared,
    headers: &mut HeaderMap,
    bucket: &str,
    key: &str,
    data: &[u8],
) {
    let Some(stored) = shared.semantics.effective(bucket, key, data.len() as u64) else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(&stored.value(data)) {
        headers.insert(stored.algorithm.header(), value);
        headers.insert(
            CHECKSUM_TYPE,
            HeaderValue::from_static(stored.layout.name()),
        );
    }
}

/// `<ChecksumCRC64NVME>…` and `<ChecksumType>…` at the end of the `result`
/// element.
fn insert_checksum_elements(xml: &str, result: &str, stored: &Stored, data: &[u8]) -> String {
    let element = stored.algorithm.element();
    xml.replacen(
        &format!("</{result}>"),
        &format!(
            "<{element}>{}</{element}><ChecksumType>{}</ChecksumType></{result}>",
            stored.value(data),
            stored.layout.name()
        ),
        1,
    )
}

/// Every `<Checksum…>` element of moto's (`ChecksumCRC32`,
/// `ChecksumAlgorithm`, `ChecksumType`…) removed.
fn strip_checksum_elements(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(start) = rest.find("<Checksum") {
        let after = &rest[start + 1..];
        let Some(name_end) = after.find('>') else {
            break;
        };
        let close = format!("</{}>", &after[..name_end]);
        let Some(end) = after.find(&close) else {
            break;
        };
        out.push_str(&rest[..start]);
        rest = &after[end + close.len()..];
    }
    out.push_str(rest);
    out
}

/// moto's ETag header as the KMS one.
fn rewrite_etag_header(headers: &mut HeaderMap, bucket: &str, key: &str, generation: u64) {
    let Some(moto) = headers.get(ETAG).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let kms = kms_etag(bucket, key, moto, generation);
    if let Ok(value) = HeaderValue::from_str(&format!("\"{kms}\"")) {
        headers.insert(ETAG, value);
    }
}

/// Each `<ETag>` of `xml` (moto's, quoted as `&#34;`, `&quot;` or `"`) as
/// the KMS one, in the same quoting.
fn rewrite_etag_elements(xml: &str, bucket: &str, key: &str, generation: u64) -> String {
    map_blocks(xml, "ETag", |raw| {
        let moto = xml_unescape(raw);
        let inner = moto.trim().trim_matches('"');
        if inner.is_empty() {
            return raw.to_owned();
        }
        raw.replace(inner, &kms_etag(bucket, key, inner, generation))
    })
}

/// `xml` with the text of every `<name>` element replaced by `f` of it.
fn map_blocks(xml: &str, name: &str, mut f: impl FnMut(&str) -> String) -> String {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let inner = start + open.len();
        let Some(len) = rest[inner..].find(&close) else {
            break;
        };
        out.push_str(&rest[..inner]);
        out.push_str(&f(&rest[inner..inner + len]));
        out.push_str(&close);
        rest = &rest[inner + len + close.len()..];
    }
    out.push_str(rest);
    out
}

/// moto's answer to a request of the proxy's own, read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// `method` on `path` (already encoded) at moto, with `Range` if given.
async fn ask_moto(
    shared: &Shared,
    method: Method,
    path: &str,
    range: Option<&str>,
) -> Result<Answer, String> {
    let mut request = Request::builder()
        .method(method.clone())
        .uri(format!("{}{path}", shared.upstream))
        .header(AUTHORIZATION, DUMMY_AUTHORIZATION);
    if let Some(range) = range {
        request = request.header(RANGE, range);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("building {method} {path}: {e}"))?;
    let response = shared
        .client
        .request(request)
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let (head, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("{method} {path}: reading the answer: {e}"))?
        .to_bytes();
    Ok(Answer {
        status: head.status,
        headers: head.headers,
        body,
    })
}

/// The bytes of `path` at moto (a `range` of them); `None` if there is no
/// such object.
async fn fetch(shared: &Shared, path: &str, range: Option<&str>) -> Result<Option<Bytes>, String> {
    let answer = ask_moto(shared, Method::GET, path, range).await?;
    if answer.status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !answer.status.is_success() {
        return Err(format!("GET {path}: moto answered {}", answer.status));
    }
    Ok(Some(answer.body))
}

async fn collect(body: ProxyBody) -> Result<Bytes, String> {
    body.collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| format!("reading moto's answer: {e}"))
}

/// A response with a body the proxy has read (and maybe edited).
fn with_body(mut head: ResponseParts, body: Bytes) -> Response<ProxyBody> {
    head.headers.remove(TRANSFER_ENCODING);
    head.headers
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(
        head,
        Full::new(body).map_err(|never| match never {}).boxed(),
    )
}

fn object_path(bucket: &str, key: &str) -> String {
    format!(
        "/{}/{}",
        utf8_percent_encode(bucket, PATH_SEGMENT),
        utf8_percent_encode(key, PATH_SEGMENT)
    )
}

/// The decoded bucket and key of a copy's source.
fn copy_source(request: &Recorded) -> Option<(String, String)> {
    let path = copy_source_path(request.copy_source.as_deref()?);
    let (bucket, key) = path[1..].split_once('/')?;
    Some((decode(bucket), decode(key)))
}

/// A decoded query parameter.
fn param(request: &Recorded, name: &str) -> Option<String> {
    request.query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(n) == name).then(|| decode(v))
    })
}

fn set_header(parts: &mut Parts, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        parts.headers.insert(name, value);
    }
}

/// SHA-1, for `x-amz-checksum-sha1`.
fn sha1(data: &[u8]) -> [u8; 20] {
    use sha1::Digest;
    sha1::Sha1::digest(data).into()
}
