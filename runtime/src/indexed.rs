//! The indexed path behind `f::par_map`: inputs whose length and
//! positions are known up front (ranges, `Vec`s, slices, and rayon's
//! indexed adapters over them).
//!
//! `f::map` draws jobs one by one from any iterator, which it must do to
//! stay lazy on infinite or expensive inputs. An indexed input needs no
//! drawing: on threads, the input is split across the pool as rayon splits
//! it, and every result is written straight into its place in the output.
//! That is what makes tasks of a few nanoseconds cost what they cost in
//! rayon itself.
//!
//! On the split path a task's `&T` parameters borrow from the items
//! ([`crate::task::CallItem`]): `f::par_map(&rows)` clones no row, since
//! every call ends before `par_map` returns. The scheduler's path makes
//! each item an owned job, as `f::map` does.
//!
//! The split path is used when the run resolves to the thread backend
//! without a timeout, `verbose` or a progress bar, which need the
//! scheduler's batches to observe. Every other plan (sequential, process,
//! or those options) hands the input to the scheduler as a plain iterator,
//! through rayon's producer, so `par_map` behaves exactly as `map` there.
//!
//! A panic in a task is caught on the thread that ran it, with its index,
//! message and location; the rest of the run stops (rayon finishes the
//! splits already running), and the first panic recorded becomes
//! [`Error::Panic`]. A panic in the input's own adapters becomes
//! [`Error::InputPanicked`] at the item after the last one its split
//! finished.

use crate::error::{Error, Result};
use crate::options::{Backend, BatchSize, Plan};
use crate::task::Task;
use rayon::iter::{IndexedParallelIterator, ParallelIterator};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Mutex;

/// The minimum split length when `plan` splits an indexed input across
/// threads, or `None` when the plan needs the scheduler (any backend but
/// threads, a timeout, `verbose` or a progress bar).
pub(crate) fn split_settings(plan: &Plan) -> Option<usize> {
    let split = plan.backend == Backend::Thread
        && plan.timeout.is_none()
        && plan.verbose == 0
        && !plan.progress;
    split.then_some(match plan.batch_size {
        BatchSize::Fixed(n) => n,
        BatchSize::Auto => 1,
    })
}

/// What went wrong first, on any thread.
enum Failed {
    /// A task panicked: the whole error.
    Task(Error),
    /// The input panicked while producing this item.
    Input(usize),
}

type FirstFailure = Mutex<Option<Failed>>;

fn record(failure: &FirstFailure, failed: Failed) {
    let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        *slot = Some(failed);
    }
}

/// Notes, while a split unwinds out of the input rather than a task, which
/// item the input was producing: the one after the last this split took.
struct Tracker<'a> {
    failure: &'a FirstFailure,
    next: usize,
    in_task: bool,
    /// While this split runs its items, their panics are the caller's to
    /// report, not printed (one guard for the split, not one an item).
    _quiet: crate::panic::Catching,
}

impl Drop for Tracker<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.in_task {
            record(self.failure, Failed::Input(self.next));
        }
    }
}

/// Runs `call` on every item of `items` across `threads`, results in
/// input order. `call` may borrow from the items: rayon's scope ends
/// before this returns.
pub(crate) fn split_on_threads<T, I>(
    threads: &crate::backend::thread::Threads,
    items: I,
    min_len: usize,
    call: impl Fn(I::Item) -> T::Output + Sync,
) -> Result<Vec<T::Output>>
where
    T: Task,
    I: IndexedParallelIterator,
{
    crate::panic::install_hook();
    let failure: FirstFailure = Mutex::new(None);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        threads.install(|| {
            items
                .enumerate()
                .with_min_len(min_len)
                .map_init(
                    || Tracker {
                        failure: &failure,
                        next: 0,
                        in_task: false,
                        _quiet: crate::panic::Catching::enter(),
                    },
                    |tracker, (index, item)| match catch_unwind(AssertUnwindSafe(|| call(item))) {
                        Ok(value) => {
                            tracker.next = index + 1;
                            value
                        }
                        Err(payload) => {
                            let caught = crate::panic::caught(&*payload);
                            let error = crate::backend::panic_error(T::NAME, index, caught);
                            record(&failure, Failed::Task(error));
                            tracker.in_task = true;
                            resume_unwind(payload)
                        }
                    },
                )
                .collect::<Vec<T::Output>>()
        })
    }));
    outcome.map_err(
        |payload| match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(Failed::Task(error)) => error,
            Some(Failed::Input(index)) => Error::InputPanicked {
                index,
                message: crate::panic::payload_text(&*payload),
            },
            None => Error::InputPanicked {
                index: 0,
                message: crate::panic::payload_text(&*payload),
            },
        },
    )
}
