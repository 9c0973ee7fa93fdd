//! [`Lock`], [`RLock`] and [`Condition`]: mutual exclusion across
//! processes, on robust process-shared mutexes.

use super::mutex::{deadline_after, PoisonMutex};
use super::region::{magic, Header, Region};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LockResult, PoisonError, TryLockError, TryLockResult};
use std::time::Duration;

/// The header of both lock types: a magic word and a robust mutex.
#[repr(C)]
pub(crate) struct MutexHeader {
    magic: AtomicU64,
    mutex: PoisonMutex,
}

/// The header of a [`Lock`].
#[repr(transparent)]
pub(crate) struct LockHeader(MutexHeader);
/// The header of an [`RLock`].
#[repr(transparent)]
pub(crate) struct RLockHeader(MutexHeader);

impl Header for LockHeader {
    const MAGIC: u64 = magic(b"lk");
    const NAME: &'static str = "a Lock";
}

impl Header for RLockHeader {
    const MAGIC: u64 = magic(b"rl");
    const NAME: &'static str = "an RLock";
}

/// A mutual-exclusion lock shared by threads and worker processes:
/// `multiprocessing.Lock`, with a guard.
///
/// Pass a clone to each task (clones share the lock); a worker process
/// gets the same lock through shared memory. A holder that dies (even by
/// SIGKILL) or panics while holding it releases it and *poisons* it, as
/// `std::sync::Mutex` does: `lock` then returns `Err(PoisonError)`, whose
/// `into_inner()` still gives the guard.
///
/// ```
/// use parjob_runtime::sync::Lock;
/// let lock = Lock::new()?;
/// {
///     let _held = lock.lock().unwrap();
///     assert!(lock.try_lock().is_err(), "held");
/// }
/// assert!(lock.try_lock().is_ok());
/// # Ok::<(), parjob_runtime::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Lock {
    region: Region<LockHeader>,
}

/// An [`RLock`]: a lock that the thread holding it may take again (each
/// `lock` needs its guard dropped), `multiprocessing.RLock`.
///
/// ```
/// use parjob_runtime::sync::RLock;
/// let lock = RLock::new()?;
/// let outer = lock.lock().unwrap();
/// let inner = lock.lock().unwrap();
/// drop((inner, outer));
/// # Ok::<(), parjob_runtime::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RLock {
    region: Region<RLockHeader>,
}

/// Proof that a [`Lock`], [`RLock`] or [`Condition`](super::Condition) is held; dropping it
/// releases the lock. It stays on the thread that took it.
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard<'a> {
    mutex: &'a PoisonMutex,
    /// Not `Send`: a pthread mutex is released by the thread that took it.
    thread_bound: PhantomData<*const ()>,
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockGuard")
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: a guard exists only while its thread holds the mutex.
        unsafe { self.mutex.unlock() }
    }
}

impl<'a> LockGuard<'a> {
    /// The guard of `mutex`, which this thread has just locked.
    pub(crate) fn new(mutex: &'a PoisonMutex, poisoned: bool) -> LockResult<LockGuard<'a>> {
        let guard = LockGuard {
            mutex,
            thread_bound: PhantomData,
        };
        if poisoned {
            Err(PoisonError::new(guard))
        } else {
            Ok(guard)
        }
    }

    /// Whether this guard holds `mutex`.
    pub(crate) fn is_of(&self, mutex: &PoisonMutex) -> bool {
        std::ptr::eq(self.mutex, mutex)
    }
}

fn guard(mutex: &PoisonMutex, poisoned: bool) -> LockResult<LockGuard<'_>> {
    LockGuard::new(mutex, poisoned)
}

/// `lock` for each lock type: waits with no limit.
fn lock_forever(mutex: &PoisonMutex) -> LockResult<LockGuard<'_>> {
    let poisoned = mutex.lock(None).expect("a lock with no deadline");
    guard(mutex, poisoned)
}

fn lock_until(mutex: &PoisonMutex, timeout: Option<Duration>) -> TryLockResult<LockGuard<'_>> {
    let outcome = match timeout {
        None => mutex.try_lock(),
        Some(t) => mutex.lock(deadline_after(t)),
    };
    match outcome {
        None => Err(TryLockError::WouldBlock),
        Some(poisoned) => guard(mutex, poisoned).map_err(TryLockError::Poisoned),
    }
}

macro_rules! lock_methods {
    ($ty:ident, $header:ident, $recursive:expr, $relock:literal) => {
        impl $ty {
            /// A new, unlocked lock in shared memory.
            ///
            /// # Errors
            /// `Error::SharedMemory` when no shared memory can be had.
            pub fn new() -> Result<Self> {
                // SAFETY: the init writes the magic word and initialises
                // the mutex in the fresh zeroed header.
                let region = unsafe {
                    Region::create(0, |h: *mut $header| {
                        let h = h.cast::<MutexHeader>();
                        PoisonMutex::init(std::ptr::addr_of_mut!((*h).mutex), $recursive);
                        (*h).magic.store($header::MAGIC, Ordering::Release);
                    })
                }?;
                Ok($ty { region })
            }

            fn mutex(&self) -> &PoisonMutex {
                &self.region.header().0.mutex
            }

            /// Takes the lock, waiting as long as it takes. `Err` when it
            /// is poisoned; the error still holds the guard.
            ///
            #[doc = $relock]
            pub fn lock(&self) -> LockResult<LockGuard<'_>> {
                lock_forever(self.mutex())
            }

            /// Takes the lock if it is free now.
            pub fn try_lock(&self) -> TryLockResult<LockGuard<'_>> {
                lock_until(self.mutex(), None)
            }

            /// Takes the lock, waiting at most `timeout`:
            /// `Err(TryLockError::WouldBlock)` when it did not come.
            pub fn lock_timeout(&self, timeout: Duration) -> TryLockResult<LockGuard<'_>> {
                lock_until(self.mutex(), Some(timeout))
            }

            /// Whether a holder died or panicked while holding it.
            pub fn is_poisoned(&self) -> bool {
                self.mutex().is_poisoned()
            }

            /// Clears the poison, once what the lock guards is known good.
            pub fn clear_poison(&self) {
                self.mutex().clear_poison()
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("poisoned", &self.is_poisoned())
                    .finish_non_exhaustive()
            }
        }
    };
}

lock_methods!(
    Lock,
    LockHeader,
    false,
    "# Panics\nWhen this thread already holds it: waiting would never end (an \
     [`RLock`] may be taken again)."
);
lock_methods!(
    RLock,
    RLockHeader,
    true,
    "The thread that holds it takes it again at once."
);
