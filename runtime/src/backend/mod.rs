//! Where batches of jobs run: one [`Session`] trait, three backends.
//!
//! A session accepts batches (consecutive jobs of one task) and reports
//! each finished batch with one result per job and the time its jobs took.
//! It knows nothing about ordering, `pre_dispatch` or batch sizing: those
//! live in [`crate::schedule`], which pulls from the session, so every
//! backend gets them the same way. A session's `wait` returns `Err` only
//! for failures that end the run as a whole (a timeout, a dead worker);
//! a job's own failure (a panic, a codec error) is that job's result.

use crate::error::{Error, Result};
use crate::options::Initializer;
use crate::task::{Spent, Work};
use crate::trace::{JobTimes, Trace};
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

pub(crate) mod beacon;
pub(crate) mod durations;
pub(crate) mod in_flight;
cfg_mpi! {
    pub(crate) mod mpi;
}
pub(crate) mod nesting;
pub(crate) mod open;
pub(crate) mod process;
pub(crate) mod sequential;
pub(crate) mod thread;

/// The worker entry for binaries. Call it first in `main`; `#[parjob::main]`
/// does this for you.
///
/// In a process started by the process backend, or in an MPI worker rank,
/// it serves tasks and exits, never returning. Anywhere else it returns at once, after recording that
/// this program can be re-executed as a worker.
///
/// ```
/// parjob_runtime::init();
/// // ... the rest of `main`, which may now use the process backend
/// ```
pub fn init() {
    process::worker::init_entry();
    open::enter_rank_if_launched();
}

/// A batch: consecutive jobs of one task, the first at input index `first`.
pub(crate) struct Batch<W> {
    pub first: usize,
    pub items: Vec<W>,
}

/// A finished batch: the values of its first jobs, in order, and the
/// failure that stopped it, if one did (the first error ends a run, so
/// nothing after it matters).
pub(crate) struct Finished<R> {
    /// The input index of `values[0]`.
    pub first: usize,
    /// How many jobs the batch held when it was submitted.
    pub jobs: usize,
    /// Results of jobs `first..first + values.len()`.
    pub values: Vec<R>,
    /// Why the job after the last value failed.
    pub failure: Option<Error>,
    /// Time spent running the jobs.
    pub elapsed: Duration,
    /// Where in the failing job the failure happened, when that job is a
    /// pool's chunk of many calls and the failure is its worker's death:
    /// the call's index in the chunk (else 0).
    pub call: usize,
    /// More of the same batch comes in another `Finished`: under
    /// `on_error = "continue"` a process batch reports each failed job as
    /// it comes and goes on, one piece at a time.
    pub more: bool,
    /// Under `trace`, when each job ran, as measured where it ran (with
    /// a batch's last piece).
    pub times: Option<Box<JobTimes>>,
}

impl<R> Finished<R> {
    /// A batch that failed before its job `index` could run.
    pub(crate) fn failed(first: usize, jobs: usize, error: Error) -> Self {
        Finished {
            first,
            jobs,
            values: Vec::new(),
            failure: Some(error),
            elapsed: Duration::ZERO,
            call: 0,
            more: false,
            times: None,
        }
    }
}

/// The job that has been running longest, for a "still running" line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LongestRunning {
    pub task: &'static str,
    pub index: usize,
    pub running_for: Duration,
    /// The worker process running it, on the process backend.
    pub pid: Option<u32>,
}

/// One run's use of a backend.
pub(crate) trait Session<W: Work> {
    /// Whether `submit` can take another batch now.
    fn has_room(&self) -> bool;
    /// Starts a batch.
    fn submit(&mut self, batch: Batch<W>) -> Result<()>;
    /// Blocks until a batch finishes, or returns `None` once `patience`
    /// has passed with none finished (`None` patience: no limit).
    fn wait(&mut self, patience: Option<Duration>) -> Result<Option<Finished<W::Output>>>;
    /// The job running longest, where the backend can see it.
    fn longest_running(&self) -> Option<LongestRunning> {
        None
    }
    /// The worker processes running this session's batches, on the
    /// process backend (empty elsewhere).
    fn worker_pids(&self) -> Vec<u32> {
        Vec::new()
    }
    /// Stops whatever is in flight; called once, when the run ends early.
    fn cancel(&mut self);
    /// How long an auto-sized batch should take on this backend.
    fn batch_target(&self) -> Duration;
    /// Records this session's part of the run in `trace`: job times
    /// measured where jobs run, and what only the session sees (sends,
    /// returns, workers starting and dying).
    fn set_trace(&mut self, trace: &Arc<Trace>) {
        let _ = trace;
    }
}

/// The error for a job whose code panicked where we could catch it.
pub(crate) fn panic_error(task: &str, index: usize, caught: crate::panic::Caught) -> Error {
    Error::Panic {
        task: task.to_string(),
        index,
        message: caught.message,
        location: caught.location,
    }
}

/// Runs a batch here, in order, stopping at the first panic or when
/// `stop()` turns true, and reporting the running job to `beacon`. When
/// `timed`, the batch's `times` say when each job ended.
///
/// One `catch_unwind` covers the whole batch: when a job panics, the values
/// pushed so far are intact, and the panicking job is the next index.
pub(crate) fn run_here<W: Work>(
    batch: Batch<W>,
    beacon: Option<&crate::backend::beacon::Beacon>,
    stop: impl Fn() -> bool,
    timed: bool,
) -> Finished<W::Output> {
    run_sparing(batch, beacon, stop, timed, &mut Spent::default())
}

/// [`run_here`] on a pool thread: what the jobs allocated is left in
/// `spent`, for the thread that made them to free (`task/spent.rs`).
pub(crate) fn run_sparing<W: Work>(
    batch: Batch<W>,
    beacon: Option<&crate::backend::beacon::Beacon>,
    stop: impl Fn() -> bool,
    timed: bool,
    spent: &mut Spent,
) -> Finished<W::Output> {
    let started = std::time::Instant::now();
    let first = batch.first;
    let jobs = batch.items.len();
    let mut values = Vec::with_capacity(jobs);
    // A batch holds one task, so one name serves every job in it.
    let task = batch.items.first().map_or("", Work::task);
    let mut times = timed.then(|| Box::new(JobTimes::here(task, first, jobs)));
    let mut items = batch.items.into_iter();
    let outcome = crate::panic::catch(|| {
        for work in items.by_ref() {
            if stop() {
                return;
            }
            if let Some(b) = beacon {
                b.start((first + values.len()) as u64);
            }
            values.push(work.run_sparing(spent));
            if let Some(t) = times.as_mut() {
                t.ends.push(crate::trace::now_ns());
            }
        }
    });
    // The job that panicked ended here.
    if let (Err(_), Some(t)) = (&outcome, times.as_mut()) {
        t.ends.push(crate::trace::now_ns());
        t.failed
            .push((first + values.len(), crate::trace::Outcome::Panic));
    }
    if let Some(b) = beacon {
        b.idle();
    }
    let failure = outcome
        .err()
        .map(|caught| panic_error(task, first + values.len(), caught));
    Finished {
        first,
        jobs,
        values,
        failure,
        elapsed: started.elapsed(),
        call: 0,
        more: false,
        times,
    }
}

/// Runs a batch here, in order, each job under its own `catch_unwind`,
/// under `on_error = "continue"`: a panic ends a piece of the batch
/// (`Finished::more`) and the next job goes on. The last piece ends the
/// batch.
pub(crate) fn run_pieces_here<W: Work>(
    batch: Batch<W>,
    beacon: Option<&crate::backend::beacon::Beacon>,
    stop: impl Fn() -> bool,
    timed: bool,
) -> Vec<Finished<W::Output>> {
    let started = std::time::Instant::now();
    let end = batch.first + batch.items.len();
    let task = batch.items.first().map_or("", Work::task);
    let mut times = timed.then(|| Box::new(JobTimes::here(task, batch.first, batch.items.len())));
    let mut pieces = Vec::new();
    let mut piece_first = batch.first;
    let mut values = Vec::new();
    for (index, work) in (batch.first..).zip(batch.items) {
        if stop() {
            break;
        }
        if let Some(b) = beacon {
            b.start(index as u64);
        }
        let outcome = crate::panic::catch(|| work.run());
        if let Some(t) = times.as_mut() {
            t.ends.push(crate::trace::now_ns());
        }
        match outcome {
            Ok(value) => values.push(value),
            Err(caught) => {
                if let Some(t) = times.as_mut() {
                    t.failed.push((index, crate::trace::Outcome::Panic));
                }
                pieces.push(Finished {
                    first: piece_first,
                    jobs: index + 1 - piece_first,
                    values: std::mem::take(&mut values),
                    failure: Some(panic_error(task, index, caught)),
                    elapsed: Duration::ZERO,
                    call: 0,
                    more: true,
                    times: None,
                });
                piece_first = index + 1;
            }
        }
    }
    if let Some(b) = beacon {
        b.idle();
    }
    pieces.push(Finished {
        first: piece_first,
        jobs: end - piece_first,
        values,
        failure: None,
        elapsed: started.elapsed(),
        call: 0,
        more: false,
        times,
    });
    pieces
}

thread_local! {
    /// The initializers that have run on this thread.
    static INITIALIZED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `init` on this thread, unless it has run here already: an
/// initializer on the thread and sequential backends, once per thread, as
/// joblib runs one once per worker.
pub(crate) fn initialize_here(init: Option<Initializer>) -> Result<()> {
    let Some(init) = init else {
        return Ok(());
    };
    if INITIALIZED.with(|done| done.borrow().contains(&init.key())) {
        return Ok(());
    }
    let spec = init.spec();
    let args = spec.args.as_ref().map_err(|why| Error::Codec {
        task: spec.task.into(),
        index: 0,
        action: "encode the initializer's arguments",
        cause: why.clone(),
    })?;
    crate::wire::run_here(spec.task, args).map_err(|why| {
        Error::Pool(format!(
            "the initializer `{}` failed on thread {}: {why}",
            spec.task,
            std::thread::current().name().unwrap_or("unnamed")
        ))
    })?;
    INITIALIZED.with(|done| done.borrow_mut().push(init.key()));
    Ok(())
}
