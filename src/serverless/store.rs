//! The run's folder in the report bucket: the only state that outlives an
//! invocation.
//!
//! ```text
//! s3://REPORT_BUCKET/REPORT_PREFIX/RUN_ID/
//!   run.json                      the validated execution input and its shards (planner)
//!   sent/SHARD-SEQ.json           a lister invocation's checkpoint: cursor, counts, batches sent
//!   results/BATCH.json            one per batch: the delivery counted done (copier); the
//!                                 report does not read it
//!   rows/BATCH/DELIVERY.json      a delivery's report rows, only when it has some; the
//!                                 batch's done marker (counters.rs) names the one counted
//!   proven/SHARD.json             what a shard's write phase leaves VALIDATE: batches sent, proof chunks
//!   validate/SHARD-SEQ.json       a VALIDATE invocation's checkpoint and mismatches
//!   summary.json, failures.csv    the report (reporter)
//! s3://REPORT_BUCKET/REPORT_PREFIX/ledgers/NAME/
//!   manifest.json, chunk-*.zst    the ledger of proven pairs between one source
//!                                 and destination, shared by their runs (proofs.rs)
//! ```
//!
//! Objects are named by what they describe (batch id, shard and invocation
//! number), never by when they were written, so every write is idempotent:
//! a retried invocation or a redelivered message rewrites the same object.
//! The one exception, `rows/`, is named by delivery, because which
//! delivery counted is decided in the run counters, not here. What is
//! counted (batches sent and done, their outcomes) lives in the run
//! counters' DynamoDB table ([`crate::serverless::counters`]).

use std::collections::HashMap;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::base::error::{SyncError, classify};
use crate::base::metrics::RequestCounter;

#[derive(Debug, Clone)]
pub struct RunStore {
    s3: Client,
    bucket: String,
    prefix: String,
}

impl RunStore {
    pub fn new(s3: Client, bucket: String, prefix: String) -> Self {
        RunStore { s3, bucket, prefix }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The client it reads and writes with.
    pub fn client(&self) -> &Client {
        &self.s3
    }

    /// This store with its requests reported to `counter`, for the retries
    /// and throttles of one invocation.
    pub fn counted(&self, counter: &RequestCounter) -> RunStore {
        RunStore {
            s3: crate::base::client::with_counter(&self.s3, counter),
            ..self.clone()
        }
    }

    /// The full key of `name` in the run's folder.
    pub fn key(&self, run_id: &str, name: &str) -> String {
        format!("{}{run_id}/{name}", self.prefix)
    }

    pub fn run_url(&self, run_id: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(run_id, ""))
    }

    pub fn url(&self, run_id: &str, name: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(run_id, name))
    }

    pub async fn put_json<T: Serialize>(
        &self,
        run_id: &str,
        name: &str,
        value: &T,
    ) -> Result<(), SyncError> {
        let body = serde_json::to_vec(value).map_err(|e| SyncError::Report(e.to_string()))?;
        self.put_bytes(run_id, name, body, "application/json").await
    }

    pub async fn put_bytes(
        &self,
        run_id: &str,
        name: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), SyncError> {
        let key = self.key(run_id, name);
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| {
                SyncError::s3(format!("writing s3://{}/{key}", self.bucket), classify(&e))
            })?;
        Ok(())
    }

    /// Write `name` only if it does not exist yet (`If-None-Match: *`);
    /// false when it already did. The one compare-and-set S3 offers.
    pub async fn put_if_absent(
        &self,
        run_id: &str,
        name: &str,
        body: Vec<u8>,
    ) -> Result<bool, SyncError> {
        let key = self.key(run_id, name);
        match self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .if_none_match("*")
            .body(ByteStream::from(body))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(err) => {
                let failure = classify(&err);
                // 409: a concurrent conditional write of the same key.
                if matches!(failure.http_status, Some(412 | 409)) {
                    Ok(false)
                } else {
                    Err(SyncError::s3(
                        format!("writing s3://{}/{key}", self.bucket),
                        failure,
                    ))
                }
            }
        }
    }

    /// `None` when the object does not exist.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        run_id: &str,
        name: &str,
    ) -> Result<Option<T>, SyncError> {
        let key = self.key(run_id, name);
        let Some(bytes) = self.get_bytes(run_id, name).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| SyncError::Report(format!("s3://{}/{key} is not valid: {e}", self.bucket)))
    }

    /// `None` when the object does not exist.
    pub async fn get_bytes(&self, run_id: &str, name: &str) -> Result<Option<Vec<u8>>, SyncError> {
        let key = self.key(run_id, name);
        let response = match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(response) => response,
            Err(err) => {
                let failure = classify(&err);
                if failure.code == "NoSuchKey" || failure.http_status == Some(404) {
                    return Ok(None);
                }
                return Err(SyncError::s3(
                    format!("reading s3://{}/{key}", self.bucket),
                    failure,
                ));
            }
        };
        let bytes =
            response.body.collect().await.map_err(|e| {
                SyncError::Report(format!("reading s3://{}/{key}: {e}", self.bucket))
            })?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    /// Names (relative to the run's folder) of the objects under `folder`.
    pub async fn list(&self, run_id: &str, folder: &str) -> Result<Vec<String>, SyncError> {
        let versions = self.list_versions(run_id, folder).await?;
        Ok(versions.into_iter().map(|(name, _)| name).collect())
    }

    /// Names (relative to the run's folder) and ETags of the objects under
    /// `folder`: an object rewritten since it was read has a new ETag.
    pub async fn list_versions(
        &self,
        run_id: &str,
        folder: &str,
    ) -> Result<Vec<(String, String)>, SyncError> {
        let run_prefix = self.key(run_id, "");
        let prefix = self.key(run_id, folder);
        let mut names = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                SyncError::s3(
                    format!("listing s3://{}/{prefix}", self.bucket),
                    classify(&e),
                )
            })?;
            for object in page.contents() {
                if let Some(name) = object.key().and_then(|k| k.strip_prefix(&run_prefix)) {
                    names.push((
                        name.to_owned(),
                        object.e_tag().unwrap_or_default().to_owned(),
                    ));
                }
            }
        }
        Ok(names)
    }

    /// Read every JSON object under `folder`, a few at a time.
    pub async fn get_all<T: DeserializeOwned>(
        &self,
        run_id: &str,
        folder: &str,
    ) -> Result<Vec<(String, T)>, SyncError> {
        use futures::{StreamExt, TryStreamExt};
        let names = self.list(run_id, folder).await?;
        futures::stream::iter(names)
            .map(|name| async move {
                let value = self.get_json::<T>(run_id, &name).await?;
                Ok::<_, SyncError>(value.map(|v| (name, v)))
            })
            .buffered(16)
            .try_filter_map(|v| async move { Ok(v) })
            .try_collect()
            .await
    }
}

/// What a folder's JSON objects say, read again only when they change: a
/// watcher that refreshes every few seconds reads each of a run's results
/// once, not once per refresh. Each object is kept as `project` makes it
/// (a result's counts, say, not its report rows), so memory grows with the
/// number of objects, not with what they hold.
pub struct FolderCache<T> {
    folder: String,
    /// Name → (ETag when read, what was kept of it).
    objects: HashMap<String, (String, T)>,
}

impl<T> FolderCache<T> {
    pub fn new(folder: &str) -> Self {
        FolderCache {
            folder: folder.to_owned(),
            objects: HashMap::new(),
        }
    }

    /// List the folder; read the objects that are new or changed since the
    /// last refresh (a few at a time), forget the ones that are gone.
    /// Returns how many were read.
    pub async fn refresh<R: DeserializeOwned>(
        &mut self,
        store: &RunStore,
        run_id: &str,
        project: impl Fn(R) -> T,
    ) -> Result<usize, SyncError> {
        use futures::{StreamExt, TryStreamExt};
        let listed = store.list_versions(run_id, &self.folder).await?;
        let stale: Vec<(String, String)> = listed
            .iter()
            .filter(|(name, etag)| self.objects.get(name).is_none_or(|(seen, _)| seen != etag))
            .cloned()
            .collect();
        let fetched: Vec<(String, String, Option<R>)> = futures::stream::iter(stale)
            .map(|(name, etag)| async move {
                let value = store.get_json::<R>(run_id, &name).await?;
                Ok::<_, SyncError>((name, etag, value))
            })
            .buffered(16)
            .try_collect()
            .await?;
        let read = fetched.len();
        let present: std::collections::HashSet<&String> = listed.iter().map(|(n, _)| n).collect();
        self.objects.retain(|name, _| present.contains(name));
        for (name, etag, value) in fetched {
            // Deleted between the listing and the read: as if not listed.
            if let Some(value) = value {
                self.objects.insert(name, (etag, project(value)));
            }
        }
        Ok(read)
    }

    /// What was kept of each object, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.objects
            .iter()
            .map(|(name, (_, kept))| (name.as_str(), kept))
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}
