//! [`ChunkedCalls`]: a pool's map-like calls with a chunk size (and an `imap`
//! buffer size) of their own.

use super::imap::{self, Imap};
use super::{both, AsyncResult, Chunksize, MapTask, Pool, StarTask, Submission, SubmitStar};
use crate::error::{Error, Result};

/// A pool's calls with a chunk size of their own: [`Pool::chunksize`].
#[derive(Debug, Clone, Copy)]
pub struct ChunkedCalls<'p> {
    pub(super) pool: &'p Pool,
    pub(super) chunksize: Chunksize,
    pub(super) buffersize: Option<usize>,
}

impl<'p> ChunkedCalls<'p> {
    /// For `imap`: at most `n` items are drawn and not yet consumed
    /// (default: 2 chunks a worker).
    /// 0 is refused: the iterator's first item is the error.
    pub fn buffersize(mut self, n: usize) -> Self {
        self.buffersize = Some(n);
        self
    }

    fn collect_all<R: Send + 'static>(self, work: Submission<R>) -> AsyncResult<Vec<R>> {
        self.pool
            .collect(work, self.chunksize, std::convert::identity, None)
    }

    /// [`Pool::map`] with this chunk size.
    pub fn map<A, R: Send + 'static>(
        self,
        task: impl MapTask<A, R>,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>> {
        self.map_async(task, items).get()
    }

    /// [`Pool::map_async`] with this chunk size.
    pub fn map_async<A, R: Send + 'static>(
        self,
        task: impl MapTask<A, R>,
        items: impl IntoIterator<Item = A>,
    ) -> AsyncResult<Vec<R>> {
        let work = self
            .pool
            .preparing(|| task.submission(items.into_iter().collect()));
        self.collect_all(work)
    }

    /// [`Pool::map_async`] with this chunk size, and callbacks run on the
    /// pool's callback thread (see [`Pool::apply_async_with`]).
    pub fn map_async_with<A, R: Send + 'static>(
        self,
        task: impl MapTask<A, R>,
        items: impl IntoIterator<Item = A>,
        on_success: impl FnOnce(&Vec<R>) + Send + 'static,
        on_error: impl FnOnce(&Error) + Send + 'static,
    ) -> AsyncResult<Vec<R>> {
        let work = self
            .pool
            .preparing(|| task.submission(items.into_iter().collect()));
        let callback = both(on_success, on_error);
        self.pool
            .collect(work, self.chunksize, std::convert::identity, Some(callback))
    }

    /// [`Pool::starmap`] with this chunk size.
    pub fn starmap<Args, R: Send + 'static>(
        self,
        task: impl StarTask<Args, R>,
        items: impl IntoIterator<Item = Args>,
    ) -> Result<Vec<R>> {
        self.starmap_async(task, items).get()
    }

    /// [`Pool::starmap_async`] with this chunk size.
    pub fn starmap_async<Args, R: Send + 'static>(
        self,
        task: impl StarTask<Args, R>,
        items: impl IntoIterator<Item = Args>,
    ) -> AsyncResult<Vec<R>> {
        let work = self
            .pool
            .preparing(|| SubmitStar::submission(&task, items.into_iter().collect()));
        self.collect_all(work)
    }

    /// [`Pool::imap`] with this chunk size.
    pub fn imap<A: 'p, R: Send + 'static>(
        self,
        task: impl MapTask<A, R> + 'p,
        items: impl IntoIterator<Item = A> + 'p,
    ) -> Imap<'p, R> {
        Imap::new(self.pool, self.imap_parts(task, items), true)
    }

    /// [`Pool::imap_unordered`] with this chunk size.
    pub fn imap_unordered<A: 'p, R: Send + 'static>(
        self,
        task: impl MapTask<A, R> + 'p,
        items: impl IntoIterator<Item = A> + 'p,
    ) -> Imap<'p, R> {
        Imap::new(self.pool, self.imap_parts(task, items), false)
    }

    fn imap_parts<A: 'p, R: Send + 'static>(
        self,
        task: impl MapTask<A, R> + 'p,
        items: impl IntoIterator<Item = A> + 'p,
    ) -> imap::Parts<'p, R> {
        let (chunk, refused) = match self.chunksize {
            Chunksize::Fixed(0) => (1, Some(super::chunksize_zero())),
            Chunksize::Fixed(n) => (n, None),
            Chunksize::Default | Chunksize::Auto => (1, None),
        };
        let refused = refused.or_else(|| {
            (self.buffersize == Some(0)).then(|| {
                Error::Config(
                    "buffersize 0: imap draws at least one item ahead (CPython refuses 0 too)"
                        .into(),
                )
            })
        });
        let sharing = self.pool.sharing();
        imap::Parts {
            jobs: Box::new(items.into_iter().map(move |a| {
                let _entered = sharing.as_ref().map(|s| s.enter());
                task.job(a)
            })),
            chunk,
            refused,
            buffer: self
                .buffersize
                .unwrap_or(2 * self.pool.processes * chunk)
                .max(chunk),
        }
    }
}
