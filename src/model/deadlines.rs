//! When a lister stops: the time it keeps before its deadline to send its
//! last batches and checkpoint, and the time before which a free stream
//! no longer takes a new task. The lister follows these
//! (`serverless::lister`, `serverless::streams`), and so does `plan`'s
//! model of it, so the two cannot drift apart.

use std::time::Duration;

/// What a task keeps of the `remaining` time when it starts: a fifth, at
/// least 5 s and at most 2 min. A 900 s invocation's first tasks list for
/// 780 s.
pub fn stop_margin(remaining: Duration) -> Duration {
    (remaining / 5).clamp(Duration::from_secs(5), Duration::from_secs(120))
}

/// How long before its deadline an invocation of `total` time stops taking
/// tasks off the queue: a tenth of it, at least 15 s. A task taken later
/// would list for seconds and pay a lease, reads and a checkpoint for them.
pub fn pull_margin(total: Duration) -> Duration {
    (total / 10).max(Duration::from_secs(15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_lists_until_a_fifth_of_its_time_is_left_within_bounds() {
        let secs = Duration::from_secs;
        assert_eq!(stop_margin(secs(900)), secs(120));
        assert_eq!(stop_margin(secs(300)), secs(60));
        assert_eq!(stop_margin(secs(10)), secs(5));
        assert_eq!(pull_margin(secs(900)), secs(90));
        assert_eq!(pull_margin(secs(25)), secs(15));
    }
}
