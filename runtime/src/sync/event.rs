//! [`Event`] and [`Barrier`]: waiting for a signal, or for each other,
//! across threads and worker processes, on futex words.

use super::futex;
use super::mutex::deadline_after;
use super::region::{magic, Header, Region};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[repr(C)]
pub(crate) struct EventHeader {
    magic: AtomicU64,
    /// 1 once set: the futex word.
    flag: AtomicU32,
    sleepers: AtomicU32,
}

impl Header for EventHeader {
    const MAGIC: u64 = magic(b"ev");
    const NAME: &'static str = "an Event";
}

/// A flag that threads and processes wait on until someone sets it:
/// `multiprocessing.Event`.
///
/// ```
/// use parjob_runtime::sync::Event;
/// let go = Event::new()?;
/// std::thread::scope(|s| {
///     s.spawn(|| go.set());
///     go.wait();
/// });
/// assert!(go.is_set());
/// go.clear();
/// assert!(!go.wait_timeout(std::time::Duration::from_millis(1)));
/// # Ok::<(), parjob_runtime::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Event {
    region: Region<EventHeader>,
}

impl Event {
    /// A new event, not set.
    ///
    /// # Errors
    /// `Error::SharedMemory` when no shared memory can be had.
    pub fn new() -> Result<Self> {
        // SAFETY: the init writes the magic word; the rest starts zeroed.
        let region = unsafe {
            Region::create(0, |h: *mut EventHeader| {
                (*h).magic.store(EventHeader::MAGIC, Ordering::Release);
            })
        }?;
        Ok(Event { region })
    }

    fn header(&self) -> &EventHeader {
        self.region.header()
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        let h = self.header();
        h.flag.store(1, Ordering::SeqCst);
        if h.sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake(&h.flag, i32::MAX);
        }
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.header().flag.store(0, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.header().flag.load(Ordering::Acquire) != 0
    }

    /// Waits until the flag is set.
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Waits at most `timeout` for the flag; true when it is set.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(deadline_after(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let h = self.header();
        while !self.is_set() {
            h.sleepers.fetch_add(1, Ordering::SeqCst);
            let in_time = futex::wait(&h.flag, 0, deadline);
            h.sleepers.fetch_sub(1, Ordering::SeqCst);
            if !in_time {
                return self.is_set();
            }
        }
        true
    }
}

/// The bit of a barrier's `state` word that says it is broken.
const BROKEN: u32 = 1 << 31;

#[repr(C)]
pub(crate) struct BarrierHeader {
    magic: AtomicU64,
    parties: AtomicU32,
    /// Parties waiting in the current generation.
    arrived: AtomicU32,
    /// The generation (low 31 bits) and [`BROKEN`]: the futex word.
    state: AtomicU32,
}

impl Header for BarrierHeader {
    const MAGIC: u64 = magic(b"br");
    const NAME: &'static str = "a Barrier";
}

/// A rendezvous of a fixed number of parties, threads or processes:
/// `multiprocessing.Barrier`. Each calls `wait`, and all return once the
/// last arrives; then the barrier can be used again.
///
/// A party that waits too long (`wait_timeout`) *breaks* the barrier, as
/// in Python: every waiter, and every later `wait` until
/// [`Barrier::reset`], gets an error instead of waiting for a party that
/// may never come (one that died, say).
///
/// ```
/// use parjob_runtime::sync::Barrier;
/// let meet = Barrier::new(3)?;
/// let leaders: usize = std::thread::scope(|s| {
///     let all: Vec<_> = (0..3).map(|_| s.spawn(|| meet.wait().unwrap())).collect();
///     all.into_iter().map(|h| h.join().unwrap() as usize).sum()
/// });
/// assert_eq!(leaders, 1, "one party is told it completed the barrier");
/// # Ok::<(), parjob_runtime::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Barrier {
    region: Region<BarrierHeader>,
}

impl Barrier {
    /// A barrier for `parties` parties.
    ///
    /// # Errors
    /// `Error::Sync` for 0 parties; `Error::SharedMemory` when no shared
    /// memory can be had.
    pub fn new(parties: u32) -> Result<Self> {
        if parties == 0 || parties >= BROKEN {
            return Err(Error::Sync(format!("a Barrier of {parties} parties")));
        }
        // SAFETY: the init writes the magic word and the party count.
        let region = unsafe {
            Region::create(0, |h: *mut BarrierHeader| {
                (*h).parties.store(parties, Ordering::Relaxed);
                (*h).magic.store(BarrierHeader::MAGIC, Ordering::Release);
            })
        }?;
        Ok(Barrier { region })
    }

    fn header(&self) -> &BarrierHeader {
        self.region.header()
    }

    /// Waits for every party. True for the one party whose arrival
    /// completed the barrier.
    ///
    /// # Errors
    /// `Error::Sync` when the barrier is or becomes broken.
    pub fn wait(&self) -> Result<bool> {
        self.wait_until(None)
    }

    /// As [`Barrier::wait`], for at most `timeout`; when it runs out, the
    /// barrier breaks, for every party.
    ///
    /// # Errors
    /// `Error::Sync` when the barrier is or becomes broken (by this
    /// timeout too).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_until(deadline_after(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<bool> {
        let h = self.header();
        let state = h.state.load(Ordering::Acquire);
        if state & BROKEN != 0 {
            return Err(broken());
        }
        let arrived = h.arrived.fetch_add(1, Ordering::AcqRel) + 1;
        if arrived == h.parties.load(Ordering::Relaxed) {
            h.arrived.store(0, Ordering::Release);
            let next = (state + 1) & !BROKEN;
            // Fails only when the barrier broke meanwhile.
            let passed = h
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            futex::wake(&h.state, i32::MAX);
            return if passed { Ok(true) } else { Err(broken()) };
        }
        loop {
            let now = h.state.load(Ordering::Acquire);
            if now & BROKEN != 0 {
                return Err(broken());
            }
            if now != state {
                return Ok(false);
            }
            if !futex::wait(&h.state, state, deadline) {
                self.abort();
            }
        }
    }

    /// Breaks the barrier: every waiter, and every later `wait`, gets an
    /// error until [`Barrier::reset`].
    pub fn abort(&self) {
        let h = self.header();
        h.state.fetch_or(BROKEN, Ordering::AcqRel);
        futex::wake(&h.state, i32::MAX);
    }

    /// Mends a broken barrier, empty (Python's `reset`, once no party
    /// waits any more).
    pub fn reset(&self) {
        let h = self.header();
        h.arrived.store(0, Ordering::Release);
        let state = h.state.load(Ordering::Acquire);
        h.state.store((state + 1) & !BROKEN, Ordering::Release);
        futex::wake(&h.state, i32::MAX);
    }

    /// Whether it is broken.
    pub fn is_broken(&self) -> bool {
        self.header().state.load(Ordering::Acquire) & BROKEN != 0
    }

    /// How many parties it waits for.
    pub fn parties(&self) -> u32 {
        self.header().parties.load(Ordering::Relaxed)
    }
}

fn broken() -> Error {
    Error::Sync(
        "the Barrier is broken: a party timed out or called abort (reset it to use it again)"
            .into(),
    )
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("broken", &self.is_broken())
            .finish()
    }
}
