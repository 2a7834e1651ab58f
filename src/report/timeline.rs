//! Throughput over time and per-phase timings, for the report's chart and
//! phase table.
//!
//! A run samples its counters once a second; a night-long run would keep
//! tens of thousands of points, so [`Timeline`] keeps at most
//! [`MAX_POINTS`]: when full, it drops every other point and samples half
//! as often. The chart then has the same shape at any run length, and the
//! summary stays a few kilobytes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::ledger::{Counts, Stats};

/// Points a timeline keeps at most.
pub const MAX_POINTS: usize = 480;

/// Cumulative outcomes at a moment of the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the run started.
    pub at_secs: f64,
    /// Objects written so far (copied + updated; uploaded or downloaded
    /// for a directory side).
    pub objects: u64,
    pub bytes: u64,
    pub failed: u64,
}

impl TimelinePoint {
    pub fn of(at_secs: f64, counts: &Counts) -> Self {
        TimelinePoint {
            at_secs,
            objects: counts.copied + counts.updated,
            bytes: counts.bytes_copied,
            failed: counts.failed,
        }
    }
}

/// When a phase of the run started (seconds after the run's start) and how
/// long it took. Phases may overlap: the local runtime copies while it
/// lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTiming {
    pub name: String,
    pub started_secs: f64,
    pub duration_secs: f64,
}

/// A thinning sampler of [`TimelinePoint`]s.
#[derive(Debug, Clone)]
pub struct Timeline {
    points: Vec<TimelinePoint>,
    every: Duration,
    next: Duration,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            points: Vec::new(),
            every: Duration::from_secs(1),
            next: Duration::ZERO,
        }
    }
}

impl Timeline {
    /// Record `counts` at `elapsed`, if a sample is due.
    pub fn sample(&mut self, elapsed: Duration, counts: &Counts) {
        if elapsed < self.next {
            return;
        }
        self.points
            .push(TimelinePoint::of(elapsed.as_secs_f64(), counts));
        self.next = elapsed + self.every;
        if self.points.len() >= MAX_POINTS {
            // Keep the first point, so the chart still starts at zero.
            let mut index = 0;
            self.points.retain(|_| {
                index += 1;
                index % 2 == 1
            });
            self.every *= 2;
        }
    }

    /// Every point, with the final state at `elapsed` (always kept, so the
    /// chart ends at the run's totals).
    pub fn finish(mut self, elapsed: Duration, counts: &Counts) -> Vec<TimelinePoint> {
        let last = TimelinePoint::of(elapsed.as_secs_f64(), counts);
        if self.points.last() != Some(&last) {
            self.points.push(last);
        }
        self.points
    }
}

/// Samples a run's live counters into a [`Timeline`] in the background,
/// every quarter second (the timeline keeps one point per interval).
pub struct TimelineSampler {
    timeline: Arc<Mutex<Timeline>>,
    stats: Arc<Stats>,
    start: Instant,
    task: tokio::task::JoinHandle<()>,
}

impl TimelineSampler {
    pub fn start(stats: Arc<Stats>, start: Instant) -> Self {
        let timeline = Arc::new(Mutex::new(Timeline::default()));
        let task = tokio::spawn({
            let (timeline, stats) = (timeline.clone(), stats.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let counts = stats.snapshot();
                    timeline
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .sample(start.elapsed(), &counts);
                }
            }
        });
        TimelineSampler {
            timeline,
            stats,
            start,
            task,
        }
    }

    /// Stop sampling; the points, ending at the counters' final values.
    pub fn finish(self) -> Vec<TimelinePoint> {
        self.task.abort();
        let timeline = self
            .timeline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        timeline.finish(self.start.elapsed(), &self.stats.snapshot())
    }
}

/// Phase timings of one run, measured from its start.
#[derive(Debug)]
pub struct PhaseClock {
    start: Instant,
    phases: Vec<PhaseTiming>,
}

impl PhaseClock {
    pub fn new(start: Instant) -> Self {
        PhaseClock {
            start,
            phases: Vec::new(),
        }
    }

    /// Record a phase that ran from `from` until now.
    pub fn record(&mut self, name: &str, from: Instant) {
        self.phases.push(PhaseTiming {
            name: name.to_owned(),
            started_secs: from.saturating_duration_since(self.start).as_secs_f64(),
            duration_secs: from.elapsed().as_secs_f64(),
        });
    }

    pub fn into_phases(self) -> Vec<PhaseTiming> {
        self.phases
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(copied: u64) -> Counts {
        Counts {
            copied,
            bytes_copied: copied * 10,
            ..Counts::default()
        }
    }

    #[test]
    fn a_long_run_keeps_a_bounded_evenly_thinned_timeline() {
        let mut timeline = Timeline::default();
        let hours = 10 * 3600;
        for second in 0..hours {
            timeline.sample(Duration::from_secs(second), &counts(second));
        }
        let points = timeline.finish(Duration::from_secs(hours), &counts(hours));
        assert!(points.len() <= MAX_POINTS + 1, "{} points", points.len());
        assert!(points.len() > MAX_POINTS / 2);
        assert_eq!(points[0].at_secs, 0.0);
        assert_eq!(points.last().unwrap().objects, hours);
        assert!(points.windows(2).all(|w| w[0].at_secs < w[1].at_secs));
        // Evenly spread: no gap is much wider than the average.
        let gaps: Vec<f64> = points
            .windows(2)
            .map(|w| w[1].at_secs - w[0].at_secs)
            .collect();
        let mean = hours as f64 / gaps.len() as f64;
        assert!(gaps.iter().all(|g| *g <= mean * 2.5), "{gaps:?}");
    }

    #[test]
    fn samples_come_at_most_once_per_interval() {
        let mut timeline = Timeline::default();
        for ms in (0..3_000).step_by(100) {
            timeline.sample(Duration::from_millis(ms), &counts(ms));
        }
        let points = timeline.finish(Duration::from_millis(3_050), &counts(3_050));
        let at: Vec<f64> = points.iter().map(|p| p.at_secs).collect();
        assert_eq!(at, [0.0, 1.0, 2.0, 3.05]);
    }
}
