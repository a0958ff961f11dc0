//! How long a function's tasks take, learned from the workers' own measurements.
//!
//! The dispatcher uses the estimate twice: to decide how many tasks a worker may hold
//! (enough to never starve it, few enough that a slow task does not strand a queue behind it)
//! and to decide which tasks run isolated (reported as started, so they can be timed out and
//! cancelled while running).

use std::time::Duration;

/// Tasks estimated to take at least this long run isolated. Isolation costs one more pipe
/// write per task, a rounding error beside 200 µs.
pub(crate) const ISOLATE_AT_NS: u64 = 200_000;

/// How much estimated work a worker may hold: its running task plus prefetched ones. Two
/// milliseconds hides the dispatcher's round trip for short tasks without letting a worker
/// hoard work that an idle one could do.
pub(crate) const TARGET_QUEUED_NS: u64 = 2_000_000;

/// An exponentially weighted moving average of a function's run time.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Estimate {
    mean_ns: Option<u64>,
}

impl Estimate {
    /// The estimated run time. A function never seen yet is assumed to be long, so its first
    /// tasks run isolated, one per worker, until a measurement says otherwise.
    pub(crate) fn nanos(&self) -> u64 {
        self.mean_ns.unwrap_or(TARGET_QUEUED_NS)
    }

    /// Raises the estimate to `ran_ns`, the time a task of the function has been running
    /// and not yet finished: such a task proves the function can take that long.
    pub(crate) fn at_least(&mut self, ran_ns: u64) {
        if self.mean_ns.is_some_and(|mean| mean < ran_ns) {
            self.mean_ns = Some(ran_ns);
        }
    }

    pub(crate) fn record(&mut self, duration: Duration) {
        let sample = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.mean_ns = Some(match self.mean_ns {
            None => sample,
            // Weight 1/8: smooth enough to ignore one slow call, quick enough to follow a
            // change in inputs within a few dozen tasks.
            Some(mean) => mean - mean / 8 + sample / 8,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_functions_look_long_until_measured() {
        let mut estimate = Estimate::default();
        assert!(estimate.nanos() >= ISOLATE_AT_NS);
        estimate.record(Duration::from_micros(3));
        assert_eq!(estimate.nanos(), 3_000);
        for _ in 0..100 {
            estimate.record(Duration::from_millis(10));
        }
        assert!(estimate.nanos() > 9_000_000, "{}", estimate.nanos());
    }
}
