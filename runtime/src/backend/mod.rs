//! Where jobs run: one trait, three backends.
//!
//! An [`Executor`] takes a lazy iterator of jobs and hands each finished
//! job's `(index, result)` to a `deliver` callback in completion order. The
//! callback decides whether to go on; when it answers `Break`, the executor
//! cancels whatever is still in flight and returns promptly. Ordering,
//! collecting and stopping on the first error live above, in
//! [`crate::parallel`], so every backend gets them the same way.

use crate::error::{Error, Result};
use crate::task::Job;
use std::ops::ControlFlow;

pub(crate) mod process;
pub(crate) mod sequential;
pub(crate) mod thread;

/// Runs jobs and reports each outcome as it completes.
pub(crate) trait Executor {
    /// Runs `jobs` (drawn lazily), calling `deliver(index, result)` once per
    /// job that finished, until the jobs run out or `deliver` breaks.
    fn execute<R, I, D>(&mut self, jobs: I, deliver: D) -> Result<()>
    where
        R: Send + 'static,
        I: Iterator<Item = Job<R>>,
        D: FnMut(usize, Result<R>) -> ControlFlow<()>;
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
