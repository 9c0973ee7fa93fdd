//! The one place where a run's backend becomes a session.
//!
//! Every API asks here: `Parallel` (and through it a task's `map`, `iter`
//! and `stream`), `Pool` and `Executor`, `Process`, and marked loops.
//! [`choose`] holds each API's rules, what it refuses and what it falls
//! back to; [`open`] builds the chosen session on the workers the caller
//! owns: a [`Home`] that a `Parallel`'s runs share, or a pool's own.

use super::process::{MemoryRules, PoolRules, PoolSlot, ProcessSession, Retry};
use super::sequential::Sequential;
use super::thread::{ThreadSession, Threads};
use super::Session;
use crate::error::{Error, Result};
use crate::options::{Backend, BackendSource, Initializer};
use crate::task::Work;
use std::sync::Mutex;
use std::time::Duration;

/// Which API asks for a session: each has its own rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    /// `Parallel`, and the task methods built on it.
    Parallel,
    /// `Pool` and `Executor`; `process_only` is true when the pool has
    /// settings only worker processes can honour (an initializer,
    /// `max_tasks_per_child`, `max_items_per_child`).
    Pool { process_only: bool },
    /// `Process::spawn`: one task in a worker of its own.
    Process,
    /// A marked loop or `parallel_for!`: its body borrows the caller's
    /// data, so it runs here or on threads.
    Loop,
}

/// The kind of session a request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Sequential,
    Threads,
    Processes,
    Mpi,
}

/// What `api` runs `backend` with `n_jobs` workers on, or why it cannot.
/// `initializer` says whether the run has one.
pub(crate) fn choose(api: Api, backend: Backend, n_jobs: usize, initializer: bool) -> Result<Kind> {
    let refuse = |why: &str| Err(Error::Config(why.into()));
    match (api, backend) {
        (Api::Loop, _) if n_jobs == 1 => Ok(Kind::Sequential),
        (Api::Loop, Backend::Sequential) => Ok(Kind::Sequential),
        // A process or MPI backend from scoped defaults or the environment
        // runs a loop on threads: its body cannot leave this process.
        (Api::Loop, _) => Ok(Kind::Threads),
        (Api::Process, _) => Ok(Kind::Processes),
        (Api::Pool { .. }, Backend::Mpi | Backend::MpiSpawn { .. }) => refuse(
            "a Pool runs on processes or threads; for MPI ranks use Parallel or a task's map \
             with backend \"mpi\"",
        ),
        (Api::Pool { .. }, Backend::Sequential) => refuse(
            "a Pool runs on processes or threads; for a loop in this thread, use Parallel with \
             n_jobs = 1",
        ),
        (Api::Pool { process_only: true }, Backend::Thread) => refuse(
            "initializer, max_tasks_per_child and max_items_per_child need the process backend: \
             a thread pool's workers share one process",
        ),
        (Api::Parallel, Backend::Mpi | Backend::MpiSpawn { .. }) if initializer => refuse(
            "an initializer runs in worker processes and threads; MPI worker ranks do not run \
             one: start what they need in the task itself",
        ),
        (_, Backend::Sequential) => Ok(Kind::Sequential),
        (_, Backend::Thread) => Ok(Kind::Threads),
        (_, Backend::Process) => Ok(Kind::Processes),
        (_, Backend::Mpi | Backend::MpiSpawn { .. }) => Ok(Kind::Mpi),
    }
}

/// The workers that a `Parallel`'s runs share: a thread pool, rebuilt when
/// a run asks for another size, and the slot its worker processes return
/// to between runs.
#[derive(Default)]
pub(crate) struct Home {
    threads: Mutex<Option<Threads>>,
    pub(crate) processes: PoolSlot,
}

impl Home {
    /// This home's thread pool, of `n_jobs` threads.
    pub(crate) fn threads(&self, n_jobs: usize) -> Result<Threads> {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if threads.as_ref().map(Threads::n_jobs) != Some(n_jobs) {
            *threads = Some(Threads::new(n_jobs)?);
        }
        Ok(threads.clone().expect("just set"))
    }

    /// Stops this home's workers and threads now; a later run starts new ones.
    pub(crate) fn clear(&self) {
        self.processes.clear();
        *self.threads.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Where a session's workers come from.
pub(crate) enum Workers<'a> {
    /// A `Parallel`'s home. Its worker processes are reused only by runs
    /// with the same initializer and inner thread limit.
    Home {
        home: &'a Home,
        initializer: Option<Initializer>,
        inner_threads: Option<usize>,
    },
    /// The caller's own: new threads, or worker processes under a pool's
    /// rules.
    Own(PoolRules),
}

/// What a session is opened with, besides its workers.
pub(crate) struct Spec {
    pub(crate) api: Api,
    pub(crate) backend: Backend,
    pub(crate) n_jobs: usize,
    pub(crate) timeout: Option<Duration>,
    /// Whether the user watches (`verbose`): thread jobs then report to
    /// beacons, and MPI says which ranks it leased.
    pub(crate) verbose: bool,
    pub(crate) source: BackendSource,
    pub(crate) max_nbytes: Option<u64>,
    /// `on_error = "continue"`: a dead or timed-out worker process fails
    /// only its own batches.
    pub(crate) keep_going: bool,
    /// `retries` and `retry_panics`, for worker processes.
    pub(crate) retry: Retry,
    /// `max_worker_memory`, and whether to print each worker's peak at
    /// the end (`verbose >= 2`), for worker processes.
    pub(crate) memory: MemoryRules,
    /// `speculate`'s multiplier, when it is on.
    pub(crate) speculate: Option<u32>,
}

impl Spec {
    /// The spec of an API that runs on workers of its own (`Pool`,
    /// `Executor`, `Process`): no timeout, quiet, and every failure its
    /// own handling.
    pub(crate) fn own_workers(api: Api, backend: Backend, n_jobs: usize) -> Spec {
        Spec {
            api,
            backend,
            n_jobs,
            timeout: None,
            verbose: false,
            source: BackendSource::ProcessApi,
            max_nbytes: None,
            keep_going: false,
            retry: Retry::default(),
            memory: MemoryRules::default(),
            speculate: None,
        }
    }
}

/// A session of each kind, so that a pool can still stop its processes.
#[allow(clippy::large_enum_variant)] // made once per run, never moved in a hot path
pub(crate) enum Engine<W: Work> {
    Sequential(Sequential<W>),
    Thread(ThreadSession<W>),
    Process(ProcessSession<W>),
    /// A session on MPI ranks, already boxed: nothing but the trait is
    /// asked of it. Made only with the `mpi` feature.
    #[allow(dead_code)]
    Ranks(Box<dyn Session<W> + Send>),
}

impl<W: Work> Engine<W> {
    /// The session, behind the trait.
    pub(crate) fn session(&mut self) -> &mut dyn Session<W> {
        match self {
            Engine::Sequential(s) => s,
            Engine::Thread(s) => s,
            Engine::Process(s) => s,
            Engine::Ranks(s) => s.as_mut(),
        }
    }

    /// The session as a box of the trait, for the scheduler.
    pub(crate) fn boxed(self) -> Box<dyn Session<W>> {
        match self {
            Engine::Sequential(s) => Box::new(s),
            Engine::Thread(s) => Box::new(s),
            Engine::Process(s) => Box::new(s),
            Engine::Ranks(s) => s,
        }
    }

    /// Stops the workers now: processes get SIGTERM, then SIGKILL after
    /// `grace`; threads and ranks skip the jobs they have not started.
    pub(crate) fn terminate(&mut self, grace: Duration) {
        match self {
            Engine::Process(s) => s.terminate(grace),
            other => other.session().cancel(),
        }
    }
}

/// Chooses (see [`choose`]) and opens the session of `spec` on `workers`.
///
/// # Errors
/// The API's refusals; `Error::NoWorkerEntry` for processes without a
/// worker entry; threads or processes the system would not start.
pub(crate) fn open<W: Work>(spec: &Spec, workers: Workers<'_>) -> Result<Engine<W>> {
    let initializer = match &workers {
        Workers::Home { initializer, .. } => initializer.is_some(),
        Workers::Own(rules) => rules.init.is_some(),
    };
    let kind = choose(spec.api, spec.backend, spec.n_jobs, initializer)?;
    let home_init = match &workers {
        Workers::Home { initializer, .. } => *initializer,
        Workers::Own(_) => None,
    };
    Ok(match kind {
        Kind::Sequential => {
            Engine::Sequential(Sequential::new(spec.timeout).with_initializer(home_init))
        }
        Kind::Threads => {
            let threads = match &workers {
                Workers::Home { home, .. } => home.threads(spec.n_jobs)?,
                Workers::Own(_) => Threads::new(spec.n_jobs)?,
            };
            Engine::Thread(
                ThreadSession::new(threads, spec.timeout, spec.verbose)
                    .with_initializer(home_init)
                    .keep_going(spec.keep_going)
                    .speculating(spec.speculate),
            )
        }
        Kind::Processes => {
            let lease = match workers {
                Workers::Home {
                    home,
                    initializer,
                    inner_threads,
                } => home
                    .processes
                    .lease_initialized(spec.n_jobs, initializer, inner_threads)?,
                Workers::Own(rules) => PoolSlot::default().lease_new(spec.n_jobs, rules),
            };
            Engine::Process(
                ProcessSession::new(lease, spec.timeout, spec.source, spec.max_nbytes)?
                    .keep_going(spec.keep_going)
                    .retrying(spec.retry)
                    .memory(spec.memory)
                    .speculating(spec.speculate),
            )
        }
        Kind::Mpi => mpi(spec)?,
    })
}

cfg_mpi! {
    /// A session on MPI worker ranks (spawning them first for `MpiSpawn`).
    fn mpi<W: Work>(spec: &Spec) -> Result<Engine<W>> {
        if let Backend::MpiSpawn { workers } = spec.backend {
            super::mpi::spawn_workers(workers)?;
        }
        Ok(Engine::Ranks(Box::new(super::mpi::MpiSession::new(
            spec.n_jobs,
            spec.timeout,
            spec.source,
            spec.verbose,
        )?
        .retrying(spec.retry))))
    }

    /// In a copy of this program launched as an MPI worker rank: serves
    /// tasks and exits; elsewhere returns at once.
    pub(crate) fn enter_rank_if_launched() {
        super::mpi::enter_if_launched();
    }
}

cfg_not_mpi! {
    /// Without the `mpi` feature, naming an MPI backend says how to get it.
    fn mpi<W: Work>(_: &Spec) -> Result<Engine<W>> {
        Err(Error::Config(
            "backend \"mpi\" needs parjob's `mpi` feature: `parjob = { version = \"0.1\", \
             features = [\"mpi\"] }` in Cargo.toml, or `cargo run --features mpi`, with an MPI \
             library installed (Debian: apt-get install libopenmpi-dev openmpi-bin libclang-dev)"
                .into(),
        ))
    }

    /// Without the `mpi` feature no process is an MPI rank.
    pub(crate) fn enter_rank_if_launched() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Backend; 5] = [
        Backend::Sequential,
        Backend::Thread,
        Backend::Process,
        Backend::Mpi,
        Backend::MpiSpawn { workers: 2 },
    ];

    fn kinds(api: Api, n_jobs: usize, initializer: bool) -> Vec<std::result::Result<Kind, String>> {
        ALL.iter()
            .map(|&b| choose(api, b, n_jobs, initializer).map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn a_loop_runs_here_or_on_threads_whatever_the_backend() {
        use Kind::*;
        assert_eq!(
            kinds(Api::Loop, 4, false),
            [
                Ok(Sequential),
                Ok(Threads),
                Ok(Threads),
                Ok(Threads),
                Ok(Threads)
            ]
        );
        assert!(kinds(Api::Loop, 1, false)
            .iter()
            .all(|k| *k == Ok(Sequential)));
    }

    #[test]
    fn a_pool_refuses_sequential_and_mpi_and_process_settings_on_threads() {
        let open = kinds(
            Api::Pool {
                process_only: false,
            },
            4,
            false,
        );
        assert!(open[0].as_ref().unwrap_err().contains("n_jobs = 1"));
        assert_eq!(open[1..3], [Ok(Kind::Threads), Ok(Kind::Processes)]);
        assert!(open[3..]
            .iter()
            .all(|k| k.as_ref().unwrap_err().contains("MPI ranks use Parallel")));
        let settings = kinds(Api::Pool { process_only: true }, 4, true);
        assert!(settings[1]
            .as_ref()
            .unwrap_err()
            .contains("need the process backend"));
        assert_eq!(settings[2], Ok(Kind::Processes));
    }

    #[test]
    fn parallel_takes_every_backend_but_an_initializer_on_mpi() {
        use Kind::*;
        assert_eq!(
            kinds(Api::Parallel, 4, false),
            [Ok(Sequential), Ok(Threads), Ok(Processes), Ok(Mpi), Ok(Mpi)]
        );
        let with_init = kinds(Api::Parallel, 4, true);
        assert_eq!(with_init[..3], [Ok(Sequential), Ok(Threads), Ok(Processes)]);
        assert!(with_init[3..]
            .iter()
            .all(|k| k.as_ref().unwrap_err().contains("MPI worker ranks")));
        assert!(kinds(Api::Process, 1, false)
            .iter()
            .all(|k| *k == Ok(Processes)));
    }
}
