//! `s3-fanout cancel RUN`, and what Ctrl-C does while `run --wait` or
//! `status --watch` follows a serverless run: ask once whether to cancel
//! the run or leave it running. A second Ctrl-C leaves without cancelling;
//! `--detach`, or no terminal to ask on, leaves it and says so.

use std::io::IsTerminal;
use std::time::Duration;

use crate::base::client::ClientSettings;
use crate::base::error::SyncError;
use crate::serverless::control::{self, CancelOutcome, RunState, RunWatcher, StackOutputs};

use super::stack::{StackArgs, config_exit};

#[derive(Debug, Clone, clap::Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// The run id (the execution's name).
    pub run_id: String,
    /// Follow the run until its execution ends, and print where its report
    /// is. Without it, `cancel` returns once the run is marked.
    #[arg(long)]
    pub wait: bool,
}

/// Exit 0 once the run is marked cancelled (or had already ended, or was
/// already stopped: nothing changes then), 2 for an unknown run.
pub async fn cancel(args: CancelArgs) -> i32 {
    let result = async {
        let (stack, settings) = args.stack.resolve().await?;
        let run_id = &args.run_id;
        match control::cancel_run(&stack, &settings, run_id).await? {
            CancelOutcome::Cancelled => eprintln!("{}", cancelled_words(run_id)),
            CancelOutcome::AlreadyStopped(reason) => {
                eprintln!(
                    "run {run_id} was already stopped ({}); nothing changed",
                    reason.describe()
                );
            }
            CancelOutcome::Finished(status) => {
                eprintln!(
                    "run {run_id} has already ended ({}); nothing changed, its report stands",
                    status.to_lowercase()
                );
                return Ok(0);
            }
        }
        if args.wait {
            let state =
                control::wait_for_run(&stack, &settings, run_id, control::REFRESH, |_| {}).await?;
            let report = control::read_report(&stack, &settings, run_id).await.ok();
            let field = |name: &str| {
                report
                    .as_ref()
                    .and_then(|r| r.get(name)?.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "-".into())
            };
            eprintln!(
                "run {run_id} ended {} (report {}, status {})",
                state.status.to_lowercase(),
                field("summary_json"),
                field("status")
            );
        }
        Ok(0)
    }
    .await;
    result.unwrap_or_else(|err| config_exit(&err))
}

fn cancelled_words(run_id: &str) -> String {
    format!(
        "cancelled run {run_id}: its listers and copiers stop within about a second, dropping what is left \
         (copies already sent finish, open multipart uploads are aborted); its execution ends as Cancelled, \
         with its report, at its next progress check"
    )
}

/// How a follower treats Ctrl-C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInterrupt {
    /// Ask whether to cancel the run (where there is a terminal to ask on).
    Ask,
    /// `--detach`: leave the run going, without asking.
    Leave,
}

/// How following a run ended.
pub enum Followed {
    /// The execution ended: its last state.
    Ended(Box<RunState>),
    /// Ctrl-C, and the run left going.
    Left,
}

/// What a follower shows: each state, and when a question takes the
/// screen (`true`) and gives it back (`false`).
pub trait Show {
    fn state(&mut self, state: &RunState);
    fn asking(&mut self, asking: bool);
}

/// Follow the run until its execution ends, every `every`, as
/// [`control::wait_for_run`] does, with Ctrl-C handled as
/// [`OnInterrupt`] says. After a cancel it follows on to the end, so the
/// report that says `cancelled` is printed; Ctrl-C then leaves.
pub async fn follow(
    (stack, settings): (&StackOutputs, &ClientSettings),
    run_id: &str,
    every: Duration,
    show: &mut dyn Show,
    on_interrupt: OnInterrupt,
) -> Result<Followed, SyncError> {
    let mut watcher = RunWatcher::new(stack, settings, run_id).await;
    let mut interrupts = Interrupts::listen();
    let mut cancelled = false;
    loop {
        let state = watcher.refresh().await?;
        show.state(&state);
        if state.finished() {
            return Ok(Followed::Ended(Box::new(state)));
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = interrupts.next() => {
                if cancelled {
                    eprintln!("\nstopped following run {run_id}; it is cancelled, and ends with its report");
                    return Ok(Followed::Left);
                }
                show.asking(true);
                let cancel = ask(run_id, on_interrupt, &mut interrupts).await;
                show.asking(false);
                if !cancel {
                    eprintln!(
                        "left run {run_id} running: follow it with `s3-fanout status {run_id}`, stop it with `s3-fanout cancel {run_id}`"
                    );
                    return Ok(Followed::Left);
                }
                match control::cancel_run(stack, settings, run_id).await? {
                    CancelOutcome::Cancelled => eprintln!("{}", cancelled_words(run_id)),
                    CancelOutcome::AlreadyStopped(reason) => {
                        eprintln!("run {run_id} was already stopped ({})", reason.describe());
                    }
                    CancelOutcome::Finished(_) => {}
                }
                cancelled = true;
            }
        }
    }
}

/// Ask once whether to cancel; `false` leaves the run going.
async fn ask(run_id: &str, on_interrupt: OnInterrupt, interrupts: &mut Interrupts) -> bool {
    if on_interrupt == OnInterrupt::Leave {
        eprintln!("\ninterrupted (--detach)");
        return false;
    }
    if !std::io::stdin().is_terminal() {
        eprintln!("\ninterrupted, with no terminal to ask whether to cancel the run");
        return false;
    }
    eprint!("\ncancel run {run_id}? [c]ancel it / [l]eave it running (Ctrl-C again: leave): ");
    // stdin is read on a thread of its own: a second Ctrl-C answers too.
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    });
    tokio::select! {
        answer = answer => matches!(
            answer.ok().and_then(Result::ok).map(|a| a.trim().to_lowercase()).as_deref(),
            Some("c" | "cancel" | "y" | "yes")
        ),
        _ = interrupts.next() => {
            eprintln!();
            false
        }
    }
}

/// Ctrl-Cs, each one delivered: one listener for the whole follow, so a
/// Ctrl-C that comes while a refresh is in flight is not missed.
struct Interrupts {
    received: tokio::sync::mpsc::UnboundedReceiver<()>,
    listener: tokio::task::JoinHandle<()>,
}

impl Interrupts {
    fn listen() -> Self {
        let (sender, received) = tokio::sync::mpsc::unbounded_channel();
        let listener = tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                if sender.send(()).is_err() {
                    break;
                }
            }
        });
        Interrupts { received, listener }
    }

    async fn next(&mut self) {
        if self.received.recv().await.is_none() {
            // No signal handling here: wait for ever, as if never pressed.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        self.listener.abort();
    }
}
