//! The sequential backend: a plain loop in the caller's thread.
//!
//! `n_jobs = 1` always lands here, as in joblib. It is also the reference
//! the other backends are compared against.

use super::{panic_error, Executor};
use crate::error::Result;
use crate::task::Job;
use std::ops::ControlFlow;

/// Runs each job in turn, in the calling thread.
pub(crate) struct Sequential;

impl Executor for Sequential {
    fn execute<R, I, D>(&mut self, jobs: I, mut deliver: D) -> Result<()>
    where
        R: Send + 'static,
        I: Iterator<Item = Job<R>>,
        D: FnMut(usize, Result<R>) -> ControlFlow<()>,
    {
        for (index, job) in jobs.enumerate() {
            let task = job.task();
            let result = job
                .run_caught()
                .map_err(|caught| panic_error(task, index, caught));
            if deliver(index, result).is_break() {
                break;
            }
        }
        Ok(())
    }
}
