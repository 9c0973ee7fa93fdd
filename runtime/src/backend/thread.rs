//! The thread backend: a rayon pool of exactly `n_jobs` threads.
//!
//! The caller's thread draws jobs lazily and keeps at most `2 * n_jobs` of
//! them queued or running; results come back over a channel. Cancelling
//! sets a flag that every job checks before it starts: a job already
//! running on a thread cannot be stopped (Rust has no safe way to kill a
//! thread), so it finishes in the background and its result is dropped.

use super::{panic_error, Executor};
use crate::error::{Error, Result};
use crate::task::Job;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

/// A rayon pool, shared by every run of one `Parallel`.
pub(crate) struct Threads {
    pool: Arc<rayon::ThreadPool>,
    n_jobs: usize,
}

impl Threads {
    /// A pool of exactly `n_jobs` threads.
    pub(crate) fn new(n_jobs: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n_jobs)
            .thread_name(|i| format!("parjob-{i}"))
            .build()
            .map_err(|e| Error::Config(format!("could not start {n_jobs} threads: {e}")))?;
        Ok(Threads {
            pool: Arc::new(pool),
            n_jobs,
        })
    }

    pub(crate) fn n_jobs(&self) -> usize {
        self.n_jobs
    }

    /// Another handle on the same pool.
    pub(crate) fn handle(&self) -> Threads {
        Threads {
            pool: Arc::clone(&self.pool),
            n_jobs: self.n_jobs,
        }
    }
}

impl Executor for Threads {
    fn execute<R, I, D>(&mut self, jobs: I, mut deliver: D) -> Result<()>
    where
        R: Send + 'static,
        I: Iterator<Item = Job<R>>,
        D: FnMut(usize, Result<R>) -> ControlFlow<()>,
    {
        let (tx, rx) = mpsc::channel::<(usize, Option<Result<R>>)>();
        let cancelled = Arc::new(AtomicBool::new(false));
        let bound = 2 * self.n_jobs;
        let mut jobs = jobs.enumerate();
        let mut in_flight = 0usize;
        let mut exhausted = false;
        loop {
            while !exhausted && in_flight < bound {
                let Some((index, job)) = jobs.next() else {
                    exhausted = true;
                    break;
                };
                let tx = tx.clone();
                let cancelled = Arc::clone(&cancelled);
                in_flight += 1;
                self.pool.spawn(move || {
                    if cancelled.load(Ordering::Relaxed) {
                        let _ = tx.send((index, None));
                        return;
                    }
                    let task = job.task();
                    let result = job
                        .run_caught()
                        .map_err(|caught| panic_error(task, index, caught));
                    let _ = tx.send((index, Some(result)));
                });
            }
            if in_flight == 0 {
                return Ok(());
            }
            let (index, result) = rx
                .recv()
                .expect("the sender is held by this loop, so the channel cannot close");
            in_flight -= 1;
            if let Some(result) = result {
                if deliver(index, result).is_break() {
                    cancelled.store(true, Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
    }
}
