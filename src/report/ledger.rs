//! What a run counts as it happens and the rows it reports: [`Stats`]
//! (atomics, so workers never wait on each other), [`ReportRows`] (a CSV
//! spool in the S3 Batch Operations completion-report columns, so a million
//! failures still run in bounded memory) and the run's [`Phase`].

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::base::error::{S3Failure, SyncError};

/// The TaskStatus column: S3 Batch Operations uses `succeeded`/`failed`;
/// rows here are only written for objects that did not simply succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Not synced: counts toward exit code 1.
    Failed,
    /// Deliberately not copied (archived, SSE-C): a warning, exit code 3.
    Skipped,
    /// Synced, with a caveat (unverified ETag, tags not copied): exit code 3.
    Warning,
}

/// One row of failures.csv.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRow {
    #[serde(rename = "Bucket")]
    pub bucket: String,
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "VersionId")]
    pub version_id: String,
    #[serde(rename = "TaskStatus")]
    pub status: TaskStatus,
    #[serde(rename = "ErrorCode")]
    pub error_code: String,
    #[serde(rename = "HTTPStatusCode")]
    pub http_status: String,
    #[serde(rename = "ResultMessage")]
    pub message: String,
}

impl ReportRow {
    pub fn new(
        bucket: &str,
        key: &str,
        status: TaskStatus,
        code: &str,
        http: Option<u16>,
        message: &str,
    ) -> Self {
        ReportRow {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            version_id: String::new(),
            status,
            error_code: code.to_owned(),
            http_status: http.map(|s| s.to_string()).unwrap_or_default(),
            message: message.to_owned(),
        }
    }

    pub fn from_failure(bucket: &str, key: &str, status: TaskStatus, failure: &S3Failure) -> Self {
        Self::new(
            bucket,
            key,
            status,
            &failure.code,
            failure.http_status,
            &failure.message,
        )
    }
}

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters of a run.
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[$doc])* pub $name: AtomicU64,)*
            /// The current [`Phase`], for progress displays; not part of
            /// the summary. Read and set it with [`Stats::phase`] and
            /// [`Stats::set_phase`].
            phase: AtomicU64,
        }

        /// A point-in-time copy of [`Stats`].
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct Counts { $(pub $name: u64,)* }

        impl Counts {
            /// Add another run's (or batch's) counts to these.
            pub fn add(&mut self, other: &Counts) {
                $(self.$name += other.$name;)*
            }
        }

        impl Stats {
            pub fn snapshot(&self) -> Counts {
                Counts { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    listed_source, listed_source_bytes, listed_destination,
    /// Pieces the key range was listed in, in parallel (1: one stream).
    listed_pieces,
    /// Planned actions.
    plan_copy, plan_update, plan_delete, plan_bytes,
    skip_equal, skip_unverified, skip_filtered, skip_not_modified, extraneous_kept,
    /// Keys ending in `/` beside a directory, which has no such files.
    skip_folder_markers,
    /// Outcomes.
    copied, updated, deleted, bytes_copied,
    failed, skipped_archived, skipped_sse_c, source_vanished, warnings,
    /// Copied in the version found on listing the key again, after the
    /// source changed between the listing and the copy (never copied stale).
    source_changed,
    /// Deletes not carried out because the source key exists again (put
    /// back after the listing, or before a redriven batch ran): warnings.
    source_reappeared,
    /// Deletes not carried out because the destination object is no
    /// longer the one listed (its ETag changed): warnings.
    destination_changed,
    /// Delete tasks refused because their run did not ask for deletes
    /// (also counted as failed).
    delete_not_requested,
    /// Objects too large for one copier invocation, split into part tasks
    /// (serverless; each is then counted once as copied or failed).
    split_objects,
    verify_checked, verify_mismatched,
    /// Written keys verified by HEADs on both sides instead of a re-listing.
    verify_heads,
    /// Pairs whose ETags differ proven equal: by an entry of the ledger of
    /// proven pairs (no request), or by their stored checksums (a HEAD of
    /// each side), in the write phase and in verification.
    proven_by_ledger, proven_by_checksum,
    /// Pairs a dry run or plan could only say need comparing (two HEADs,
    /// then a copy if different): counted among the updates as well.
    plan_compare,
    /// HEADs sent to compare checksums, and pairs they proved different.
    checksum_heads, checksum_different,
    /// Entries of the ledger this run committed.
    ledger_entries,
    /// Files of a directory whose ETag a comparison needed: read whole to
    /// compute it, or known from the digest remembered with the file's
    /// unchanged fingerprint (a `stat`, [`crate::backend::local::digests`]).
    file_etags_read, file_etags_remembered,
    /// Objects not copied, deleted or compared because the run was stopped
    /// (cancelled, or failing fast past its failure threshold): the next
    /// run does them. Serverless runs also count the batches their copiers
    /// dropped whole, and the range tasks their listers dropped.
    dropped, dropped_batches, dropped_ranges,
    /// Requests sent again after a failed attempt (throttling, 5xx, broken
    /// connections), counted by the client ([`crate::base::metrics`]).
    retries,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn phase(&self) -> Phase {
        Phase::from_index(self.phase.load(Ordering::Relaxed))
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u64, Ordering::Relaxed);
    }
}

/// Where a local run is, for progress displays. Ordered: a later phase
/// compares greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Listing both sides; copies start with the first page.
    Listing = 0,
    /// Listing done, copies still running.
    Copying = 1,
    Verifying = 2,
    Done = 3,
}

impl Phase {
    fn from_index(index: u64) -> Phase {
        match index {
            0 => Phase::Listing,
            1 => Phase::Copying,
            2 => Phase::Verifying,
            _ => Phase::Done,
        }
    }
}

/// Keeps at most this many rows in memory for the printed report.
const SAMPLE_ROWS: usize = 20;

/// Per-object problems: streamed to a CSV spool file, with a small sample
/// and the set of problem keys (so the verify pass reports each key once).
/// Memory grows with the number of problems, never with the bucket.
pub struct ReportRows {
    writer: Mutex<csv::Writer<File>>,
    spool: tempfile::TempPath,
    sample: Mutex<Vec<ReportRow>>,
    problem_keys: Mutex<HashSet<String>>,
    rows: AtomicU64,
}

impl ReportRows {
    pub fn new() -> Result<Self, SyncError> {
        let file = tempfile::NamedTempFile::new().map_err(|e| SyncError::Report(e.to_string()))?;
        let (file, spool) = file.into_parts();
        Ok(Self {
            // The header is written once, in front, when the report is written.
            writer: Mutex::new(
                csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(file),
            ),
            spool,
            sample: Mutex::new(Vec::new()),
            problem_keys: Mutex::new(HashSet::new()),
            rows: AtomicU64::new(0),
        })
    }

    /// Record a row. A failed or skipped key is remembered so the verify
    /// pass does not report it again; warnings are not (their objects pass
    /// verification), which keeps this set to the size of the *failures*
    /// even when millions of objects are "unverified".
    pub fn push(&self, relative_key: &str, row: ReportRow) {
        if row.status != TaskStatus::Warning {
            self.problem_keys
                .lock()
                .expect("poisoned")
                .insert(relative_key.to_owned());
        }
        {
            let mut sample = self.sample.lock().expect("poisoned");
            if sample.len() < SAMPLE_ROWS {
                sample.push(row.clone());
            }
        }
        if let Err(e) = self.writer.lock().expect("poisoned").serialize(&row) {
            // The spool is a local temp file; if it cannot be written the
            // row still reaches the log, and the run is not declared clean.
            tracing::error!(key = %row.key, error = %e, "could not write a report row");
        }
        self.rows.fetch_add(1, Ordering::Relaxed);
    }

    pub fn already_reported(&self, relative_key: &str) -> bool {
        self.problem_keys
            .lock()
            .expect("poisoned")
            .contains(relative_key)
    }

    pub fn len(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn sample(&self) -> Vec<ReportRow> {
        self.sample.lock().expect("poisoned").clone()
    }

    /// Every row so far, read back from the spool (for a copier batch's
    /// result object, which holds at most a batch's worth).
    pub fn read_all(&self) -> Result<Vec<ReportRow>, SyncError> {
        let path = self.finish()?;
        csv::ReaderBuilder::new()
            .has_headers(false)
            .from_path(path)
            .and_then(|mut reader| reader.deserialize().collect::<Result<Vec<_>, _>>())
            .map_err(|e| SyncError::Report(format!("reading the report spool: {e}")))
    }

    /// Flush and return the spool file's path.
    pub fn finish(&self) -> Result<&Path, SyncError> {
        self.writer
            .lock()
            .expect("poisoned")
            .flush()
            .map_err(|e| SyncError::Report(e.to_string()))?;
        Ok(&self.spool)
    }
}

impl Counts {
    /// Objects the run did not sync: copies that failed, and objects that
    /// verification found different. What a failure threshold counts.
    pub fn failed_objects(&self) -> u64 {
        self.failed + self.verify_mismatched
    }
}
