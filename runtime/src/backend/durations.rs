//! Each task's finished job durations, and their median: what `speculate`
//! judges a running job by, on worker processes and on threads alike.

use std::collections::HashMap;
use std::time::Duration;

/// The time per job of each task's finished batches.
#[derive(Default)]
pub(crate) struct Durations(HashMap<&'static str, Vec<u64>>);

impl Durations {
    /// Records a finished batch of `jobs` jobs of `task` that took `elapsed`.
    pub(crate) fn record(&mut self, task: &'static str, jobs: usize, elapsed: Duration) {
        if jobs > 0 {
            let per_job = elapsed.as_nanos() as u64 / jobs as u64;
            self.0.entry(task).or_default().push(per_job);
        }
    }

    /// The median time per job of `task`'s finished batches; `None` before
    /// one finished.
    pub(crate) fn median(&self, task: &str) -> Option<Duration> {
        let mut sorted = self.0.get(task)?.clone();
        if sorted.is_empty() {
            return None;
        }
        let mid = sorted.len() / 2;
        let (_, median, _) = sorted.select_nth_unstable(mid);
        Some(Duration::from_nanos(*median))
    }

    /// How long a job of `task` may run before `speculate` with multiplier
    /// `k` copies it (at least 1 ms); `None` before one finished.
    pub(crate) fn late_after(&self, task: &str, k: u32) -> Option<Duration> {
        Some(
            self.median(task)?
                .saturating_mul(k)
                .max(Duration::from_millis(1)),
        )
    }
}

/// The line `verbose` prints at the end of a speculated run.
pub(crate) fn speculation_report(copied: usize, won: usize) -> String {
    format!(
        "[parjob] speculation: {copied} {} copied, {won} {} won",
        if copied == 1 { "job" } else { "jobs" },
        if won == 1 { "copy" } else { "copies" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_ignores_the_straggler_and_sets_the_bar() {
        let mut d = Durations::default();
        assert!(d.median("t").is_none());
        for ms in [10, 12, 11, 3000, 9] {
            d.record("t", 1, Duration::from_millis(ms));
        }
        assert_eq!(d.median("t"), Some(Duration::from_millis(11)));
        // A batch of 4 jobs counts as its time per job, 10 ms.
        d.record("t", 4, Duration::from_millis(40));
        assert_eq!(d.median("t"), Some(Duration::from_millis(11)));
        assert_eq!(d.late_after("t", 4), Some(Duration::from_millis(44)));
        assert_eq!(d.late_after("other", 4), None);
        assert_eq!(
            speculation_report(1, 1),
            "[parjob] speculation: 1 job copied, 1 copy won"
        );
    }
}
