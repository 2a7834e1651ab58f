//! `s3-fanout report RUN [--open]`: print a run's report, CLI or serverless,
//! and write its HTML page locally.
//!
//! RUN is a local run's report folder (`REPORT_DIR/RUN_ID`) or its
//! summary.json, else a serverless run id, read from the stack's report
//! bucket. The page is rendered here from summary.json and failures.csv,
//! so it can be written for any run that has those two, wherever they are.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::base::error::SyncError;
use crate::model::location::HTML_NAME;
use crate::report::{ReportRow, Summary, html};
use crate::serverless::control;

use super::stack::{StackArgs, config_exit};
use crate::cli::output::print_summary;

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// The run: a local report folder (REPORT_DIR/RUN_ID), its
    /// summary.json, or a serverless run id (with the stack's flags).
    #[arg(value_name = "RUN")]
    pub run: String,
    /// Write the run's report.html here and open it in a browser, if this
    /// machine has one (xdg-open or open); the path is printed either way.
    #[arg(long)]
    pub open: bool,
    /// Where --open writes the page. Default: the local run's folder, or
    /// ./RUN_ID.html for a serverless run.
    #[arg(long, value_name = "FILE", requires = "open")]
    pub out: Option<PathBuf>,
}

/// A run's report, as read: the summary (raw, for --json), and its rows.
struct Loaded {
    raw: Value,
    summary: Option<Summary>,
    rows: Vec<ReportRow>,
    /// The local run's folder, if it is one.
    folder: Option<PathBuf>,
}

pub async fn report(args: ReportArgs, json_output: bool) -> i32 {
    let result = async {
        let loaded = match local_summary(&args.run) {
            Some(path) => load_local(&path)?,
            None => load_serverless(&args).await?,
        };
        if json_output {
            println!(
                "{}",
                serde_json::to_string_pretty(&loaded.raw).expect("JSON prints")
            );
        }
        let exit = loaded
            .raw
            .get("exit_code")
            .and_then(Value::as_i64)
            .unwrap_or(1) as i32;
        let Some(mut summary) = loaded.summary else {
            if !json_output {
                println!("{}", loaded.raw);
            }
            return Ok(exit);
        };
        if args.open {
            let page = html::render(&summary, &loaded.rows, summary.report_rows);
            let path = match (&args.out, &loaded.folder) {
                (Some(out), _) => out.clone(),
                (None, Some(folder)) => folder.join(HTML_NAME),
                (None, None) => PathBuf::from(format!("{}.html", summary.run_id)),
            };
            std::fs::write(&path, page)
                .map_err(|e| SyncError::Report(format!("{}: {e}", path.display())))?;
            summary.report_html = Some(path.display().to_string());
            open_in_browser(&path);
        }
        if !json_output {
            summary.sample_rows = loaded.rows.iter().take(20).cloned().collect();
            print_summary(&summary);
        } else if let Some(path) = &summary.report_html {
            eprintln!("report.html: {path}");
        }
        Ok(exit)
    }
    .await;
    result.unwrap_or_else(|err: SyncError| config_exit(&err))
}

/// RUN as a local summary.json: the file itself, or one in the folder.
fn local_summary(run: &str) -> Option<PathBuf> {
    let path = Path::new(run);
    if path.is_file() {
        Some(path.to_owned())
    } else if path.is_dir() {
        Some(path.join("summary.json"))
    } else {
        None
    }
}

fn load_local(summary_path: &Path) -> Result<Loaded, SyncError> {
    let text = std::fs::read(summary_path).map_err(|e| {
        SyncError::Config(format!(
            "{}: {e} (RUN is a run's report folder, its summary.json, or a serverless run id)",
            summary_path.display()
        ))
    })?;
    let raw: Value = serde_json::from_slice(&text).map_err(|e| {
        SyncError::Config(format!("{}: not a summary: {e}", summary_path.display()))
    })?;
    let folder = summary_path.parent().map(Path::to_owned);
    let csv = folder.as_ref().map(|f| f.join("failures.csv"));
    let rows = csv
        .and_then(|csv| std::fs::read(csv).ok())
        .map(|bytes| read_rows(&bytes))
        .unwrap_or_default();
    Ok(Loaded {
        summary: serde_json::from_value(raw.clone()).ok(),
        raw,
        rows,
        folder,
    })
}

async fn load_serverless(args: &ReportArgs) -> Result<Loaded, SyncError> {
    let (stack, settings) = args.stack.resolve().await.map_err(|err| match err {
        SyncError::Config(why) => SyncError::Config(format!(
            "{:?} is not a local report folder or summary.json, and as a serverless run id: {why}",
            args.run
        )),
        other => other,
    })?;
    let raw = control::read_report(&stack, &settings, &args.run).await?;
    let store = stack.store(&settings).await;
    let rows = match store.get_bytes(&args.run, "failures.csv").await {
        Ok(Some(bytes)) => read_rows(&bytes),
        _ => Vec::new(),
    };
    Ok(Loaded {
        summary: serde_json::from_value(raw.clone()).ok(),
        raw,
        rows,
        folder: None,
    })
}

/// failures.csv (with its header), up to what the page shows.
fn read_rows(csv: &[u8]) -> Vec<ReportRow> {
    csv::Reader::from_reader(csv)
        .deserialize::<ReportRow>()
        .filter_map(Result::ok)
        .take(html::MAX_ROWS)
        .collect()
}

/// Hand the page to the desktop's browser, if there is a desktop. Never an
/// error: on a server the printed path is the result.
fn open_in_browser(path: &Path) {
    let opener = if cfg!(target_os = "macos") {
        Some("open")
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        Some("xdg-open")
    } else {
        None
    };
    let opened = opener.is_some_and(|opener| {
        std::process::Command::new(opener)
            .arg(path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok()
    });
    if !opened {
        eprintln!(
            "no browser here: open {} to read the report",
            path.display()
        );
    }
}
