//! The one error type of parjob.
//!
//! Every failure the runtime can observe is a variant here, and every
//! variant that concerns a task names the task and the item index (the
//! position of the job in the input iterator), so a failed run tells the
//! user *which* call failed and *why* without a debugger.

use std::fmt;
#[cfg(feature = "persist")]
use std::io;

/// The result type of every fallible parjob call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when parjob runs work.
///
/// Its `Debug` form is its `Display` form, the message and its advice, as
/// `anyhow`'s is: `fn main() -> parjob::Result<()>` and `unwrap()` print
/// `Debug`, and the advice must reach the person reading. The structured
/// form is the variant's fields: match on it.
///
/// ```
/// let e = parjob_runtime::Error::Config("n_jobs = 0".into());
/// assert_eq!(format!("{e:?}"), e.to_string());
/// assert!(matches!(e, parjob_runtime::Error::Config(ref why) if why == "n_jobs = 0"));
/// ```
#[derive(thiserror::Error)]
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
    #[error(
        "worker process {pid} died while running task `{task}` on item {index}: {status}{}",
        last_reading(memory)
    )]
    WorkerDied {
        /// The task that was running.
        task: String,
        /// The item that was running.
        index: usize,
        /// The worker's pid.
        pid: u32,
        /// How it ended, e.g. `killed by signal 9 (SIGKILL)` or `exited with code 3`.
        status: String,
        /// For a SIGKILL that parjob did not send: the worker's last
        /// memory reading and the memory the machine had then, and whether
        /// the kernel's OOM killer ran since.
        memory: Option<MemoryReading>,
    },

    /// A worker process went over the run's `max_worker_memory` while it
    /// ran this item, and parjob stopped it (SIGKILL) before the kernel
    /// had to. Retried under `retries`, like a death.
    #[error(
        "task `{task}` on item {index} went over max_worker_memory: worker {pid} held {} of its {} limit and was stopped; give each worker more memory, run fewer n_jobs, or split the item",
        human_bytes(*peak),
        human_bytes(*limit)
    )]
    MemoryLimit {
        /// The task that was running.
        task: String,
        /// The item that was running.
        index: usize,
        /// The worker's pid.
        pid: u32,
        /// The reading that crossed the limit, in bytes.
        peak: u64,
        /// The limit, in bytes.
        limit: u64,
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

    /// A job retried under `retries` failed on every attempt; `last` is
    /// the last attempt's error.
    #[error("task `{task}` failed {attempts} times on item {index}; last: {last}")]
    Retried {
        /// The task.
        task: String,
        /// The item.
        index: usize,
        /// How many times it ran.
        attempts: u32,
        /// Why the last attempt failed.
        last: Box<Error>,
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

    /// A run on the process backend met work that cannot cross a process
    /// boundary: a closure (`Job::new`), or a task without
    /// `backend = "process"`. It never runs silently in the parent.
    #[error(
        "task `{task}` (item {index}) cannot run in a worker process, but the process backend \
         was asked for by {backend_from}: only a `#[parallel(backend = \"process\")]` task can \
         cross a process boundary. Make it one, or run this work on threads: \
         `.require_sharedmem()` on the builder or `config()`, or `require = \"sharedmem\"` in \
         the attribute"
    )]
    NotAProcessTask {
        /// The task's name, or `closure`.
        task: String,
        /// The item.
        index: usize,
        /// Where the process backend came from (`the scoped config()`, ...).
        backend_from: String,
    },

    /// The process backend was asked to start workers, but the program never
    /// installed the worker entry, so a re-executed child could not become a
    /// worker. Nothing was spawned.
    #[error(
        "the process backend needs a worker entry point, and none is installed: put \
         `#[parjob::main]` on `fn main` (or call `parjob::init()` as its first line); in tests, \
         use `#[parjob::test]` instead of `#[test]`, and start process runs from the test's own \
         thread. No process was spawned"
    )]
    NoWorkerEntry,

    /// The MPI backend could not run: the program was not started by an
    /// MPI launcher, the `mpi` feature is off, or every rank is busy.
    #[error("MPI: {0}")]
    Mpi(String),

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

    #[cfg(feature = "persist")]
    /// A `dump` or `load` failed (with `?` in a function returning
    /// `parjob::Result`).
    #[error(transparent)]
    Persist(#[from] PersistError),

    /// An OS-level I/O failure: starting a worker process or talking to
    /// it, or, through `From<std::io::Error>`, one from the user's own code
    /// (`?` in a function returning `parjob::Result`).
    #[error("I/O failed{}: {source}", while_doing(context))]
    Io {
        /// What parjob was doing (empty for an error converted with `?`).
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A shared-memory segment could not be made for
    /// [`SharedSlice`](crate::shm::SharedSlice) (memory or the cgroup's
    /// limit is exhausted, or `memfd_create` is refused). The message
    /// names where the memory was to come from and what to change.
    #[error("{0}")]
    SharedMemory(String),

    /// A [`sync`](crate::sync) primitive was misused (a bounded semaphore
    /// released too often, a broken barrier, an item too large for its
    /// queue), or an item did not encode or decode.
    #[error("{0}")]
    Sync(String),

    /// A [`Queue`](crate::sync::Queue) or pipe end was closed: nothing more
    /// can be put in it, and nothing is left to get.
    #[error("the {0} is closed")]
    Closed(&'static str),

    /// A [`Pool`](crate::pool::Pool) could not run the work: it is closed,
    /// was terminated or is broken, its initializer failed, or a wait ran
    /// out of time. The message says which.
    #[error("{0}")]
    Pool(String),

    /// The submission was cancelled before it started
    /// ([`Future::cancel`](crate::pool::Future::cancel), or a shutdown
    /// that cancels pending work).
    #[error("cancelled before it started")]
    Cancelled,
}

fn while_doing(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!(" while {context}")
    }
}

impl From<std::io::Error> for Error {
    /// An I/O error from the user's own code, so that `?` works in a
    /// function that returns `parjob::Result`.
    fn from(source: std::io::Error) -> Self {
        Error::Io {
            context: String::new(),
            source,
        }
    }
}

/// A worker's memory, read by parjob's memory watch just before it died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReading {
    /// The worker's own resident memory at the last reading, in bytes.
    pub rss: u64,
    /// The machine's available memory (`MemAvailable`) then, in bytes.
    pub available: u64,
    /// Whether the kernel's OOM killer ran after that reading (its
    /// `oom_kill` counter in `/proc/vmstat` grew).
    pub oom_killer: bool,
}

fn last_reading(memory: &Option<MemoryReading>) -> String {
    match memory {
        Some(m) if m.oom_killer => format!(
            "; likely killed by the kernel's OOM killer: its last reading was {} with {} available (set max_worker_memory to stop it sooner and name the item)",
            human_bytes(m.rss),
            human_bytes(m.available)
        ),
        Some(m) => format!(
            "; its last reading was {} with {} available, and the kernel's OOM killer did not run",
            human_bytes(m.rss),
            human_bytes(m.available)
        ),
        None => String::new(),
    }
}

/// A size in words: `3.9 GB`, `512.0 MB`, `64 KB` (powers of 1024).
pub(crate) fn human_bytes(bytes: u64) -> String {
    const KB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= KB * KB * KB {
        format!("{:.1} GB", b / (KB * KB * KB))
    } else if b >= KB * KB {
        format!("{:.1} MB", b / (KB * KB))
    } else {
        format!("{} KB", bytes / 1024)
    }
}

fn at(location: &Option<String>) -> String {
    match location {
        Some(l) => format!(" (at {l})"),
        None => String::new(),
    }
}

impl Error {
    /// The same error with its item index moved by `map` (a pool's batch
    /// index to the item's place in its own submission).
    pub(crate) fn reindex(mut self, map: impl FnOnce(usize) -> usize) -> Self {
        if let Some(old) = self.index() {
            self.set_index(map(old));
        }
        self
    }

    fn set_index(&mut self, new: usize) {
        match self {
            Error::Panic { index, .. }
            | Error::WorkerDied { index, .. }
            | Error::MemoryLimit { index, .. }
            | Error::Timeout { index, .. }
            | Error::InputPanicked { index, .. }
            | Error::Codec { index, .. }
            | Error::UnknownTask { index, .. }
            | Error::NotAProcessTask { index, .. } => *index = new,
            Error::Retried { index, last, .. } => {
                *index = new;
                last.set_index(new);
            }
            _ => {}
        }
    }

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
            | Error::MemoryLimit { index, .. }
            | Error::Codec { index, .. }
            | Error::NotAProcessTask { index, .. }
            | Error::UnknownTask { index, .. }
            | Error::Retried { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// The task name this error concerns, when it concerns one job.
    pub fn task(&self) -> Option<&str> {
        match self {
            Error::Panic { task, .. }
            | Error::Timeout { task, .. }
            | Error::WorkerDied { task, .. }
            | Error::MemoryLimit { task, .. }
            | Error::Codec { task, .. }
            | Error::NotAProcessTask { task, .. }
            | Error::UnknownTask { task, .. }
            | Error::Retried { task, .. } => Some(task),
            _ => None,
        }
    }
}

/// A codec failure, as text: the callers attach task and item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The deepest nesting of sequences, maps, tuples, structs and enums that
/// a load accepts, and so that a dump writes (options and boxes are not
/// levels). A `struct Node { next: Option<Box<Node>> }` list may be 512
/// nodes long; a tree, 512 levels deep.
#[cfg(feature = "persist")]
pub const MAX_DEPTH: usize = 512;

/// What can go wrong in `dump` or `load`. Its `Debug` form is its
/// `Display` form, as [`Error`]'s is.
#[cfg(feature = "persist")]
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// Reading or writing the file failed (a full disk is `StorageFull`).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The file does not start with parjob's magic bytes.
    #[error("not a parjob dump (no PJDUMP header)")]
    NotADump,
    /// The file was written by a newer parjob.
    #[error("written in dump format {found}; this parjob reads up to {supported}: upgrade parjob to load it")]
    NewerVersion {
        /// The file's format version.
        found: u16,
        /// The newest version this build reads.
        supported: u16,
    },
    /// The header names a codec this build does not know.
    #[error("unknown codec {0} in the header")]
    UnknownCodec(u8),
    /// The file holds another type than the one asked for.
    #[error("the file holds another type than `{expected}` (by its type fingerprint); load it as the type it was dumped as, or with `load_unchecked`")]
    WrongType {
        /// The type asked for.
        expected: String,
    },
    /// The file ends before the header says it does.
    #[error("truncated: {expected} bytes expected, {found} found")]
    Truncated {
        /// What the header promises.
        expected: u64,
        /// What is there.
        found: u64,
    },
    /// The payload does not match its checksum, or its structure is broken.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// The value could not be encoded (a `Serialize` impl failed).
    #[error("cannot encode: {0}")]
    Encode(String),
    /// `dump` of a value nested deeper than a load accepts.
    #[error("the value nests deeper than {MAX_DEPTH} levels (structs, enums, tuples, sequences and maps), which `load` refuses in order to bound its stack: store a long chain or deep tree as a flat Vec (of nodes with indices) instead")]
    TooDeep,
    /// The payload is larger than the load's limit.
    #[error("the payload is {bytes} bytes, over this load's limit of {limit} bytes (Limits::max_bytes): if you trust the file, load it with `load_with` and a higher limit")]
    TooLarge {
        /// What the file says the payload holds.
        bytes: u64,
        /// The limit in force.
        limit: u64,
    },
    /// The system refused memory for a buffer the file asked for.
    #[error("out of memory: {bytes} bytes for the payload could not be allocated (lower Limits::max_bytes, or free memory)")]
    OutOfMemory {
        /// The allocation that failed.
        bytes: u64,
    },
    /// A compressed file where only an uncompressed one can be mapped (a
    /// cache entry's mapping; `load_mmap` loads such a dump instead).
    #[error("the file is compressed with {codec}: only an uncompressed dump can be memory-mapped; dump it with Compression::None (no compressing extension) or use `load`")]
    Compressed {
        /// The file's codec.
        codec: &'static str,
    },
    /// `load_mmap` of a dump that is not one raw numeric array.
    #[error("the dump is not a raw numeric array of that element type; `load_mmap` maps only a dumped Vec<P>/[P] of a primitive number")]
    NotAnArray,
}

/// Writes an error's message for `Debug`: the `Display` text (which holds
/// the advice), then each cause that the text does not already quote.
fn debug_as_display(e: &dyn std::error::Error, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let shown = e.to_string();
    f.write_str(&shown)?;
    let mut source = e.source();
    let mut first = true;
    while let Some(cause) = source {
        let text = cause.to_string();
        if !shown.contains(&text) {
            if first {
                f.write_str("\n\nCaused by:")?;
                first = false;
            }
            write!(f, "\n    {text}")?;
        }
        source = cause.source();
    }
    Ok(())
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_as_display(self, f)
    }
}

#[cfg(feature = "persist")]
impl fmt::Debug for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_as_display(self, f)
    }
}
