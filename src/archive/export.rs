//! `s3-fanout export`: list the source once, in order, and write an archive
//! of what changed since a baseline plus a manifest of every key.
//!
//! ```text
//!  list_range ─ changed since? ─ prepare (tags, part 1, small bodies) ─ in order ─┬─ tar entry (writer thread)
//!                (date or PREV      up to --concurrency objects ahead,            └─ manifest line (spool)
//!                 walked alongside) each its own task                   ... then manifest + trailer, rename into place
//! ```
//!
//! Small objects (up to [`WHOLE_OBJECT_LIMIT`]) are read whole by tasks
//! running ahead of the writer; larger ones are streamed GET → tar when
//! their turn comes, resuming with a ranged GET on the same ETag if the
//! body breaks off. So memory is bounded by `--concurrency` small objects
//! plus a few chunks, whatever the bucket or object sizes. The archive is
//! written under a temporary name beside ARCHIVE and renamed into place
//! only once complete: a killed or failed export leaves no archive that
//! looks whole.

use std::path::Path;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::error::ArchiveError;
use super::fetch::{BODY_ATTEMPTS, Opened, Small, Source, WholeObject, body_failed};
use super::format::{
    Baseline, Exported, FORMAT_VERSION, MANIFEST_FORMAT, ManifestEntry, ManifestHeader,
    NotExported, ObjectHeaders,
};
use super::manifest::{ManifestWriter, UnchangedSince};
use super::options::{ExportOptions, Since};
use super::previous::open_previous;
use super::summary::{RunClock, RunSides};
use super::writer::{Appended, ArchiveWriter, TarWriter};
use crate::backend::outcome::CopyError;
use crate::backend::s3::listing::{ListTarget, list_range};
use crate::base::client::build_s3_client;
use crate::base::error::{RetryClass, S3Failure, SyncError};
use crate::base::metrics::RequestCounter;
use crate::model::entry::ObjectEntry;
use crate::model::location::KeyRange;
use crate::report::{ReportRow, ReportRows, Stats, Summary, TaskStatus};

/// Objects up to this size are read whole, ahead of their turn: most
/// objects, so most GETs overlap. 8 MiB is the AWS CLI's part size, and
/// `--concurrency` of them is the export's memory.
pub const WHOLE_OBJECT_LIMIT: u64 = 8 * 1024 * 1024;

/// Export `options.source` to `options.archive`. `Err` means no archive was
/// written (bad configuration, a failed listing, a local write error);
/// per-object problems are in the summary and the report.
pub async fn run_export(
    options: &ExportOptions,
    cancel: &CancellationToken,
) -> Result<Summary, ArchiveError> {
    let clock = RunClock::start();
    let counter = RequestCounter::new();
    let client = build_s3_client(&options.client, Some(counter.clone())).await;
    let source = Source {
        client: client.clone(),
        location: options.source.clone(),
        expected_owner: options.expected_owner.clone(),
        request_payer: options.request_payer,
    };
    let (since, unchanged) = baseline(options).await?;
    let header = ManifestHeader {
        format: MANIFEST_FORMAT.into(),
        version: FORMAT_VERSION,
        source: options.source.to_string(),
        created_at: clock.started_at.clone(),
        since,
    };
    let partial = partial_file(&options.archive)?;
    let (file, partial) = partial.into_parts();
    let tar = TarWriter::new(file, options.compression, clock.epoch_secs())
        .map_err(ArchiveError::io("starting the archive"))?;
    let mut exporter = Exporter {
        source,
        writer: ArchiveWriter::start(tar),
        manifest: ManifestWriter::create(&header)?,
        stats: Stats::default(),
        rows: ReportRows::new()?,
        cancel: cancel.clone(),
    };
    exporter.export_all(options, unchanged).await?;

    let Exporter {
        writer,
        manifest,
        stats,
        rows,
        ..
    } = exporter;
    let (spool, lines) = manifest.finish()?;
    if let Some(out) = &options.manifest_out {
        std::fs::copy(&spool, out)
            .map_err(ArchiveError::io(format!("writing {}", out.display())))?;
    }
    writer
        .finish(spool, lines)
        .await
        .map_err(ArchiveError::io(format!(
            "writing {}",
            options.archive.display()
        )))?;
    partial.persist(&options.archive).map_err(|e| {
        ArchiveError::io(format!(
            "renaming the archive to {}",
            options.archive.display()
        ))(e.error)
    })?;
    let sides = RunSides {
        source: options.source.to_string(),
        destination: options.archive.display().to_string(),
    };
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

/// What the export leaves out, and for a previous manifest the walker that
/// answers "unchanged?" key by key.
async fn baseline(
    options: &ExportOptions,
) -> Result<(Baseline, Option<UnchangedSince>), ArchiveError> {
    match &options.since {
        Since::Full => Ok((Baseline::Full, None)),
        Since::Date { text, .. } => Ok((Baseline::Date { date: text.clone() }, None)),
        Since::Manifest(path) => {
            let path = path.clone();
            let previous = tokio::task::spawn_blocking(move || open_previous(&path))
                .await
                .expect("reading the previous manifest panicked")?;
            let source = options.source.to_string();
            if previous.header.source != source {
                return Err(SyncError::Config(format!(
                    "--since-manifest: that manifest is of {}, not of {source}: a delta against another location would leave out objects the destination never got",
                    previous.header.source
                ))
                .into());
            }
            let created_at = previous.header.created_at.clone();
            Ok((
                Baseline::Manifest { created_at },
                Some(UnchangedSince::new(previous)?),
            ))
        }
    }
}

/// A temp file beside `archive`, so the final rename stays on one file system.
fn partial_file(archive: &Path) -> Result<tempfile::NamedTempFile, ArchiveError> {
    let dir = match archive.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".s3-fanout-export-")
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(ArchiveError::io(format!(
            "creating a file in {}",
            dir.display()
        )))
}

type Tags = Result<Vec<(String, String)>, String>;

/// One listed object, made ready ahead of its turn.
enum Prepared {
    /// Unchanged since the baseline: a manifest line, no entry.
    Unchanged(ObjectEntry),
    /// Read whole: ready to append.
    Whole {
        whole: WholeObject,
        tags: Tags,
        part_size: Option<u64>,
    },
    /// Too large to hold: streamed when its turn comes.
    Large {
        listed: ObjectEntry,
        tags: Tags,
        part_size: Option<u64>,
    },
    /// Could not be read (or is gone).
    Unreadable {
        listed: ObjectEntry,
        error: CopyError,
    },
}

struct Exporter {
    source: Source,
    writer: ArchiveWriter,
    manifest: ManifestWriter,
    stats: Stats,
    rows: ReportRows,
    cancel: CancellationToken,
}

impl Exporter {
    async fn export_all(
        &mut self,
        options: &ExportOptions,
        mut unchanged: Option<UnchangedSince>,
    ) -> Result<(), ArchiveError> {
        let target = ListTarget {
            as_of_ms: options.as_of_ms,
            ..ListTarget::new(
                &self.source.client,
                &options.source,
                options.expected_owner.clone(),
                options.request_payer,
            )
        };
        let since_ms = match &options.since {
            Since::Date { at, .. } => Some(at.to_millis().unwrap_or(i64::MIN)),
            _ => None,
        };
        // Decided in listing order (the previous manifest is walked
        // alongside), then each changed object is prepared in a task of
        // its own: spawned, it keeps reading while the writer is busy with
        // a large object, and `buffered` caps how many run at once.
        let source = self.source.clone();
        let prepared = list_range(target, KeyRange::all())
            .map(move |listed| {
                let listed = listed?;
                let changed = match (&mut unchanged, since_ms) {
                    (Some(walker), _) => !walker.unchanged(&listed)?,
                    (None, Some(since)) => listed.last_modified_ms >= since,
                    (None, None) => true,
                };
                Ok::<_, ArchiveError>((listed, changed))
            })
            .map(move |decided| {
                let source = source.clone();
                tokio::spawn(async move {
                    match decided? {
                        (listed, false) => Ok(Prepared::Unchanged(listed)),
                        (listed, true) => Ok(prepare(&source, listed).await),
                    }
                })
            })
            .buffered(options.concurrency);
        let mut prepared = std::pin::pin!(prepared);

        let mut listed_any = false;
        loop {
            let next = tokio::select! {
                _ = self.cancel.cancelled() => return Err(SyncError::Cancelled.into()),
                next = prepared.next() => next,
            };
            let Some(next) = next else { return Ok(()) };
            let item = next.expect("an export task panicked");
            let item = match item {
                Err(ArchiveError::Sync(SyncError::S3 { failure, .. })) if !listed_any => {
                    return Err(listing_refused(options, failure));
                }
                other => other?,
            };
            listed_any = true;
            self.write(item).await?;
        }
    }

    /// Write one prepared object: entry (if any) then manifest line.
    async fn write(&mut self, item: Prepared) -> Result<(), ArchiveError> {
        let listed = match &item {
            Prepared::Unchanged(l) | Prepared::Large { listed: l, .. } => l,
            Prepared::Unreadable { listed, .. } => listed,
            Prepared::Whole { whole, .. } => &whole.current,
        };
        Stats::add(&self.stats.listed_source, 1);
        Stats::add(&self.stats.listed_source_bytes, listed.size);
        if !matches!(item, Prepared::Unchanged(_)) {
            Stats::add(&self.stats.plan_copy, 1);
            Stats::add(&self.stats.plan_bytes, listed.size);
        }
        match item {
            Prepared::Unchanged(listed) => {
                Stats::add(&self.stats.skip_not_modified, 1);
                self.manifest.push(&ManifestEntry::from_listed(&listed))
            }
            Prepared::Unreadable { listed, error } => self.not_exported(&listed, error),
            Prepared::Whole {
                whole,
                tags,
                part_size,
            } => {
                let appended = self
                    .writer
                    .append_bytes(entry_mtime(&whole.current), whole.bytes)
                    .await
                    .map_err(ArchiveError::io("writing the archive"))?;
                let read = Read {
                    current: whole.current,
                    headers: whole.headers,
                    tags,
                    part_size,
                    changed: whole.changed,
                };
                self.exported(read, appended, None)
            }
            Prepared::Large {
                listed,
                tags,
                part_size,
            } => self.stream(listed, tags, part_size).await,
        }
    }

    /// Stream a large object into its entry, resuming a broken body with a
    /// ranged GET on the same ETag.
    async fn stream(
        &mut self,
        listed: ObjectEntry,
        tags: Tags,
        part_size: Option<u64>,
    ) -> Result<(), ArchiveError> {
        let (opened, changed) = match self.source.open(&listed).await {
            Ok(found) => found,
            Err(error) => return self.not_exported(&listed, error),
        };
        let Opened {
            current,
            headers,
            mut body,
        } = opened;
        let entry = self
            .writer
            .append_stream(entry_mtime(&current), current.size)
            .await
            .map_err(ArchiveError::io("writing the archive"))?;
        let (mut sent, mut attempts) = (0u64, 1u32);
        let broke: Option<CopyError> = loop {
            let chunk = tokio::select! {
                _ = self.cancel.cancelled() => return Err(SyncError::Cancelled.into()),
                chunk = body.try_next() => chunk,
            };
            match chunk {
                Ok(Some(chunk)) => {
                    sent += chunk.len() as u64;
                    if sent > current.size {
                        break Some(CopyError::Failed(incomplete(
                            "the server sent more bytes than the object's size",
                        )));
                    }
                    if entry.chunks.send(chunk).await.is_err() {
                        break None; // the writer failed: its answer says why
                    }
                }
                Ok(None) | Err(_) if sent == current.size => break None,
                Ok(None) | Err(_) => {
                    if attempts >= BODY_ATTEMPTS {
                        break Some(body_failed(&listed.key));
                    }
                    attempts += 1;
                    match self
                        .source
                        .get(&current, Some(&current.etag), (sent > 0).then_some(sent))
                        .await
                    {
                        Ok(again) => body = again.body,
                        Err(CopyError::SourceChanged | CopyError::Vanished) => {
                            break Some(CopyError::Failed(incomplete(
                                "the object changed or was deleted while it was being read; the next export will take it",
                            )));
                        }
                        Err(error) => break Some(error),
                    }
                }
            }
        };
        drop(entry.chunks);
        drop(body);
        let appended = entry
            .done
            .await
            .map_err(|_| {
                ArchiveError::io("writing the archive")(std::io::Error::other(
                    "the archive writer stopped",
                ))
            })?
            .map_err(ArchiveError::io("writing the archive"))?;
        let read = Read {
            current,
            headers,
            tags,
            part_size,
            changed,
        };
        let broke = match broke {
            Some(error) => Some(error),
            None if !appended.complete => Some(CopyError::Failed(incomplete(
                "the object's body ended early",
            ))),
            None => None,
        };
        self.exported(read, appended, broke)
    }

    /// The manifest line of an object whose entry was written; `broke`
    /// says why the entry is incomplete (it is then kept, padded, and
    /// marked not to be applied).
    fn exported(
        &mut self,
        read: Read,
        appended: Appended,
        broke: Option<CopyError>,
    ) -> Result<(), ArchiveError> {
        let (bucket, full_key) = self.names(&read.current.key);
        let mut line = ManifestEntry::from_listed(&read.current);
        let tags = match read.tags {
            Ok(tags) => tags,
            Err(warning) => {
                Stats::add(&self.stats.warnings, 1);
                let row = ReportRow::new(
                    &bucket,
                    &full_key,
                    TaskStatus::Warning,
                    "TagsNotExported",
                    None,
                    &warning,
                );
                self.rows.push(&read.current.key, row);
                Vec::new()
            }
        };
        if read.changed {
            Stats::add(&self.stats.source_changed, 1);
        }
        line.export = Some(Exported {
            entry: appended.name,
            length: appended.digest.length,
            sha256: appended.digest.sha256,
            md5: appended.digest.md5,
            part_size: read.part_size,
            headers: read.headers,
            tags,
        });
        match broke {
            None => {
                Stats::add(&self.stats.copied, 1);
                Stats::add(&self.stats.bytes_copied, appended.digest.length);
            }
            Some(error) => {
                line.not_exported = Some(self.report_unreadable(&read.current.key, error))
            }
        }
        self.manifest.push(&line)
    }

    /// An object that should have been exported and was not.
    fn not_exported(&mut self, listed: &ObjectEntry, error: CopyError) -> Result<(), ArchiveError> {
        if matches!(error, CopyError::Vanished) {
            // Gone since it was listed: gone from the source, so gone from
            // the manifest too (an import with --delete then deletes it).
            Stats::add(&self.stats.source_vanished, 1);
            let (bucket, full_key) = self.names(&listed.key);
            let row = ReportRow::new(
                &bucket,
                &full_key,
                TaskStatus::Warning,
                "SourceDeleted",
                Some(404),
                "the object was deleted after it was listed: it is in neither the archive nor its manifest",
            );
            self.rows.push(&listed.key, row);
            return Ok(());
        }
        let mut line = ManifestEntry::from_listed(listed);
        line.not_exported = Some(self.report_unreadable(&listed.key, error));
        self.manifest.push(&line)
    }

    /// Count and report an object left out; what its manifest line says.
    fn report_unreadable(&self, key: &str, error: CopyError) -> NotExported {
        let (bucket, full_key) = self.names(key);
        let s = &self.stats;
        let (failure, skipped) = match error {
            CopyError::Archived(f) => {
                Stats::add(&s.skipped_archived, 1);
                let message = format!(
                    "archived (Glacier Flexible Retrieval or Deep Archive): restore it to export it: {}",
                    f.message
                );
                (S3Failure { message, ..f }, true)
            }
            CopyError::SseC(f) => {
                Stats::add(&s.skipped_sse_c, 1);
                let message = format!(
                    "SSE-C object, cannot be read without the customer key: {}",
                    f.message
                );
                (S3Failure { message, ..f }, true)
            }
            other => {
                Stats::add(&s.failed, 1);
                let failure = match other {
                    CopyError::Failed(f) => f,
                    CopyError::Cancelled => incomplete("interrupted"),
                    _ => incomplete("the object changed twice while it was being read"),
                };
                (failure, false)
            }
        };
        let status = if skipped {
            TaskStatus::Skipped
        } else {
            TaskStatus::Failed
        };
        self.rows.push(
            key,
            ReportRow::from_failure(&bucket, &full_key, status, &failure),
        );
        NotExported {
            code: failure.code,
            message: failure.message,
            skipped,
        }
    }

    fn names(&self, key: &str) -> (String, String) {
        let location = &self.source.location;
        (location.bucket.clone(), location.key_for(key))
    }
}

/// What was read of one object besides its bytes.
struct Read {
    current: ObjectEntry,
    headers: ObjectHeaders,
    tags: Tags,
    part_size: Option<u64>,
    changed: bool,
}

/// Tags and (for a `-N` ETag) part 1's size, then, if small, the bytes.
async fn prepare(source: &Source, listed: ObjectEntry) -> Prepared {
    let tags = match source.tags(&listed).await {
        Ok(tags) => tags,
        Err(error) => return Prepared::Unreadable { listed, error },
    };
    let part_size = source.part_size(&listed).await;
    if listed.size > WHOLE_OBJECT_LIMIT {
        return Prepared::Large {
            listed,
            tags,
            part_size,
        };
    }
    match source.read_whole(&listed, WHOLE_OBJECT_LIMIT).await {
        Ok(Small::Whole(whole)) => Prepared::Whole {
            whole,
            tags,
            part_size,
        },
        // Grown past the limit since it was listed: streamed in its turn.
        Ok(Small::Grown(current)) => Prepared::Large {
            listed: current,
            tags,
            part_size,
        },
        Err(error) => Prepared::Unreadable { listed, error },
    }
}

/// The source's first page failed: say what is wrong with the bucket
/// (exit 2) if that is what it is.
fn listing_refused(options: &ExportOptions, failure: S3Failure) -> ArchiveError {
    let bucket = &options.source.bucket;
    match crate::backend::s3::preflight::bucket_problem(
        &failure,
        "source",
        bucket,
        options.expected_owner.as_deref(),
    ) {
        Some(why) => SyncError::Config(why).into(),
        None => SyncError::s3(format!("listing {}", options.source), failure).into(),
    }
}

fn incomplete(message: &str) -> S3Failure {
    S3Failure {
        code: "IncompleteExport".into(),
        http_status: None,
        message: message.into(),
        class: RetryClass::Retryable,
    }
}

/// A tar entry's date: the object's, to the second.
fn entry_mtime(entry: &ObjectEntry) -> u64 {
    u64::try_from(entry.last_modified_ms / 1000).unwrap_or(0)
}
