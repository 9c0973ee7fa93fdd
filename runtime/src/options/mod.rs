//! The options of a run, declared once.
//!
//! Every option (`n_jobs`, `backend`, `batch_size`, ...) is one row of the
//! table in [`for_each_option!`]. The table generates the fields of
//! [`Options`], its `with_*` setters and its merge ([`Options::or`]), and
//! the builder methods of `Config` and `Parallel`. A run resolves its
//! options once into a [`Plan`] (see `config.rs`) and passes the plan down
//! to the scheduler and the backend.
//!
//! This module is plain data: it knows nothing of scopes, threads or the
//! environment, apart from `PARJOB_MAX_CPU_COUNT` in [`cpu_count`].

use crate::error::{Error, Result};
use parjob_syntax::{BackendName, PreDispatchSpec, PreferName};
mod cpus;
pub use cpus::cpu_count;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

mod handles;
mod max_nbytes;
mod on_error;
pub use max_nbytes::MaxNbytes;
pub use on_error::OnError;

pub(crate) use handles::InitializerSpec;
pub use handles::{Initializer, TempFolder, TraceFile};

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
    /// The worker ranks of an MPI job started by `mpirun -n N` or `srun`
    /// (parjob's `mpi` feature): rank 0 runs `main` and schedules, the
    /// other ranks run the jobs. `n_jobs = -1` is every worker rank.
    Mpi,
    /// Worker ranks that a program started alone spawns for itself with
    /// `MPI_Comm_spawn` (parjob's `mpi` feature), kept for the rest of the
    /// program.
    MpiSpawn {
        /// How many worker ranks to spawn, once.
        workers: usize,
    },
}

impl Backend {
    /// The spelling used in attributes and `PARJOB_BACKEND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sequential => "sequential",
            Backend::Thread => "thread",
            Backend::Process => "process",
            Backend::Mpi => "mpi",
            Backend::MpiSpawn { .. } => "mpi-spawn",
        }
    }

    /// Whether jobs leave this process (processes or MPI ranks), so they
    /// must be registered tasks with serde types.
    pub fn is_remote(self) -> bool {
        matches!(
            self,
            Backend::Process | Backend::Mpi | Backend::MpiSpawn { .. }
        )
    }

    /// Whether this is one of the MPI backends.
    pub fn is_mpi(self) -> bool {
        matches!(self, Backend::Mpi | Backend::MpiSpawn { .. })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = Error;

    /// The names the attribute takes, and joblib's (`"loky"`,
    /// `"threading"`, ...): see `parjob_syntax::backend`.
    fn from_str(s: &str) -> Result<Self> {
        match parjob_syntax::backend(s) {
            Some(BackendName::Sequential) => Ok(Backend::Sequential),
            Some(BackendName::Thread) => Ok(Backend::Thread),
            Some(BackendName::Process) => Ok(Backend::Process),
            Some(BackendName::Mpi) => Ok(Backend::Mpi),
            None => Err(Error::Config(format!(
                "unknown backend `{}`: expected \"thread\", \"process\", \"sequential\" or \"mpi\"",
                s.trim()
            ))),
        }
    }
}

/// joblib's `prefer`: which backend to use when nothing names one.
///
/// A soft hint. A backend given explicitly, in a scoped `config()`, in the
/// task's attribute or in `PARJOB_BACKEND` wins over it, and work that
/// cannot cross a process boundary (a closure, a task without
/// `backend = "process"`) declares threads, which wins over it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefer {
    /// `"threads"`: the thread backend.
    Threads,
    /// `"processes"`: the process backend.
    Processes,
}

impl FromStr for Prefer {
    type Err = Error;

    /// `"threads"` or `"processes"`.
    fn from_str(s: &str) -> Result<Self> {
        match parjob_syntax::prefer(s) {
            Some(PreferName::Threads) => Ok(Prefer::Threads),
            Some(PreferName::Processes) => Ok(Prefer::Processes),
            None => Err(Error::Config(format!(
                "prefer = {s:?}: expected \"threads\" or \"processes\""
            ))),
        }
    }
}

/// joblib's `require`: a hard constraint on the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Require {
    /// `"sharedmem"`: the jobs must share this process's memory, so they
    /// run on threads (or in sequence), never in worker processes.
    SharedMem,
}

impl FromStr for Require {
    type Err = Error;

    /// `"sharedmem"`.
    fn from_str(s: &str) -> Result<Self> {
        if parjob_syntax::require_sharedmem(s) {
            Ok(Require::SharedMem)
        } else {
            Err(Error::Config(format!(
                "require = {s:?}: the only requirement is \"sharedmem\""
            )))
        }
    }
}

/// Where a run's backend came from: what `verbose` names, and what the
/// error for work that cannot cross a process boundary blames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendSource {
    /// A builder call or a per-call option (`.backend(..)`, `f::with`).
    Explicit,
    /// A scoped [`config()`](crate::config).
    Scoped,
    /// The task's own attribute (the first job's task, for `Parallel::run`).
    Task,
    /// `PARJOB_BACKEND`.
    Environment,
    /// joblib's `prefer` hint.
    Prefer,
    /// joblib's `require = "sharedmem"`, which turned processes into threads.
    RequireSharedmem,
    /// `n_jobs` resolved to 1, which always runs in sequence.
    OneJob,
    /// Nothing named a backend: threads (in a worker process, too).
    Default,
    /// A run inside an MPI worker rank, which always uses threads.
    MpiRank,
    /// `Process::spawn`, or a `Pool`/`Executor` on worker processes: the
    /// API itself names processes, with no option given.
    ProcessApi,
    /// A run nested inside another's worker, with no backend named for it:
    /// threads one level down, in sequence deeper (joblib's rule).
    Nested {
        /// The outermost worker around the run.
        within: NestedIn,
        /// 1 inside a worker, 2 inside a thread of a run in a worker...
        level: u8,
        /// The CPUs the run may use: its share of the machine's.
        cpus: usize,
        /// The machine's CPUs ([`cpu_count`]).
        of: usize,
    },
}

/// The worker a nested run sits in ([`BackendSource::Nested`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NestedIn {
    /// A worker process of the process backend (or a `Pool`'s).
    ProcessWorker,
    /// An MPI worker rank.
    MpiRank,
    /// A thread of a run on the thread backend.
    Thread,
}

impl fmt::Display for NestedIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NestedIn::ProcessWorker => "a process worker",
            NestedIn::MpiRank => "an MPI worker rank",
            NestedIn::Thread => "a thread of a parjob run",
        })
    }
}

impl fmt::Display for BackendSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendSource::Explicit => "an explicit option",
            BackendSource::Scoped => "the scoped config()",
            BackendSource::Task => "the task's attribute",
            BackendSource::Environment => "PARJOB_BACKEND",
            BackendSource::Prefer => "the prefer hint",
            BackendSource::RequireSharedmem => "require_sharedmem",
            BackendSource::OneJob => "n_jobs = 1",
            BackendSource::Default => "the default",
            BackendSource::MpiRank => "an MPI worker rank",
            BackendSource::Nested {
                within,
                level,
                cpus,
                of,
            } => {
                let depth = if *level > 1 { ", one level deeper" } else { "" };
                return write!(f, "nested in {within}{depth}: {cpus} of {of} CPUs");
            }
            BackendSource::ProcessApi => {
                "the API called (Process::spawn, and a Pool or Executor not built with \
                 the thread backend, run their work in worker processes)"
            }
        })
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
        match parjob_syntax::pre_dispatch(s) {
            Some(PreDispatchSpec::All) => Ok(PreDispatch::All),
            Some(PreDispatchSpec::PerJob(k)) => Ok(PreDispatch::PerJob(k)),
            Some(PreDispatchSpec::Fixed(n)) => Ok(PreDispatch::Fixed(n)),
            None => Err(Error::Config(format!(
                "pre_dispatch = {s:?}: expected \"all\", a count like \"8\", or \"k*n_jobs\""
            ))),
        }
    }
}

/// The option table. Each row is: doc, name, stored type, the setter's
/// argument type, and the name of the `const` setter on [`Options`].
///
/// `for_each_option!(m, prefix..)` calls `m!(prefix..; rows..)`. Adding an
/// option is a row here plus its resolution in `config.rs`
/// (docs/architecture.md, "Adding an option").
macro_rules! for_each_option {
    ($then:ident $(, $prefix:tt)*) => {
        $then! { $($prefix)* ;
            /// joblib's `n_jobs`: -1 = every CPU, -2 = all but one, 1 =
            /// sequential. 0 is refused when the run starts.
            n_jobs: i32, i32, with_n_jobs;
            /// Where jobs run: threads (the default), worker processes, or
            /// in sequence.
            backend: $crate::options::Backend, $crate::options::Backend, with_backend;
            /// Jobs per message to a worker: [`BatchSize::Auto`](crate::BatchSize::Auto) (the
            /// default) or a fixed count (`.batch_size(64)`).
            batch_size: $crate::options::BatchSize, impl Into<$crate::options::BatchSize>, with_batch_size;
            /// How many batches may be in flight: a count
            /// (`.pre_dispatch(8)`), [`PreDispatch::PerJob`](crate::PreDispatch::PerJob)`(k)` for
            /// `k * n_jobs` (default 2), or [`PreDispatch::All`](crate::PreDispatch::All).
            pre_dispatch: $crate::options::PreDispatch, impl Into<$crate::options::PreDispatch>, with_pre_dispatch;
            /// The longest one task may run. On the process backend an
            /// overdue task's worker is killed and the run fails with
            /// [`crate::Error::Timeout`]. On threads the run fails the same way, but
            /// the thread cannot be stopped: the task runs on in the
            /// background.
            timeout: ::std::time::Duration, ::std::time::Duration, with_timeout;
            /// joblib-style progress lines on stderr, on joblib's scale: 0
            /// is silent, 1 to 3 are parjob's levels (a line every 2 s,
            /// 0.5 s, 0.1 s), 4 to 10 count as 2, and above 10 as 3.
            verbose: u32, u32, with_verbose;
            /// joblib's `prefer`: the backend to use when no level names
            /// one (a soft hint; see [`Prefer`](crate::Prefer)).
            prefer: $crate::options::Prefer, $crate::options::Prefer, with_prefer;
            /// joblib's `require`: [`Require::SharedMem`](crate::Require::SharedMem) (also
            /// `.require_sharedmem()`) says the jobs share this
            /// process's memory, so a process backend from a scoped
            /// `config()`, the task's attribute or `PARJOB_BACKEND` becomes
            /// threads. With `.backend(Backend::Process)` given
            /// explicitly, the run is a configuration error.
            require: $crate::options::Require, $crate::options::Require, with_require;
            /// A progress bar on stderr (with the default `progress` feature).
            progress: bool, bool, with_progress;
            /// joblib's `max_nbytes`: a slice of numbers over this many
            /// bytes (default 1 MiB) reaches process workers through
            /// shared memory; `None` (or [`MaxNbytes::Off`](crate::MaxNbytes::Off)) sends everything inline.
            max_nbytes: $crate::options::MaxNbytes, impl Into<$crate::options::MaxNbytes>, with_max_nbytes;
            /// joblib's `temp_folder`: back shared memory with unnamed
            /// files in this folder (a disk, when memory is short) instead
            /// of a `memfd`. Default: `PARJOB_TEMP_FOLDER`, else a `memfd`.
            temp_folder: $crate::options::TempFolder, impl Into<$crate::options::TempFolder>, with_temp_folder;
            /// joblib's `initializer`: a process task run once in each
            /// worker before its first job ([`Initializer::of`](crate::Initializer::of)). Not on MPI ranks.
            initializer: $crate::options::Initializer, $crate::options::Initializer, with_initializer;
            /// joblib's `inner_max_num_threads`: the threads each worker
            /// process's own libraries may use. It sets `OMP_NUM_THREADS`,
            /// `OPENBLAS_NUM_THREADS`, `MKL_NUM_THREADS`, `BLIS_NUM_THREADS`,
            /// `VECLIB_MAXIMUM_THREADS`, `NUMEXPR_NUM_THREADS` and
            /// `RAYON_NUM_THREADS` in each worker (a variable already set
            /// in the parent is kept), and is the CPUs a nested run in the
            /// worker shares. Default: `max(1, cpus / n_jobs)`, or
            /// `PARJOB_INNER_MAX_NUM_THREADS`.
            inner_max_num_threads: usize, usize, with_inner_max_num_threads;
            /// What a failed item does to the rest of the run:
            /// [`OnError::Stop`](crate::OnError::Stop) (joblib's, the default) or
            /// [`OnError::Continue`](crate::OnError::Continue). Default:
            /// `PARJOB_ON_ERROR`, else `"stop"`.
            on_error: $crate::options::OnError, $crate::options::OnError, with_on_error;
            /// Runs a job again, on a fresh worker process, when its worker
            /// died (a signal or an exit) or its timeout expired, up to this
            /// many more times. A panic is retried only with
            /// `retry_panics`. Worker processes only: a thread cannot be
            /// stopped, and its job cannot be run twice. Default:
            /// `PARJOB_RETRIES`, else 0.
            retries: u32, u32, with_retries;
            /// Retries (under `retries`) a job that panicked too; by default
            /// a panic is not retried, being usually deterministic.
            retry_panics: bool, bool, with_retry_panics;
            /// The most memory, in bytes, one worker process may hold (held
            /// by a memory cgroup per worker where one can be made, else by
            /// reading its own resident pages every 20 ms): a worker over it
            /// is stopped and its job fails with
            /// [`crate::Error::MemoryLimit`] naming the item, or runs again
            /// under `retries`. Worker processes only. Default:
            /// `PARJOB_MAX_WORKER_MEMORY` (a size like `"2GB"`), else none.
            max_worker_memory: u64, u64, with_max_worker_memory;
            /// Spark's speculative execution: when a worker is idle and no
            /// job waits, a job running longer than
            /// `speculation_multiplier` times the median of its task's
            /// finished jobs gets a copy there (on threads, when its
            /// arguments are `Clone`), and the first to finish wins.
            /// Opt-in: a task with side effects may then run twice.
            /// Default: `PARJOB_SPECULATE`, else off.
            speculate: bool, bool, with_speculate;
            /// How many times the median duration a job must run before
            /// `speculate` copies it (a whole number, at least 2; default
            /// 4, or `PARJOB_SPECULATION_MULTIPLIER`).
            speculation_multiplier: u32, u32, with_speculation_multiplier;
            /// Records the run's timeline and writes it, when the run
            /// ends, as Chrome trace-event JSON to this file (Perfetto and
            /// `chrome://tracing` open it), with a self-contained HTML
            /// report beside it (`run.json` gives `run.html`). At
            /// `verbose >= 1` the report's summary is printed too.
            /// Default: `PARJOB_TRACE`, else off.
            trace: $crate::options::TraceFile, impl Into<$crate::options::TraceFile>, with_trace;
        }
    };
}
pub(crate) use for_each_option;

/// Builder methods, one per option, that set `self.$field.<option>`:
/// `impl Config { for_each_option!(option_setters, 0); }`.
macro_rules! option_setters {
    ($field:tt ; $( $(#[$doc:meta])* $name:ident : $ty:ty, $arg:ty, $with:ident; )*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $name: $arg) -> Self {
                self.$field.$name = Some($name.into());
                self
            }
        )*

        /// joblib's `require = "sharedmem"`: the same as
        /// `.require(Require::SharedMem)`.
        pub fn require_sharedmem(self) -> Self {
            self.require($crate::options::Require::SharedMem)
        }
    };
}
pub(crate) use option_setters;

macro_rules! options_struct {
    (; $( $(#[$doc:meta])* $name:ident : $ty:ty, $arg:ty, $with:ident; )*) => {
        /// The options a `#[parallel]` attribute, a `Parallel` or a scoped
        /// `config()` carries. `None` means "not given here": it falls back
        /// to scoped defaults, then to the environment, then to the
        /// built-in default.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Options {
            $( $(#[$doc])* pub $name: Option<$ty>, )*
        }

        impl Options {
            /// No option given: everything from the environment and the defaults.
            pub const fn new() -> Self {
                Options { $( $name: None, )* }
            }

            $(
                #[doc = concat!("The same options with `", stringify!($name), "` set.")]
                pub const fn $with(mut self, $name: $ty) -> Self {
                    self.$name = Some($name);
                    self
                }
            )*

            /// Each option from `self` when given, else from `fallback`.
            pub fn or(self, fallback: Options) -> Options {
                Options { $( $name: self.$name.or(fallback.$name), )* }
            }
        }
    };
}

for_each_option!(options_struct);

/// Options after resolution: what one run actually uses. A run resolves
/// its options once, into a plan, and passes the plan down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Number of workers, at least 1.
    pub n_jobs: usize,
    /// `n_jobs` as asked for (`-1`, `-2`, ...), which `verbose` shows as
    /// joblib does.
    pub n_jobs_asked: i32,
    /// The backend. `n_jobs == 1` always resolves to `Sequential`.
    pub backend: Backend,
    /// Where the backend came from.
    pub backend_source: BackendSource,
    /// Jobs per batch.
    pub batch_size: BatchSize,
    /// Batches in flight at most (`usize::MAX` for "all").
    pub pre_dispatch: usize,
    /// Per-task time limit.
    pub timeout: Option<Duration>,
    /// parjob's level, 0..=3 (joblib's scale mapped down).
    pub verbose: u8,
    /// Draw a progress bar.
    pub progress: bool,
    /// Slices of numbers over this many bytes go to shared memory; `None`
    /// when the automatic path is off.
    pub max_nbytes: Option<u64>,
    /// Where shared memory is backed by files; `None` for a `memfd`.
    pub temp_folder: Option<TempFolder>,
    /// Run once in each worker before its first job.
    pub initializer: Option<Initializer>,
    /// The threads each worker process's libraries may use (`None`: its
    /// share of the CPUs, `max(1, cpus / n_jobs)`).
    pub inner_max_num_threads: Option<usize>,
    /// What a failed item does to the rest of the run.
    pub on_error: OnError,
    /// How many more times a job whose worker died or timed out runs.
    pub retries: u32,
    /// Whether a panic is retried too.
    pub retry_panics: bool,
    /// The most memory one worker process may hold, in bytes.
    pub max_worker_memory: Option<u64>,
    /// Under `speculate`, how many times the median duration a job runs
    /// before it gets a copy; `None` when speculation is off.
    pub speculate: Option<u32>,
    /// Where the run's trace goes; `None` when tracing is off.
    pub trace: Option<TraceFile>,
}

/// Environment variable capping [`cpu_count`].
pub(crate) const ENV_MAX_CPU_COUNT: &str = "PARJOB_MAX_CPU_COUNT";

pub(crate) fn env_var(name: &str) -> Option<String> {
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
}
