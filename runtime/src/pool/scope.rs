//! [`Scope`]: work that borrows from the caller, on a thread pool's
//! threads ([`Pool::scope`](super::Pool::scope)), as `std::thread::scope`
//! lets threads borrow. Everything spawned in a scope has ended when the
//! scope returns, so its closures need not be `'static`.

use super::chunks::cpython_chunksize;
use super::result::Slot;
use super::AsyncResult;
use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};

/// A pool's threads, for work that borrows: see
/// [`Pool::scope`](super::Pool::scope).
pub struct Scope<'s, 'r> {
    rayon: &'r rayon::Scope<'s>,
    threads: usize,
}

/// The values of a scoped map as its chunks end.
struct Gather<R> {
    values: Vec<Option<R>>,
    error: Option<Error>,
    chunks_left: usize,
}

fn panic_at(index: usize, caught: crate::panic::Caught) -> Error {
    Error::Panic {
        task: "closure".into(),
        index,
        message: caught.message,
        location: caught.location,
    }
}

impl<'s, 'r> Scope<'s, 'r> {
    pub(crate) fn new(rayon: &'r rayon::Scope<'s>, threads: usize) -> Self {
        Scope { rayon, threads }
    }

    /// Runs `job` on one of the pool's threads; it may borrow anything
    /// that outlives the scope.
    pub fn apply_async<R: Send + 's>(&self, job: impl FnOnce() -> R + Send + 's) -> AsyncResult<R> {
        let slot = Slot::new();
        let filled = Arc::clone(&slot);
        self.rayon.spawn(move |_| {
            filled.set(crate::panic::catch(job).map_err(|caught| panic_at(0, caught)));
        });
        AsyncResult::new(slot)
    }

    /// As [`Scope::apply_async`], waiting for the result.
    pub fn apply<R: Send + 's>(&self, job: impl FnOnce() -> R + Send + 's) -> Result<R> {
        self.apply_async(job).get()
    }

    /// Calls `f` with each item on the pool's threads, in chunks of
    /// CPython's size, and returns the results in order; `f` and the items
    /// may borrow.
    pub fn map<A, R, F>(&self, f: F, items: impl IntoIterator<Item = A>) -> Result<Vec<R>>
    where
        A: Send + 's,
        R: Send + 's,
        F: Fn(A) -> R + Send + Sync + 's,
    {
        self.map_async(f, items).get()
    }

    /// As [`Scope::map`], with the result to come.
    pub fn map_async<A, R, F>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
    ) -> AsyncResult<Vec<R>>
    where
        A: Send + 's,
        R: Send + 's,
        F: Fn(A) -> R + Send + Sync + 's,
    {
        let items: Vec<A> = items.into_iter().collect();
        let slot: Arc<Slot<Vec<R>>> = Slot::new();
        let len = items.len();
        if len == 0 {
            slot.set(Ok(Vec::new()));
            return AsyncResult::new(slot);
        }
        let size = cpython_chunksize(len, self.threads).max(1);
        let gather = Arc::new(Mutex::new(Gather {
            values: std::iter::repeat_with(|| None).take(len).collect(),
            error: None,
            chunks_left: len.div_ceil(size),
        }));
        let f = Arc::new(f);
        let mut items = items.into_iter();
        for offset in (0..len).step_by(size) {
            let chunk: Vec<A> = items.by_ref().take(size).collect();
            let (f, gather, slot) = (Arc::clone(&f), Arc::clone(&gather), Arc::clone(&slot));
            self.rayon.spawn(move |_| {
                let mut values = Vec::with_capacity(chunk.len());
                let outcome =
                    crate::panic::catch(|| chunk.into_iter().for_each(|a| values.push(f(a))));
                let failed = values.len();
                let mut g = gather.lock().unwrap_or_else(|p| p.into_inner());
                for (k, v) in values.into_iter().enumerate() {
                    g.values[offset + k] = Some(v);
                }
                if let Err(caught) = outcome {
                    g.error.get_or_insert(panic_at(offset + failed, caught));
                }
                g.chunks_left -= 1;
                if g.chunks_left == 0 {
                    let result = match g.error.take() {
                        Some(e) => Err(e),
                        None => Ok(g
                            .values
                            .drain(..)
                            .map(|v| v.expect("every chunk ended"))
                            .collect()),
                    };
                    drop(g);
                    slot.set(result);
                }
            });
        }
        AsyncResult::new(slot)
    }
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}
