//! How deep the running code sits in parjob runs, and how many CPUs it may
//! use: where a nested run's defaults come from.
//!
//! joblib's rule against oversubscription, by level:
//! - **Level 0** is the program's own threads: a run there gets the usual
//!   defaults (every CPU, threads unless something names another backend).
//! - **Level 1** is a worker process, an MPI worker rank, or a thread of a
//!   run at level 0. A run there defaults to threads.
//! - **Level 2 and deeper** (a thread of a run at level 1) defaults to
//!   running in sequence.
//!
//! At every level above 0 the CPUs are the share the outer run gave each of
//! its workers, `max(1, cpus / outer workers)`, and a nested run's default
//! `n_jobs` is that share. Only a backend named for the nested run itself
//! (a builder call or a `config()` scope around it) overrides the level's
//! default: a task's attribute, `prefer` and `PARJOB_BACKEND` describe the
//! outermost run, so under threads they never start worker processes.
//!
//! A worker process and an MPI rank record their level and share here as
//! they start (`set_for_this_process`); a pool thread gets its own when its
//! pool starts, from the thread that built the pool.

use crate::options::NestedIn;
use std::cell::Cell;
use std::sync::OnceLock;

/// Set once in a worker process or an MPI worker rank: its share of the
/// CPUs and which kind of worker it is.
static THIS_PROCESS: OnceLock<(usize, NestedIn)> = OnceLock::new();

/// Records that this process is a worker (`within`) that may use `cpus`
/// CPUs. The first call wins.
pub(crate) fn set_for_this_process(cpus: usize, within: NestedIn) {
    let _ = THIS_PROCESS.set((cpus.max(1), within));
}

/// In a worker process or an MPI worker rank: its share of the CPUs and
/// which it is. `None` in the program's own process.
pub(crate) fn this_process() -> Option<(usize, NestedIn)> {
    THIS_PROCESS.get().copied()
}

/// Whether this process is an MPI worker rank.
pub(crate) fn in_mpi_rank() -> bool {
    this_process().is_some_and(|(_, within)| within == NestedIn::MpiRank)
}

/// Where the running code sits among parjob runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Nesting {
    /// 0 in the program's own threads; one more per parjob run around it.
    pub(crate) level: u8,
    /// The CPUs this code may use: all of them at level 0, else its share.
    pub(crate) cpus: usize,
    /// The outermost worker around this code (`None` at level 0).
    pub(crate) within: Option<NestedIn>,
}

impl Nesting {
    /// Where the workers of a run of `n_jobs` started here sit: one level
    /// deeper, each with an equal share of this level's CPUs.
    pub(crate) fn inside_run(self, n_jobs: usize, workers: NestedIn) -> Nesting {
        Nesting {
            level: self.level.saturating_add(1),
            cpus: (self.cpus / n_jobs.max(1)).max(1),
            within: Some(self.within.unwrap_or(workers)),
        }
    }
}

thread_local! {
    /// Set on the threads of parjob's pools, when the pool starts.
    static HERE: Cell<Option<Nesting>> = const { Cell::new(None) };
}

/// Where the running code sits: this thread's record if it is a pool
/// thread, else this process's (a worker process or an MPI rank is level
/// 1), else level 0 with every CPU.
pub(crate) fn current() -> Nesting {
    if let Some(here) = HERE.with(Cell::get) {
        return here;
    }
    match this_process() {
        Some((cpus, within)) => Nesting {
            level: 1,
            cpus,
            within: Some(within),
        },
        None => Nesting {
            level: 0,
            cpus: crate::options::cpu_count(),
            within: None,
        },
    }
}

/// Records where this thread sits (a pool thread, as its pool starts).
pub(crate) fn set_for_this_thread(here: Nesting) {
    HERE.with(|h| h.set(Some(here)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_level_shares_the_cpus_of_the_one_above() {
        let top = Nesting {
            level: 0,
            cpus: 8,
            within: None,
        };
        let threads = top.inside_run(2, NestedIn::Thread);
        assert_eq!((threads.level, threads.cpus), (1, 4));
        assert_eq!(threads.within, Some(NestedIn::Thread));
        let deeper = threads.inside_run(3, NestedIn::Thread);
        assert_eq!((deeper.level, deeper.cpus), (2, 1));
        // Never below one CPU, and the outermost worker is kept.
        let worker = Nesting {
            level: 1,
            cpus: 1,
            within: Some(NestedIn::ProcessWorker),
        };
        let inner = worker.inside_run(4, NestedIn::Thread);
        assert_eq!((inner.level, inner.cpus), (2, 1));
        assert_eq!(inner.within, Some(NestedIn::ProcessWorker));
    }
}
