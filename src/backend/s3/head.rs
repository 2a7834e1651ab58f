//! Does this key exist, and as what? A HEAD that tells "absent" from
//! "denied" even where s3:ListBucket is scoped by prefix.

use aws_sdk_s3::Client;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::types::ChecksumMode;

use crate::base::error::{S3Failure, classify};
use crate::model::checksum::Checksum;
use crate::model::entry::{ObjectEntry, Side};
use crate::model::location::S3Location;
use crate::model::options::{CopyOptions, requester_pays};

/// HEAD the object at `relative` of `location`, on `side` of a run with
/// `options`: `None` when it does not exist.
pub async fn head_object(
    client: &Client,
    location: &S3Location,
    options: &CopyOptions,
    side: Side,
    relative: &str,
) -> Result<Option<ObjectEntry>, S3Failure> {
    let owner = match side {
        Side::Source => &options.expected_source_owner,
        Side::Destination => &options.expected_dest_owner,
    };
    let request = client
        .head_object()
        .bucket(&location.bucket)
        .key(location.key_for(relative))
        .set_expected_bucket_owner(owner.clone())
        .set_request_payer(requester_pays(options.request_payer))
        // The stored checksum comes with the answer at no extra cost: it is
        // what proves a pair equal where ETags cannot (SSE-KMS, SSE-C).
        // On a KMS object S3 asks for kms:Decrypt to return it
        // (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html>).
        .checksum_mode(ChecksumMode::Enabled);
    match request.send().await {
        Ok(head) => Ok(Some(ObjectEntry {
            version_id: None,
            key: relative.to_owned(),
            size: head.content_length().unwrap_or(0).max(0) as u64,
            etag: head
                .e_tag()
                .unwrap_or_default()
                .trim_matches('"')
                .to_owned(),
            last_modified_ms: head
                .last_modified()
                .and_then(|t| t.to_millis().ok())
                .unwrap_or(0),
            storage_class: head.storage_class().map(|c| c.as_str().to_owned()),
            checksum: stored_checksum(&head),
        })),
        Err(err) => {
            let failure = classify(&err);
            match failure.http_status {
                Some(404) => Ok(None),
                Some(403) => absent_behind_403(client, location, options, owner, relative)
                    .await
                    .and_then(|absent| if absent { Ok(None) } else { Err(failure) }),
                _ => Err(failure),
            }
        }
    }
}

/// The stored checksum a HEAD with checksum mode answered, if any.
pub fn stored_checksum(head: &HeadObjectOutput) -> Option<Checksum> {
    Checksum::from_fields(
        head.checksum_crc64_nvme(),
        head.checksum_crc32(),
        head.checksum_crc32_c(),
        head.checksum_sha1(),
        head.checksum_sha256(),
        head.checksum_type().map(|t| t.as_str()),
    )
}

/// Whether a key that HEAD answered 403 for is absent.
///
/// S3 answers a HEAD or GET of a missing key with 404 only when the caller
/// has `s3:ListBucket` on the bucket, and with 403 otherwise
/// (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html>,
/// "Permissions"). The stack grants `s3:ListBucket` only under an
/// `s3:prefix` condition, a key that HEAD and GET requests do not carry, so
/// there a missing key is a 403 too. A listing of the key as a prefix is
/// allowed by that condition and tells the two apart: the key, if it
/// exists, is the first listed. So a delete's source check, and the
/// replicator's, never read "denied" as "absent", nor "absent" as
/// "denied". Only a 403 costs this LIST.
async fn absent_behind_403(
    client: &Client,
    location: &S3Location,
    options: &CopyOptions,
    owner: &Option<String>,
    relative: &str,
) -> Result<bool, S3Failure> {
    let key = location.key_for(relative);
    let request = client
        .list_objects_v2()
        .bucket(&location.bucket)
        .prefix(&key)
        .max_keys(1)
        .set_expected_bucket_owner(owner.clone())
        .set_request_payer(requester_pays(options.request_payer));
    let page = request.send().await.map_err(|e| classify(&e))?;
    Ok(page.contents().first().and_then(|o| o.key()) != Some(key.as_str()))
}
