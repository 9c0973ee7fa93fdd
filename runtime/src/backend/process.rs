//! The process backend: re-executed worker processes that find tasks by name.
//!
//! # Life of a worker
//! 1. **Spawn.** Two `O_CLOEXEC` pipes and a beacon `memfd` are made. The
//!    child's three descriptors are made inheritable in the forked child
//!    only, so no other process ever holds them. The child is
//!    `/proc/self/exe`, never a path that a rebuild could replace. It is
//!    started from one long-lived spawner thread, because `PR_SET_PDEATHSIG`
//!    fires when the *thread* that forked exits. Before `exec`, the child
//!    checks that its parent is still alive.
//! 2. **Handshake.** The worker's first frame is a [`Hello`]: magic,
//!    protocol version and registry fingerprint. A mismatch, or no hello
//!    within [`HELLO_TIMEOUT`], kills it and fails the run with a reason.
//! 3. **Serve.** A batch is one frame each way. At most [`DEPTH`] batches
//!    are queued on a worker. Each worker has a reader thread that forwards
//!    its frames to one channel for the whole pool. The worker writes the
//!    running job's sequence number and start time to its beacon. That is
//!    how per-task timeouts are enforced, and how a crash is pinned on the
//!    exact job of a batch.
//! 4. **End.** A reader that sees end-of-file reports the worker closed.
//!    The pool reaps it, and the job it was running fails with its exit
//!    status or signal. Cancelling kills the busy workers. Dropping the pool
//!    closes the pipes, so idle workers exit at once; busy ones are killed.
//!    If the parent dies first, the kernel kills the workers
//!    (`PR_SET_PDEATHSIG`), and their reads see EOF.

use super::{panic_error, Batch, Finished, Session};
use crate::beacon::Beacon;
use crate::error::{Error, Result};
use crate::ipc::{self, Bytes, Failure, FromWorker, Hello, Incoming, ToWorker};
use crate::task::{Decoder, Work};
use crate::worker::{self, Entry, ENV_WORKER};
use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How many batches may be queued on one worker: one running, one waiting,
/// so a worker never idles while the parent sends the next.
pub(crate) const DEPTH: usize = 2;
/// How long a new worker has to say hello.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(60);
/// Auto-batching aims for batches of this length on processes: a batch
/// costs about 20 us (two pipe hops and two wake-ups), so this keeps the
/// overhead near 0.5% while the tail stays short.
pub(crate) const BATCH_TARGET: Duration = Duration::from_millis(4);
/// The thread-count variables a worker gets (DESIGN.md decision 6).
pub const THREAD_ENV_VARS: [&str; 5] = [
    "RAYON_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "POLARS_MAX_THREADS",
];

/// A result decoded by a reader thread, its type erased for the channel.
type Decoded = std::result::Result<Box<dyn Any + Send>, crate::codec::CodecError>;

/// Decodes one result of a batch straight from a worker's pipe.
type ErasedDecoder = Box<dyn Fn(&mut dyn io::Read) -> Decoded + Send>;

enum Event {
    /// A result, decoded in the reader thread (no copy of the frame).
    Value { worker: u64, value: Decoded },
    /// Any other frame.
    Frame { worker: u64, payload: Vec<u8> },
    /// The worker's pipe closed: it exited or was killed.
    Closed {
        worker: u64,
        error: Option<io::Error>,
    },
}

struct Worker {
    id: u64,
    pid: u32,
    child: Child,
    to_child: File,
    /// The decoders of the batches sent, in order, for the reader thread.
    decoders: Sender<ErasedDecoder>,
    beacon: Beacon,
    ready: bool,
    /// Batch ids sent and not yet answered, oldest first.
    queue: VecDeque<u64>,
}

/// A pool of worker processes, kept between runs.
pub(crate) struct Processes {
    n_jobs: usize,
    workers: Vec<Worker>,
    events_tx: Sender<Event>,
    events: Receiver<Event>,
    /// Events of running workers that arrived while new ones said hello.
    deferred: VecDeque<Event>,
    next_id: u64,
    pub(crate) last_used: Instant,
}

impl Processes {
    /// A pool of `n_jobs` workers, started on first use.
    pub(crate) fn new(n_jobs: usize) -> Self {
        let (events_tx, events) = mpsc::channel();
        Processes {
            n_jobs,
            workers: Vec::new(),
            events_tx,
            events,
            deferred: VecDeque::new(),
            next_id: 0,
            last_used: Instant::now(),
        }
    }

    pub(crate) fn n_jobs(&self) -> usize {
        self.n_jobs
    }

    /// The pids of the live workers.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.workers.iter().map(|w| w.pid).collect()
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Drops idle workers that have exited since they last answered (the
    /// OOM killer, an operator's `kill`), so no job is sent to them and
    /// blamed for their death.
    fn reap_exited_idle(&mut self) {
        self.workers.retain_mut(|w| {
            let exited = w.queue.is_empty() && !matches!(w.child.try_wait(), Ok(None));
            !exited
        });
    }

    /// Starts workers until there are `n_jobs`, and waits for their hellos.
    fn fill(&mut self) -> Result<()> {
        self.reap_exited_idle();
        let Some(entry) = worker::entry() else {
            return Err(Error::NoWorkerEntry);
        };
        if self.workers.len() >= self.n_jobs {
            return Ok(());
        }
        let share = (crate::config::cpu_count() / self.n_jobs).max(1);
        while self.workers.len() < self.n_jobs {
            let id = self.fresh_id();
            let beacon = Beacon::shared().map_err(|e| Error::io("making a worker beacon", e))?;
            let (child, to_child, from_child) = spawn(&entry, share, &beacon)?;
            let tx = self.events_tx.clone();
            let pid = child.id();
            let (decoders, decoders_rx) = mpsc::channel();
            std::thread::Builder::new()
                .name(format!("parjob-reader-{pid}"))
                .spawn(move || read_frames(id, from_child, decoders_rx, tx))
                .map_err(|e| Error::io("starting a reader thread", e))?;
            self.workers.push(Worker {
                id,
                pid,
                child,
                to_child,
                decoders,
                beacon,
                ready: false,
                queue: VecDeque::new(),
            });
        }
        let deadline = Instant::now() + HELLO_TIMEOUT;
        let ours = Hello::current();
        while let Some(waiting) = self.workers.iter().find(|w| !w.ready).map(|w| w.pid) {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = match self.events.recv_timeout(left) {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout) => {
                    self.kill_all();
                    return Err(Error::Handshake(format!(
                        "worker {waiting} did not say hello within {HELLO_TIMEOUT:?}: \
                         does `main` start with #[parjob::main] or parjob::init()?"
                    )));
                }
                Err(RecvTimeoutError::Disconnected) => unreachable!("the pool holds a sender"),
            };
            let (Event::Frame { worker, .. }
            | Event::Value { worker, .. }
            | Event::Closed { worker, .. }) = &event;
            match self.position(*worker) {
                // A new worker's event: handled here.
                Some(pos) if !self.workers[pos].ready => {}
                // A running worker's: kept, in order, for the session.
                Some(_) => {
                    self.deferred.push_back(event);
                    continue;
                }
                None => continue,
            }
            match event {
                Event::Frame { worker, payload } => {
                    let Some(pos) = self.position(worker) else {
                        continue;
                    };
                    let hello = match ipc::parse_from_worker(&payload) {
                        Ok(FromWorker::Hello(h)) => h.check(&ours),
                        Ok(other) => Err(format!("expected a hello, got {other:?}")),
                        Err(e) => Err(format!("unreadable hello: {e}")),
                    };
                    if let Err(why) = hello {
                        self.kill_all();
                        return Err(Error::Handshake(why));
                    }
                    self.workers[pos].ready = true;
                }
                Event::Value { .. } => continue,
                Event::Closed { worker, .. } => {
                    let Some(pos) = self.position(worker) else {
                        continue;
                    };
                    let mut w = self.workers.swap_remove(pos);
                    let status = describe(w.child.wait());
                    self.kill_all();
                    return Err(Error::Handshake(format!(
                        "worker {} {status} before its hello",
                        w.pid
                    )));
                }
            }
        }
        Ok(())
    }

    fn position(&self, worker: u64) -> Option<usize> {
        self.workers.iter().position(|w| w.id == worker)
    }

    /// Kills every worker that still holds work, and reaps it.
    pub(crate) fn kill_busy(&mut self) {
        let (busy, idle): (Vec<Worker>, Vec<Worker>) =
            self.workers.drain(..).partition(|w| !w.queue.is_empty());
        self.workers = idle;
        for w in busy {
            kill(w);
        }
    }

    fn kill_all(&mut self) {
        for w in self.workers.drain(..) {
            kill(w);
        }
    }
}

fn kill(mut w: Worker) {
    let _ = w.child.kill();
    let _ = w.child.wait();
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.kill_busy();
        // Closing the pipe ends an idle worker's loop.
        let mut children: Vec<Child> = self.workers.drain(..).map(|w| w.child).collect();
        let deadline = Instant::now() + Duration::from_secs(2);
        for child in &mut children {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A batch on its way through a worker.
struct InFlight<R> {
    first: usize,
    len: usize,
    task: &'static str,
    decode: Decoder<R>,
    /// How many jobs have answered.
    answered: usize,
    /// Values of the jobs answered before any failure, in order.
    values: Vec<R>,
    /// The first job that failed.
    failure: Option<Error>,
    /// The encoded batch, kept until it is answered, to send it to another
    /// worker if its own dies before starting it.
    frame: Vec<u8>,
    /// Whether it was sent again already (a batch is re-sent once).
    resent: bool,
}

/// What one frame from a worker means for its batch.
enum Step<R> {
    Value(R),
    Fail(Error),
    Done(Duration),
    Desync(Error),
}

/// One run's use of a process pool.
pub(crate) struct ProcessSession<W: Work> {
    pool: Processes,
    batches: HashMap<u64, InFlight<W::Output>>,
    /// Batches finished without a worker (closures, encode failures).
    here: VecDeque<Finished<W::Output>>,
    timeout: Option<Duration>,
}

impl<W: Work> ProcessSession<W> {
    pub(crate) fn new(mut pool: Processes, timeout: Option<Duration>) -> Result<Self> {
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
        })
    }

    fn least_loaded(&self) -> Option<usize> {
        self.pool
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.queue.len() < DEPTH)
            .min_by_key(|(_, w)| w.queue.len())
            .map(|(i, _)| i)
    }

    /// The job a worker was running, by its beacon, else the first of its
    /// oldest batch.
    fn running_job(&self, w: &Worker) -> Option<(usize, &'static str)> {
        let batch = self.batches.get(w.queue.front()?)?;
        let index = match w.beacon.running() {
            Some((seq, _)) if (batch.first..batch.first + batch.len).contains(&(seq as usize)) => {
                seq as usize
            }
            // Between jobs: blame the first job not yet answered.
            _ => (batch.first + batch.answered).min(batch.first + batch.len - 1),
        };
        Some((index, batch.task))
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

    /// Takes one frame from a worker; returns the batch when it is complete.
    fn answer(
        &mut self,
        worker: u64,
        frame: Result<Decoded, Vec<u8>>,
    ) -> Option<Finished<W::Output>> {
        let pos = self.pool.position(worker)?;
        let id = *self.pool.workers[pos].queue.front()?;
        let batch = self.batches.get_mut(&id)?;
        let index = batch.first + batch.answered;
        let task = batch.task;
        let codec = |action, cause: String| Error::Codec {
            task: task.into(),
            index,
            action,
            cause,
        };
        let step = match frame {
            Ok(Ok(boxed)) => match boxed.downcast::<W::Output>() {
                Ok(value) => Step::Value(*value),
                Err(_) => Step::Fail(codec(
                    "decode the result",
                    "a result of another type".into(),
                )),
            },
            Ok(Err(e)) => Step::Fail(codec("decode the result", e.0)),
            Err(payload) => match ipc::parse_from_worker(&payload) {
                Ok(FromWorker::Failure(failure)) => Step::Fail(failure_error(task, index, failure)),
                Ok(FromWorker::Done {
                    id: done,
                    count,
                    elapsed_ns,
                }) if done == id && count as usize == batch.answered => {
                    Step::Done(Duration::from_nanos(elapsed_ns))
                }
                Ok(FromWorker::Value(bytes)) => Step::Desync(codec(
                    "read the worker's answer",
                    format!("a {}-byte result outside its batch's decoder", bytes.len()),
                )),
                Ok(other) => Step::Desync(codec(
                    "read the worker's answer",
                    format!("unexpected {other:?} in batch {id}"),
                )),
                Err(e) => Step::Desync(codec("read the worker's answer", e.to_string())),
            },
        };
        match step {
            Step::Value(value) => {
                batch.answered += 1;
                if batch.failure.is_none() {
                    batch.values.push(value);
                }
            }
            Step::Fail(e) => {
                batch.answered += 1;
                batch.failure.get_or_insert(e);
            }
            Step::Done(elapsed) => return Some(self.finish(pos, id, elapsed)),
            Step::Desync(e) => {
                batch.failure.get_or_insert(e);
                return Some(self.finish(pos, id, Duration::ZERO));
            }
        }
        if batch.answered > batch.len {
            let e = codec("read the worker's answer", "more answers than jobs".into());
            batch.failure.get_or_insert(e);
            return Some(self.finish(pos, id, Duration::ZERO));
        }
        None
    }

    /// Sends the batches of a worker that died before starting any of them
    /// to the other workers, once each; false if one was sent before.
    fn resend(&mut self, queue: VecDeque<u64>) -> Result<bool> {
        if queue
            .iter()
            .any(|id| !self.batches.get(id).is_some_and(|b| !b.resent))
        {
            return Ok(false);
        }
        self.pool.fill()?;
        for id in queue {
            let pos = self
                .least_loaded()
                .expect("a fresh worker has room for a dead one's batches");
            let batch = self.batches.get_mut(&id).expect("checked above");
            batch.resent = true;
            send(&mut self.pool.workers[pos], id, &batch.frame, batch.decode);
        }
        Ok(true)
    }

    /// Ends batch `id`, the oldest on worker `pos`.
    fn finish(&mut self, pos: usize, id: u64, elapsed: Duration) -> Finished<W::Output> {
        self.pool.workers[pos].queue.pop_front();
        let batch = self.batches.remove(&id).expect("the batch was looked up");
        Finished {
            first: batch.first,
            jobs: batch.len,
            values: batch.values,
            failure: batch.failure,
            elapsed,
        }
    }
}

impl<W: Work> Session<W> for ProcessSession<W> {
    fn has_room(&self) -> bool {
        self.pool.workers.len() < self.pool.n_jobs || self.least_loaded().is_some()
    }

    fn submit(&mut self, batch: Batch<W>) -> Result<()> {
        let first = batch.first;
        let jobs = batch.items.len();
        let Some(head) = batch.items.first() else {
            return Ok(());
        };
        let task = head.task();
        let Some(decode) = head.decoder() else {
            // A closure cannot cross a process boundary: it runs here, as
            // joblib runs `require="sharedmem"` work on threads.
            self.here.push_back(super::run_here(batch, None, || false));
            return Ok(());
        };
        let mut args = Vec::with_capacity(jobs);
        for (k, work) in batch.items.iter().enumerate() {
            match work.encode_args() {
                Some(Ok(bytes)) => args.push(Bytes(bytes)),
                other => {
                    let cause = match other {
                        Some(Err(e)) => e.0,
                        _ => "this job cannot be sent to a worker process".into(),
                    };
                    let e = encode_error(task, first + k, cause);
                    self.here.push_back(Finished::failed(first, jobs, e));
                    return Ok(());
                }
            }
        }
        drop(batch);
        self.pool.fill()?;
        let id = self.pool.fresh_id();
        let msg = ToWorker::Run {
            id,
            task: task.to_string(),
            seq: first as u64,
            args,
        };
        let len = match &msg {
            ToWorker::Run { args, .. } => args.len(),
        };
        let frame = match ipc::encode_frame(&msg) {
            Ok(frame) => frame,
            Err(e) => {
                let e = encode_error(task, first, e.0);
                self.here.push_back(Finished::failed(first, len, e));
                return Ok(());
            }
        };
        drop(msg);
        let pos = self
            .least_loaded()
            .expect("has_room said a worker has room");
        send(&mut self.pool.workers[pos], id, &frame, decode);
        self.batches.insert(
            id,
            InFlight {
                first,
                len,
                task,
                decode,
                answered: 0,
                values: Vec::with_capacity(len),
                failure: None,
                frame,
                resent: false,
            },
        );
        Ok(())
    }

    fn wait(&mut self) -> Result<Finished<W::Output>> {
        if let Some(done) = self.here.pop_front() {
            return Ok(done);
        }
        loop {
            let event = match (self.pool.deferred.pop_front(), self.timeout) {
                (Some(event), _) => Ok(event),
                (None, None) => self
                    .pool
                    .events
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                (None, Some(limit)) => match self.overdue(limit) {
                    Ok(pos) => {
                        let running = self.running_job(&self.pool.workers[pos]);
                        kill(self.pool.workers.swap_remove(pos));
                        let Some((index, task)) = running else {
                            continue; // it held no batch of this run after all
                        };
                        return Err(Error::Timeout {
                            task: task.into(),
                            index,
                            after: limit,
                        });
                    }
                    Err(wait) => self.pool.events.recv_timeout(wait),
                },
            };
            match event {
                Ok(Event::Frame { worker, payload }) => {
                    if let Some(done) = self.answer(worker, Err(payload)) {
                        self.pool.last_used = Instant::now();
                        return Ok(done);
                    }
                }
                Ok(Event::Value { worker, value }) => {
                    if let Some(done) = self.answer(worker, Ok(value)) {
                        self.pool.last_used = Instant::now();
                        return Ok(done);
                    }
                }
                Ok(Event::Closed { worker, error }) => {
                    let Some(pos) = self.pool.position(worker) else {
                        continue;
                    };
                    let running = self.running_job(&self.pool.workers[pos]);
                    let mut w = self.pool.workers.swap_remove(pos);
                    let mut status = describe(w.child.wait());
                    if let Some(e) = error {
                        status = format!("{status} (its pipe failed: {e})");
                    }
                    let Some((index, task)) = running else {
                        continue; // an idle worker died: the next fill replaces it
                    };
                    // A worker that died (or was dying) before it began its
                    // first batch ran none of it: the batches go elsewhere.
                    let untouched = w.beacon.running().is_none()
                        && w.queue
                            .front()
                            .and_then(|id| self.batches.get(id))
                            .is_some_and(|b| b.answered == 0);
                    if untouched && self.resend(std::mem::take(&mut w.queue))? {
                        continue;
                    }
                    return Err(Error::WorkerDied {
                        task: task.into(),
                        index,
                        pid: w.pid,
                        status,
                    });
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => unreachable!("the pool holds a sender"),
            }
        }
    }

    fn cancel(&mut self) {
        self.pool.kill_busy();
        self.batches.clear();
        self.here.clear();
    }

    fn batch_target(&self) -> Duration {
        BATCH_TARGET
    }

    fn into_pool(self: Box<Self>) -> Option<Processes> {
        let mut pool = self.pool;
        pool.last_used = Instant::now();
        Some(pool)
    }
}

fn encode_error(task: &str, index: usize, cause: String) -> Error {
    Error::Codec {
        task: task.into(),
        index,
        action: "encode the arguments",
        cause,
    }
}

fn failure_error(task: &str, index: usize, failure: Failure) -> Error {
    let codec_error = |action, cause: String| Error::Codec {
        task: task.into(),
        index,
        action,
        cause,
    };
    match failure {
        Failure::Panic { message, location } => {
            panic_error(task, index, crate::panic::Caught { message, location })
        }
        Failure::UnknownTask => Error::UnknownTask {
            task: task.into(),
            index,
        },
        Failure::DecodeArgs(e) => codec_error("decode the arguments in the worker", e),
        Failure::EncodeResult(e) => codec_error("encode the result in the worker", e),
    }
}

/// Sends batch `id` to worker `w`: its decoder to the reader thread first,
/// then the frame.
fn send<R: Send + 'static>(w: &mut Worker, id: u64, frame: &[u8], decode: Decoder<R>) {
    let erased: ErasedDecoder =
        Box::new(move |r: &mut dyn io::Read| decode(r).map(|v| Box::new(v) as Box<dyn Any + Send>));
    // The reader must hold the decoder before the first answer comes.
    let _ = w.decoders.send(erased);
    // A write to a dead worker fails with EPIPE; its reader thread reports
    // the closure, and `wait` turns it into the error.
    let _ = w.to_child.write_all(frame);
    w.queue.push_back(id);
}

/// A worker's reader thread: decodes results straight from the pipe with
/// the decoder of the batch they belong to, and forwards everything else.
///
/// The session sends a batch's decoder before it writes the batch, so the
/// decoder is queued before any answer can come. It is taken at the batch's
/// first result and dropped at its `Done`; a batch that produced only
/// failures drops its unused decoder at `Done`, so the queue stays in step.
fn read_frames(
    worker: u64,
    from_child: File,
    decoders: Receiver<ErasedDecoder>,
    events: Sender<Event>,
) {
    let mut reader = BufReader::with_capacity(1 << 16, from_child);
    let mut current: Option<ErasedDecoder> = None;
    let error = loop {
        let incoming = ipc::read_incoming(&mut reader, |body| {
            if current.is_none() {
                current = decoders.try_recv().ok();
            }
            match &current {
                Some(decode) => decode(body),
                None => Err(crate::codec::CodecError(
                    "a result arrived for no batch".into(),
                )),
            }
        });
        let event = match incoming {
            Ok(Some(Incoming::Value(value))) => Event::Value { worker, value },
            Ok(Some(Incoming::Other(payload))) => {
                if ipc::is_done(&payload) && current.take().is_none() {
                    let _ = decoders.try_recv();
                }
                Event::Frame { worker, payload }
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        };
        if events.send(event).is_err() {
            return;
        }
    };
    let _ = events.send(Event::Closed { worker, error });
}

/// Says how a worker ended, in words.
fn describe(status: io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(sig)) => format!("was killed by signal {sig} ({})", signal_name(sig)),
            _ => format!("ended with {s}"),
        },
        Err(e) => format!("ended, but its status could not be read: {e}"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGINT => "SIGINT",
        libc::SIGPIPE => "SIGPIPE",
        _ => "another signal",
    }
}

struct SpawnRequest {
    command: Command,
    child_fds: [OwnedFd; 2],
    reply: Sender<io::Result<Child>>,
}

/// Spawns from one thread that lives as long as the process, because the
/// kernel's parent-death signal follows the thread that forked.
fn spawner() -> io::Result<&'static Mutex<Sender<SpawnRequest>>> {
    static SPAWNER: OnceLock<Mutex<Sender<SpawnRequest>>> = OnceLock::new();
    if let Some(spawner) = SPAWNER.get() {
        return Ok(spawner);
    }
    let (tx, rx) = mpsc::channel::<SpawnRequest>();
    std::thread::Builder::new()
        .name("parjob-spawner".into())
        .spawn(move || {
            for mut req in rx {
                let result = req.command.spawn();
                drop(req.child_fds);
                let _ = req.reply.send(result);
            }
        })?;
    // If two threads raced here, the loser's spawner thread ends when its
    // sender is dropped.
    Ok(SPAWNER.get_or_init(|| Mutex::new(tx)))
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn worker_program() -> std::path::PathBuf {
    let proc_exe = std::path::Path::new("/proc/self/exe");
    if proc_exe.exists() {
        proc_exe.to_path_buf()
    } else {
        std::env::current_exe().unwrap_or_else(|_| proc_exe.to_path_buf())
    }
}

fn spawn(entry: &Entry, share: usize, beacon: &Beacon) -> Result<(Child, File, File)> {
    let beacon_fd = beacon.fd().expect("a shared beacon has a memfd");
    let (child_reads, parent_writes) = pipe().map_err(|e| Error::io("making a pipe", e))?;
    let (parent_reads, child_writes) = pipe().map_err(|e| Error::io("making a pipe", e))?;
    let mut command = Command::new(worker_program());
    if let Some(arg0) = std::env::args_os().next() {
        command.arg0(arg0);
    }
    if let Entry::Test { name } = entry {
        command.args([
            name.as_str(),
            "--exact",
            "--test-threads=1",
            "-q",
            "--nocapture",
            "--include-ignored",
        ]);
    }
    command
        .env(
            ENV_WORKER,
            format!(
                "{},{},{beacon_fd},{share}",
                child_reads.as_raw_fd(),
                child_writes.as_raw_fd()
            ),
        )
        .stdin(Stdio::null());
    for var in THREAD_ENV_VARS {
        if std::env::var_os(var).is_none() {
            command.env(var, share.to_string());
        }
    }
    let keep = [child_reads.as_raw_fd(), child_writes.as_raw_fd(), beacon_fd];
    // SAFETY: getpid is async-signal-safe and called before the fork.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe calls (fcntl, prctl, getppid, _exit).
    unsafe {
        command.pre_exec(move || {
            for fd in keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // The parent died before the signal was armed.
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (reply, answer) = mpsc::channel();
    spawner()
        .map_err(|e| Error::io("starting the spawner thread", e))?
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(SpawnRequest {
            command,
            child_fds: [child_reads, child_writes],
            reply,
        })
        .map_err(|_| {
            Error::io(
                "spawning a worker",
                io::Error::other("spawner thread is gone"),
            )
        })?;
    let child = answer
        .recv()
        .map_err(|_| {
            Error::io(
                "spawning a worker",
                io::Error::other("spawner thread is gone"),
            )
        })?
        .map_err(|e| Error::io(format!("spawning worker {}", worker_program().display()), e))?;
    Ok((child, File::from(parent_writes), File::from(parent_reads)))
}
