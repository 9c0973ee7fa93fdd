//! Where a pool of workers lives between runs, and its loan to one run.
//!
//! A `Parallel` (or a shared `f::map` home) keeps its workers in a
//! [`PoolSlot`]. A run takes them out as a [`Lease`], and dropping the lease
//! (the run ended, failed, or its stream was dropped half-way) puts them
//! back, so the next run reuses them. Nothing above the backend handles
//! the pool itself.

use super::Processes;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// The home of a pool of worker processes, shared by a runner's clones.
#[derive(Clone, Default)]
pub(crate) struct PoolSlot(Arc<Mutex<Option<Processes>>>);

impl PoolSlot {
    fn lock(&self) -> MutexGuard<'_, Option<Processes>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the pool out for one run: the one at home when it has
    /// `n_jobs` workers given `threads` each (`inner_max_num_threads`;
    /// `None`: their share of the CPUs), else a new one (started lazily).
    pub(crate) fn lease(&self, n_jobs: usize, threads: Option<usize>) -> Lease {
        let pool = match self.lock().take() {
            Some(pool)
                if pool.n_jobs() == n_jobs
                    && pool.initializer_key().is_none()
                    && pool.worker_threads == threads =>
            {
                pool
            }
            _ => {
                let mut pool = Processes::new(n_jobs);
                pool.worker_threads = threads;
                pool
            }
        };
        Lease {
            pool: Some(pool),
            home: self.clone(),
        }
    }

    /// As [`PoolSlot::lease`], for workers that run `init` before their
    /// first job: the pool at home is reused only when it was started
    /// with the same initializer.
    pub(crate) fn lease_initialized(
        &self,
        n_jobs: usize,
        init: Option<crate::options::Initializer>,
        threads: Option<usize>,
    ) -> crate::error::Result<Lease> {
        let Some(init) = init else {
            return Ok(self.lease(n_jobs, threads));
        };
        let spec = init.spec();
        let args = spec
            .args
            .clone()
            .map_err(|why| crate::error::Error::Codec {
                task: spec.task.into(),
                index: 0,
                action: "encode the initializer's arguments",
                cause: why,
            })?;
        let pool = match self.lock().take() {
            Some(pool)
                if pool.n_jobs() == n_jobs
                    && pool.initializer_key() == Some(init.key())
                    && pool.worker_threads == threads =>
            {
                pool
            }
            _ => {
                let rules = super::PoolRules {
                    init: Some(std::sync::Arc::new(super::Initializer {
                        task: spec.task,
                        args,
                        timeout: None,
                    })),
                    ..super::PoolRules::default()
                };
                let mut pool = Processes::with_rules(n_jobs, rules);
                pool.set_initializer_key(init.key());
                pool.worker_threads = threads;
                pool
            }
        };
        Ok(Lease {
            pool: Some(pool),
            home: self.clone(),
        })
    }

    /// A lease of a new pool used by `rules` (a `parjob::Pool`'s, which
    /// holds it for its whole life).
    pub(crate) fn lease_new(&self, n_jobs: usize, rules: super::PoolRules) -> Lease {
        Lease {
            pool: Some(Processes::with_rules(n_jobs, rules)),
            home: self.clone(),
        }
    }

    /// The pids of the workers at home (none while a run has them).
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.lock()
            .as_ref()
            .map(Processes::pids)
            .unwrap_or_default()
    }

    /// Stops the workers at home now.
    pub(crate) fn clear(&self) {
        self.lock().take();
    }

    /// Stops the workers at home if they have been idle for `idle`; skips
    /// a slot that another thread holds.
    pub(crate) fn reap_if_idle(&self, idle: std::time::Duration) {
        let Ok(mut slot) = self.0.try_lock() else {
            return;
        };
        if slot.as_ref().is_some_and(|p| p.last_used.elapsed() >= idle) {
            slot.take();
        }
    }
}

/// A pool on loan to one run. Dropping it returns the pool home, unless
/// home has got another pool meanwhile (a concurrent run), in which case
/// this one stops.
pub(crate) struct Lease {
    pool: Option<Processes>,
    home: PoolSlot,
}

impl Deref for Lease {
    type Target = Processes;
    fn deref(&self) -> &Processes {
        self.pool
            .as_ref()
            .expect("a lease holds its pool until dropped")
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut Processes {
        self.pool
            .as_mut()
            .expect("a lease holds its pool until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(mut pool) = self.pool.take() {
            pool.last_used = Instant::now();
            let mut home = self.home.lock();
            if home.is_none() {
                *home = Some(pool);
            }
        }
    }
}
