//! Process-shared, robust pthread mutexes, and condition variables on
//! futex words, placed in shared memory.
//!
//! A robust mutex is what makes a dead holder harmless: glibc lists every
//! robust mutex a thread holds in the thread's robust list, and when the
//! thread dies (a SIGKILL included) the kernel marks each one
//! owner-dead and wakes a waiter, whose lock then returns `EOWNERDEAD`.
//! The primitive decides what that means: a `Lock` is marked poisoned, a
//! queue repairs its bookkeeping.
//!
//! The condition variables are not glibc's process-shared `pthread_cond_t`:
//! that one counts its waiters inside the shared object, so a waiter
//! killed mid-wait stays counted, and the next signal waits for it for
//! ever while holding the caller's mutex. A [`RawCond`] is one sequence
//! word that notifiers bump and waiters sleep on with `FUTEX_WAIT`; the
//! kernel keeps the sleepers, and drops a dead one from its queue, so a
//! dead waiter costs the living nothing.

use super::futex;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How many times `lock` tries a held mutex before it sleeps.
const SPINS: u32 = 64;

/// A `pthread_mutex_t` in shared memory.
#[repr(C)]
pub(crate) struct RawMutex(UnsafeCell<libc::pthread_mutex_t>);

/// A condition variable in shared memory: a sequence word that every
/// notification bumps, and that waiters sleep on (the module's doc says
/// why it is not a `pthread_cond_t`).
#[repr(C)]
pub(crate) struct RawCond {
    sequence: AtomicU32,
    /// Two counts in one word, changed together: the waiters between
    /// their check and their return (high half), and how many of them a
    /// notification has woken that have not yet returned (low half). A
    /// notification wakes only while `waiters > woken`, so a producer that
    /// outruns a waking consumer makes no syscall per item. A returning
    /// waiter takes one off each, keeping `woken <= waiters`: one word, so
    /// a notifier never counts a wake for a waiter that has just left. A
    /// waiter killed mid-wait stays counted, which costs at most a syscall
    /// that wakes no one, never a wakeup lost.
    counts: AtomicU64,
}

/// One waiter more, in [`RawCond::counts`].
const WAITER: u64 = 1 << 32;
const WOKEN_MASK: u64 = WAITER - 1;

// SAFETY: a process-shared pthread object is made to be used from any
// thread of any process that maps it; every access goes through pthread
// calls.
unsafe impl Sync for RawMutex {}

/// How a lock attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Locked {
    /// The mutex is ours.
    Yes,
    /// The mutex is ours, and its previous holder died holding it: what
    /// it guards may be half-written. It has been made consistent again.
    OwnerDied,
    /// The deadline passed first.
    TimedOut,
}

/// A lock call that could not fail but did, or a relock by its holder.
fn unexpected(call: &str, code: i32) -> ! {
    if code == libc::EDEADLK {
        panic!("this thread already holds this lock: it would wait for itself forever (use an RLock to relock)");
    }
    panic!("{call} failed: {}", std::io::Error::from_raw_os_error(code))
}

impl RawMutex {
    /// Initialises the mutex at `at`: process-shared and robust;
    /// recursive, or error-checking (a relock by the holder panics
    /// instead of deadlocking).
    ///
    /// # Safety
    /// `at` must point to writable memory for a `RawMutex` that nothing
    /// uses yet.
    pub(crate) unsafe fn init(at: *mut RawMutex, recursive: bool) {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        let kind = if recursive {
            libc::PTHREAD_MUTEX_RECURSIVE
        } else {
            libc::PTHREAD_MUTEX_ERRORCHECK
        };
        // SAFETY: the attribute calls act on `attr`, initialised first;
        // `at` is writable per the contract. These calls fail only on
        // invalid arguments, which these are not.
        unsafe {
            libc::pthread_mutexattr_init(attr.as_mut_ptr());
            libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
            libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
            libc::pthread_mutexattr_settype(attr.as_mut_ptr(), kind);
            libc::pthread_mutex_init((*at).0.get(), attr.as_ptr());
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        }
    }

    /// Locks, waiting until `deadline` (`None`: for ever). A held mutex
    /// is retried a few times before sleeping, since the holders of these
    /// locks keep them for well under a microsecond.
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Locked {
        for _ in 0..SPINS {
            match self.try_lock() {
                Locked::TimedOut => std::hint::spin_loop(),
                done => return done,
            }
        }
        let code = match deadline {
            // SAFETY: the mutex was initialised by `init` before the memory
            // was shared.
            None => unsafe { libc::pthread_mutex_lock(self.0.get()) },
            Some(deadline) => {
                let when = realtime(deadline);
                // SAFETY: as above, with a valid timespec.
                match unsafe { libc::pthread_mutex_timedlock(self.0.get(), &when) } {
                    // This thread holds it: it would not come in time.
                    libc::EDEADLK => libc::ETIMEDOUT,
                    code => code,
                }
            }
        };
        self.outcome("pthread_mutex_lock", code)
    }

    /// Locks if no one holds it.
    pub(crate) fn try_lock(&self) -> Locked {
        // SAFETY: as in `lock`.
        let code = unsafe { libc::pthread_mutex_trylock(self.0.get()) };
        // Held by another thread, or by this one.
        if code == libc::EBUSY || code == libc::EDEADLK {
            return Locked::TimedOut;
        }
        self.outcome("pthread_mutex_trylock", code)
    }

    fn outcome(&self, call: &str, code: i32) -> Locked {
        match code {
            0 => Locked::Yes,
            libc::ETIMEDOUT => Locked::TimedOut,
            libc::EOWNERDEAD => {
                // SAFETY: we hold the mutex in the owner-dead state.
                unsafe { libc::pthread_mutex_consistent(self.0.get()) };
                Locked::OwnerDied
            }
            other => unexpected(call, other),
        }
    }

    /// Unlocks.
    ///
    /// # Safety
    /// The calling thread must hold the mutex.
    pub(crate) unsafe fn unlock(&self) {
        // SAFETY: per the contract.
        unsafe { libc::pthread_mutex_unlock(self.0.get()) };
    }
}

impl RawCond {
    /// Initialises the condition variable at `at`.
    ///
    /// # Safety
    /// `at` must point to writable memory for a `RawCond` that nothing
    /// uses yet.
    pub(crate) unsafe fn init(at: *mut RawCond) {
        // SAFETY: per the contract.
        unsafe {
            at.write(RawCond {
                sequence: AtomicU32::new(0),
                counts: AtomicU64::new(0),
            })
        }
    }

    /// Waits for a notification, releasing `mutex` meanwhile, until
    /// `deadline`. It returns holding `mutex` again, and says how: a
    /// holder that died meanwhile shows as [`Locked::OwnerDied`] (which
    /// wins over a timeout, so the caller repairs what the holder left).
    ///
    /// A notification between the caller's check of its state and this
    /// call is not lost: the caller held `mutex` throughout, so the
    /// notifier bumped the sequence only after it is read here, and the
    /// futex wait returns at once on the changed word.
    ///
    /// # Safety
    /// The calling thread must hold `mutex`, and every waiter on this
    /// condition must use the same mutex.
    pub(crate) unsafe fn wait(&self, mutex: &RawMutex, deadline: Option<Instant>) -> Locked {
        // Counted before the mutex is released, so a notifier that changed
        // the state after this check sees the count; it bumps the sequence
        // before it wakes, so a wake between here and the sleep is not
        // lost either (the futex wait sees the changed word).
        self.counts.fetch_add(WAITER, Ordering::SeqCst);
        let seen = self.sequence.load(Ordering::SeqCst);
        // SAFETY: per the contract, this thread holds `mutex`.
        unsafe { mutex.unlock() };
        let in_time = futex::wait(&self.sequence, seen, deadline);
        let _ = self
            .counts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                let waiters = (c >> 32).saturating_sub(1);
                let woken = (c & WOKEN_MASK).saturating_sub(1).min(waiters);
                Some(waiters << 32 | woken)
            });
        // As pthread_cond_timedwait, the mutex is taken back however long
        // that takes: its holders keep it only briefly.
        match mutex.lock(None) {
            Locked::Yes if !in_time => Locked::TimedOut,
            locked => locked,
        }
    }

    /// Wakes one waiter.
    pub(crate) fn notify_one(&self) {
        self.notify(1);
    }

    /// Wakes every waiter.
    pub(crate) fn notify_all(&self) {
        self.notify(i32::MAX);
    }

    /// Wakes `n` (1 or all) of the waiters that no notification has woken
    /// yet, if there are any: then it bumps the sequence (so one between
    /// its count and its sleep does not sleep) and makes the syscall.
    /// With none, it writes nothing, so a producer and a consumer that
    /// keep up with each other do not bounce this word between them.
    ///
    /// Reading the count first is sound because the state a waiter waits
    /// for changes under the mutex: a waiter that checked the state before
    /// the change was counted before it unlocked, so before the change.
    fn notify(&self, n: i32) {
        let mut counts = self.counts.load(Ordering::SeqCst);
        let mut bumped = false;
        loop {
            let (waiters, woken) = (counts >> 32, counts & WOKEN_MASK);
            if waiters <= woken {
                return;
            }
            if !bumped {
                self.sequence.fetch_add(1, Ordering::SeqCst);
                bumped = true;
            }
            let now = if n == 1 { woken + 1 } else { waiters };
            match self.counts.compare_exchange(
                counts,
                waiters << 32 | now,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    futex::wake(&self.sequence, n);
                    return;
                }
                Err(seen) => counts = seen,
            }
        }
    }
}

/// `deadline` on the realtime clock, which `pthread_mutex_timedlock` uses.
fn realtime(deadline: Instant) -> libc::timespec {
    let left = deadline.saturating_duration_since(Instant::now());
    let at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        + left;
    timespec(at)
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// A deadline `timeout` from now; `None` when it overflows (for ever).
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// A robust mutex with a poison flag, as `std::sync::Mutex` keeps one:
/// the flag is set when a holder dies holding it (in any process) or
/// panics holding it, and stays set until cleared.
#[repr(C)]
pub(crate) struct PoisonMutex {
    poisoned: std::sync::atomic::AtomicU32,
    mutex: RawMutex,
}

impl PoisonMutex {
    /// Initialises the mutex at `at`.
    ///
    /// # Safety
    /// As [`RawMutex::init`].
    pub(crate) unsafe fn init(at: *mut PoisonMutex, recursive: bool) {
        // SAFETY: per the contract; the flag starts zeroed (unpoisoned).
        unsafe { RawMutex::init(std::ptr::addr_of_mut!((*at).mutex), recursive) }
    }

    /// Locks until `deadline`: `None` when it passed, else whether the
    /// mutex is poisoned (now, or from before).
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Option<bool> {
        self.after(self.mutex.lock(deadline))
    }

    /// Locks if free: as [`Self::lock`].
    pub(crate) fn try_lock(&self) -> Option<bool> {
        self.after(self.mutex.try_lock())
    }

    fn after(&self, locked: Locked) -> Option<bool> {
        use std::sync::atomic::Ordering;
        match locked {
            Locked::TimedOut => None,
            Locked::OwnerDied => {
                self.poisoned.store(1, Ordering::Release);
                Some(true)
            }
            Locked::Yes => Some(self.poisoned.load(Ordering::Acquire) != 0),
        }
    }

    /// Unlocks, poisoning the mutex if this thread is panicking.
    ///
    /// # Safety
    /// The calling thread must hold the mutex.
    pub(crate) unsafe fn unlock(&self) {
        if std::thread::panicking() {
            self.poisoned.store(1, std::sync::atomic::Ordering::Release);
        }
        // SAFETY: per the contract.
        unsafe { self.mutex.unlock() }
    }

    /// Whether a holder died or panicked holding it.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(std::sync::atomic::Ordering::Acquire) != 0
    }

    /// Clears the poison flag.
    pub(crate) fn clear_poison(&self) {
        self.poisoned.store(0, std::sync::atomic::Ordering::Release);
    }

    /// The raw mutex, for a condition variable's wait.
    pub(crate) fn raw(&self) -> &RawMutex {
        &self.mutex
    }

    /// Records the outcome of a wait that re-locked the mutex.
    pub(crate) fn relocked(&self, locked: Locked) -> Option<bool> {
        self.after(locked)
    }
}
