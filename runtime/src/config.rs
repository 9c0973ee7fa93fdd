//! Where a run's options come from, and how they resolve into a [`Plan`].
//!
//! An option can come from four places. The most specific wins: an
//! explicit value (a builder call or an attribute argument), then scoped
//! defaults ([`config`], joblib's `parallel_config`), then the environment
//! (`PARJOB_N_JOBS`, `PARJOB_BACKEND`), then the built-in default
//! (`n_jobs = -1`, threads, auto batches, `pre_dispatch = 2 * n_jobs`).
//! Inside a worker process the default backend is threads and the default
//! `n_jobs` is the worker's share of the machine, so nested parallelism
//! does not oversubscribe the CPUs.

use crate::error::{Error, Result};
use crate::options::{
    effective_n_jobs, env_var, for_each_option, option_setters, Backend, BatchSize, Options, Plan,
    PreDispatch,
};
use std::cell::RefCell;
use std::time::Duration;

/// Environment variable giving the default `n_jobs`.
pub(crate) const ENV_N_JOBS: &str = "PARJOB_N_JOBS";
/// Environment variable giving the default backend.
pub(crate) const ENV_BACKEND: &str = "PARJOB_BACKEND";

impl Options {
    /// Resolves against scoped defaults, the environment and the built-in
    /// defaults, and checks every value.
    pub fn resolve(&self) -> Result<Plan> {
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
        Ok(Plan {
            batch_size,
            pre_dispatch,
            timeout: options.timeout,
            verbose,
            progress: options.progress.unwrap_or(false),
            ..base
        })
    }

    fn resolve_workers(&self) -> Result<Plan> {
        let in_worker = crate::backend::process::worker::share_in_worker();
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
        Ok(Plan {
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
