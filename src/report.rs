//! Stage 5: the report.
//!
//! [`Stats`] counts everything as it happens (atomics, so workers never wait
//! on each other). Per-object problems are streamed to a CSV spool file in
//! the S3 Batch Operations completion-report columns, so a run with a million
//! failures still runs in bounded memory. At the end, [`Summary`] is the JSON
//! document users and the state machine read, and both files are written to
//! the report location, local or `s3://`.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};

use crate::base::error::{S3Failure, SyncError, classify};
use crate::model::location::{HTML_NAME, ReportLocation, local_report_files, s3_report_keys};

pub mod emf;
pub mod html;
pub mod timeline;

pub use timeline::{PhaseClock, PhaseTiming, Timeline, TimelinePoint};

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

/// The outcome class of a whole run, and its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Ok,
    Warnings,
    Failed,
    Interrupted,
}

impl RunStatus {
    pub fn exit_code(self) -> i32 {
        match self {
            RunStatus::Ok => 0,
            RunStatus::Failed => 1,
            RunStatus::Warnings => 3,
            // 128 + SIGINT, as shells report a Ctrl-C.
            RunStatus::Interrupted => 130,
        }
    }
}

/// The lowest and highest number of copies in flight the run allowed, and
/// what made it back off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcurrencyRange {
    pub lowest: usize,
    pub highest: usize,
    /// Times the limit was halved for throttling.
    pub throttle_cuts: u64,
    /// 503 SlowDown / 429 answers seen (each was retried).
    pub throttled_responses: u64,
}

/// The JSON summary of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub run_id: String,
    pub source: String,
    pub destination: String,
    pub dry_run: bool,
    pub status: RunStatus,
    pub exit_code: i32,
    pub started_at: String,
    pub duration_secs: f64,
    pub counts: Counts,
    /// A fatal error that stopped the run (listing failed, for example),
    /// or more failed objects than the failure threshold allows.
    pub error: Option<String>,
    /// Failed objects the run tolerated before failing as a whole (see
    /// [`Summary::apply_failure_threshold`]).
    #[serde(default)]
    pub failure_threshold: u64,
    pub requests: BTreeMap<String, u64>,
    /// How the adaptive copy concurrency moved (CLI runs that copied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_concurrency: Option<ConcurrencyRange>,
    /// Rows in failures.csv.
    pub report_rows: u64,
    /// Where failures.csv was written, if anywhere.
    pub failures_csv: Option<String>,
    pub summary_json: Option<String>,
    /// Where report.html was written: the same report for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_html: Option<String>,
    /// Cumulative outcomes over the run, for the report's throughput chart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelinePoint>,
    /// When each phase started and how long it took.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseTiming>,
    #[serde(skip)]
    pub sample_rows: Vec<ReportRow>,
}

impl Summary {
    /// Classify a run from its counts.
    pub fn status_of(counts: &Counts, fatal: bool, interrupted: bool) -> RunStatus {
        if interrupted {
            RunStatus::Interrupted
        } else if fatal || counts.failed > 0 || counts.verify_mismatched > 0 {
            RunStatus::Failed
        } else if counts.skip_unverified > 0
            || counts.skipped_archived > 0
            || counts.skipped_sse_c > 0
            || counts.source_vanished > 0
            || counts.source_reappeared > 0
            || counts.destination_changed > 0
            || counts.warnings > 0
        {
            RunStatus::Warnings
        } else {
            RunStatus::Ok
        }
    }

    /// Hold a finished run to its failure threshold; the CLI and the
    /// serverless reporter both call this, once the report's location is
    /// in `summary_json`/`failures_csv`. More failed objects than
    /// `threshold` fail the run as a whole: its error says how many, the
    /// threshold and where the report is (the same words as the state
    /// machine's `SyncFailed` cause). At or below it the run has no error,
    /// but its status stays `failed` and its exit code 1: the objects were
    /// still not synced, and exit codes say whether every object is. An
    /// error that already stopped the run, and an interruption, take
    /// precedence. Returns whether the run failed as a whole.
    pub fn apply_failure_threshold(&mut self, threshold: u64) -> bool {
        self.failure_threshold = threshold;
        let failed = self.counts.failed_objects();
        if failed > threshold && self.error.is_none() && self.status != RunStatus::Interrupted {
            let report = (self.summary_json.as_deref())
                .or(self.failures_csv.as_deref())
                .unwrap_or("not written");
            self.error = Some(format!(
                "{failed} objects failed (threshold {threshold}); report: {report}"
            ));
        }
        self.error.is_some()
    }

    /// Failed objects within the threshold: reported, but the run did not
    /// fail as a whole.
    pub fn tolerated_failures(&self) -> Option<u64> {
        let failed = self.counts.failed_objects();
        let tolerated = self.status == RunStatus::Failed
            && self.error.is_none()
            && failed > 0
            && failed <= self.failure_threshold;
        tolerated.then_some(failed)
    }
}

impl Counts {
    /// Objects the run did not sync: copies that failed, and objects that
    /// verification found different. What a failure threshold counts.
    pub fn failed_objects(&self) -> u64 {
        self.failed + self.verify_mismatched
    }
}

/// Write summary.json and failures.csv to `location`. Returns their paths or URLs.
pub async fn write_report(
    location: &ReportLocation,
    summary: &Summary,
    failures_csv: &Path,
    client: &Client,
) -> Result<(String, String), SyncError> {
    let json = serde_json::to_vec_pretty(summary).map_err(|e| SyncError::Report(e.to_string()))?;
    match location {
        ReportLocation::Local(dir) => {
            let (summary_path, csv_path) = local_report_files(dir, &summary.run_id);
            let dir = summary_path.parent().unwrap_or(dir);
            std::fs::create_dir_all(dir)
                .map_err(|e| SyncError::Report(format!("{}: {e}", dir.display())))?;
            std::fs::write(&summary_path, json).map_err(|e| SyncError::Report(e.to_string()))?;
            write_csv_with_header(failures_csv, &csv_path)?;
            let html_path = dir.join(HTML_NAME);
            std::fs::write(&html_path, render_html(summary, failures_csv))
                .map_err(|e| SyncError::Report(format!("{}: {e}", html_path.display())))?;
            Ok((
                summary_path.display().to_string(),
                csv_path.display().to_string(),
            ))
        }
        ReportLocation::S3(prefix) => {
            let (summary_key, csv_key) = s3_report_keys(prefix, &summary.run_id);
            let put = |key: String, body: ByteStream, content_type: &'static str| async move {
                client
                    .put_object()
                    .bucket(&prefix.bucket)
                    .key(&key)
                    .content_type(content_type)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| {
                        SyncError::s3(
                            format!("writing the report to s3://{}/{key}", prefix.bucket),
                            classify(&e),
                        )
                    })?;
                Ok::<String, SyncError>(format!("s3://{}/{key}", prefix.bucket))
            };
            let local_csv =
                tempfile::NamedTempFile::new().map_err(|e| SyncError::Report(e.to_string()))?;
            write_csv_with_header(failures_csv, local_csv.path())?;
            let body = ByteStream::from_path(local_csv.path())
                .await
                .map_err(|e| SyncError::Report(e.to_string()))?;
            let html_key = format!(
                "{}{HTML_NAME}",
                summary_key
                    .strip_suffix("summary.json")
                    .unwrap_or(&summary_key)
            );
            let page = render_html(summary, failures_csv);
            let summary_url = put(summary_key, ByteStream::from(json), "application/json").await?;
            let csv_url = put(csv_key, body, "text/csv").await?;
            put(
                html_key,
                ByteStream::from(page.into_bytes()),
                "text/html; charset=utf-8",
            )
            .await?;
            Ok((summary_url, csv_url))
        }
    }
}

/// The page, with the first rows of the spool (headerless CSV).
fn render_html(summary: &Summary, spool: &Path) -> String {
    let rows: Vec<ReportRow> = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(spool)
        .map(|mut reader| {
            reader
                .deserialize()
                .filter_map(Result::ok)
                .take(html::MAX_ROWS)
                .collect()
        })
        .unwrap_or_default();
    html::render(summary, &rows, summary.report_rows)
}

/// The spool has rows only; the written file gets the header S3 Batch
/// Operations reports lack but spreadsheets and `csv` readers want.
pub fn write_csv_with_header(spool: &Path, to: &Path) -> Result<(), SyncError> {
    let io = |e: std::io::Error| SyncError::Report(format!("{}: {e}", to.display()));
    let mut out = File::create(to).map_err(io)?;
    use std::io::Write;
    out.write_all(b"Bucket,Key,VersionId,TaskStatus,ErrorCode,HTTPStatusCode,ResultMessage\n")
        .map_err(io)?;
    let mut spool_file = File::open(spool).map_err(io)?;
    std::io::copy(&mut spool_file, &mut out).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_valid_csv_even_with_awkward_keys() {
        let rows = ReportRows::new().unwrap();
        rows.push(
            "a,b\"c\nd",
            ReportRow::new(
                "bkt",
                "a,b\"c\nd",
                TaskStatus::Failed,
                "AccessDenied",
                Some(403),
                "denied",
            ),
        );
        let spool = rows.finish().unwrap().to_owned();
        let out = tempfile::NamedTempFile::new().unwrap();
        write_csv_with_header(&spool, out.path()).unwrap();
        let mut reader = csv::Reader::from_path(out.path()).unwrap();
        let headers = reader.headers().unwrap().clone();
        assert_eq!(&headers[6], "ResultMessage");
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(&record[1], "a,b\"c\nd");
        assert_eq!(&record[3], "failed");
        assert_eq!(&record[5], "403");
        assert!(rows.already_reported("a,b\"c\nd"));
    }

    #[test]
    fn warnings_are_not_remembered_as_problem_keys() {
        let rows = ReportRows::new().unwrap();
        rows.push(
            "k",
            ReportRow::new("b", "k", TaskStatus::Warning, "Unverified", None, ""),
        );
        assert!(!rows.already_reported("k"));
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn status_and_exit_codes() {
        let mut counts = Counts::default();
        assert_eq!(Summary::status_of(&counts, false, false).exit_code(), 0);
        counts.skip_unverified = 1;
        assert_eq!(Summary::status_of(&counts, false, false).exit_code(), 3);
        counts.failed = 1;
        assert_eq!(Summary::status_of(&counts, false, false).exit_code(), 1);
        assert_eq!(
            Summary::status_of(&Counts::default(), true, false).exit_code(),
            1
        );
        assert_eq!(Summary::status_of(&counts, false, true).exit_code(), 130);
    }

    #[test]
    fn deletes_kept_because_a_side_changed_are_warnings() {
        for kept in [
            Counts {
                source_reappeared: 1,
                ..Counts::default()
            },
            Counts {
                destination_changed: 1,
                ..Counts::default()
            },
        ] {
            assert_eq!(Summary::status_of(&kept, false, false), RunStatus::Warnings);
        }
    }

    fn summary_with(counts: Counts, error: Option<&str>, interrupted: bool) -> Summary {
        let status = Summary::status_of(&counts, error.is_some(), interrupted);
        Summary {
            run_id: "r".into(),
            source: "s3://src/".into(),
            destination: "s3://dst/".into(),
            dry_run: false,
            status,
            exit_code: status.exit_code(),
            started_at: String::new(),
            duration_secs: 0.0,
            counts,
            error: error.map(str::to_owned),
            failure_threshold: 0,
            requests: BTreeMap::new(),
            copy_concurrency: None,
            report_rows: 0,
            failures_csv: Some("/r/failures.csv".into()),
            summary_json: Some("/r/summary.json".into()),
            report_html: None,
            timeline: Vec::new(),
            phases: Vec::new(),
            sample_rows: Vec::new(),
        }
    }

    #[test]
    fn the_failure_threshold_counts_failed_and_mismatched_objects_and_names_the_report() {
        let counts = Counts {
            failed: 2,
            verify_mismatched: 1,
            ..Counts::default()
        };
        // Over the threshold: the run fails, saying why and where to look.
        let mut over = summary_with(counts.clone(), None, false);
        assert!(over.apply_failure_threshold(2));
        assert_eq!(
            over.error.as_deref(),
            Some("3 objects failed (threshold 2); report: /r/summary.json")
        );
        assert_eq!(over.tolerated_failures(), None);
        // At the threshold: no error, the objects still failed (exit 1).
        let mut within = summary_with(counts.clone(), None, false);
        assert!(!within.apply_failure_threshold(3));
        assert_eq!((within.error.as_deref(), within.exit_code), (None, 1));
        assert_eq!(within.tolerated_failures(), Some(3));
        assert_eq!(within.failure_threshold, 3);
        // An error that stopped the run, or an interruption, is the outcome.
        let mut fatal = summary_with(counts.clone(), Some("listing failed"), false);
        assert!(fatal.apply_failure_threshold(0));
        assert_eq!(fatal.error.as_deref(), Some("listing failed"));
        let mut interrupted = summary_with(counts, None, true);
        assert!(!interrupted.apply_failure_threshold(0));
        assert_eq!(
            (interrupted.error.as_deref(), interrupted.exit_code),
            (None, 130)
        );
    }

    #[test]
    fn report_paths_are_known_before_writing() {
        let local: ReportLocation = "out".parse().unwrap();
        assert_eq!(
            local.paths("run-1"),
            (
                "out/run-1/summary.json".into(),
                "out/run-1/failures.csv".into()
            )
        );
        let s3: ReportLocation = "s3://bkt/reports".parse().unwrap();
        assert_eq!(
            s3.paths("run-1"),
            (
                "s3://bkt/reports/run-1/summary.json".into(),
                "s3://bkt/reports/run-1/failures.csv".into()
            )
        );
    }

    #[test]
    fn report_location_parses() {
        assert_eq!(
            "s3://bkt/r".parse::<ReportLocation>().unwrap(),
            ReportLocation::S3("s3://bkt/r".parse().unwrap())
        );
        assert_eq!(
            "out".parse::<ReportLocation>().unwrap(),
            ReportLocation::Local("out".into())
        );
    }
}
