//! `s3-fanout run`, `status`, `report` and `local-stack`: the serverless
//! runtime from the command line.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value, json};

use crate::base::client::ClientSettings;
use crate::base::error::SyncError;
use crate::local_stack::{self, LocalStackOptions};
use crate::model::options::DiffMode;
use crate::report::{ReportRow, Summary};
use crate::serverless::control::{self, RunState, StackOutputs};

use crate::cli::cancel::{Followed, OnInterrupt, Show, follow};
use crate::cli::output::{EXIT_USAGE, print_summary};
use crate::cli::stack::{StackArgs, config_exit};

/// A follower left on Ctrl-C, the run still going: 128 + SIGINT.
const EXIT_INTERRUPTED: i32 = 130;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Source, s3://BUCKET[/PREFIX] (default: the stack's).
    #[arg(value_name = "SRC")]
    pub source: Option<String>,
    /// Destination (default: the stack's).
    #[arg(value_name = "DST")]
    pub destination: Option<String>,
    /// The execution input as a JSON file; the flags below override it.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub mode: Option<DiffMode>,
    #[arg(long)]
    pub delete: bool,
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Restore the source as it was at this time (RFC 3339, or a date):
    /// each key's version then, from a versioned bucket (`"as_of"`).
    #[arg(long, value_name = "TIME")]
    pub as_of: Option<String>,
    /// Copy every version and delete marker of a versioned source into a
    /// versioned destination, oldest first per key, appending only what
    /// the destination lacks (`"all_versions"`; the stack must allow
    /// deletes, which append the markers).
    #[arg(long, conflicts_with_all = ["as_of", "delete"])]
    pub all_versions: bool,
    /// Failed objects the run may have and still succeed (default 0).
    ///
    /// Above N the execution fails, its cause naming the report. At or
    /// below N it succeeds, and `--wait` still exits 1 when any object
    /// failed, as `s3-fanout sync --failure-threshold` does: the exit code
    /// says whether every object is synced, N whether the run failed.
    #[arg(long, value_name = "N")]
    pub failure_threshold: Option<u64>,
    /// Stop the whole run once more objects failed than the threshold
    /// allows: listers and copiers drop what is left, and the execution
    /// ends as Stopped with its report (`"fail_fast": true`).
    #[arg(long)]
    pub fail_fast: bool,
    /// Shards listed at once (default 16).
    #[arg(long, value_name = "N")]
    pub shard_concurrency: Option<u32>,
    /// Skip the VALIDATE phase.
    #[arg(long)]
    pub no_validate: bool,
    /// Name the run (the execution's name); default: time-based.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Wait for the run to end, print its report, exit with its status.
    /// Ctrl-C then asks whether to cancel the run or leave it running.
    #[arg(long)]
    pub wait: bool,
    /// (with --wait) Ctrl-C leaves the run running without asking.
    #[arg(long, requires = "wait")]
    pub detach: bool,
}

impl RunArgs {
    fn execution_input(&self) -> Result<Value, SyncError> {
        let mut input = match &self.input {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| SyncError::Config(format!("--input {}: {e}", path.display())))?;
                serde_json::from_str(&text).map_err(|e| {
                    SyncError::Config(format!("--input {}: not JSON: {e}", path.display()))
                })?
            }
            None => Value::Object(Map::new()),
        };
        let Value::Object(fields) = &mut input else {
            return Err(SyncError::Config("--input must hold a JSON object".into()));
        };
        let mut set = |name: &str, value: Value| {
            fields.insert(name.to_owned(), value);
        };
        if let Some(source) = &self.source {
            set("source", json!(source));
        }
        if let Some(destination) = &self.destination {
            set("destination", json!(destination));
        }
        if let Some(mode) = self.mode {
            set(
                "mode",
                serde_json::to_value(mode).expect("a mode serialises"),
            );
        }
        if self.delete {
            set("delete", json!(true));
        }
        if !self.include.is_empty() {
            set("include", json!(self.include));
        }
        if !self.exclude.is_empty() {
            set("exclude", json!(self.exclude));
        }
        if let Some(time) = &self.as_of {
            set("as_of", json!(time));
        }
        if self.all_versions {
            set("all_versions", json!(true));
        }
        if let Some(n) = self.failure_threshold {
            set("failure_threshold", json!(n));
        }
        if let Some(n) = self.shard_concurrency {
            set("shard_concurrency", json!(n));
        }
        if self.no_validate {
            set("validate", json!(false));
        }
        if self.fail_fast {
            set("fail_fast", json!(true));
        }
        Ok(input)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunRef {
    #[command(flatten)]
    pub stack: StackArgs,
    /// The run id (the execution's name).
    pub run_id: String,
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// `status` only: follow the run, or look once.
#[derive(Debug, Clone, clap::Args)]
pub struct FollowArgs {
    /// (status) Follow the run until it ends, refreshing every --interval,
    /// and exit with its status as `run --wait` does. The default when
    /// stdout is a terminal, without --json.
    #[arg(long, conflicts_with = "once")]
    pub watch: bool,
    /// (status) One snapshot, exit 0 (the default off a terminal or with --json).
    #[arg(long, visible_alias = "no-watch")]
    pub once: bool,
    /// (status --watch) Seconds between refreshes. Each lists the run's
    /// results; a run of 100,000 batches is 100 listing pages.
    #[arg(long, value_name = "SECS", default_value_t = 2.0, value_parser = parse_interval)]
    pub interval: f64,
    /// (status --watch) Ctrl-C stops watching without asking whether to
    /// cancel the run.
    #[arg(long)]
    pub detach: bool,
}

fn parse_interval(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if (0.1..=3600.0).contains(&secs) => Ok(secs),
        _ => Err(format!(
            "{text:?} is not a number of seconds from 0.1 to 3600"
        )),
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct LocalStackArgs {
    /// The moto server, started with MOTO_PORT set to --listen's port.
    #[arg(long, value_name = "URL")]
    pub moto_endpoint: String,
    /// Where the Lambda router listens (moto's MOTO_PORT).
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Write the stack's outputs here, for `--stack-outputs`.
    #[arg(long, value_name = "FILE")]
    pub outputs: PathBuf,
    /// Where the functions, and the CLI through the outputs, reach S3, SQS
    /// and DynamoDB (default: --moto-endpoint): a proxy that sends S3 to
    /// another server, with the report bucket there. moto still runs Step
    /// Functions and feeds the queues to the functions.
    #[arg(long, value_name = "URL")]
    pub functions_endpoint: Option<String>,
    #[arg(long, default_value_t = 3)]
    pub max_receive_count: u32,
    #[arg(long, default_value_t = 6, value_name = "SECS")]
    pub visibility_timeout: u32,
    #[arg(long, default_value_t = 1)]
    pub batch_size: i32,
    #[arg(long, default_value_t = 4)]
    pub max_concurrency: usize,
    /// Keys one lister invocation handles at most (small values exercise
    /// the cursor loop).
    #[arg(long, value_name = "N")]
    pub lister_max_keys: Option<u64>,
    /// Also replicate from S3 events: configure SRC's bucket to notify the
    /// stack's event queue, and run the replicator on it.
    #[arg(long, num_args = 2, value_names = ["SRC", "DST"])]
    pub replicate: Option<Vec<String>>,
    /// With --replicate: delete at DST what is deleted at SRC.
    #[arg(long, requires = "replicate")]
    pub replicate_deletes: bool,
    /// With --replicate: append each key's new versions and delete markers
    /// to its history at DST (both buckets versioned), as
    /// `sync --all-versions` does.
    #[arg(long, requires = "replicate")]
    pub replicate_all_versions: bool,
    /// Append the functions' CloudWatch metrics (EMF lines) to FILE
    /// instead of printing them on stdout, as Lambda would.
    #[arg(long, value_name = "FILE")]
    pub emf_log: Option<PathBuf>,
}

pub async fn run(args: RunArgs, json_output: bool) -> i32 {
    let result = async {
        let input = args.execution_input()?;
        let (stack, settings) = args.stack.resolve().await?;
        let run_id = args.run_id.clone().unwrap_or_else(control::new_run_id);
        let arn = control::start_run(&stack, &settings, &run_id, &input).await?;
        eprintln!("started run {run_id} ({arn})");
        if !args.wait {
            println!("{run_id}");
            return Ok(0);
        }
        // stdout carries the report: progress goes to stderr.
        let mut progress = ProgressPrinter::new(Stream::Stderr);
        let every = control::REFRESH;
        let on_interrupt = if args.detach {
            OnInterrupt::Leave
        } else {
            OnInterrupt::Ask
        };
        let followed = follow(
            (&stack, &settings),
            &run_id,
            every,
            &mut progress,
            on_interrupt,
        );
        let followed = followed.await?;
        progress.finish();
        match followed {
            Followed::Ended(state) => finish(&stack, &settings, &state, json_output).await,
            Followed::Left => Ok(EXIT_INTERRUPTED),
        }
    }
    .await;
    result.unwrap_or_else(|err| config_exit(&err))
}

/// Where progress goes.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn is_terminal(self) -> bool {
        match self {
            Stream::Stdout => std::io::stdout().is_terminal(),
            Stream::Stderr => std::io::stderr().is_terminal(),
        }
    }

    fn print(self, line: &str) {
        match self {
            Stream::Stdout => println!("{line}"),
            Stream::Stderr => eprintln!("{line}"),
        }
    }
}

/// A followed run's progress, for `run --wait` and `status --watch`: one
/// line redrawn in place on a terminal; elsewhere (CI logs, a pipe) a line
/// each time the phase, batches, objects or failures change, with no
/// control codes.
struct ProgressPrinter {
    stream: Stream,
    bar: Option<ProgressBar>,
    /// What the last printed line said, rates and time aside.
    last: Option<(String, Option<String>, u64, u64, u64, u64)>,
}

impl ProgressPrinter {
    fn new(stream: Stream) -> Self {
        let bar = stream.is_terminal().then(|| {
            let target = match stream {
                Stream::Stdout => ProgressDrawTarget::stdout(),
                Stream::Stderr => ProgressDrawTarget::stderr(),
            };
            let bar = ProgressBar::with_draw_target(None, target);
            bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        ProgressPrinter {
            stream,
            bar,
            last: None,
        }
    }

    fn show(&mut self, state: &RunState) {
        let line = progress_line(state);
        if let Some(bar) = &self.bar {
            bar.set_message(line);
            return;
        }
        let key = (
            state.status.clone(),
            state.phase.clone(),
            state.batches_sent,
            state.batches_done,
            state.objects_copied,
            state.objects_failed,
        );
        if self.last.as_ref() != Some(&key) {
            self.stream.print(&line);
            self.last = Some(key);
        }
    }

    /// Take the line off the screen while a question is asked, and put
    /// it back after.
    fn pause(&mut self, paused: bool) {
        if let Some(bar) = &self.bar {
            if paused {
                bar.disable_steady_tick();
                bar.set_draw_target(ProgressDrawTarget::hidden());
            } else {
                bar.set_draw_target(match self.stream {
                    Stream::Stdout => ProgressDrawTarget::stdout(),
                    Stream::Stderr => ProgressDrawTarget::stderr(),
                });
                bar.enable_steady_tick(Duration::from_millis(200));
            }
        }
    }

    /// Leave the last line on screen.
    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish();
        }
    }
}

impl Show for ProgressPrinter {
    fn state(&mut self, state: &RunState) {
        self.show(state);
    }

    fn asking(&mut self, asking: bool) {
        self.pause(asking);
    }
}

/// `status --watch --json`: one JSON state per line.
struct JsonLines;

impl Show for JsonLines {
    fn state(&mut self, state: &RunState) {
        println!("{}", serde_json::to_string(state).expect("JSON prints"));
    }

    fn asking(&mut self, _: bool) {}
}

/// `SUCCEEDED  copy  batches 40/40 · 3,900/3,900 objects · 120.5 objects/s (97.3 overall) · 2 failed · 0:41`
fn progress_line(state: &RunState) -> String {
    let rate = match state.recent_objects_per_sec {
        Some(recent) => format!(
            "{recent:.1} objects/s ({:.1} overall)",
            state.objects_per_sec
        ),
        None => format!("{:.1} objects/s overall", state.objects_per_sec),
    };
    let elapsed = state.elapsed_secs as u64;
    format!(
        "{:<9}  {:<13}  batches {}/{} · {}/{} objects · {rate} · {} failed · {}:{:02}",
        state.status,
        state.phase.as_deref().unwrap_or("-"),
        state.batches_done,
        state.batches_sent,
        state.objects_copied,
        state.tasks_sent,
        state.objects_failed,
        elapsed / 60,
        elapsed % 60,
    )
}

/// Print the report of an ended run; the exit code follows the run.
async fn finish(
    stack: &StackOutputs,
    settings: &ClientSettings,
    state: &RunState,
    json_output: bool,
) -> Result<i32, SyncError> {
    let report = control::read_report(stack, settings, &state.run_id)
        .await
        .ok();
    if let Some(summary) = &report {
        print_report(stack, settings, summary, json_output).await;
    }
    Ok(ended(state, report.as_ref()))
}

/// The exit code of an ended run, as `run --wait` and `status --watch`
/// give it: the report's, for a run that succeeded.
fn ended(state: &RunState, report: Option<&Value>) -> i32 {
    if state.status == "SUCCEEDED" {
        return report
            .and_then(|r| r.get("exit_code")?.as_i64())
            .unwrap_or(0) as i32;
    }
    eprintln!(
        "run {} {}: {} {}",
        state.run_id,
        state.status.to_lowercase(),
        state.error.as_deref().unwrap_or_default(),
        state.cause.as_deref().unwrap_or_default()
    );
    // Stopped on purpose: the report's exit code (130 cancelled, 1 past
    // the failure threshold), as the CLI's own would be.
    if let Some(stopped) = state
        .error
        .as_deref()
        .filter(|e| *e == "Cancelled" || *e == "Stopped")
    {
        let fallback = if stopped == "Cancelled" { 130 } else { 1 };
        return report
            .and_then(|r| r.get("exit_code")?.as_i64())
            .map_or(fallback, |c| c as i32);
    }
    // A refused input is a usage error, like the CLI's.
    if state.error.as_deref() == Some("PlanFailed")
        && state
            .cause
            .as_deref()
            .is_some_and(|c| c.contains("NonRetryable"))
    {
        return EXIT_USAGE;
    }
    1
}

async fn print_report(
    stack: &StackOutputs,
    settings: &ClientSettings,
    summary: &Value,
    json_output: bool,
) {
    if json_output {
        println!(
            "{}",
            serde_json::to_string_pretty(summary).expect("JSON prints")
        );
        return;
    }
    let Ok(mut parsed) = serde_json::from_value::<Summary>(summary.clone()) else {
        println!("{summary}");
        return;
    };
    let store = stack.store(settings).await;
    if let Ok(Some(csv)) = store.get_bytes(&parsed.run_id, "failures.csv").await {
        parsed.sample_rows = csv::Reader::from_reader(csv.as_slice())
            .deserialize::<ReportRow>()
            .filter_map(Result::ok)
            .take(20)
            .collect();
    }
    print_summary(&parsed);
}

pub async fn status(args: RunRef, json_output: bool) -> i32 {
    let result = async {
        let (stack, settings) = args.stack.resolve().await?;
        let follow = &args.follow;
        let watch =
            follow.watch || (!follow.once && !json_output && std::io::stdout().is_terminal());
        if watch {
            let every = Duration::from_secs_f64(follow.interval);
            let on_interrupt = if follow.detach {
                OnInterrupt::Leave
            } else {
                OnInterrupt::Ask
            };
            return watch_run(
                (&stack, &settings),
                &args.run_id,
                (every, on_interrupt),
                json_output,
            )
            .await;
        }
        let state = control::run_state(&stack, &settings, &args.run_id).await?;
        if json_output {
            println!(
                "{}",
                serde_json::to_string_pretty(&state).expect("JSON prints")
            );
        } else {
            println!("run {}: {}", state.run_id, progress_line(&state));
            print_error(&state);
        }
        Ok(0)
    }
    .await;
    result.unwrap_or_else(|err| config_exit(&err))
}

/// `status --watch`: progress until the run ends, then where its report
/// is; the exit code is the run's. With --json, one JSON state per line.
async fn watch_run(
    (stack, settings): (&StackOutputs, &ClientSettings),
    run_id: &str,
    (every, on_interrupt): (Duration, OnInterrupt),
    json_output: bool,
) -> Result<i32, SyncError> {
    let followed = if json_output {
        follow(
            (stack, settings),
            run_id,
            every,
            &mut JsonLines,
            on_interrupt,
        )
        .await?
    } else {
        let mut progress = ProgressPrinter::new(Stream::Stdout);
        let followed = follow(
            (stack, settings),
            run_id,
            every,
            &mut progress,
            on_interrupt,
        )
        .await?;
        progress.finish();
        followed
    };
    let Followed::Ended(state) = followed else {
        return Ok(EXIT_INTERRUPTED);
    };
    let report = control::read_report(stack, settings, run_id).await.ok();
    if let Some(summary) = report.as_ref().filter(|_| !json_output) {
        let field = |name: &str| summary.get(name).cloned().unwrap_or(Value::Null);
        println!(
            "report {} (status {}, exit {})",
            field("summary_json").as_str().unwrap_or("-"),
            field("status").as_str().unwrap_or("-"),
            field("exit_code"),
        );
    }
    Ok(ended(&state, report.as_ref()))
}

fn print_error(state: &RunState) {
    if let Some(error) = &state.error {
        println!(
            "  error  {error}: {}",
            state.cause.as_deref().unwrap_or_default()
        );
    }
}

pub async fn local_stack(args: LocalStackArgs) -> i32 {
    // moto takes any credentials, but without some the SDK would go looking
    // for an instance role, off this machine.
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        eprintln!(
            "error: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (for moto: testing / testing)"
        );
        return EXIT_USAGE;
    }
    if let Some(path) = &args.emf_log
        && let Err(err) = crate::report::emf::log_to_file(path)
    {
        eprintln!("error: --emf-log {}: {err}", path.display());
        return EXIT_USAGE;
    }
    let mut options = LocalStackOptions::new(&args.moto_endpoint, args.listen);
    options.max_receive_count = args.max_receive_count;
    options.visibility_timeout_secs = args.visibility_timeout;
    options.batch_size = args.batch_size;
    options.max_concurrency = args.max_concurrency;
    options.lister_max_keys = args.lister_max_keys;
    options.functions_endpoint = args.functions_endpoint.clone();
    if let Some([source, destination]) = args.replicate.as_deref() {
        let mut replication = local_stack::replication::ReplicationOptions::new(
            &args.moto_endpoint,
            "s3-fanout",
            source,
            destination,
        );
        replication.replicate_deletes = args.replicate_deletes;
        replication.replicate_all_versions = args.replicate_all_versions;
        options.replication = Some(replication);
    }
    let stack = match local_stack::start(options).await {
        Ok(stack) => stack,
        Err(err) => return config_exit(&err),
    };
    let mut outputs = stack.outputs.clone();
    if args.functions_endpoint.is_some() {
        // The run's folder is where the functions write it.
        outputs.endpoint_url = args.functions_endpoint.clone();
    }
    let outputs = serde_json::to_string_pretty(&outputs).expect("JSON prints");
    if let Err(err) = std::fs::write(&args.outputs, outputs) {
        eprintln!("error: {}: {err}", args.outputs.display());
        return 1;
    }
    eprintln!(
        "local stack ready: router on {}, outputs in {} (Ctrl-C stops it)",
        args.listen,
        args.outputs.display()
    );
    let _ = tokio::signal::ctrl_c().await;
    stack.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    0
}
