//! The replicator: S3 event notifications in, each key reconciled.
//!
//! ```text
//!  source bucket ─ notification (native, or an EventBridge rule) ─▶ event queue ─ ESM ─▶ replicator
//!                                                                       └─ DLQ ◀─ events no retry can fix
//!  per distinct key of a batch:  HEAD source + HEAD destination ─▶ decide (the sync's diff rules)
//!      ─▶ CopyObject / UploadPartCopy (the sync's copy code) or DeleteObject ─▶ HEAD source again
//! ```
//!
//! An event only says *that* a key changed. The replicator never replays
//! what the event says happened; it looks at the key's current state on both
//! sides and makes the destination match the source, with the same
//! [`decide`] and [`Copier`] as a full sync (so metadata, tags, storage
//! class and part layout are kept, and multipart is used above the
//! threshold). Duplicate, late and out-of-order events then all converge:
//! whichever arrives last, it reconciles against the newest state.
//!
//! Which key an event names is not always certain: S3's two event shapes
//! encode keys differently, and one of them undocumentedly (see
//! [`crate::serverless::events`]). So a key is never taken as absent at the
//! source from one reading of it: when the event's own reading is absent,
//! the other readings are tried in order, and the first that exists is the
//! key reconciled. Only when every reading is absent is the key absent, and
//! then only the event's own reading is reconciled: another reading's
//! destination copy belongs to a key the event does not name, and is never
//! deleted on its account (an EventBridge event for `video+data.mp4` must
//! not delete `video data.mp4`).
//!
//! Two invocations can race on one key (a put and a delete a moment apart,
//! each delivered to a different copier). After acting, an invocation reads
//! the source again; if it is no longer what the action was based on, it
//! reconciles once more. The last action on a key is therefore always
//! followed by a check against the source's final state. Copies are also
//! conditional on the ETag the HEAD saw (`x-amz-copy-source-if-match`), so
//! a stale copy cannot land over a newer one.
//!
//! With `ReplicateAllVersions` (`S3_FANOUT_REPLICATE_ALL_VERSIONS`), the
//! replicator appends instead of reconciling: each key's two version
//! histories are listed and aligned, and what the destination lacks is
//! appended oldest first ([`histories::append_key`], the copier's own), so
//! a late or duplicate event appends nothing. Both buckets' versioning is
//! checked once, when the replicator is built.
//!
//! A pair the replicator proves equal although its ETags differ (a copy
//! into a KMS destination, equal stored checksums) goes into the ledger's
//! journal, one object per invocation, so the next run proves it from its
//! listings alone instead of by two HEADs
//! ([`crate::backend::ledger::journal`]).
//!
//! Outcomes: every key gets one structured log line, and every invocation
//! one set of CloudWatch Embedded Metric Format figures: every function's
//! ([`emf::function_record`]: objects copied, skipped and failed, retries,
//! throttles, duration) and the replicator's own (replicated, deleted,
//! failed, lag from the event's time). Messages whose failure a
//! retry can fix are handed back (`batchItemFailures`) and, after
//! `maxReceiveCount` receives, moved to the dead-letter queue by SQS; those
//! no retry can fix (access denied, an unreadable message) go to the
//! dead-letter queue at once, with the reason as a message attribute.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::MessageAttributeValue;
use futures::StreamExt;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::backend::ledger::journal;
use crate::backend::ledger::proven::Proven;
use crate::backend::ledger::store::StateStore;
use crate::backend::outcome::CopyError;
use crate::backend::s3::copier::Copier;
use crate::backend::s3::list_target::ListTarget;
use crate::base::error::{RetryClass, S3Failure, SyncError, classify};
use crate::base::metrics::RequestCounter;
use crate::engine::diff::{Action, SkipReason, decide};
use crate::engine::histories;
use crate::engine::prove::without_checksums;
use crate::model::checksum::{Proof, prove};
use crate::model::entry::{ObjectEntry, Pair, Side};
use crate::model::options::{DiffMode, DiffOptions, SyncOptions, SyncSpec};
use crate::report::emf::{self, MetricRecord, Unit, Work, now_ms};
use crate::report::ledger::TaskStatus;
use crate::serverless::FunctionEnv;
use crate::serverless::events::{EventBody, ObjectEvent, parse_body};

/// Reconcile rounds for one key before its message is handed back: each
/// extra round means the source changed while the key was being copied.
const MAX_ROUNDS: u32 = 4;

/// The CloudWatch namespace of every s3-fanout metric.
pub const METRIC_NAMESPACE: &str = emf::NAMESPACE;

/// Built once per container from the stack's configuration.
pub struct Replicator {
    copier: Arc<Copier>,
    /// The ledger the stack's runs between these buckets keep, whose
    /// journal this replicator appends to; `None` where they keep none.
    journal: Option<StateStore>,
    diff: DiffOptions,
    /// Append each key's new versions and delete markers to its history
    /// at the destination (`ReplicateAllVersions`), rather than reconcile
    /// its current state.
    all_versions: bool,
    sqs: aws_sdk_sqs::Client,
    dead_letter_queue_url: Option<String>,
    max_receive_count: u32,
    concurrency: usize,
    function_name: String,
}

/// What happened to one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The destination now matches the source (a copy or an update).
    Replicated { bytes: u64, warnings: Vec<String> },
    /// The source is gone and so is now the destination object.
    Deleted,
    /// Nothing to do: both sides already agree (a duplicate or late event).
    InSync,
    /// The source is gone; deletes are not replicated, so the copy stays.
    DeleteNotPropagated,
    /// Not this replicator's: another bucket, outside the source prefix, or
    /// left out by the include/exclude rules.
    Ignored { reason: String },
    /// An object S3 cannot copy as it is (archived, or encrypted with a
    /// customer key): the nightly sync reports it too.
    Skipped { code: String, message: String },
    Failed {
        code: String,
        message: String,
        retryable: bool,
    },
}

impl Outcome {
    fn name(&self) -> &'static str {
        match self {
            Outcome::Replicated { .. } => "replicated",
            Outcome::Deleted => "deleted",
            Outcome::InSync => "in_sync",
            Outcome::DeleteNotPropagated => "delete_not_propagated",
            Outcome::Ignored { .. } => "ignored",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Failed { .. } => "failed",
        }
    }

    fn failed(failure: &S3Failure, context: &str) -> Self {
        Outcome::Failed {
            code: failure.code.clone(),
            message: format!("{context}: {}", failure.message),
            retryable: failure.class == RetryClass::Retryable,
        }
    }
}

/// One distinct key of an invocation.
#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    pub bucket: String,
    /// The key reconciled: the event's key by its shape's rule, or the other
    /// reading of it that exists at the source.
    pub key: String,
    /// The event's key by its shape's rule, when another reading was
    /// reconciled instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_as_other: Option<String>,
    /// Events for this key in the invocation (duplicates are reconciled once).
    pub events: usize,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// From the oldest of its events to the end of the reconcile, for keys
    /// that were replicated or deleted.
    pub lag_ms: Option<i64>,
    pub rounds: u32,
    /// The pair as proven equal, when its ETags differ: for the journal.
    #[serde(skip)]
    pub proven: Option<Proven>,
}

/// Everything one invocation did: the response for SQS, a report per key,
/// and the metrics.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    pub response: SqsBatchResponse,
    pub keys: Vec<KeyReport>,
    pub test_events: usize,
    /// Messages that were not S3 events.
    pub unreadable: usize,
    /// Messages this invocation sent to the dead-letter queue itself.
    pub dead_lettered: usize,
    /// Proven pairs appended to the ledger's journal.
    pub journaled: usize,
    /// Requests sent again, and answers asking to slow down.
    pub retries: u64,
    pub throttles: u64,
    /// EMF lines, written by [`emf::write_lines`] in the Lambda.
    pub metric_lines: Vec<String>,
}

impl Invocation {
    pub fn count(&self, outcome: &str) -> usize {
        self.keys
            .iter()
            .filter(|k| k.outcome.name() == outcome)
            .count()
    }
}

/// The Lambda entry point.
pub async fn handle(
    event: LambdaEvent<SqsEvent>,
    replicator: &Replicator,
) -> Result<SqsBatchResponse, Diagnostic> {
    let deadline = event.context.deadline();
    let invocation = replicator.replicate(event.payload.records, deadline).await;
    emf::write_lines(&invocation.metric_lines);
    Ok(invocation.response)
}

/// A message's fate once its keys are reconciled.
#[derive(Debug, Clone, Default)]
struct MessageFate {
    /// Why another delivery could succeed, if it could.
    retry: Vec<String>,
    /// Why no delivery can, if so.
    dead_letter: Vec<String>,
}

impl Replicator {
    /// The stack's source, destination, mode, filters and delete setting.
    pub async fn new(env: &FunctionEnv) -> Result<Self, SyncError> {
        let config = &env.config;
        let required = |value: &Option<String>, name: &str| {
            value.clone().ok_or_else(|| {
                SyncError::Config(format!(
                    "{name} is not set: the replicator copies from the stack's source to its destination"
                ))
            })
        };
        let mut spec = SyncSpec {
            source: required(&config.source, "S3_FANOUT_SOURCE")?,
            destination: required(&config.destination, "S3_FANOUT_DESTINATION")?,
            mode: config.mode.unwrap_or(DiffMode::Etag),
            include: config.include.clone(),
            exclude: config.exclude.clone(),
            delete: config.replicate_deletes,
            ..SyncSpec::default()
        };
        config.apply_client(&mut spec);
        config.apply_encryption(&mut spec);
        let journal = match crate::serverless::input::ledger_state(&spec, config)? {
            Some(state) => Some(StateStore::at(&state.parse()?, env.store.client())),
            None => None,
        };
        let options = SyncOptions::try_from(spec)?;
        let copier = Arc::new(env.copier_for(&options).await?);
        let all_versions = config.replicate_all_versions;
        if all_versions {
            // Refused before any event is taken, naming the bucket, as a
            // sync --all-versions refuses it.
            let (source, destination) = (
                ListTarget::for_side(
                    &copier.source_client,
                    &copier.source,
                    &options,
                    Side::Source,
                ),
                ListTarget::for_side(
                    &copier.destination_client,
                    &copier.destination,
                    &options,
                    Side::Destination,
                ),
            );
            histories::check_versioned(&source, &destination).await?;
        }
        Ok(Replicator {
            copier,
            journal,
            all_versions,
            diff: options.diff,
            sqs: env.sqs.clone(),
            dead_letter_queue_url: config.dead_letter_queue_url.clone(),
            max_receive_count: config.max_receive_count,
            concurrency: config.copy_concurrency,
            function_name: emf::function_name("", "replicator"),
        })
    }

    /// The `FunctionName` its metrics carry, where the environment does
    /// not say (the local stack names it after its stack).
    pub fn with_function_name(mut self, name: &str) -> Self {
        self.function_name = name.to_owned();
        self
    }

    /// Reconcile every key the messages name; the response hands back the
    /// messages worth another delivery.
    pub async fn replicate(&self, records: Vec<SqsMessage>, deadline: SystemTime) -> Invocation {
        let started = Instant::now();
        let stop_at = crate::serverless::stop_starting_at(deadline);
        // This invocation's requests, for its retries and throttles.
        let counter = RequestCounter::new();
        let copier = &self.copier.counted(&counter);
        let mut invocation = Invocation::default();
        let mut fates = vec![MessageFate::default(); records.len()];
        // Distinct keys in arrival order, each with the messages naming it.
        let mut keys: Vec<(ObjectEvent, Vec<usize>, usize)> = Vec::new();
        let mut index: HashMap<(String, String), usize> = HashMap::new();
        for (m, record) in records.iter().enumerate() {
            match parse_body(record.body.as_deref().unwrap_or_default()) {
                Ok(EventBody::Test) => invocation.test_events += 1,
                Ok(EventBody::Objects(events)) => {
                    for event in events {
                        let id = (event.bucket.clone(), event.key.clone());
                        match index.get(&id) {
                            Some(&k) => {
                                let (first, messages, count) = &mut keys[k];
                                *count += 1;
                                messages.push(m);
                                // Another shape can read the same key
                                // from other bytes: keep every reading.
                                for reading in event.alternatives {
                                    if !first.alternatives.contains(&reading) {
                                        first.alternatives.push(reading);
                                    }
                                }
                                // The lag counts from the oldest event.
                                first.event_time_ms =
                                    match (first.event_time_ms, event.event_time_ms) {
                                        (Some(a), Some(b)) => Some(a.min(b)),
                                        (a, b) => a.or(b),
                                    };
                            }
                            None => {
                                index.insert(id, keys.len());
                                keys.push((event, vec![m], 1));
                            }
                        }
                    }
                }
                Err(why) => {
                    invocation.unreadable += 1;
                    tracing::error!(message_id = ?record.message_id, error = %why, "not an S3 event notification");
                    fates[m].dead_letter.push(format!("UnreadableEvent: {why}"));
                }
            }
        }

        let reports: Vec<(KeyReport, Vec<usize>)> = futures::stream::iter(keys)
            .map(|(event, messages, count)| async move {
                (
                    self.reconcile_key(copier, event, count, stop_at).await,
                    messages,
                )
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;

        for (report, messages) in reports {
            for &m in &messages {
                if let Outcome::Failed {
                    code,
                    message,
                    retryable,
                } = &report.outcome
                {
                    let reason = format!("{code}: {} ({message})", report.key);
                    match retryable {
                        true => fates[m].retry.push(reason),
                        false => fates[m].dead_letter.push(reason),
                    }
                }
            }
            invocation.keys.push(report);
        }
        invocation.journaled = self.journal_proofs(&invocation.keys, &records).await;

        for (record, fate) in records.iter().zip(&fates) {
            let receive_count: u32 = record
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            // A message with a retryable failure is retried whole: its other
            // keys reconcile to no-ops, so nothing is lost by waiting. On
            // its last receive it goes to the dead-letter queue now, with
            // the reasons, rather than bare by SQS's redrive.
            let last = receive_count >= self.max_receive_count;
            let mut hand_back = !fate.retry.is_empty();
            if (!hand_back || last) && !(fate.dead_letter.is_empty() && fate.retry.is_empty()) {
                let reasons: Vec<String> = fate
                    .dead_letter
                    .iter()
                    .chain(&fate.retry)
                    .cloned()
                    .collect();
                hand_back = !self.dead_letter(record, &reasons).await;
                if !hand_back {
                    invocation.dead_lettered += 1;
                }
            }
            if hand_back {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = record.message_id.clone().unwrap_or_default();
                invocation.response.batch_item_failures.push(failure);
            }
        }
        invocation.retries = counter.retries();
        invocation.throttles = counter.throttled();
        invocation.metric_lines = self.metrics(&invocation, started.elapsed()).lines(now_ms());
        invocation
    }

    /// Append the pairs this invocation proved to the ledger's journal, in
    /// one object; returns how many. A failure is a warning: those pairs
    /// cost the next run two HEADs each, nothing worse.
    async fn journal_proofs(&self, keys: &[KeyReport], records: &[SqsMessage]) -> usize {
        let Some(store) = &self.journal else {
            return 0;
        };
        let entries: Vec<Proven> = keys.iter().filter_map(|k| k.proven.clone()).collect();
        let count = entries.len();
        // Named by time and the first message: unique to this invocation.
        let id = records
            .first()
            .and_then(|r| r.message_id.clone())
            .unwrap_or_default();
        let at = now_ms().max(0) as u64;
        match journal::append(store, entries, at, &id).await {
            Ok(()) => count,
            Err(why) => {
                tracing::warn!(ledger = %store, error = %why, pairs = count, "could not append to the ledger's journal; the next run proves these pairs by HEADs");
                0
            }
        }
    }

    /// Send a message no retry can fix (or none is left for) to the
    /// dead-letter queue, with the reasons attached. False when that is not
    /// possible (then SQS's own redrive takes it there after
    /// maxReceiveCount receives).
    async fn dead_letter(&self, record: &SqsMessage, reasons: &[String]) -> bool {
        let Some(queue_url) = &self.dead_letter_queue_url else {
            tracing::error!(message_id = ?record.message_id, "S3_FANOUT_DEAD_LETTER_QUEUE_URL is not set: handing the message back instead");
            return false;
        };
        let mut reason = reasons.join("; ");
        if reason.len() > 4096 {
            let mut cut = 4096;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        let attribute = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(&reason)
            .build()
            .expect("data type and value are set");
        let sent = self
            .sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(record.body.clone().unwrap_or_default())
            .message_attributes("S3FanoutError", attribute)
            .send()
            .await;
        match sent {
            Ok(_) => {
                tracing::error!(message_id = ?record.message_id, reason = %reason, "sent to the dead-letter queue");
                true
            }
            Err(err) => {
                tracing::error!(message_id = ?record.message_id, error = %classify(&err).message, "could not send to the dead-letter queue: handing the message back");
                false
            }
        }
    }

    async fn reconcile_key(
        &self,
        copier: &Copier,
        event: ObjectEvent,
        events: usize,
        stop_at: SystemTime,
    ) -> KeyReport {
        let source = &copier.source;
        let mut reconciled = event.key.clone();
        let (outcome, rounds, proven) = if event.bucket != source.bucket {
            let reason = format!(
                "the event is for bucket {:?}; this replicator copies from {source}",
                event.bucket
            );
            (Outcome::Ignored { reason }, 0, None)
        } else {
            // Why the event's own reading is not this replicator's, if it
            // is not; another reading of the key still may be.
            let not_ours = |key: &str| match source.relative(key) {
                Some(relative) if self.diff.filter.matches(relative) => None,
                Some(_) => Some("left out by the include/exclude rules".to_owned()),
                None => Some(format!("outside the source prefix {source}")),
            };
            let own_excluded = not_ours(&event.key);
            // The readings this replicator copies, the event's own first,
            // each as (key, relative key).
            let readings: Vec<(&str, &str)> = std::iter::once(&event.key)
                .chain(&event.alternatives)
                .filter(|key| not_ours(key).is_none())
                .filter_map(|key| Some((key.as_str(), source.relative(key)?)))
                .collect();
            if readings.is_empty() {
                let reason = own_excluded.unwrap_or_default();
                (Outcome::Ignored { reason }, 0, None)
            } else if SystemTime::now() >= stop_at {
                let outcome = Outcome::Failed {
                    code: "NotStarted".into(),
                    message: "the invocation ran out of time before this key".into(),
                    retryable: true,
                };
                (outcome, 0, None)
            } else if self.all_versions {
                let (key, outcome) = self.append(copier, &readings).await;
                reconciled = key.to_owned();
                (outcome, 1, None)
            } else {
                match self
                    .resolve(copier, &readings, own_excluded.is_none())
                    .await
                {
                    Resolved::Reading((key, relative), head) => {
                        reconciled = key.to_owned();
                        match head {
                            Ok(found) => self.reconcile(copier, relative, Some(found)).await,
                            Err(f) => (source_head_failed(&f), 1, None),
                        }
                    }
                    Resolved::NoneOurs => {
                        let reason = format!(
                            "{}; no other reading of the key exists at the source",
                            own_excluded.unwrap_or_default()
                        );
                        (Outcome::Ignored { reason }, 1, None)
                    }
                }
            }
        };
        let lag_ms = matches!(outcome, Outcome::Replicated { .. } | Outcome::Deleted)
            .then(|| event.event_time_ms.map(|t| (now_ms() - t).max(0)))
            .flatten();
        let read_as_other = (reconciled != event.key).then(|| event.key.clone());
        let report = KeyReport {
            bucket: event.bucket,
            key: reconciled,
            read_as_other,
            events,
            outcome,
            lag_ms,
            rounds,
            proven,
        };
        log_key(&report, &event.event_name, self);
        report
    }

    /// `ReplicateAllVersions`: append what the key's destination history
    /// lacks, as the serverless copier does ([`histories::append_key`]:
    /// both histories listed and aligned first, so a duplicate, late or
    /// out-of-order event appends nothing twice). The first reading of the
    /// key with a history at the source is the one appended to; the
    /// event's own, if none has.
    async fn append<'k>(
        &self,
        copier: &Copier,
        readings: &[(&'k str, &'k str)],
    ) -> (&'k str, Outcome) {
        let cancel = CancellationToken::new();
        for &(key, relative) in readings {
            match histories::append_key(copier, relative, &cancel).await {
                // No history under this reading at the source (only the
                // destination's, if any): nothing to append; try the next.
                histories::KeyOutcome::Kept => continue,
                outcome => return (key, appended(outcome)),
            }
        }
        (readings[0].0, Outcome::InSync)
    }

    /// Which reading of an event's key to reconcile. The first that exists
    /// at the source wins, so a key is never taken as absent from one
    /// decoding of it. Only when every reading is absent is the key absent,
    /// and then it is the event's own reading (`own`: whether the first of
    /// `readings` is it) that is reconciled, so an absent alternative's
    /// destination copy is never deleted on account of this event: that
    /// copy is another key's, one this event does not name.
    async fn resolve<'k>(
        &self,
        copier: &Copier,
        readings: &[(&'k str, &'k str)],
        own: bool,
    ) -> Resolved<'k> {
        for &reading in readings {
            match copier.head(Side::Source, reading.1).await {
                Ok(None) => continue,
                // There, or unknown: an error is not an absence.
                found_or_failed => return Resolved::Reading(reading, found_or_failed),
            }
        }
        match own {
            true => Resolved::Reading(readings[0], Ok(None)),
            false => Resolved::NoneOurs,
        }
    }

    /// Make the destination match the source's current state. Returns the
    /// outcome, the rounds it took, and the pair as proven equal when its
    /// ETags differ (a KMS copy, equal stored checksums).
    /// `known` is the source's state when a HEAD has just read it.
    async fn reconcile(
        &self,
        copier: &Copier,
        relative: &str,
        known: Option<Option<ObjectEntry>>,
    ) -> (Outcome, u32, Option<Proven>) {
        let mut proven = None;
        let (outcome, rounds) = self.rounds(copier, relative, known, &mut proven).await;
        (outcome, rounds, proven)
    }

    /// [`Replicator::reconcile`]'s rounds; a proven pair goes to `proven`.
    async fn rounds(
        &self,
        copier: &Copier,
        relative: &str,
        mut known: Option<Option<ObjectEntry>>,
        proven: &mut Option<Proven>,
    ) -> (Outcome, u32) {
        let cancel = CancellationToken::new();
        for round in 1..=MAX_ROUNDS {
            let source = match known.take() {
                Some(source) => source,
                None => match copier.head(Side::Source, relative).await {
                    Ok(source) => source,
                    Err(f) => return (source_head_failed(&f), round),
                },
            };
            let destination = match copier.head(Side::Destination, relative).await {
                Ok(destination) => destination,
                Err(f) => {
                    return (Outcome::failed(&f, "reading the destination object"), round);
                }
            };
            let pair = match (source, destination) {
                (Some(s), Some(d)) => Pair::Both(s, d),
                (Some(s), None) => Pair::SourceOnly(s),
                (None, Some(d)) => Pair::DestinationOnly(d),
                (None, None) => return (Outcome::InSync, round),
            };
            // Both sides were just HEADed, stored checksums included: a pair
            // whose ETags cannot decide (KMS) is decided by them.
            let action = match decide(pair, &self.diff) {
                Action::Compare {
                    source,
                    destination,
                } => match prove(source.checksum.as_ref(), destination.checksum.as_ref()) {
                    Proof::Equal => {
                        *proven = Some(Proven::of(&source, &destination));
                        return (Outcome::InSync, round);
                    }
                    Proof::Different => Action::Update {
                        source,
                        destination,
                    },
                    Proof::Unknown => without_checksums(source, destination, true),
                },
                action => action,
            };
            match action {
                Action::Skip {
                    reason: SkipReason::ExtraneousKept,
                    ..
                } => return (Outcome::DeleteNotPropagated, round),
                Action::Skip { .. } => return (Outcome::InSync, round),
                Action::Compare { .. } => return (Outcome::InSync, round), // settled above
                Action::Copy { source } | Action::Update { source, .. } => {
                    match copier.copy(&source, &cancel).await {
                        Ok(copied) => match copier.head(Side::Source, relative).await {
                            Ok(Some(now)) if same_version(&now, &source) => {
                                *proven =
                                    copied.etags.as_ref().filter(|(from, to)| from != to).map(
                                        |(from, to)| Proven {
                                            key: source.key.clone(),
                                            size: source.size,
                                            source_etag: from.clone(),
                                            destination_etag: to.clone(),
                                        },
                                    );
                                let outcome = Outcome::Replicated {
                                    bytes: copied.bytes,
                                    warnings: copied.warnings,
                                };
                                return (outcome, round);
                            }
                            Ok(_) => continue, // changed or deleted meanwhile
                            Err(f) => {
                                return (Outcome::failed(&f, "reading the source again"), round);
                            }
                        },
                        // Changed or deleted since the HEAD: look again.
                        Err(CopyError::Vanished | CopyError::SourceChanged) => continue,
                        Err(CopyError::Failed(f)) if f.http_status == Some(412) => continue,
                        Err(err @ (CopyError::Archived(_) | CopyError::SseC(_))) => {
                            let reported = err.reported().expect("a skip is reported");
                            let outcome = Outcome::Skipped {
                                code: reported.code,
                                message: reported.message,
                            };
                            return (outcome, round);
                        }
                        Err(CopyError::Failed(f)) => {
                            return (Outcome::failed(&f, "copying"), round);
                        }
                        Err(CopyError::Cancelled) => unreachable!("never cancelled"),
                    }
                }
                Action::Delete { destination } => match copier.delete(&destination).await {
                    Ok(()) => match copier.head(Side::Source, relative).await {
                        Ok(None) => return (Outcome::Deleted, round),
                        Ok(Some(_)) => continue, // put again meanwhile: copy it back
                        Err(f) => return (Outcome::failed(&f, "reading the source again"), round),
                    },
                    Err(f) => return (Outcome::failed(&f, "deleting"), round),
                },
            }
        }
        let outcome = Outcome::Failed {
            code: "StillChanging".into(),
            message: format!(
                "the source changed during each of {MAX_ROUNDS} attempts; the next delivery tries again"
            ),
            retryable: true,
        };
        (outcome, MAX_ROUNDS)
    }

    fn metrics(&self, invocation: &Invocation, duration: std::time::Duration) -> MetricRecord {
        let count = |outcome: &str| invocation.count(outcome) as f64;
        let bytes: u64 = invocation
            .keys
            .iter()
            .map(|k| match &k.outcome {
                Outcome::Replicated { bytes, .. } => *bytes,
                _ => 0,
            })
            .sum();
        let lags: Vec<f64> = invocation
            .keys
            .iter()
            .filter_map(|k| k.lag_ms.map(|l| l as f64))
            .collect();
        let failed = invocation.count("failed") + invocation.unreadable;
        let work = Work {
            objects_copied: invocation.count("replicated") as u64,
            bytes_copied: bytes,
            objects_skipped: invocation.count("skipped") as u64,
            objects_failed: failed as u64,
            retries: invocation.retries,
            throttles: invocation.throttles,
        };
        emf::function_record(&self.function_name, &work, duration)
            .value("Replicated", Unit::Count, count("replicated"))
            .value("Deleted", Unit::Count, count("deleted"))
            .value("Failed", Unit::Count, failed as f64)
            .value("Skipped", Unit::Count, count("skipped"))
            .value("InSync", Unit::Count, count("in_sync"))
            .value(
                "Ignored",
                Unit::Count,
                count("ignored") + count("delete_not_propagated") + invocation.test_events as f64,
            )
            .value("BytesReplicated", Unit::Bytes, bytes as f64)
            .values("ReplicationLag", Unit::Milliseconds, lags)
            .property("source", self.copier.source.to_string().into())
            .property("destination", self.copier.destination.to_string().into())
    }
}

/// Which reading of an event's key to reconcile, and what the source's HEAD
/// said of it.
enum Resolved<'k> {
    /// (key, relative key), and the HEAD's answer.
    Reading((&'k str, &'k str), Result<Option<ObjectEntry>, S3Failure>),
    /// Every reading this replicator copies is absent, and the event's own
    /// reading is not one it copies.
    NoneOurs,
}

/// A key's outcome with `ReplicateAllVersions`, as the replicator reports it.
fn appended(outcome: histories::KeyOutcome) -> Outcome {
    match outcome {
        histories::KeyOutcome::Kept | histories::KeyOutcome::Equal => Outcome::InSync,
        histories::KeyOutcome::Appended(appended, None) => match appended.versions {
            0 if appended.markers > 0 => Outcome::Deleted,
            _ => Outcome::Replicated {
                bytes: appended.bytes,
                warnings: Vec::new(),
            },
        },
        histories::KeyOutcome::Appended(_, Some(err)) => {
            let retryable = err.retry_class() == RetryClass::Retryable;
            match err.reported() {
                Some(r) if r.status == TaskStatus::Skipped => Outcome::Skipped {
                    code: r.code,
                    message: r.message,
                },
                Some(r) => Outcome::Failed {
                    code: r.code,
                    message: format!("appending to the key's history: {}", r.message),
                    retryable,
                },
                None => unreachable!("never cancelled"),
            }
        }
        histories::KeyOutcome::Diverged(why) => Outcome::Failed {
            code: "HistoryDiverged".into(),
            message: format!("not appended: {why}"),
            retryable: false,
        },
        histories::KeyOutcome::Failed(f) => Outcome::failed(&f, "reading the key's history"),
    }
}

/// The outcome of a source HEAD that failed.
fn source_head_failed(failure: &S3Failure) -> Outcome {
    // HEAD has no body: a 400 on an object S3 can read is one encrypted
    // with a customer-provided key.
    if failure.http_status == Some(400) {
        return Outcome::Skipped {
            code: "SkippedSSEC".into(),
            message: "HEAD answered 400, as S3 does for an object encrypted with a customer-provided key (SSE-C), which cannot be copied without that key".into(),
        };
    }
    Outcome::failed(failure, "reading the source object")
}

/// The same object version: a put, even of the same bytes, moves
/// LastModified.
fn same_version(a: &ObjectEntry, b: &ObjectEntry) -> bool {
    a.etag == b.etag && a.size == b.size && a.last_modified_ms == b.last_modified_ms
}

/// One structured line per key, for CloudWatch Logs Insights.
fn log_key(report: &KeyReport, event_name: &str, replicator: &Replicator) {
    let destination_key = replicator
        .copier
        .source
        .relative(&report.key)
        .map(|r| replicator.copier.destination.key_for(r))
        .unwrap_or_default();
    let outcome = report.outcome.name();
    match &report.outcome {
        Outcome::Failed {
            code,
            message,
            retryable,
        } => tracing::error!(
            bucket = %report.bucket, key = %report.key, %destination_key, event = %event_name,
            events = report.events, outcome, code = %code, error = %message, retryable = *retryable,
            rounds = report.rounds, "replication failed"
        ),
        Outcome::Skipped { code, message } => tracing::warn!(
            bucket = %report.bucket, key = %report.key, event = %event_name, events = report.events,
            outcome, code = %code, reason = %message, "not replicated"
        ),
        Outcome::Ignored { reason } => tracing::info!(
            bucket = %report.bucket, key = %report.key, event = %event_name, outcome, reason = %reason,
            "ignored"
        ),
        Outcome::Replicated { bytes, warnings } => tracing::info!(
            bucket = %report.bucket, key = %report.key, %destination_key, event = %event_name,
            events = report.events, outcome, bytes = *bytes, warnings = ?warnings,
            lag_ms = ?report.lag_ms, rounds = report.rounds, read_as = ?report.read_as_other,
            "replicated"
        ),
        _ => tracing::info!(
            bucket = %report.bucket, key = %report.key, %destination_key, event = %event_name,
            events = report.events, outcome, lag_ms = ?report.lag_ms, rounds = report.rounds,
            read_as = ?report.read_as_other, "reconciled"
        ),
    }
}
