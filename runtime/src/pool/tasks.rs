//! What a pool accepts as work: the `delayed` of a `#[parallel]` function
//! (for `map`, `starmap` and `imap`), or a [`Job`] (for `apply`). A
//! closure is refused at compile time, with a message that says why.

use super::chunks::Submission;
use crate::task::{FromItem, Job};
use std::marker::PhantomData;

/// A job for `apply` and `apply_async`: `f::delayed(args..)`.
#[diagnostic::on_unimplemented(
    message = "a Pool runs `#[parallel]` functions: pass `f::delayed(args..)`, not `{Self}`",
    label = "not a job of a `#[parallel]` function",
    note = "a closure cannot cross a process boundary: a worker finds a task by its name. \
            Mark the function `#[parallel(backend = \"process\")]` and pass `f::delayed(args..)`"
)]
pub trait IntoJob<R> {
    /// The job.
    fn into_job(self) -> Job<R>;
}

impl<R> IntoJob<R> for Job<R> {
    fn into_job(self) -> Job<R> {
        self
    }
}

/// A task for `map` and `imap`: `f::task` of a `#[parallel]` function
/// (each item becomes its arguments), or any `Fn(A) -> Job<R>`, such as
/// `f::delayed` of a one-argument one.
#[diagnostic::on_unimplemented(
    message = "a Pool maps `#[parallel]` functions: pass `f::task`, not `{Self}`",
    label = "not a `#[parallel]` task",
    note = "a closure cannot cross a process boundary: a worker finds a task by its name. \
            Mark the function `#[parallel(backend = \"process\")]` and pass `f::task`"
)]
pub trait MapTask<A, R>: SubmitMap<A, R> {
    /// The job for one item.
    fn job(&self, item: A) -> Job<R>;
}

/// How `map` and `imap` submit their items: as jobs, or, for `f::task`,
/// as argument tuples with no job each. The plumbing half of [`MapTask`];
/// not public API (reachable only through `__private`).
pub trait SubmitMap<A, R> {
    /// The items, ready to submit.
    fn submission(&self, items: Vec<A>) -> Submission<R>;
}

#[diagnostic::do_not_recommend]
impl<A, R: Send + 'static, F: Fn(A) -> Job<R>> MapTask<A, R> for F {
    fn job(&self, item: A) -> Job<R> {
        self(item)
    }
}

impl<A, R: Send + 'static, F: Fn(A) -> Job<R>> SubmitMap<A, R> for F {
    fn submission(&self, items: Vec<A>) -> Submission<R> {
        Submission::jobs(items.into_iter().map(self).collect())
    }
}

/// A task for `starmap`: `f::task` of a `#[parallel]` function, or
/// `f::delayed` of one of up to 8 arguments, called with each tuple spread
/// into its arguments.
#[diagnostic::on_unimplemented(
    message = "a Pool's starmap takes `f::task` of a `#[parallel]` function whose arguments \
               are the tuple's fields, not `{Self}`",
    label = "not a `#[parallel]` task taking `{Args}`",
    note = "a closure cannot cross a process boundary: a worker finds a task by its name. \
            Mark the function `#[parallel(backend = \"process\")]` and pass `f::task`"
)]
pub trait StarTask<Args, R>: SubmitStar<Args, R> {
    /// The job for one tuple of arguments.
    fn job(&self, args: Args) -> Job<R>;
}

/// How `starmap` submits its tuples; the plumbing half of [`StarTask`],
/// as [`SubmitMap`] is of [`MapTask`]. Not public API.
pub trait SubmitStar<Args, R> {
    /// The tuples, ready to submit.
    fn submission(&self, items: Vec<Args>) -> Submission<R>;
}

macro_rules! star_task {
    ($($a:ident),+) => {
        #[diagnostic::do_not_recommend]
        impl<$($a,)+ R: Send + 'static, F: Fn($($a),+) -> Job<R>> StarTask<($($a,)+), R> for F {
            #[allow(non_snake_case)]
            fn job(&self, ($($a,)+): ($($a,)+)) -> Job<R> {
                self($($a),+)
            }
        }

        impl<$($a,)+ R: Send + 'static, F: Fn($($a),+) -> Job<R>> SubmitStar<($($a,)+), R> for F {
            fn submission(&self, items: Vec<($($a,)+)>) -> Submission<R> {
                Submission::jobs(items.into_iter().map(|a| StarTask::job(self, a)).collect())
            }
        }
    };
}

star_task!(A);
star_task!(A, B);
star_task!(A, B, C);
star_task!(A, B, C, D);
star_task!(A, B, C, D, E);
star_task!(A, B, C, D, E, F2);
star_task!(A, B, C, D, E, F2, G);
star_task!(A, B, C, D, E, F2, G, H);

/// A `#[parallel]` task itself, for a pool's map-like calls: `f::task`.
/// `pool.map(f::task, items)` turns each item straight into the task's
/// argument tuple (as `f::map` does), with no job allocated for each, which
/// is what makes tiny tasks cheap. `pool.map(f::delayed, items)` does the
/// same work through one `Job` an item.
pub struct TaskRef<T>(PhantomData<fn() -> T>);

impl<T> TaskRef<T> {
    /// The reference to task `T` (what `f::task` is).
    pub const fn new() -> Self {
        TaskRef(PhantomData)
    }
}

impl<T> Clone for TaskRef<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for TaskRef<T> {}

impl<T> Default for TaskRef<T> {
    fn default() -> Self {
        TaskRef::new()
    }
}

impl<T> std::fmt::Debug for TaskRef<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::any::type_name::<T>())
    }
}

impl<A, T: FromItem<A>> MapTask<A, T::Output> for TaskRef<T> {
    fn job(&self, item: A) -> Job<T::Output> {
        Job::call::<T>(T::from_item(item))
    }
}

impl<A, T: FromItem<A>> SubmitMap<A, T::Output> for TaskRef<T> {
    fn submission(&self, items: Vec<A>) -> Submission<T::Output> {
        Submission::calls::<T>(items.into_iter().map(T::from_item).collect())
    }
}

impl<Args, T: FromItem<Args>> StarTask<Args, T::Output> for TaskRef<T> {
    fn job(&self, args: Args) -> Job<T::Output> {
        Job::call::<T>(T::from_item(args))
    }
}

impl<Args, T: FromItem<Args>> SubmitStar<Args, T::Output> for TaskRef<T> {
    fn submission(&self, items: Vec<Args>) -> Submission<T::Output> {
        Submission::calls::<T>(items.into_iter().map(T::from_item).collect())
    }
}
