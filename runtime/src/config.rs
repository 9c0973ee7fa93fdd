//! Where a run's options come from, and how they resolve into a [`Plan`].
//!
//! An option can come from five places. The most specific wins:
//! 1. an explicit value: a builder call (`Parallel::new().n_jobs(4)`), a
//!    per-call option (`f::with(|p| p.n_jobs(4))`), a marked loop's
//!    attribute;
//! 2. scoped defaults ([`config`], joblib's `parallel_config`);
//! 3. the task's own attribute (`#[parallel(n_jobs = 2)]`; for
//!    `Parallel::run`, the first job's task);
//! 4. the environment (`PARJOB_N_JOBS`, `PARJOB_BACKEND`,
//!    `PARJOB_MAX_NBYTES`, `PARJOB_TEMP_FOLDER`);
//! 5. the built-in default (`n_jobs = -1`, threads, auto batches,
//!    `pre_dispatch = 2 * n_jobs`).
//!
//! joblib's `prefer` hint picks the backend only when no level names one
//! (and never sends work that cannot cross a process boundary to
//! processes), and `require = "sharedmem"` turns a process backend from
//! levels 2 to 4 into threads. Work that cannot cross (a closure, a task
//! without `backend = "process"`) under a process backend is an error,
//! [`Error::NotAProcessTask`]; it never runs silently in the parent.
//! Inside a worker process the default backend is threads and the default
//! `n_jobs` is the worker's share of the machine, so nested parallelism
//! does not oversubscribe the CPUs.

use crate::backend::nesting::{self, Nesting};
use crate::error::{Error, Result};
use crate::options::NestedIn;
use crate::options::{
    effective_n_jobs, env_var, for_each_option, option_setters, Backend, BackendSource, BatchSize,
    MaxNbytes, OnError, Options, Plan, PreDispatch, Prefer, Require, TempFolder, TraceFile,
};
use crate::task::Declared;
use std::cell::RefCell;
use std::time::Duration;

/// Environment variable giving the default `n_jobs`.
pub(crate) const ENV_N_JOBS: &str = "PARJOB_N_JOBS";
/// Environment variable giving the default backend.
pub(crate) const ENV_BACKEND: &str = "PARJOB_BACKEND";
/// Environment variable giving the default `max_nbytes`.
pub(crate) const ENV_MAX_NBYTES: &str = "PARJOB_MAX_NBYTES";
/// Environment variable giving the default `inner_max_num_threads`.
pub(crate) const ENV_INNER_MAX_NUM_THREADS: &str = "PARJOB_INNER_MAX_NUM_THREADS";
/// Environment variable giving the default `temp_folder`.
pub(crate) const ENV_TEMP_FOLDER: &str = "PARJOB_TEMP_FOLDER";
/// Environment variable giving the default `on_error`.
pub(crate) const ENV_ON_ERROR: &str = "PARJOB_ON_ERROR";
/// Environment variable giving the default `retries`.
pub(crate) const ENV_RETRIES: &str = "PARJOB_RETRIES";
/// Environment variable giving the default `max_worker_memory`.
pub(crate) const ENV_MAX_WORKER_MEMORY: &str = "PARJOB_MAX_WORKER_MEMORY";
/// Environment variable turning `speculate` on.
pub(crate) const ENV_SPECULATE: &str = "PARJOB_SPECULATE";
/// Environment variable giving the default `speculation_multiplier`.
pub(crate) const ENV_SPECULATION_MULTIPLIER: &str = "PARJOB_SPECULATION_MULTIPLIER";
/// `speculation_multiplier` when none is given.
pub(crate) const DEFAULT_SPECULATION_MULTIPLIER: u32 = 4;

impl Options {
    /// Resolves against scoped defaults, the environment and the built-in
    /// defaults, and checks every value.
    pub fn resolve(&self) -> Result<Plan> {
        self.resolve_for(Declared::default())
    }

    /// Resolves with `task` as the task's own options (its attribute), by
    /// the one precedence rule: these options (explicit) > scoped
    /// [`config`] > `task` > `PARJOB_*` environment > built-in defaults.
    pub(crate) fn resolve_for(&self, task: Declared) -> Result<Plan> {
        let scoped = scoped();
        let options = self.or(scoped).or(task.options);
        let levels = [self, &scoped, &task.options];
        let base = resolve_workers(&options, levels, task.crosses)?;
        let on_error = on_error(options.on_error)?;
        let retries = retries(options.retries)?;
        let speculate = speculate(&options)?;
        let batch_size = match options.batch_size.unwrap_or_default() {
            BatchSize::Fixed(0) => {
                return Err(Error::Config(
                    "batch_size = 0 would never send a job: use \"auto\" or a positive count"
                        .into(),
                ))
            }
            // Under "continue" a failure (a panic, a dead worker, a
            // timeout) costs only its own item: worker processes, and
            // threads without a timeout, report it as a piece of its batch
            // and go on (`continuing.rs`, `run_pieces_here`); elsewhere,
            // and together with `retries` or `speculate`, a batch holds
            // one job. (`retries` and `speculate` alone keep batching: a
            // retry or a copy is cut out of the kept frame.)
            _ if on_error == OnError::Continue
                && (retries > 0
                    || speculate.is_some()
                    || !pieces_of_batches(base.backend, options.timeout)) =>
            {
                BatchSize::Fixed(1)
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
        let max_nbytes = match options.max_nbytes {
            Some(m) => m,
            None => match env_var(ENV_MAX_NBYTES) {
                Some(text) => text.parse::<MaxNbytes>().map_err(|_| {
                    Error::Config(format!(
                        "{ENV_MAX_NBYTES}={text:?}: expected a size like \"1M\", or \"none\""
                    ))
                })?,
                None => MaxNbytes::default(),
            },
        };
        Ok(Plan {
            batch_size,
            pre_dispatch,
            timeout: options.timeout,
            max_nbytes: max_nbytes.limit(),
            temp_folder: options
                .temp_folder
                .or_else(|| env_var(ENV_TEMP_FOLDER).map(TempFolder::new)),
            verbose: parjob_syntax::verbose_level(options.verbose.unwrap_or(0)),
            progress: options.progress.unwrap_or(false),
            initializer: options.initializer,
            inner_max_num_threads: inner_max_num_threads(options.inner_max_num_threads)?,
            on_error,
            retries,
            retry_panics: options.retry_panics.unwrap_or(false),
            max_worker_memory: max_worker_memory(options.max_worker_memory)?,
            speculate,
            trace: options
                .trace
                .or_else(|| env_var(crate::trace::ENV_TRACE).map(TraceFile::new)),
            ..base
        })
    }
}

/// Whether `backend` reports a failed job under "continue" as a piece of
/// its batch, so batches keep their size: worker processes (a death or a
/// timeout reruns what it lost), and threads without a timeout (a
/// timed-out thread holds its batch's other values).
fn pieces_of_batches(backend: Backend, timeout: Option<Duration>) -> bool {
    match backend {
        Backend::Process => true,
        Backend::Thread => timeout.is_none(),
        _ => false,
    }
}

/// `on_error` as given, else from its variable, else "stop".
fn on_error(given: Option<OnError>) -> Result<OnError> {
    match given {
        Some(on_error) => Ok(on_error),
        None => match env_var(ENV_ON_ERROR) {
            Some(text) => text
                .parse::<OnError>()
                .map_err(|e| Error::Config(format!("{ENV_ON_ERROR}: {e}"))),
            None => Ok(OnError::Stop),
        },
    }
}

/// `retries` as given, else from its variable, else 0.
fn retries(given: Option<u32>) -> Result<u32> {
    match given {
        Some(n) => Ok(n),
        None => match env_var(ENV_RETRIES) {
            Some(text) => text.trim().parse::<u32>().map_err(|_| {
                Error::Config(format!(
                    "{ENV_RETRIES}={text:?}: expected how many more times a job may run, like 2"
                ))
            }),
            None => Ok(0),
        },
    }
}

/// `max_worker_memory` as given, else from its variable; 0 is refused.
fn max_worker_memory(given: Option<u64>) -> Result<Option<u64>> {
    let bytes = match given {
        Some(bytes) => bytes,
        None => match env_var(ENV_MAX_WORKER_MEMORY) {
            Some(text) => parjob_syntax::size_bytes(&text).ok_or_else(|| {
                Error::Config(format!(
                    "{ENV_MAX_WORKER_MEMORY}={text:?}: expected a size like \"2GB\" or \"512MB\""
                ))
            })?,
            None => return Ok(None),
        },
    };
    if bytes == 0 {
        return Err(Error::Config(
            "max_worker_memory = 0 would stop every worker: give a size like \"2GB\", or no limit"
                .into(),
        ));
    }
    Ok(Some(bytes))
}

/// `speculate` and its multiplier, each as given, else from its variable.
fn speculate(options: &Options) -> Result<Option<u32>> {
    let on = match options.speculate {
        Some(on) => on,
        None => match env_var(ENV_SPECULATE) {
            Some(text) => match text.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    return Err(Error::Config(format!(
                        "{ENV_SPECULATE}={text:?}: expected true or false"
                    )))
                }
            },
            None => false,
        },
    };
    let k = match options.speculation_multiplier {
        Some(k) => k,
        None => match env_var(ENV_SPECULATION_MULTIPLIER) {
            Some(text) => text
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|&k| k >= 2)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{ENV_SPECULATION_MULTIPLIER}={text:?}: expected a whole number, at least 2, like 4"
                    ))
                })?,
            None => DEFAULT_SPECULATION_MULTIPLIER,
        },
    };
    if k < 2 {
        return Err(Error::Config(format!(
            "speculation_multiplier = {k} would copy jobs that are not late: use 2 or more (default 4)"
        )));
    }
    Ok(on.then_some(k))
}

/// `inner_max_num_threads` as given, else from its variable; 0 is refused.
fn inner_max_num_threads(given: Option<usize>) -> Result<Option<usize>> {
    let value = match given {
        Some(n) => Some(n),
        None => match env_var(ENV_INNER_MAX_NUM_THREADS) {
            Some(v) => Some(v.trim().parse::<usize>().map_err(|_| {
                Error::Config(format!(
                    "{ENV_INNER_MAX_NUM_THREADS}={v:?} is not a positive integer"
                ))
            })?),
            None => None,
        },
    };
    if value == Some(0) {
        return Err(Error::Config(
            "inner_max_num_threads = 0 would leave a worker no thread: give a positive count, \
             or leave it unset for each worker's share of the CPUs"
                .into(),
        ));
    }
    Ok(value)
}

/// `n_jobs` and the backend, with where the backend came from. `levels`
/// are the explicit, scoped and task options, most specific first;
/// `merged` is them merged. Inside another run's worker, the defaults are
/// the nesting level's (`backend::nesting`).
fn resolve_workers(merged: &Options, levels: [&Options; 3], crosses: bool) -> Result<Plan> {
    let here = nesting::current();
    let nested = here.level > 0;
    let n_jobs_asked = match merged.n_jobs {
        Some(n) => n,
        None if nested => here.cpus as i32,
        None => match env_var(ENV_N_JOBS) {
            Some(v) => v
                .trim()
                .parse::<i32>()
                .map_err(|_| Error::Config(format!("{ENV_N_JOBS}={v:?} is not an integer")))?,
            None => -1,
        },
    };
    let (backend, source) = resolve_backend(merged, levels, crosses, here)?;
    let (backend, source) = if in_mpi_rank() && backend.is_remote() {
        // Inside a rank, nested runs use the rank's CPUs, never processes.
        (Backend::Thread, BackendSource::MpiRank)
    } else {
        (backend, source)
    };
    let n_jobs = if backend.is_mpi() {
        mpi_n_jobs(n_jobs_asked, backend)?
    } else if nested && n_jobs_asked < 0 {
        // -1 is every CPU of this level's share.
        (here.cpus as i64 + 1 + n_jobs_asked as i64).max(1) as usize
    } else {
        effective_n_jobs(n_jobs_asked)?
    };
    // One job runs in sequence, except on MPI, where the one job of
    // `n_jobs = -1` on a job with one worker rank still goes to it. A
    // nested run keeps saying why it is nested.
    let (backend, backend_source) = if n_jobs == 1 && (!backend.is_mpi() || n_jobs_asked == 1) {
        let why = match source {
            BackendSource::Nested { .. } => source,
            _ => BackendSource::OneJob,
        };
        (Backend::Sequential, why)
    } else {
        (backend, source)
    };
    Ok(Plan {
        n_jobs,
        n_jobs_asked,
        backend,
        backend_source,
        batch_size: BatchSize::Auto,
        pre_dispatch: 2 * n_jobs,
        timeout: None,
        verbose: 0,
        progress: false,
        max_nbytes: MaxNbytes::default().limit(),
        temp_folder: None,
        initializer: None,
        inner_max_num_threads: None,
        on_error: OnError::Stop,
        retries: 0,
        retry_panics: false,
        max_worker_memory: None,
        speculate: None,
        trace: None,
    })
}

/// The backend of a run nested at `here` when nothing names one for the
/// run itself: threads one level down, in sequence deeper.
fn nested_default(here: Nesting) -> (Backend, BackendSource) {
    let source = BackendSource::Nested {
        within: here.within.unwrap_or(NestedIn::Thread),
        level: here.level,
        cpus: here.cpus,
        of: crate::options::cpu_count(),
    };
    if here.level == 1 {
        (Backend::Thread, source)
    } else {
        (Backend::Sequential, source)
    }
}

fn in_mpi_rank() -> bool {
    crate::backend::nesting::in_mpi_rank()
}

/// `n_jobs` on MPI: counted in worker ranks, not CPUs. `-1` is every
/// worker rank, `-2` all but one, and a positive count takes at most that
/// many.
fn mpi_n_jobs(asked: i32, backend: Backend) -> Result<usize> {
    if asked == 0 {
        return effective_n_jobs(0);
    }
    let ranks = match backend {
        Backend::MpiSpawn { workers } => workers,
        _ => mpi_worker_ranks(),
    };
    Ok(if asked < 0 {
        (ranks as i64 + 1 + asked as i64).max(1) as usize
    } else if ranks > 0 {
        (asked as usize).min(ranks)
    } else {
        asked as usize
    })
}

cfg_mpi! {
    fn mpi_worker_ranks() -> usize {
        crate::backend::mpi::worker_ranks()
    }
}

cfg_not_mpi! {
    fn mpi_worker_ranks() -> usize {
        0
    }
}

/// The backend by the precedence rule, then joblib's `prefer` hint (for
/// work that can cross a process boundary), then threads;
/// `require = "sharedmem"` turns processes into threads, except where
/// processes were asked for explicitly, which is an error.
fn resolve_backend(
    merged: &Options,
    levels: [&Options; 3],
    crosses: bool,
    here: Nesting,
) -> Result<(Backend, BackendSource)> {
    let sources = [
        BackendSource::Explicit,
        BackendSource::Scoped,
        BackendSource::Task,
    ];
    // joblib's ValueError: one level may not both prefer processes and
    // require shared memory.
    if let Some(source) = levels.iter().zip(sources).find_map(|(level, source)| {
        (level.prefer == Some(Prefer::Processes) && level.require == Some(Require::SharedMem))
            .then_some(source)
    }) {
        return Err(Error::Config(format!(
            "prefer = \"processes\" and require = \"sharedmem\" contradict each other (both \
             from {source}): drop the prefer hint to run on threads, or drop require to allow \
             processes"
        )));
    }
    let named = levels
        .iter()
        .zip(sources)
        .find_map(|(level, source)| level.backend.map(|b| (b, source)));
    let (backend, source) = match named {
        // Nested, only a backend named for this run itself counts; the
        // task's own attribute may still ask for less (sequential).
        Some(named @ (_, BackendSource::Explicit | BackendSource::Scoped)) => named,
        Some(named @ (Backend::Sequential, BackendSource::Task)) => named,
        _ if here.level > 0 => nested_default(here),
        Some(named) => named,
        None => match env_var(ENV_BACKEND) {
            Some(v) => (
                v.parse::<Backend>().map_err(|_| {
                    Error::Config(format!(
                        "{ENV_BACKEND}={v:?} is not a backend: expected thread, process, sequential or mpi"
                    ))
                })?,
                BackendSource::Environment,
            ),
            None => match merged.prefer {
                Some(Prefer::Processes) if crosses => (Backend::Process, BackendSource::Prefer),
                Some(_) => (Backend::Thread, BackendSource::Prefer),
                None => (Backend::Thread, BackendSource::Default),
            },
        },
    };
    // Processes and MPI ranks share no memory with the caller.
    if merged.require != Some(Require::SharedMem) || !backend.is_remote() {
        return Ok((backend, source));
    }
    if source == BackendSource::Explicit {
        return Err(Error::Config(format!(
            "require = \"sharedmem\" needs threads, but the {backend} backend was asked for \
             explicitly: drop one of the two"
        )));
    }
    Ok((Backend::Thread, BackendSource::RequireSharedmem))
}

thread_local! {
    static SCOPED: RefCell<Vec<Options>> = const { RefCell::new(Vec::new()) };
}

/// The scoped defaults in force on this thread, innermost first.
pub(crate) fn scoped() -> Options {
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
///     let outer = Parallel::new().plan().unwrap();
///     let nested = config().n_jobs(5).scope(|| Parallel::new().plan().unwrap());
///     (outer.n_jobs, nested.n_jobs, nested.backend)
/// });
/// assert_eq!(inner, (3, 5, Backend::Sequential));
/// // Explicit options win over the scope.
/// let n = config().n_jobs(3).scope(|| Parallel::new().n_jobs(2).plan().unwrap().n_jobs);
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
    for_each_option!(option_setters, 0);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_values_are_config_errors() {
        for options in [
            Options::new().with_batch_size(BatchSize::Fixed(0)),
            Options::new().with_pre_dispatch(PreDispatch::Fixed(0)),
            Options::new().with_timeout(Duration::ZERO),
            Options::new()
                .with_backend(Backend::Process)
                .with_require(Require::SharedMem),
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
