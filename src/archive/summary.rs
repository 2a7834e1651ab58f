//! The end of an export or import run: the same [`Summary`], report files
//! and exit codes as `sync`, so scripts and dashboards read all three alike.

use std::time::Instant;

use aws_sdk_s3::Client;

use super::error::ArchiveError;
use crate::base::format::now_rfc3339;
use crate::base::metrics::RequestCounter;
use crate::model::location::ReportLocation;
use crate::report::{ReportRows, Stats, Summary, write_report};

/// When a run started, and its id (the same shape as a sync's).
pub struct RunClock {
    pub run_id: String,
    pub started_at: String,
    started: Instant,
}

/// What a run touched, for the summary's header.
pub struct RunSides {
    pub source: String,
    pub destination: String,
}

impl RunClock {
    pub fn start() -> Self {
        let started_at = now_rfc3339();
        let run_id = format!(
            "{}-{:05}",
            started_at.replace([':', '-'], "").trim_end_matches('Z'),
            std::process::id() % 100_000
        );
        RunClock {
            run_id,
            started_at,
            started: Instant::now(),
        }
    }

    /// Seconds since the epoch, for tar entry dates.
    pub fn epoch_secs(&self) -> u64 {
        aws_smithy_types::DateTime::from_str(
            &self.started_at,
            aws_smithy_types::date_time::Format::DateTime,
        )
        .map(|t| t.secs().max(0) as u64)
        .unwrap_or(0)
    }

    /// Build the summary, hold it to a failure threshold of 0 (as `sync`
    /// does by default: any failed object fails the run) and write the
    /// report where asked. Without a report location, problems still land
    /// in a CSV in the temp directory rather than as a bare count.
    pub async fn summarize(
        self,
        sides: RunSides,
        stats: &Stats,
        rows: &ReportRows,
        counter: &RequestCounter,
        report: Option<&ReportLocation>,
        client: &Client,
    ) -> Result<Summary, ArchiveError> {
        let mut counts = stats.snapshot();
        counts.retries = counter.retries();
        let status = Summary::status_of(&counts, false, false);
        let mut summary = Summary {
            run_id: self.run_id,
            source: sides.source,
            destination: sides.destination,
            dry_run: false,
            status,
            exit_code: status.exit_code(),
            started_at: self.started_at,
            duration_secs: self.started.elapsed().as_secs_f64(),
            counts,
            error: None,
            failure_threshold: 0,
            requests: counter.snapshot(),
            copy_concurrency: None,
            report_rows: rows.len(),
            failures_csv: None,
            summary_json: None,
            report_html: None,
            timeline: Vec::new(),
            phases: Vec::new(),
            sample_rows: rows.sample(),
        };
        let spool = rows.finish()?;
        let spare_csv = (report.is_none() && !rows.is_empty()).then(|| {
            std::env::temp_dir().join(format!("s3-fanout-{}-failures.csv", summary.run_id))
        });
        if let Some(location) = report {
            let (summary_at, csv_at) = location.paths(&summary.run_id);
            summary.report_html = Some(location.html_path(&summary.run_id));
            summary.summary_json = Some(summary_at);
            summary.failures_csv = Some(csv_at);
        } else if let Some(path) = &spare_csv {
            summary.failures_csv = Some(path.display().to_string());
        }
        summary.apply_failure_threshold(0);
        if let Some(location) = report {
            write_report(location, &summary, spool, client).await?;
        } else if let Some(path) = &spare_csv {
            crate::report::write_csv_with_header(spool, path)?;
        }
        Ok(summary)
    }
}
