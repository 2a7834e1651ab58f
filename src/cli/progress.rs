//! Progress while a sync runs: an indicatif bar when stderr is a terminal,
//! a log line every few seconds otherwise (CI logs, cron mail), nothing with
//! `--json` or `--no-progress`. It only reads [`Stats`], so it costs the
//! pipeline nothing.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::base::format::{human_bytes, human_duration};
use crate::report::{Counts, Phase, Stats};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Bar,
    Log,
    Off,
}

impl ProgressMode {
    /// A bar on a terminal, log lines elsewhere.
    pub fn auto(enabled: bool) -> Self {
        match (enabled, std::io::stderr().is_terminal()) {
            (false, _) => ProgressMode::Off,
            (true, true) => ProgressMode::Bar,
            (true, false) => ProgressMode::Log,
        }
    }
}

pub struct Progress {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(stats: Arc<Stats>, mode: ProgressMode) -> Self {
        let stop = CancellationToken::new();
        let task = match mode {
            ProgressMode::Off => None,
            ProgressMode::Bar | ProgressMode::Log => {
                Some(tokio::spawn(render(stats, mode, stop.clone())))
            }
        };
        Progress { stop, task }
    }

    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

async fn render(stats: Arc<Stats>, mode: ProgressMode, stop: CancellationToken) {
    let started = Instant::now();
    let (tick, bar) = match mode {
        ProgressMode::Bar => {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                    .expect("valid template"),
            );
            (Duration::from_millis(200), Some(bar))
        }
        _ => (Duration::from_secs(5), None),
    };
    let mut interval = tokio::time::interval(tick);
    interval.tick().await;
    loop {
        let stopped = tokio::select! {
            _ = stop.cancelled() => true,
            _ = interval.tick() => false,
        };
        let line = status_line(&stats.snapshot(), stats.phase(), started.elapsed());
        match &bar {
            Some(bar) => {
                bar.set_message(line);
                bar.tick();
            }
            None if !stopped => tracing::info!("{line}"),
            None => {}
        }
        if stopped {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return;
        }
    }
}

/// One line of progress: what is listed, done, and how fast.
pub fn status_line(c: &Counts, current_phase: Phase, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let done = c.copied + c.updated + c.deleted;
    let finished = done + c.failed + c.skipped_archived + c.skipped_sse_c + c.source_vanished;
    let planned = c.plan_copy + c.plan_update + c.plan_delete;
    let skipped = c.skip_equal
        + c.skip_unverified
        + c.skip_filtered
        + c.skip_not_modified
        + c.skip_folder_markers;
    let phase_name = match current_phase {
        Phase::Listing => "listing and copying",
        Phase::Copying => "copying (listing done)",
        Phase::Verifying => "verifying",
        _ => "done",
    };
    let mut line = format!(
        "{phase_name}: listed {} | copied {}/{} ({}) | skipped {} | failed {} | {:.0} obj/s {}/s",
        c.listed_source,
        done,
        planned,
        human_bytes(c.bytes_copied),
        skipped,
        c.failed,
        finished as f64 / secs,
        human_bytes((c.bytes_copied as f64 / secs) as u64),
    );
    // An ETA only means something once the listing has said how much there is.
    if current_phase >= Phase::Copying && finished > 0 && planned > finished {
        let remaining = (planned - finished) as f64 * secs / finished as f64;
        line.push_str(&format!(" | ETA {}", human_duration(remaining)));
    }
    if current_phase == Phase::Verifying {
        line.push_str(&format!(" | verified {}", c.verify_checked));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_appears_once_listing_is_done() {
        let c = Counts {
            plan_copy: 10,
            copied: 5,
            ..Counts::default()
        };
        assert!(!status_line(&c, Phase::Listing, Duration::from_secs(5)).contains("ETA"));
        assert!(status_line(&c, Phase::Copying, Duration::from_secs(5)).contains("ETA 5s"));
    }
}
