//! [`JoinableQueue`]: a [`Queue`] that counts the items not yet done, so a
//! producer can wait until consumers have finished every item it put
//! (`multiprocessing.JoinableQueue`).
//!
//! The count of unfinished items is a futex word beside the queue: `put`
//! raises it before the item goes in, `task_done` lowers it, and `join`
//! sleeps until it reaches zero.

use super::futex;
use super::mutex::deadline_after;
use super::queue::Queue;
use super::region::{magic, Header, Region};
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[repr(C)]
pub(crate) struct UnfinishedHeader {
    magic: AtomicU64,
    /// Items put and not yet marked done: the futex word.
    unfinished: AtomicU32,
}

impl Header for UnfinishedHeader {
    const MAGIC: u64 = magic(b"jq");
    const NAME: &'static str = "a JoinableQueue's count";
}

/// A [`Queue`] whose consumers say when they have finished each item
/// (`task_done`), so that `join` can wait for all of them: CPython's
/// `multiprocessing.JoinableQueue`.
///
/// ```
/// use parjob_runtime::sync::JoinableQueue;
/// let jobs = JoinableQueue::<u32>::new(16)?;
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         for _ in 0..3 {
///             let job = jobs.get().unwrap();
///             assert!(job < 3);
///             jobs.task_done().unwrap();
///         }
///     });
///     for job in 0..3 {
///         jobs.put(&job).unwrap();
///     }
///     jobs.join(); // every job taken and done
/// });
/// assert!(jobs.task_done().is_err(), "no item is left to mark done");
/// # Ok::<(), parjob_runtime::Error>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct JoinableQueue<T> {
    queue: Queue<T>,
    count: Region<UnfinishedHeader>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
            count: self.count.clone(),
        }
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A joinable queue of at most `max_items` items (see [`Queue::new`]).
    ///
    /// # Errors
    /// As [`Queue::new`].
    pub fn new(max_items: usize) -> Result<Self> {
        Self::with_queue(Queue::new(max_items)?)
    }

    /// A joinable queue over a ring of `ring_bytes` (see
    /// [`Queue::with_capacity`]).
    ///
    /// # Errors
    /// As [`Queue::with_capacity`].
    pub fn with_capacity(max_items: usize, ring_bytes: usize) -> Result<Self> {
        Self::with_queue(Queue::with_capacity(max_items, ring_bytes)?)
    }

    fn with_queue(queue: Queue<T>) -> Result<Self> {
        // SAFETY: the init writes the magic word; the count starts at 0.
        let count = unsafe {
            Region::create(0, |h: *mut UnfinishedHeader| {
                (*h).magic.store(UnfinishedHeader::MAGIC, Ordering::Release);
            })
        }?;
        Ok(JoinableQueue { queue, count })
    }

    fn unfinished(&self) -> &AtomicU32 {
        &self.count.header().unfinished
    }

    /// Puts `item` at the back and counts it as unfinished.
    ///
    /// # Errors
    /// As [`Queue::put`]; the item is then not counted.
    pub fn put(&self, item: &T) -> Result<()> {
        self.put_timeout(item, Duration::MAX).map(|_| ())
    }

    /// As [`JoinableQueue::put`], waiting at most `timeout` for room;
    /// false (and not counted) when none came.
    ///
    /// # Errors
    /// As [`Queue::put`].
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<bool> {
        // Counted first, so a consumer's task_done never runs below zero.
        self.unfinished().fetch_add(1, Ordering::AcqRel);
        let put = if timeout == Duration::MAX {
            self.queue.put(item).map(|()| true)
        } else {
            self.queue.put_timeout(item, timeout)
        };
        if !matches!(put, Ok(true)) {
            self.done_one();
        }
        put
    }

    /// Takes the front item (see [`Queue::get`]); call
    /// [`JoinableQueue::task_done`] once it is finished.
    ///
    /// # Errors
    /// As [`Queue::get`].
    pub fn get(&self) -> Result<T> {
        self.queue.get()
    }

    /// As [`Queue::get_timeout`].
    ///
    /// # Errors
    /// As [`Queue::get`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<Option<T>> {
        self.queue.get_timeout(timeout)
    }

    /// Says that an item taken with `get` is finished.
    ///
    /// # Errors
    /// `Error::Sync` when every item put is already done (CPython's
    /// "task_done() called too many times").
    pub fn task_done(&self) -> Result<()> {
        let word = self.unfinished();
        let mut now = word.load(Ordering::Acquire);
        loop {
            if now == 0 {
                return Err(Error::Sync(
                    "task_done() called more times than items were put".into(),
                ));
            }
            match word.compare_exchange(now, now - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(seen) => now = seen,
            }
        }
        if now == 1 {
            futex::wake(word, i32::MAX);
        }
        Ok(())
    }

    fn done_one(&self) {
        if self.unfinished().fetch_sub(1, Ordering::AcqRel) == 1 {
            futex::wake(self.unfinished(), i32::MAX);
        }
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) {
        self.join_until(None);
    }

    /// As [`JoinableQueue::join`], for at most `timeout`: true when every
    /// item is done.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.join_until(deadline_after(timeout))
    }

    fn join_until(&self, deadline: Option<Instant>) -> bool {
        let word = self.unfinished();
        loop {
            let now = word.load(Ordering::Acquire);
            if now == 0 {
                return true;
            }
            if !futex::wait(word, now, deadline) && word.load(Ordering::Acquire) != 0 {
                return false;
            }
        }
    }

    /// Items put and not yet marked done.
    pub fn unfinished_tasks(&self) -> usize {
        self.unfinished().load(Ordering::Acquire) as usize
    }

    /// The queue underneath (`close`, `len`, `iter`, ...).
    pub fn queue(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T> std::fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinableQueue")
            .field(
                "unfinished",
                &self.count.header().unfinished.load(Ordering::Acquire),
            )
            .finish_non_exhaustive()
    }
}
