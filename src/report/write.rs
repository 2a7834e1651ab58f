//! Delivering a report: summary.json, failures.csv and report.html, to a
//! local directory or an `s3://` prefix.

use std::fs::File;
use std::path::Path;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;

use crate::base::error::{SyncError, classify};
use crate::model::location::{HTML_NAME, ReportLocation, local_report_files, s3_report_keys};

use super::html;
use super::ledger::ReportRow;
use super::summary::Summary;

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
