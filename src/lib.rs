//! # parjob: joblib for Rust
//!
//! Mark a function `#[parallel]` and run it over an iterator on threads or
//! on worker processes, with results in input order or a clear error:
//!
//! ```
//! use parjob::prelude::*;
//!
//! #[parallel(n_jobs = 2)]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! // joblib: Parallel(n_jobs=2)(delayed(square)(i) for i in range(10))
//! let squares = square::map(0..10).unwrap();
//! assert_eq!(squares, vec![0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
//!
//! // The explicit runner, reusable: its threads stay up between runs.
//! let p = Parallel::new().n_jobs(2).backend(Backend::Thread);
//! let again = p.run((0..10).map(|x| square::delayed(x))).unwrap();
//! assert_eq!(again, squares);
//! // The function itself is unchanged.
//! assert_eq!(square(12), 144);
//! ```
//!
//! ## What `#[parallel]` generates
//! Beside `fn f` it puts a struct `f` (in the type namespace, so the two do
//! not clash) with:
//! - `f::delayed(args..) -> Job<R>`: one call waiting to run;
//! - `f::map(items) -> parjob::Result<Vec<R>>`: every call, with the
//!   attribute's options, on a shared pool. A one-parameter function takes
//!   an iterator of its argument; a function of several takes tuples;
//! - `f::par_map(items) -> parjob::Result<Vec<R>>`: the same for an input of
//!   known length (a `Vec`, or a rayon indexed parallel iterator over a
//!   slice or a `usize` range). On threads it splits the input as rayon
//!   does, so nanosecond tasks cost what they cost in rayon:
//!
//!   ```
//!   # use parjob::prelude::*;
//!   # #[parallel(n_jobs = 2)]
//!   # fn square(x: u64) -> u64 { x * x }
//!   let xs: Vec<u64> = (0..100_000).collect();
//!   let squares = square::par_map(xs).unwrap();
//!   assert_eq!(squares[99_999], 99_999 * 99_999);
//!   ```
//! - `f::options()`, and an impl of [`Task`].
//!
//! A job owns its arguments. A parameter `&T` is passed as `T`'s owned form
//! (`&str` as `String`, `&[T]` as `Vec<T>`, `&Path` as `PathBuf`, `&T` as `T`),
//! and the function receives a reference to the job's copy.
//!
//! ## Parallel loops
//! Inside a `#[parallel]` function (or a method, where the attribute only
//! rewrites loops), a `for` loop marked `#[parallel]` runs on threads and
//! gives the plain loop's result bit for bit: each item's updates of outer
//! variables are logged while it runs and applied afterwards in iteration
//! order. The body may borrow anything in scope.
//!
//! ```
//! use parjob::prelude::*;
//!
//! #[parallel(n_jobs = 2)]
//! fn stats(xs: &[f64]) -> Result<(f64, f64, Vec<f64>), String> {
//!     let (mut sum, mut max, mut big) = (0.0, f64::MIN, Vec::new());
//!     #[parallel]
//!     for x in xs {
//!         if x.is_nan() {
//!             Err("NaN in the input")?; // the first error in iteration order
//!         }
//!         if *x < 0.0 {
//!             continue;
//!         }
//!         sum += x;
//!         max = max.max(*x);
//!         if *x > 0.5 {
//!             big.push(*x);
//!         }
//!     }
//!     Ok((sum, max, big))
//! }
//!
//! let xs: Vec<f64> = (0..1000).map(|i| (i as f64 * 0.37).sin()).collect();
//! let (sum, max, big) = stats(&xs).unwrap();
//! let plain: f64 = xs.iter().filter(|x| **x >= 0.0).sum();
//! assert_eq!(sum.to_bits(), plain.to_bits());
//! assert!(max <= 1.0 && big.iter().all(|x| *x > 0.5));
//! assert!(stats(&[1.0, f64::NAN]).is_err());
//!
//! // A parallel comprehension: a Vec of the body's values, in input order.
//! let squares: Vec<u64> = parallel_for!(n_jobs = 2; for x in 0..100u64 { x * x });
//! assert_eq!(squares[9], 81);
//! ```
//!
//! The updates a body may make are `x op= e` (every compound assignment),
//! `v.push(e)`, `v.extend(e)`, `m.insert(k, e)`, and `s = s.max(e)` or
//! `.min(e)`; `continue` and `?` work; `break`, `return`, labels and any
//! other change to outer state are compile errors on the offending code.
//! `docs/guide.md` has the whole story, including process-backend loops.
//!
//! ## Caching results on disk
//! `#[memoize(dir = "..")]` is joblib's `Memory.cache`: a hit loads the
//! stored result instead of calling the body, and any change to the
//! arguments (except `ignore`d ones) or to the function's code misses.
//!
//! ```
//! use parjob::prelude::*;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! static CALLS: AtomicUsize = AtomicUsize::new(0);
//!
//! #[memoize(dir = "target/doc-cache", ignore = [verbose])]
//! fn slow_sum(xs: &[f64], verbose: bool) -> f64 {
//!     CALLS.fetch_add(1, Ordering::SeqCst);
//!     if verbose {
//!         println!("summing {} numbers", xs.len());
//!     }
//!     xs.iter().sum()
//! }
//!
//! slow_sum::clear();
//! let xs = vec![1.0, 2.0, 3.5];
//! assert_eq!(slow_sum(&xs, false), 6.5); // computed and stored
//! assert_eq!(slow_sum(&xs, true), 6.5); // loaded: `verbose` is ignored
//! assert_eq!(CALLS.load(Ordering::SeqCst), 1);
//! let stats = slow_sum::stats();
//! assert_eq!((stats.hits, stats.last_miss), (1, Some(parjob::MissReason::NoEntry)));
//! slow_sum::clear();
//! ```
//!
//! See `docs/guide.md` for the key, the store, eviction, and `Memory`.
//!
//! ## Saving and loading
//! [`dump`] and [`load`] save any serde value, compressed as the file's
//! extension asks, and load it back whatever its name; numeric arrays are
//! stored raw, and an uncompressed one can be memory-mapped ([`load_mmap`]
//! is `unsafe`: nothing may change the file while it is mapped). A load
//! reads only regular files, never panics or aborts, and is bounded by
//! [`Limits`]: use [`load_with`] and a `max_bytes` you chose for a file you
//! did not write.
//!
//! ```
//! use parjob::{dump, load, load_mmap};
//!
//! let dir = std::env::temp_dir().join(format!("parjob-doc-persist-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let weights: Vec<f64> = (0..10_000).map(|i| i as f64 / 3.0).collect();
//! dump(&weights, dir.join("weights.bin")).unwrap();
//! dump(&("model", weights.clone()), dir.join("model.zst")).unwrap(); // zstd
//! let back: (String, Vec<f64>) = load(dir.join("model.zst")).unwrap();
//! assert_eq!(back.1, weights);
//! // SAFETY: the file is ours, and nothing changes it while it is mapped.
//! let mapped = unsafe { load_mmap::<f64>(dir.join("weights.bin")) }.unwrap();
//! assert_eq!(mapped[9_999], 9_999.0 / 3.0);
//! # drop(mapped);
//! # std::fs::remove_dir_all(dir).unwrap();
//! ```
//!
//! ## Options (attribute or builder)
//! - `n_jobs`: joblib's: `-1` every CPU, `-2` all but one, `1` sequential,
//!   `N` workers. `0` is a compile error in an attribute and
//!   [`Error::Config`] in the builder. Default: `PARJOB_N_JOBS`, else `-1`.
//! - `backend`: `"thread"` (the default; a rayon pool of exactly `n_jobs`
//!   threads), `"process"` (re-executed worker processes), `"sequential"`.
//!   Default: `PARJOB_BACKEND`, else `"thread"`.
//! - `crate = "path"`: where to find parjob, for re-exporting crates.
//!
//! ## The process backend
//! `#[parallel(backend = "process")]` registers the function by name
//! (`module_path!()::name`) so that a worker, which is this same program
//! re-executed, can call it. Its arguments and result must be serde types;
//! that is checked when it compiles. The program must install the worker
//! entry, or the backend refuses to spawn and says so:
//!
//! ```no_run
//! use parjob::prelude::*;
//!
//! #[parallel(n_jobs = 4, backend = "process")]
//! fn simulate(seed: u64, steps: usize) -> f64 {
//!     (0..steps).map(|i| ((seed + i as u64) % 7) as f64).sum()
//! }
//!
//! #[parjob::main] // a re-executed worker serves tasks here and never runs the rest of main
//! fn main() -> parjob::Result<()> {
//!     let means = simulate::map((0..100).map(|s| (s, 1000)))?;
//!     assert_eq!(means.len(), 100);
//!     Ok(())
//! }
//! ```
//!
//! Tests use `#[parjob::test]` in place of `#[test]`: a worker re-runs the
//! test binary on that one test (`--exact <name> --test-threads=1`).
//!
//! Workers talk to the parent over inherited pipes (their stdout and stderr
//! stay yours), check a protocol version and a registry fingerprint when
//! they start, die with their parent, and get `RAYON_NUM_THREADS`,
//! `OMP_NUM_THREADS`, `OPENBLAS_NUM_THREADS`, `MKL_NUM_THREADS` and
//! `POLARS_MAX_THREADS` set to their share of the CPUs unless you set them.
//! A `Parallel` inside a worker defaults to threads.
//!
//! ## Errors
//! A run returns the first failure as an [`Error`] naming the task, the
//! item index and the cause: a panic (message and location), a worker that
//! died (its signal or exit code), an encode or decode failure, or an
//! unknown task. The other jobs are cancelled, busy workers are killed, and
//! the same `Parallel` works for the next run, with new workers.

/// The `ndarray` crate parjob's `ndarray` feature builds against.
#[cfg(feature = "ndarray")]
pub use ndarray;
#[cfg(feature = "cache")]
pub use parjob_macros::memoize;
#[cfg(not(feature = "cache"))]
pub use parjob_macros::memoize_without_cache as memoize;
pub use parjob_macros::{main, parallel, parallel_for, test};
/// The MPI backend's view of this process (the `mpi` feature).
#[cfg(feature = "mpi")]
pub use parjob_runtime::mpi;
#[cfg(feature = "persist")]
pub use parjob_runtime::persist::{
    dump, dump_with, load, load_from, load_from_with, load_mmap, load_unchecked, load_with,
    DumpTarget, Limits, Mapped, PersistError, MAX_DEPTH,
};
/// `multiprocessing.Pool`: [`pool::Pool`], with `map`, `starmap`, `imap`,
/// `apply_async` and callbacks, on worker processes that a dead worker
/// does not hang.
pub use parjob_runtime::pool;
pub use parjob_runtime::pool::{Executor, Pool, Process};
/// Lists and maps shared by threads and worker processes (Python's
/// `Manager().list()` and `.dict()`).
pub use parjob_runtime::shared;
/// Shared memory for big arrays: [`shm::SharedSlice`], and how slices of
/// numbers over `max_nbytes` reach worker processes without copies.
pub use parjob_runtime::shm;
/// Cross-process locks, semaphores, events, barriers, values, queues and
/// pipes: Python's `multiprocessing` primitives, shared with worker
/// processes by passing them as task arguments.
pub use parjob_runtime::sync;
/// A run's timeline (`trace = "run.json"`): [`trace::report_html`] and
/// [`trace::rebuild_report`] make the one-page HTML report from a trace's
/// JSON.
pub use parjob_runtime::trace;
#[cfg(feature = "persist")]
pub use parjob_runtime::Compression;
pub use parjob_runtime::{
    config, cpu_count, effective_n_jobs, init, is_worker, Backend, BackendSource, BatchSize,
    Config, ConfigGuard, Error, Initializer, Job, MaxNbytes, MemoryReading, NestedIn, OnError,
    Options, Ordered, Parallel, Plan, PreDispatch, Prefer, Require, Result, Shard, Task, TaskRun,
    TempFolder, TraceFile, Unordered,
};
#[cfg(feature = "cache")]
pub use parjob_runtime::{CacheStats, CachedArray, MemorizedResult, Memory, MissReason};

/// parjob's version, as its `Cargo.toml` gives it (joblib's `__version__`).
///
/// ```
/// let parts: Vec<u32> = parjob::VERSION.split('.').map(|p| p.parse().unwrap()).collect();
/// assert_eq!(parts.len(), 3);
/// ```
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What most programs need: `use parjob::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "cache")]
    pub use crate::Memory;
    pub use crate::{
        memoize, parallel, parallel_for, Backend, BatchSize, Job, Parallel, PreDispatch,
    };
}

/// The runtime as the macros' expansions see it. Not public API: it may
/// change in any release.
#[doc(hidden)]
pub use parjob_runtime::__private;

/// The README's code, compiled and run as doctests, so the examples a
/// newcomer copies stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// `docs/guide.md`, the whole behaviour: every Rust example on it
/// compiled and run.
#[cfg(doctest)]
#[doc = include_str!("../docs/guide.md")]
pub struct GuideDoctests;

/// `docs/from-joblib.md`: joblib and multiprocessing idioms side by side
/// with parjob's, every Rust snippet compiled and run.
#[cfg(doctest)]
#[doc = include_str!("../docs/from-joblib.md")]
pub struct FromJoblibDoctests;

/// The macros' pages (`macros/doc/`), whose examples need this crate,
/// compiled and run as this crate's doctests.
#[cfg(doctest)]
pub mod macro_doctests {
    #[doc = include_str!("../macros/doc/parallel.md")]
    pub struct Parallel;
    #[doc = include_str!("../macros/doc/memoize.md")]
    pub struct Memoize;
    #[doc = include_str!("../macros/doc/parallel_for.md")]
    pub struct ParallelFor;
    #[doc = include_str!("../macros/doc/main.md")]
    pub struct Main;
    #[doc = include_str!("../macros/doc/test.md")]
    pub struct Test;
}
