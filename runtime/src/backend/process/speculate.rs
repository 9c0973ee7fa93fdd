//! `speculate`: Spark's speculative execution on worker processes.
//!
//! When a worker is idle and the scheduler has given the session every
//! job it had (so a worker is idle at all), a job that has run longer than
//! `k` times the median duration of its task's finished jobs gets a copy:
//! its kept frame is sent to the idle worker. The first of the two to
//! answer wins. The other worker is stopped (SIGKILL) and replaced, and the
//! batches queued behind it go to other workers; its answers, if any were
//! on their way, belong to no worker any more and are dropped. A copy
//! whose worker dies or times out is simply gone; the other one runs on.
//! A job is copied at most once.
//!
//! Batches keep their size: a copy runs the rest of the late batch, from
//! its first job not answered yet, cut from the batch's kept frame. The
//! first answer after the copy starts settles it, so when the copy wins,
//! nothing was answered since it started, and the batch goes on as the
//! copy's part. (On threads, `thread.rs` copies a batch whose arguments
//! are `Clone`, whole.)

use super::session::ProcessSession;
use super::speculation::{Adopted, Copy};
use crate::task::Work;
use std::time::Duration;

impl<W: Work> ProcessSession<W> {
    /// Under `speculate`, gives a copy of the most overdue running job to
    /// an idle worker. Returns how long until a running job could become
    /// overdue, so the session wakes then to look again.
    pub(super) fn speculate_stragglers(&mut self) -> Option<Duration> {
        let k = self.speculate?;
        let idle = self
            .pool
            .workers
            .iter()
            .position(|w| w.queue.is_empty() && self.pool.may_take(w))?;
        let mut overdue: Option<(usize, u64, Duration)> = None;
        let mut soonest: Option<Duration> = None;
        for (pos, w) in self.pool.workers.iter().enumerate() {
            let Some(&id) = w.queue.front() else {
                continue;
            };
            let (Some(batch), Some((_, ran))) = (self.batches.get(&id), w.beacon.running()) else {
                continue;
            };
            if self.speculation.was_copied(id) {
                continue;
            }
            let Some(after) = self.speculation.durations.late_after(batch.task, k) else {
                continue;
            };
            if ran > after {
                if overdue.is_none_or(|(_, _, longest)| ran > longest) {
                    overdue = Some((pos, id, ran));
                }
            } else {
                let left = after - ran;
                soonest = Some(soonest.map_or(left, |s| s.min(left)));
            }
        }
        if let Some((pos, id, ran)) = overdue {
            self.copy(pos, idle, id, ran);
        }
        soonest
    }

    /// Sends the rest of batch `id` (from its first job not answered
    /// yet), running on worker `pos` for `ran`, to idle worker `idle` too.
    fn copy(&mut self, pos: usize, idle: usize, id: u64, ran: Duration) {
        let Some(b) = self.batches.get(&id) else {
            return;
        };
        let base = b.answered();
        let Ok(frame) = b.extra.part(base, b.len - base) else {
            return; // no copy: the original runs on
        };
        if self.retry.verbose {
            eprintln!(
                "[parjob] speculating task `{}` on item {}: running for {ran:?}, a copy starts on worker {}",
                b.task,
                b.first + base,
                self.pool.workers[idle].pid
            );
        }
        let (decode, segments) = ((b.decode, b.extra.packed), b.extra.shared.segments.clone());
        self.traced_send(idle, id, &frame, decode, &segments);
        if let Some(t) = &self.tracing {
            t.trace.copied();
        }
        let copy = Copy {
            original: self.pool.workers[pos].id,
            copy: self.pool.workers[idle].id,
            base,
            frame,
        };
        self.speculation.copies.insert(id, copy);
        self.speculation.ever_copied.insert(id);
        self.speculation.copied += 1;
    }

    /// Worker `worker` answered batch `id` first: if the batch had a copy,
    /// the other worker is stopped and its queued batches go elsewhere;
    /// when the copy won, the batch goes on as the copy's part.
    pub(super) fn settle_copy(&mut self, id: u64, worker: u64) {
        let Some((loser, adopted)) = self.speculation.answered_by(id, worker) else {
            return;
        };
        self.adopt(id, adopted);
        if let Some(pos) = self.pool.position(loser) {
            self.drop_copy_worker(pos, id);
        }
    }

    /// Batch `id` goes on as the copy's part, when `adopted` says so.
    fn adopt(&mut self, id: u64, adopted: Adopted) {
        if let (Some((base, frame)), Some(b)) = (adopted, self.batches.get_mut(&id)) {
            b.extra.span = b.len - base;
            b.extra.base = base;
            b.extra.frame = frame;
        }
    }

    /// Kills and reaps worker `pos`, which ran a copy of batch `id`, and
    /// sends the batches queued behind it elsewhere.
    fn drop_copy_worker(&mut self, pos: usize, id: u64) {
        let mut w = self.pool.workers.swap_remove(pos);
        let _ = w.child.kill();
        let _ = w.child.wait();
        let mut queue = std::mem::take(&mut w.queue);
        queue.retain(|&queued| queued != id);
        self.requeue(queue);
    }

    /// Sends the batches a stopped copy's worker held besides the copy
    /// (none of them started: its running one was the copy) to other
    /// workers; a batch no worker can take fails.
    pub(super) fn requeue(&mut self, queue: impl IntoIterator<Item = u64>) {
        for id in queue {
            self.place_or_fail(id, "a stopped copy's batch");
        }
    }

    /// Worker `pos` is gone (dead or timed out) while running batch `id`
    /// that has a copy on another worker: it is reaped, the batches queued
    /// behind go elsewhere, and the copy runs on. False when `id` had no
    /// copy, so the loss is the batch's failure.
    pub(super) fn lost_copy(&mut self, pos: usize, id: u64) -> bool {
        let worker = self.pool.workers[pos].id;
        let Some(adopted) = self.speculation.lost(id, worker) else {
            return false;
        };
        self.adopt(id, adopted);
        self.drop_copy_worker(pos, id);
        true
    }

    /// The line `verbose` prints at the end of a speculated run.
    pub(super) fn speculation_report(&self) -> Option<String> {
        self.speculate?;
        let s = &self.speculation;
        Some(crate::backend::durations::speculation_report(
            s.copied,
            s.copies_won,
        ))
    }
}
