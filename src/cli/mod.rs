//! The command line: `s3-fanout sync SRC DST [options]`.
//!
//! clap parses flags into a [`SyncSpec`], which is validated once into
//! [`SyncOptions`]. This is the only place that prints for humans and picks
//! exit codes: 0 synced and verified, 1 failures, 2 bad usage or
//! configuration, 3 warnings only, 130 interrupted.

use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::base::format::human_bytes;
use crate::cli::interrupt::cancel_on_ctrl_c;
use crate::cli::output::{EXIT_USAGE, print_summary};
use crate::cli::progress::{Progress, ProgressMode};
use crate::engine::diff::{Action, SkipReason};
use crate::engine::pipeline::{ActionObserver, run_sync};
use crate::model::options::{SyncOptions, SyncSpec};
use crate::report::Stats;

#[derive(Debug, Parser)]
#[command(
    name = "s3-fanout",
    version,
    about = "Keep very large S3 buckets in sync with server-side copies"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More output: -v lists every action taken, -vv adds debug logs.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print the summary as JSON on stdout (no progress display).
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bar or progress log lines.
    #[arg(long, global = true)]
    pub no_progress: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make DST match SRC: list both, copy what differs, verify, report.
    // Boxed: every sync option is a field, which makes this variant far
    // larger than the others.
    Sync(Box<SyncSpec>),
    /// List and diff SRC and DST, and print what `sync` would copy, the
    /// requests it would make, and its cost and time, locally and
    /// serverless. Writes nothing.
    Plan(Box<crate::plan::PlanSpec>),
    /// Prove DST equal to SRC, pair by pair, writing nothing: every pair
    /// that differs, is on one side only, or cannot be proven is reported.
    /// Exit 0 only when every pair is proven equal.
    Check(Box<check::CheckSpec>),
    /// Start a serverless run on a deployed stack (Step Functions).
    Run(serverless::RunArgs),
    /// Show a serverless run's phase and progress.
    Status(serverless::RunRef),
    /// Stop a serverless run: its listers and copiers drop what is left
    /// within about a second, and it ends as Cancelled with its report.
    Cancel(cancel::CancelArgs),
    /// Print a run's report, CLI or serverless; --open writes its HTML page.
    Report(report::ReportArgs),
    /// Run the serverless stack on this machine, on moto (development).
    LocalStack(serverless::LocalStackArgs),
    /// Write SRC's objects changed since a date or a previous archive, and a
    /// manifest of all its keys, to a tar archive (offline delta transfer).
    Export(Box<crate::archive::ExportSpec>),
    /// Check an archive written by `export` whole, then make DST match it.
    Import(Box<crate::archive::ImportSpec>),
    /// Print the shell completion script for bash, zsh, fish, PowerShell
    /// or elvish.
    Completions(generate::CompletionsArgs),
    /// Print the manual page (roff), or with --dir write one per command.
    Man(generate::ManArgs),
}

mod archive;
mod cancel;
mod check;
mod generate;
mod interrupt;
mod output;
mod plan;
pub mod progress;
mod report;
mod serverless;
mod stack;

/// Run the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    init_tracing(cli.verbose);
    let spec = match cli.command {
        Command::Sync(spec) => *spec,
        Command::Plan(spec) => return plan::plan(*spec, cli.json).await,
        Command::Check(spec) => return check::check(*spec, cli.json, cli.no_progress).await,
        Command::Run(args) => return serverless::run(args, cli.json).await,
        Command::Status(args) => return serverless::status(args, cli.json).await,
        Command::Cancel(args) => return cancel::cancel(args).await,
        Command::Report(args) => return report::report(args, cli.json).await,
        Command::LocalStack(args) => return serverless::local_stack(args).await,
        Command::Export(spec) => return archive::export(*spec, cli.json).await,
        Command::Import(spec) => return archive::import(*spec, cli.json).await,
        Command::Completions(args) => return generate::completions(args, Cli::command()),
        Command::Man(args) => return generate::man(args, Cli::command()),
    };
    let options = match SyncOptions::try_from(spec) {
        Ok(options) => options,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_USAGE;
        }
    };

    let cancel = CancellationToken::new();
    tokio::spawn(cancel_on_ctrl_c(cancel.clone()));
    let stats = Arc::new(Stats::default());
    let progress = Progress::start(
        stats.clone(),
        ProgressMode::auto(!cli.json && !cli.no_progress),
    );
    let observer: Option<ActionObserver> = (cli.verbose > 0 && !cli.json).then(|| {
        let dry_run = options.dry_run;
        Arc::new(move |action: &Action| print_action(action, dry_run)) as ActionObserver
    });

    let result = run_sync(&options, stats, cancel, observer).await;
    progress.finish().await;
    output::finish(result, cli.json, print_summary, output::sync_error_code)
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 | 1 => "s3_fanout=info",
        _ => "s3_fanout=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

fn print_action(action: &Action, dry_run: bool) {
    let prefix = if dry_run { "(dry run) " } else { "" };
    match action {
        Action::Copy { source } => println!(
            "{prefix}copy    {} ({})",
            source.key,
            human_bytes(source.size)
        ),
        Action::Update { source, .. } => println!(
            "{prefix}update  {} ({})",
            source.key,
            human_bytes(source.size)
        ),
        Action::Delete { destination } => println!("{prefix}delete  {}", destination.key),
        // A dry run sends no HEAD, so the pair is planned as the update it
        // may be; a run compares its stored checksums first.
        Action::Compare { source, .. } if dry_run => println!(
            "{prefix}update  {} ({}, unless its checksums prove it equal)",
            source.key,
            human_bytes(source.size)
        ),
        Action::Compare { source, .. } => println!(
            "{prefix}compare {} ({}, by checksums)",
            source.key,
            human_bytes(source.size)
        ),
        Action::Skip {
            key,
            reason: SkipReason::Unverified,
            ..
        } => println!("{prefix}unverified {key}"),
        Action::Skip { .. } => {}
    }
}
