//! A process session's part of a traced run (`trace = "run.json"`).
//!
//! Worker processes time their own jobs on the host's monotonic clock,
//! which the parent shares, and send the times before each batch's `Done`
//! (a `Times` frame, asked for by the `Run` frame's `timed` flag). The
//! session puts them on the worker's track, with the outcome of each job
//! that failed, and records what only it sees: each frame sent (its bytes
//! and how long the send took), each batch's results coming back, workers
//! starting, dying and being replaced, the shared-memory segments its
//! frames referenced, and each worker's resident memory.

use super::recorder::Recorder;
use super::session::ProcessSession;
use super::{send, Decoder, Worker};
use crate::error::Error;
use crate::shm::Segment;
use crate::task::{AnyOutput, Work};
use crate::trace::{now_ns, Direction, JobTimes, Outcome, Trace, Track};
use std::sync::Arc;
use std::time::Duration;

impl<W: Work> ProcessSession<W> {
    /// Starts recording this session into `trace`.
    pub(super) fn start_tracing(&mut self, trace: &Arc<Trace>) {
        self.tracing = Some(Recorder::new(trace));
        self.trace_workers();
    }

    /// Records each worker not seen before: its start, or the start of a
    /// dead worker's replacement. A worker kept from an earlier run shows
    /// at the run's start.
    fn trace_workers(&mut self) {
        let Some(t) = self.tracing.as_mut() else {
            return;
        };
        for w in &self.pool.workers {
            if !t.workers.insert(w.pid) {
                continue;
            }
            let detail = if t.unreplaced > 0 {
                t.unreplaced -= 1;
                format!("pid {}, replacing a worker that died", w.pid)
            } else {
                format!("pid {}", w.pid)
            };
            t.trace
                .instant(Track::Process(w.pid), "worker start", detail);
        }
    }

    /// Sends batch `id`'s `frame` to worker `pos` ([`send`]), recording
    /// the send's span and bytes, and the segments it references.
    pub(super) fn traced_send(
        &mut self,
        pos: usize,
        id: u64,
        frame: &Arc<Vec<u8>>,
        decode: (Decoder<W::Output>, Option<Decoder<AnyOutput>>),
        segments: &[Arc<Segment>],
    ) {
        let started = self.tracing.as_ref().map(|_| now_ns());
        send(&mut self.pool.workers[pos], id, frame, decode, segments);
        let Some(started) = started else {
            return;
        };
        self.trace_workers();
        let pid = self.pool.workers[pos].pid;
        let Some(t) = self.tracing.as_mut() else {
            return;
        };
        let span = (started, now_ns());
        let track = Track::Process(pid);
        t.trace
            .transfer(track, Direction::Send, span, frame.len() as u64);
        for segment in segments {
            let len = segment.bytes().len() as u64;
            t.trace.shared(len);
            if t.segments.insert(segment.id()) {
                let detail = format!("segment {} of {len} bytes", segment.id());
                t.trace
                    .instant(Track::Scheduler, "shared memory segment", detail);
            }
        }
    }

    /// A result of `bytes` came back for batch `id`.
    pub(super) fn trace_value(&mut self, id: u64, bytes: usize) {
        if let Some(t) = self.tracing.as_mut() {
            let entry = t.returned.entry(id).or_insert_with(|| (now_ns(), 0));
            entry.1 += bytes as u64;
        }
    }

    /// How long the session may wait for an event: under `trace`, no
    /// longer than until memory is due to be sampled again.
    pub(super) fn sampling(&self, left: Option<Duration>) -> Option<Duration> {
        match (&self.tracing, left) {
            (None, left) => left,
            (Some(_), Some(left)) => Some(left.min(crate::trace::SAMPLE_EVERY)),
            (Some(_), None) => Some(crate::trace::SAMPLE_EVERY),
        }
    }

    /// Worker `worker` says when batch `id`'s jobs, from job `seq`, ran.
    pub(super) fn trace_times(
        &mut self,
        worker: u64,
        id: u64,
        seq: u64,
        start: u64,
        ends: Vec<u64>,
    ) {
        let Some(pos) = self.pool.position(worker) else {
            return;
        };
        let track = Track::Process(self.pool.workers[pos].pid);
        let (task, attempt) = match self.batches.get(&id) {
            Some(b) => (b.task, b.extra.attempts),
            None => return,
        };
        let copy = self
            .speculation
            .copies
            .get(&id)
            .is_some_and(|c| c.copy == worker);
        let Some(t) = self.tracing.as_mut() else {
            return;
        };
        let times = JobTimes {
            task,
            track,
            first: seq as usize,
            batch: id,
            start,
            ends,
            attempt,
            copy,
            failed: t.failed.remove(&id).unwrap_or_default(),
        };
        t.trace.jobs(Box::new(times));
        if let Some((first, bytes)) = t.returned.remove(&id) {
            t.trace
                .transfer(track, Direction::Return, (first, now_ns()), bytes);
        }
    }

    /// Worker `w` was stopped or died, running job `index` of `task` (for
    /// as long as its beacon says, which outlives it), with `error`.
    pub(super) fn trace_stop(
        &mut self,
        w: &Worker,
        running: Option<(usize, &'static str)>,
        error: &Error,
    ) {
        let ran = w.beacon.running().map(|(_, ran)| ran);
        let attempt = w
            .queue
            .front()
            .and_then(|id| self.batches.get(id))
            .map_or(1, |b| b.extra.attempts);
        let Some(t) = self.tracing.as_mut() else {
            return;
        };
        t.unreplaced += 1;
        let track = Track::Process(w.pid);
        t.trace.instant(track, "worker death", error.to_string());
        if let Some((index, task)) = running {
            let now = now_ns();
            let start = now.saturating_sub(ran.unwrap_or_default().as_nanos() as u64);
            t.trace.job(
                track,
                task,
                index,
                (start, now),
                Outcome::of(error),
                attempt,
            );
        }
    }

    /// Samples each worker's resident memory, at most every
    /// [`crate::trace::SAMPLE_EVERY`].
    pub(super) fn trace_memory(&self) {
        let Some(t) = self.tracing.as_ref().filter(|t| t.trace.sample_due()) else {
            return;
        };
        for w in &self.pool.workers {
            if let Some(reading) = w.memory.last() {
                t.trace.counter(Track::Process(w.pid), "rss", reading.rss);
            }
        }
    }
}
