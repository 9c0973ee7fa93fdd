//! One run's use of a process pool: batches sent to workers, their
//! answers matched to them, and the failures a run can meet on the way:
//! a job's panic or codec error (that job's result), a timeout, or a
//! worker that died (the run's error, naming the job it was running). A
//! worker that died before it began its first batch ran none of it: its
//! batches are sent once more, elsewhere.
//!
//! # Where a batch waits
//! A batch goes to an idle worker when there is one. A second batch is
//! queued behind a running one (so the worker does not sit idle while
//! the next crosses the pipe) only when the running batch is predicted to
//! end within [`PREFETCH_WINDOW`], by the smoothed time per job of this
//! run's finished batches. Such a batch is *offered*: when another worker
//! goes idle first, the session takes it back and sends it there, unless
//! the worker has claimed it already (one compare-and-swap on the
//! worker's beacon decides). So no job waits behind a slow one while a
//! worker is idle: see `docs/decisions.md`, "A job waits only for an idle
//! worker".

use super::encode::{encode_batch, sub_frame, Encoded, Outgoing};
use super::lease::Lease;
use super::reader::Event;
use super::{Worker, BATCH_TARGET};
use crate::backend::in_flight::Problem;
use crate::backend::process::worker;
use crate::backend::{Batch, Finished, LongestRunning, Session};
use crate::error::{Error, Result};
use crate::options::BackendSource;
use crate::shm::Collected;
use crate::task::{AnyOutput, Decoder, Work};
use crate::wire::{self, ToWorker};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a process session keeps of a batch besides its answers.
pub(super) struct Sent {
    /// The encoded batch, kept until it is answered, to send it to another
    /// worker if its own dies before starting it.
    pub(super) frame: Arc<Vec<u8>>,
    /// Whether it was sent again already (a batch is re-sent once).
    pub(super) resent: bool,
    /// The shared-memory segments its arguments reference, and the output
    /// chunks they lend, held until the batch is answered.
    pub(super) shared: Collected,
    /// How many calls it makes (a pool's chunk is one job of many calls).
    pub(super) items: usize,
    /// How many times it has been sent to run (a retry sends it again).
    pub(super) attempts: u32,
    /// How many of its attempts killed their worker (a death, or the
    /// memory limit): after two, it runs alone.
    pub(super) kills: u32,
    /// The frame of the whole batch. `frame` is the current attempt's:
    /// the same, unless a retry sent one job of it again (then the jobs
    /// after it follow in a frame of their own).
    pub(super) whole: Arc<Vec<u8>>,
    /// The jobs before the current attempt's first (answered already),
    /// and how many jobs the current attempt holds.
    pub(super) base: usize,
    pub(super) span: usize,
    /// Under "continue": the job after the current attempt whose failure
    /// was reported already (`continuing.rs`).
    pub(super) skip: Option<usize>,
    /// Packed as one chunk: the decoder of its one answer, which holds
    /// every job's value (`Work::pack`).
    pub(super) packed: Option<Decoder<AnyOutput>>,
}

impl Sent {
    /// The frame of the batch's jobs `from..from + count`: the current
    /// attempt's when it is that, else cut from the whole batch's.
    pub(super) fn part(&self, from: usize, count: usize) -> Result<Arc<Vec<u8>>> {
        if (self.base, self.span) == (from, count) {
            return Ok(Arc::clone(&self.frame));
        }
        Ok(Arc::new(sub_frame(&self.whole, from, count)?))
    }

    /// Makes jobs `from..from + count` the batch's current attempt: what
    /// a retry, the rest after one, and "continue" past a failure send.
    pub(super) fn cut(&mut self, from: usize, count: usize) -> Result<()> {
        self.frame = self.part(from, count)?;
        (self.base, self.span) = (from, count);
        Ok(())
    }
}

/// A batch on its way through a worker.
pub(super) type InFlight<R> = crate::backend::in_flight::InFlight<R, Sent>;

/// A batch is queued behind a running one only when that one is
/// predicted to end within this long: the time a short batch's round trip
/// would cost the worker, kept small, so that a misprediction costs little.
pub(crate) const PREFETCH_WINDOW: Duration = Duration::from_millis(8);

/// One run's use of a process pool.
pub(crate) struct ProcessSession<W: Work> {
    pub(super) pool: Lease,
    pub(super) batches: HashMap<u64, InFlight<W::Output>>,
    /// Batches finished without a worker (work that cannot cross, encode
    /// failures).
    pub(super) here: VecDeque<Finished<W::Output>>,
    pub(super) timeout: Option<Duration>,
    /// Where the process backend came from, for the error about work that
    /// cannot cross.
    backend_from: BackendSource,
    /// The run's `max_nbytes`, which the workers apply to results.
    max_nbytes: Option<u64>,
    /// The time per job of this run's finished batches, smoothed, in
    /// nanoseconds: what predicts when a running batch ends.
    per_job_ns: Option<f64>,
    /// `on_error = "continue"`: a dead or timed-out worker fails only the
    /// batches it held, and the run goes on.
    pub(super) keep_going: bool,
    /// `retries`, `retry_panics`, and whether to say each retry
    /// (`verbose`).
    pub(super) retry: super::retry::Retry,
    /// Print each worker's peak memory when the run ends.
    report_peaks: bool,
    /// `speculate`'s multiplier, when it is on.
    pub(super) speculate: Option<u32>,
    /// The jobs' durations and copies of a speculated run.
    pub(super) speculation: super::speculation::Speculation,
    /// Retried jobs that must run alone, waiting for an idle worker.
    pub(super) solo_pending: VecDeque<u64>,
    /// Under `trace`, what the session records (`traced.rs`).
    pub(super) tracing: Option<super::recorder::Recorder>,
}

impl<W: Work> ProcessSession<W> {
    /// The session, where a job whose worker died or timed out (or, with
    /// `retry.panics`, that panicked) runs again, up to `retry.retries`
    /// more times.
    pub(crate) fn retrying(mut self, retry: super::retry::Retry) -> Self {
        self.retry = retry;
        self
    }

    /// The session under `max_worker_memory` (the pool's memory watch
    /// takes the limit now, and forgets earlier runs' peaks).
    pub(crate) fn memory(mut self, rules: super::MemoryRules) -> Self {
        self.pool.memory.start_run(rules.limit);
        self.report_peaks = rules.report_peaks;
        if let Some(limit) = rules.limit.filter(|_| rules.say_how) {
            eprintln!(
                "[parjob] max_worker_memory = {}, held by {}",
                crate::error::human_bytes(limit),
                super::cgroup::mechanism()
            );
        }
        self
    }

    /// The session, where a job late by `k` times its task's median gets a
    /// copy on an idle worker (`speculate`).
    pub(crate) fn speculating(mut self, k: Option<u32>) -> Self {
        self.speculate = k;
        self
    }

    /// The session, where a worker's death or timeout fails only its own
    /// batches when `keep_going` (`on_error = "continue"`).
    pub(crate) fn keep_going(mut self, keep_going: bool) -> Self {
        self.keep_going = keep_going;
        self
    }

    pub(crate) fn new(
        mut pool: Lease,
        timeout: Option<Duration>,
        backend_from: BackendSource,
        max_nbytes: Option<u64>,
    ) -> Result<Self> {
        if worker::entry().is_none() {
            return Err(Error::NoWorkerEntry);
        }
        // A run that ended by unwinding may have left work queued; those
        // workers' answers belong to nobody.
        pool.kill_busy();
        pool.deferred.clear();
        Ok(ProcessSession {
            pool,
            batches: HashMap::new(),
            here: VecDeque::new(),
            timeout,
            backend_from,
            max_nbytes,
            per_job_ns: None,
            keep_going: false,
            retry: super::retry::Retry::default(),
            report_peaks: false,
            speculate: None,
            speculation: Default::default(),
            solo_pending: VecDeque::new(),
            tracing: None,
        })
    }

    /// The worker the next batch goes to: an idle one, else one whose
    /// running batch is predicted to end soon.
    pub(super) fn least_loaded(&self) -> Option<usize> {
        self.least_loaded_where(|w| w.queue.is_empty() || self.ends_soon(w))
    }

    /// The least loaded worker with room under the pool's rules that is
    /// idle or may be offered a batch, whatever its prediction says.
    fn offerable(&self) -> Option<usize> {
        self.least_loaded_where(|w| w.queue.is_empty() || w.beacon.may_offer())
    }

    /// The least loaded worker with room under the pool's rules, whatever
    /// it is running: for a dead worker's batches, which must go somewhere.
    pub(super) fn any_room(&self) -> Option<usize> {
        self.least_loaded_where(|_| true)
    }

    /// The least loaded worker with room under the pool's rules for which
    /// `also` holds.
    fn least_loaded_where(&self, also: impl Fn(&Worker) -> bool) -> Option<usize> {
        self.pool
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| self.pool.may_take(w) && also(w))
            .min_by_key(|(_, w)| w.queue.len())
            .map(|(i, _)| i)
    }

    /// Whether a batch may be queued behind worker `w`'s running batch:
    /// no offer of `w`'s is outstanding, and its running batch is predicted
    /// to end within [`PREFETCH_WINDOW`] and has not overrun that
    /// prediction. Without a prediction yet (the run's first batches), no.
    fn ends_soon(&self, w: &Worker) -> bool {
        let Some(per_job) = self.per_job_ns else {
            return false;
        };
        if !w.beacon.may_offer() {
            return false;
        }
        let Some(running) = w.queue.front().and_then(|id| self.batches.get(id)) else {
            return true;
        };
        let window = PREFETCH_WINDOW.as_nanos() as f64;
        let left = (running.len - running.answered()) as f64 * per_job;
        let overrun = w
            .beacon
            .running()
            .is_some_and(|(_, ran)| ran.as_nanos() as f64 > 4.0 * per_job + window / 8.0);
        left <= window && !overrun
    }

    /// Worker `idle` has nothing left to run: it takes the batch offered
    /// behind another worker's running one, if that worker has not claimed
    /// it yet.
    fn take_back_for(&mut self, idle: usize) {
        if !self.pool.workers[idle].queue.is_empty()
            || !self.pool.may_take(&self.pool.workers[idle])
        {
            return;
        }
        let mut victims: Vec<usize> = (0..self.pool.workers.len())
            .filter(|&k| k != idle && self.pool.workers[k].queue.len() >= 2)
            .collect();
        // The worker whose running job has run longest first: the likeliest straggler.
        victims.sort_by_key(|&k| {
            std::cmp::Reverse(self.pool.workers[k].beacon.running().map(|(_, ran)| ran))
        });
        for k in victims {
            let victim = &mut self.pool.workers[k];
            let id = *victim.queue.back().expect("two batches queued");
            if !victim.beacon.take_back(id) {
                continue;
            }
            victim.queue.pop_back();
            self.send_kept(idle, id);
            return;
        }
    }

    /// Reports a batch that ended without its worker's answer.
    pub(super) fn finished_here(&mut self, done: Finished<W::Output>) {
        self.here.push_back(done);
    }

    /// Ends batch `id`, the oldest on worker `pos`.
    pub(super) fn finish(&mut self, pos: usize, id: u64, elapsed: Duration) -> Finished<W::Output> {
        let batch = self.batches.remove(&id).expect("the batch was looked up");
        if self.speculate.is_some() && batch.complete() {
            self.speculation
                .durations
                .record(batch.task, batch.len, elapsed);
        }
        if batch.complete() && batch.len > 0 {
            let per_job = elapsed.as_nanos() as f64 / batch.len as f64;
            self.per_job_ns = Some(match self.per_job_ns {
                Some(before) => 0.5 * before + 0.5 * per_job,
                None => per_job,
            });
        }
        let forget = self.pool.rules.forget_when_idle;
        let w = &mut self.pool.workers[pos];
        w.queue.pop_front();
        w.batches_done += 1;
        let (done, sent) = batch.finish(elapsed, |b| {
            b.error(Problem::Desync(format!(
                "the worker ended the batch after {} of its {} jobs",
                b.values(),
                b.len
            )))
        });
        w.items_done += sent.items;
        if forget && w.queue.is_empty() {
            forget_segments(w);
        }
        self.take_back_for(pos);
        self.pool.retire_if_spent(pos);
        done
    }
}

impl<W: Work> ProcessSession<W> {
    /// Whether batches go packed, one chunk each (`Work::pack`): only
    /// where nothing needs a job's own answer or clock while its batch
    /// runs, so not under `timeout`, `retries`, `speculate`, `on_error =
    /// "continue"` or a pool's rules. (Under `trace` the worker times each
    /// call of a packed chunk.)
    fn packs(&self) -> bool {
        self.timeout.is_none()
            && !self.keep_going
            && self.retry.retries == 0
            && self.speculate.is_none()
            && !self.pool.rules.isolate_deaths
    }
}

impl<W: Work> Session<W> for ProcessSession<W> {
    fn has_room(&self) -> bool {
        self.pool.workers.len() < self.pool.n_jobs || self.least_loaded().is_some()
    }

    fn submit(&mut self, batch: Batch<W>) -> Result<()> {
        let mut encoded = match encode_batch(batch, self.backend_from, self.packs()) {
            Outgoing::Empty => return Ok(()),
            Outgoing::Failed(failed) => {
                self.here.push_back(failed);
                return Ok(());
            }
            Outgoing::Ready(encoded) => encoded,
        };
        self.pool.fill()?;
        let id = self.pool.fresh_id();
        let timed = self.tracing.is_some();
        let frame = match encoded.run_frame(id, self.max_nbytes, timed) {
            Ok(frame) => Arc::new(frame),
            Err(e) => {
                self.here.push_back(encoded.failed(e));
                return Ok(());
            }
        };
        let Encoded {
            first,
            jobs,
            items,
            task,
            decode,
            packed,
            shared,
            ..
        } = encoded;
        // The prediction `has_room` used may have lapsed since (a running
        // job overran it). The batch then still goes where it can be
        // offered, so an idle worker can take it back; failing that (every
        // busy worker's last offer is not claimed yet), it queues plainly
        // behind the least loaded worker. `has_room` promised a worker
        // with room, and `fill` keeps the pool's workers ready, so the
        // error is for a broken promise, never a panic.
        let pos = self
            .least_loaded()
            .or_else(|| self.offerable())
            .or_else(|| self.any_room())
            .ok_or_else(|| Error::Pool("no worker could take a batch it was promised".into()))?;
        let w = &self.pool.workers[pos];
        if !w.queue.is_empty() && w.beacon.may_offer() {
            w.beacon.offer(id);
        }
        self.traced_send(pos, id, &frame, (decode, packed), &shared.segments);
        self.batches.insert(
            id,
            InFlight::new(
                first,
                jobs,
                task,
                decode,
                Sent {
                    whole: frame.clone(),
                    frame,
                    resent: false,
                    shared,
                    items,
                    attempts: 1,
                    kills: 0,
                    base: 0,
                    span: jobs,
                    skip: None,
                    packed,
                },
            )
            .keeping_going(self.keep_going),
        );
        Ok(())
    }

    fn wait(&mut self, patience: Option<Duration>) -> Result<Option<Finished<W::Output>>> {
        if let Some(done) = self.here.pop_front() {
            return Ok(Some(done));
        }
        let deadline = patience.map(|p| Instant::now() + p);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(None);
            }
            if !self.solo_pending.is_empty() {
                self.pool.fill()?;
                self.place_solo();
            }
            // Under `speculate`, wake when a running job could be overdue.
            let left = match (left, self.speculate_stragglers()) {
                (Some(l), Some(s)) => Some(l.min(s)),
                (l, s) => l.or(s),
            };
            let left = self.sampling(left);
            let finished = match self.next_event(left)? {
                // Nothing came, or a worker was stopped and its batches
                // ended here.
                None => {
                    self.trace_memory();
                    self.here.pop_front()
                }
                Some(Event::Frame { worker, payload }) => self
                    .answer(worker, Err(payload))
                    .or_else(|| self.here.pop_front()),
                Some(Event::Value {
                    worker,
                    batch,
                    value,
                    bytes,
                }) => {
                    self.trace_value(batch, bytes);
                    self.answer(worker, Ok((batch, value)))
                        .or_else(|| self.here.pop_front())
                }
                Some(Event::Closed { worker, error }) => {
                    self.closed(worker, error)?;
                    self.here.pop_front()
                }
            };
            if let Some(done) = finished {
                self.trace_memory();
                self.pool.last_used = Instant::now();
                return Ok(Some(done));
            }
        }
    }
    fn longest_running(&self) -> Option<LongestRunning> {
        self.pool
            .workers
            .iter()
            .filter_map(|w| {
                let (_, ran) = w.beacon.running()?;
                let (index, task) = self.running_job(w)?;
                Some(LongestRunning {
                    task,
                    index,
                    running_for: ran,
                    pid: Some(w.pid),
                })
            })
            .max_by_key(|l| l.running_for)
    }

    fn worker_pids(&self) -> Vec<u32> {
        self.pool.pids()
    }

    fn cancel(&mut self) {
        self.pool.kill_busy();
        self.batches.clear();
        self.here.clear();
    }

    fn set_trace(&mut self, trace: &Arc<crate::trace::Trace>) {
        self.start_tracing(trace);
    }

    fn batch_target(&self) -> Duration {
        BATCH_TARGET
    }
}

impl<W: Work> Drop for ProcessSession<W> {
    /// The run is over: each worker drops the segments it was passed (the
    /// frame is queued, never blocking), so an idle pool holds no shared
    /// memory.
    fn drop(&mut self) {
        for w in &mut self.pool.workers {
            forget_segments(w);
        }
        if let Some(line) = self.speculation_report().filter(|_| self.retry.verbose) {
            eprintln!("{line}");
        }
        if self.report_peaks {
            let peaks: Vec<String> = self
                .pool
                .workers
                .iter()
                .map(|w| {
                    format!(
                        "{} {}",
                        w.pid,
                        crate::error::human_bytes(w.memory.peak_now())
                    )
                })
                .collect();
            eprintln!(
                "[parjob] peak memory of each worker (pid, peak): {}",
                peaks.join(", ")
            );
        }
    }
}

/// Tells worker `w` to drop the segments it was passed (the frame is
/// queued, never blocking).
fn forget_segments(w: &mut Worker) {
    if w.segments.is_empty() {
        return;
    }
    let segments: Vec<u64> = w.segments.drain().collect();
    if let Ok(frame) = wire::encode_frame(&ToWorker::Forget { segments }) {
        w.frames.send(Arc::new(frame));
    }
}

impl<W: Work> ProcessSession<W> {
    /// Whether worker `pid` of this session has exited (it may not be
    /// reaped yet).
    pub(crate) fn has_exited(&self, pid: u32) -> bool {
        self.pool
            .workers
            .iter()
            .find(|w| w.pid == pid)
            .is_none_or(|w| w.watch.has_exited())
    }

    /// Sends `signal` to worker `pid` while this session still holds it
    /// (so it is not reaped, and its pid cannot have been reused); false
    /// once it is gone.
    pub(crate) fn signal_worker(&self, pid: u32, signal: libc::c_int) -> bool {
        let held = self.pool.workers.iter().any(|w| w.pid == pid);
        if held {
            // SAFETY: kill(2) on our own child, which is not reaped while
            // the pool holds it.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
        }
        held
    }

    /// Closes worker `pid`'s pipe so it exits, waits up to `grace` (then
    /// kills it), reaps it, and says how it ended.
    pub(crate) fn close_worker(&mut self, pid: u32, grace: Duration) -> Option<String> {
        let pos = self.pool.workers.iter().position(|w| w.pid == pid)?;
        let w = self.pool.workers.swap_remove(pos);
        let super::Worker {
            mut child,
            watch,
            frames,
            ..
        } = w;
        drop(frames);
        if !watch.wait_exit(grace) {
            let _ = child.kill();
        }
        Some(super::exit::reap(&mut child, &watch))
    }

    /// Stops every worker (SIGTERM, then SIGKILL after `grace`); what was
    /// in flight is dropped.
    pub(crate) fn terminate(&mut self, grace: Duration) {
        self.pool.terminate(grace);
        self.batches.clear();
        self.here.clear();
    }
}
