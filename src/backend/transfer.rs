//! Stage 3, whatever the two sides are: move one object from the source
//! to the destination, or delete one from the destination.
//!
//! | sides | how | module |
//! |---|---|---|
//! | bucket → bucket, one endpoint | CopyObject / UploadPartCopy | [`crate::backend::s3::copy`], [`crate::backend::s3::multipart`] |
//! | bucket → bucket, two endpoints or accounts | GET → PUT / UploadPart | [`crate::backend::s3::stream`] |
//! | directory → bucket | PutObject / UploadPart from the file | [`crate::backend::local::upload`] |
//! | bucket → directory | GET (ranged, in parallel) to a file | [`crate::backend::local::download`] |
//!
//! Every way reports through the same [`Copied`] and [`CopyError`], so the
//! worker, the report and the verification do not care which it was.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use aws_sdk_s3::Client;

use crate::backend::local::digests::FileDigests;
use crate::backend::local::dir::{DirRole, LocalDir, io_failure};
use crate::backend::local::download::{self, Source, download};
use crate::backend::local::upload::{Destination, ObjectMeta, Shape, upload_file};
use crate::backend::local::{posix, remove};
use crate::backend::outcome::DeleteOutcome;
use crate::backend::outcome::{Copied, CopyError};
use crate::backend::s3::copier::Copier;
use crate::backend::s3::delete::{delete_object, delete_objects};
use crate::backend::s3::head::head_object;
use crate::base::error::{RetryClass, S3Failure};
use crate::model::entry::{ObjectEntry, Side};
use crate::model::location::{Location, S3Location};
use crate::model::options::{CopyOptions, DiffMode, SyncOptions, Transfer};
use crate::report::{ReportRows, Stats};

/// How this run moves objects.
#[derive(Debug, Clone)]
pub enum Mover {
    /// Both sides are buckets. The copier streams when `options.stream`.
    Buckets(Copier),
    /// A directory into a bucket.
    Upload {
        dir: Arc<LocalDir>,
        bucket: RemoteBucket,
    },
    /// A bucket into a directory.
    Download {
        dir: Arc<LocalDir>,
        bucket: RemoteBucket,
        /// GETs in flight across all downloads ([`download::RANGES_IN_FLIGHT`]).
        ranges: Arc<tokio::sync::Semaphore>,
    },
}

/// The bucket side of a transfer with a directory, and how to write.
#[derive(Debug, Clone)]
pub struct RemoteBucket {
    pub client: Client,
    pub location: S3Location,
    pub options: CopyOptions,
}

impl Mover {
    /// The copier of a bucket-to-bucket run. The serverless runtime only
    /// has those (its input refuses local directories), so there a missing
    /// copier is a bug, not a condition to handle.
    pub fn copier(&self) -> &Copier {
        self.buckets()
            .expect("a bucket-to-bucket run: the serverless runtime refuses local directories")
    }

    /// The mover of a run, as its options decided ([`Transfer`]): this is
    /// where that decision becomes clients and directories. Problems a
    /// directory meets on the way (unreadable files, kept links) go to
    /// `rows` and `stats`.
    pub fn for_run(
        options: &SyncOptions,
        source_client: &Client,
        destination_client: &Client,
        (rows, stats): (&Arc<ReportRows>, &Arc<Stats>),
    ) -> Mover {
        let dir = |location: &Location, role: DirRole| {
            let Location::Local(root) = location else {
                unreachable!("the options chose a transfer with a directory on this side")
            };
            Arc::new(LocalDir {
                root: root.to_owned(),
                role,
                hash_etags: options.diff.mode == DiffMode::Etag,
                // Beside the ledger, which is only kept in `etag` mode.
                digests: match &options.ledger {
                    Some(Location::Local(ledger)) => Some(FileDigests::in_dir(ledger)),
                    _ => None,
                },
                part_size: options.copy.part_size,
                problems: Some((rows.clone(), stats.clone())),
                reported: Default::default(),
                target: Default::default(),
            })
        };
        let bucket = |client: &Client, location: &Location| {
            let Location::S3(location) = location else {
                unreachable!("the options chose a transfer with a bucket on this side")
            };
            RemoteBucket {
                client: client.clone(),
                location: location.clone(),
                options: options.copy.clone(),
            }
        };
        match options.transfer {
            // The copier streams when `options.copy.stream`, which the
            // options set exactly for Transfer::Streamed.
            Transfer::ServerSide | Transfer::Streamed => {
                let (source, destination) = (
                    bucket(source_client, &options.source),
                    bucket(destination_client, &options.destination),
                );
                Mover::Buckets(Copier {
                    source_client: source.client,
                    destination_client: destination.client,
                    source: source.location,
                    destination: destination.location,
                    options: options.copy.clone(),
                })
            }
            Transfer::Upload => Mover::Upload {
                dir: dir(&options.source, DirRole::Source),
                bucket: bucket(destination_client, &options.destination),
            },
            Transfer::Download => Mover::Download {
                dir: dir(
                    &options.destination,
                    DirRole::Destination {
                        delete: options.diff.delete,
                    },
                ),
                bucket: bucket(source_client, &options.source),
                ranges: Arc::new(tokio::sync::Semaphore::new(
                    download::RANGES_IN_FLIGHT.max(options.copy.part_concurrency),
                )),
            },
        }
    }

    /// The copier of a bucket-to-bucket run (the serverless runtime's only
    /// kind, which its input validation ensures).
    pub fn buckets(&self) -> Option<&Copier> {
        match self {
            Mover::Buckets(copier) => Some(copier),
            _ => None,
        }
    }

    /// The directory side, if there is one.
    pub fn local_dir(&self) -> Option<&Arc<LocalDir>> {
        match self {
            Mover::Buckets(_) => None,
            Mover::Upload { dir, .. } | Mover::Download { dir, .. } => Some(dir),
        }
    }

    /// The report's bucket and key columns for a key of `side`.
    pub fn row_names(&self, side: Side, relative: &str) -> (String, String) {
        match (self, side) {
            (Mover::Buckets(copier), Side::Source) => Location::S3(copier.source.clone()),
            (Mover::Buckets(copier), Side::Destination) => Location::S3(copier.destination.clone()),
            (Mover::Upload { dir, .. }, Side::Source)
            | (Mover::Download { dir, .. }, Side::Destination) => Location::Local(dir.root.clone()),
            (Mover::Upload { bucket, .. } | Mover::Download { bucket, .. }, _) => {
                Location::S3(bucket.location.clone())
            }
        }
        .row_names(relative)
    }

    /// One key on both sides, as a listing would show it (`None`: absent),
    /// for verifying the keys a run wrote. A file's ETag is computed in
    /// the shape of its object's when the two are the same size and the
    /// run compares ETags, as the diff does.
    pub async fn head_both(
        &self,
        relative: &str,
    ) -> (
        Result<Option<ObjectEntry>, S3Failure>,
        Result<Option<ObjectEntry>, S3Failure>,
    ) {
        let (dir, bucket, local_side) = match self {
            Mover::Buckets(copier) => {
                return tokio::join!(
                    copier.head(Side::Source, relative),
                    copier.head(Side::Destination, relative)
                );
            }
            Mover::Upload { dir, bucket } => (dir, bucket, Side::Source),
            Mover::Download { dir, bucket, .. } => (dir, bucket, Side::Destination),
        };
        let remote_side = match local_side {
            Side::Source => Side::Destination,
            Side::Destination => Side::Source,
        };
        let (file, object) = tokio::join!(
            stat_file(dir, relative),
            head_object(
                &bucket.client,
                &bucket.location,
                &bucket.options,
                remote_side,
                relative
            )
        );
        let file = match (file, &object) {
            (Ok(Some(mut file)), Ok(Some(object)))
                if dir.hash_etags && file.size == object.size =>
            {
                let path = dir.path_for(relative);
                let (remote, part_size) = (object.etag.clone(), dir.part_size);
                let size = file.size;
                // The file's checksum in the object's algorithm, when that
                // is a full-object CRC: what proves a KMS object equal to
                // the file, as its ETag cannot.
                let algorithm = object
                    .checksum
                    .as_ref()
                    .filter(|c| c.full_object)
                    .map(|c| c.algorithm);
                let (etag, checksum) = tokio::task::spawn_blocking(move || {
                    let path = path?;
                    let read = |e: std::io::Error| io_failure("reading", &path, &e);
                    let etag =
                        crate::backend::local::etag::etag_like(&path, size, &remote, part_size)
                            .map_err(read)?;
                    let checksum = match algorithm {
                        Some(algorithm) => {
                            crate::backend::local::etag::file_checksum(&path, size, algorithm)
                                .map_err(read)?
                        }
                        None => None,
                    };
                    Ok((etag, checksum))
                })
                .await
                .unwrap_or_else(|e| Err(join_failure(e)))
                .unwrap_or_default();
                file.etag = etag;
                file.checksum = checksum;
                Ok(Some(file))
            }
            (file, _) => file,
        };
        match local_side {
            Side::Source => (file, object),
            Side::Destination => (object, file),
        }
    }

    /// Move one listed object to the same relative key at the destination.
    pub async fn copy(
        &self,
        entry: &ObjectEntry,
        cancel: &CancellationToken,
    ) -> Result<Copied, CopyError> {
        match self {
            Mover::Buckets(copier) => copier.copy(entry, cancel).await,
            Mover::Upload { dir, bucket } => upload(dir, bucket, entry, cancel).await,
            Mover::Download {
                dir,
                bucket,
                ranges,
            } => {
                let from = Source {
                    client: &bucket.client,
                    location: &bucket.location,
                    options: &bucket.options,
                    ranges,
                };
                let (downloaded, source_changed) = match download(&from, dir, entry, cancel).await {
                    // Changed since it was listed: fetch it as it is now,
                    // as a copy lists the key again.
                    Err(CopyError::SourceChanged) => {
                        let fresh = head_object(
                            &bucket.client,
                            &bucket.location,
                            &bucket.options,
                            Side::Source,
                            &entry.key,
                        )
                        .await
                        .map_err(CopyError::from_failure)?
                        .ok_or(CopyError::Vanished)?;
                        (
                            download(&from, dir, &fresh, cancel)
                                .await
                                .map_err(changed_twice)?,
                            true,
                        )
                    }
                    other => (other?, false),
                };
                Ok(Copied {
                    bytes: downloaded.bytes,
                    multipart: false,
                    warnings: downloaded.warnings,
                    source_changed,
                    etags: None,
                })
            }
        }
    }

    /// Delete one destination object, unconditionally. The worker deletes
    /// through [`Mover::delete_listed`], which checks both sides first and
    /// calls this only for a directory's files.
    pub async fn delete(&self, entry: &ObjectEntry) -> Result<(), S3Failure> {
        match self {
            Mover::Buckets(copier) => copier.delete(entry).await,
            Mover::Upload { bucket, .. } => {
                delete_object(
                    &bucket.client,
                    &bucket.location,
                    &bucket.options,
                    &entry.key,
                )
                .await
            }
            Mover::Download { dir, .. } => {
                let (dir, key) = (dir.clone(), entry.key.clone());
                tokio::task::spawn_blocking(move || remove::delete_file(&dir, &key))
                    .await
                    .map_err(join_failure)?
            }
        }
    }
}

impl Mover {
    /// Delete listed destination objects (for `--delete`), each only while
    /// its source key is still absent and, in a bucket, while it still has
    /// the ETag it was listed with; one outcome per entry, in order.
    ///
    /// The source is looked at first, `concurrency` keys at once: a HEAD
    /// where it is a bucket, a stat where it is a directory. Then a
    /// bucket's objects go [`MAX_DELETE_KEYS`](crate::model::s3_shape::MAX_DELETE_KEYS)
    /// to a conditional DeleteObjects request ([`delete_objects`]); a
    /// directory's files are removed one by one by [`Mover::delete`].
    pub async fn delete_listed(
        &self,
        entries: &[ObjectEntry],
        concurrency: usize,
    ) -> Vec<DeleteOutcome> {
        use futures::StreamExt;
        // Owned keys: a stream over borrowed entries trips the compiler's
        // higher-ranked lifetime check once the future is spawned.
        let keys: Vec<String> = entries.iter().map(|entry| entry.key.clone()).collect();
        let mut outcomes: Vec<Option<DeleteOutcome>> = futures::stream::iter(keys)
            .map(|key| async move {
                DeleteOutcome::unless_source_absent(self.head_source(&key).await).err()
            })
            .buffered(concurrency.max(1))
            .collect()
            .await;
        let clear: Vec<ObjectEntry> = entries
            .iter()
            .zip(&outcomes)
            .filter(|(_, kept)| kept.is_none())
            .map(|(entry, _)| entry.clone())
            .collect();
        let deleted = if clear.is_empty() {
            Vec::new()
        } else {
            match self {
                Mover::Buckets(copier) => {
                    delete_objects(
                        &copier.destination_client,
                        &copier.destination,
                        &copier.options,
                        &clear,
                        concurrency,
                    )
                    .await
                }
                Mover::Upload { bucket, .. } => {
                    delete_objects(
                        &bucket.client,
                        &bucket.location,
                        &bucket.options,
                        &clear,
                        concurrency,
                    )
                    .await
                }
                Mover::Download { .. } => {
                    futures::stream::iter(clear)
                        .map(|entry| async move {
                            match self.delete(&entry).await {
                                Ok(()) => DeleteOutcome::Deleted,
                                Err(failure) => DeleteOutcome::Failed(failure),
                            }
                        })
                        .buffered(concurrency.max(1))
                        .collect()
                        .await
                }
            }
        };
        let mut deleted = deleted.into_iter();
        for outcome in outcomes.iter_mut().filter(|o| o.is_none()) {
            *outcome = deleted.next();
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every entry has an outcome"))
            .collect()
    }

    /// The source side of `relative`, as a listing would show it.
    async fn head_source(&self, relative: &str) -> Result<Option<ObjectEntry>, S3Failure> {
        // A key absent from the source as of a past time stays absent:
        // whatever is written now is newer than that time. (Its current
        // version, which a HEAD would find, is not the one that counts.)
        let as_of = match self {
            Mover::Buckets(copier) => copier.options.as_of_ms,
            Mover::Download { bucket, .. } => bucket.options.as_of_ms,
            Mover::Upload { .. } => None,
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if as_of.is_some_and(|t| t < now_ms) {
            return Ok(None);
        }
        match self {
            Mover::Buckets(copier) => copier.head(Side::Source, relative).await,
            Mover::Upload { dir, .. } => stat_file(dir, relative).await,
            Mover::Download { bucket, .. } => {
                head_object(
                    &bucket.client,
                    &bucket.location,
                    &bucket.options,
                    Side::Source,
                    relative,
                )
                .await
            }
        }
    }
}

/// A file as a listing of the directory shows it (no ETag yet). In a
/// restore target nothing is looked up through a link, as its walk does.
async fn stat_file(dir: &Arc<LocalDir>, relative: &str) -> Result<Option<ObjectEntry>, S3Failure> {
    let path = dir.path_for(relative)?;
    let meta = match dir.role {
        DirRole::Source => match tokio::fs::metadata(&path).await {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_failure("reading", &path, &e)),
        },
        DirRole::Destination { .. } => {
            let (dir, relative) = (dir.clone(), relative.to_owned());
            tokio::task::spawn_blocking(move || remove::metadata_beneath(&dir, &relative))
                .await
                .map_err(join_failure)??
        }
    };
    Ok(meta
        .filter(std::fs::Metadata::is_file)
        .map(|meta| crate::backend::local::dir::file_entry(relative, &meta)))
}

fn join_failure(e: tokio::task::JoinError) -> S3Failure {
    S3Failure {
        code: "LocalIoError".into(),
        http_status: None,
        message: e.to_string(),
        class: RetryClass::NonRetryable,
    }
}

fn changed_twice(err: CopyError) -> CopyError {
    match err {
        CopyError::SourceChanged => CopyError::Failed(S3Failure {
            code: "PreconditionFailed".into(),
            http_status: Some(412),
            message: "the source changed twice while it was being transferred; the next run will transfer it".into(),
            class: RetryClass::Retryable,
        }),
        other => other,
    }
}

/// Upload one file as it is now. A file that changed since the listing is
/// uploaded in its new state (and counted as changed); one that changes
/// while it uploads may have been read half old, half new, so the upload
/// fails and the next run, seeing it newer, sends it again.
async fn upload(
    dir: &LocalDir,
    bucket: &RemoteBucket,
    entry: &ObjectEntry,
    cancel: &CancellationToken,
) -> Result<Copied, CopyError> {
    let path = dir.path_for(&entry.key).map_err(CopyError::Failed)?;
    let stat = |path: std::path::PathBuf| async move {
        tokio::fs::metadata(&path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => CopyError::Vanished,
                _ => CopyError::Failed(io_failure("reading", &path, &e)),
            })
    };
    let before = stat(path.clone()).await?;
    let listed_state = (entry.size, entry.last_modified_ms);
    let state = |m: &std::fs::Metadata| (m.len(), posix::mtime_ms(m));
    let to = Destination {
        client: &bucket.client,
        location: &bucket.location,
        options: &bucket.options,
    };
    let meta = ObjectMeta::for_file(&path, &before, bucket.options.posix_metadata);
    upload_file(
        &to,
        &entry.key,
        &path,
        before.len(),
        &meta,
        Shape::Auto,
        cancel,
    )
    .await?;
    let after = stat(path.clone()).await?;
    if state(&after) != state(&before) {
        return Err(CopyError::Failed(S3Failure {
            code: "SourceChangedDuringUpload".into(),
            http_status: None,
            message:
                "the file changed while it was being uploaded; the next run will upload it again"
                    .into(),
            class: RetryClass::Retryable,
        }));
    }
    Ok(Copied {
        bytes: before.len(),
        multipart: before.len() > bucket.options.multipart_threshold,
        warnings: Vec::new(),
        source_changed: state(&before) != listed_state,
        etags: None,
    })
}
