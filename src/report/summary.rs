//! The end of a run as one document: [`Summary`], the JSON that users and
//! the state machine read, and the run's status and exit code.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ledger::{Counts, ReportRow};
use super::timeline::{PhaseTiming, TimelinePoint};

/// The outcome class of a whole run, and its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Ok,
    Warnings,
    Failed,
    Interrupted,
    /// Stopped on purpose before its end (`s3-fanout cancel`).
    Cancelled,
}

/// Why a run was stopped before its end, by someone or by its own rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum StopReason {
    /// `s3-fanout cancel`, or Ctrl-C answered "cancel".
    Cancelled,
    /// Fail-fast: more objects failed than the failure threshold allows.
    FailureThreshold { threshold: u64, failures: u64 },
}

impl StopReason {
    /// The words the report, the CLI and the state machine's cause use.
    pub fn describe(&self) -> String {
        match self {
            StopReason::Cancelled => "cancelled".to_owned(),
            StopReason::FailureThreshold {
                threshold,
                failures,
            } => format!("stopped: failure threshold {threshold} passed after {failures} failures"),
        }
    }
}

impl RunStatus {
    pub fn exit_code(self) -> i32 {
        match self {
            RunStatus::Ok => 0,
            RunStatus::Failed => 1,
            RunStatus::Warnings => 3,
            // 128 + SIGINT, as shells report a Ctrl-C.
            RunStatus::Interrupted | RunStatus::Cancelled => 130,
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
    /// Why the run stopped before its end, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<StopReason>,
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
        let stopped = matches!(self.status, RunStatus::Interrupted | RunStatus::Cancelled);
        if failed > threshold && self.error.is_none() && !stopped {
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
