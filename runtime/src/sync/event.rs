//! [`Event`]: waiting for a signal across threads and worker processes,
//! on a futex word.

use super::futex;
use super::mutex::deadline_after;
use super::region::{magic, Header, Region};
use crate::error::Result;
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

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}
