//! How long a serverless run waits between progress polls: the one rule the
//! reporter follows and `plan`'s model counts, since every poll costs
//! history events (9 a poll) and a Standard workflow stops at 25,000.
//!
//! Waits grow 2 s a poll to a minute, so a short run is seen finished
//! within seconds; past 20 minutes they are a twentieth of the time waited
//! so far, up to 30 minutes, so a run is reported at most 5% (and at most
//! 30 minutes) after it ends, and its polls grow with the logarithm of a
//! long run's length: about 300 for a 100-hour first copy. While nothing
//! moves and nothing is in flight, a poll comes within a minute, so a lost
//! range or batch is found as soon as at any size.
//!
//! Near the end a wait is cut to when the pass should end at the pace of
//! the last one ([`eta_bounded`]), so the end is seen a second or two late
//! rather than half a wait late (8 s of a 5-minute first copy's 16 s
//! wait). Never below a quarter of the wait: a tail slower than its pace
//! (one large object's parts) costs at most four times the polls, still
//! growing with the logarithm of the run.

/// The longest wait between polls.
pub const MAX_WAIT_SECS: u64 = 30 * 60;

/// Seconds to wait after poll number `polls` (1 for the first), `waited`
/// seconds into the pass; `idle`: nothing finished since the last poll
/// and nothing is queued or in flight.
pub fn poll_wait_secs(polls: u64, waited: u64, idle: bool) -> u64 {
    let ramp = (2 * polls).min(60);
    if idle {
        return ramp;
    }
    ramp.max((waited / 20).min(MAX_WAIT_SECS))
}

/// Seconds until a pass ends at the pace of the last wait: `left` ranges
/// or batches to go, `done` of them finished during the `last_wait`
/// seconds. `None` while nothing moved (no pace to go by).
pub fn eta_secs(left: u64, done: u64, last_wait: u64) -> Option<f64> {
    (left > 0 && done > 0 && last_wait > 0).then(|| left as f64 * last_wait as f64 / done as f64)
}

/// `wait` (from [`poll_wait_secs`]), cut to a second past the end the
/// pace predicts, `eta` seconds away, but to no less than a quarter of
/// `wait` (nor 2 s).
pub fn eta_bounded(wait: u64, eta: Option<f64>) -> u64 {
    match eta {
        Some(eta) => {
            let to_end = eta.ceil() as u64 + 1;
            wait.min(to_end.max(wait / 4).max(2))
        }
        None => wait,
    }
}

/// How late, on average, a pass is seen ended after a last wait of
/// `wait`, the wait cut by [`eta_bounded`] as its steady pace predicts
/// (the model's pace is steady at the end): the end falls anywhere within
/// the wait after the poll before it.
pub fn expected_lateness_secs(wait: u64) -> f64 {
    const SAMPLES: u64 = 1000;
    let late: f64 = (0..SAMPLES)
        .map(|i| {
            let to_end = wait as f64 * (i as f64 + 0.5) / SAMPLES as f64;
            eta_bounded(wait, Some(to_end)) as f64 - to_end
        })
        .sum();
    late / SAMPLES as f64
}

/// Polls of a pass that lasts `secs`, and the wait after the last one (the
/// pass is seen finished, on average, half of it late).
pub fn polls_for(secs: f64) -> (u64, u64) {
    let (mut polls, mut waited) = (1u64, 0u64);
    let mut wait = poll_wait_secs(polls, waited, false);
    while (waited as f64) < secs {
        waited += wait;
        polls += 1;
        wait = poll_wait_secs(polls, waited, false);
    }
    (polls, wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_pass_polls_every_few_seconds() {
        let waits: Vec<u64> = (1..=4).map(|p| poll_wait_secs(p, 0, false)).collect();
        assert_eq!(waits, [2, 4, 6, 8]);
        assert_eq!(poll_wait_secs(40, 900, false), 60);
    }

    #[test]
    fn a_long_pass_waits_a_twentieth_of_its_time_up_to_half_an_hour() {
        assert_eq!(poll_wait_secs(50, 4_000, false), 200);
        assert_eq!(poll_wait_secs(500, 100 * 3600, false), MAX_WAIT_SECS);
        // but a pass where nothing moves is looked at within a minute
        assert_eq!(poll_wait_secs(500, 100 * 3600, true), 60);
    }

    #[test]
    fn a_wait_near_the_end_is_cut_to_a_second_past_it() {
        assert_eq!(eta_secs(100, 0, 16), None);
        assert_eq!(eta_secs(0, 10, 16), None);
        assert_eq!(eta_secs(100, 50, 16), Some(32.0));
        assert_eq!(eta_bounded(16, None), 16);
        // further than the wait: the wait
        assert_eq!(eta_bounded(16, Some(32.0)), 16);
        // within it: a second past the end
        assert_eq!(eta_bounded(16, Some(7.2)), 9);
        // but never below a quarter of the wait, nor 2 s
        assert_eq!(eta_bounded(16, Some(0.5)), 4);
        assert_eq!(eta_bounded(4, Some(0.1)), 2);
        // each poll still waits at least as long as before (by a quarter):
        // a slow tail cannot poll faster than the ramp allows
        for wait in [2, 10, 60, 1800] {
            assert!(eta_bounded(wait, Some(0.0)) >= (wait / 4).max(2).min(wait));
        }
    }

    #[test]
    fn the_end_is_seen_a_second_or_two_late_where_it_was_half_a_wait() {
        let late = expected_lateness_secs(16);
        assert!((1.0..2.5).contains(&late), "{late}");
        let late = expected_lateness_secs(60);
        assert!((2.0..4.0).contains(&late), "{late}");
        assert!(expected_lateness_secs(2) <= 2.0);
    }

    #[test]
    fn polls_grow_with_the_logarithm_of_a_long_pass() {
        let (ten_minutes, _) = polls_for(600.0);
        let (hundred_hours, last) = polls_for(100.0 * 3600.0);
        assert!((20..=30).contains(&ten_minutes), "{ten_minutes}");
        // 9 history events a poll: a 100-hour pass stays far below 5,000
        assert!(hundred_hours * 9 < 5_000, "{hundred_hours}");
        assert_eq!(last, MAX_WAIT_SECS);
    }
}
