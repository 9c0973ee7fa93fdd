//! The one error type of parjob.
//!
//! Every failure the runtime can observe is a variant here, and every
//! variant that concerns a task names the task and the item index (the
//! position of the job in the input iterator), so a failed run tells the
//! user *which* call failed and *why* without a debugger.

use std::fmt;

/// The result type of every fallible parjob call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when parjob runs work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An option was out of range or could not be parsed (for example
    /// `n_jobs = 0`, or `PARJOB_BACKEND=gpu`).
    #[error("invalid parjob configuration: {0}")]
    Config(String),

    /// A task panicked. The panic was caught (in the worker thread or the
    /// worker process) and the message and source location carried back.
    #[error("task `{task}` panicked on item {index}: {message}{}", at(location))]
    Panic {
        /// The task's registered name (`module::path::fn_name`).
        task: String,
        /// The position of the failed job in the input.
        index: usize,
        /// The panic payload, when it was a string.
        message: String,
        /// `file:line:column` of the panic, when known.
        location: Option<String>,
    },

    /// A worker process died while it ran a task: killed by a signal
    /// (SIGKILL, the OOM killer, `abort()`), or it called `process::exit`.
    #[error("worker process {pid} died while running task `{task}` on item {index}: {status}")]
    WorkerDied {
        /// The task that was running.
        task: String,
        /// The item that was running.
        index: usize,
        /// The worker's pid.
        pid: u32,
        /// How it ended, e.g. `killed by signal 9 (SIGKILL)` or `exited with code 3`.
        status: String,
    },

    /// A task ran longer than the run's `timeout`. On the process backend its
    /// worker was killed (and is replaced at the next run); on the thread
    /// backend the thread cannot be stopped and finishes in the background.
    #[error("task `{task}` on item {index} ran over its timeout of {after:?}")]
    Timeout {
        /// The task.
        task: String,
        /// The item.
        index: usize,
        /// The limit that was passed.
        after: std::time::Duration,
    },

    /// The input iterator panicked while producing the job for `index`.
    #[error("the input iterator panicked while producing item {index}: {message}")]
    InputPanicked {
        /// The position it was producing.
        index: usize,
        /// The panic message.
        message: String,
    },

    /// Arguments or a result could not be encoded or decoded on their way
    /// across the process boundary.
    #[error(
        "task `{task}` on item {index}: could not {action} across the process boundary: {cause}"
    )]
    Codec {
        /// The task concerned.
        task: String,
        /// The item concerned.
        index: usize,
        /// What was being done: `encode the arguments`, `decode the result`, ...
        action: &'static str,
        /// The codec's message.
        cause: String,
    },

    /// A worker was asked for a task name it has no registration for.
    #[error(
        "task `{task}` (item {index}) is not registered in the worker: mark the function \
         `#[parallel(backend = \"process\")]` so it is registered by name"
    )]
    UnknownTask {
        /// The unknown name.
        task: String,
        /// The item that asked for it.
        index: usize,
    },

    /// The process backend was asked to start workers, but the program never
    /// installed the worker entry, so a re-executed child could not become a
    /// worker. Nothing was spawned.
    #[error(
        "the process backend needs a worker entry point, and none is installed: put \
         `#[parjob::main]` on `fn main` (or call `parjob::init()` as its first line); in tests, \
         use `#[parjob::test]` instead of `#[test]`. No process was spawned"
    )]
    NoWorkerEntry,

    /// A worker started, but its handshake did not match this process
    /// (another protocol version or another task registry), or it never came.
    #[error("worker handshake failed: {0}")]
    Handshake(String),

    /// A cache entry could not be loaded (a shelved result whose entry was
    /// cleared, evicted or damaged since).
    #[error("cache entry {path}: {cause}")]
    Cache {
        /// The entry's file.
        path: String,
        /// What is wrong with it.
        cause: String,
    },

    /// A `dump` or `load` failed (with `?` in a function returning
    /// `parjob::Result`).
    #[error(transparent)]
    Persist(#[from] crate::persist::PersistError),

    /// Starting a worker process, or talking to it, failed at the OS level.
    #[error("worker process I/O failed while {context}: {source}")]
    Io {
        /// What parjob was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn at(location: &Option<String>) -> String {
    match location {
        Some(l) => format!(" (at {l})"),
        None => String::new(),
    }
}

impl Error {
    pub(crate) fn io(context: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            context: context.to_string(),
            source,
        }
    }

    /// The item index this error concerns, when it concerns one job.
    pub fn index(&self) -> Option<usize> {
        match self {
            Error::Panic { index, .. }
            | Error::Timeout { index, .. }
            | Error::InputPanicked { index, .. }
            | Error::WorkerDied { index, .. }
            | Error::Codec { index, .. }
            | Error::UnknownTask { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// The task name this error concerns, when it concerns one job.
    pub fn task(&self) -> Option<&str> {
        match self {
            Error::Panic { task, .. }
            | Error::Timeout { task, .. }
            | Error::WorkerDied { task, .. }
            | Error::Codec { task, .. }
            | Error::UnknownTask { task, .. } => Some(task),
            _ => None,
        }
    }
}
