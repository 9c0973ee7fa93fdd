//! The session's watch over its workers: a job past the timeout (its
//! worker is killed and the run fails), and a worker that dies (the run
//! fails with the job it was running, unless it had not started any of its
//! batches, which then go to the other workers once). Under a pool's
//! rules, `on_error = "continue"` or `retries`, a death or a timeout fails
//! only the batch the worker was running, the batches queued behind it go
//! to other workers, and the run goes on; under `retries` the failed batch
//! is first sent again (`retrying.rs`), up to the limit.

use super::exit;
use super::reader::Event;
use super::session::ProcessSession;
use crate::error::{Error, Result};
use crate::task::Work;
use std::collections::VecDeque;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

impl<W: Work> ProcessSession<W> {
    /// The job a worker was running, by its beacon, else the first of its
    /// oldest batch.
    pub(super) fn running_job(&self, w: &super::Worker) -> Option<(usize, &'static str)> {
        let batch = self.batches.get(w.queue.front()?)?;
        // A packed batch is one job of the worker's: the call it is on
        // counts from its first.
        let call = match batch.extra.packed {
            Some(_) => w.beacon.running_call(),
            None => 0,
        };
        let index = match w.beacon.running() {
            Some((seq, _))
                if (batch.first..batch.first + batch.len).contains(&(seq as usize + call)) =>
            {
                seq as usize + call
            }
            // Between jobs: blame the first job not yet answered.
            _ => batch.next_index().min(batch.first + batch.len - 1),
        };
        Some((index, batch.task))
    }

    /// Sends in-flight batch `id` again, from its kept frame, to worker
    /// `pos`: offered (so an idle worker can take it back) when it queues
    /// behind a running batch.
    pub(super) fn send_kept(&mut self, pos: usize, id: u64) {
        let w = &self.pool.workers[pos];
        if !w.queue.is_empty() && w.beacon.may_offer() {
            w.beacon.offer(id);
        }
        let Some(batch) = self.batches.get(&id) else {
            return;
        };
        let frame = Arc::clone(&batch.extra.frame);
        let decode = (batch.decode, batch.extra.packed);
        let segments = batch.extra.shared.segments.clone();
        self.traced_send(pos, id, &frame, decode, &segments);
    }

    /// Sends batch `id`'s kept frame to the least loaded worker (a fresh
    /// one replaces a dead worker first); `what` names the batch in the
    /// error when no worker can take it.
    pub(super) fn place_kept(&mut self, id: u64, what: &str) -> Result<()> {
        self.pool.fill()?;
        let pos = self
            .least_loaded()
            .or_else(|| self.any_room())
            .ok_or_else(|| Error::Pool(format!("no worker could take {what}")))?;
        self.send_kept(pos, id);
        Ok(())
    }

    /// [`Self::place_kept`], failing batch `id` with the error instead.
    pub(super) fn place_or_fail(&mut self, id: u64, what: &str) {
        if let Err(e) = self.place_kept(id, what) {
            self.end_failed(id, |_| e, 0);
        }
    }

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
                    if let Some(&id) = self.pool.workers[pos].queue.front() {
                        if self.lost_copy(pos, id) {
                            return Ok(None); // its copy runs on
                        }
                    }
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
                    self.trace_stop(&w, running, &timeout);
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
        if let Some(&id) = self.pool.workers[pos].queue.front() {
            if self.lost_copy(pos, id) {
                return Ok(()); // its copy runs on
            }
        }
        let running = self.running_job(&self.pool.workers[pos]);
        let mut w = self.pool.workers.swap_remove(pos);
        // The call of a chunk it was on (a pool's chunks are one job).
        let mut call = w.beacon.running().map_or(0, |_| w.beacon.running_call());
        let (mut status, signal) = exit::reap_with_signal(&mut w.child, &w.watch);
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
                .is_some_and(|b| b.answered() == b.extra.base);
        if untouched && self.resend(std::mem::take(&mut w.queue))? {
            return Ok(());
        }
        let died = match w.memory.stopped().or_else(|| w.memory.kernel_stopped()) {
            // The memory watch, or the kernel at its cgroup's limit,
            // stopped it: the item grew too large.
            Some((peak, limit)) => Error::MemoryLimit {
                task: task.into(),
                index,
                pid: w.pid,
                peak,
                limit,
            },
            None => Error::WorkerDied {
                task: task.into(),
                index,
                pid: w.pid,
                status,
                memory: (signal == Some(libc::SIGKILL))
                    .then(|| w.memory.death_reading())
                    .flatten(),
            },
        };
        self.trace_stop(&w, running, &died);
        if !self.isolates_failures() {
            return Err(died);
        }
        // Under a pool's rules or `on_error = "continue"`, a worker's death
        // is the error of the batches it held alone; under "continue" the
        // ones queued behind the running one go to other workers instead.
        self.fail_held(&mut w, died, std::mem::take(&mut call))
    }

    /// Whether a dead or timed-out worker fails only the batches it held
    /// (a pool's rule, `on_error = "continue"`, and `retries`), not the run.
    fn isolates_failures(&self) -> bool {
        self.pool.rules.isolate_deaths || self.keep_going || self.retry.retries > 0
    }

    /// Ends the batches a stopped worker held: the running one with
    /// `first` (at call `call` of a pool's chunk), unless it is retried;
    /// the queued ones, which never started, go to other workers under
    /// "continue" or `retries` (once), else fail as not run.
    fn fail_held(&mut self, w: &mut super::Worker, first: Error, call: usize) -> Result<()> {
        let mut queue = std::mem::take(&mut w.queue);
        let running = queue.pop_front();
        let moves_on = self.keep_going || self.retry.retries > 0;
        if moves_on && !queue.is_empty() && self.resend(queue.clone())? {
            queue.clear();
        }
        if let Some(id) = running {
            if self.may_retry(id, &first) {
                self.retry(id, &first)?;
            } else {
                let error = self.final_error(id, first);
                if self.keep_going {
                    self.continue_past(id, error, call);
                } else {
                    self.end_failed(id, |_| error, call);
                }
            }
        }
        let pid = w.pid;
        for id in queue {
            self.end_failed(
                id,
                |b| Error::WorkerDied {
                    task: b.task.into(),
                    index: b.next_index(),
                    pid,
                    status: "died before it could run this batch".into(),
                    memory: None,
                },
                0,
            );
        }
        Ok(())
    }

    /// Ends batch `id` with the error `make` gives it.
    pub(super) fn end_failed(
        &mut self,
        id: u64,
        make: impl FnOnce(&super::session::InFlight<W::Output>) -> Error,
        call: usize,
    ) {
        let Some(mut batch) = self.batches.remove(&id) else {
            return;
        };
        let error = make(&batch);
        batch.fail(error);
        let (mut done, _) = batch.finish(Duration::ZERO, |_| unreachable!("it failed"));
        done.call = call;
        self.finished_here(done);
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
        for id in queue {
            if let Some(batch) = self.batches.get_mut(&id) {
                batch.extra.resent = true;
            }
            self.place_kept(id, "a dead worker's batch")?;
        }
        Ok(true)
    }
}
