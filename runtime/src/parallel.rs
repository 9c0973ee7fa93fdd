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

use crate::backend::open::{self, Api, Home, Spec, Workers};
use crate::backend::process::{MemoryRules, Retry};
use crate::backend::thread::Threads;
use crate::backend::Session;
use crate::error::{Error, Result};
use crate::options::{
    for_each_option, option_setters, Backend, BatchSize, OnError, Options, Plan, PreDispatch,
};
use crate::schedule::{Ordered, Stream, Unordered};
use crate::shm::Sharing;
use crate::task::{Declared, Work};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How long the shared pool behind `f::map` keeps idle workers.
pub(crate) const SHARED_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

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

    for_each_option!(option_setters, options);

    /// The options as given (before resolution).
    pub fn options(&self) -> Options {
        self.options
    }

    /// The options this runner would use now, after scoped defaults, the
    /// environment and the defaults.
    pub fn plan(&self) -> Result<Plan> {
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

    /// Runs every job, whatever fails, and returns each one's outcome in
    /// input order: `on_error = "continue"` for this run. The outer `Err`
    /// is for what ends a run as a whole (a configuration error, no worker
    /// entry, the input's panic, an MPI rank's death).
    ///
    /// ```
    /// use parjob_runtime::{Job, Parallel};
    ///
    /// let jobs = (0..4u32).map(|i| Job::new(move || if i == 2 { panic!("two") } else { i }));
    /// let outcomes = Parallel::new().n_jobs(2).run_results(jobs).unwrap();
    /// assert_eq!(outcomes.len(), 4);
    /// assert!(outcomes[2].is_err() && *outcomes[3].as_ref().unwrap() == 3);
    /// ```
    pub fn run_results<W, I>(&self, jobs: I) -> Result<Vec<Result<W::Output>>>
    where
        W: Work,
        I: IntoIterator<Item = W>,
    {
        self.clone()
            .on_error(OnError::Continue)
            .stream(jobs.into_iter(), true, false)
            .collect_results()
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

    /// A stream of `jobs`, resolved with the first job's task as the task
    /// level of the precedence rule (a job remembers its task's options).
    fn stream<I>(&self, mut jobs: I, ordered: bool, bounded: bool) -> Stream<I>
    where
        I: Iterator,
        I::Item: Work,
    {
        // The first job is drawn before the plan exists (its task is part
        // of the plan), under this runner's own threshold.
        let provisional = self.options.resolve().ok();
        let sharing = Sharing::new(
            provisional.and_then(|p| p.max_nbytes),
            provisional.and_then(|p| p.temp_folder).map(|f| f.path()),
        );
        let entered = sharing.enter();
        let first = catch_unwind(AssertUnwindSafe(|| jobs.next()));
        drop(entered);
        let first = match first {
            Ok(first) => first,
            Err(payload) => {
                let e = Error::InputPanicked {
                    index: 0,
                    message: crate::panic::payload_text(&*payload),
                };
                return Stream::new(jobs, None, Err(e), ordered, bounded, Some(sharing))
                    .input_ended();
            }
        };
        let declared = first.as_ref().map(Work::declared).unwrap_or_default();
        let plan = self.options.resolve_for(declared);
        let empty = first.is_none();
        let stream = self.stream_planned(plan, first, jobs, ordered, bounded, Some(sharing));
        if empty {
            stream.input_ended()
        } else {
            stream
        }
    }

    /// A stream of `jobs` (after `first`, already drawn, in `sharing` when
    /// the caller made one) under a plan resolved once by the caller.
    pub(crate) fn stream_planned<I>(
        &self,
        plan: Result<Plan>,
        first: Option<I::Item>,
        jobs: I,
        ordered: bool,
        bounded: bool,
        sharing: Option<Arc<Sharing>>,
    ) -> Stream<I>
    where
        I: Iterator,
        I::Item: Work,
    {
        let start = plan.and_then(|plan| {
            let session = self.session::<I::Item>(&plan)?;
            Ok((plan, session))
        });
        Stream::new(jobs, first, start, ordered, bounded, sharing)
    }

    /// This runner's thread pool, of `n_jobs` threads.
    pub(crate) fn threads(&self, n_jobs: usize) -> Result<Threads> {
        self.home.threads(n_jobs)
    }

    fn session<W: Work>(&self, plan: &Plan) -> Result<Box<dyn Session<W>>> {
        if plan.verbose > 0 {
            if let Some(line) = process_only_note(plan) {
                eprintln!("{line}");
            }
        }
        let spec = Spec {
            api: Api::Parallel,
            backend: plan.backend,
            n_jobs: plan.n_jobs,
            timeout: plan.timeout,
            verbose: plan.verbose > 0,
            source: plan.backend_source,
            max_nbytes: plan.max_nbytes,
            keep_going: plan.on_error == OnError::Continue,
            retry: Retry {
                retries: plan.retries,
                panics: plan.retry_panics,
                verbose: plan.verbose > 0,
            },
            memory: MemoryRules {
                limit: plan.max_worker_memory,
                report_peaks: plan.verbose >= 2,
                say_how: plan.verbose >= 1,
            },
            speculate: plan.speculate,
        };
        let workers = Workers::Home {
            home: &self.home,
            initializer: plan.initializer,
            inner_threads: plan.inner_max_num_threads,
        };
        Ok(open::open(&spec, workers)?.boxed())
    }

    /// The pids of this runner's live worker processes (empty unless the
    /// process backend has run, or while a stream holds them).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.home.processes.pids()
    }

    /// Stops this runner's workers and threads now. A later run starts new ones.
    pub fn shutdown(&self) {
        self.home.clear();
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
            home.processes.reap_if_idle(timeout);
        }
    }
}

/// Changes how long shared pools keep idle workers (for tests).
#[doc(hidden)]
pub fn set_shared_idle_timeout(timeout: Duration) {
    *IDLE_TIMEOUT.lock().unwrap_or_else(|p| p.into_inner()) = timeout;
}

/// The shared home for runs with this plan's `(n_jobs, backend)`, as
/// `f::map` uses.
fn shared_home(plan: &Plan) -> Arc<Home> {
    let mut homes = shared_homes().lock().unwrap_or_else(|p| p.into_inner());
    Arc::clone(homes.entry((plan.n_jobs, plan.backend)).or_default())
}

/// A runner with these options on the shared pools, and its plan, with
/// `declared` as the task level. A configuration error is reported when
/// the runner runs.
pub(crate) fn shared(options: Options, declared: Declared) -> (Parallel, Result<Plan>) {
    let plan = options.resolve_for(declared);
    let home = match &plan {
        Ok(plan) => shared_home(plan),
        Err(_) => Arc::new(Home::default()),
    };
    (Parallel { options, home }, plan)
}

/// The shared thread pool of `n_jobs` threads, as marked loops use.
pub(crate) fn shared_threads(n_jobs: usize) -> Result<Threads> {
    let mut homes = shared_homes().lock().unwrap_or_else(|p| p.into_inner());
    let home = Arc::clone(homes.entry((n_jobs, Backend::Thread)).or_default());
    drop(homes);
    home.threads(n_jobs)
}

/// The `verbose` line for options set on a run that does not use worker
/// processes, where they do nothing: a thread cannot be stopped, run
/// twice or held to a memory limit of its own.
fn process_only_note(plan: &Plan) -> Option<String> {
    if plan.backend == crate::options::Backend::Process {
        return None;
    }
    let mut set = Vec::new();
    if plan.retries > 0 && !plan.backend.is_mpi() {
        set.push("retries");
    }
    if plan.max_worker_memory.is_some() {
        set.push("max_worker_memory");
    }
    (!set.is_empty()).then(|| {
        format!(
            "[parjob] {} {} worker processes only, and this run is on the {} backend: \
             set backend = \"process\" for {}",
            set.join(" and "),
            if set.len() == 1 {
                "applies to"
            } else {
                "apply to"
            },
            plan.backend,
            if set.len() == 1 { "it" } else { "them" }
        )
    })
}
