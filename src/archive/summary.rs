//! The end of an export or import run: the same [`Summary`], report files
//! and exit codes as `sync`, so scripts and dashboards read all three alike.

use std::time::Instant;

use aws_sdk_s3::Client;

use super::error::ArchiveError;
use crate::base::format::now_rfc3339;
use crate::base::metrics::RequestCounter;
use crate::model::location::ReportLocation;
use crate::report::deliver::{RunRecord, deliver};
use crate::report::{ReportRows, Stats, Summary};

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

    /// Build the summary, hold it to a failure threshold of 0 and write
    /// the report where asked, as `sync` does ([`deliver`]).
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
        // As `sync` does by default: any failed object fails the run.
        let record = RunRecord {
            run_id: self.run_id,
            source: sides.source,
            destination: sides.destination,
            dry_run: false,
            started_at: self.started_at,
            duration_secs: self.started.elapsed().as_secs_f64(),
            counts,
            fatal: None,
            interrupted: false,
            stop: None,
            failure_threshold: 0,
            requests: counter.snapshot(),
            copy_concurrency: None,
            timeline: Vec::new(),
            phases: Vec::new(),
        };
        Ok(deliver(record, rows, report, client).await?.summary)
    }
}
