//! Auto-batching: how many jobs to put in the next batch.
//!
//! joblib starts at one job and doubles the size while batches finish in
//! under 0.2 s, because a loky round trip costs milliseconds. Ours costs
//! microseconds, so the target is the backend's own: a batch should last
//! about [`crate::backend::Session::batch_target`] (4 ms on processes,
//! 0.5 ms on threads). That is long enough that the per-batch cost is under
//! 1%, and short enough that the tail stays balanced.
//!
//! - The size starts at 1, so the first results come early and long tasks
//!   are never batched.
//! - After each batch, the per-job time is smoothed (a moving average with
//!   weight 1/2), and the size moves toward `target / per_job`. It grows at
//!   most 2x per step, as in joblib, or 4x while the ideal is still more
//!   than ten times the current size, and it drops at once when the jobs
//!   get slower.
//! - **Tail.** When the input's length is known, no batch takes more than
//!   `remaining / (2 * n_jobs)` jobs, so no worker is left holding a long
//!   batch while the others idle.

use crate::options::BatchSize;
use std::time::Duration;

/// The largest auto batch.
pub(crate) const MAX_BATCH: usize = 1 << 16;

pub(crate) struct Batcher {
    fixed: Option<usize>,
    size: usize,
    target_ns: f64,
    per_job_ns: Option<f64>,
    n_jobs: usize,
}

impl Batcher {
    pub(crate) fn new(mode: BatchSize, target: Duration, n_jobs: usize) -> Self {
        let fixed = match mode {
            BatchSize::Fixed(n) => Some(n.max(1)),
            // A zero target (the sequential backend) means: never batch.
            BatchSize::Auto if target.is_zero() => Some(1),
            BatchSize::Auto => None,
        };
        Batcher {
            fixed,
            size: 1,
            target_ns: target.as_nanos() as f64,
            per_job_ns: None,
            n_jobs: n_jobs.max(1),
        }
    }

    /// The size of the next batch, given how many jobs remain if known.
    pub(crate) fn next_size(&self, remaining: Option<usize>) -> usize {
        match (self.fixed, remaining) {
            (Some(n), _) => n,
            (None, Some(left)) => self.size.min((left / (2 * self.n_jobs)).max(1)),
            (None, None) => self.size,
        }
    }

    /// The size batches have now (for bounding buffers).
    pub(crate) fn current(&self) -> usize {
        self.fixed.unwrap_or(self.size)
    }

    /// Learns from a finished batch of `jobs` jobs that ran for `elapsed`.
    pub(crate) fn record(&mut self, jobs: usize, elapsed: Duration) {
        if self.fixed.is_some() || jobs == 0 {
            return;
        }
        let per_job = elapsed.as_nanos() as f64 / jobs as f64;
        let smoothed = match self.per_job_ns {
            Some(previous) => 0.5 * previous + 0.5 * per_job,
            None => per_job,
        };
        self.per_job_ns = Some(smoothed);
        let ideal = (self.target_ns / smoothed.max(1.0)).floor().max(1.0) as usize;
        // Grow by at most 2x per step, as joblib does, or 4x while batches
        // are still under a tenth of the target (tiny jobs ramp up fast).
        let growth = if ideal > 10 * self.size { 4 } else { 2 };
        self.size = if ideal > self.size {
            ideal.min(self.size * growth)
        } else {
            ideal
        }
        .clamp(1, MAX_BATCH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_jobs_grow_by_doubling_and_long_jobs_stay_single() {
        let mut b = Batcher::new(BatchSize::Auto, Duration::from_millis(4), 2);
        assert_eq!(b.next_size(None), 1);
        let mut sizes = vec![];
        for _ in 0..20 {
            let n = b.next_size(None);
            b.record(n, Duration::from_nanos(100 * n as u64));
            sizes.push(b.current());
        }
        assert_eq!(&sizes[..4], &[4, 16, 64, 256]);
        assert_eq!(*sizes.last().unwrap(), 40_000);
        b.record(1, Duration::from_millis(50));
        b.record(1, Duration::from_millis(50));
        assert_eq!(b.current(), 1);
    }

    #[test]
    fn the_tail_shrinks_and_fixed_sizes_do_not_move() {
        let mut b = Batcher::new(BatchSize::Auto, Duration::from_millis(4), 2);
        for _ in 0..20 {
            let n = b.next_size(None);
            b.record(n, Duration::from_nanos(100 * n as u64));
        }
        assert_eq!(b.next_size(Some(1_000_000)), 40_000);
        assert_eq!(b.next_size(Some(400)), 100);
        assert_eq!(b.next_size(Some(3)), 1);
        let mut fixed = Batcher::new(BatchSize::Fixed(7), Duration::from_millis(4), 2);
        fixed.record(7, Duration::from_secs(1));
        assert_eq!(fixed.next_size(Some(2)), 7);
    }
}
