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

use std::collections::HashMap;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use crate::backend::outcome::CopyError;
use crate::backend::s3::copier::Copier;
use crate::backend::s3::list_target::ListTarget;
use crate::backend::s3::listing_versions::{list_all_versions, versioning};
use crate::base::error::{S3Failure, SyncError, classify};
use crate::engine::shards::plan_shards;
use crate::engine::worker::WorkContext;
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
struct KeyHistory {
    key: String,
    source: Vec<ListedVersion>,
    destination: Vec<ListedVersion>,
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
fn joined(
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

/// How a key stands: how many of its source entries the destination holds
/// (a HEAD of its newest version when the ETags cannot say), or why it
/// cannot be appended to.
async fn standing(copier: &Copier, history: &KeyHistory) -> Result<usize, Standing> {
    match align(&history.source, &history.destination) {
        Alignment::Holds(n) => Ok(n),
        Alignment::Diverged(why) => Err(Standing::Diverged(why)),
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
                .await
                .map_err(|e| Standing::Failed(classify(&e)))?;
            let origin = head.metadata().and_then(|m| m.get(ORIGIN_VERSION_ID));
            match align_by_origin(
                &history.source,
                &history.destination,
                newest,
                origin.map(String::as_str),
            ) {
                Alignment::Holds(n) => Ok(n),
                Alignment::Diverged(why) => Err(Standing::Diverged(why)),
                Alignment::NeedsOrigin(_) => Err(Standing::Diverged(
                    "the destination's history cannot be placed in the source's".into(),
                )),
            }
        }
    }
}

enum Standing {
    Diverged(String),
    Failed(S3Failure),
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
/// appended before it would put the history out of order).
async fn append(context: &WorkContext, copier: &Copier, key: &str, entries: &[ListedVersion]) {
    let stats = &context.stats;
    for entry in entries {
        if context.cancel.is_cancelled() {
            Stats::add(&stats.dropped, 1);
            return;
        }
        if entry.delete_marker {
            // A delete in a versioned bucket makes a delete marker.
            match copier.delete(&entry.entry).await {
                Ok(()) => Stats::add(&stats.deleted, 1),
                Err(failure) => {
                    context.record_copy_error(key, CopyError::Failed(failure));
                    return;
                }
            }
            continue;
        }
        match copier.copy_version(entry, &context.cancel).await {
            Ok(copied) => {
                Stats::add(&stats.copied, 1);
                Stats::add(&stats.bytes_copied, copied.bytes);
            }
            Err(err) => {
                context.record_copy_error(key, err);
                return;
            }
        }
    }
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
        if history.source.is_empty() {
            // Only at the destination: kept, as a sync without --delete
            // keeps what the source lacks.
            if pass != Pass::Verify {
                Stats::add(&stats.extraneous_kept, 1);
            }
            return Ok(());
        }
        let held = match standing(copier, &history).await {
            Ok(held) => held,
            Err(Standing::Diverged(why)) => {
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
            Err(Standing::Failed(failure)) => {
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
        for entry in missing {
            if entry.delete_marker {
                Stats::add(&stats.plan_delete, 1);
            } else {
                Stats::add(&stats.plan_copy, 1);
                Stats::add(&stats.plan_bytes, entry.entry.size);
            }
        }
        if !options.dry_run {
            append(context, copier, &history.key, missing).await;
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
