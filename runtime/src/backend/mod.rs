//! Where batches of jobs run: one [`Session`] trait, three backends.
//!
//! A session accepts batches (consecutive jobs of one task) and reports
//! each finished batch with one result per job and the time its jobs took.
//! It knows nothing about ordering, `pre_dispatch` or batch sizing: those
//! live in [`crate::schedule`], which pulls from the session, so every
//! backend gets them the same way. A session's `wait` returns `Err` only
//! for failures that end the run as a whole (a timeout, a dead worker);
//! a job's own failure (a panic, a codec error) is that job's result.

use crate::error::{Error, Result};
use crate::task::Work;
use std::time::Duration;

pub(crate) mod process;
pub(crate) mod sequential;
pub(crate) mod thread;

/// A batch: consecutive `(index, work)` pairs of one task.
pub(crate) type Batch<W> = Vec<(usize, W)>;

/// A finished batch.
pub(crate) struct Finished<R> {
    /// How many jobs the batch held when it was submitted.
    pub jobs: usize,
    /// One result per job that ran, in the batch's order.
    pub results: Vec<(usize, Result<R>)>,
    /// Time spent running the jobs.
    pub elapsed: Duration,
}

/// One run's use of a backend.
pub(crate) trait Session<W: Work> {
    /// Whether `submit` can take another batch now.
    fn has_room(&self) -> bool;
    /// Starts a batch.
    fn submit(&mut self, batch: Batch<W>) -> Result<()>;
    /// Blocks until a batch finishes.
    fn wait(&mut self) -> Result<Finished<W::Output>>;
    /// Stops whatever is in flight; called once, when the run ends early.
    fn cancel(&mut self);
    /// How long an auto-sized batch should take on this backend.
    fn batch_target(&self) -> Duration;
    /// Gives back the worker processes, for the next run to reuse.
    fn into_pool(self: Box<Self>) -> Option<process::Processes>;
}

/// The error for a job whose code panicked where we could catch it.
pub(crate) fn panic_error(task: &str, index: usize, caught: crate::panic::Caught) -> Error {
    Error::Panic {
        task: task.to_string(),
        index,
        message: caught.message,
        location: caught.location,
    }
}

/// Runs a batch here: one result per job, and the time they took. Stops
/// early when `stop()` turns true, and reports the running job to `beacon`.
pub(crate) fn run_here<W: Work>(
    batch: Batch<W>,
    beacon: Option<&crate::beacon::Beacon>,
    stop: impl Fn() -> bool,
) -> Finished<W::Output> {
    let started = std::time::Instant::now();
    let jobs = batch.len();
    let mut results = Vec::with_capacity(jobs);
    for (index, work) in batch {
        if stop() {
            break;
        }
        if let Some(b) = beacon {
            b.start(index as u64);
        }
        let task = work.task();
        results.push((
            index,
            work.run_caught()
                .map_err(|caught| panic_error(task, index, caught)),
        ));
    }
    if let Some(b) = beacon {
        b.idle();
    }
    Finished {
        jobs,
        results,
        elapsed: started.elapsed(),
    }
}
