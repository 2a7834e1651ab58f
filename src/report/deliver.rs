//! The end of every run: its [`Summary`] built from what the run did, held
//! to its failure threshold, and its report delivered. `sync`, the
//! serverless reporter and `export`/`import` all end here, so the three
//! write the same files under the same rules and a script reads any of
//! them alike.

use std::collections::BTreeMap;
use std::path::PathBuf;

use aws_sdk_s3::Client;

use crate::base::error::SyncError;
use crate::model::location::ReportLocation;

use super::ledger::{Counts, ReportRows};
use super::summary::{ConcurrencyRange, RunStatus, StopReason, Summary};
use super::timeline::{PhaseTiming, TimelinePoint};
use super::write::{write_csv_with_header, write_report};

/// What a run did, as its runtime saw it: everything of the [`Summary`]
/// that is not derived from it or from where the report goes.
pub struct RunRecord {
    pub run_id: String,
    pub source: String,
    pub destination: String,
    pub dry_run: bool,
    /// When the run started (RFC 3339) and how long it took.
    pub started_at: String,
    pub duration_secs: f64,
    pub counts: Counts,
    /// The error that stopped the run early, if one did.
    pub fatal: Option<String>,
    /// Cancelled by the user: the status says so, and the error that the
    /// cancellation caused is not reported as the run's.
    pub interrupted: bool,
    /// Stopped before its end on purpose (cancelled, or failing fast):
    /// the status and error say why.
    pub stop: Option<StopReason>,
    /// Failed objects the run may have and still not fail as a whole.
    pub failure_threshold: u64,
    pub requests: BTreeMap<String, u64>,
    pub copy_concurrency: Option<ConcurrencyRange>,
    pub timeline: Vec<TimelinePoint>,
    pub phases: Vec<PhaseTiming>,
}

/// A delivered report.
pub struct Delivered {
    pub summary: Summary,
    /// More failed objects than the threshold allows: the run failed as a
    /// whole (the state machine fails the execution on it).
    pub over_threshold: bool,
    /// Where summary.json and failures.csv were written, when the run had
    /// a report location.
    pub written: Option<(String, String)>,
}

impl RunRecord {
    /// The run's summary, before it knows where its report goes.
    fn summary(self, rows: &ReportRows) -> Summary {
        let status = match self.stop {
            Some(StopReason::Cancelled) => RunStatus::Cancelled,
            Some(StopReason::FailureThreshold { .. }) => RunStatus::Failed,
            None => Summary::status_of(&self.counts, self.fatal.is_some(), self.interrupted),
        };
        let interrupted = self.interrupted;
        // A run stopped past its failure threshold fails with that reason
        // (the report's place is added once known), unless something worse
        // stopped it first.
        let stopped_by_failures = self
            .stop
            .filter(|s| matches!(s, StopReason::FailureThreshold { .. }))
            .map(|s| s.describe());
        Summary {
            run_id: self.run_id,
            source: self.source,
            destination: self.destination,
            dry_run: self.dry_run,
            status,
            exit_code: status.exit_code(),
            started_at: self.started_at,
            duration_secs: self.duration_secs,
            counts: self.counts,
            error: self.fatal.filter(|_| !interrupted).or(stopped_by_failures),
            failure_threshold: self.failure_threshold,
            requests: self.requests,
            copy_concurrency: self.copy_concurrency,
            report_rows: rows.len(),
            failures_csv: None,
            stopped: self.stop,
            summary_json: None,
            report_html: None,
            timeline: self.timeline,
            phases: self.phases,
            sample_rows: rows.sample(),
        }
    }
}

/// Build the run's summary, hold it to its failure threshold and write
/// summary.json, failures.csv and report.html to `location`.
///
/// Without a report location, problems still land in a CSV in the temp
/// directory: a count nobody can act on is no report.
pub async fn deliver(
    record: RunRecord,
    rows: &ReportRows,
    location: Option<&ReportLocation>,
    client: &Client,
) -> Result<Delivered, SyncError> {
    let threshold = record.failure_threshold;
    let mut summary = record.summary(rows);
    let spool = rows.finish()?;
    let spare_csv = (location.is_none() && !rows.is_empty()).then(|| spare_csv_path(&summary));
    // Where the report goes is known before it is written, so summary.json
    // names itself and the failure threshold's error can point at it.
    if let Some(location) = location {
        let (summary_at, csv_at) = location.paths(&summary.run_id);
        summary.report_html = Some(location.html_path(&summary.run_id));
        summary.summary_json = Some(summary_at);
        summary.failures_csv = Some(csv_at);
    } else if let Some(path) = &spare_csv {
        summary.failures_csv = Some(path.display().to_string());
    }
    if let (Some(StopReason::FailureThreshold { .. }), Some(error), Some(at)) = (
        summary.stopped,
        summary.error.as_mut(),
        summary
            .summary_json
            .as_deref()
            .or(summary.failures_csv.as_deref()),
    ) {
        error.push_str(&format!("; report: {at}"));
    }
    let over_threshold = summary.apply_failure_threshold(threshold);
    let mut written = None;
    if let Some(location) = location {
        written = Some(write_report(location, &summary, spool, client).await?);
    } else if let Some(path) = &spare_csv {
        write_csv_with_header(spool, path)?;
    }
    Ok(Delivered {
        summary,
        over_threshold,
        written,
    })
}

fn spare_csv_path(summary: &Summary) -> PathBuf {
    std::env::temp_dir().join(format!("s3-fanout-{}-failures.csv", summary.run_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ReportRow, RunStatus, TaskStatus};

    /// A client that is never called: local report locations write files.
    fn unused_client() -> Client {
        Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version_latest()
                .build(),
        )
    }

    fn record(run_id: &str, failed: u64) -> RunRecord {
        RunRecord {
            run_id: run_id.to_owned(),
            source: "s3://src/".into(),
            destination: "s3://dst/".into(),
            dry_run: false,
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_secs: 1.5,
            counts: Counts {
                failed,
                ..Counts::default()
            },
            fatal: None,
            interrupted: false,
            stop: None,
            failure_threshold: 0,
            requests: BTreeMap::new(),
            copy_concurrency: None,
            timeline: Vec::new(),
            phases: Vec::new(),
        }
    }

    fn one_failure() -> ReportRows {
        let rows = ReportRows::new().unwrap();
        let row = ReportRow::new(
            "src",
            "a",
            TaskStatus::Failed,
            "AccessDenied",
            Some(403),
            "no",
        );
        rows.push("a", row);
        rows
    }

    #[tokio::test]
    async fn a_report_directory_gets_all_three_files_and_the_summary_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let location = ReportLocation::Local(dir.path().to_owned());
        let rows = one_failure();
        let delivered = deliver(record("r1", 1), &rows, Some(&location), &unused_client())
            .await
            .unwrap();
        let summary = &delivered.summary;
        let (summary_at, csv_at) = location.paths("r1");
        assert_eq!(
            delivered.written,
            Some((summary_at.clone(), csv_at.clone()))
        );
        assert_eq!(summary.summary_json.as_deref(), Some(summary_at.as_str()));
        assert_eq!(summary.failures_csv.as_deref(), Some(csv_at.as_str()));
        assert_eq!(
            summary.report_html.as_deref(),
            Some(location.html_path("r1").as_str())
        );
        for file in [&summary_at, &csv_at, &location.html_path("r1")] {
            assert!(std::path::Path::new(file).is_file(), "{file}");
        }
        // Over the threshold of 0: the error points at the report.
        assert!(delivered.over_threshold);
        let error = summary.error.as_deref().unwrap();
        assert!(error.contains(&summary_at), "{error}");
        assert_eq!(summary.status, RunStatus::Failed);
        assert_eq!(summary.exit_code, 1);
        assert_eq!(summary.report_rows, 1);
        assert_eq!(summary.sample_rows.len(), 1);
        let written: Summary =
            serde_json::from_slice(&std::fs::read(&summary_at).unwrap()).unwrap();
        assert_eq!(written.error, summary.error);
    }

    #[tokio::test]
    async fn without_a_location_only_problems_are_kept_in_the_temp_directory() {
        let rows = one_failure();
        let delivered = deliver(record("r2-spare", 1), &rows, None, &unused_client())
            .await
            .unwrap();
        assert_eq!(delivered.written, None);
        let csv = delivered.summary.failures_csv.clone().unwrap();
        assert!(csv.starts_with(&std::env::temp_dir().display().to_string()));
        let text = std::fs::read_to_string(&csv).unwrap();
        std::fs::remove_file(&csv).unwrap();
        assert!(text.starts_with("Bucket,Key,"), "{text}");
        assert!(text.contains("AccessDenied"), "{text}");
        assert!(delivered.summary.error.unwrap().contains(&csv));

        let clean = ReportRows::new().unwrap();
        let delivered = deliver(record("r3-clean", 0), &clean, None, &unused_client())
            .await
            .unwrap();
        assert_eq!(delivered.summary.failures_csv, None);
        assert_eq!(delivered.summary.status, RunStatus::Ok);
        assert!(!delivered.over_threshold);
    }

    #[tokio::test]
    async fn an_interrupted_run_reports_no_error_of_its_own() {
        let rows = ReportRows::new().unwrap();
        let mut interrupted = record("r4", 0);
        interrupted.fatal = Some("cancelled".into());
        interrupted.interrupted = true;
        let delivered = deliver(interrupted, &rows, None, &unused_client())
            .await
            .unwrap();
        assert_eq!(delivered.summary.status, RunStatus::Interrupted);
        assert_eq!(delivered.summary.exit_code, 130);
        assert_eq!(delivered.summary.error, None);

        let mut stopped = record("r5", 0);
        stopped.fatal = Some("listing failed".into());
        let delivered = deliver(stopped, &rows, None, &unused_client())
            .await
            .unwrap();
        assert_eq!(delivered.summary.status, RunStatus::Failed);
        assert_eq!(delivered.summary.error.as_deref(), Some("listing failed"));
        assert!(delivered.over_threshold);
    }
}
