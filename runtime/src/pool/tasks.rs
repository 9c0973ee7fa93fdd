//! What a pool accepts as work: the `delayed` of a `#[parallel]` function
//! (for `map`, `starmap` and `imap`), or a [`Job`] (for `apply`). A
//! closure is refused at compile time, with a message that says why.

use crate::task::Job;

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

/// A task for `map` and `imap`: `f::delayed` of a one-argument
/// `#[parallel]` function, called with each item.
#[diagnostic::on_unimplemented(
    message = "a Pool maps `#[parallel]` functions: pass `f::delayed`, not `{Self}`",
    label = "not the `delayed` of a `#[parallel]` function",
    note = "a closure cannot cross a process boundary: a worker finds a task by its name. \
            Mark the function `#[parallel(backend = \"process\")]` and pass `f::delayed`"
)]
pub trait MapTask<A, R> {
    /// The job for one item.
    fn job(&self, item: A) -> Job<R>;
}

#[diagnostic::do_not_recommend]
impl<A, R, F: Fn(A) -> Job<R>> MapTask<A, R> for F {
    fn job(&self, item: A) -> Job<R> {
        self(item)
    }
}

/// A task for `starmap`: `f::delayed` of a `#[parallel]` function of up
/// to 8 arguments, called with each tuple spread into its arguments.
#[diagnostic::on_unimplemented(
    message = "a Pool's starmap takes `f::delayed` of a `#[parallel]` function whose arguments \
               are the tuple's fields, not `{Self}`",
    label = "not the `delayed` of a `#[parallel]` function taking `{Args}`",
    note = "a closure cannot cross a process boundary: a worker finds a task by its name. \
            Mark the function `#[parallel(backend = \"process\")]` and pass `f::delayed`"
)]
pub trait StarTask<Args, R> {
    /// The job for one tuple of arguments.
    fn job(&self, args: Args) -> Job<R>;
}

macro_rules! star_task {
    ($($a:ident),+) => {
        #[diagnostic::do_not_recommend]
        impl<$($a,)+ R, F: Fn($($a),+) -> Job<R>> StarTask<($($a,)+), R> for F {
            #[allow(non_snake_case)]
            fn job(&self, ($($a,)+): ($($a,)+)) -> Job<R> {
                self($($a),+)
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
