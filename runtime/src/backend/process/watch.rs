//! The session's watch over its workers: a job past the timeout (its
//! worker is killed and the run fails), and a worker that dies (the run
//! fails with the job it was running, unless it had not started any of its
//! batches, which then go to the other workers once). Under a pool's
//! rules a death fails only the batches the worker held, and the pool
//! goes on.

use super::exit;
use super::reader::Event;
use super::send;
use super::session::ProcessSession;
use crate::error::{Error, Result};
use crate::task::Work;
use std::collections::VecDeque;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

impl<W: Work> ProcessSession<W> {
    /// A worker over the time limit, or how long until one could be.
    fn overdue(&self, limit: Duration) -> std::result::Result<usize, Duration> {
        let mut soonest = limit;
        for (pos, w) in self.pool.workers.iter().enumerate() {
            if w.queue.is_empty() {
                continue;
            }
            if let Some((_, ran)) = w.beacon.running() {
                if ran >= limit {
                    return Ok(pos);
                }
                soonest = soonest.min(limit - ran);
            }
        }
        Err(soonest)
    }

    /// The next event from the workers, waiting at most `left` (and no
    /// longer than until a running job is overdue). `None` when nothing
    /// came in time; `Err` when a job ran past the timeout, whose worker
    /// is then killed.
    pub(super) fn next_event(&mut self, left: Option<Duration>) -> Result<Option<Event>> {
        let received = match (self.pool.deferred.pop_front(), self.timeout) {
            (Some(event), _) => Ok(event),
            (None, None) => match left {
                Some(left) => self.pool.events.recv_timeout(left),
                None => self
                    .pool
                    .events
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            },
            (None, Some(limit)) => match self.overdue(limit) {
                Ok(pos) => {
                    let running = self.running_job(&self.pool.workers[pos]);
                    let mut w = self.pool.workers.swap_remove(pos);
                    let _ = w.child.kill();
                    let _ = w.child.wait();
                    // A worker that held no batch of this run is just gone.
                    let Some((index, task)) = running else {
                        return Ok(None);
                    };
                    let timeout = Error::Timeout {
                        task: task.into(),
                        index,
                        after: limit,
                    };
                    if !self.isolates_failures() {
                        return Err(timeout);
                    }
                    // The timeout is the error of the batches it held.
                    self.fail_held(&mut w, timeout, 0)?;
                    return Ok(None);
                }
                Err(wait) => self
                    .pool
                    .events
                    .recv_timeout(left.map_or(wait, |l| l.min(wait))),
            },
        };
        match received {
            Ok(event) => Ok(Some(event)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => unreachable!("the pool holds a sender"),
        }
    }

    /// A worker's pipe closed: reaps it, and fails the run with the job it
    /// was running, unless it died before starting any of its batches,
    /// which then go to the other workers.
    pub(super) fn closed(&mut self, worker: u64, error: Option<std::io::Error>) -> Result<()> {
        let Some(pos) = self.pool.position(worker) else {
            return Ok(());
        };
        let running = self.running_job(&self.pool.workers[pos]);
        let mut w = self.pool.workers.swap_remove(pos);
        // The call of a chunk it was on (a pool's chunks are one job).
        let mut call = w.beacon.running().map_or(0, |_| w.beacon.running_call());
        let mut status = exit::reap(&mut w.child, &w.watch);
        if let Some(e) = error {
            status = format!("{status} (its pipe failed: {e})");
        }
        let Some((index, task)) = running else {
            return Ok(()); // an idle worker died: the next fill replaces it
        };
        // A worker that died (or was dying) before it began its first
        // batch ran none of it: the batches go elsewhere.
        let untouched = !self.pool.rules.no_resend
            && w.beacon.running().is_none()
            && w.queue
                .front()
                .and_then(|id| self.batches.get(id))
                .is_some_and(|b| b.answered() == 0);
        if untouched && self.resend(std::mem::take(&mut w.queue))? {
            return Ok(());
        }
        let died = Error::WorkerDied {
            task: task.into(),
            index,
            pid: w.pid,
            status,
        };
        if !self.isolates_failures() {
            return Err(died);
        }
        // Under a pool's rules or `on_error = "continue"`, a worker's death
        // is the error of the batches it held alone; under "continue" the
        // ones queued behind the running one go to other workers instead.
        self.fail_held(&mut w, died, std::mem::take(&mut call))
    }

    /// Whether a dead or timed-out worker fails only the batches it held
    /// (a pool's rule, and `on_error = "continue"`), not the run.
    fn isolates_failures(&self) -> bool {
        self.pool.rules.isolate_deaths || self.keep_going
    }

    /// Ends the batches a stopped worker held: the running one with
    /// `first` (at call `call` of a pool's chunk); the queued ones go to
    /// other workers under "continue" (once), else fail as not run.
    fn fail_held(&mut self, w: &mut super::Worker, first: Error, call: usize) -> Result<()> {
        let mut queue = std::mem::take(&mut w.queue);
        let running = queue.pop_front();
        if self.keep_going && !queue.is_empty() && self.resend(queue.clone())? {
            queue.clear();
        }
        let mut first = Some(first);
        let mut call = Some(call);
        for id in running.into_iter().chain(queue) {
            let Some(mut batch) = self.batches.remove(&id) else {
                continue;
            };
            batch.fail(first.take().unwrap_or_else(|| Error::WorkerDied {
                task: batch.task.into(),
                index: batch.next_index(),
                pid: w.pid,
                status: "died before it could run this batch".into(),
            }));
            let (mut done, _) = batch.finish(Duration::ZERO, |_| unreachable!("it failed"));
            done.call = call.take().unwrap_or(0);
            self.finished_here(done);
        }
        Ok(())
    }

    /// Sends the batches of a worker that died before starting any of them
    /// to the other workers, once each; false if one was sent before.
    fn resend(&mut self, queue: VecDeque<u64>) -> Result<bool> {
        if queue
            .iter()
            .any(|id| self.batches.get(id).is_none_or(|b| b.extra.resent))
        {
            return Ok(false);
        }
        self.pool.fill()?;
        for id in queue {
            let pos = self
                .least_loaded()
                .or_else(|| self.any_room())
                .ok_or_else(|| Error::Pool("no worker could take a dead worker's batch".into()))?;
            let w = &self.pool.workers[pos];
            if !w.queue.is_empty() && w.beacon.may_offer() {
                w.beacon.offer(id);
            }
            let batch = self.batches.get_mut(&id).expect("checked above");
            batch.extra.resent = true;
            send(
                &mut self.pool.workers[pos],
                id,
                &batch.extra.frame,
                batch.decode,
                &batch.extra.shared.segments,
            );
        }
        Ok(true)
    }
}
