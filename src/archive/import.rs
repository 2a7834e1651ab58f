//! `s3-fanout import`: check the whole archive, then make the destination
//! match its manifest.
//!
//! ```text
//!  check_archive (every entry, manifest, trailer) ── refused? exit 2, nothing written
//!        │
//!  plan: manifest ⋈ destination listing ─┬─ puts (spool, manifest order)
//!                                        └─ deletes (spool, with --delete)
//!  put:  extractor thread (archive → temp files, re-checked) ─ channel ─ N uploaders
//!  delete, then verify: manifest ⋈ destination listed again
//! ```
//!
//! The plan skips every object the destination already has equal (same
//! size and ETag), so importing an archive twice, or again after a killed
//! import, writes only what is still missing: the second run of the same
//! archive sends listings and nothing else. Puts come before deletes, so a
//! moved object is never absent from both its old and its new key.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::sync::Arc;

use futures::StreamExt;
use tempfile::TempPath;
use tokio_util::sync::CancellationToken;

use super::check::{CheckedArchive, check_archive};
use super::error::ArchiveError;
use super::extract::{Extracted, Extraction, PlannedPut};
use super::format::{Baseline, ManifestEntry, NotExported};
use super::join::{Joined, Match, compare, join_with_destination};
use super::layout::choose_layout;
use super::manifest::ManifestReader;
use super::options::ImportOptions;
use super::put::{Destination, put_file};
use super::summary::{RunClock, RunSides};
use crate::backend::s3::listing::{ListTarget, list_range};
use crate::base::client::build_s3_client;
use crate::base::error::{RetryClass, S3Failure, SyncError, classify};
use crate::base::metrics::RequestCounter;
use crate::model::entry::ObjectEntry;
use crate::model::location::KeyRange;
use crate::report::{ReportRow, ReportRows, Stats, Summary, TaskStatus};

/// Apply `options.archive` to `options.destination`. `Err` before the plan
/// means nothing was written (a refused archive, a missing bucket: exit 2).
pub async fn run_import(
    options: &ImportOptions,
    cancel: &CancellationToken,
) -> Result<Summary, ArchiveError> {
    let clock = RunClock::start();
    let path = options.archive.clone();
    let checked = tokio::task::spawn_blocking(move || check_archive(&path))
        .await
        .expect("checking the archive panicked")?;
    tracing::info!(
        archive = %options.archive.display(),
        objects = checked.trailer.manifest_objects,
        carried = checked.trailer.object_entries,
        "the archive checks out"
    );

    let counter = RequestCounter::new();
    let client = build_s3_client(&options.client, Some(counter.clone())).await;
    let importer = Importer {
        work: Work {
            destination: Destination {
                client: client.clone(),
                location: options.destination.clone(),
                expected_owner: options.expected_owner.clone(),
            },
            stats: Arc::new(Stats::default()),
            rows: Arc::new(ReportRows::new()?),
            cancel: cancel.clone(),
        },
        options,
        checked: &checked,
    };
    let plan = importer.plan().await?;
    importer.put_all(plan.puts).await?;
    importer.delete_all(plan.deletes).await?;
    importer.verify().await?;

    let sides = RunSides {
        source: options.archive.display().to_string(),
        destination: options.destination.to_string(),
    };
    let Work { stats, rows, .. } = importer.work;
    clock
        .summarize(
            sides,
            &stats,
            &rows,
            &counter,
            options.report.as_ref(),
            &client,
        )
        .await
}

/// What the uploaders share.
#[derive(Clone)]
struct Work {
    destination: Destination,
    stats: Arc<Stats>,
    rows: Arc<ReportRows>,
    cancel: CancellationToken,
}

struct Importer<'a> {
    work: Work,
    options: &'a ImportOptions,
    checked: &'a CheckedArchive,
}

/// The plan's two spools.
struct Plan {
    /// JSON Lines of [`PlannedPut`], in manifest order.
    puts: TempPath,
    /// JSON Lines of relative keys.
    deletes: TempPath,
}

/// A spool file being written.
struct Spool {
    out: BufWriter<File>,
    path: TempPath,
}

impl Spool {
    fn new() -> Result<Self, ArchiveError> {
        let (file, path) = tempfile::NamedTempFile::new()
            .map_err(ArchiveError::io("creating the import plan"))?
            .into_parts();
        Ok(Spool {
            out: BufWriter::new(file),
            path,
        })
    }

    fn push(&mut self, value: &impl serde::Serialize) -> Result<(), ArchiveError> {
        serde_json::to_writer(&mut self.out, value)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(ArchiveError::io("writing the import plan"))
    }

    fn finish(mut self) -> Result<TempPath, ArchiveError> {
        self.out
            .flush()
            .map_err(ArchiveError::io("writing the import plan"))?;
        Ok(self.path)
    }
}

impl Importer<'_> {
    fn manifest(&self) -> Result<ManifestReader, ArchiveError> {
        ManifestReader::open(&self.checked.manifest, &self.options.archive)
    }

    fn listing(&self) -> impl futures::Stream<Item = Result<ObjectEntry, SyncError>> + use<> {
        list_range(
            ListTarget::new(
                &self.work.destination.client,
                &self.options.destination,
                self.options.expected_owner.clone(),
                false,
            ),
            KeyRange::all(),
        )
    }

    fn row(&self, key: &str, status: TaskStatus, code: &str, message: &str) -> ReportRow {
        let location = &self.options.destination;
        ReportRow::new(
            &location.bucket,
            &location.key_for(key),
            status,
            code,
            None,
            message,
        )
    }

    /// Join the manifest with the destination and spool what to put and
    /// what to delete.
    async fn plan(&self) -> Result<Plan, ArchiveError> {
        let (mut puts, mut deletes) = (Spool::new()?, Spool::new()?);
        let s = &self.work.stats;
        let joined = join_with_destination(self.manifest()?, self.listing(), |joined| {
            let (line, destination) = match joined {
                Joined::Destination(destination) => {
                    Stats::add(&s.listed_destination, 1);
                    if self.options.delete {
                        Stats::add(&s.plan_delete, 1);
                        deletes.push(&destination.key)?;
                    } else {
                        Stats::add(&s.extraneous_kept, 1);
                    }
                    return Ok(());
                }
                Joined::Manifest(line) => (line, None),
                Joined::Both(line, destination) => {
                    Stats::add(&s.listed_destination, 1);
                    (line, Some(destination))
                }
            };
            Stats::add(&s.listed_source, 1);
            Stats::add(&s.listed_source_bytes, line.size);
            match self.decide(&line, destination.as_ref()) {
                Some(update) => {
                    Stats::add(if update { &s.plan_update } else { &s.plan_copy }, 1);
                    Stats::add(&s.plan_bytes, line.size);
                    puts.push(&PlannedPut { update, line })
                }
                None => Ok(()),
            }
        })
        .await;
        match joined {
            // The destination's first page failed: say what is wrong with
            // the bucket (exit 2), as `sync` does.
            Err(ArchiveError::Sync(SyncError::S3 { failure, .. }))
                if s.listed_destination
                    .load(std::sync::atomic::Ordering::Relaxed)
                    == 0 =>
            {
                let location = &self.options.destination;
                return Err(
                    match crate::backend::s3::preflight::bucket_problem(
                        &failure,
                        "destination",
                        &location.bucket,
                        self.options.expected_owner.as_deref(),
                    ) {
                        Some(why) => SyncError::Config(why).into(),
                        None => SyncError::s3(format!("listing {location}"), failure).into(),
                    },
                );
            }
            other => other?,
        }
        Ok(Plan {
            puts: puts.finish()?,
            deletes: deletes.finish()?,
        })
    }

    /// `Some(update)` when the line's object must be put; counts the rest.
    fn decide(&self, line: &ManifestEntry, destination: Option<&ObjectEntry>) -> Option<bool> {
        let s = &self.work.stats;
        if let Some(missing) = &line.not_exported {
            self.report_not_carried(line, missing);
            return None;
        }
        if line.applicable().is_none() {
            // Unchanged since the export's baseline: the destination should
            // have it already, which verification checks.
            Stats::add(&s.skip_not_modified, 1);
            return None;
        }
        let Some(destination) = destination else {
            return Some(false);
        };
        match compare(line, destination) {
            Match::Equal => {
                Stats::add(&s.skip_equal, 1);
                None
            }
            // Same size, ETags that cannot prove it (a layout the import
            // could not reproduce), written after the source: as `sync`
            // decides, probably equal, said so, not written again.
            Match::SizeOnly if destination.last_modified_ms >= line.last_modified_ms => {
                Stats::add(&s.skip_unverified, 1);
                self.work.rows.push(
                    &line.key,
                    self.row(
                        &line.key,
                        TaskStatus::Warning,
                        "Unverified",
                        "same size and written after the source, but the ETags cannot be compared; left as it is",
                    ),
                );
                None
            }
            _ => Some(true),
        }
    }

    /// An object the export could not read: the destination keeps what it
    /// has, and the report says why.
    fn report_not_carried(&self, line: &ManifestEntry, missing: &NotExported) {
        let s = &self.work.stats;
        let status = if missing.skipped {
            Stats::add(
                if missing.code == "InvalidObjectState" {
                    &s.skipped_archived
                } else {
                    &s.skipped_sse_c
                },
                1,
            );
            TaskStatus::Skipped
        } else {
            Stats::add(&s.failed, 1);
            TaskStatus::Failed
        };
        let message = format!(
            "not in the archive, the export could not read it: {}",
            missing.message
        );
        self.work.rows.push(
            &line.key,
            self.row(&line.key, status, &missing.code, &message),
        );
    }

    /// Extract the planned objects on a thread and upload them with
    /// `--concurrency` workers.
    async fn put_all(&self, plan: TempPath) -> Result<(), ArchiveError> {
        let s = &self.work.stats;
        if s.plan_copy.load(std::sync::atomic::Ordering::Relaxed)
            + s.plan_update.load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            return Ok(());
        }
        let (tx, rx) = async_channel::bounded::<Extracted>(1);
        let archive = self.options.archive.clone();
        let compression = self.checked.compression;
        let temp_dir = self.options.temp_dir.clone();
        let extractor = tokio::task::spawn_blocking(move || {
            Extraction {
                archive: &archive,
                compression,
                plan: &plan,
                temp_dir: temp_dir.as_deref(),
            }
            .run(tx)
        });
        let workers: Vec<_> = (0..self.options.concurrency)
            .map(|_| {
                let (rx, work) = (rx.clone(), self.work.clone());
                tokio::spawn(async move {
                    while let Ok(extracted) = rx.recv().await {
                        if work.cancel.is_cancelled() {
                            break;
                        }
                        work.put(extracted).await;
                    }
                })
            })
            .collect();
        drop(rx);
        for worker in workers {
            if let Err(e) = worker.await {
                tracing::error!(error = %e, "an upload worker panicked");
            }
        }
        let extracted = extractor.await.expect("the extractor panicked");
        if self.work.cancel.is_cancelled() {
            return Err(SyncError::Cancelled.into());
        }
        extracted
    }

    /// Delete the planned keys (`--delete`), after every put.
    async fn delete_all(&self, plan: TempPath) -> Result<(), ArchiveError> {
        let file = File::open(&plan).map_err(ArchiveError::io("reading the import plan"))?;
        let keys = BufReader::new(file).lines().map(|line| {
            line.map_err(ArchiveError::io("reading the import plan"))
                .and_then(|line| {
                    serde_json::from_str::<String>(&line).map_err(|e| {
                        ArchiveError::io("reading the import plan")(std::io::Error::other(e))
                    })
                })
        });
        let mut deletes = futures::stream::iter(keys)
            .map(|key| async move {
                let key = key?;
                let result = self.delete(&key).await;
                Ok::<_, ArchiveError>((key, result))
            })
            .buffer_unordered(self.options.concurrency);
        while let Some(done) = deletes.next().await {
            if self.work.cancel.is_cancelled() {
                return Err(SyncError::Cancelled.into());
            }
            let (key, result) = done?;
            let s = &self.work.stats;
            match result {
                Ok(()) => Stats::add(&s.deleted, 1),
                Err(failure) => {
                    Stats::add(&s.failed, 1);
                    let location = &self.options.destination;
                    let row = ReportRow::from_failure(
                        &location.bucket,
                        &location.key_for(&key),
                        TaskStatus::Failed,
                        &failure,
                    );
                    self.work.rows.push(&key, row);
                }
            }
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), S3Failure> {
        let destination = &self.work.destination;
        destination
            .client
            .delete_object()
            .bucket(&destination.location.bucket)
            .key(destination.location.key_for(key))
            .set_expected_bucket_owner(destination.expected_owner.clone())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }

    /// List the destination again: every manifest key present with the
    /// same size (and ETag, where comparable), and with `--delete` nothing
    /// else. Keys already reported are not reported twice.
    async fn verify(&self) -> Result<(), ArchiveError> {
        let s = &self.work.stats;
        let rows = &self.work.rows;
        let baseline = match &self.checked.header.since {
            Baseline::Full => "the export was a full one".to_owned(),
            Baseline::Date { date } => format!("it was not modified since {date}"),
            Baseline::Manifest { created_at } => {
                format!("it was unchanged since the manifest of {created_at}")
            }
        };
        let not_carried = format!(
            "and this archive does not carry it ({baseline}): import the archives before this one first, or a full export"
        );
        join_with_destination(self.manifest()?, self.listing(), |joined| {
            let (key, code, message) = match joined {
                Joined::Destination(extra) => {
                    if !self.options.delete || rows.already_reported(&extra.key) {
                        return Ok(());
                    }
                    let message =
                        "verify: the object is still at the destination but not in the manifest";
                    (extra.key, "ExtraneousAtDestination", message.to_owned())
                }
                Joined::Manifest(line) => {
                    if line.not_exported.is_some() {
                        return Ok(());
                    }
                    Stats::add(&s.verify_checked, 1);
                    if rows.already_reported(&line.key) {
                        return Ok(());
                    }
                    let message = if line.applicable().is_some() {
                        "verify: the object is not at the destination".to_owned()
                    } else {
                        format!("verify: the object is not at the destination, {not_carried}")
                    };
                    (line.key, "MissingAtDestination", message)
                }
                Joined::Both(line, destination) => {
                    if line.not_exported.is_some() {
                        return Ok(());
                    }
                    Stats::add(&s.verify_checked, 1);
                    if compare(&line, &destination) != Match::Different
                        || rows.already_reported(&line.key)
                    {
                        return Ok(());
                    }
                    let mut message = format!(
                        "verify: destination differs (size {} vs {}, ETag {} vs {})",
                        line.size, destination.size, line.etag, destination.etag
                    );
                    if line.applicable().is_none() {
                        message = format!("{message}, {not_carried}");
                    }
                    (line.key, "VerifyMismatch", message)
                }
            };
            Stats::add(&s.verify_mismatched, 1);
            rows.push(&key, self.row(&key, TaskStatus::Failed, code, &message));
            Ok(())
        })
        .await
    }
}

impl Work {
    /// Upload one extracted object and record the outcome.
    async fn put(&self, extracted: Extracted) {
        let Extracted { put, file } = extracted;
        let line = &put.line;
        let export = line
            .export
            .as_ref()
            .expect("only exported objects are planned");
        let location = &self.destination.location;
        let (bucket, full_key) = (location.bucket.as_str(), location.key_for(&line.key));
        let chosen = {
            let (path, line, export) = (file.to_path_buf(), line.clone(), export.clone());
            tokio::task::spawn_blocking(move || choose_layout(&path, &line, &export))
                .await
                .expect("choosing a layout panicked")
        };
        let result = match chosen {
            Ok(chosen) => put_file(
                &self.destination,
                line,
                export,
                &file,
                chosen.layout,
                &self.cancel,
            )
            .await
            .map(|etag| (etag, chosen.reproduces_etag)),
            Err(e) => Err(S3Failure {
                code: "LocalIoError".into(),
                http_status: None,
                message: format!("reading the extracted object {}: {e}", file.display()),
                class: RetryClass::Retryable,
            }),
        };
        drop(file);
        let s = &self.stats;
        match result {
            Ok((etag, reproduces)) => {
                Stats::add(if put.update { &s.updated } else { &s.copied }, 1);
                Stats::add(&s.bytes_copied, export.length);
                if !reproduces {
                    Stats::add(&s.warnings, 1);
                    let message = format!(
                        "written with the archive's checked bytes, but the source's ETag {} cannot be reproduced (unknown part layout, or not an MD5): the destination's is {etag}, so only the size can be compared",
                        line.etag
                    );
                    let row = ReportRow::new(
                        bucket,
                        &full_key,
                        TaskStatus::Warning,
                        "EtagNotReproduced",
                        None,
                        &message,
                    );
                    self.rows.push(&line.key, row);
                } else if !etag.is_empty() && etag != line.etag {
                    Stats::add(&s.failed, 1);
                    let message = format!(
                        "the destination stored it with ETag {etag}, not the source's {}",
                        line.etag
                    );
                    let row = ReportRow::new(
                        bucket,
                        &full_key,
                        TaskStatus::Failed,
                        "EtagMismatch",
                        None,
                        &message,
                    );
                    self.rows.push(&line.key, row);
                }
            }
            Err(failure) => {
                Stats::add(&s.failed, 1);
                let row = ReportRow::from_failure(bucket, &full_key, TaskStatus::Failed, &failure);
                self.rows.push(&line.key, row);
            }
        }
    }
}
