//! The engine behind marked `for` loops and `parallel_for!`.
//!
//! The macros turn a loop into two copies of its body: the original, and a
//! closure that records each update of an outer variable (`s += x`,
//! `v.push(x)`, ...) as an *effect* in a log instead of applying it. A
//! [`Loop`] then runs in two phases:
//!
//! 1. **Sequential prefix.** The original body runs in the caller's thread,
//!    in chunks of 1, 2, 4, ... items, until [`PREFIX`] has passed. A loop
//!    that finishes within it costs what the plain loop costs: tiny loops
//!    never pay for threads, and neither does a loop whose items measured
//!    under [`MIN_PARALLEL_ITEM`] each. A sequential plan (`n_jobs = 1`, or
//!    a loop started on one of parjob's pool threads, as a nested loop is)
//!    runs the whole loop here.
//! 2. **Windows on threads.** The rest of the items are drawn in windows,
//!    sized from the prefix's measured time per item to about
//!    [`WINDOW_TARGET`] of work per thread (at most [`MAX_WINDOW`] items).
//!    A window is split across the pool with rayon; each split runs its
//!    items in order and keeps their effects and values in order. The
//!    caller then applies the splits' effects in split order, which is
//!    iteration order.
//!
//! Every effect is applied in the caller, in iteration order, with the same
//! operation the sequential loop would have used. That is why the result is
//! the sequential loop's bit for bit, floating-point sums included. What it
//! costs is memory: one window's effects (and values, for `parallel_for!`)
//! are held until the window ends.
//!
//! The body closure returns `Err(residual)` where the original body's `?`
//! failed. Items after the first such item are skipped, effects logged
//! before it are applied, later ones are dropped, and the residual is
//! returned so the expansion can re-raise it with `?`. A panic in a body
//! propagates to the caller, as it would from the plain loop.

use crate::config::{Backend, Options};
use crate::error::Result;
use crate::parallel::map::RemoteCalls;
use crate::parallel::{shared, Parallel};
use crate::task::{ProcessTask, RemoteCall};
use rayon::iter::{IndexedParallelIterator, IntoParallelIterator, ParallelIterator};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a loop runs sequentially before it moves to threads, unless
/// [`set_sequential_prefix`] changed it.
pub const PREFIX: Duration = Duration::from_millis(2);

thread_local! {
    static PREFIX_HERE: Cell<Duration> = const { Cell::new(PREFIX) };
}

/// Changes how long loops started from this thread run sequentially
/// before they move to threads (tests use zero, to exercise the parallel
/// phase on small inputs).
#[doc(hidden)]
pub fn set_sequential_prefix(prefix: Duration) {
    PREFIX_HERE.with(|p| p.set(prefix));
}
/// About how much work each thread gets per window.
pub const WINDOW_TARGET: Duration = Duration::from_millis(100);
/// The most items drawn into one window.
pub const MAX_WINDOW: usize = 1 << 16;

/// Below this measured time per item, a loop stays sequential after its
/// prefix: logging an item's updates and folding them back costs a few
/// nanoseconds, more than threads would save on it.
pub const MIN_PARALLEL_ITEM: Duration = Duration::from_nanos(25);

thread_local! {
    /// Set on the threads of parjob's pools.
    static POOL_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as one of parjob's pool threads: a loop
/// started on it (in a loop body or a thread task) runs sequentially unless
/// it names its own `n_jobs` or `backend`, so nesting never oversubscribes.
pub(crate) fn mark_pool_thread() {
    POOL_THREAD.with(|f| f.set(true));
}

enum Plan {
    Sequential,
    Threads(crate::backend::thread::Threads),
}

/// One run of a marked loop or a `parallel_for!`; see the module docs.
pub struct Loop {
    plan: Plan,
    finished: bool,
    chunk: usize,
    started: Option<Instant>,
    prefix: Duration,
    prefix_items: usize,
    prefix_time: Duration,
    min_len: usize,
}

impl Loop {
    /// Plans a loop with these options. `explicit` says the loop itself
    /// named `n_jobs` or `backend`: only then does a loop nested in another
    /// parallel loop's body use threads of its own.
    ///
    /// A configuration error (a bad `PARJOB_N_JOBS`, say) makes the loop
    /// sequential, with a warning on stderr: a loop has no `Result` to
    /// report it in, and sequential is always correct.
    pub fn new(options: Options, explicit: bool) -> Loop {
        let nested = POOL_THREAD.with(Cell::get) && !explicit;
        let plan = if nested {
            Plan::Sequential
        } else {
            match Self::threads(options) {
                Ok(plan) => plan,
                Err(e) => {
                    warn_once(&e);
                    Plan::Sequential
                }
            }
        };
        let min_len = match options.resolve().map(|r| r.batch_size) {
            Ok(crate::config::BatchSize::Fixed(n)) => n,
            _ => 1,
        };
        Loop {
            plan,
            finished: false,
            chunk: 1,
            started: None,
            prefix: PREFIX_HERE.with(Cell::get),
            prefix_items: 0,
            prefix_time: Duration::ZERO,
            min_len,
        }
    }

    fn threads(options: Options) -> Result<Plan> {
        let resolved = options.resolve()?;
        // A loop body borrows the caller's data, so it cannot go to a
        // worker process: a process backend from scoped defaults or the
        // environment runs loops on threads.
        if resolved.n_jobs == 1 || resolved.backend == Backend::Sequential {
            return Ok(Plan::Sequential);
        }
        let parallel: Parallel = shared(options.with_backend(Backend::Thread))?;
        Ok(Plan::Threads(parallel.threads(resolved.n_jobs)?))
    }

    /// How many items the sequential phase should run next, or `None` when
    /// it is over (the loop finished, or it is time for threads).
    pub fn sequential_chunk(&mut self) -> Option<usize> {
        if self.finished {
            return None;
        }
        if matches!(self.plan, Plan::Sequential) {
            return Some(usize::MAX);
        }
        if self.prefix_time >= self.prefix {
            let per_item = self.prefix_time.as_nanos() / self.prefix_items.max(1) as u128;
            if self.prefix_items == 0 || per_item >= MIN_PARALLEL_ITEM.as_nanos() {
                return None;
            }
            // Items this small are cheapest in one sequential run.
            self.plan = Plan::Sequential;
            return Some(usize::MAX);
        }
        self.started = Some(Instant::now());
        Some(self.chunk)
    }

    /// Reports that the sequential phase ran `taken` of the `asked` items.
    pub fn chunk_done(&mut self, taken: usize, asked: usize) {
        if taken < asked {
            self.finished = true;
        }
        if let Some(started) = self.started.take() {
            self.prefix_time += started.elapsed();
        }
        self.prefix_items += taken;
        self.chunk = self.chunk.saturating_mul(2);
    }

    /// Whether the sequential phase ran every item.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Runs the items left after the sequential phase on threads.
    ///
    /// `body` runs one item, pushing its effects to the log, and returns
    /// the item's value or the residual of a failed `?`. `fold` applies one
    /// effect; it runs in this thread, in iteration order. Values are
    /// appended to `out` in input order. Returns the first residual in
    /// iteration order, after applying every effect logged before it.
    pub fn finish<I, T, L, R, B, F>(
        self,
        items: I,
        out: &mut Vec<T>,
        body: B,
        mut fold: F,
    ) -> Option<R>
    where
        I: Iterator,
        I::Item: Send,
        T: Send,
        L: Send,
        R: Send,
        B: Fn(&mut Vec<L>, I::Item) -> std::result::Result<T, R> + Sync,
        F: FnMut(L),
    {
        if self.finished {
            return None;
        }
        let mut items = items;
        let threads = match &self.plan {
            Plan::Threads(threads) => threads,
            Plan::Sequential => {
                // Only reached when the sequential phase was skipped.
                let mut log = Vec::new();
                for item in items {
                    let value = body(&mut log, item);
                    log.drain(..).for_each(&mut fold);
                    match value {
                        Ok(value) => out.push(value),
                        Err(residual) => return Some(residual),
                    }
                }
                return None;
            }
        };
        let window = self.window_size(threads.n_jobs());
        let body = &body;
        loop {
            let drawn: Vec<I::Item> = items.by_ref().take(window).collect();
            if drawn.is_empty() {
                return None;
            }
            let first_exit = AtomicUsize::new(usize::MAX);
            let splits: Vec<Split<T, L, R>> = threads.install(|| {
                drawn
                    .into_par_iter()
                    .enumerate()
                    .with_min_len(self.min_len)
                    .fold(Split::default, |split, (index, item)| {
                        split.run(index, item, body, &first_exit)
                    })
                    .collect()
            });
            for split in splits {
                split.log.into_iter().for_each(&mut fold);
                out.extend(split.values);
                if let Some(residual) = split.exit {
                    return Some(residual);
                }
            }
        }
    }

    /// Items per window: about `WINDOW_TARGET` of work per thread, from
    /// the prefix's time per item.
    fn window_size(&self, n_jobs: usize) -> usize {
        let per_item = self.prefix_time.as_nanos() as f64 / self.prefix_items.max(1) as f64;
        let target = WINDOW_TARGET.as_nanos() as f64 * n_jobs as f64;
        let items = (target / per_item.max(1.0)) as usize;
        items.clamp(8 * n_jobs, MAX_WINDOW)
    }
}

/// One rayon split of a window: its items' values and effects, in order,
/// and the residual where it stopped.
struct Split<T, L, R> {
    values: Vec<T>,
    log: Vec<L>,
    exit: Option<R>,
}

impl<T, L, R> Default for Split<T, L, R> {
    fn default() -> Self {
        Split {
            values: Vec::new(),
            log: Vec::new(),
            exit: None,
        }
    }
}

impl<T, L, R> Split<T, L, R> {
    fn run<A>(
        mut self,
        index: usize,
        item: A,
        body: &(impl Fn(&mut Vec<L>, A) -> std::result::Result<T, R> + Sync),
        first_exit: &AtomicUsize,
    ) -> Self {
        // After an exit, later items are not run: the plain loop would
        // have returned before reaching them.
        if self.exit.is_some() || index > first_exit.load(Ordering::Relaxed) {
            return self;
        }
        match body(&mut self.log, item) {
            Ok(value) => self.values.push(value),
            Err(residual) => {
                self.exit = Some(residual);
                first_exit.fetch_min(index, Ordering::Relaxed);
            }
        }
        self
    }
}

fn warn_once(error: &crate::Error) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        eprintln!("parjob: a parallel loop runs sequentially: {error}");
    });
}

/// Runs a process task over the loop's items: each item's arguments are
/// evaluated here, the calls run in worker processes, and the results come
/// back in input order.
pub fn remote<T, I>(options: Options, items: I) -> Result<Vec<T::Output>>
where
    T: ProcessTask,
    I: IntoIterator<Item = T::Args>,
{
    shared(options)?.run(items.into_iter().map(RemoteCall::<T>))
}

/// `parallel_for!(return_as = "generator", backend = "process"; ..)`.
pub fn remote_iter<T, I>(options: Options, items: I) -> crate::Ordered<RemoteCalls<T, I::IntoIter>>
where
    T: ProcessTask,
    I: IntoIterator<Item = T::Args>,
{
    let call: fn(T::Args) -> RemoteCall<T> = RemoteCall::<T>;
    runner(options).iter(items.into_iter().map(call))
}

/// `parallel_for!(return_as = "generator_unordered", backend = "process"; ..)`.
pub fn remote_unordered<T, I>(
    options: Options,
    items: I,
) -> crate::Unordered<RemoteCalls<T, I::IntoIter>>
where
    T: ProcessTask,
    I: IntoIterator<Item = T::Args>,
{
    let call: fn(T::Args) -> RemoteCall<T> = RemoteCall::<T>;
    runner(options).iter_unordered(items.into_iter().map(call))
}

/// The shared runner for these options, or one that reports their error
/// when it runs.
pub fn runner(options: Options) -> Parallel {
    shared(options).unwrap_or_else(|_| Parallel::with_options(options))
}

/// Requires a value that a thread-backend loop body reads to be shareable
/// between threads. The expansion calls it (in a closure it never runs) on
/// each outer variable the body uses, spanned on that use, so a `!Sync`
/// value is reported where the user wrote it.
pub fn shared_with_threads<T: ?Sized + Sync>(_: &T) {}

/// Names the process task a loop body calls: the bound is what turns a
/// call of an ordinary function into parjob's error, on the call.
pub fn process_task<T: ProcessTask>() {}

/// `?` inside a parallel loop's body: splits a `Result` or an `Option`
/// into its value or the residual the enclosing function re-raises with
/// `?`, like the unstable `Try` trait.
pub trait Question {
    /// The value on success.
    type Value;
    /// What the enclosing function's `?` takes on failure.
    type Residual;
    /// Splits `self`.
    fn branch(self) -> std::ops::ControlFlow<Self::Residual, Self::Value>;
}

impl<V, E> Question for std::result::Result<V, E> {
    type Value = V;
    type Residual = std::result::Result<std::convert::Infallible, E>;
    fn branch(self) -> std::ops::ControlFlow<Self::Residual, V> {
        match self {
            Ok(v) => std::ops::ControlFlow::Continue(v),
            Err(e) => std::ops::ControlFlow::Break(Err(e)),
        }
    }
}

impl<V> Question for Option<V> {
    type Value = V;
    type Residual = Option<std::convert::Infallible>;
    fn branch(self) -> std::ops::ControlFlow<Self::Residual, V> {
        match self {
            Some(v) => std::ops::ControlFlow::Continue(v),
            None => std::ops::ControlFlow::Break(None),
        }
    }
}
