//! The runtime behind parjob's macros.
//!
//! Users depend on the `parjob` facade crate; this crate is what the
//! macros' expansions call, through `parjob::__private`. Its parts:
//!
//! - [`task`]: the [`Task`] trait, [`Job`], and the registry of process tasks;
//! - [`config`](mod@config): options, `n_jobs` resolution, [`cpu_count`], env vars;
//! - [`parallel`]: the [`Parallel`] runner and the shared pools behind `f::map`;
//! - `indexed`: `f::par_map`'s split path for inputs of known length;
//! - [`loops`]: the engine behind marked `for` loops and `parallel_for!`;
//! - [`memo`]: the disk cache behind `#[memoize]` and [`Memory`];
//! - [`schedule`]: lazy drawing, batching, `pre_dispatch`, ordering, progress;
//! - `backend`: sequential, thread (rayon) and process sessions behind one trait;
//! - [`beacon`]: which job a worker runs, in shared memory (timeouts, crash blame);
//! - [`worker`]: the entry and loop of a worker process;
//! - [`ipc`]: frames and messages on the worker pipes;
//! - [`codec`]: the one place that names bincode;
//! - [`compress`]: every codec joblib has, for dumps and the cache;
//! - [`persist`]: `dump`, `load` and `load_mmap`;
//! - [`plain`]: primitive numbers as bytes (raw arrays);
//! - [`panic`](mod@panic): catching a panic with its message and location;
//! - [`error`]: the one [`Error`] enum.

#![warn(missing_docs)]

mod backend;
pub mod beacon;
pub mod codec;
pub mod compress;
pub mod config;
pub mod error;
mod files;
mod indexed;
pub mod ipc;
pub mod loops;
pub mod memo;
pub mod panic;
pub mod parallel;
pub mod persist;
pub mod plain;
pub mod schedule;
pub mod task;
pub mod worker;

pub use backend::process::THREAD_ENV_VARS;
pub use compress::Compression;
pub use config::{
    config, cpu_count, effective_n_jobs, Backend, BatchSize, Config, ConfigGuard, Options,
    PreDispatch, Resolved,
};
pub use error::{Error, Result};
pub use memo::{CacheStats, MemorizedResult, Memory, MissReason};
pub use parallel::Parallel;
pub use schedule::{Ordered, Unordered};
pub use task::{
    Job, LocalCall, ProcessTask, RemoteCall, SerdeFns, Task, TaskCodecs, TaskEntry, Work,
};
pub use worker::{init, is_worker};

#[doc(hidden)]
pub use inventory;
#[doc(hidden)]
pub use rayon;
