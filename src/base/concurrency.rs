//! Adaptive copy concurrency: as many copies in flight as S3 takes.
//!
//! `--concurrency` is the ceiling. The limit starts low and doubles after
//! each window of successes (a window is as many copies as the limit), like
//! TCP's slow start, until the first throttling answer; from then on it grows
//! by one per window (additive increase) and halves on throttling
//! (multiplicative decrease), at most once per second so one burst of
//! SlowDowns counts as one signal. It also stops growing while copies take
//! more than twice as long as the best seen, because more copies in flight
//! would then only queue inside S3.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Where a fresh run starts (or the ceiling, if lower).
const START: usize = 8;
/// Slower than this multiple of the best latency seen: stop growing.
const LATENCY_HEADROOM: f64 = 2.0;
const CUT_SPACING: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct State {
    limit: usize,
    slow_start: bool,
    successes: usize,
    best_latency: Option<Duration>,
    recent_latency: Option<Duration>,
    last_cut: Option<Instant>,
    lowest: usize,
    highest: usize,
}

#[derive(Debug)]
pub struct AdaptiveLimit {
    ceiling: usize,
    in_flight: AtomicUsize,
    state: Mutex<State>,
    freed: Notify,
    cuts: AtomicU64,
}

/// A slot for one copy; frees itself when dropped.
pub struct Permit<'a> {
    owner: &'a AdaptiveLimit,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.owner.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.owner.freed.notify_waiters();
    }
}

impl AdaptiveLimit {
    pub fn new(ceiling: usize) -> Self {
        let ceiling = ceiling.max(1);
        let start = START.min(ceiling);
        AdaptiveLimit {
            ceiling,
            in_flight: AtomicUsize::new(0),
            state: Mutex::new(State {
                limit: start,
                slow_start: true,
                successes: 0,
                best_latency: None,
                recent_latency: None,
                last_cut: None,
                lowest: start,
                highest: start,
            }),
            freed: Notify::new(),
            cuts: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> usize {
        self.state.lock().expect("poisoned").limit
    }

    /// The lowest and highest limit of the run.
    pub fn range(&self) -> (usize, usize) {
        let state = self.state.lock().expect("poisoned");
        (state.lowest, state.highest)
    }

    /// Times the limit was cut for throttling.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }

    /// Wait until a copy may start.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            let freed = self.freed.notified();
            let in_flight = self.in_flight.load(Ordering::Acquire);
            if in_flight < self.limit()
                && self
                    .in_flight
                    .compare_exchange(
                        in_flight,
                        in_flight + 1,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
            {
                return Permit { owner: self };
            }
            freed.await;
        }
    }

    /// A copy finished without throttling, in `latency`.
    pub fn on_success(&self, latency: Duration) {
        let mut state = self.state.lock().expect("poisoned");
        // A smoothed latency, so one slow or fast object decides nothing.
        let recent = state
            .recent_latency
            .map_or(latency, |r| (r * 7 + latency) / 8);
        state.recent_latency = Some(recent);
        state.successes += 1;
        if state.successes < state.limit {
            return;
        }
        state.successes = 0;
        // The baseline is the best smoothed latency at the end of a window.
        let best = state.best_latency.map_or(recent, |b| b.min(recent));
        state.best_latency = Some(best);
        if recent.as_secs_f64() > best.as_secs_f64() * LATENCY_HEADROOM {
            return; // latency does not hold: more in flight would only queue
        }
        let grown = if state.slow_start {
            state.limit * 2
        } else {
            state.limit + 1
        };
        state.limit = grown.min(self.ceiling);
        state.highest = state.highest.max(state.limit);
        drop(state);
        self.freed.notify_waiters();
    }

    /// S3 answered SlowDown, 503 or 429 somewhere in the run.
    pub fn on_throttle(&self) {
        let mut state = self.state.lock().expect("poisoned");
        let now = Instant::now();
        if state
            .last_cut
            .is_some_and(|last| now.duration_since(last) < CUT_SPACING)
        {
            return;
        }
        state.last_cut = Some(now);
        state.slow_start = false;
        state.successes = 0;
        state.limit = (state.limit / 2).max(1);
        state.lowest = state.lowest.min(state.limit);
        self.cuts.fetch_add(1, Ordering::Relaxed);
        tracing::info!(limit = state.limit, "throttled: fewer copies in flight");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_millis(20);

    #[test]
    fn slow_start_doubles_per_window_up_to_the_ceiling() {
        let limit = AdaptiveLimit::new(64);
        assert_eq!(limit.limit(), 8);
        for expected in [16, 32, 64, 64] {
            for _ in 0..limit.limit() {
                limit.on_success(FAST);
            }
            assert_eq!(limit.limit(), expected);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_once_per_second_then_growth_is_additive() {
        let limit = AdaptiveLimit::new(64);
        for _ in 0..8 + 16 {
            limit.on_success(FAST);
        }
        assert_eq!(limit.limit(), 32);
        limit.on_throttle();
        limit.on_throttle(); // the same burst
        assert_eq!(limit.limit(), 16);
        tokio::time::advance(Duration::from_secs(2)).await;
        limit.on_throttle();
        assert_eq!(limit.limit(), 8);
        for _ in 0..8 {
            limit.on_success(FAST);
        }
        assert_eq!(limit.limit(), 9, "after throttling, +1 per window");
        assert_eq!(limit.range(), (8, 32));
        assert_eq!(limit.cuts(), 2);
    }

    #[test]
    fn growth_stops_while_latency_does_not_hold() {
        let limit = AdaptiveLimit::new(64);
        for _ in 0..8 {
            limit.on_success(FAST);
        }
        assert_eq!(limit.limit(), 16, "the first window sets the baseline");
        for _ in 0..200 {
            limit.on_success(FAST * 10);
        }
        assert_eq!(
            limit.limit(),
            16,
            "ten times slower than the baseline: no growth"
        );
        for _ in 0..200 {
            limit.on_success(FAST);
        }
        assert!(limit.limit() > 16, "latency recovered, growth resumed");
    }

    #[tokio::test]
    async fn never_more_in_flight_than_the_limit() {
        let limit = std::sync::Arc::new(AdaptiveLimit::new(3));
        let peak = std::sync::Arc::new(AtomicUsize::new(0));
        let running = std::sync::Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (limit, peak, running) = (limit.clone(), peak.clone(), running.clone());
                tokio::spawn(async move {
                    let _permit = limit.acquire().await;
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }
}
