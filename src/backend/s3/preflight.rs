//! Is the bucket usable at all? A missing, forbidden or misplaced bucket is
//! a configuration error said plainly before anything is written, not a
//! thousand failed copies.

use crate::backend::s3::listing::{ListTarget, list_request};
use crate::base::error::{S3Failure, SyncError, classify};
use crate::model::entry::Side;

/// Check a bucket before any write (the serverless planner's preflight): a
/// missing or forbidden bucket is a configuration error, said plainly, not
/// a thousand failed copies. A one-key listing rather than HeadBucket, so
/// errors come with S3's own code (`NoSuchBucket`, `AccessDenied`).
///
/// The request is the listing's own (`list_request`): a requester-pays
/// bucket answers 403 to a request without `x-amz-request-payer`, so a
/// preflight without it would refuse a bucket the run can list.
pub async fn preflight(target: &ListTarget, side: Side) -> Result<(), SyncError> {
    let (bucket, side) = (&target.location.bucket, side.name());
    let expected_owner = target.expected_owner.as_deref();
    let result = list_request(target, &target.location.prefix)
        .max_keys(1)
        .send()
        .await;
    let Err(err) = result else { return Ok(()) };
    let failure = classify(&err);
    match bucket_problem(&failure, side, bucket, expected_owner) {
        Some(why) => Err(SyncError::Config(why)),
        None => Err(SyncError::s3(
            format!("checking the {side} bucket {bucket:?}"),
            failure,
        )),
    }
}

/// What a failed listing says about the bucket itself, if anything.
pub fn bucket_problem(
    failure: &S3Failure,
    side: &str,
    bucket: &str,
    expected_owner: Option<&str>,
) -> Option<String> {
    Some(match (failure.code.as_str(), failure.http_status) {
        ("NoSuchBucket", _) | (_, Some(404)) => {
            format!("the {side} bucket {bucket:?} does not exist")
        }
        // Every caller lists (the CLI's first page, the planner's
        // preflight), so the message can say what was denied: the listing,
        // which needs s3:ListBucket on the bucket itself.
        (_, Some(403)) => format!(
            "access to the {side} bucket {bucket:?} is denied: listing s3://{bucket} answered {}: {} (check the credentials, which need s3:ListBucket on it, {})",
            failure.code,
            failure.message,
            if expected_owner.is_some() {
                "the bucket policy, and that the bucket belongs to the expected owner"
            } else {
                "and the bucket policy"
            }
        ),
        (_, Some(301)) => format!(
            "the {side} bucket {bucket:?} is in another region: pass --{}-region",
            if side == "source" { "source" } else { "dest" }
        ),
        (_, Some(400)) => format!(
            "the {side} bucket {bucket:?} rejected the request: {}",
            failure.message
        ),
        _ => return None,
    })
}
