//! [`Pool`]: Python's `multiprocessing.Pool`, on parjob's worker processes
//! (or threads), without its hang on a dead worker.
//!
//! A pool owns its workers for its whole life. Its handle sends
//! submissions to a manager thread (`manager`), which cuts nothing itself:
//! each submission arrives as chunks (`chunks`: CPython's `chunksize`
//! formula by default), and each chunk is one batch of the process or
//! thread backend. The process backend runs under a pool's rules:
//!
//! - a worker that dies (SIGKILL, abort, the OOM killer) fails only the
//!   chunk it was running, with [`Error::WorkerDied`] naming the task, the
//!   pid and the signal, and the next chunk starts a replacement; with
//!   [`OnWorkerDeath::Break`], the pool breaks instead, as
//!   concurrent.futures' `BrokenProcessPool`;
//! - a worker holds one chunk at a time, so a death touches no queued work;
//! - `max_tasks_per_child` retires a worker after that many chunks, and
//!   the initializer runs once in each new worker before its first chunk.
//!
//! Results come back to an [`AsyncResult`] (`result`) or an [`Imap`]
//! iterator (`imap`); callbacks run on one thread of their own, in
//! completion order.

mod builder;
mod chunked;
pub(crate) mod chunks;
mod executor;
mod imap;
mod manager;
mod process;
mod result;
mod scope;
mod sink;
pub(crate) mod tasks;

pub use builder::PoolBuilder;
pub use chunked::ChunkedCalls;
pub(crate) use chunks::Submission;
pub use chunks::{cpython_chunksize, Chunksize};
pub use executor::{as_completed, wait, Executor, Future, ReturnWhen, Timed};
pub use imap::Imap;
pub use manager::OnWorkerDeath;
pub use process::Process;
pub use result::AsyncResult;
pub use scope::Scope;
use tasks::SubmitStar;
pub use tasks::{IntoJob, MapTask, StarTask, TaskRef};

use crate::backend::open::Engine;
use crate::backend::process::adopt_entry;
use crate::backend::process::worker::EntryPoint;
use crate::backend::thread::Threads;
use crate::error::{Error, Result};
use crate::options::Options;
use crate::shm::Sharing;
use chunks::PoolJob;
use manager::{Command, Manager, Sizing};
use result::{OnDone, Slot};
use sink::{Callback, Collect};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long `terminate` lets workers exit after SIGTERM before SIGKILL.
const TERMINATE_GRACE: Duration = Duration::from_millis(500);

/// A pool of worker processes (or threads) that runs `#[parallel]`
/// functions: `multiprocessing.Pool` and concurrent.futures'
/// `ProcessPoolExecutor`, in Rust's terms.
///
/// Its tasks are `#[parallel(backend = "process")]` functions, passed as
/// `f::delayed` (see `docs/guide.md`: `pool.map(square::delayed, 0..10)`).
/// On the thread backend, jobs may also be closures:
///
/// ```
/// use parjob_runtime::pool::Pool;
/// use parjob_runtime::{Backend, Job};
///
/// let pool = Pool::builder().processes(2).backend(Backend::Thread).build()?;
/// let squares = pool.map(|x: u64| Job::new(move || x * x), 0..10)?;
/// assert_eq!(squares[3], 9);
/// let later = pool.apply_async(Job::new(|| 6 * 7));
/// assert_eq!(later.get()?, 42);
/// let firsts: Vec<u64> = pool
///     .imap(|x: u64| Job::new(move || x + 1), 0..3)
///     .collect::<Result<_, _>>()?;
/// assert_eq!(firsts, [1, 2, 3]);
/// # Ok::<(), parjob_runtime::Error>(())
/// ```
pub struct Pool {
    /// Submissions; `None` once the pool is closed.
    commands: Mutex<Option<Sender<Command>>>,
    /// Cancels, close and terminate, which work after close too.
    control: Sender<Command>,
    manager: Mutex<Option<JoinHandle<()>>>,
    callbacks: Mutex<Option<Sender<Callback>>>,
    callback_thread: Mutex<Option<JoinHandle<()>>>,
    /// The callback thread's id: it sets the results that have callbacks,
    /// and a `join` from it must not wait for itself.
    callback_thread_id: std::thread::ThreadId,
    processes: usize,
    chunksize: Chunksize,
    terminate_on_drop: bool,
    next_ticket: AtomicU64,
    /// A thread pool's threads, for [`Pool::scope`].
    threads: Option<Threads>,
    /// Tells the manager to give up a worker start (an initializer that
    /// hangs) when the pool is terminated.
    stop: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pool {
    /// A pool of `processes` worker processes, with the defaults.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// A pool's settings, to [`PoolBuilder::build`].
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    pub(super) fn start(
        engine: Engine<PoolJob>,
        threads: Option<Threads>,
        entry: Option<EntryPoint>,
        processes: usize,
        stop: Arc<AtomicBool>,
        settings: &PoolBuilder,
        trace: Option<Arc<crate::trace::Trace>>,
    ) -> Pool {
        let (commands, rx) = mpsc::channel();
        let manager = Manager::new(engine, rx, settings.on_worker_death, processes).traced(trace);
        let manager = std::thread::Builder::new()
            .name("parjob-pool".into())
            .spawn(move || {
                if let Some(entry) = entry {
                    adopt_entry(entry);
                }
                manager.run()
            })
            .expect("the pool's manager thread starts");
        let (callbacks, callback_rx) = mpsc::channel::<Callback>();
        let callback_thread = std::thread::Builder::new()
            .name("parjob-pool-callbacks".into())
            .spawn(move || callback_rx.into_iter().for_each(|c| c()))
            .expect("the pool's callback thread starts");
        Pool {
            callback_thread_id: callback_thread.thread().id(),
            control: commands.clone(),
            commands: Mutex::new(Some(commands)),
            manager: Mutex::new(Some(manager)),
            callbacks: Mutex::new(Some(callbacks)),
            callback_thread: Mutex::new(Some(callback_thread)),
            processes,
            chunksize: settings.chunksize,
            terminate_on_drop: settings.terminate_on_drop,
            next_ticket: AtomicU64::new(0),
            threads,
            stop,
        }
    }

    /// How many workers it runs.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// Sends chunks to the manager; false when the pool is closed.
    /// Sends a submission to the manager: its ticket, or `None` when the
    /// pool is closed.
    pub(super) fn send(
        &self,
        source: Box<dyn chunks::Source>,
        sizing: Sizing,
        sink: Box<dyn sink::Sink>,
    ) -> Option<u64> {
        let id = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let command = Command::Submit {
            id,
            source,
            sizing,
            sink,
        };
        let sent = lock(&self.commands).as_ref()?.send(command).is_ok();
        sent.then_some(id)
    }

    /// A sender of control commands (cancels) to the manager.
    pub(super) fn command_sender(&self) -> Option<Sender<Command>> {
        Some(self.control.clone())
    }

    /// Sends a control command to the manager; false once it has ended.
    pub(super) fn command(&self, command: Command) -> bool {
        self.control.send(command).is_ok()
    }

    /// A process pool's shared memory for one submission's jobs: a
    /// borrowed slice of numbers over `max_nbytes` (from a scoped
    /// `config()` or `PARJOB_MAX_NBYTES`, else 1 MiB) becomes one segment
    /// that every job of the submission references, as in a `Parallel`
    /// run. `None` on threads, whose jobs never cross a process boundary.
    pub(super) fn sharing(&self) -> Option<Arc<Sharing>> {
        if self.threads.is_some() {
            return None;
        }
        let plan = Options::default().resolve().ok()?;
        Some(Sharing::new(
            plan.max_nbytes,
            plan.temp_folder.map(|f| f.path()),
        ))
    }

    /// Runs `make` (which makes a submission's jobs) under
    /// [`Pool::sharing`].
    pub(super) fn preparing<T>(&self, make: impl FnOnce() -> T) -> T {
        let sharing = self.sharing();
        let _entered = sharing.as_ref().map(|s| s.enter());
        make()
    }

    fn callback_sender(&self) -> Option<Sender<Callback>> {
        lock(&self.callbacks).clone()
    }

    /// Submits `work` cut by `chunksize`, collected by `finish`.
    pub(super) fn collect<R: Send + 'static, T: Send + 'static>(
        &self,
        work: Submission<R>,
        chunksize: Chunksize,
        finish: fn(Vec<R>) -> T,
        callback: Option<OnDone<T>>,
    ) -> AsyncResult<T> {
        self.submit(work, chunksize, finish, callback).0
    }

    /// Submits `work` cut by `chunksize`, collected by `finish`; with a
    /// callback, the result is set on the callback thread, which runs it
    /// (and any added later). Returns the result and its ticket.
    pub(super) fn submit<R: Send + 'static, T: Send + 'static>(
        &self,
        work: Submission<R>,
        chunksize: Chunksize,
        finish: fn(Vec<R>) -> T,
        callback: Option<OnDone<T>>,
    ) -> (AsyncResult<T>, Option<u64>) {
        let slot = Slot::new();
        let tx = callback.map(|callback| {
            slot.on_done(callback);
            slot.set_on(self.callback_thread_id);
            self.callback_sender()
        });
        if chunksize == Chunksize::Fixed(0) {
            slot.set(Err(chunksize_zero()));
            return (AsyncResult::new(slot), None);
        }
        let len = work.len;
        let sink = Collect::new(len, finish, Arc::clone(&slot), tx.flatten());
        let sizing = match chunksize {
            Chunksize::Auto => Sizing::Auto,
            Chunksize::Default => Sizing::Fixed(cpython_chunksize(len, self.processes)),
            Chunksize::Fixed(n) => Sizing::Fixed(n),
        };
        let ticket = self.send(work.source, sizing, Box::new(sink));
        if ticket.is_none() {
            slot.set(Err(closed()));
        }
        (AsyncResult::new(slot), ticket)
    }

    /// Runs `job` in a worker and waits for its result (`apply`).
    pub fn apply<R: Send + 'static>(&self, job: impl IntoJob<R>) -> Result<R> {
        self.apply_async(job).get()
    }

    /// Runs `job` in a worker; its result comes to the [`AsyncResult`]
    /// (`apply_async`). Its failure is its own: no other submission fails
    /// with it.
    pub fn apply_async<R: Send + 'static>(&self, job: impl IntoJob<R>) -> AsyncResult<R> {
        self.collect(one(job), Chunksize::Fixed(1), first, None)
    }

    /// As [`Pool::apply_async`], running `on_success` with the value or
    /// `on_error` with the error on the pool's callback thread once the job
    /// ends (`callback=`, `error_callback=`). The result is ready after its
    /// callback ran. A callback that panics is logged, and the pool goes on.
    pub fn apply_async_with<R: Send + 'static>(
        &self,
        job: impl IntoJob<R>,
        on_success: impl FnOnce(&R) + Send + 'static,
        on_error: impl FnOnce(&Error) + Send + 'static,
    ) -> AsyncResult<R> {
        let callback = both(on_success, on_error);
        self.collect(one(job), Chunksize::Fixed(1), first, Some(callback))
    }

    /// Calls `task` with each item in the workers and returns the results
    /// in order (`map`). The items are cut into chunks of the pool's
    /// chunk size (CPython's formula by default). The first error, in
    /// completion order, fails it, once every chunk has ended.
    pub fn map<A, R: Send + 'static>(
        &self,
        task: impl MapTask<A, R>,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>> {
        self.chunksize(self.chunksize).map(task, items)
    }

    /// As [`Pool::map`], with the result to come (`map_async`).
    pub fn map_async<A, R: Send + 'static>(
        &self,
        task: impl MapTask<A, R>,
        items: impl IntoIterator<Item = A>,
    ) -> AsyncResult<Vec<R>> {
        self.chunksize(self.chunksize).map_async(task, items)
    }

    /// Calls `task` with each tuple spread into its arguments (`starmap`).
    pub fn starmap<Args, R: Send + 'static>(
        &self,
        task: impl StarTask<Args, R>,
        items: impl IntoIterator<Item = Args>,
    ) -> Result<Vec<R>> {
        self.chunksize(self.chunksize).starmap(task, items)
    }

    /// As [`Pool::starmap`], with the result to come (`starmap_async`).
    pub fn starmap_async<Args, R: Send + 'static>(
        &self,
        task: impl StarTask<Args, R>,
        items: impl IntoIterator<Item = Args>,
    ) -> AsyncResult<Vec<R>> {
        self.chunksize(self.chunksize).starmap_async(task, items)
    }

    /// The results of `task` on each item, in order, as they come
    /// (`imap`): items are drawn as results are consumed (one a chunk by
    /// default), at most [`ChunkedCalls::buffersize`] ahead.
    pub fn imap<'p, A: 'p, R: Send + 'static>(
        &'p self,
        task: impl MapTask<A, R> + 'p,
        items: impl IntoIterator<Item = A> + 'p,
    ) -> Imap<'p, R> {
        self.chunksize(1).imap(task, items)
    }

    /// As [`Pool::imap`], in completion order (`imap_unordered`).
    pub fn imap_unordered<'p, A: 'p, R: Send + 'static>(
        &'p self,
        task: impl MapTask<A, R> + 'p,
        items: impl IntoIterator<Item = A> + 'p,
    ) -> Imap<'p, R> {
        self.chunksize(1).imap_unordered(task, items)
    }

    /// These calls with `chunksize` items a chunk (and, for `imap`, a
    /// `buffersize`).
    pub fn chunksize(&self, chunksize: impl Into<Chunksize>) -> ChunkedCalls<'_> {
        ChunkedCalls {
            pool: self,
            chunksize: chunksize.into(),
            buffersize: None,
        }
    }

    /// Runs `f` with a [`Scope`] on this thread pool's threads: jobs
    /// given to it may borrow from the caller (the items of a slice, a
    /// local buffer), since all of them have ended when `scope` returns.
    ///
    /// ```
    /// use parjob_runtime::pool::Pool;
    /// use parjob_runtime::Backend;
    ///
    /// let pool = Pool::builder().processes(2).backend(Backend::Thread).build()?;
    /// let rows: Vec<Vec<f64>> = vec![vec![1.0, 2.0], vec![3.0, 5.0]];
    /// let means = pool.scope(|s| s.map(|row: &Vec<f64>| row.iter().sum::<f64>() / 2.0, &rows))??;
    /// assert_eq!(means, [1.5, 4.0]);
    /// # Ok::<(), parjob_runtime::Error>(())
    /// ```
    ///
    /// # Errors
    /// `Error::Config` on a process pool: a worker process cannot borrow
    /// from this one.
    pub fn scope<'s, T>(&self, f: impl for<'r> FnOnce(&Scope<'s, 'r>) -> T) -> Result<T> {
        let threads = self.threads.as_ref().ok_or_else(|| {
            Error::Config(
                "Pool::scope needs the thread backend: a worker process cannot borrow from \
                 this one (build the pool with .backend(Backend::Thread))"
                    .into(),
            )
        })?;
        Ok(threads.in_place_scope(|rayon| f(&Scope::new(rayon, self.processes))))
    }

    /// Refuses new work; what was submitted still runs (`close`).
    pub fn close(&self) {
        if lock(&self.commands).take().is_some() {
            let _ = self.control.send(Command::Close);
        }
    }

    /// Waits for every submission to end and the workers to exit, after
    /// [`Pool::close`] or [`Pool::terminate`] (`join`).
    ///
    /// # Errors
    /// `Error::Pool` when the pool is still open: a join would wait for
    /// ever for work that may still come.
    pub fn join(&self) -> Result<()> {
        if lock(&self.commands).is_some() {
            return Err(Error::Pool(
                "join() on an open pool: call close() or terminate() first".into(),
            ));
        }
        if let Some(manager) = lock(&self.manager).take() {
            let _ = manager.join();
        }
        lock(&self.callbacks).take();
        if let Some(thread) = lock(&self.callback_thread).take() {
            // From one of this pool's own callbacks (a pool dropped there),
            // the thread ends by itself once this callback returns.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
        Ok(())
    }

    /// Stops the workers now: SIGTERM, then SIGKILL for any still alive
    /// half a second later. Everything pending fails with `Error::Pool`.
    pub fn terminate(&self) {
        self.stop.store(true, Ordering::Release);
        let (done, ack) = mpsc::channel();
        lock(&self.commands).take();
        let terminate = Command::Terminate {
            grace: TERMINATE_GRACE,
            done,
        };
        // A manager that has ended already drops the command.
        if self.control.send(terminate).is_ok() {
            let _ = ack.recv();
        }
        let _ = self.join();
    }
}

impl Drop for Pool {
    /// Closes the pool and waits for its work, or terminates it with
    /// `terminate_on_drop(true)`.
    fn drop(&mut self) {
        if self.terminate_on_drop {
            self.terminate();
        } else {
            self.close();
            let _ = self.join();
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.processes)
            .finish_non_exhaustive()
    }
}

/// One callback of a result: `on_success` with the value, or `on_error`.
pub(super) fn both<T: 'static>(
    on_success: impl FnOnce(&T) + Send + 'static,
    on_error: impl FnOnce(&Error) + Send + 'static,
) -> OnDone<T> {
    Box::new(move |result: &Result<T>| match result {
        Ok(value) => on_success(value),
        Err(e) => on_error(e),
    })
}

/// One job, ready to submit.
pub(super) fn one<R: Send + 'static>(job: impl IntoJob<R>) -> Submission<R> {
    Submission::jobs(vec![job.into_job()])
}

pub(super) fn first<R>(mut values: Vec<R>) -> R {
    values.pop().expect("one job, one value")
}

/// The error for a chunk size of 0, which CPython refuses too.
pub(super) fn chunksize_zero() -> Error {
    Error::Config("chunksize 0: a chunk holds at least one item (CPython refuses 0 too)".into())
}

pub(super) fn closed() -> Error {
    Error::Pool("the pool is closed: it takes no new work".into())
}
