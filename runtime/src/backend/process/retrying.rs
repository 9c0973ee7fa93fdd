//! `retries` in the process session: which failed job runs again, where,
//! and what follows it.
//!
//! A batch keeps its whole frame. When job `j` of it fails with a death,
//! a timeout, the memory limit (or a panic, with `retry_panics`), the
//! values that came before it are kept, and `j` is sent again, in a frame
//! cut from the whole one, with the jobs before it whose values its dead
//! worker had not sent yet (a worker sends values when a batch ends or
//! its pipe buffer fills). When that answers, the jobs after `j` follow as
//! one more frame, a fresh attempt. So batching stays as it is while nothing
//! fails, a retry reruns exactly the failed job, and a job that killed its
//! worker twice runs alone on an idle worker (`place_solo`).

use super::session::ProcessSession;
use crate::backend::Finished;
use crate::error::{Error, Result};
use crate::task::Work;
use std::time::Duration;

impl<W: Work> ProcessSession<W> {
    /// Whether batch `id`, which failed with `cause`, runs again: attempts
    /// are left, and the cause is a death, a timeout or the memory limit
    /// (or a panic, with `retry_panics`).
    pub(super) fn may_retry(&self, id: u64, cause: &Error) -> bool {
        self.batches
            .get(&id)
            .is_some_and(|b| self.retry.allows(cause, b.extra.attempts))
    }

    /// Sends the failed job of batch `id` to run again, alone in its frame,
    /// on the least loaded worker (a fresh one replaces a dead worker
    /// first), after `cause` ended its last attempt. A job that killed its
    /// worker twice runs alone: on an idle worker that takes nothing else
    /// until it ends, or, while none is idle, as soon as one is.
    pub(super) fn retry(&mut self, id: u64, cause: &Error) -> Result<()> {
        self.pool.fill()?;
        if let Some(t) = &self.tracing {
            t.trace.retried();
        }
        let Some(batch) = self.batches.get_mut(&id) else {
            return Ok(());
        };
        batch.restart_at_failure();
        // From the first job whose value did not come (a worker sends its
        // values when the batch ends or its pipe fills, so a death loses
        // the values it had not sent) to the job that failed.
        let at = batch.answered();
        let failed = batch.failed_job(cause);
        batch.extra.cut(at, failed - at + 1)?;
        batch.extra.attempts += 1;
        if matches!(cause, Error::WorkerDied { .. } | Error::MemoryLimit { .. }) {
            batch.extra.kills += 1;
        }
        let alone = batch.extra.kills >= 2;
        if self.retry.verbose {
            eprintln!(
                "[parjob] retrying task `{}` on item {} (attempt {} of {}{}): {cause}",
                batch.task,
                batch.first + failed,
                batch.extra.attempts,
                self.retry.retries + 1,
                if alone { ", alone on its worker" } else { "" }
            );
        }
        if alone {
            self.solo_pending.push_back(id);
            self.place_solo();
            return Ok(());
        }
        self.place_kept(id, "a batch to retry")
    }

    /// Sends the jobs waiting to run alone to idle workers, each of which
    /// then takes nothing else until that job ends.
    pub(super) fn place_solo(&mut self) {
        while let Some(&id) = self.solo_pending.front() {
            let idle = self
                .pool
                .workers
                .iter()
                .position(|w| w.queue.is_empty() && self.pool.may_take(w));
            let Some(pos) = idle else {
                return;
            };
            self.solo_pending.pop_front();
            self.send_kept(pos, id);
            self.pool.workers[pos].solo = true;
        }
    }

    /// Batch `id`'s current attempt ended on worker `pos`: the batch is
    /// finished, unless a panic ended it and `retry_panics` runs the job
    /// again, or a retried job succeeded and the jobs after it follow
    /// (then `None`).
    pub(super) fn done_or_retry(
        &mut self,
        pos: usize,
        id: u64,
        elapsed: Duration,
    ) -> Option<Finished<W::Output>> {
        let batch = self.batches.get(&id)?;
        if batch.extra.skip.is_some() {
            // Under "continue": the jobs before a reported failure ran
            // again; the batch goes on past it.
            self.leave(pos);
            self.past_reported(id);
            return self.here.pop_front();
        }
        let panicked = matches!(batch.failure(), Some(Error::Panic { .. }));
        let attempts = batch.extra.attempts;
        let rest = batch.failure().is_none()
            && batch.answered() == batch.extra.base + batch.extra.span
            && batch.answered() < batch.len;
        if rest {
            self.leave(pos);
            return match self.send_rest(id) {
                Ok(()) => None,
                Err(e) => self.end_here(id, e),
            };
        }
        if !panicked || !self.retry.panics || attempts > self.retry.retries {
            if panicked && attempts > 1 {
                let index = batch.first + batch.values();
                if let Some(b) = self.batches.get_mut(&id) {
                    let task = b.task;
                    b.wrap_failure(|last| Error::Retried {
                        task: task.into(),
                        index,
                        attempts,
                        last: Box::new(last),
                    });
                }
            }
            return Some(self.finish(pos, id, elapsed));
        }
        // The worker is done with this attempt; the failed job runs again.
        let cause = self.batches.get_mut(&id)?.restart_at_failure()?;
        self.leave(pos);
        match self.retry(id, &cause) {
            Ok(()) => None,
            Err(e) => self.end_here(id, e),
        }
    }

    /// Worker `pos` is done with its oldest batch's attempt.
    fn leave(&mut self, pos: usize) {
        let w = &mut self.pool.workers[pos];
        w.queue.pop_front();
        w.batches_done += 1;
        self.pool.retire_if_spent(pos);
    }

    /// Sends the jobs of batch `id` after its retried one, which answered,
    /// as a fresh attempt of their own.
    fn send_rest(&mut self, id: u64) -> Result<()> {
        let Some(batch) = self.batches.get_mut(&id) else {
            return Ok(());
        };
        let at = batch.answered();
        batch.extra.cut(at, batch.len - at)?;
        (batch.extra.attempts, batch.extra.kills) = (1, 0);
        self.place_kept(id, "the rest of a batch")
    }

    /// Ends batch `id` here with `error`, and returns what ended here first.
    fn end_here(&mut self, id: u64, error: Error) -> Option<Finished<W::Output>> {
        self.end_failed(id, |_| error, 0);
        self.here.pop_front()
    }

    /// The error a batch's last attempt leaves: `cause` itself, or, when
    /// it ran more than once, how many times it failed.
    pub(super) fn final_error(&self, id: u64, cause: Error) -> Error {
        match self.batches.get(&id) {
            Some(b) if b.extra.attempts > 1 => Error::Retried {
                task: b.task.into(),
                index: cause.index().unwrap_or(b.first + b.values()),
                attempts: b.extra.attempts,
                last: Box::new(cause),
            },
            _ => cause,
        }
    }
}
