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
    fn polls_grow_with_the_logarithm_of_a_long_pass() {
        let (ten_minutes, _) = polls_for(600.0);
        let (hundred_hours, last) = polls_for(100.0 * 3600.0);
        assert!((20..=30).contains(&ten_minutes), "{ten_minutes}");
        // 9 history events a poll: a 100-hour pass stays far below 5,000
        assert!(hundred_hours * 9 < 5_000, "{hundred_hours}");
        assert_eq!(last, MAX_WAIT_SECS);
    }
}
