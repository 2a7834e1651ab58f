//! `--all-versions`: each key's whole version history copied into a
//! versioned destination, oldest first, delete markers as delete markers.
//!
//! Both sides are listed with ListObjectVersions, grouped by key (a key's
//! entries are contiguous, newest first) and joined by key, so memory is a
//! key's history and a page a side per range; the range is cut at the
//! source's folders and `--list-concurrency` ranges are listed at once.
//! Each key's destination history is aligned with its source's
//! ([`crate::model::history`]); what the destination lacks is appended in
//! order, one entry after another, while other keys go on in parallel. A
//! key whose destination history is not a copy of its source's is
//! reported, never written over.
//!
//! The serverless runtime uses the same pieces: its listers align each
//! key ([`joined`], [`verdict`]) and send a task per key that lacks
//! entries; its copier and replicator take a key as it stands then
//! ([`append_key`]: listed on both sides and aligned again), so a task
//! delivered twice appends nothing twice.

use std::collections::HashMap;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::backend::outcome::CopyError;
use crate::backend::s3::copier::Copier;
use crate::backend::s3::list_target::ListTarget;
use crate::backend::s3::listing_versions::{list_all_versions, versioning};
use crate::base::error::{S3Failure, SyncError, classify};
use crate::engine::shards::plan_shards;
use crate::engine::worker::{Retry, WorkContext};
use crate::model::entry::Side;
use crate::model::history::{
    Alignment, ORIGIN_LAST_MODIFIED, ORIGIN_VERSION_ID, align, align_by_origin,
};
use crate::model::location::KeyRange;
use crate::model::options::{SyncOptions, requester_pays};
use crate::model::versions::ListedVersion;
use crate::report::Stats;
use crate::report::ledger::{ReportRow, TaskStatus};

/// One key's history on each side, oldest first.
#[derive(Debug)]
pub struct KeyHistory {
    pub key: String,
    pub source: Vec<ListedVersion>,
    pub destination: Vec<ListedVersion>,
}

/// Refuse what cannot hold a history: a source that has never had
/// versioning on, a destination whose versioning is not on now (a
/// suspended bucket overwrites its `null` version, so appended versions
/// would replace each other).
pub async fn check_versioned(
    source: &ListTarget,
    destination: &ListTarget,
) -> Result<(), SyncError> {
    if versioning(source, "source").await?.is_none() {
        return Err(SyncError::Config(format!(
            "--all-versions needs a versioned source, and bucket {:?} has never had versioning enabled",
            source.location.bucket
        )));
    }
    let status = versioning(destination, "destination").await?;
    if status != Some(aws_sdk_s3::types::BucketVersioningStatus::Enabled) {
        return Err(SyncError::Config(format!(
            "--all-versions needs versioning enabled on the destination, and bucket {:?} has it {}",
            destination.location.bucket,
            match status {
                Some(s) => s.as_str().to_ascii_lowercase(),
                None => "never enabled".into(),
            }
        )));
    }
    Ok(())
}

/// A listing grouped by key: each key with its entries, oldest first.
fn grouped(
    listing: impl Stream<Item = Result<ListedVersion, SyncError>> + Send + 'static,
) -> BoxStream<'static, Result<(String, Vec<ListedVersion>), SyncError>> {
    futures::stream::unfold(
        (listing.boxed().peekable(), false),
        |(mut listing, failed)| async move {
            if failed {
                return None;
            }
            let first = match listing.next().await? {
                Ok(first) => first,
                Err(e) => return Some((Err(e), (listing, true))),
            };
            let key = first.entry.key.clone();
            let mut entries = vec![first];
            loop {
                match std::pin::Pin::new(&mut listing).peek().await {
                    Some(Ok(next)) if next.entry.key == key => {
                        if let Some(Ok(next)) = listing.next().await {
                            entries.push(next);
                        }
                    }
                    Some(Err(_)) => {
                        let Some(Err(e)) = listing.next().await else {
                            unreachable!("peeked an error")
                        };
                        return Some((Err(e), (listing, true)));
                    }
                    _ => break,
                }
            }
            entries.reverse(); // listed newest first
            Some((Ok((key, entries)), (listing, false)))
        },
    )
    .boxed()
}

/// Both sides' histories of `range` joined by key.
pub fn joined(
    source: ListTarget,
    destination: ListTarget,
    range: KeyRange,
) -> BoxStream<'static, Result<KeyHistory, SyncError>> {
    let source = grouped(list_all_versions(source, range.clone())).peekable();
    let destination = grouped(list_all_versions(destination, range)).peekable();
    futures::stream::unfold(
        (Box::pin(source), Box::pin(destination)),
        |(mut source, mut destination)| async move {
            let (s, d) = (
                source.as_mut().peek().await,
                destination.as_mut().peek().await,
            );
            let take_source = match (s, d) {
                (None, None) => return None,
                (Some(Err(_)), _) | (Some(_), None) => Some(true),
                (None, Some(_)) | (_, Some(Err(_))) => Some(false),
                (Some(Ok((sk, _))), Some(Ok((dk, _)))) => match sk.cmp(dk) {
                    std::cmp::Ordering::Less => Some(true),
                    std::cmp::Ordering::Greater => Some(false),
                    std::cmp::Ordering::Equal => None,
                },
            };
            let history = match take_source {
                Some(true) => source.next().await.map(|r| {
                    r.map(|(key, source)| KeyHistory {
                        key,
                        source,
                        destination: Vec::new(),
                    })
                }),
                Some(false) => destination.next().await.map(|r| {
                    r.map(|(key, destination)| KeyHistory {
                        key,
                        source: Vec::new(),
                        destination,
                    })
                }),
                None => {
                    let (Some(Ok((key, s))), Some(Ok((_, d)))) =
                        (source.next().await, destination.next().await)
                    else {
                        unreachable!("both peeked as entries")
                    };
                    Some(Ok(KeyHistory {
                        key,
                        source: s,
                        destination: d,
                    }))
                }
            }?;
            Some((history, (source, destination)))
        },
    )
    .boxed()
}

/// What a key's two histories call for.
#[derive(Debug)]
pub enum Verdict {
    /// Only at the destination: kept, as a sync without --delete keeps
    /// what the source lacks.
    DestinationOnly,
    /// The destination holds the source's first `n` entries, in order
    /// (all of them, or the rest is to be appended).
    Holds(usize),
    /// The destination's history is not a copy of the source's: never
    /// written over.
    Diverged(String),
    /// Reading where the destination stands failed.
    Failed(S3Failure),
}

/// How a key stands: how many of its source entries the destination holds
/// (a HEAD of its newest version when the ETags cannot say), or why it
/// cannot be appended to.
pub async fn verdict(copier: &Copier, history: &KeyHistory) -> Verdict {
    if history.source.is_empty() {
        return Verdict::DestinationOnly;
    }
    match align(&history.source, &history.destination) {
        Alignment::Holds(n) => Verdict::Holds(n),
        Alignment::Diverged(why) => Verdict::Diverged(why),
        Alignment::NeedsOrigin(newest) => {
            let version = history.destination[newest].entry.version_id.clone();
            let head = copier
                .destination_client
                .head_object()
                .bucket(&copier.destination.bucket)
                .key(copier.destination.key_for(&history.key))
                .set_version_id(version)
                .set_expected_bucket_owner(copier.options.expected_dest_owner.clone())
                .set_request_payer(requester_pays(copier.options.request_payer))
                .send()
                .await;
            let head = match head {
                Ok(head) => head,
                Err(e) => return Verdict::Failed(classify(&e)),
            };
            let origin = head.metadata().and_then(|m| m.get(ORIGIN_VERSION_ID));
            match align_by_origin(
                &history.source,
                &history.destination,
                newest,
                origin.map(String::as_str),
            ) {
                Alignment::Holds(n) => Verdict::Holds(n),
                Alignment::Diverged(why) => Verdict::Diverged(why),
                Alignment::NeedsOrigin(_) => Verdict::Diverged(
                    "the destination's history cannot be placed in the source's".into(),
                ),
            }
        }
    }
}

/// One key's history on both sides, listed now: what a copier or the
/// replicator aligns before it appends, so a task delivered twice, or
/// late, appends only what is still missing.
pub async fn key_history(copier: &Copier, key: &str) -> Result<KeyHistory, SyncError> {
    let options = &copier.options;
    let (source, destination) = (
        ListTarget::new(
            &copier.source_client,
            &copier.source,
            options.expected_source_owner.clone(),
            options.request_payer,
        ),
        ListTarget::new(
            &copier.destination_client,
            &copier.destination,
            options.expected_dest_owner.clone(),
            options.request_payer,
        ),
    );
    // The key and nothing after it: a prefix of the key itself, ending
    // before its successor ("k" + U+0000), so "k/…" and "ka" are not read.
    let range = KeyRange {
        prefix: key.to_owned(),
        end_before: Some(format!("{key}\u{0}")),
        ..KeyRange::all()
    };
    let mut histories = joined(source, destination, range);
    let mut found = KeyHistory {
        key: key.to_owned(),
        source: Vec::new(),
        destination: Vec::new(),
    };
    while let Some(history) = histories.next().await {
        let history = history?;
        if history.key == key {
            found = history;
        }
    }
    Ok(found)
}

/// What became of one key's history, taken as it stands now.
#[derive(Debug)]
pub enum KeyOutcome {
    /// Only at the destination: kept.
    Kept,
    /// The destination already holds the whole history.
    Equal,
    /// Appended to: what was appended, and the failure that stopped the
    /// rest, if one did.
    Appended(Appended, Option<CopyError>),
    /// Not a copy of the source's history: not written to.
    Diverged(String),
    /// Where the destination stands could not be read (a listing, or the
    /// HEAD of its newest version).
    Failed(S3Failure),
}

/// What was appended to one key's history.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub versions: u64,
    pub markers: u64,
    pub bytes: u64,
}

/// A task's key, appended to as it stands now (the copier's and the
/// replicator's way in): listed on both sides, aligned, and what the
/// destination lacks appended in order. So a task delivered twice, or
/// late, appends only what is still missing.
pub async fn append_key(copier: &Copier, key: &str, cancel: &CancellationToken) -> KeyOutcome {
    let history = match key_history(copier, key).await {
        Ok(history) => history,
        Err(err) => {
            return KeyOutcome::Failed(S3Failure {
                code: "ListFailed".into(),
                http_status: None,
                message: format!("listing the key's history: {err}"),
                class: err.retry_class(),
            });
        }
    };
    match verdict(copier, &history).await {
        Verdict::DestinationOnly => KeyOutcome::Kept,
        Verdict::Holds(held) if held == history.source.len() => KeyOutcome::Equal,
        Verdict::Holds(held) => {
            let (appended, stopped) = append(copier, &history.source[held..], cancel).await;
            KeyOutcome::Appended(appended, stopped)
        }
        Verdict::Diverged(why) => KeyOutcome::Diverged(why),
        Verdict::Failed(failure) => KeyOutcome::Failed(failure),
    }
}

/// Count and report a key's outcome as a sync does; says whether another
/// attempt could do more.
pub fn record(context: &WorkContext, key: &str, outcome: KeyOutcome) -> Retry {
    let stats = &context.stats;
    let (appended, stopped) = match outcome {
        KeyOutcome::Kept => {
            Stats::add(&stats.extraneous_kept, 1);
            return Retry::No;
        }
        KeyOutcome::Equal => {
            Stats::add(&stats.skip_equal, 1);
            return Retry::No;
        }
        KeyOutcome::Diverged(why) => {
            Stats::add(&stats.failed, 1);
            report(
                context,
                key,
                "HistoryDiverged",
                &format!("not appended: {why}"),
            );
            return Retry::No;
        }
        KeyOutcome::Failed(failure) => (Appended::default(), Some(CopyError::Failed(failure))),
        KeyOutcome::Appended(appended, stopped) => (appended, stopped),
    };
    Stats::add(&stats.copied, appended.versions);
    Stats::add(&stats.deleted, appended.markers);
    Stats::add(&stats.bytes_copied, appended.bytes);
    match stopped {
        None => Retry::No,
        Some(err) => {
            let retry = Retry::from(err.retry_class());
            context.record_copy_error(key, err);
            retry
        }
    }
}

/// The user metadata a copy of `version` adds: its origin.
pub fn origin_metadata(version: &ListedVersion) -> HashMap<String, String> {
    let at = aws_smithy_types::DateTime::from_millis(version.entry.last_modified_ms)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default();
    HashMap::from([
        (
            ORIGIN_VERSION_ID.to_owned(),
            version.version_id().to_owned(),
        ),
        (ORIGIN_LAST_MODIFIED.to_owned(), at),
    ])
}

/// Append `entries` (oldest first) to the key's destination history, one
/// after another; the first that fails stops the key (a later version
/// appended before it would put the history out of order), and so does a
/// cancellation ([`CopyError::Cancelled`]).
async fn append(
    copier: &Copier,
    entries: &[ListedVersion],
    cancel: &CancellationToken,
) -> (Appended, Option<CopyError>) {
    let mut appended = Appended::default();
    for entry in entries {
        if cancel.is_cancelled() {
            return (appended, Some(CopyError::Cancelled));
        }
        if entry.delete_marker {
            // A delete in a versioned bucket makes a delete marker.
            match copier.delete(&entry.entry).await {
                Ok(()) => appended.markers += 1,
                Err(failure) => return (appended, Some(CopyError::Failed(failure))),
            }
            continue;
        }
        match copier.copy_version(entry, cancel).await {
            Ok(copied) => {
                appended.versions += 1;
                appended.bytes += copied.bytes;
            }
            Err(err) => return (appended, Some(err)),
        }
    }
    (appended, None)
}

/// What a pass over the histories does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Append what each key's destination history lacks.
    Write,
    /// Write nothing; count and report each key that differs (the
    /// verification after a write pass).
    Verify,
    /// [`Pass::Verify`] as the run's only pass (`check`), counting what
    /// it lists.
    Audit,
}

/// List, join and align every key's history, and do what `pass` says.
pub async fn write_histories(
    options: &SyncOptions,
    context: &WorkContext,
    (source, destination): (ListTarget, ListTarget),
    pass: Pass,
) -> Result<(), SyncError> {
    let check_only = pass != Pass::Write;
    let crate::backend::transfer::Mover::Buckets(copier) = &*context.mover else {
        return Err(SyncError::Config(
            "--all-versions copies between two buckets".into(),
        ));
    };
    check_versioned(&source, &destination).await?;
    let stats = &context.stats;
    // Ranges listed at once, as a sync lists pieces: cut at the source's
    // folders (the tiles cover the whole range, so a folder whose keys
    // are all deleted now is still in one).
    let lists = options.list_concurrency.max(1);
    let ranges = plan_shards(&source, &options.range, lists * 2, lists * 8).await?;
    if pass != Pass::Verify {
        Stats::add(&stats.listed_pieces, ranges.len() as u64);
    }
    let histories = futures::stream::iter(ranges)
        .map(move |range| joined(source.clone(), destination.clone(), range))
        .flatten_unordered(lists);
    let work = histories.map(|history| async move {
        let history = history?;
        if pass != Pass::Verify {
            Stats::add(&stats.listed_source, 1);
            Stats::add(
                &stats.listed_destination,
                u64::from(!history.destination.is_empty()),
            );
        }
        let held = match verdict(copier, &history).await {
            Verdict::Holds(held) => held,
            Verdict::DestinationOnly => {
                if pass != Pass::Verify {
                    Stats::add(&stats.extraneous_kept, 1);
                }
                return Ok(());
            }
            Verdict::Diverged(why) => {
                let counter = if check_only {
                    &stats.verify_mismatched
                } else {
                    &stats.failed
                };
                Stats::add(counter, 1);
                report(
                    context,
                    &history.key,
                    "HistoryDiverged",
                    &format!("not appended: {why}"),
                );
                return Ok(());
            }
            Verdict::Failed(failure) => {
                context.record_copy_error(&history.key, CopyError::Failed(failure));
                return Ok(());
            }
        };
        let missing = &history.source[held..];
        if check_only {
            Stats::add(&stats.verify_checked, 1);
            if !missing.is_empty() {
                Stats::add(&stats.verify_mismatched, 1);
                let why = format!(
                    "verify: {} versions of the source are not at the destination",
                    missing.len()
                );
                report(context, &history.key, "VerifyMismatch", &why);
            }
            return Ok(());
        }
        if missing.is_empty() {
            Stats::add(&stats.skip_equal, 1);
            return Ok(());
        }
        count_planned(stats, missing);
        if !options.dry_run {
            let (appended, stopped) = append(copier, missing, &context.cancel).await;
            let outcome = KeyOutcome::Appended(appended, stopped);
            record(context, &history.key, outcome);
        }
        Ok::<(), SyncError>(())
    });
    let mut work = work.buffer_unordered(options.concurrency.max(1));
    while let Some(done) = work.next().await {
        done?;
        if context.cancel.is_cancelled() {
            return Err(SyncError::Cancelled);
        }
    }
    Ok(())
}

/// Count what appending `missing` plans (versions to copy, their bytes,
/// markers to append); returns the bytes.
pub fn count_planned(stats: &Stats, missing: &[ListedVersion]) -> u64 {
    let mut bytes = 0;
    for entry in missing {
        if entry.delete_marker {
            Stats::add(&stats.plan_delete, 1);
        } else {
            Stats::add(&stats.plan_copy, 1);
            Stats::add(&stats.plan_bytes, entry.entry.size);
            bytes += entry.entry.size;
        }
    }
    bytes
}

/// A failed row for a key's destination history.
fn report(context: &WorkContext, key: &str, code: &str, message: &str) {
    let (bucket, full_key) = context.mover.row_names(Side::Destination, key);
    let row = ReportRow::new(&bucket, &full_key, TaskStatus::Failed, code, None, message);
    context.rows.push(key, row);
}

impl Copier {
    /// Copy one version of a history, its origin in its user metadata.
    pub async fn copy_version(
        &self,
        version: &ListedVersion,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<crate::backend::outcome::Copied, CopyError> {
        let with_origin = Copier {
            options: crate::model::options::CopyOptions {
                extra_metadata: Some(origin_metadata(version)),
                ..self.options.clone()
            },
            ..self.clone()
        };
        with_origin.copy(&version.entry, cancel).await
    }
}
