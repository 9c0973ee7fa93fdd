//! The sequential backend: each job in turn, in the caller's thread.
//!
//! `n_jobs = 1` always lands here, as in joblib. A timeout cannot stop a
//! job running in the caller's own thread; a job that took longer is
//! reported as [`Error::Timeout`] when it returns.

use super::{run_here, Batch, Finished, Session};
use crate::error::{Error, Result};
use crate::task::Work;
use std::collections::VecDeque;
use std::time::Duration;

pub(crate) struct Sequential<W> {
    pending: VecDeque<Batch<W>>,
    timeout: Option<Duration>,
    /// Runs once on this thread before the first batch.
    init: Option<crate::options::Initializer>,
    /// Under `trace`: each batch says when its jobs ended.
    timed: bool,
}

impl<W> Sequential<W> {
    pub(crate) fn new(timeout: Option<Duration>) -> Self {
        Sequential {
            pending: VecDeque::new(),
            timeout,
            init: None,
            timed: false,
        }
    }

    /// The session with `init` run once on this thread before its jobs.
    pub(crate) fn with_initializer(mut self, init: Option<crate::options::Initializer>) -> Self {
        self.init = init;
        self
    }
}

impl<W: Work> Session<W> for Sequential<W> {
    fn has_room(&self) -> bool {
        self.pending.is_empty()
    }

    fn submit(&mut self, batch: Batch<W>) -> Result<()> {
        super::initialize_here(self.init)?;
        self.pending.push_back(batch);
        Ok(())
    }

    fn wait(&mut self, _: Option<Duration>) -> Result<Option<Finished<W::Output>>> {
        // Jobs run here, in this thread: there is no waiting to cut short.
        let batch = self.pending.pop_front().expect("wait follows submit");
        let Some(limit) = self.timeout else {
            return Ok(Some(run_here(batch, None, || false, self.timed)));
        };
        // One job at a time, so an overdue one is named when it returns.
        let mut done = Finished {
            first: batch.first,
            jobs: batch.items.len(),
            values: Vec::with_capacity(batch.items.len()),
            failure: None,
            elapsed: Duration::ZERO,
            call: 0,
            more: false,
            times: None,
        };
        for (k, work) in batch.items.into_iter().enumerate() {
            let index = batch.first + k;
            let task = work.task();
            let one = run_here(
                Batch {
                    first: index,
                    items: vec![work],
                },
                None,
                || false,
                self.timed,
            );
            if one.elapsed > limit {
                return Err(Error::Timeout {
                    task: task.into(),
                    index,
                    after: limit,
                });
            }
            done.elapsed += one.elapsed;
            done.values.extend(one.values);
            match (&mut done.times, one.times) {
                (Some(all), Some(t)) => all.ends.extend(t.ends),
                (all, t) => *all = all.take().or(t),
            }
            if one.failure.is_some() {
                done.failure = one.failure;
                break;
            }
        }
        Ok(Some(done))
    }

    fn cancel(&mut self) {
        self.pending.clear();
    }

    fn batch_target(&self) -> Duration {
        Duration::ZERO
    }

    fn set_trace(&mut self, _: &std::sync::Arc<crate::trace::Trace>) {
        self.timed = true;
    }
}
