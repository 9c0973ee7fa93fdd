//! Options and how they resolve: n_jobs, backend, CPU counting, env vars.
//!
//! An option can come from three places. The most specific wins:
//! an explicit value (a builder call or an attribute argument), then the
//! environment (`PARJOB_N_JOBS`, `PARJOB_BACKEND`), then the built-in
//! default (`n_jobs = -1`, threads). Inside a worker process the default
//! backend is threads and the default `n_jobs` is the worker's share of the
//! machine, so nested parallelism does not oversubscribe the CPUs.

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

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

/// The options a `#[parallel]` attribute or a [`crate::Parallel`] carries.
/// `None` means "not given here": it falls back to the environment, then
/// to the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// joblib's `n_jobs`: -1 = all cpus, -2 = all but one, 1 = sequential.
    pub n_jobs: Option<i32>,
    /// Where jobs run.
    pub backend: Option<Backend>,
}

/// Options after resolution: what a run actually uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// Number of workers, at least 1.
    pub n_jobs: usize,
    /// The backend. `n_jobs == 1` always resolves to `Sequential`.
    pub backend: Backend,
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

    /// Resolves against the environment and the defaults.
    pub fn resolve(&self) -> Result<Resolved> {
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
        Ok(Resolved { n_jobs, backend })
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
        let r = Options {
            n_jobs: Some(1),
            backend: Some(Backend::Process),
        }
        .resolve()
        .unwrap();
        assert_eq!(r.backend, Backend::Sequential);
        assert_eq!(r.n_jobs, 1);
    }
}
