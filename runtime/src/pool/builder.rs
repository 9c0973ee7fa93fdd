//! [`PoolBuilder`]: a pool's settings, and the process rules they give
//! its workers. The session itself comes from `backend::open`.

use super::manager::OnWorkerDeath;
use super::{Chunksize, Pool};
use crate::backend::open::{self, Api, Engine, Spec, Workers};
use crate::backend::process::{worker_entry, Initializer, PoolRules};
use crate::error::{Error, Result};
use crate::options::Backend;
use crate::task::ProcessTask;
use crate::trace::Trace;
type PoolJobOf = super::chunks::PoolJob;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Settings for a [`Pool`]: [`Pool::builder`].
#[derive(Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    backend: Option<Backend>,
    initializer: Option<(&'static str, Result<Vec<u8>>)>,
    initializer_timeout: Option<Duration>,
    max_tasks_per_child: Option<usize>,
    max_items_per_child: Option<usize>,
    pub(super) on_worker_death: OnWorkerDeath,
    pub(super) terminate_on_drop: bool,
    pub(super) chunksize: Chunksize,
    /// Settings refused by their setter, reported by `build`.
    refused: Vec<String>,
    /// Workers start one at a time, when none is idle (an `Executor`).
    pub(super) lazy: bool,
    max_worker_memory: Option<u64>,
    retries: u32,
    trace: Option<std::path::PathBuf>,
}

impl PoolBuilder {
    /// How many workers (default: [`cpu_count`](crate::cpu_count)).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Worker processes (the default) or threads.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Runs `T` with `args` once in each new worker process before its
    /// first chunk (`initializer=`, `initargs=`). A failing initializer
    /// fails the submission that started the worker, and the worker is
    /// not retried in a loop.
    pub fn initializer<T: ProcessTask>(mut self, args: T::Args) -> Self {
        let codecs = T::codecs().expect("a process task has codecs");
        let encoded = (codecs.args.encode)(&args).map_err(|e| Error::Codec {
            task: T::NAME.into(),
            index: 0,
            action: "encode the initializer's arguments",
            cause: e.0,
        });
        self.initializer = Some((T::NAME, encoded));
        self
    }

    /// How long the initializer may run in a new worker (default: as long
    /// as it takes, as in CPython). One that runs longer is killed, and
    /// the submission that started the worker fails with `Error::Pool`
    /// naming the initializer. [`Pool::terminate`] kills a worker stuck in
    /// its initializer whether or not this is set.
    pub fn initializer_timeout(mut self, timeout: Duration) -> Self {
        self.initializer_timeout = Some(timeout);
        self
    }

    /// Retires a worker after `k` chunks (`maxtasksperchild`: CPython
    /// counts chunks too). 0 is refused by [`PoolBuilder::build`], as
    /// CPython refuses it: leave it unset for no limit.
    pub fn max_tasks_per_child(mut self, k: usize) -> Self {
        self.refuse_zero("max_tasks_per_child", "chunk", k);
        self.max_tasks_per_child = Some(k);
        self
    }

    /// Retires a worker once it has run `k` items. 0 is refused by
    /// [`PoolBuilder::build`].
    pub fn max_items_per_child(mut self, k: usize) -> Self {
        self.refuse_zero("max_items_per_child", "item", k);
        self.max_items_per_child = Some(k);
        self
    }

    /// Records a per-worker limit of 0, which `build` refuses.
    fn refuse_zero(&mut self, setting: &str, unit: &str, k: usize) {
        if k == 0 {
            self.refused.push(format!(
                "{setting}(0): a worker must run at least one {unit}; leave it unset for \
                 workers that live as long as the pool"
            ));
        }
    }

    /// The most memory, in bytes, one worker process may hold: a worker
    /// over it is stopped (by its memory cgroup where one can be made,
    /// else by parjob, which reads each worker's memory every 20 ms),
    /// and the job it ran fails with
    /// [`Error::MemoryLimit`](crate::Error::MemoryLimit) naming the item;
    /// the pool then treats it as a worker's death. Worker processes
    /// only; 0 is refused by [`PoolBuilder::build`].
    ///
    /// ```
    /// use parjob_runtime::pool::Pool;
    /// use parjob_runtime::Backend;
    ///
    /// // Threads share one process: there is no worker's memory to watch.
    /// let threads = Pool::builder()
    ///     .backend(Backend::Thread)
    ///     .max_worker_memory(2 << 30)
    ///     .build();
    /// assert!(threads.is_err());
    /// ```
    pub fn max_worker_memory(mut self, bytes: u64) -> Self {
        if bytes == 0 {
            self.refused.push(
                "max_worker_memory = 0 would stop every worker: give a size, or no limit".into(),
            );
        }
        self.max_worker_memory = Some(bytes);
        self
    }

    /// Runs a job again, on a fresh worker, when its worker died (a
    /// signal, `abort`, `exit`, the memory limit), up to `n` more times;
    /// only when the attempts run out is the death the job's error
    /// ([`Error::Retried`](crate::Error::Retried), with the count), and
    /// only then does [`OnWorkerDeath`] see it. Worker processes only.
    ///
    /// ```
    /// use parjob_runtime::pool::Pool;
    /// use parjob_runtime::Backend;
    ///
    /// // A thread cannot be stopped, and its job cannot run twice.
    /// let threads = Pool::builder().backend(Backend::Thread).retries(2).build();
    /// assert!(threads.is_err());
    /// ```
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// What a worker's death does ([`OnWorkerDeath::Replace`] by default).
    pub fn on_worker_death(mut self, policy: OnWorkerDeath) -> Self {
        self.on_worker_death = policy;
        self
    }

    /// Whether dropping the pool terminates it (true) or closes it and
    /// waits for its work (false, the default, as concurrent.futures'
    /// `with` block does).
    pub fn terminate_on_drop(mut self, terminate: bool) -> Self {
        self.terminate_on_drop = terminate;
        self
    }

    /// The chunk size `map` and `starmap` use (default: CPython's formula).
    /// 0 is refused by [`PoolBuilder::build`].
    pub fn chunksize(mut self, chunksize: impl Into<Chunksize>) -> Self {
        self.chunksize = chunksize.into();
        if self.chunksize == Chunksize::Fixed(0) {
            self.refused.push(super::chunksize_zero().to_string());
        }
        self
    }

    /// Records the pool's timeline, from `build` until the pool has
    /// closed and drained (`join`, or its drop), and writes it then as
    /// Chrome trace-event JSON to `path`, with the HTML report beside it
    /// (see `trace` in the guide). Default: `PARJOB_TRACE`, else off.
    ///
    /// ```no_run
    /// let pool = parjob_runtime::pool::Pool::builder()
    ///     .processes(2)
    ///     .trace("pool.json")
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn trace(mut self, path: impl AsRef<std::path::Path>) -> Self {
        self.trace = Some(path.as_ref().to_path_buf());
        self
    }

    /// The pool's trace, handed to its session; `None` when off.
    pub(super) fn start_trace(&self, engine: &mut Engine<PoolJobOf>) -> Option<Arc<Trace>> {
        let path = self.trace.clone().or_else(|| {
            crate::options::env_var(crate::trace::ENV_TRACE).map(std::path::PathBuf::from)
        })?;
        let workers = self.processes.unwrap_or_else(crate::options::cpu_count);
        let trace = Trace::start(&path, 0, workers);
        engine.session().set_trace(&trace);
        Some(trace)
    }

    /// Starts the pool (its worker processes start with its first work).
    ///
    /// # Errors
    /// `Error::Config` for 0 processes, the sequential backend, or
    /// process-only settings on threads; `Error::NoWorkerEntry` without
    /// `#[parjob::main]`; an initializer whose arguments do not encode.
    pub fn build(self) -> Result<Pool> {
        let processes = self.processes.unwrap_or_else(crate::options::cpu_count);
        if processes == 0 {
            return Err(Error::Config("a Pool of 0 processes".into()));
        }
        if !self.refused.is_empty() {
            return Err(Error::Config(self.refused.join("; ")));
        }
        let backend = self.backend.unwrap_or(Backend::Process);
        let stop = Arc::new(AtomicBool::new(false));
        let process_only = self.initializer.is_some()
            || self.max_tasks_per_child.is_some()
            || self.max_items_per_child.is_some()
            || self.max_worker_memory.is_some()
            || self.retries > 0;
        let mut spec = Spec::own_workers(Api::Pool { process_only }, backend, processes);
        spec.memory.limit = self.max_worker_memory;
        spec.retry.retries = self.retries;
        let mut engine = open::open(&spec, Workers::Own(self.rules(stop.clone())?))?;
        let trace = self.start_trace(&mut engine);
        let (entry, threads) = match &engine {
            // The manager thread re-executes this program with the entry
            // of the thread that builds the pool.
            Engine::Process(_) => (Some(worker_entry().ok_or(Error::NoWorkerEntry)?), None),
            Engine::Thread(session) => (None, Some(session.threads().clone())),
            _ => (None, None),
        };
        Ok(Pool::start(
            engine, threads, entry, processes, stop, &self, trace,
        ))
    }

    /// The process rules of this pool's workers.
    fn rules(&self, stop: Arc<AtomicBool>) -> Result<PoolRules> {
        let init = match &self.initializer {
            None => None,
            Some((task, Ok(args))) => Some(Arc::new(Initializer {
                task,
                args: args.clone(),
                timeout: self.initializer_timeout,
            })),
            Some((_, Err(e))) => return Err(Error::Config(e.to_string())),
        };
        Ok(PoolRules {
            isolate_deaths: true,
            depth: 1,
            max_batches: self.max_tasks_per_child,
            max_items: self.max_items_per_child,
            init,
            forget_when_idle: true,
            no_resend: false,
            stop,
            lazy: self.lazy,
        })
    }
}
