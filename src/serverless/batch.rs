//! Cutting copy tasks into the work queue's messages (a
//! [`CopyBatch`], defined with the other records in
//! [`contract`](super::contract)).
//!
//! A batch is cut when it reaches [`BatchLimits::max_tasks`] tasks, its JSON
//! reaches [`BatchLimits::max_message_bytes`] (SQS refuses messages over
//! 256 KiB), or its objects add up to [`BatchLimits::max_object_bytes`] (so
//! one copier invocation can copy them within its time limit).

use crate::base::error::{RetryClass, S3Failure, SyncError, classify};
use crate::serverless::contract::{CopyBatch, CopyTask, MESSAGE_VERSION};

/// SQS's limit for one message and for one SendMessageBatch call.
pub const SQS_MAX_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_tasks: usize,
    pub max_message_bytes: usize,
    pub max_object_bytes: u64,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            // Small enough that even a small sync spreads over many copier
            // invocations (a shard's page of 1,000 new keys becomes ten of
            // them), large enough that SQS and Lambda costs stay negligible:
            // a million messages per hundred million objects.
            max_tasks: 100,
            // 16 KiB under SQS's limit: room for the envelope and attributes.
            max_message_bytes: SQS_MAX_BYTES - 16 * 1024,
            // Server-side copies run at hundreds of MB/s each; 64 GiB keeps a
            // batch well inside a 15-minute invocation even when slow.
            max_object_bytes: 64 * 1024 * 1024 * 1024,
        }
    }
}

/// Packs tasks into batches named `{id_prefix}-{n:05}`, in key order.
pub struct BatchBuilder {
    run_id: String,
    id_prefix: String,
    next: usize,
    limits: BatchLimits,
    /// The write-phase range the batches come from, if any.
    range: Option<usize>,
    tasks: Vec<CopyTask>,
    bytes: usize,
    object_bytes: u64,
}

impl BatchBuilder {
    /// `first` is the number of the next batch: a resumed invocation goes on
    /// from the count in its checkpoint, so its batch ids are the ones the
    /// interrupted attempt would have used.
    pub fn new(run_id: &str, id_prefix: &str, first: usize, limits: BatchLimits) -> Self {
        let mut builder = BatchBuilder {
            run_id: run_id.to_owned(),
            id_prefix: id_prefix.to_owned(),
            next: first,
            limits,
            range: None,
            tasks: Vec::new(),
            bytes: 0,
            object_bytes: 0,
        };
        builder.bytes = builder.envelope_bytes();
        builder
    }

    /// Batches that name the write-phase range `shard` as their sender.
    pub fn from_range(mut self, shard: usize) -> Self {
        self.range = Some(shard);
        self.bytes = self.envelope_bytes();
        self
    }

    fn envelope_bytes(&self) -> usize {
        CopyBatch {
            version: MESSAGE_VERSION,
            run_id: self.run_id.clone(),
            batch_id: format!("{}-{:05}", self.id_prefix, self.next),
            tasks: Vec::new(),
            range: self.range,
        }
        .body()
        .len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Add a task; returns a full batch when the task did not fit with the others.
    pub fn push(&mut self, task: CopyTask) -> Option<CopyBatch> {
        let task_bytes = serde_json::to_string(&task)
            .expect("a task serialises")
            .len()
            + 1;
        let full = !self.tasks.is_empty()
            && (self.tasks.len() >= self.limits.max_tasks
                || self.bytes + task_bytes > self.limits.max_message_bytes
                || self.object_bytes + task.size() > self.limits.max_object_bytes);
        let out = if full { self.flush() } else { None };
        self.bytes += task_bytes;
        self.object_bytes += task.size();
        self.tasks.push(task);
        out
    }

    /// The batch of the tasks so far, if any.
    pub fn flush(&mut self) -> Option<CopyBatch> {
        if self.tasks.is_empty() {
            return None;
        }
        let batch = CopyBatch {
            version: MESSAGE_VERSION,
            run_id: self.run_id.clone(),
            batch_id: format!("{}-{:05}", self.id_prefix, self.next),
            tasks: std::mem::take(&mut self.tasks),
            range: self.range,
        };
        self.next += 1;
        self.object_bytes = 0;
        self.bytes = self.envelope_bytes();
        Some(batch)
    }
}

/// Send batches with SendMessageBatch: up to 10 messages and 256 KiB per
/// call. Entries SQS refuses are sent again; what still fails is an error
/// (retryable), and the caller's checkpoint makes the retry resend it.
pub async fn send_batches(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    batches: &[CopyBatch],
) -> Result<(), SyncError> {
    let bodies: Vec<(String, String)> = batches
        .iter()
        .map(|b| (format!("batch {}", b.batch_id), b.body()))
        .collect();
    send_messages(sqs, queue_url, "copy batches", &bodies).await
}

/// Send `bodies` ((name, body), the name for errors) with
/// SendMessageBatch, as [`send_batches`] does.
pub async fn send_messages(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    what: &str,
    bodies: &[(String, String)],
) -> Result<(), SyncError> {
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
    let mut start = 0;
    while start < bodies.len() {
        let (mut end, mut total) = (start, 0);
        while end < bodies.len() && end - start < 10 && total + bodies[end].1.len() <= SQS_MAX_BYTES
        {
            total += bodies[end].1.len();
            end += 1;
        }
        let mut pending: Vec<usize> = (start..end).collect();
        for attempt in 1..=3 {
            let entries = pending
                .iter()
                .map(|&i| {
                    SendMessageBatchRequestEntry::builder()
                        // Entry ids only pair requests with responses.
                        .id(i.to_string())
                        .message_body(&bodies[i].1)
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            let response = sqs
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| SyncError::s3(format!("sending {what} to SQS"), classify(&e)))?;
            pending = response
                .failed()
                .iter()
                .filter_map(|f| f.id().parse().ok())
                .collect();
            if pending.is_empty() {
                break;
            }
            let first = &response.failed()[0];
            if attempt == 3 || first.sender_fault() {
                return Err(SyncError::s3(
                    format!("SQS refused {}", bodies[pending[0]].0),
                    S3Failure {
                        code: first.code().to_owned(),
                        http_status: None,
                        message: first.message().unwrap_or_default().to_owned(),
                        class: if first.sender_fault() {
                            RetryClass::NonRetryable
                        } else {
                            RetryClass::Retryable
                        },
                    },
                ));
            }
        }
        start = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::diff::Action;
    use crate::model::entry::ObjectEntry;
    use proptest::prelude::*;

    fn entry(key: String, size: u64) -> ObjectEntry {
        ObjectEntry {
            version_id: None,
            key,
            size,
            etag: "0123456789abcdef0123456789abcdef-12".into(),
            last_modified_ms: 1_700_000_000_000,
            storage_class: Some("STANDARD".into()),
            checksum: None,
        }
    }

    #[test]
    fn a_batch_round_trips_and_refuses_another_version() {
        let mut builder = BatchBuilder::new("run-1", "00003-00001", 7, BatchLimits::default());
        assert!(
            builder
                .push(CopyTask::Copy {
                    object: entry("a b+%41/ü".into(), 5)
                })
                .is_none()
        );
        builder.push(CopyTask::Delete {
            key: "gone".into(),
            etag: "0123456789abcdef0123456789abcdef".into(),
        });
        let batch = builder.flush().unwrap();
        assert_eq!(batch.batch_id, "00003-00001-00007");
        assert_eq!(CopyBatch::parse(&batch.body()).unwrap(), batch);
        let newer = batch.body().replace("\"version\":1", "\"version\":2");
        assert!(
            CopyBatch::parse(&newer)
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
        assert!(builder.flush().is_none());
    }

    #[test]
    fn a_delete_task_carries_its_listed_etag_and_reads_one_written_without() {
        let listed = ObjectEntry {
            version_id: None,
            etag: "abc-2".into(),
            ..entry("gone".into(), 7)
        };
        let task = CopyTask::from_action(Action::Delete {
            destination: listed,
        })
        .unwrap();
        let json = serde_json::to_value(&task).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"op": "delete", "key": "gone", "etag": "abc-2"})
        );
        let Some(Action::Delete { destination }) = task.into_action() else {
            panic!("a delete task is a delete")
        };
        assert_eq!(
            (destination.key.as_str(), destination.etag.as_str()),
            ("gone", "abc-2")
        );
        // A message of a lister from before delete tasks carried the ETag.
        let old: CopyTask = serde_json::from_str(r#"{"op":"delete","key":"gone"}"#).unwrap();
        assert_eq!(
            old,
            CopyTask::Delete {
                key: "gone".into(),
                etag: String::new()
            }
        );
    }

    #[test]
    fn object_bytes_cut_a_batch() {
        let limits = BatchLimits {
            max_object_bytes: 100,
            ..BatchLimits::default()
        };
        let mut builder = BatchBuilder::new("r", "s", 0, limits);
        assert!(
            builder
                .push(CopyTask::Copy {
                    object: entry("a".into(), 60)
                })
                .is_none()
        );
        let full = builder
            .push(CopyTask::Copy {
                object: entry("b".into(), 60),
            })
            .unwrap();
        assert_eq!(full.tasks.len(), 1);
        // One object larger than the limit still travels, alone.
        let alone = builder
            .push(CopyTask::Copy {
                object: entry("c".into(), 500),
            })
            .unwrap();
        assert_eq!(alone.tasks[0].key(), "b");
    }

    proptest! {
        /// Whatever the keys (up to S3's 1,024 bytes, control characters that
        /// JSON escapes six-fold), every message fits SQS, and the batches
        /// carry every task once, in order.
        #[test]
        fn batches_fit_sqs_and_keep_every_task(
            keys in proptest::collection::vec("[\\x00-\\x1f a-z/ü]{1,300}", 1..400),
            max_tasks in 1usize..1500,
        ) {
            let limits = BatchLimits { max_tasks, ..BatchLimits::default() };
            let mut builder = BatchBuilder::new("run-x", "00000-00000", 0, limits);
            let mut batches = Vec::new();
            for key in &keys {
                // Stretch keys toward 1,024 bytes.
                let long = key.repeat(1024 / key.len().max(1)).chars().take(1024).collect::<String>();
                batches.extend(builder.push(CopyTask::Copy { object: entry(long, 1) }));
            }
            batches.extend(builder.flush());
            let mut seen = 0;
            for batch in &batches {
                prop_assert!(batch.body().len() <= limits.max_message_bytes, "{} bytes", batch.body().len());
                prop_assert!(batch.tasks.len() <= max_tasks);
                seen += batch.tasks.len();
            }
            prop_assert_eq!(seen, keys.len());
        }
    }
}
