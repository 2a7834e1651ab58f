//! Reading one source object for an export: its bytes (GET, conditional on
//! the listed ETag), its content headers and user metadata (from the GET's
//! own answer, so they belong to the same version as the bytes), its tags,
//! and for a `-N` ETag the size of part 1 (one HEAD), which tells the
//! importer the part layout that reproduces the ETag.

use aws_sdk_s3::Client;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::RequestPayer;
use bytes::Bytes;

use super::format::ObjectHeaders;
use crate::backend::outcome::CopyError;
use crate::base::error::{RetryClass, S3Failure, classify};
use crate::model::entry::ObjectEntry;
use crate::model::location::S3Location;
use crate::model::s3_shape::{EtagShape, etag_shape, quoted};

/// Attempts at reading one body through: the SDK retries a request, but
/// not a body that breaks off once its answer has begun.
pub const BODY_ATTEMPTS: u32 = 4;

/// The exported bucket and how to reach it.
#[derive(Debug, Clone)]
pub struct Source {
    pub client: Client,
    pub location: S3Location,
    pub expected_owner: Option<String>,
    pub request_payer: bool,
}

/// A small object, read whole.
pub struct WholeObject {
    pub current: ObjectEntry,
    pub headers: ObjectHeaders,
    pub bytes: Bytes,
    /// It changed after it was listed: this is the version read instead.
    pub changed: bool,
}

/// What reading a small object found.
pub enum Small {
    Whole(WholeObject),
    /// Now larger than the limit: this version, to be streamed.
    Grown(ObjectEntry),
}

/// A GET's answer: the version it is, and its body still to be read.
pub struct Opened {
    /// The object as read: the listed entry's key, the GET's size, ETag and
    /// date (they differ from the listing's if the object changed).
    pub current: ObjectEntry,
    pub headers: ObjectHeaders,
    pub body: ByteStream,
}

impl Source {
    fn payer(&self) -> Option<RequestPayer> {
        self.request_payer.then_some(RequestPayer::Requester)
    }

    /// GET `entry` as listed; if it changed since (412), GET it as it is
    /// now. `Ok((opened, changed))`; a vanished object is
    /// [`CopyError::Vanished`], an archived one [`CopyError::Archived`].
    pub async fn open(&self, entry: &ObjectEntry) -> Result<(Opened, bool), CopyError> {
        match self.get(entry, Some(&entry.etag), None).await {
            Err(CopyError::SourceChanged) => {
                tracing::info!(key = %entry.key, "changed since it was listed; exporting it as it is now");
                match self.get(entry, None, None).await {
                    Ok(opened) => Ok((opened, true)),
                    Err(err) => Err(err),
                }
            }
            other => other.map(|opened| (opened, false)),
        }
    }

    /// GET the object of `entry` (only the version with ETag `if_match`,
    /// when given) from byte `from` on.
    pub async fn get(
        &self,
        entry: &ObjectEntry,
        if_match: Option<&str>,
        from: Option<u64>,
    ) -> Result<Opened, CopyError> {
        let out: GetObjectOutput = self
            .client
            .get_object()
            .bucket(&self.location.bucket)
            .key(self.location.key_for(&entry.key))
            // An export `--as-of` reads the version its listing chose.
            .set_version_id(entry.version_id.clone())
            .set_if_match(if_match.map(quoted))
            .set_range(from.map(|f| format!("bytes={f}-")))
            .set_expected_bucket_owner(self.expected_owner.clone())
            .set_request_payer(self.payer())
            .send()
            .await
            .map_err(|e| CopyError::from_failure(classify(&e)))?;
        let size = match (from, out.content_range()) {
            // `bytes START-END/TOTAL`: the object's size is after the slash.
            (Some(_), Some(range)) => range
                .rsplit_once('/')
                .and_then(|(_, total)| total.parse().ok())
                .unwrap_or(entry.size),
            _ => out.content_length().unwrap_or(0).max(0) as u64,
        };
        let current = ObjectEntry {
            version_id: entry.version_id.clone(),
            key: entry.key.clone(),
            size,
            etag: out.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
            last_modified_ms: out
                .last_modified()
                .and_then(|t| t.to_millis().ok())
                .unwrap_or(entry.last_modified_ms),
            // A GET names the class only when it is not STANDARD.
            storage_class: out
                .storage_class()
                .map(|c| c.as_str().to_owned())
                .or_else(|| entry.storage_class.clone()),
            checksum: None,
        };
        let headers = ObjectHeaders {
            content_type: out.content_type().map(str::to_owned),
            content_encoding: out.content_encoding().map(str::to_owned),
            content_disposition: out.content_disposition().map(str::to_owned),
            content_language: out.content_language().map(str::to_owned),
            cache_control: out.cache_control().map(str::to_owned),
            metadata: out
                .metadata()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        };
        Ok(Opened {
            current,
            headers,
            body: out.body,
        })
    }

    /// A small object's whole body, read again from the start if it breaks
    /// off, always the version first opened (If-Match on its ETag). If it
    /// has grown past `limit` since it was listed, its body is left unread
    /// and [`Small::Grown`] says to stream it instead: memory stays bounded
    /// whatever happens to the bucket meanwhile.
    pub async fn read_whole(&self, entry: &ObjectEntry, limit: u64) -> Result<Small, CopyError> {
        let (opened, changed) = self.open(entry).await?;
        let Opened {
            current,
            headers,
            mut body,
        } = opened;
        if current.size > limit {
            return Ok(Small::Grown(current));
        }
        let mut attempt = 1;
        loop {
            match body.collect().await {
                Ok(data) => {
                    let bytes = data.into_bytes();
                    if bytes.len() as u64 == current.size {
                        return Ok(Small::Whole(WholeObject {
                            current,
                            headers,
                            bytes,
                            changed,
                        }));
                    }
                    tracing::warn!(key = %entry.key, got = bytes.len(), expected = current.size, "short body");
                }
                Err(e) => tracing::warn!(key = %entry.key, error = %e, "the body broke off"),
            }
            if attempt >= BODY_ATTEMPTS {
                return Err(body_failed(&entry.key));
            }
            attempt += 1;
            body = self.get(&current, Some(&current.etag), None).await?.body;
        }
    }

    /// The object's tags. A server without tagging (Garage answers
    /// NotImplemented) costs the tags, not the object: `Err` is then the
    /// warning to report, and the object is exported without tags.
    pub async fn tags(
        &self,
        entry: &ObjectEntry,
    ) -> Result<Result<Vec<(String, String)>, String>, CopyError> {
        let answer = self
            .client
            .get_object_tagging()
            .bucket(&self.location.bucket)
            .key(self.location.key_for(&entry.key))
            .set_version_id(entry.version_id.clone())
            .set_expected_bucket_owner(self.expected_owner.clone())
            .set_request_payer(self.payer())
            .send()
            .await;
        match answer {
            Ok(out) => Ok(Ok(out
                .tag_set()
                .iter()
                .map(|t| (t.key().to_owned(), t.value().to_owned()))
                .collect())),
            Err(e) => {
                let failure = classify(&e);
                if failure.code == "NotImplemented" || failure.http_status == Some(501) {
                    Ok(Err(format!(
                        "tags not exported: the server does not implement GetObjectTagging ({})",
                        failure.message
                    )))
                } else {
                    Err(CopyError::from_failure(failure))
                }
            }
        }
    }

    /// For a `-N` ETag, the size of part 1 if the server reports it and
    /// the part count agrees. Best effort: without it the importer tries
    /// the part sizes common tools use.
    pub async fn part_size(&self, entry: &ObjectEntry) -> Option<u64> {
        let EtagShape::Multipart(parts) = etag_shape(&entry.etag) else {
            return None;
        };
        // No If-Match: some servers (moto) apply it to the part's ETag.
        let head = self
            .client
            .head_object()
            .bucket(&self.location.bucket)
            .key(self.location.key_for(&entry.key))
            .set_version_id(entry.version_id.clone())
            .part_number(1)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .set_request_payer(self.payer())
            .send()
            .await;
        match head {
            Ok(out) if out.parts_count() == Some(parts as i32) => out
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .filter(|n| *n > 0),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(key = %entry.key, error = %classify(&e).message, "part 1 unknown");
                None
            }
        }
    }
}

/// A body that kept breaking off.
pub fn body_failed(key: &str) -> CopyError {
    tracing::warn!(key, "giving up on a body that kept breaking off");
    CopyError::Failed(S3Failure {
        code: "IncompleteBody".into(),
        http_status: None,
        message: format!(
            "the object's body broke off {BODY_ATTEMPTS} times while it was read; the next export will try again"
        ),
        class: RetryClass::Retryable,
    })
}
