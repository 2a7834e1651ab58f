//! Batched, conditional deletes: DeleteObjects a thousand keys at a time,
//! each on the ETag listed at the destination, read back key by key.

use aws_sdk_s3::Client;

use crate::backend::outcome::DeleteOutcome;
use crate::backend::s3::head::head_object;
use crate::base::error::{RetryClass, S3Failure, classify};
use crate::model::entry::{ObjectEntry, Side};
use crate::model::location::S3Location;
use crate::model::options::{CopyOptions, requester_pays};
use crate::model::s3_shape::MAX_DELETE_KEYS;
use crate::model::s3_shape::quoted;

/// Delete listed destination objects of `location`, [`MAX_DELETE_KEYS`] to
/// a DeleteObjects request, each only if it still has the ETag it was
/// listed with. Returns one outcome per entry, in order.
///
/// The condition is the object's `ETag` element in the request body: S3
/// evaluates it per object, deletes the ones that match and reports the
/// others under `<Error>` (`PreconditionFailed`), in a `200 OK`. See "How
/// to perform conditional deletes",
/// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-deletes.html>
/// (the same page documents `If-Match` on DeleteObject). So a 200 proves
/// nothing by itself: an entry counts as deleted only when the response
/// names it under `<Deleted>` (verbose mode, not quiet), and one it names
/// nowhere fails, retryably.
///
/// An entry without an ETag (a copier message written before delete tasks
/// carried one) is deleted without that condition; its source was checked
/// like any other's.
///
/// S3-compatible servers that predate conditional deletes may refuse the
/// ETag (`NotImplemented`, for the request or per object). For those
/// objects the condition is checked by a HEAD first and the delete sent
/// without it: a write landing between the two is then not protected,
/// which is the best such a server allows. A server that silently ignores
/// the element cannot be told apart here.
pub async fn delete_objects(
    client: &Client,
    location: &S3Location,
    options: &CopyOptions,
    entries: &[ObjectEntry],
    concurrency: usize,
) -> Vec<DeleteOutcome> {
    let mut outcomes = Vec::with_capacity(entries.len());
    for chunk in entries.chunks(MAX_DELETE_KEYS) {
        let mut answered = match delete_chunk(client, location, options, chunk, true).await {
            Ok(answered) => answered,
            Err(failure) if not_implemented(&failure.code, failure.http_status) => {
                vec![DeleteOutcome::Failed(failure); chunk.len()]
            }
            Err(failure) => {
                outcomes.extend(vec![DeleteOutcome::Failed(failure); chunk.len()]);
                continue;
            }
        };
        let refused: Vec<usize> = (0..chunk.len())
            .filter(|&i| match &answered[i] {
                DeleteOutcome::Failed(f) => not_implemented(&f.code, f.http_status),
                _ => false,
            })
            .collect();
        if !refused.is_empty() {
            let again: Vec<ObjectEntry> = refused.iter().map(|&i| chunk[i].clone()).collect();
            let fallback = delete_after_head(client, location, options, &again, concurrency).await;
            for (i, outcome) in refused.into_iter().zip(fallback) {
                answered[i] = outcome;
            }
        }
        outcomes.extend(answered);
    }
    outcomes
}

/// A server that does not do conditional deletes.
fn not_implemented(code: &str, status: Option<u16>) -> bool {
    code == "NotImplemented" || status == Some(501)
}

/// One DeleteObjects request for at most [`MAX_DELETE_KEYS`] entries,
/// conditional on their ETags when `conditional`. `Err`: the request as a
/// whole failed (nothing is known to be deleted).
async fn delete_chunk(
    client: &Client,
    location: &S3Location,
    options: &CopyOptions,
    chunk: &[ObjectEntry],
    conditional: bool,
) -> Result<Vec<DeleteOutcome>, S3Failure> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let identifiers = chunk
        .iter()
        .map(|entry| {
            ObjectIdentifier::builder()
                .key(location.key_for(&entry.key))
                .set_e_tag((conditional && !entry.etag.is_empty()).then(|| quoted(&entry.etag)))
                .build()
                .expect("an object identifier has its key")
        })
        .collect();
    let delete = Delete::builder()
        .set_objects(Some(identifiers))
        // Verbose: every object deleted is named, so none is assumed.
        .quiet(false)
        .build()
        .expect("a delete has its objects");
    let request = client
        .delete_objects()
        .bucket(&location.bucket)
        .delete(delete)
        .set_expected_bucket_owner(options.expected_dest_owner.clone())
        .set_request_payer(requester_pays(options.request_payer));
    let response = request.send().await.map_err(|e| classify(&e))?;
    let mut by_key: std::collections::HashMap<&str, DeleteOutcome> =
        std::collections::HashMap::new();
    for deleted in response.deleted() {
        if let Some(key) = deleted.key() {
            by_key.insert(key, DeleteOutcome::Deleted);
        }
    }
    for error in response.errors() {
        let Some(key) = error.key() else { continue };
        let code = error.code().unwrap_or("UnknownError");
        let outcome = match code {
            "PreconditionFailed" => DeleteOutcome::DestinationChanged,
            // A conditional delete of a key that is gone: what the delete
            // was for already holds (an earlier delivery deleted it).
            "NoSuchKey" => DeleteOutcome::Deleted,
            _ => DeleteOutcome::Failed(S3Failure {
                code: code.to_owned(),
                http_status: None,
                message: format!(
                    "DeleteObjects did not delete it: {}",
                    error.message().unwrap_or("no message")
                ),
                class: if crate::base::error::RETRYABLE_CODES.contains(&code) {
                    RetryClass::Retryable
                } else {
                    RetryClass::NonRetryable
                },
            }),
        };
        by_key.insert(key, outcome);
    }
    Ok(chunk
        .iter()
        .map(|entry| {
            by_key
                .get(location.key_for(&entry.key).as_str())
                .cloned()
                .unwrap_or_else(|| {
                    DeleteOutcome::Failed(S3Failure {
                        code: "DeleteNotConfirmed".into(),
                        http_status: Some(200),
                        message: "DeleteObjects answered without naming this key as deleted or failed; it is not counted as deleted".into(),
                        class: RetryClass::Retryable,
                    })
                })
        })
        .collect())
}

/// The fallback for servers without conditional deletes: HEAD each
/// destination object, `concurrency` at once, then delete the ones that
/// still have their listed ETag, unconditionally, in one request.
async fn delete_after_head(
    client: &Client,
    location: &S3Location,
    options: &CopyOptions,
    entries: &[ObjectEntry],
    concurrency: usize,
) -> Vec<DeleteOutcome> {
    use futures::StreamExt;
    // Owned keys, as in `Mover::delete_listed`.
    let keys: Vec<String> = entries.iter().map(|entry| entry.key.clone()).collect();
    let heads: Vec<Result<Option<ObjectEntry>, S3Failure>> =
        futures::stream::iter(keys)
            .map(|key| async move {
                head_object(client, location, options, Side::Destination, &key).await
            })
            .buffered(concurrency.max(1))
            .collect()
            .await;
    let mut outcomes: Vec<Option<DeleteOutcome>> = heads
        .into_iter()
        .zip(entries)
        .map(|(head, listed)| match head {
            Ok(None) => Some(DeleteOutcome::Deleted),
            Ok(Some(now)) if now.etag != listed.etag && !listed.etag.is_empty() => {
                Some(DeleteOutcome::DestinationChanged)
            }
            Ok(Some(_)) => None,
            Err(failure) => Some(DeleteOutcome::Failed(failure)),
        })
        .collect();
    let unchanged: Vec<ObjectEntry> = entries
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| outcome.is_none())
        .map(|(entry, _)| entry.clone())
        .collect();
    let mut deleted = if unchanged.is_empty() {
        Vec::new()
    } else {
        match delete_chunk(client, location, options, &unchanged, false).await {
            Ok(deleted) => deleted,
            Err(failure) => vec![DeleteOutcome::Failed(failure); unchanged.len()],
        }
    }
    .into_iter();
    for outcome in outcomes.iter_mut().filter(|o| o.is_none()) {
        *outcome = deleted.next();
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every entry has an outcome"))
        .collect()
}

/// Delete the destination object at `relative` of `location`.
pub async fn delete_object(
    client: &Client,
    location: &S3Location,
    options: &CopyOptions,
    relative: &str,
) -> Result<(), S3Failure> {
    let request = client
        .delete_object()
        .bucket(&location.bucket)
        .key(location.key_for(relative))
        .set_expected_bucket_owner(options.expected_dest_owner.clone())
        .set_request_payer(requester_pays(options.request_payer));
    request.send().await.map(|_| ()).map_err(|e| classify(&e))
}
