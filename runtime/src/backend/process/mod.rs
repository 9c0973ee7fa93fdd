//! The process backend: re-executed worker processes that find tasks by name.
//!
//! # Life of a worker
//! 1. **Spawn** (`spawn`). Two pipes and a beacon `memfd`; the child is this
//!    same binary, re-executed, holding a token only its parent knows.
//! 2. **Handshake.** The worker's first frame is a [`Hello`]: magic,
//!    protocol version and registry fingerprint. A mismatch, or no hello
//!    within [`HELLO_TIMEOUT`], kills it and fails the run with a reason.
//! 3. **Serve** (`session`). A batch is one frame each way. At most
//!    [`DEPTH`] batches are queued on a worker. Frames go straight into a
//!    non-blocking pipe, or to the worker's writer thread when it is full
//!    (`writer`), and each worker has a reader thread (`reader`), so no
//!    pipe operation ever blocks the scheduler's thread. The readers forward frames to one channel for
//!    the whole pool. The worker writes the running job's sequence number
//!    and start time to its beacon. That is how per-task timeouts are
//!    enforced, and how a crash is pinned on the exact job of a batch.
//! 4. **End** (`exit`). A reader whose pipe ends, or whose worker exits
//!    (seen through a `pidfd`, even while a forked descendant holds the
//!    pipe), reports the worker closed. The pool reaps it, and the job it
//!    was running fails with its exit status or signal. Cancelling kills
//!    the busy workers. Dropping the pool closes the pipes, so idle workers
//!    exit at once; busy ones are killed. If the parent dies first, the
//!    kernel kills the workers (`PR_SET_PDEATHSIG`).
//!
//! A worker's `tracing` events travel as frames on its output pipe and are
//! re-emitted by its reader thread (`log`).

mod answer;
mod cgroup;
mod continuing;
mod encode;
mod exit;
mod lease;
pub(crate) mod log;
mod memory;
mod reader;
mod recorder;
mod retry;
mod retrying;
mod session;
mod spawn;
mod speculate;
mod speculation;
mod startup;
mod traced;
mod watch;
pub(crate) mod worker;

pub(crate) use lease::PoolSlot;
pub(crate) use worker::{adopt_entry, entry as worker_entry};
mod writer;

pub use cgroup::groups as memory_groups;
pub use encode::packed_batches;
pub(crate) use memory::MemoryRules;
pub use memory::{trace_reads, traced_reads};
pub(crate) use retry::Retry;
pub(crate) use session::ProcessSession;
cfg_mpi! {
    pub(crate) use encode::{encode_batch, Encoded, Outgoing};
}

use crate::backend::beacon::Beacon;
use crate::shm::Segment;
use crate::task::{AnyOutput, Decoder};

use exit::ExitWatch;
use reader::{ErasedDecoder, Event};
use std::any::Any;
use std::collections::{HashSet, VecDeque};
use std::io;
use std::process::Child;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
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
/// The thread-count variables a worker gets, set to its
/// `inner_max_num_threads` unless the parent has them set (joblib's list,
/// plus rayon's and polars'; docs/decisions.md).
pub(crate) const THREAD_ENV_VARS: [&str; 8] = [
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "RAYON_NUM_THREADS",
    "POLARS_MAX_THREADS",
];

/// How a long-lived pool (`parjob::Pool`) uses its workers, where a run
/// of `Parallel` uses the defaults.
#[derive(Clone, Default)]
pub(crate) struct PoolRules {
    /// A dead worker fails only the batch it was running, and is replaced;
    /// by default it ends the run.
    pub(crate) isolate_deaths: bool,
    /// Batches queued on a worker at once (0: [`DEPTH`]).
    pub(crate) depth: usize,
    /// A worker retires after this many batches (`max_tasks_per_child`).
    pub(crate) max_batches: Option<usize>,
    /// A worker retires once it has run this many jobs.
    pub(crate) max_items: Option<usize>,
    /// Runs once in each new worker, before any batch.
    pub(crate) init: Option<Arc<Initializer>>,
    /// A worker drops the shared memory it was passed whenever it has no
    /// batch left, instead of at the end of a run (a pool has no end).
    pub(crate) forget_when_idle: bool,
    /// A worker that dies before it starts its batches fails them, where
    /// by default they are sent to another worker: a `Process` runs its
    /// task at most once, and a kill is a kill.
    pub(crate) no_resend: bool,
    /// Set by the pool's `terminate` from another thread: a start that
    /// waits for new workers gives up at once, whatever they are doing.
    pub(crate) stop: Arc<AtomicBool>,
    /// Start a worker only when none is idle (an `Executor`, as CPython's
    /// since 3.9), not all of them at the first submission.
    pub(crate) lazy: bool,
}

/// A pool's initializer: a registered task and its encoded arguments.
pub(crate) struct Initializer {
    pub(crate) task: &'static str,
    pub(crate) args: Vec<u8>,
    /// How long it may run in a new worker before the worker is killed
    /// (`None`: as long as it takes, as in CPython).
    pub(crate) timeout: Option<Duration>,
}

/// How often a start that waits for new workers looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);

impl PoolRules {
    fn depth(&self) -> usize {
        if self.depth == 0 {
            DEPTH
        } else {
            self.depth
        }
    }
}

/// Where a new worker is in its start: it says hello, then runs the
/// pool's initializer, then serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Hello,
    /// Running the initializer, which must end by this time, if any.
    Init(Option<Instant>),
    Ready,
}

struct Worker {
    id: u64,
    pid: u32,
    child: Child,
    watch: Arc<ExitWatch>,
    /// The worker's input pipe.
    frames: writer::FrameWriter,
    /// The decoders of the batches sent, by batch, for the reader thread.
    decoders: Sender<(u64, ErasedDecoder)>,
    beacon: Beacon,
    stage: Stage,
    /// Batch ids sent and not yet answered, oldest first.
    queue: VecDeque<u64>,
    /// Batches and jobs it has answered, for a pool's retirement limits.
    batches_done: usize,
    items_done: usize,
    /// The shared-memory segments passed to it in this run, by id.
    segments: HashSet<u64>,
    /// Its memory readings (`memory`).
    memory: Arc<memory::Gauge>,
    /// It runs a retried job alone: it takes nothing else while its
    /// queue holds that job.
    solo: bool,
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
    pub(crate) rules: PoolRules,
    /// The `Parallel` initializer its workers run (`rules.init`), by key.
    initializer_key: Option<u32>,
    /// The threads each worker may use (`inner_max_num_threads`); `None`:
    /// its share of the CPUs this code may use.
    pub(crate) worker_threads: Option<usize>,
    /// Reads the workers' memory and applies a run's `max_worker_memory`.
    memory: memory::MemoryWatch,
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
            rules: PoolRules::default(),
            initializer_key: None,
            worker_threads: None,
            memory: memory::MemoryWatch::new(),
        }
    }

    /// A pool of `n_jobs` workers used by `rules`.
    pub(crate) fn with_rules(n_jobs: usize, rules: PoolRules) -> Self {
        let mut pool = Processes::new(n_jobs);
        pool.rules = rules;
        pool
    }

    pub(crate) fn n_jobs(&self) -> usize {
        self.n_jobs
    }

    /// Which `Parallel` initializer its workers run, if any.
    pub(crate) fn initializer_key(&self) -> Option<u32> {
        self.initializer_key
    }

    pub(crate) fn set_initializer_key(&mut self, key: u32) {
        self.initializer_key = Some(key);
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

    /// Retires worker `pos` when it reached a limit of the pool's rules and
    /// holds nothing: its pipe is closed, so it exits, and a thread reaps
    /// it. The next fill starts its replacement.
    fn retire_if_spent(&mut self, pos: usize) {
        let w = &self.workers[pos];
        let spent = self.rules.max_batches.is_some_and(|k| w.batches_done >= k)
            || self.rules.max_items.is_some_and(|k| w.items_done >= k);
        if !spent || !w.queue.is_empty() {
            return;
        }
        let w = self.workers.swap_remove(pos);
        let _ = std::thread::Builder::new()
            .name(format!("parjob-retire-{}", w.pid))
            .spawn(move || {
                let Worker {
                    mut child,
                    watch,
                    frames,
                    ..
                } = w;
                drop(frames);
                watch.wait_exit(Duration::from_secs(5));
                let _ = child.kill();
                let _ = child.wait();
            });
    }

    /// Whether worker `pos` may take another batch under the pool's rules.
    fn may_take(&self, w: &Worker) -> bool {
        let queued = w.queue.len();
        w.stage == Stage::Ready
            && queued < self.rules.depth()
            && !(w.solo && queued > 0)
            && self
                .rules
                .max_batches
                .is_none_or(|k| w.batches_done + queued < k)
            && self
                .rules
                .max_items
                .is_none_or(|k| queued == 0 && w.items_done < k)
    }

    /// Stops every worker: SIGTERM, then SIGKILL for any still alive after
    /// `grace`. Returns once all are reaped.
    pub(crate) fn terminate(&mut self, grace: Duration) {
        let mut workers: Vec<Worker> = self.workers.drain(..).collect();
        for w in &workers {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(w.pid as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        for w in &mut workers {
            w.watch
                .wait_exit(deadline.saturating_duration_since(Instant::now()));
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
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
        // Dropping a worker's frame sender ends its writer thread, which
        // closes the pipe, which ends an idle worker's loop.
        let mut children: Vec<(Child, Arc<ExitWatch>)> =
            self.workers.drain(..).map(|w| (w.child, w.watch)).collect();
        let deadline = Instant::now() + Duration::from_secs(2);
        for (child, watch) in &mut children {
            watch.wait_exit(deadline.saturating_duration_since(Instant::now()));
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends batch `id` to worker `w`: its decoder to the reader thread first,
/// then the shared-memory segments it needs that the worker lacks, then
/// the frame, each written now or queued for the writer thread. Nothing
/// here blocks.
/// `decode` reads one job's value; a packed batch's answer is read by its
/// own decoder instead, whose value is the boxed chunk of values.
fn send<R: Send + 'static>(
    w: &mut Worker,
    id: u64,
    frame: &Arc<Vec<u8>>,
    decode: (Decoder<R>, Option<Decoder<AnyOutput>>),
    segments: &[Arc<Segment>],
) {
    if w.queue.is_empty() {
        w.solo = false;
    }
    for segment in segments {
        if w.segments.insert(segment.id()) {
            w.frames.send_segment(segment);
        }
    }
    let erased: ErasedDecoder = match decode {
        (_, Some(packed)) => Box::new(packed),
        (decode, None) => Box::new(move |r: &mut dyn io::Read| {
            decode(r).map(|v| Box::new(v) as Box<dyn Any + Send>)
        }),
    };
    // The reader must hold the decoder before the first answer comes.
    let _ = w.decoders.send((id, erased));
    // A dead worker's frames are dropped; its reader reports the closure,
    // and `wait` turns it into the error.
    w.frames.send(frame.clone());
    w.queue.push_back(id);
}
