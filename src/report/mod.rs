//! Stage 5: the report.
//!
//! [`Stats`] counts everything as it happens (atomics, so workers never wait
//! on each other). Per-object problems are streamed to a CSV spool file in
//! the S3 Batch Operations completion-report columns, so a run with a million
//! failures still runs in bounded memory. At the end, [`Summary`] is the JSON
//! document users and the state machine read, and both files are written to
//! the report location, local or `s3://`.
//!
//! The files, lowest first: [`ledger`] (counters, rows, phase), [`summary`]
//! (the run as one document), [`timeline`] (throughput samples and phase
//! times), [`html`] (the page for people), [`write`](mod@write) (delivery), [`emf`]
//! (CloudWatch metric lines).

pub mod deliver;
pub mod emf;
pub mod html;
pub mod ledger;
pub mod summary;
pub mod timeline;
pub mod write;

pub use ledger::*;
pub use summary::*;
pub use timeline::{PhaseClock, PhaseTiming, Timeline, TimelinePoint};
pub use write::*;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::location::ReportLocation;

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
            stopped: None,
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
