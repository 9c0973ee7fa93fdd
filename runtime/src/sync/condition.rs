//! [`Condition`]: wait for a change that another thread or process
//! announces, across processes.

use super::lock::LockGuard;
use super::mutex::{deadline_after, PoisonMutex, RawCond};
use super::region::{magic, Header, Region};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LockResult, PoisonError};
use std::time::{Duration, Instant};

#[repr(C)]
pub(crate) struct ConditionHeader {
    magic: AtomicU64,
    mutex: PoisonMutex,
    cond: RawCond,
}

impl Header for ConditionHeader {
    const MAGIC: u64 = magic(b"cv");
    const NAME: &'static str = "a Condition";
}

/// A condition variable with its own lock, shared by threads and worker
/// processes: `multiprocessing.Condition`. Take the lock, check the state
/// you wait for (kept in shared memory, such as a
/// [`Value`](super::Value)), and `wait` while it does not hold; whoever
/// changes the state calls `notify_one` or `notify_all`.
///
/// Change the state while holding the condition's lock (the notify may
/// come before or after unlocking), as with any condition variable: a
/// waiter that checked the state under the lock then cannot miss the
/// notification. Waits can wake spuriously, so wait in a loop, or with
/// [`Condition::wait_while`]. A waiter whose lock holder died gets
/// `Err(PoisonError)`, as from [`Lock::lock`](super::Lock::lock).
///
/// ```
/// use parjob_runtime::sync::{Condition, Value};
/// let ready = Condition::new()?;
/// let flag = Value::new(0u32)?;
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         let _held = ready.lock().unwrap();
///         flag.set(1);
///         ready.notify_all();
///     });
///     let held = ready.lock().unwrap();
///     let _held = ready.wait_while(held, || flag.get() == 0).unwrap();
/// });
/// assert_eq!(flag.get(), 1);
/// # Ok::<(), parjob_runtime::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Condition {
    region: Region<ConditionHeader>,
}

impl Condition {
    /// A new condition and its lock, in shared memory.
    ///
    /// # Errors
    /// `Error::SharedMemory` when no shared memory can be had.
    pub fn new() -> Result<Self> {
        // SAFETY: the init writes the magic word and initialises the
        // mutex and condition variable in the fresh zeroed header.
        let region = unsafe {
            Region::create(0, |h: *mut ConditionHeader| {
                PoisonMutex::init(std::ptr::addr_of_mut!((*h).mutex), false);
                RawCond::init(std::ptr::addr_of_mut!((*h).cond));
                (*h).magic.store(ConditionHeader::MAGIC, Ordering::Release);
            })
        }?;
        Ok(Condition { region })
    }

    fn parts(&self) -> (&PoisonMutex, &RawCond) {
        let header = self.region.header();
        (&header.mutex, &header.cond)
    }

    /// Takes the condition's lock, as [`Lock::lock`](super::Lock::lock).
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        let (mutex, _) = self.parts();
        let poisoned = mutex.lock(None).expect("a lock with no deadline");
        LockGuard::new(mutex, poisoned)
    }

    /// Releases the lock that `guard` holds, sleeps until notified (or
    /// spuriously), and takes the lock again.
    ///
    /// # Panics
    /// When `guard` is not this condition's.
    pub fn wait<'a>(&'a self, guard: LockGuard<'a>) -> LockResult<LockGuard<'a>> {
        self.wait_until(guard, None).map(|(g, _)| g).map_err(|e| {
            let (g, _) = e.into_inner();
            PoisonError::new(g)
        })
    }

    /// As [`Condition::wait`], for at most `timeout`; the flag is true
    /// when the time ran out.
    pub fn wait_timeout<'a>(
        &'a self,
        guard: LockGuard<'a>,
        timeout: Duration,
    ) -> LockResult<(LockGuard<'a>, bool)> {
        self.wait_until(guard, deadline_after(timeout))
    }

    /// Waits while `condition()` holds, re-checking after every wake.
    pub fn wait_while<'a>(
        &'a self,
        mut guard: LockGuard<'a>,
        mut condition: impl FnMut() -> bool,
    ) -> LockResult<LockGuard<'a>> {
        while condition() {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// Waits while `condition()` holds, for at most `timeout` in all
    /// (`std::sync::Condvar::wait_timeout_while`); the flag is true when
    /// the time ran out with the condition still holding.
    pub fn wait_timeout_while<'a>(
        &'a self,
        mut guard: LockGuard<'a>,
        timeout: Duration,
        mut condition: impl FnMut() -> bool,
    ) -> LockResult<(LockGuard<'a>, bool)> {
        let deadline = deadline_after(timeout);
        while condition() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok((guard, true));
            }
            guard = match self.wait_until(guard, deadline) {
                Ok((g, _)) => g,
                Err(e) => {
                    let (g, _) = e.into_inner();
                    return Err(PoisonError::new((g, condition())));
                }
            };
        }
        Ok((guard, false))
    }

    /// Waits until `predicate()` holds, for at most `timeout` when given
    /// (CPython's `Condition.wait_for`): the guard, and the predicate's
    /// last value (false only when the time ran out first).
    ///
    /// ```
    /// use parjob_runtime::sync::{Condition, Value};
    /// let ready = Value::new(0u32)?;
    /// let cond = Condition::new()?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         let _held = cond.lock().unwrap();
    ///         ready.set(1);
    ///         cond.notify_all();
    ///     });
    ///     let guard = cond.lock().unwrap();
    ///     let (_guard, holds) = cond.wait_for(guard, || ready.get() == 1, None).unwrap();
    ///     assert!(holds);
    /// });
    /// let guard = cond.lock().unwrap();
    /// let wait = Some(std::time::Duration::from_millis(10));
    /// let (_guard, holds) = cond.wait_for(guard, || ready.get() == 2, wait).unwrap();
    /// assert!(!holds, "the time ran out");
    /// # Ok::<(), parjob_runtime::Error>(())
    /// ```
    pub fn wait_for<'a>(
        &'a self,
        guard: LockGuard<'a>,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> LockResult<(LockGuard<'a>, bool)> {
        match timeout {
            None => match self.wait_while(guard, || !predicate()) {
                Ok(g) => Ok((g, true)),
                Err(e) => {
                    let g = e.into_inner();
                    let holds = predicate();
                    Err(PoisonError::new((g, holds)))
                }
            },
            Some(t) => match self.wait_timeout_while(guard, t, || !predicate()) {
                Ok((g, timed_out)) => Ok((g, !timed_out)),
                Err(e) => {
                    let (g, still) = e.into_inner();
                    Err(PoisonError::new((g, !still)))
                }
            },
        }
    }

    fn wait_until<'a>(
        &'a self,
        guard: LockGuard<'a>,
        deadline: Option<Instant>,
    ) -> LockResult<(LockGuard<'a>, bool)> {
        let (mutex, cond) = self.parts();
        assert!(
            guard.is_of(mutex),
            "Condition::wait with the guard of another lock"
        );
        // SAFETY: the guard proves this thread holds `mutex`, the
        // condition's own mutex, which every waiter uses.
        let locked = unsafe { cond.wait(mutex.raw(), deadline) };
        let timed_out = locked == super::mutex::Locked::TimedOut;
        // A timed-out wait still re-locks the mutex: count it as held.
        let poisoned = match mutex.relocked(locked) {
            Some(poisoned) => poisoned,
            None => mutex.is_poisoned(),
        };
        let result = LockGuard::new(mutex, poisoned);
        std::mem::forget(guard);
        match result {
            Ok(g) => Ok((g, timed_out)),
            Err(e) => Err(PoisonError::new((e.into_inner(), timed_out))),
        }
    }

    /// Wakes one waiter.
    pub fn notify_one(&self) {
        self.parts().1.notify_one();
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.parts().1.notify_all();
    }
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition").finish_non_exhaustive()
    }
}
