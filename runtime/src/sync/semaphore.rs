//! [`Semaphore`] and [`BoundedSemaphore`]: a count of permits shared by
//! threads and worker processes, on a futex word.

use super::futex;
use super::mutex::deadline_after;
use super::region::{magic, Header, Region};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[repr(C)]
pub(crate) struct SemaphoreHeader {
    magic: AtomicU64,
    /// Permits free now: the futex word.
    free: AtomicU32,
    /// Threads asleep waiting for a permit, so `release` skips the wake
    /// system call when there are none.
    sleepers: AtomicU32,
    /// The most permits a bounded semaphore may hold (`u32::MAX`: none).
    bound: AtomicU32,
}

impl Header for SemaphoreHeader {
    const MAGIC: u64 = magic(b"sm");
    const NAME: &'static str = "a Semaphore";
}

/// A count of permits shared by threads and worker processes:
/// `multiprocessing.Semaphore`. `acquire` takes one (waiting while none
/// is free) and returns a [`Permit`] that gives it back when dropped.
///
/// A permit held by a process that dies is not given back (as in Python):
/// use a [`Lock`](super::Lock) when a death must release what it held.
///
/// ```
/// use parjob_runtime::sync::Semaphore;
/// let slots = Semaphore::new(2)?;
/// let a = slots.acquire();
/// let b = slots.acquire();
/// assert!(slots.try_acquire().is_none(), "both permits are out");
/// drop(a);
/// assert!(slots.try_acquire().is_some());
/// # drop(b);
/// # Ok::<(), parjob_runtime::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Semaphore {
    region: Region<SemaphoreHeader>,
}

/// A [`Semaphore`] that refuses a `release` beyond its initial count, the
/// sign of a bug: `multiprocessing.BoundedSemaphore`.
///
/// ```
/// use parjob_runtime::sync::BoundedSemaphore;
/// let slots = BoundedSemaphore::new(1)?;
/// assert!(slots.release().is_err(), "no permit is out");
/// slots.acquire().forget();
/// assert!(slots.release().is_ok());
/// # Ok::<(), parjob_runtime::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BoundedSemaphore {
    inner: Semaphore,
}

/// One permit of a [`Semaphore`], given back when dropped.
#[must_use = "the permit is given back when dropped"]
pub struct Permit<'a> {
    header: &'a SemaphoreHeader,
}

impl Permit<'_> {
    /// Keeps the permit taken: someone calls `release` for it later.
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // A permit was taken, so giving it back stays within any bound.
        let _ = release(self.header);
    }
}

impl std::fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Permit")
    }
}

fn try_take(header: &SemaphoreHeader) -> bool {
    let mut free = header.free.load(Ordering::Acquire);
    while free > 0 {
        match header
            .free
            .compare_exchange_weak(free, free - 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return true,
            Err(now) => free = now,
        }
    }
    false
}

fn take(header: &SemaphoreHeader, deadline: Option<Instant>) -> bool {
    loop {
        if try_take(header) {
            return true;
        }
        header.sleepers.fetch_add(1, Ordering::SeqCst);
        // Sleeps only while `free` is still 0: a release in between
        // changes the word, and the wait returns at once.
        let in_time = futex::wait(&header.free, 0, deadline);
        header.sleepers.fetch_sub(1, Ordering::SeqCst);
        if !in_time {
            return try_take(header);
        }
    }
}

fn release(header: &SemaphoreHeader) -> Result<()> {
    let bound = header.bound.load(Ordering::Relaxed);
    let mut free = header.free.load(Ordering::Acquire);
    loop {
        if free >= bound {
            return Err(Error::Sync(format!(
                "a BoundedSemaphore of {bound} released more times than it was acquired"
            )));
        }
        match header
            .free
            .compare_exchange_weak(free, free + 1, Ordering::SeqCst, Ordering::Acquire)
        {
            Ok(_) => break,
            Err(now) => free = now,
        }
    }
    if header.sleepers.load(Ordering::SeqCst) > 0 {
        futex::wake(&header.free, 1);
    }
    Ok(())
}

impl Semaphore {
    /// A semaphore with `permits` free permits.
    ///
    /// # Errors
    /// `Error::SharedMemory` when no shared memory can be had.
    pub fn new(permits: u32) -> Result<Self> {
        Semaphore::with_bound(permits, u32::MAX)
    }

    fn with_bound(permits: u32, bound: u32) -> Result<Self> {
        // SAFETY: the init writes every field of the zeroed header.
        let region = unsafe {
            Region::create(0, |h: *mut SemaphoreHeader| {
                (*h).free.store(permits, Ordering::Relaxed);
                (*h).bound.store(bound, Ordering::Relaxed);
                (*h).magic.store(SemaphoreHeader::MAGIC, Ordering::Release);
            })
        }?;
        Ok(Semaphore { region })
    }

    fn header(&self) -> &SemaphoreHeader {
        self.region.header()
    }

    /// Takes a permit, waiting as long as it takes.
    pub fn acquire(&self) -> Permit<'_> {
        take(self.header(), None);
        Permit {
            header: self.header(),
        }
    }

    /// Takes a permit if one is free now.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        try_take(self.header()).then(|| Permit {
            header: self.header(),
        })
    }

    /// Takes a permit, waiting at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<Permit<'_>> {
        take(self.header(), deadline_after(timeout)).then(|| Permit {
            header: self.header(),
        })
    }

    /// Adds a permit (for one taken with [`Permit::forget`], perhaps in
    /// another process).
    pub fn release(&self) {
        // An unbounded semaphore's only limit is `u32::MAX` permits.
        let _ = release(self.header());
    }

    /// The permits free now (it may change at once).
    pub fn available(&self) -> u32 {
        self.header().free.load(Ordering::Acquire)
    }
}

impl BoundedSemaphore {
    /// A semaphore with `permits` free permits, which is also the most it
    /// may ever hold.
    ///
    /// # Errors
    /// `Error::SharedMemory` when no shared memory can be had.
    pub fn new(permits: u32) -> Result<Self> {
        Ok(BoundedSemaphore {
            inner: Semaphore::with_bound(permits, permits)?,
        })
    }

    /// Takes a permit, waiting as long as it takes.
    pub fn acquire(&self) -> Permit<'_> {
        self.inner.acquire()
    }

    /// Takes a permit if one is free now.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        self.inner.try_acquire()
    }

    /// Takes a permit, waiting at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<Permit<'_>> {
        self.inner.acquire_timeout(timeout)
    }

    /// Gives back a permit taken with [`Permit::forget`].
    ///
    /// # Errors
    /// `Error::Sync` when every permit is already free.
    pub fn release(&self) -> Result<()> {
        release(self.inner.header())
    }

    /// The permits free now.
    pub fn available(&self) -> u32 {
        self.inner.available()
    }
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("available", &self.available())
            .finish()
    }
}

impl std::fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedSemaphore")
            .field("available", &self.available())
            .finish()
    }
}
