//! The engine behind marked `for` loops and `parallel_for!`.
//!
//! The macros turn a loop into two copies of its body: the original, and a
//! closure that records each update of an outer variable (`s += x`,
//! `v.push(x)`, ...) as an *effect* in a log instead of applying it. A
//! [`Loop`] then decides, step by step, where the next items run:
//!
//! - **Windows on threads.** Items are drawn in windows. A window is split
//!   across the pool with rayon; each split runs its items in order, keeps
//!   their effects and values in order, and times itself. The caller then
//!   applies the splits' effects in split order, which is iteration order.
//!   The first window holds [`FIRST_WINDOW`] items per thread, so that long
//!   items start at once on every thread; later ones are sized from the
//!   measured time per item to about [`WINDOW_TARGET`] of work per thread
//!   (at most [`MAX_WINDOW`] items, and at most 8x the window before).
//! - **Here.** When the items measured under [`MIN_PARALLEL_ITEM`] each,
//!   logging and folding their updates would cost more than threads save:
//!   the rest of the loop runs the original body in the caller's thread, at
//!   the plain loop's speed. Items measured under [`PROBE_BELOW`] are cheap
//!   enough that the answer depends on the body, so the loop asks the body
//!   itself: it runs a few items here, about [`PROBE_TIME`] of them, timed,
//!   and stays here when the threads' time per item (split across the
//!   workers) saves less than a fifth of that. On threads an item pays for
//!   its logged updates and the fresh memory they fill, which a fixed
//!   threshold cannot see (a `sin` costs 8 ns here and 25 ns per thread).
//!   A sequential plan (`n_jobs = 1`, or a loop started on one of parjob's
//!   pool threads, as a nested loop is) runs the whole loop here.
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

use crate::backend::open::{self, Api, Kind};
use crate::error::Result;
use crate::options::{BatchSize, Options, Plan};
use crate::parallel::shared_threads;
use crate::task::ProcessTask;
use crate::trace::{now_ns, Outcome, Trace, Track};
use rayon::iter::{IndexedParallelIterator, IntoParallelIterator, ParallelIterator};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The task name of a loop's spans in a trace: each is a split, the
/// iterations one thread ran in a row, at the index of its first.
const LOOP: &str = "parallel loop";

/// Items per thread in a loop's first window: enough that a split's timing
/// is not its clock reads, few enough that long items all start at once.
pub const FIRST_WINDOW: usize = 32;
/// About how much work each thread gets per window.
pub(crate) const WINDOW_TARGET: Duration = Duration::from_millis(100);
/// The most items drawn into one window.
pub(crate) const MAX_WINDOW: usize = 1 << 16;
/// Below this measured time per item, the rest of a loop runs in the
/// caller's thread: logging an item's updates and folding them back costs
/// a few nanoseconds, more than threads would save on it.
pub(crate) const MIN_PARALLEL_ITEM: Duration = Duration::from_nanos(25);
/// Items measured on threads under this long each are also timed here,
/// once, to see whether threads save anything on them.
pub(crate) const PROBE_BELOW: Duration = Duration::from_micros(2);
/// About how long the items timed here run.
pub(crate) const PROBE_TIME: Duration = Duration::from_micros(20);
/// The most items timed here.
const PROBE_MAX: usize = 4096;

thread_local! {
    /// This thread's `MIN_PARALLEL_ITEM`, for tests.
    static MIN_ITEM_HERE: Cell<Duration> = const { Cell::new(MIN_PARALLEL_ITEM) };
}

/// Changes [`MIN_PARALLEL_ITEM`] for loops started from this thread (tests
/// use zero, to keep tiny items on threads).
#[doc(hidden)]
pub fn set_min_parallel_item(min: Duration) {
    MIN_ITEM_HERE.with(|m| m.set(min));
}

/// Where a loop's items may run.
enum Mode {
    Sequential,
    Threads(crate::backend::thread::Threads),
}

/// Where a loop's next items run.
pub enum LoopStep {
    /// Up to this many items, with the original body, in this thread.
    Here(usize),
    /// One window on the thread pool: call [`Loop::window`].
    Threads,
    /// Every item has run.
    Done,
}

/// One run of a marked loop or a `parallel_for!`; see the module docs.
pub struct Loop {
    mode: Mode,
    finished: bool,
    per_item: Option<Duration>,
    last_window: usize,
    min_item: Duration,
    min_len: usize,
    probe: Probe,
    /// Under `trace`: the loop's timeline, items drawn so far, and when
    /// the items handed out to run here began.
    trace: Option<Arc<Trace>>,
    drawn: usize,
    here_since: Option<u64>,
}

/// Whether a loop has timed its items here yet, and what it learned.
enum Probe {
    NotYet,
    /// `LoopStep::Here` was handed out for timing, at this instant.
    Running(Instant),
    /// Timed: true when threads save too little, and the rest runs here.
    Done {
        stay_here: bool,
    },
}

impl Loop {
    /// Plans a loop with these options. `explicit` says the loop itself
    /// named `n_jobs` or `backend`: only then does a loop started on a
    /// parjob pool thread use threads of its own.
    ///
    /// A configuration error (a bad `PARJOB_N_JOBS`, say) makes the loop
    /// sequential, with a warning on stderr: a loop has no `Result` to
    /// report it in, and sequential is always correct.
    pub fn new(options: Options, explicit: bool) -> Loop {
        let nested = crate::backend::thread::on_pool_thread() && !explicit;
        let plan = options.resolve();
        let mode = match &plan {
            _ if nested => Mode::Sequential,
            Ok(plan) => Self::mode(plan).unwrap_or_else(|e| {
                warn_once(&e);
                Mode::Sequential
            }),
            Err(e) => {
                warn_once(e);
                Mode::Sequential
            }
        };
        let min_len = match plan.as_ref().map(|p| p.batch_size) {
            Ok(BatchSize::Fixed(n)) => n,
            _ => 1,
        };
        let trace = match &plan {
            Ok(Plan {
                trace: Some(file),
                verbose,
                n_jobs,
                ..
            }) => Some(Trace::start(&file.path(), *verbose, *n_jobs)),
            _ => None,
        };
        Loop {
            mode,
            finished: false,
            per_item: None,
            last_window: 0,
            min_item: MIN_ITEM_HERE.with(Cell::get),
            min_len,
            probe: Probe::NotYet,
            trace,
            drawn: 0,
            here_since: None,
        }
    }

    fn mode(plan: &Plan) -> Result<Mode> {
        match open::choose(Api::Loop, plan.backend, plan.n_jobs, false)? {
            Kind::Threads => Ok(Mode::Threads(shared_threads(plan.n_jobs)?)),
            _ => Ok(Mode::Sequential),
        }
    }

    /// Where the next items run.
    pub fn step(&mut self) -> LoopStep {
        let step = self.next_step();
        if let (LoopStep::Here(_), Some(_)) = (&step, &self.trace) {
            self.here_since = Some(now_ns());
        }
        step
    }

    fn next_step(&mut self) -> LoopStep {
        if self.finished {
            return LoopStep::Done;
        }
        if !matches!(self.mode, Mode::Threads(_)) {
            return LoopStep::Here(usize::MAX);
        }
        let Some(per_item) = self.per_item else {
            return LoopStep::Threads;
        };
        if per_item < self.min_item {
            return LoopStep::Here(usize::MAX);
        }
        match self.probe {
            // A zero minimum (tests, benches) keeps every item on threads.
            Probe::NotYet if per_item < PROBE_BELOW && !self.min_item.is_zero() => {
                let n = PROBE_TIME.as_nanos() / per_item.as_nanos().max(1);
                self.probe = Probe::Running(Instant::now());
                LoopStep::Here((n as usize).clamp(1, PROBE_MAX))
            }
            Probe::Done { stay_here: true } => LoopStep::Here(usize::MAX),
            _ => LoopStep::Threads,
        }
    }

    /// Reports that `LoopStep::Here` ran `taken` of the `asked` items.
    pub fn ran_here(&mut self, taken: usize, asked: usize) {
        if let (Some(trace), Some(since)) = (&self.trace, self.here_since.take()) {
            trace.job(
                Track::Caller,
                LOOP,
                self.drawn,
                (since, now_ns()),
                Outcome::Ok,
                1,
            );
            self.drawn += taken;
        }
        if taken < asked || asked == usize::MAX {
            self.finished = true;
        }
        if let Probe::Running(started) = self.probe {
            let here = started.elapsed() / taken.clamp(1, u32::MAX as usize) as u32;
            self.probe = Probe::Done {
                stay_here: self.threads_save_too_little(here),
            };
        }
    }

    /// Whether running on threads saves less than a fifth of `here`, the
    /// time per item in this thread: the threads' time per item, split
    /// across them, is what a window costs per item.
    fn threads_save_too_little(&self, here: Duration) -> bool {
        let (Mode::Threads(threads), Some(per_item)) = (&self.mode, self.per_item) else {
            return true;
        };
        let on_threads = per_item.as_nanos() as f64 / threads.n_jobs().max(1) as f64;
        on_threads >= 0.8 * here.as_nanos() as f64
    }

    /// Runs one window of items on the pool (`LoopStep::Threads`).
    ///
    /// `body` runs one item, pushing its effects to the log, and returns
    /// the item's value or the residual of a failed `?`. `fold` applies one
    /// effect; it runs in this thread, in iteration order. Values are
    /// appended to `out` in input order. Returns the first residual in
    /// iteration order, after applying every effect logged before it.
    pub fn window<I, T, L, R, B, F>(
        &mut self,
        items: &mut I,
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
        let Mode::Threads(threads) = &self.mode else {
            unreachable!("`LoopStep::Threads` comes only with threads")
        };
        let threads = threads.clone();
        let size = self.window_size(threads.n_jobs());
        let drawn: Vec<I::Item> = items.by_ref().take(size).collect();
        if drawn.len() < size {
            self.finished = true;
        }
        if drawn.is_empty() {
            // Nothing to wake the pool for.
            return None;
        }
        let drawn_len = drawn.len();
        let first_exit = AtomicUsize::new(usize::MAX);
        let min_len = self.min_len;
        let body = &body;
        let splits: Vec<Split<T, L, R>> = threads.install(|| {
            drawn
                .into_par_iter()
                .enumerate()
                .with_min_len(min_len)
                .fold(Split::default, |split, (index, item)| {
                    split.run(index, item, body, &first_exit)
                })
                .map(Split::timed)
                .collect()
        });
        if let Some(trace) = &self.trace {
            for s in splits.iter() {
                if let Some(started) = s.started {
                    let index = self.drawn + s.first;
                    trace.job(s.thread, LOOP, index, (started, s.ended), Outcome::Ok, 1);
                }
            }
            self.drawn += drawn_len;
        }
        let ran: usize = splits.iter().map(|s| s.ran).sum();
        let busy: Duration = splits.iter().map(Split::busy).sum();
        if ran > 0 {
            self.per_item = Some(busy / ran.min(u32::MAX as usize) as u32);
        }
        for split in splits {
            split.log.into_iter().for_each(&mut fold);
            out.extend(split.values);
            if let Some(residual) = split.exit {
                self.finished = true;
                return Some(residual);
            }
        }
        None
    }

    /// Items per window: [`FIRST_WINDOW`] per thread at first, then about
    /// `WINDOW_TARGET` of work per thread, growing at most 8x a window.
    fn window_size(&mut self, n_jobs: usize) -> usize {
        let first = FIRST_WINDOW * n_jobs;
        let size = match self.per_item {
            None => first,
            Some(per_item) => {
                let target = WINDOW_TARGET.as_nanos() as f64 * n_jobs as f64;
                let items = (target / (per_item.as_nanos() as f64).max(1.0)) as usize;
                items.clamp(first, MAX_WINDOW).min(self.last_window * 8)
            }
        };
        self.last_window = size;
        size
    }
}

/// One rayon split of a window: its items' values and effects, in order,
/// the residual where it stopped, and how long its items took.
struct Split<T, L, R> {
    values: Vec<T>,
    log: Vec<L>,
    exit: Option<R>,
    ran: usize,
    /// When its first item started and its last ended (on the trace's
    /// clock, [`now_ns`]), and the thread it ran on.
    started: Option<u64>,
    ended: u64,
    thread: Track,
    /// The window's index of its first item.
    first: usize,
}

impl<T, L, R> Default for Split<T, L, R> {
    fn default() -> Self {
        Split {
            values: Vec::new(),
            log: Vec::new(),
            exit: None,
            ran: 0,
            started: None,
            ended: 0,
            thread: Track::Caller,
            first: 0,
        }
    }
}

impl<T, L, R> Split<T, L, R> {
    /// How long its items took.
    fn busy(&self) -> Duration {
        Duration::from_nanos(self.started.map_or(0, |s| self.ended.saturating_sub(s)))
    }

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
        if self.started.is_none() {
            self.started = Some(now_ns());
            self.first = index;
        }
        match body(&mut self.log, item) {
            Ok(value) => self.values.push(value),
            Err(residual) => {
                self.exit = Some(residual);
                first_exit.fetch_min(index, Ordering::Relaxed);
            }
        }
        self.ran += 1;
        self
    }

    /// Records when the split ended and where, once rayon has folded all
    /// of it (timing each item would cost more than a tiny item).
    fn timed(mut self) -> Self {
        self.ended = now_ns();
        self.thread = Track::here();
        self
    }
}

impl Drop for Loop {
    /// Writes the loop's trace, under `trace`.
    fn drop(&mut self) {
        if let Some(trace) = self.trace.take() {
            trace.finish();
        }
    }
}

fn warn_once(error: &crate::Error) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        eprintln!("parjob: a parallel loop runs sequentially: {error}");
    });
}

/// Requires a value that a thread-backend loop body reads to be shareable
/// between threads. The expansion calls it (in a closure it never runs) on
/// each outer variable the body uses, spanned on that use, so a `!Sync`
/// value is reported where the user wrote it.
pub fn shared_with_threads<T: ?Sized + Sync>(_: &T) {}

/// Names the process task a loop body calls: the bound is what turns a
/// call of an ordinary function into parjob's error, on the call.
pub fn process_task<T: ProcessTask>() {}

/// The result of a call of a function that is not a task, in a process
/// loop: never made, since such a loop does not compile.
#[derive(Debug)]
pub enum Unmarked {}

/// What a function that hosts a process loop returns: the run's failure
/// leaves the function through it, as `?` would.
#[diagnostic::on_unimplemented(
    message = "a function with a `#[parallel(backend = \"process\")]` loop must return a `Result` whose error converts from `parjob::Error`, not `{Self}`",
    label = "this loop's run can fail (a task may panic or a worker die), and the failure returns from the function",
    note = "make the function return `parjob::Result<..>` (or a `Result` whose error implements `From<parjob::Error>`), or use `parallel_for!`, which hands you the `Result`"
)]
pub trait ReturnsError: Sized {
    /// The function's return value for a failed run.
    fn from_run_error(error: crate::Error) -> Self;
}

impl<T, E: From<crate::Error>> ReturnsError for Result<T, E> {
    fn from_run_error(error: crate::Error) -> Self {
        Err(E::from(error))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A loop on two threads whose window measured `per_item` each.
    fn on_threads(per_item: Duration) -> Loop {
        let mut l = Loop::new(Options::new().with_n_jobs(2), true);
        assert!(matches!(l.mode, Mode::Threads(_)), "two threads");
        l.min_item = MIN_PARALLEL_ITEM;
        l.per_item = Some(per_item);
        l
    }

    #[test]
    fn a_cheap_item_is_timed_here_once_then_runs_where_it_is_cheaper() {
        // 40 ns per item on a thread, 20 ns a thread's share: an item that
        // costs 6 ns here stays here.
        let mut cheap = on_threads(Duration::from_nanos(40));
        let LoopStep::Here(n) = cheap.step() else {
            panic!("a cheap item is timed here first")
        };
        assert_eq!(n, 500, "about PROBE_TIME of items");
        cheap.probe = Probe::Running(Instant::now() - Duration::from_nanos(6 * 500));
        cheap.ran_here(500, 500);
        assert!(matches!(cheap.step(), LoopStep::Here(usize::MAX)));
        // The same threads' time against 100 ns here: threads save more
        // than a fifth, so windows go on.
        let mut worth_it = on_threads(Duration::from_nanos(40));
        assert!(matches!(worth_it.step(), LoopStep::Here(500)));
        worth_it.probe = Probe::Running(Instant::now() - Duration::from_nanos(100 * 500));
        worth_it.ran_here(500, 500);
        assert!(!worth_it.finished);
        assert!(matches!(worth_it.step(), LoopStep::Threads));
        assert!(matches!(worth_it.step(), LoopStep::Threads), "timed once");
    }

    #[test]
    fn long_items_are_not_timed_here_and_tiny_ones_are_not_timed_at_all() {
        let mut long = on_threads(Duration::from_micros(500));
        assert!(matches!(long.step(), LoopStep::Threads));
        let mut tiny = on_threads(Duration::from_nanos(10));
        assert!(matches!(tiny.step(), LoopStep::Here(usize::MAX)));
        // A zero minimum (tests, benches) keeps cheap items on threads.
        let mut kept = on_threads(Duration::from_nanos(40));
        kept.min_item = Duration::ZERO;
        assert!(matches!(kept.step(), LoopStep::Threads));
    }

    #[test]
    fn a_probe_that_meets_the_end_of_the_items_ends_the_loop() {
        let mut l = on_threads(Duration::from_nanos(40));
        assert!(matches!(l.step(), LoopStep::Here(500)));
        l.ran_here(7, 500);
        assert!(matches!(l.step(), LoopStep::Done));
    }
}
