//! The one entry behind a task's methods: `f::map`, its `return_as`
//! forms, `f::par_map`, and marked loops on the process backend.
//!
//! [`calls`] pairs a task with its inputs and options; an adapter picks
//! the shape of the results: [`Calls::list`] (a `Vec` in input order),
//! [`Calls::ordered`] (an iterator in input order) or
//! [`Calls::unordered`] (as they complete). Each call is a [`Call`], which
//! allocates nothing and crosses a process boundary when its task has
//! codecs. The options are resolved once, here, into the plan that picks
//! the shared pool and that the scheduler runs under.

use crate::error::Result;
use crate::indexed;
use crate::options::Options;
use crate::parallel::shared;
use crate::schedule::{Ordered, Stream, Unordered};
use crate::task::{Call, Task, Work};
use rayon::iter::plumbing::{Producer, ProducerCallback};
use rayon::iter::{IndexedParallelIterator, IntoParallelIterator};
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

/// Calls (or jobs) with their options, not yet run.
#[must_use = "calls do nothing until .list(), .ordered() or .unordered()"]
pub struct Calls<I> {
    options: Options,
    work: I,
}

/// Task `T` over `items` with `options` (the task's own, for `f::map`;
/// a loop's, for a marked loop).
pub fn calls<T: Task, I: IntoIterator<Item = T::Args>>(
    options: Options,
    items: I,
) -> Calls<CallIter<T, I::IntoIter>> {
    Calls {
        options,
        work: CallIter {
            items: items.into_iter(),
            task: PhantomData,
        },
    }
}

/// Jobs (closures, for `parallel_for!` on threads) with `options`.
pub fn jobs<I: IntoIterator>(options: Options, jobs: I) -> Calls<I::IntoIter>
where
    I::Item: Work,
{
    Calls {
        options,
        work: jobs.into_iter(),
    }
}

// The bounds are on each method, not on the impl: when the task is not a
// task at all, the one error is that, not also "method exists but its
// trait bounds were not satisfied".
impl<I> Calls<I> {
    fn stream(self, ordered: bool, bounded: bool) -> Stream<I>
    where
        I: Iterator,
        I::Item: Work,
    {
        let (runner, plan) = shared(self.options);
        runner.stream_planned(plan, self.work, ordered, bounded)
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
/// (see `indexed.rs`) when the plan allows, else scheduled as `f::map`.
pub fn indexed<T: Task, I>(items: I) -> Result<Vec<T::Output>>
where
    I: IntoParallelIterator<Item = T::Args>,
    I::Iter: IndexedParallelIterator,
{
    let (runner, plan) = shared(T::options());
    let plan = plan?;
    let items = items.into_par_iter();
    match indexed::split_settings(&plan) {
        Some(min_len) => {
            indexed::split_on_threads::<T, _>(&runner.threads(plan.n_jobs)?, items, min_len)
        }
        None => items.with_producer(Schedule::<T> {
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
            .stream_planned(Ok(self.plan), calls, true, false)
            .collect_ordered()
    }
}
