//! The S3 behaviour the fault proxy emulates in front of moto
//! (`support::s3_semantics`): the ETags of SSE-KMS objects, and S3's
//! additional checksums. Each test talks to moto through the proxy with the
//! SDK client the CLI uses, and checks that the answers are AWS's; `direct`
//! is a client straight to moto, for MD5s, stored bytes and out-of-band
//! changes.

mod support;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart, Delete,
    EncodingType, ObjectIdentifier,
};
use aws_smithy_types::base64;
use crc_fast::CrcAlgorithm;
use md5::Digest as _;
use s3_fanout::base::client::{ClientSettings, build_s3_client};
use sha2::Digest as _;
use support::fault_proxy::FaultProxy;
use support::*;

const MIB: usize = 1024 * 1024;

/// A proxy in front of this binary's moto, a client through it, and one
/// straight to moto.
struct Bed {
    proxy: FaultProxy,
    via: Client,
    direct: Client,
}

impl Bed {
    async fn new() -> Self {
        let proxy = FaultProxy::start(&moto().endpoint);
        let via = build_s3_client(
            &ClientSettings {
                endpoint_url: Some(proxy.endpoint().to_owned()),
                force_path_style: true,
                region: Some(REGION.into()),
                ..Default::default()
            },
            None,
        )
        .await;
        Bed {
            proxy,
            via,
            direct: s3().await,
        }
    }

    /// A bed and a bucket with SSE-KMS ETags.
    async fn kms(tag: &str) -> (Self, String) {
        let bed = Self::new().await;
        let bucket = bed.bucket(tag).await;
        bed.proxy.kms_etags(&bucket);
        (bed, bucket)
    }

    /// A bed with S3's checksums, and a bucket.
    async fn checksums(tag: &str) -> (Self, String) {
        let bed = Self::new().await;
        bed.proxy.s3_checksums();
        let bucket = bed.bucket(tag).await;
        (bed, bucket)
    }

    /// A fresh bucket.
    async fn bucket(&self, tag: &str) -> String {
        let name = unique_bucket(tag);
        create_bucket(&self.direct, &name).await;
        name
    }
}

/// HEAD with `x-amz-checksum-mode: ENABLED`.
async fn head_checksum(client: &Client, bucket: &str, key: &str) -> HeadObjectOutput {
    client
        .head_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap_or_else(|e| panic!("head {bucket}/{key}: {e:?}"))
}

/// Every test ends with the proxy's own check: a request it failed to
/// emulate (a HEAD at moto that failed, an aws-chunked upload) fails the
/// test that made it.
impl Drop for Bed {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.proxy.assert_no_errors();
        }
    }
}

/// The quoted hex MD5 of `data`: the ETag moto (and S3 for unencrypted
/// single-part objects) gives it.
fn md5_etag(data: &[u8]) -> String {
    let hex: String = md5::Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{hex}\"")
}

fn crc64nvme(data: &[u8]) -> String {
    base64::encode(crc_fast::checksum(CrcAlgorithm::Crc64Nvme, data).to_be_bytes())
}

fn crc32_raw(data: &[u8]) -> [u8; 4] {
    (crc_fast::checksum(CrcAlgorithm::Crc32IsoHdlc, data) as u32).to_be_bytes()
}

/// The HTTP status and S3 error code of a request that must be refused.
fn refused<T: std::fmt::Debug, E: ProvideErrorMetadata>(
    result: Result<T, SdkError<E, HttpResponse>>,
) -> (u16, String) {
    match result {
        Ok(out) => panic!("expected a refusal, got {out:?}"),
        Err(e) => (
            e.raw_response().map_or(0, |r| r.status().as_u16()),
            e.as_service_error()
                .and_then(|s| s.code())
                .unwrap_or_default()
                .to_owned(),
        ),
    }
}

/// What moto holds under `bucket/key`, if anything.
async fn stored(bed: &Bed, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let got = bed.direct.get_object().bucket(bucket).key(key).send().await;
    Some(got.ok()?.body.collect().await.ok()?.into_bytes().to_vec())
}

async fn put_via(bed: &Bed, bucket: &str, key: &str, data: &[u8]) -> String {
    put(&bed.via, bucket, key, data.to_vec()).await
}

// ---------------------------------------------------------------- KMS ETags

/// A KMS object's ETag is not its MD5, and one object shows one ETag in the
/// PUT answer, HEAD, GET and both kinds of listing (keys URL-encoded or
/// not). A bucket without the switch, behind the same proxy, keeps MD5s.
#[tokio::test]
async fn kms_etags_are_not_md5s_and_agree_in_put_head_get_and_listings() {
    let (bed, kms) = Bed::kms("kms").await;
    let plain = bed.bucket("plain").await;
    let keys = ["simple", "dir/a b&c<d>é+%.txt"];
    let mut etags = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let data = body(i as u64, 300);
        let etag = put_via(&bed, &kms, key, &data).await;
        assert_ne!(etag, md5_etag(&data), "a KMS ETag is not the MD5");
        assert_eq!(head(&bed.via, &kms, key).await.e_tag().unwrap(), etag);
        let got = bed
            .via
            .get_object()
            .bucket(&kms)
            .key(*key)
            .send()
            .await
            .unwrap();
        assert_eq!(got.e_tag().unwrap(), etag);
        assert_eq!(
            got.body.collect().await.unwrap().into_bytes().as_ref(),
            data
        );
        etags.push(etag);
    }
    let listed: Vec<String> = list_all(&bed.via, &kms, "")
        .await
        .into_iter()
        .map(|l| l.etag)
        .collect();
    let mut expected = etags.clone();
    expected.sort_by_key(|e| keys[etags.iter().position(|x| x == e).unwrap()]);
    assert_eq!(listed, expected, "listing order is key order");
    let encoded = bed
        .via
        .list_objects_v2()
        .bucket(&kms)
        .encoding_type(EncodingType::Url)
        .send()
        .await
        .unwrap();
    let url_listed: Vec<&str> = encoded
        .contents()
        .iter()
        .filter_map(|o| o.e_tag())
        .collect();
    assert_eq!(url_listed, expected);

    let data = body(9, 100);
    assert_eq!(put_via(&bed, &plain, "k", &data).await, md5_etag(&data));
    assert_eq!(
        head(&bed.via, &plain, "k").await.e_tag(),
        Some(md5_etag(&data).as_str())
    );
}

/// A multipart KMS object keeps its `-N`, with another hex part than moto's.
#[tokio::test]
async fn kms_multipart_etags_keep_the_part_count() {
    let (bed, kms) = Bed::kms("kms-mp").await;
    let etag = put_multipart(&bed.via, &kms, "big", 11 * MIB, 5 * MIB).await;
    let moto = head(&bed.direct, &kms, "big")
        .await
        .e_tag()
        .unwrap()
        .to_owned();
    assert!(etag.ends_with("-3\""), "{etag}");
    assert_ne!(etag, moto);
    assert_eq!(
        head(&bed.via, &kms, "big").await.e_tag(),
        Some(etag.as_str())
    );
    assert_eq!(list_all(&bed.via, &kms, "").await[0].etag, etag);
}

/// Every write through the proxy gives a new ETag, identical bytes
/// included, as on AWS; a write straight to moto changes it only when the
/// bytes change, and a delete through the proxy counts as a write.
#[tokio::test]
async fn kms_etags_change_on_each_write_through_the_proxy() {
    let (bed, kms) = Bed::kms("kms-gen").await;
    let (a, b) = (body(1, 64), body(2, 64));
    let first = put_via(&bed, &kms, "k", &a).await;
    let second = put_via(&bed, &kms, "k", &a).await;
    assert_ne!(
        first, second,
        "a rewrite with the same bytes has a new ETag"
    );
    assert_eq!(
        head(&bed.via, &kms, "k").await.e_tag(),
        Some(second.as_str())
    );

    put(&bed.direct, &kms, "k", a.clone()).await;
    assert_eq!(
        head(&bed.via, &kms, "k").await.e_tag(),
        Some(second.as_str())
    );
    put(&bed.direct, &kms, "k", b.clone()).await;
    let third = head(&bed.via, &kms, "k").await.e_tag().unwrap().to_owned();
    assert_ne!(third, second, "other bytes give another ETag");

    bed.via
        .delete_object()
        .bucket(&kms)
        .key("k")
        .send()
        .await
        .unwrap();
    put(&bed.direct, &kms, "k", b).await;
    assert_ne!(
        head(&bed.via, &kms, "k").await.e_tag(),
        Some(third.as_str())
    );
}

/// `x-amz-copy-source-if-match` with a KMS source holds for the KMS ETag
/// and fails (412) for the MD5, on CopyObject and UploadPartCopy, whether
/// or not the proxy also enforces the condition for MD5 ETags.
#[tokio::test]
async fn kms_copy_source_if_match_is_judged_by_the_kms_etag() {
    let (bed, kms) = Bed::kms("kms-src").await;
    let dst = bed.bucket("kms-dst").await;
    let data = body(3, 1000);
    let etag = put_via(&bed, &kms, "src", &data).await;
    let copy = |if_match: String| {
        bed.via
            .copy_object()
            .bucket(&dst)
            .key("copy")
            .copy_source(format!("{kms}/src"))
            .copy_source_if_match(if_match)
            .send()
    };
    assert_eq!(
        refused(copy(md5_etag(&data)).await),
        (412, "PreconditionFailed".into())
    );
    assert_eq!(stored(&bed, &dst, "copy").await, None);
    copy(etag.clone()).await.expect("the KMS ETag holds");
    assert_eq!(get_bytes(&bed.direct, &dst, "copy").await, data);

    bed.proxy.enforce_copy_source_if_match();
    copy(etag.clone())
        .await
        .expect("still holds with enforcement on");
    let upload = bed
        .via
        .create_multipart_upload()
        .bucket(&dst)
        .key("parts")
        .send()
        .await
        .unwrap();
    let part_copy = |if_match: String| {
        bed.via
            .upload_part_copy()
            .bucket(&dst)
            .key("parts")
            .upload_id(upload.upload_id().unwrap())
            .part_number(1)
            .copy_source(format!("{kms}/src"))
            .copy_source_if_match(if_match)
            .send()
    };
    assert_eq!(refused(part_copy(md5_etag(&data)).await).0, 412);
    part_copy(etag)
        .await
        .expect("the KMS ETag holds for a part copy");
    bed.via
        .abort_multipart_upload()
        .bucket(&dst)
        .key("parts")
        .upload_id(upload.upload_id().unwrap())
        .send()
        .await
        .unwrap();
}

/// `If-Match` on GET, HEAD and DeleteObject, and `If-None-Match` on GET,
/// name KMS ETags in a KMS bucket.
#[tokio::test]
async fn kms_if_match_on_get_head_and_delete_is_judged_by_the_kms_etag() {
    let (bed, kms) = Bed::kms("kms-cond").await;
    let data = body(4, 200);
    let etag = put_via(&bed, &kms, "k", &data).await;
    let md5 = md5_etag(&data);
    let get = |if_match: &str| {
        bed.via
            .get_object()
            .bucket(&kms)
            .key("k")
            .if_match(if_match)
            .send()
    };
    assert_eq!(refused(get(&md5).await), (412, "PreconditionFailed".into()));
    let got = get(&etag).await.expect("the KMS ETag holds");
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        data
    );
    let head_if = |if_match: &str| {
        bed.via
            .head_object()
            .bucket(&kms)
            .key("k")
            .if_match(if_match)
            .send()
    };
    assert_eq!(refused(head_if(&md5).await).0, 412);
    head_if(&etag).await.expect("the KMS ETag holds for HEAD");
    let not_modified = bed
        .via
        .get_object()
        .bucket(&kms)
        .key("k")
        .if_none_match(&etag)
        .send()
        .await;
    assert_eq!(
        refused(not_modified).0,
        304,
        "If-None-Match with the current KMS ETag"
    );
    bed.via
        .get_object()
        .bucket(&kms)
        .key("k")
        .if_none_match(&md5)
        .send()
        .await
        .expect("the MD5 is not the object's ETag");

    let delete = |if_match: &str| {
        bed.via
            .delete_object()
            .bucket(&kms)
            .key("k")
            .if_match(if_match)
            .send()
    };
    assert_eq!(refused(delete(&md5).await).0, 412);
    assert_eq!(stored(&bed, &kms, "k").await, Some(data.clone()));
    delete(&etag)
        .await
        .expect("the KMS ETag holds for a delete");
    assert_eq!(stored(&bed, &kms, "k").await, None);
}

/// A DeleteObjects whose objects carry ETags deletes those whose KMS ETag
/// is current, and reports the others (an MD5, a stale KMS ETag) as
/// PreconditionFailed.
#[tokio::test]
async fn kms_delete_objects_judges_each_etag_in_kms_space() {
    let (bed, kms) = Bed::kms("kms-batch").await;
    let a = put_via(&bed, &kms, "a", &body(5, 10)).await;
    put_via(&bed, &kms, "b", &body(6, 10)).await;
    let stale = put_via(&bed, &kms, "c", &body(7, 10)).await;
    put_via(&bed, &kms, "c", &body(7, 10)).await;
    let object = |key: &str, etag: String| {
        ObjectIdentifier::builder()
            .key(key)
            .e_tag(etag)
            .build()
            .unwrap()
    };
    let out = bed
        .via
        .delete_objects()
        .bucket(&kms)
        .delete(
            Delete::builder()
                .objects(object("a", a))
                .objects(object("b", md5_etag(&body(6, 10))))
                .objects(object("c", stale))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let deleted: Vec<&str> = out.deleted().iter().filter_map(|d| d.key()).collect();
    let mut errors: Vec<(&str, &str)> = out
        .errors()
        .iter()
        .map(|e| (e.key().unwrap_or_default(), e.code().unwrap_or_default()))
        .collect();
    errors.sort();
    assert_eq!(deleted, ["a"]);
    assert_eq!(
        errors,
        [("b", "PreconditionFailed"), ("c", "PreconditionFailed")]
    );
    let left: Vec<String> = list_all(&bed.direct, &kms, "")
        .await
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(left, ["b", "c"]);
}

// ---------------------------------------------------------------- checksums

/// An object uploaded without a checksum has S3's default, CRC64NVME of the
/// whole object: shown by HEAD and GET in checksum mode only (GET's is
/// validated by the SDK against the body), named in listings, and computed
/// from the bytes, so an object written straight to moto has one too.
#[tokio::test]
async fn objects_get_a_default_crc64nvme_shown_in_checksum_mode_only() {
    let (bed, bucket) = Bed::checksums("crc-default").await;
    let data = body(10, 5000);
    put_via(&bed, &bucket, "k", &data).await;
    let out = head_checksum(&bed.via, &bucket, "k").await;
    assert_eq!(out.checksum_crc64_nvme(), Some(crc64nvme(&data).as_str()));
    assert_eq!(out.checksum_type(), Some(&ChecksumType::FullObject));
    let plain = head(&bed.via, &bucket, "k").await;
    assert_eq!(
        (plain.checksum_crc64_nvme(), plain.checksum_type()),
        (None, None),
        "no checksum without checksum mode"
    );
    let got = bed
        .via
        .get_object()
        .bucket(&bucket)
        .key("k")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(got.checksum_crc64_nvme(), Some(crc64nvme(&data).as_str()));
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        data
    );

    let other = body(11, 70);
    put(&bed.direct, &bucket, "behind", other.clone()).await;
    let out = head_checksum(&bed.via, &bucket, "behind").await;
    assert_eq!(out.checksum_crc64_nvme(), Some(crc64nvme(&other).as_str()));
    let listing = bed
        .via
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    for object in listing.contents() {
        assert_eq!(object.checksum_algorithm(), [ChecksumAlgorithm::Crc64Nvme]);
        assert_eq!(object.checksum_type(), Some(&ChecksumType::FullObject));
    }
}

/// A PutObject whose checksum does not match its bytes is refused with
/// BadDigest, and nothing is written.
#[tokio::test]
async fn a_put_with_a_wrong_checksum_is_refused_bad_digest() {
    let (bed, bucket) = Bed::checksums("crc-bad").await;
    let data = body(12, 100);
    let put_with = |value: String| {
        bed.via
            .put_object()
            .bucket(&bucket)
            .key("k")
            .body(ByteStream::from(data.clone()))
            .checksum_crc64_nvme(value)
            .send()
    };
    assert_eq!(
        refused(put_with(crc64nvme(b"other bytes")).await),
        (400, "BadDigest".into())
    );
    assert_eq!(stored(&bed, &bucket, "k").await, None);
    put_with(crc64nvme(&data))
        .await
        .expect("the right value is accepted");
    assert_eq!(get_bytes(&bed.direct, &bucket, "k").await, data);
}

/// A PUT of `chunks` in an unsigned aws-chunked body, with `trailer` (a
/// `name:value` line, or none) after it and `x-amz-trailer` naming
/// `declared`, and `x-amz-decoded-content-length` saying `decoded`: the
/// way the SDK sends bytes it checksums as they go, written out by hand so
/// the framing can be wrong. Returns the status and the whole answer.
fn chunked_put(
    endpoint: &str,
    path: &str,
    (chunks, decoded): (&[&[u8]], usize),
    declared: &str,
    trailer: Option<&str>,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut body = Vec::new();
    for chunk in chunks {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n");
    if let Some(line) = trailer {
        body.extend_from_slice(format!("{line}\r\n").as_bytes());
    }
    body.extend_from_slice(b"\r\n");
    let address = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Encoding: aws-chunked\r\nx-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER\r\n\
         x-amz-decoded-content-length: {decoded}\r\nx-amz-trailer: {declared}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// A checksum in the trailer of an aws-chunked body is checked as a header
/// one is: the SDK's own (a file body it checksums as it sends) is
/// accepted and kept; a wrong value is refused BadDigest, a body cut short
/// IncompleteBody, a declared trailer that never comes
/// MalformedTrailerError, and none of them stores anything.
#[tokio::test]
async fn a_trailing_checksum_is_checked_as_a_header_is() {
    let (bed, bucket) = Bed::checksums("crc-trailer").await;
    let data = body(13, 200_000);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    let when_supported = aws_sdk_s3::config::Builder::default().request_checksum_calculation(
        aws_sdk_s3::config::RequestChecksumCalculation::WhenSupported,
    );
    bed.via
        .put_object()
        .bucket(&bucket)
        .key("sdk")
        .body(ByteStream::from_path(file.path()).await.unwrap())
        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
        .customize()
        .config_override(when_supported)
        .send()
        .await
        .expect("the SDK's trailing CRC32C is accepted");
    let sent = bed.proxy.requests();
    let put = sent
        .iter()
        .rev()
        .find(|r| r.key.as_deref() == Some("sdk"))
        .unwrap();
    assert!(put.trailer, "{put:?}");
    assert_eq!(
        stored(&bed, &bucket, "sdk").await.as_deref(),
        Some(&data[..])
    );
    let crc32c = (crc_fast::checksum(CrcAlgorithm::Crc32Iscsi, &data) as u32).to_be_bytes();
    let head = head_checksum(&bed.via, &bucket, "sdk").await;
    assert_eq!(
        head.checksum_crc32_c(),
        Some(base64::encode(crc32c).as_str())
    );

    let (a, b) = data.split_at(70_000);
    let path = |key: &str| format!("/{bucket}/{key}");
    let crc = format!("x-amz-checksum-crc64nvme:{}", crc64nvme(&data));
    let wrong = format!("x-amz-checksum-crc64nvme:{}", crc64nvme(b"other"));
    let declared = "x-amz-checksum-crc64nvme";
    let endpoint = bed.proxy.endpoint();
    let whole = (&[a, b][..], data.len());
    let (status, answer) = chunked_put(endpoint, &path("wrong"), whole, declared, Some(&wrong));
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("<Code>BadDigest</Code>"), "{answer}");
    let (status, answer) = chunked_put(endpoint, &path("missing"), whole, declared, None);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("<Code>MalformedTrailerError</Code>"),
        "{answer}"
    );
    let (status, answer) = chunked_put(
        endpoint,
        &path("cut"),
        (&[a], data.len()),
        declared,
        Some(&crc),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("<Code>IncompleteBody</Code>"), "{answer}");
    for key in ["wrong", "missing", "cut"] {
        assert_eq!(stored(&bed, &bucket, key).await, None, "{key}");
    }
    let (status, answer) = chunked_put(endpoint, &path("right"), whole, declared, Some(&crc));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        stored(&bed, &bucket, "right").await.as_deref(),
        Some(&data[..])
    );
    let head = head_checksum(&bed.via, &bucket, "right").await;
    assert_eq!(head.checksum_crc64_nvme(), Some(crc64nvme(&data).as_str()));

    // A server without trailer support refuses the body whole, and still
    // takes a checksum sent as a header.
    bed.proxy.refuse_trailers();
    let (status, answer) = chunked_put(endpoint, &path("refused"), whole, declared, Some(&crc));
    assert_eq!(status, 501, "{answer}");
    assert!(answer.contains("<Code>NotImplemented</Code>"), "{answer}");
    assert_eq!(stored(&bed, &bucket, "refused").await, None);
    bed.via
        .put_object()
        .bucket(&bucket)
        .key("header")
        .body(ByteStream::from(data.clone()))
        .checksum_crc64_nvme(crc64nvme(&data))
        .send()
        .await
        .expect("a checksum header is still accepted");
}

/// Each algorithm's value is checked against the published check values
/// (CRC catalogue's "123456789"; FIPS 180 for SHA-1 and SHA-256, one and
/// two blocks), the object keeps the algorithm it was uploaded with, and
/// another algorithm's value is refused.
#[tokio::test]
async fn each_algorithm_matches_its_published_check_value() {
    let (bed, bucket) = Bed::checksums("crc-vectors").await;
    const CHECK: &[u8] = b"123456789";
    const TWO_BLOCKS: &[u8] = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    let cases: [(&str, &[u8], ChecksumAlgorithm, &str); 6] = [
        (
            "crc64nvme",
            CHECK,
            ChecksumAlgorithm::Crc64Nvme,
            "rosUhgp5mIg=",
        ),
        ("crc32", CHECK, ChecksumAlgorithm::Crc32, "y/Q5Jg=="),
        ("crc32c", CHECK, ChecksumAlgorithm::Crc32C, "4waSgw=="),
        (
            "sha1",
            CHECK,
            ChecksumAlgorithm::Sha1,
            "98O8HYCOBHMq32eZZczDTKeuNEE=",
        ),
        (
            "sha1-two-blocks",
            TWO_BLOCKS,
            ChecksumAlgorithm::Sha1,
            "hJg+RBw70m66rkqh+VEp5eVGcPE=",
        ),
        (
            "sha256",
            CHECK,
            ChecksumAlgorithm::Sha256,
            "FeKw08M4keuw8e9gnsQZQgwg4yDOlMZfvIwzEkSOsiU=",
        ),
    ];
    for (key, data, algorithm, value) in cases {
        let with = |v: &str| {
            let r = bed
                .via
                .put_object()
                .bucket(&bucket)
                .key(key)
                .body(ByteStream::from_static(data));
            match algorithm {
                ChecksumAlgorithm::Crc64Nvme => r.checksum_crc64_nvme(v),
                ChecksumAlgorithm::Crc32 => r.checksum_crc32(v),
                ChecksumAlgorithm::Crc32C => r.checksum_crc32_c(v),
                ChecksumAlgorithm::Sha1 => r.checksum_sha1(v),
                _ => r.checksum_sha256(v),
            }
        };
        // The value of another algorithm, or of other bytes.
        let wrong = if algorithm == ChecksumAlgorithm::Crc32 {
            "4waSgw=="
        } else {
            "y/Q5Jg=="
        };
        assert_eq!(refused(with(wrong).send().await).1, "BadDigest", "{key}");
        with(value)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key}: {e:?}"));
        let out = head_checksum(&bed.via, &bucket, key).await;
        let shown = match algorithm {
            ChecksumAlgorithm::Crc64Nvme => out.checksum_crc64_nvme(),
            ChecksumAlgorithm::Crc32 => out.checksum_crc32(),
            ChecksumAlgorithm::Crc32C => out.checksum_crc32_c(),
            ChecksumAlgorithm::Sha1 => out.checksum_sha1(),
            _ => out.checksum_sha256(),
        };
        assert_eq!(shown, Some(value), "{key}");
        assert_eq!(
            out.checksum_type(),
            Some(&ChecksumType::FullObject),
            "{key}"
        );
    }
}

/// A CopyObject keeps the source's algorithm (FULL_OBJECT, the same value
/// for the same bytes), unless it names another.
#[tokio::test]
async fn a_copy_keeps_the_source_algorithm_unless_it_names_one() {
    let (bed, src) = Bed::checksums("crc-copy-src").await;
    let dst = bed.bucket("crc-copy-dst").await;
    let data = body(13, 3000);
    let crc32 = base64::encode(crc32_raw(&data));
    bed.via
        .put_object()
        .bucket(&src)
        .key("k")
        .body(ByteStream::from(data.clone()))
        .checksum_crc32(&crc32)
        .send()
        .await
        .unwrap();
    let out = bed
        .via
        .copy_object()
        .bucket(&dst)
        .key("same")
        .copy_source(format!("{src}/k"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.copy_object_result().unwrap().checksum_crc32(),
        Some(crc32.as_str())
    );
    let copied = head_checksum(&bed.via, &dst, "same").await;
    assert_eq!(copied.checksum_crc32(), Some(crc32.as_str()));
    assert_eq!(copied.checksum_crc64_nvme(), None);
    assert_eq!(copied.checksum_type(), Some(&ChecksumType::FullObject));

    bed.via
        .copy_object()
        .bucket(&dst)
        .key("sha")
        .copy_source(format!("{src}/k"))
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap();
    let named = head_checksum(&bed.via, &dst, "sha").await;
    let sha256 = base64::encode(sha2::Sha256::digest(&data));
    assert_eq!(named.checksum_sha256(), Some(sha256.as_str()));
    assert_eq!(named.checksum_crc32(), None);
}

async fn create_upload(
    client: &Client,
    bucket: &str,
    key: &str,
    algorithm: Option<ChecksumAlgorithm>,
    kind: Option<ChecksumType>,
) -> String {
    client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .set_checksum_algorithm(algorithm)
        .set_checksum_type(kind)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned()
}

fn completed(parts: Vec<CompletedPart>) -> CompletedMultipartUpload {
    CompletedMultipartUpload::builder()
        .set_parts(Some(parts))
        .build()
}

/// A CRC64NVME FULL_OBJECT upload (one part uploaded, one copied from a
/// range) answers each part's checksum; its completion with a full-object
/// value that is not the object's is refused with BadDigest and the object
/// already under the key stays; with the right value it completes, and
/// HEAD shows that value.
#[tokio::test]
async fn a_full_object_upload_is_checked_at_completion() {
    let (bed, bucket) = Bed::checksums("crc-full").await;
    let source = body(14, 2 * MIB);
    put_via(&bed, &bucket, "source", &source).await;
    let earlier = body(15, 10);
    put_via(&bed, &bucket, "k", &earlier).await;

    let id = create_upload(
        &bed.via,
        &bucket,
        "k",
        Some(ChecksumAlgorithm::Crc64Nvme),
        Some(ChecksumType::FullObject),
    )
    .await;
    let first = body(16, 5 * MIB);
    let one = bed
        .via
        .upload_part()
        .bucket(&bucket)
        .key("k")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(first.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(one.checksum_crc64_nvme(), Some(crc64nvme(&first).as_str()));
    let two = bed
        .via
        .upload_part_copy()
        .bucket(&bucket)
        .key("k")
        .upload_id(&id)
        .part_number(2)
        .copy_source(format!("{bucket}/source"))
        .copy_source_range(format!("bytes=0-{}", MIB - 1))
        .send()
        .await
        .unwrap();
    let range = &source[..MIB];
    let part_result = two.copy_part_result().unwrap();
    assert_eq!(
        part_result.checksum_crc64_nvme(),
        Some(crc64nvme(range).as_str())
    );
    let parts = vec![
        CompletedPart::builder()
            .part_number(1)
            .set_e_tag(one.e_tag)
            .build(),
        CompletedPart::builder()
            .part_number(2)
            .set_e_tag(part_result.e_tag.clone())
            .build(),
    ];
    let whole = [first.as_slice(), range].concat();
    let complete = |value: String| {
        bed.via
            .complete_multipart_upload()
            .bucket(&bucket)
            .key("k")
            .upload_id(&id)
            .multipart_upload(completed(parts.clone()))
            .checksum_crc64_nvme(value)
            .checksum_type(ChecksumType::FullObject)
            .send()
    };
    assert_eq!(
        refused(complete(crc64nvme(&first)).await),
        (400, "BadDigest".into())
    );
    assert_eq!(
        get_bytes(&bed.direct, &bucket, "k").await,
        earlier,
        "S3 keeps the earlier object"
    );

    let out = complete(crc64nvme(&whole))
        .await
        .expect("the right value completes");
    assert_eq!(out.checksum_crc64_nvme(), Some(crc64nvme(&whole).as_str()));
    let shown = head_checksum(&bed.via, &bucket, "k").await;
    assert_eq!(
        shown.checksum_crc64_nvme(),
        Some(crc64nvme(&whole).as_str())
    );
    assert_eq!(shown.checksum_type(), Some(&ChecksumType::FullObject));
    assert_eq!(get_bytes(&bed.direct, &bucket, "k").await, whole);
}

/// An upload created without an algorithm, whose parts the proxy never saw
/// the bytes of (part copies), is checked against the object moto made: a
/// wrong full-object value is refused with BadDigest, and (unlike S3, which
/// would keep any earlier object) the object is gone.
#[tokio::test]
async fn a_full_object_value_is_checked_even_for_parts_copied_without_an_algorithm() {
    let (bed, bucket) = Bed::checksums("crc-late").await;
    let source = body(17, 6 * MIB);
    put_via(&bed, &bucket, "source", &source).await;
    for (key, value, accepted) in [
        ("bad", crc64nvme(b"x"), false),
        ("good", crc64nvme(&source), true),
    ] {
        let id = create_upload(&bed.via, &bucket, key, None, None).await;
        let copied = bed
            .via
            .upload_part_copy()
            .bucket(&bucket)
            .key(key)
            .upload_id(&id)
            .part_number(1)
            .copy_source(format!("{bucket}/source"))
            .send()
            .await
            .unwrap();
        let parts = vec![
            CompletedPart::builder()
                .part_number(1)
                .set_e_tag(copied.copy_part_result().unwrap().e_tag.clone())
                .build(),
        ];
        let result = bed
            .via
            .complete_multipart_upload()
            .bucket(&bucket)
            .key(key)
            .upload_id(&id)
            .multipart_upload(completed(parts))
            .checksum_crc64_nvme(value)
            .send()
            .await;
        if accepted {
            result.expect("the right value completes");
            let shown = head_checksum(&bed.via, &bucket, key).await;
            assert_eq!(
                shown.checksum_crc64_nvme(),
                Some(crc64nvme(&source).as_str())
            );
        } else {
            assert_eq!(refused(result), (400, "BadDigest".into()));
            assert_eq!(stored(&bed, &bucket, key).await, None);
        }
    }
}

/// A CRC32 upload is COMPOSITE unless asked otherwise: each part answers
/// its CRC32, a completion naming another part checksum is refused, and the
/// object's checksum is the CRC32 of the parts' CRC32s, `-2`.
#[tokio::test]
async fn a_composite_crc32_upload_has_a_dash_n_checksum() {
    let (bed, bucket) = Bed::checksums("crc-composite").await;
    let id = create_upload(&bed.via, &bucket, "k", Some(ChecksumAlgorithm::Crc32), None).await;
    let chunks = [body(18, 5 * MIB), body(19, 1024)];
    let mut parts = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let number = i as i32 + 1;
        let out = bed
            .via
            .upload_part()
            .bucket(&bucket)
            .key("k")
            .upload_id(&id)
            .part_number(number)
            .body(ByteStream::from(chunk.clone()))
            .send()
            .await
            .unwrap();
        let crc = base64::encode(crc32_raw(chunk));
        assert_eq!(out.checksum_crc32(), Some(crc.as_str()));
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag)
                .checksum_crc32(crc)
                .build(),
        );
    }
    let complete = |parts: Vec<CompletedPart>| {
        bed.via
            .complete_multipart_upload()
            .bucket(&bucket)
            .key("k")
            .upload_id(&id)
            .multipart_upload(completed(parts))
            .send()
    };
    let mut wrong = parts.clone();
    wrong[1] = CompletedPart::builder()
        .part_number(2)
        .set_e_tag(parts[1].e_tag.clone())
        .checksum_crc32("AAAAAA==")
        .build();
    assert_eq!(refused(complete(wrong).await), (400, "InvalidPart".into()));
    complete(parts)
        .await
        .expect("the parts' own checksums complete");

    let joined = [crc32_raw(&chunks[0]), crc32_raw(&chunks[1])].concat();
    let expected = format!("{}-2", base64::encode(crc32_raw(&joined)));
    let shown = head_checksum(&bed.via, &bucket, "k").await;
    assert_eq!(shown.checksum_crc32(), Some(expected.as_str()));
    assert_eq!(shown.checksum_type(), Some(&ChecksumType::Composite));
}

/// In a bucket of objects written before S3's default checksum, an object
/// uploaded without one has none, in any way it was written; one that named
/// an algorithm has it. Other buckets keep the default.
#[tokio::test]
async fn no_default_checksums_leaves_objects_without_one_unless_named() {
    let (bed, old) = Bed::checksums("crc-old").await;
    let new = bed.bucket("crc-new").await;
    bed.proxy.no_default_checksums(&old);
    let data = body(20, 400);
    put_via(&bed, &old, "plain", &data).await;
    put_multipart(&bed.via, &old, "multi", 6 * MIB, 5 * MIB).await;
    for key in ["plain", "multi"] {
        let out = head_checksum(&bed.via, &old, key).await;
        assert_eq!(
            (
                out.checksum_crc64_nvme(),
                out.checksum_crc32(),
                out.checksum_type()
            ),
            (None, None, None),
            "{key}"
        );
    }
    bed.via
        .put_object()
        .bucket(&old)
        .key("named")
        .body(ByteStream::from(data.clone()))
        .checksum_crc32(base64::encode(crc32_raw(&data)))
        .send()
        .await
        .unwrap();
    let named = head_checksum(&bed.via, &old, "named").await;
    assert_eq!(
        named.checksum_crc32(),
        Some(base64::encode(crc32_raw(&data)).as_str())
    );

    put_via(&bed, &new, "plain", &data).await;
    let other = head_checksum(&bed.via, &new, "plain").await;
    assert_eq!(other.checksum_crc64_nvme(), Some(crc64nvme(&data).as_str()));
}

/// With no switch on, the proxy passes moto's answers through: ETags and
/// checksum headers are moto's own.
#[tokio::test]
async fn without_the_switches_the_proxy_leaves_moto_alone() {
    let bed = Bed::new().await;
    let bucket = bed.bucket("off").await;
    let data = body(21, 100);
    let etag = put_via(&bed, &bucket, "k", &data).await;
    assert_eq!(etag, md5_etag(&data));
    let via = head_checksum(&bed.via, &bucket, "k").await;
    let direct = head_checksum(&bed.direct, &bucket, "k").await;
    assert_eq!(
        (via.e_tag(), via.checksum_crc64_nvme(), via.checksum_type()),
        (
            direct.e_tag(),
            direct.checksum_crc64_nvme(),
            direct.checksum_type()
        )
    );
}
