//! Options and how they resolve: n_jobs, backend, CPU counting, env vars.
//!
//! An option can come from four places. The most specific wins: an
//! explicit value (a builder call or an attribute argument), then scoped
//! defaults ([`config`], joblib's `parallel_config`), then the environment
//! (`PARJOB_N_JOBS`, `PARJOB_BACKEND`), then the built-in default
//! (`n_jobs = -1`, threads, auto batches, `pre_dispatch = 2 * n_jobs`). Inside a worker process the default
//! backend is threads and the default `n_jobs` is the worker's share of the
//! machine, so nested parallelism does not oversubscribe the CPUs.

use crate::error::{Error, Result};
use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Where jobs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// A plain loop in the caller's thread.
    Sequential,
    /// A rayon pool of exactly `n_jobs` threads. The default: Rust has no GIL.
    #[default]
    Thread,
    /// Re-executed worker processes that find tasks by name. For isolation:
    /// crashing FFI, `panic = "abort"`, leaks, global state.
    Process,
}

impl Backend {
    /// The spelling used in attributes and `PARJOB_BACKEND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sequential => "sequential",
            Backend::Thread => "thread",
            Backend::Process => "process",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sequential" => Ok(Backend::Sequential),
            "thread" | "threads" | "threading" => Ok(Backend::Thread),
            "process" | "processes" | "loky" | "multiprocessing" => Ok(Backend::Process),
            other => Err(Error::Config(format!(
                "unknown backend `{other}`: expected \"thread\", \"process\" or \"sequential\""
            ))),
        }
    }
}

/// How many jobs go to a worker in one message (joblib's `batch_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BatchSize {
    /// Adapt to measured durations: tiny tasks go in large batches, long
    /// tasks one at a time, and batches shrink at the tail of the input.
    #[default]
    Auto,
    /// Always this many (0 is refused).
    Fixed(usize),
}

/// How many batches may be in flight at once (joblib's `pre_dispatch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PreDispatch {
    /// `factor * n_jobs`; the default is `2 * n_jobs`.
    PerJob(usize),
    /// Exactly this many (0 is refused).
    Fixed(usize),
    /// No bound: everything is dispatched at once (joblib's `"all"`).
    All,
}

impl Default for PreDispatch {
    fn default() -> Self {
        PreDispatch::PerJob(2)
    }
}

impl FromStr for PreDispatch {
    type Err = Error;

    /// `"all"`, `"8"`, or `"3*n_jobs"` (joblib's spellings).
    fn from_str(s: &str) -> Result<Self> {
        let t: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        let bad = || {
            Error::Config(format!(
                "pre_dispatch = {s:?}: expected \"all\", a count like \"8\", or \"k*n_jobs\""
            ))
        };
        if t == "all" {
            return Ok(PreDispatch::All);
        }
        if t == "n_jobs" {
            return Ok(PreDispatch::PerJob(1));
        }
        if let Some(k) = t.strip_suffix("*n_jobs") {
            return k.parse().map(PreDispatch::PerJob).map_err(|_| bad());
        }
        t.parse().map(PreDispatch::Fixed).map_err(|_| bad())
    }
}

/// The options a `#[parallel]` attribute or a [`crate::Parallel`] carries.
/// `None` means "not given here": it falls back to scoped defaults
/// ([`config`]), then to the environment, then to the built-in default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// joblib's `n_jobs`: -1 = all cpus, -2 = all but one, 1 = sequential.
    pub n_jobs: Option<i32>,
    /// Where jobs run.
    pub backend: Option<Backend>,
    /// Jobs per message to a worker.
    pub batch_size: Option<BatchSize>,
    /// Batches in flight at most.
    pub pre_dispatch: Option<PreDispatch>,
    /// The longest one task may run.
    pub timeout: Option<Duration>,
    /// joblib-style progress lines on stderr: 0 (none) to 3 (most).
    pub verbose: Option<u8>,
    /// A progress bar on stderr.
    pub progress: Option<bool>,
}

/// Options after resolution: what a run actually uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// Number of workers, at least 1.
    pub n_jobs: usize,
    /// The backend. `n_jobs == 1` always resolves to `Sequential`.
    pub backend: Backend,
    /// Jobs per batch.
    pub batch_size: BatchSize,
    /// Batches in flight at most (`usize::MAX` for "all").
    pub pre_dispatch: usize,
    /// Per-task time limit.
    pub timeout: Option<Duration>,
    /// 0..=3.
    pub verbose: u8,
    /// Draw a progress bar.
    pub progress: bool,
}

/// Environment variable giving the default `n_jobs`.
pub const ENV_N_JOBS: &str = "PARJOB_N_JOBS";
/// Environment variable giving the default backend.
pub const ENV_BACKEND: &str = "PARJOB_BACKEND";
/// Environment variable capping [`cpu_count`].
pub const ENV_MAX_CPU_COUNT: &str = "PARJOB_MAX_CPU_COUNT";

impl Options {
    /// No option given: everything from the environment and the defaults.
    pub const fn new() -> Self {
        Options {
            n_jobs: None,
            backend: None,
            batch_size: None,
            pre_dispatch: None,
            timeout: None,
            verbose: None,
            progress: None,
        }
    }

    /// The same options with `n_jobs` set.
    pub const fn with_n_jobs(mut self, n_jobs: i32) -> Self {
        self.n_jobs = Some(n_jobs);
        self
    }

    /// The same options with `backend` set.
    pub const fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// The same options with `batch_size` set.
    pub const fn with_batch_size(mut self, batch_size: BatchSize) -> Self {
        self.batch_size = Some(batch_size);
        self
    }

    /// The same options with `pre_dispatch` set.
    pub const fn with_pre_dispatch(mut self, pre_dispatch: PreDispatch) -> Self {
        self.pre_dispatch = Some(pre_dispatch);
        self
    }

    /// The same options with `timeout` set.
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The same options with `verbose` set.
    pub const fn with_verbose(mut self, verbose: u8) -> Self {
        self.verbose = Some(verbose);
        self
    }

    /// The same options with `progress` set.
    pub const fn with_progress(mut self, progress: bool) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Each option from `self` when given, else from `fallback`.
    pub fn or(self, fallback: Options) -> Options {
        Options {
            n_jobs: self.n_jobs.or(fallback.n_jobs),
            backend: self.backend.or(fallback.backend),
            batch_size: self.batch_size.or(fallback.batch_size),
            pre_dispatch: self.pre_dispatch.or(fallback.pre_dispatch),
            timeout: self.timeout.or(fallback.timeout),
            verbose: self.verbose.or(fallback.verbose),
            progress: self.progress.or(fallback.progress),
        }
    }

    /// Resolves against scoped defaults, the environment and the built-in
    /// defaults, and checks every value.
    pub fn resolve(&self) -> Result<Resolved> {
        let options = self.or(scoped());
        let base = options.resolve_workers()?;
        let batch_size = match options.batch_size.unwrap_or_default() {
            BatchSize::Fixed(0) => {
                return Err(Error::Config(
                    "batch_size = 0 would never send a job: use \"auto\" or a positive count"
                        .into(),
                ))
            }
            b => b,
        };
        let pre_dispatch = match options.pre_dispatch.unwrap_or_default() {
            PreDispatch::Fixed(0) | PreDispatch::PerJob(0) => {
                return Err(Error::Config(
                    "pre_dispatch = 0 would never start a job: use a positive count, \"2*n_jobs\" or \"all\"".into(),
                ))
            }
            PreDispatch::Fixed(n) => n,
            PreDispatch::PerJob(k) => k.saturating_mul(base.n_jobs),
            PreDispatch::All => usize::MAX,
        };
        if options.timeout == Some(Duration::ZERO) {
            return Err(Error::Config(
                "a zero timeout would fail every task: give a positive duration, or no timeout"
                    .into(),
            ));
        }
        let verbose = options.verbose.unwrap_or(0);
        if verbose > 3 {
            return Err(Error::Config(format!(
                "verbose = {verbose}: use 0 (silent) to 3 (every batch)"
            )));
        }
        Ok(Resolved {
            batch_size,
            pre_dispatch,
            timeout: options.timeout,
            verbose,
            progress: options.progress.unwrap_or(false),
            ..base
        })
    }

    fn resolve_workers(&self) -> Result<Resolved> {
        let in_worker = crate::worker::share_in_worker();
        let n_jobs = match self.n_jobs {
            Some(n) => n,
            None => match env_var(ENV_N_JOBS) {
                Some(v) if in_worker.is_none() => v
                    .trim()
                    .parse::<i32>()
                    .map_err(|_| Error::Config(format!("{ENV_N_JOBS}={v:?} is not an integer")))?,
                _ => match in_worker {
                    Some(share) => share as i32,
                    None => -1,
                },
            },
        };
        let backend = match self.backend {
            Some(b) => b,
            None if in_worker.is_some() => Backend::Thread,
            None => match env_var(ENV_BACKEND) {
                Some(v) => v.parse::<Backend>().map_err(|_| {
                    Error::Config(format!(
                        "{ENV_BACKEND}={v:?} is not a backend: expected thread, process or sequential"
                    ))
                })?,
                None => Backend::Thread,
            },
        };
        let n_jobs = effective_n_jobs(n_jobs)?;
        let backend = if n_jobs == 1 {
            Backend::Sequential
        } else {
            backend
        };
        Ok(Resolved {
            n_jobs,
            backend,
            batch_size: BatchSize::Auto,
            pre_dispatch: 2 * n_jobs,
            timeout: None,
            verbose: 0,
            progress: false,
        })
    }
}

thread_local! {
    static SCOPED: RefCell<Vec<Options>> = const { RefCell::new(Vec::new()) };
}

/// The scoped defaults in force on this thread, innermost first.
pub fn scoped() -> Options {
    SCOPED.with(|s| {
        s.borrow()
            .iter()
            .rev()
            .fold(Options::default(), |acc, layer| acc.or(*layer))
    })
}

/// Starts scoped defaults, joblib's `parallel_config`: every `Parallel`
/// and `#[parallel]` function run inside the scope, on this thread, takes
/// its unset options from here. Explicit options still win, and scoped
/// defaults win over the environment. Scopes nest.
///
/// ```
/// use parjob_runtime::{config, Backend, Parallel};
///
/// let inner = config().n_jobs(3).backend(Backend::Sequential).scope(|| {
///     let outer = Parallel::new().resolved().unwrap();
///     let nested = config().n_jobs(5).scope(|| Parallel::new().resolved().unwrap());
///     (outer.n_jobs, nested.n_jobs, nested.backend)
/// });
/// assert_eq!(inner, (3, 5, Backend::Sequential));
/// // Explicit options win over the scope.
/// let n = config().n_jobs(3).scope(|| Parallel::new().n_jobs(2).resolved().unwrap().n_jobs);
/// assert_eq!(n, 2);
/// ```
pub fn config() -> Config {
    Config(Options::default())
}

/// Scoped defaults being built; see [`config`].
#[derive(Debug, Clone, Copy, Default)]
#[must_use = "a Config does nothing until .scope(..) or .enter()"]
pub struct Config(Options);

impl Config {
    /// Default `n_jobs`.
    pub fn n_jobs(mut self, n_jobs: i32) -> Self {
        self.0.n_jobs = Some(n_jobs);
        self
    }
    /// Default backend.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.0.backend = Some(backend);
        self
    }
    /// Default batch size.
    pub fn batch_size(mut self, batch_size: BatchSize) -> Self {
        self.0.batch_size = Some(batch_size);
        self
    }
    /// Default `pre_dispatch`.
    pub fn pre_dispatch(mut self, pre_dispatch: PreDispatch) -> Self {
        self.0.pre_dispatch = Some(pre_dispatch);
        self
    }
    /// Default per-task timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.0.timeout = Some(timeout);
        self
    }
    /// Default verbosity.
    pub fn verbose(mut self, verbose: u8) -> Self {
        self.0.verbose = Some(verbose);
        self
    }
    /// Default progress bar.
    pub fn progress(mut self, progress: bool) -> Self {
        self.0.progress = Some(progress);
        self
    }

    /// Runs `f` with these defaults in force, then restores the previous ones
    /// (also if `f` panics).
    pub fn scope<T>(self, f: impl FnOnce() -> T) -> T {
        let _guard = self.enter();
        f()
    }

    /// Puts these defaults in force until the guard is dropped.
    pub fn enter(self) -> ConfigGuard {
        SCOPED.with(|s| s.borrow_mut().push(self.0));
        ConfigGuard {
            depth: SCOPED.with(|s| s.borrow().len()),
            _not_send: std::marker::PhantomData,
        }
    }
}

/// Keeps scoped defaults in force; dropping it restores the previous ones.
/// It belongs to the thread that made it.
#[derive(Debug)]
pub struct ConfigGuard {
    depth: usize,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for ConfigGuard {
    fn drop(&mut self) {
        SCOPED.with(|s| s.borrow_mut().truncate(self.depth - 1));
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// joblib's `n_jobs` semantics: a positive value is taken as is; -1 means
/// every CPU, -2 all but one, and so on (never below 1); 0 is an error.
///
/// ```
/// let cpus = parjob_runtime::cpu_count();
/// assert_eq!(parjob_runtime::effective_n_jobs(3).unwrap(), 3);
/// assert_eq!(parjob_runtime::effective_n_jobs(-1).unwrap(), cpus);
/// assert!(parjob_runtime::effective_n_jobs(0).is_err());
/// ```
pub fn effective_n_jobs(n_jobs: i32) -> Result<usize> {
    match n_jobs {
        0 => Err(Error::Config(
            "n_jobs = 0 means no worker at all: use 1 for sequential, -1 for every CPU, or N > 0"
                .into(),
        )),
        n if n > 0 => Ok(n as usize),
        n => {
            let cpus = cpu_count() as i64;
            Ok((cpus + 1 + n as i64).max(1) as usize)
        }
    }
}

/// The number of CPUs this process may use.
///
/// It respects the CPU affinity mask (`taskset`, `sched_setaffinity`) and
/// cgroup v1/v2 CPU quotas (containers, Slurm), through
/// [`std::thread::available_parallelism`], and is capped by
/// `PARJOB_MAX_CPU_COUNT` when that is set. It is never below 1.
///
/// ```
/// assert!(parjob_runtime::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cap = env_var(ENV_MAX_CPU_COUNT)
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&c| c > 0);
    match cap {
        Some(c) => cpus.min(c),
        None => cpus,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_dispatch_spellings_parse() {
        assert_eq!("all".parse::<PreDispatch>().unwrap(), PreDispatch::All);
        assert_eq!("8".parse::<PreDispatch>().unwrap(), PreDispatch::Fixed(8));
        assert_eq!(
            "3 * n_jobs".parse::<PreDispatch>().unwrap(),
            PreDispatch::PerJob(3)
        );
        assert!("lots".parse::<PreDispatch>().is_err());
    }

    #[test]
    fn zero_values_are_config_errors() {
        for options in [
            Options::new().with_batch_size(BatchSize::Fixed(0)),
            Options::new().with_pre_dispatch(PreDispatch::Fixed(0)),
            Options::new().with_timeout(Duration::ZERO),
            Options::new().with_verbose(4),
        ] {
            assert!(
                matches!(options.resolve(), Err(Error::Config(_))),
                "{options:?}"
            );
        }
        let r = Options::new()
            .with_n_jobs(3)
            .with_pre_dispatch(PreDispatch::PerJob(2))
            .resolve()
            .unwrap();
        assert_eq!(r.pre_dispatch, 6);
    }

    #[test]
    fn scopes_nest_and_restore_even_after_a_panic() {
        assert_eq!(scoped(), Options::default());
        config().n_jobs(4).verbose(2).scope(|| {
            assert_eq!(scoped().n_jobs, Some(4));
            let guard = config().n_jobs(7).enter();
            assert_eq!((scoped().n_jobs, scoped().verbose), (Some(7), Some(2)));
            drop(guard);
            assert_eq!(scoped().n_jobs, Some(4));
            let caught = std::panic::catch_unwind(|| config().n_jobs(9).scope(|| panic!("inside")));
            assert!(caught.is_err());
            assert_eq!(scoped().n_jobs, Some(4));
        });
        assert_eq!(scoped(), Options::default());
    }

    #[test]
    fn backend_names_parse_and_unknown_lists_the_valid_ones() {
        assert_eq!("process".parse::<Backend>().unwrap(), Backend::Process);
        assert_eq!("Thread".parse::<Backend>().unwrap(), Backend::Thread);
        let e = "gpu".parse::<Backend>().unwrap_err().to_string();
        assert!(e.contains("gpu") && e.contains("process") && e.contains("sequential"));
    }

    #[test]
    fn negative_n_jobs_counts_back_from_the_cpu_count() {
        let cpus = cpu_count();
        assert_eq!(effective_n_jobs(-1).unwrap(), cpus);
        assert_eq!(effective_n_jobs(-2).unwrap(), (cpus - 1).max(1));
        assert_eq!(effective_n_jobs(-1000).unwrap(), 1);
        assert_eq!(effective_n_jobs(7).unwrap(), 7);
        assert!(matches!(effective_n_jobs(0), Err(Error::Config(_))));
    }

    #[test]
    fn one_job_is_sequential_whatever_the_backend() {
        let r = Options::new()
            .with_n_jobs(1)
            .with_backend(Backend::Process)
            .resolve()
            .unwrap();
        assert_eq!(r.backend, Backend::Sequential);
        assert_eq!(r.n_jobs, 1);
    }
}
