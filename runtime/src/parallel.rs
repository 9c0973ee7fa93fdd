//! The `Parallel` runner: joblib's `Parallel(n_jobs=..., backend=..., ...)`.
//!
//! A `Parallel` is options plus a *home*: the thread pool and worker
//! processes that its runs share, kept between runs as joblib's
//! `with Parallel(...) as p:` keeps them. Each run resolves the options
//! (explicit, then scoped, then env, then defaults), opens a session on the
//! right backend, and hands it to the scheduler ([`crate::schedule`]):
//! - `run` collects every result in input order;
//! - `iter` yields results in input order, lazily, from a bounded buffer;
//! - `iter_unordered` yields them as they complete.
//!
//! A stream borrows the home's worker processes while it runs and gives
//! them back when it ends, so a returned iterator does not borrow the
//! `Parallel`. Dead workers are replaced at the next run.
//!
//! `f::map` on a `#[parallel]` function uses a shared home per
//! `(n_jobs, backend)`. Its workers stop after [`SHARED_IDLE_TIMEOUT`]
//! without work.

use crate::backend::process::{ProcessSession, Processes};
use crate::backend::sequential::Sequential;
use crate::backend::thread::{ThreadSession, Threads};
use crate::backend::Session;
use crate::config::{Backend, BatchSize, Options, PreDispatch, Resolved};
use crate::error::Result;
use crate::schedule::{GiveBack, Ordered, Stream, Unordered};
use crate::task::{LocalCall, ProcessTask, RemoteCall, Task, Work};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// How long the shared pool behind `f::map` keeps idle workers.
pub const SHARED_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs jobs on threads, worker processes or in sequence, with joblib's
/// semantics.
///
/// ```
/// use parjob_runtime::{Backend, Job, Parallel};
///
/// let p = Parallel::new().n_jobs(2).backend(Backend::Thread);
/// let squares = p.run((0..10u64).map(|x| Job::new(move || x * x))).unwrap();
/// assert_eq!(squares, (0..10).map(|x| x * x).collect::<Vec<_>>());
/// // Streaming, in input order, drawing jobs lazily:
/// let firsts: Vec<u64> = p
///     .iter((0..).map(|x: u64| Job::new(move || x + 1)))
///     .take(3)
///     .collect::<Result<_, _>>()
///     .unwrap();
/// assert_eq!(firsts, vec![1, 2, 3]);
/// ```
#[derive(Clone)]
pub struct Parallel {
    options: Options,
    home: Arc<Home>,
}

/// The pools a `Parallel` (and its clones) reuse between runs.
#[derive(Default)]
pub(crate) struct Home {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    threads: Option<Threads>,
    processes: Option<Processes>,
}

impl Home {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for Parallel {
    fn default() -> Self {
        Parallel::new()
    }
}

impl std::fmt::Debug for Parallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parallel")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Parallel {
    /// A runner with every option left to scoped defaults, the environment
    /// and the built-in defaults (every CPU, on threads).
    pub fn new() -> Self {
        Parallel::with_options(Options::default())
    }

    /// A runner with these options.
    pub fn with_options(options: Options) -> Self {
        Parallel {
            options,
            home: Arc::new(Home::default()),
        }
    }

    /// joblib's `n_jobs`: -1 = every CPU, -2 = all but one, 1 = sequential.
    /// 0 is refused when the runner runs, with [`crate::Error::Config`].
    pub fn n_jobs(mut self, n_jobs: i32) -> Self {
        self.options.n_jobs = Some(n_jobs);
        self
    }

    /// Where jobs run.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.options.backend = Some(backend);
        self
    }

    /// Jobs per message to a worker: [`BatchSize::Auto`] (the default) or a
    /// fixed count (`.batch_size(64)`).
    pub fn batch_size(mut self, batch_size: impl Into<BatchSize>) -> Self {
        self.options.batch_size = Some(batch_size.into());
        self
    }

    /// How many batches may be in flight: a count (`.pre_dispatch(8)`),
    /// [`PreDispatch::PerJob`]`(k)` for `k * n_jobs` (default 2), or
    /// [`PreDispatch::All`].
    pub fn pre_dispatch(mut self, pre_dispatch: impl Into<PreDispatch>) -> Self {
        self.options.pre_dispatch = Some(pre_dispatch.into());
        self
    }

    /// The longest one task may run. On the process backend an overdue
    /// task's worker is killed and the run fails with
    /// [`crate::Error::Timeout`]. On threads the run fails the same way, but
    /// the thread cannot be stopped: the task runs on in the background.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// joblib-style progress lines on stderr: 0 (none) to 3 (most).
    pub fn verbose(mut self, verbose: u8) -> Self {
        self.options.verbose = Some(verbose);
        self
    }

    /// A progress bar on stderr (with the default `progress` feature).
    pub fn progress(mut self, progress: bool) -> Self {
        self.options.progress = Some(progress);
        self
    }

    /// The options as given (before resolution).
    pub fn options(&self) -> Options {
        self.options
    }

    /// The options this runner would use now, after scoped defaults, the
    /// environment and the defaults.
    pub fn resolved(&self) -> Result<Resolved> {
        self.options.resolve()
    }

    /// Runs every job and returns the results in input order, or the first
    /// error. Jobs are drawn from the iterator lazily.
    pub fn run<W, I>(&self, jobs: I) -> Result<Vec<W::Output>>
    where
        W: Work,
        I: IntoIterator<Item = W>,
    {
        self.stream(jobs.into_iter(), true, false).collect_ordered()
    }

    /// Runs the jobs and yields their results in input order as they become
    /// available. At most `pre_dispatch` batches are in flight, and results
    /// waiting for an earlier one are bounded too, so a slow early job
    /// cannot pile up memory behind it.
    pub fn iter<W, I>(&self, jobs: I) -> Ordered<I::IntoIter>
    where
        W: Work,
        I: IntoIterator<Item = W>,
    {
        Ordered {
            stream: self.stream(jobs.into_iter(), true, true),
        }
    }

    /// Runs the jobs and yields `(input index, result)` as each completes.
    pub fn iter_unordered<W, I>(&self, jobs: I) -> Unordered<I::IntoIter>
    where
        W: Work,
        I: IntoIterator<Item = W>,
    {
        Unordered {
            stream: self.stream(jobs.into_iter(), false, true),
        }
    }

    fn stream<I>(&self, jobs: I, ordered: bool, bounded: bool) -> Stream<I>
    where
        I: Iterator,
        I::Item: Work,
    {
        let start = self.options.resolve().and_then(|plan| {
            let session = self.session::<I::Item>(&plan)?;
            Ok((plan, session))
        });
        let home = Arc::clone(&self.home);
        let give_back: GiveBack = Box::new(move |pool: Processes| {
            let mut state = home.state();
            if state.processes.is_none() {
                state.processes = Some(pool);
            }
        });
        Stream::new(jobs, start, Some(give_back), ordered, bounded)
    }

    /// This runner's thread pool, of `n_jobs` threads.
    pub(crate) fn threads(&self, n_jobs: usize) -> Result<Threads> {
        Self::threads_in(&mut self.home.state(), n_jobs)
    }

    fn threads_in(state: &mut State, n_jobs: usize) -> Result<Threads> {
        if state.threads.as_ref().map(Threads::n_jobs) != Some(n_jobs) {
            state.threads = Some(Threads::new(n_jobs)?);
        }
        Ok(state.threads.clone().expect("just set"))
    }

    fn session<W: Work>(&self, plan: &Resolved) -> Result<Box<dyn Session<W>>> {
        let mut state = self.home.state();
        Ok(match plan.backend {
            Backend::Sequential => Box::new(Sequential::new(plan.timeout)),
            Backend::Thread => Box::new(ThreadSession::new(
                Self::threads_in(&mut state, plan.n_jobs)?,
                plan.timeout,
                plan.verbose > 0,
            )),
            Backend::Process => {
                let pool = match state.processes.take() {
                    Some(pool) if pool.n_jobs() == plan.n_jobs => pool,
                    _ => Processes::new(plan.n_jobs),
                };
                match ProcessSession::new(pool, plan.timeout) {
                    Ok(session) => Box::new(session),
                    Err(e) => return Err(e),
                }
            }
        })
    }

    /// The pids of this runner's live worker processes (empty unless the
    /// process backend has run, or while a stream holds them).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.home
            .state()
            .processes
            .as_ref()
            .map(Processes::pids)
            .unwrap_or_default()
    }

    /// Stops this runner's workers and threads now. A later run starts new ones.
    pub fn shutdown(&self) {
        let mut state = self.home.state();
        state.processes = None;
        state.threads = None;
    }
}

impl From<usize> for BatchSize {
    fn from(n: usize) -> Self {
        BatchSize::Fixed(n)
    }
}

impl From<usize> for PreDispatch {
    fn from(n: usize) -> Self {
        PreDispatch::Fixed(n)
    }
}

type SharedHomes = Mutex<HashMap<(usize, Backend), Arc<Home>>>;

fn shared_homes() -> &'static SharedHomes {
    static HOMES: OnceLock<SharedHomes> = OnceLock::new();
    HOMES.get_or_init(|| {
        // Without the reaper thread (the OS refused one), idle shared
        // workers simply stay up until the process exits.
        let _ = std::thread::Builder::new()
            .name("parjob-reaper".into())
            .spawn(reap_idle_pools);
        Mutex::new(HashMap::new())
    })
}

static IDLE_TIMEOUT: Mutex<Duration> = Mutex::new(SHARED_IDLE_TIMEOUT);

fn reap_idle_pools() {
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let timeout = *IDLE_TIMEOUT.lock().unwrap_or_else(|p| p.into_inner());
        let homes: Vec<Arc<Home>> = shared_homes()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for home in homes {
            let Ok(mut state) = home.state.try_lock() else {
                continue;
            };
            if state
                .processes
                .as_ref()
                .is_some_and(|p| p.last_used.elapsed() >= timeout)
            {
                state.processes = None;
            }
        }
    }
}

/// Changes how long shared pools keep idle workers (for tests).
#[doc(hidden)]
pub fn set_shared_idle_timeout(timeout: Duration) {
    *IDLE_TIMEOUT.lock().unwrap_or_else(|p| p.into_inner()) = timeout;
}

/// A runner with these options on the shared pools, as `f::map` uses.
pub fn shared(options: Options) -> Result<Parallel> {
    let resolved = options.resolve()?;
    let key = (resolved.n_jobs, resolved.backend);
    let mut homes = shared_homes().lock().unwrap_or_else(|p| p.into_inner());
    let home = Arc::clone(homes.entry(key).or_default());
    Ok(Parallel { options, home })
}

/// What `f::map` returns for each `return_as`.
#[doc(hidden)]
pub mod map {
    use super::*;
    use rayon::iter::{IndexedParallelIterator, IntoParallelIterator};

    /// The calls `f::map` streams for a thread-backend task.
    pub type LocalCalls<T, I> = std::iter::Map<I, fn(<T as Task>::Args) -> LocalCall<T>>;
    /// The calls `f::map` streams for a process task.
    pub type RemoteCalls<T, I> = std::iter::Map<I, fn(<T as Task>::Args) -> RemoteCall<T>>;

    /// `f::map` of a thread-backend task, `return_as = "list"`.
    pub fn list<T: Task, I: IntoIterator<Item = T::Args>>(items: I) -> Result<Vec<T::Output>> {
        shared(T::options())?.run(items.into_iter().map(LocalCall::<T>))
    }

    /// `f::map` of a process task, `return_as = "list"`.
    pub fn list_remote<T: ProcessTask, I: IntoIterator<Item = T::Args>>(
        items: I,
    ) -> Result<Vec<T::Output>> {
        list_remote_with::<T, I>(T::options(), items)
    }

    /// A process task over `items` with these options, results in input
    /// order: `f::map`, and loops and `parallel_for!` on the process
    /// backend, whose options are their own.
    pub fn list_remote_with<T: ProcessTask, I: IntoIterator<Item = T::Args>>(
        options: Options,
        items: I,
    ) -> Result<Vec<T::Output>> {
        shared(options)?.run(items.into_iter().map(RemoteCall::<T>))
    }

    /// `return_as = "generator"`.
    pub fn generator<T: Task, I: IntoIterator<Item = T::Args>>(
        items: I,
    ) -> Ordered<LocalCalls<T, I::IntoIter>> {
        let call: fn(T::Args) -> LocalCall<T> = LocalCall::<T>;
        runner(T::options()).iter(items.into_iter().map(call))
    }

    /// `return_as = "generator"`, process task.
    pub fn generator_remote<T: ProcessTask, I: IntoIterator<Item = T::Args>>(
        items: I,
    ) -> Ordered<RemoteCalls<T, I::IntoIter>> {
        generator_remote_with::<T, I>(T::options(), items)
    }

    /// A process task's results in input order, as they come, with these
    /// options.
    pub fn generator_remote_with<T: ProcessTask, I: IntoIterator<Item = T::Args>>(
        options: Options,
        items: I,
    ) -> Ordered<RemoteCalls<T, I::IntoIter>> {
        let call: fn(T::Args) -> RemoteCall<T> = RemoteCall::<T>;
        runner(options).iter(items.into_iter().map(call))
    }

    /// `return_as = "generator_unordered"`.
    pub fn unordered<T: Task, I: IntoIterator<Item = T::Args>>(
        items: I,
    ) -> Unordered<LocalCalls<T, I::IntoIter>> {
        let call: fn(T::Args) -> LocalCall<T> = LocalCall::<T>;
        runner(T::options()).iter_unordered(items.into_iter().map(call))
    }

    /// `return_as = "generator_unordered"`, process task.
    pub fn unordered_remote<T: ProcessTask, I: IntoIterator<Item = T::Args>>(
        items: I,
    ) -> Unordered<RemoteCalls<T, I::IntoIter>> {
        unordered_remote_with::<T, I>(T::options(), items)
    }

    /// A process task's results as they complete, with these options.
    pub fn unordered_remote_with<T: ProcessTask, I: IntoIterator<Item = T::Args>>(
        options: Options,
        items: I,
    ) -> Unordered<RemoteCalls<T, I::IntoIter>> {
        let call: fn(T::Args) -> RemoteCall<T> = RemoteCall::<T>;
        runner(options).iter_unordered(items.into_iter().map(call))
    }

    /// `f::par_map`: an indexed input, split across threads as rayon
    /// splits it (see `runtime/src/indexed.rs`). `call` is `LocalCall` or,
    /// for a process task, `RemoteCall`: the job the scheduler runs when
    /// the plan does not split on threads.
    pub fn indexed<T: Task, W: Work<Output = T::Output>, I>(
        items: I,
        call: fn(T::Args) -> W,
    ) -> Result<Vec<T::Output>>
    where
        I: IntoParallelIterator<Item = T::Args>,
        I::Iter: IndexedParallelIterator,
    {
        crate::indexed::run::<T, _, _>(&shared(T::options())?, items.into_par_iter(), call)
    }

    /// The shared runner for these options, or one that reports their
    /// configuration error when it runs.
    pub fn runner(options: Options) -> Parallel {
        shared(options).unwrap_or_else(|_| Parallel::with_options(options))
    }
}
