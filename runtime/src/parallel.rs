//! The `Parallel` runner: joblib's `Parallel(n_jobs=..., backend=...)`.
//!
//! A `Parallel` resolves its options at each run, picks the backend, and
//! collects results in input order. The first error (in completion order)
//! stops the run: jobs not yet started are dropped, and worker processes
//! still busy are killed, so `run` returns as soon as the error is known.
//! A `Parallel` keeps its thread pool or worker processes between runs, as
//! joblib's `with Parallel(...) as p:` does; dead workers are replaced at
//! the next run.
//!
//! `f::map` on a `#[parallel]` function uses a shared `Parallel` per
//! `(n_jobs, backend)`, whose workers stop after [`SHARED_IDLE_TIMEOUT`]
//! without work.

use crate::backend::process::Processes;
use crate::backend::sequential::Sequential;
use crate::backend::thread::Threads;
use crate::backend::Executor;
use crate::config::{Backend, Options, Resolved};
use crate::error::{Error, Result};
use crate::task::{Job, Task};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How long the shared pool behind `f::map` keeps idle workers.
pub const SHARED_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs jobs on threads, worker processes or in sequence, with joblib's
/// semantics, and returns results in input order.
///
/// ```
/// use parjob_runtime::{Backend, Job, Parallel};
///
/// let p = Parallel::new().n_jobs(2).backend(Backend::Thread);
/// let squares = p.run((0..10u64).map(|x| Job::new(move || x * x))).unwrap();
/// assert_eq!(squares, (0..10).map(|x| x * x).collect::<Vec<_>>());
/// // The same runner is reused: its threads stay up between runs.
/// assert_eq!(p.run((0..3u64).map(|x| Job::new(move || x))).unwrap(), vec![0, 1, 2]);
/// ```
pub struct Parallel {
    options: Options,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    threads: Option<Threads>,
    processes: Option<Processes>,
    last_used: Option<Instant>,
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
    /// A runner with every option left to the environment and the defaults
    /// (`PARJOB_N_JOBS`, `PARJOB_BACKEND`; else every CPU, on threads).
    pub fn new() -> Self {
        Parallel::with_options(Options::default())
    }

    /// A runner with these options.
    pub fn with_options(options: Options) -> Self {
        Parallel {
            options,
            state: Mutex::new(State::default()),
        }
    }

    /// joblib's `n_jobs`: -1 = every CPU, -2 = all but one, 1 = sequential.
    /// 0 is refused when the runner runs, with [`Error::Config`].
    pub fn n_jobs(mut self, n_jobs: i32) -> Self {
        self.options.n_jobs = Some(n_jobs);
        self
    }

    /// Where jobs run.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.options.backend = Some(backend);
        self
    }

    /// The options as given (before resolution).
    pub fn options(&self) -> Options {
        self.options
    }

    /// The options this runner would use now, after the environment and defaults.
    pub fn resolved(&self) -> Result<Resolved> {
        self.options.resolve()
    }

    /// Runs every job and returns their results in input order, or the
    /// first error. Jobs are drawn from the iterator lazily.
    pub fn run<R, I>(&self, jobs: I) -> Result<Vec<R>>
    where
        R: Send + 'static,
        I: IntoIterator<Item = Job<R>>,
    {
        let resolved = self.options.resolve()?;
        let mut slots: Vec<Option<R>> = Vec::new();
        let mut failure: Option<Error> = None;
        let deliver = |index: usize, result: Result<R>| match result {
            Ok(value) => {
                if slots.len() <= index {
                    slots.resize_with(index + 1, || None);
                }
                slots[index] = Some(value);
                ControlFlow::Continue(())
            }
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        };
        let jobs = jobs.into_iter();
        match resolved.backend {
            Backend::Sequential => Sequential.execute(jobs, deliver)?,
            Backend::Thread => {
                let mut threads = {
                    let mut state = self.state();
                    if state.threads.as_ref().map(Threads::n_jobs) != Some(resolved.n_jobs) {
                        state.threads = Some(Threads::new(resolved.n_jobs)?);
                    }
                    state.threads.as_ref().expect("just set").handle()
                };
                threads.execute(jobs, deliver)?
            }
            Backend::Process => {
                let mut state = self.state();
                if state.processes.as_ref().map(Processes::n_jobs) != Some(resolved.n_jobs) {
                    state.processes = Some(Processes::new(resolved.n_jobs));
                }
                let outcome = state
                    .processes
                    .as_mut()
                    .expect("just set")
                    .execute(jobs, deliver);
                state.last_used = Some(Instant::now());
                outcome?
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(slots
            .into_iter()
            .map(|s| s.expect("every index below the last was delivered"))
            .collect())
    }

    /// The pids of this runner's live worker processes (empty unless the
    /// process backend has run).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.state()
            .processes
            .as_ref()
            .map(Processes::pids)
            .unwrap_or_default()
    }

    /// Stops this runner's workers and threads now. A later run starts new ones.
    pub fn shutdown(&self) {
        let mut state = self.state();
        state.processes = None;
        state.threads = None;
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn idle_since(&self) -> Option<Instant> {
        let state = self.state.try_lock().ok()?;
        state.processes.as_ref()?;
        state.last_used
    }
}

type SharedPools = Mutex<HashMap<(usize, Backend), Arc<Parallel>>>;

fn shared_pools() -> &'static SharedPools {
    static POOLS: OnceLock<SharedPools> = OnceLock::new();
    POOLS.get_or_init(|| {
        std::thread::Builder::new()
            .name("parjob-reaper".into())
            .spawn(reap_idle_pools)
            .expect("starting the parjob reaper thread");
        Mutex::new(HashMap::new())
    })
}

static IDLE_TIMEOUT: Mutex<Duration> = Mutex::new(SHARED_IDLE_TIMEOUT);

fn reap_idle_pools() {
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let timeout = *IDLE_TIMEOUT.lock().unwrap_or_else(|p| p.into_inner());
        let pools: Vec<Arc<Parallel>> = shared_pools()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for p in pools {
            if p.idle_since().is_some_and(|t| t.elapsed() >= timeout) {
                p.state().processes = None;
            }
        }
    }
}

/// Changes how long shared pools keep idle workers (for tests).
#[doc(hidden)]
pub fn set_shared_idle_timeout(timeout: Duration) {
    *IDLE_TIMEOUT.lock().unwrap_or_else(|p| p.into_inner()) = timeout;
}

/// The shared runner for these options, as used by `f::map`.
pub fn shared(options: Options) -> Result<Arc<Parallel>> {
    let resolved = options.resolve()?;
    let key = (resolved.n_jobs, resolved.backend);
    let mut pools = shared_pools().lock().unwrap_or_else(|p| p.into_inner());
    Ok(Arc::clone(pools.entry(key).or_insert_with(|| {
        Arc::new(
            Parallel::new()
                .n_jobs(resolved.n_jobs as i32)
                .backend(resolved.backend),
        )
    })))
}

/// `f::map`: runs task `T` over `jobs` on the shared runner for `T`'s options.
#[doc(hidden)]
pub fn map_task<T: Task>(jobs: impl Iterator<Item = Job<T::Output>>) -> Result<Vec<T::Output>> {
    shared(T::options())?.run(jobs)
}
