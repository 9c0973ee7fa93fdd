//! The one entry behind a task's methods: `f::map`, its `return_as`
//! forms, `f::par_map`, and marked loops on the process backend.
//!
//! [`calls`] pairs a task with its inputs and options; an adapter picks
//! the shape of the results: [`TaskCalls::list`] (a `Vec` in input order),
//! [`TaskCalls::ordered`] (an iterator in input order) or
//! [`TaskCalls::unordered`] (as they complete). Each call is a [`Call`], which
//! allocates nothing and crosses a process boundary when its task has
//! codecs. The options are resolved once, here, into the plan that picks
//! the shared pool and that the scheduler runs under.

use crate::error::Result;
use crate::indexed;
use crate::options::{for_each_option, option_setters, OnError, Options};
use crate::parallel::shared;
use crate::schedule::{Ordered, Stream, Unordered};
use crate::task::{declared, Call, CallItem, Declared, FromItem, Task, Work};
use rayon::iter::plumbing::{Producer, ProducerCallback};
use rayon::iter::{IndexedParallelIterator, IntoParallelIterator, ParallelIterator};
use std::marker::PhantomData;

/// The calls an `f::map` streams: each input made into a [`Call`]. A named
/// iterator rather than a `Map` over a `fn` pointer, so the conversion is
/// inlined into the scheduler's draw loop.
pub struct CallIter<T, I> {
    items: I,
    task: PhantomData<fn() -> T>,
}

impl<T: Task, I: Iterator<Item = T::Args>> Iterator for CallIter<T, I> {
    type Item = Call<T>;

    #[inline]
    fn next(&mut self) -> Option<Call<T>> {
        self.items.next().map(Call)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.items.size_hint()
    }
}

/// TaskCalls (or jobs) with their options, not yet run.
#[must_use = "calls do nothing until .list(), .ordered() or .unordered()"]
pub struct TaskCalls<I> {
    options: Options,
    /// The task level of the precedence rule.
    declared: Declared,
    work: I,
}

/// Task `T` over `items` with explicit `options` (none for `f::map`,
/// the per-call ones for `f::with`, a loop's for a marked loop); the
/// task's attribute is the task level.
pub fn calls<T: Task, I: IntoIterator<Item = T::Args>>(
    options: Options,
    items: I,
) -> TaskCalls<CallIter<T, I::IntoIter>> {
    TaskCalls {
        options,
        declared: declared::<T>(),
        work: CallIter {
            items: items.into_iter(),
            task: PhantomData,
        },
    }
}

/// Jobs (closures, for `parallel_for!` on threads) with `options`. Their
/// bodies borrow the caller's data, so, as marked loops do, they require
/// shared memory: a process backend from a scope or the environment runs
/// them on threads.
pub fn jobs<I: IntoIterator>(options: Options, jobs: I) -> TaskCalls<I::IntoIter>
where
    I::Item: Work,
{
    TaskCalls {
        options: options.with_require(crate::options::Require::SharedMem),
        declared: Declared::default(),
        work: jobs.into_iter(),
    }
}

// The bounds are on each method, not on the impl: when the task is not a
// task at all, the one error is that, not also "method exists but its
// trait bounds were not satisfied".
impl<I> TaskCalls<I> {
    fn stream(self, ordered: bool, bounded: bool) -> Stream<I>
    where
        I: Iterator,
        I::Item: Work,
    {
        let (runner, plan) = shared(self.options, self.declared);
        runner.stream_planned(plan, None, self.work, ordered, bounded, None)
    }

    /// Every result in input order, or the first error
    /// (`return_as = "list"`).
    pub fn list(self) -> Result<Vec<<I::Item as Work>::Output>>
    where
        I: Iterator,
        I::Item: Work,
    {
        self.stream(true, false).collect_ordered()
    }

    /// Every item's outcome in input order (`f::map_results`); `Err` only
    /// for what ended the run as a whole.
    pub fn results(self) -> Result<Vec<Result<<I::Item as Work>::Output>>>
    where
        I: Iterator,
        I::Item: Work,
    {
        self.stream(true, false).collect_results()
    }

    /// Results in input order, as they come (`return_as = "generator"`).
    pub fn ordered(self) -> Ordered<I>
    where
        I: Iterator,
        I::Item: Work,
    {
        Ordered {
            stream: self.stream(true, true),
        }
    }

    /// Results as they complete, with their input index
    /// (`return_as = "generator_unordered"`).
    pub fn unordered(self) -> Unordered<I>
    where
        I: Iterator,
        I::Item: Work,
    {
        Unordered {
            stream: self.stream(false, true),
        }
    }
}

/// `f::par_map`: an indexed input, split across threads as rayon splits it
/// (see `indexed.rs`) when the plan allows, with `&T` parameters borrowed
/// from the items; else each item made an owned job and scheduled as
/// `f::map`.
pub fn indexed<T, I>(items: I) -> Result<Vec<T::Output>>
where
    T: FromItem<I::Item> + CallItem<I::Item>,
    I: IntoParallelIterator,
    I::Iter: IndexedParallelIterator,
{
    let (runner, plan) = shared(Options::new(), declared::<T>());
    let plan = plan?;
    let items = items.into_par_iter();
    match indexed::split_settings(&plan) {
        Some(min_len) => indexed::split_on_threads::<T, _>(
            &runner.threads(plan.n_jobs)?,
            items,
            min_len,
            T::call_item,
        ),
        None => items.map(T::from_item).with_producer(Schedule::<T> {
            runner,
            plan,
            task: PhantomData,
        }),
    }
}

/// Hands an indexed input to the scheduler as a sequential iterator.
struct Schedule<T> {
    runner: crate::Parallel,
    plan: crate::Plan,
    task: PhantomData<fn() -> T>,
}

impl<T: Task> ProducerCallback<T::Args> for Schedule<T> {
    type Output = Result<Vec<T::Output>>;

    fn callback<P: Producer<Item = T::Args>>(self, producer: P) -> Self::Output {
        let calls = CallIter::<T, _> {
            items: producer.into_iter(),
            task: PhantomData,
        };
        self.runner
            .stream_planned(Ok(self.plan), None, calls, true, false, None)
            .collect_ordered()
    }
}

/// One run of task `T` with per-call options: what `f::with(|p| ..)`
/// hands its closure and returns. The options set here are explicit, so
/// they win over a scoped `config()`, the task's attribute and the
/// environment, while the attribute still gives the rest.
///
/// ```
/// use parjob_runtime::{Options, TaskRun};
/// # struct square {}
/// # impl parjob_runtime::Task for square {
/// #     const NAME: &'static str = "doc::square";
/// #     type Args = (u64,);
/// #     type Output = u64;
/// #     fn call((x,): (u64,)) -> u64 { x * x }
/// #     fn options() -> Options { Options::new() }
/// # }
/// # impl parjob_runtime::__private::Crossing<(u64,), u64> for square {}
/// # impl parjob_runtime::__private::FromItem<u64> for square {
/// #     fn from_item(x: u64) -> (u64,) { (x,) }
/// # }
/// // What `square::with(|p| p.n_jobs(2)).map(0..4)` runs:
/// let run = TaskRun::<square>::new().n_jobs(2);
/// assert_eq!(run.map(0..4u64).unwrap(), vec![0, 1, 4, 9]);
/// ```
#[must_use = "a TaskRun does nothing until .map(..), .iter(..), .iter_unordered(..) or .repeat(..)"]
pub struct TaskRun<T> {
    options: Options,
    task: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for TaskRun<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRun")
            .field("options", &self.options)
            .finish()
    }
}

impl<T: Task> Default for TaskRun<T> {
    fn default() -> Self {
        TaskRun::new()
    }
}

/// The calls of `T` over `items`, each item made into arguments.
fn calls_of<T, I>(
    options: Options,
    items: I,
) -> TaskCalls<CallIter<T, impl Iterator<Item = T::Args>>>
where
    T: FromItem<I::Item>,
    I: IntoIterator,
{
    calls::<T, _>(options, items.into_iter().map(T::from_item))
}

impl<T: Task> TaskRun<T> {
    /// No per-call option yet: the task's attribute, scoped defaults and
    /// the environment decide.
    pub fn new() -> Self {
        TaskRun {
            options: Options::new(),
            task: PhantomData,
        }
    }

    for_each_option!(option_setters, options);

    /// What this call would run with now: these options, then scoped
    /// defaults, the task's attribute, the environment and the defaults.
    pub fn plan(&self) -> Result<crate::options::Plan> {
        self.options.resolve_for(declared::<T>())
    }

    /// Runs `T` over every item and returns the results in input order
    /// (joblib's `return_as="list"`).
    pub fn map<I>(self, items: I) -> Result<Vec<T::Output>>
    where
        T: FromItem<I::Item>,
        I: IntoIterator,
    {
        calls_of::<T, I>(self.options, items).list()
    }

    /// Runs `T` over every item, whatever fails, and returns each item's
    /// outcome in input order (`on_error = "continue"` for this call).
    pub fn map_results<I>(self, items: I) -> Result<Vec<Result<T::Output>>>
    where
        T: FromItem<I::Item>,
        I: IntoIterator,
    {
        let options = self.options.with_on_error(OnError::Continue);
        calls_of::<T, I>(options, items).results()
    }

    /// Results in input order, as they come (`return_as="generator"`).
    pub fn iter<I>(self, items: I) -> impl Iterator<Item = Result<T::Output>>
    where
        T: FromItem<I::Item>,
        I: IntoIterator,
    {
        calls_of::<T, I>(self.options, items).ordered()
    }

    /// Results as they complete, with their input index
    /// (`return_as="generator_unordered"`).
    pub fn iter_unordered<I>(self, items: I) -> impl Iterator<Item = Result<(usize, T::Output)>>
    where
        T: FromItem<I::Item>,
        I: IntoIterator,
    {
        calls_of::<T, I>(self.options, items).unordered()
    }
}

impl<T: Task<Args = ()>> TaskRun<T> {
    /// Runs a task of no arguments `n` times (joblib's
    /// `Parallel()(delayed(f)() for _ in range(n))`), results in order.
    pub fn repeat(self, n: usize) -> Result<Vec<T::Output>> {
        calls::<T, _>(self.options, std::iter::repeat_n((), n)).list()
    }
}
