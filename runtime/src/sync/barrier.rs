//! [`Barrier`]: a rendezvous of a fixed number of parties, threads or
//! processes, on a futex word, with an optional action run when the
//! barrier trips, before anyone is released.
//!
//! The futex word holds the generation (30 bits), a broken bit and a
//! tripping bit. A party waits until the generation changes: a new
//! generation means it passed, the broken bit means it failed.
//! [`Barrier::reset`] also starts a new generation, and records the
//! generation it abandoned in `reset_from`, so that the parties that were
//! waiting in it fail, as CPython's do.
//!
//! The action is a Rust closure, so it lives in the process that made the
//! barrier. A party there that trips the barrier runs it itself. A party in
//! another process sets the tripping bit instead, and the creator's action
//! thread runs the action and starts the next generation.

use super::futex;
use super::mutex::deadline_after;
use super::region::{magic, Header, Region};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The bit of a barrier's `state` word that says it is broken.
const BROKEN: u32 = 1 << 31;

/// The bit that asks the creator's action thread to run the action.
const TRIPPING: u32 = 1 << 30;

/// The generation's bits.
const GENERATION: u32 = TRIPPING - 1;

/// What `reset_from` holds before any reset: no generation is this.
const NEVER_RESET: u32 = u32::MAX;

#[repr(C)]
pub(crate) struct BarrierHeader {
    magic: AtomicU64,
    parties: AtomicU32,
    /// Parties waiting in the current generation.
    arrived: AtomicU32,
    /// The generation (low 31 bits) and [`BROKEN`]: the futex word.
    state: AtomicU32,
    /// The generation the last [`Barrier::reset`] abandoned.
    reset_from: AtomicU32,
    /// 1 when the barrier has an action (in its creator's process).
    has_action: AtomicU32,
    /// 1 once the action has panicked; the barrier is then broken.
    action_failed: AtomicU32,
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
/// may never come (one that died, say). `reset` itself fails the parties
/// waiting at that moment, and leaves the barrier empty and usable.
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
pub struct Barrier {
    region: Region<BarrierHeader>,
    /// The action, in the process that made the barrier; a copy sent to a
    /// worker has none and leaves the action to the creator's thread.
    #[serde(skip)]
    action: Option<Arc<ActionHost>>,
}

/// A barrier's action and the thread that runs it for parties in other
/// processes. Dropping the last handle that holds it ends the thread.
struct ActionHost {
    action: Arc<dyn Fn() + Send + Sync>,
    stop: Arc<AtomicBool>,
    region: Region<BarrierHeader>,
}

impl Drop for ActionHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        futex::wake(&self.region.header().state, i32::MAX);
    }
}

impl Barrier {
    /// A barrier for `parties` parties.
    ///
    /// # Errors
    /// `Error::Sync` for 0 parties; `Error::SharedMemory` when no shared
    /// memory can be had.
    pub fn new(parties: u32) -> Result<Self> {
        Self::create(parties, false)
    }

    /// A barrier whose `action` runs once each time it trips, after the
    /// last party arrives and before any is released (`Barrier(parties,
    /// action)`). A party in this process that trips it runs the action
    /// itself; for a party in a worker process, a thread of this process
    /// runs it, so this process must outlive the barrier's use (the usual
    /// case: the parent that made it). If the action panics, the barrier
    /// breaks, and the tripping party's error carries the panic.
    ///
    /// ```
    /// use parjob_runtime::sync::Barrier;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// let trips = Arc::new(AtomicU32::new(0));
    /// let t = trips.clone();
    /// let meet = Barrier::with_action(2, move || {
    ///     t.fetch_add(1, Ordering::SeqCst);
    /// })?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| meet.wait().unwrap());
    ///     meet.wait().unwrap();
    ///     assert_eq!(trips.load(Ordering::SeqCst), 1, "it ran before the release");
    /// });
    /// # Ok::<(), parjob_runtime::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Barrier::new`], and `Error::Sync` when the action's thread
    /// cannot start.
    pub fn with_action(parties: u32, action: impl Fn() + Send + Sync + 'static) -> Result<Self> {
        let mut barrier = Self::create(parties, true)?;
        let host = Arc::new(ActionHost {
            action: Arc::new(action),
            stop: Arc::new(AtomicBool::new(false)),
            region: barrier.region.clone(),
        });
        let (region, action, stop) = (
            barrier.region.clone(),
            host.action.clone(),
            host.stop.clone(),
        );
        std::thread::Builder::new()
            .name("parjob-barrier-action".into())
            .spawn(move || serve_action(&region, &*action, &stop))
            .map_err(|e| Error::Sync(format!("starting the Barrier's action thread: {e}")))?;
        barrier.action = Some(host);
        Ok(barrier)
    }

    fn create(parties: u32, has_action: bool) -> Result<Self> {
        if parties == 0 || parties > GENERATION {
            return Err(Error::Sync(format!("a Barrier of {parties} parties")));
        }
        // SAFETY: the init writes every field that does not start at zero.
        let region = unsafe {
            Region::create(0, |h: *mut BarrierHeader| {
                (*h).parties.store(parties, Ordering::Relaxed);
                (*h).reset_from.store(NEVER_RESET, Ordering::Relaxed);
                (*h).has_action
                    .store(u32::from(has_action), Ordering::Relaxed);
                (*h).magic.store(BarrierHeader::MAGIC, Ordering::Release);
            })
        }?;
        Ok(Barrier {
            region,
            action: None,
        })
    }

    fn header(&self) -> &BarrierHeader {
        self.region.header()
    }

    /// Waits for every party. True for the one party whose arrival
    /// completed the barrier.
    ///
    /// # Errors
    /// `Error::Sync` when the barrier is or becomes broken, or is reset
    /// while this party waits; the action's panic in the party that ran
    /// it.
    pub fn wait(&self) -> Result<bool> {
        self.wait_until(None)
    }

    /// As [`Barrier::wait`], for at most `timeout`; when it runs out, the
    /// barrier breaks, for every party.
    ///
    /// # Errors
    /// As [`Barrier::wait`], and when this timeout runs out.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_until(deadline_after(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<bool> {
        let h = self.header();
        let state = h.state.load(Ordering::Acquire);
        if state & (BROKEN | TRIPPING) != 0 {
            return Err(broken(h));
        }
        let arrived = h.arrived.fetch_add(1, Ordering::AcqRel) + 1;
        let tripped = arrived == h.parties.load(Ordering::Relaxed);
        if tripped {
            match &self.action {
                Some(host) => return trip(h, state, Some(&*host.action)),
                None if h.has_action.load(Ordering::Relaxed) == 0 => return trip(h, state, None),
                // The creator's action thread runs it and releases us all.
                None => {
                    let _ = h.state.compare_exchange(
                        state,
                        state | TRIPPING,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    futex::wake(&h.state, i32::MAX);
                }
            }
        }
        loop {
            let now = h.state.load(Ordering::Acquire);
            if now & BROKEN != 0 {
                return Err(broken(h));
            }
            if now & GENERATION != state & GENERATION {
                return if h.reset_from.load(Ordering::Acquire) == state {
                    Err(Error::Sync(
                        "the Barrier was reset while this party waited".into(),
                    ))
                } else {
                    Ok(tripped)
                };
            }
            if !futex::wait(&h.state, now, deadline) {
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

    /// Returns the barrier to its empty state (`reset`): the parties
    /// waiting now fail with a reset error, a broken barrier is mended,
    /// and later waits form a new generation.
    pub fn reset(&self) {
        let h = self.header();
        h.arrived.store(0, Ordering::Release);
        h.action_failed.store(0, Ordering::Release);
        let state = h.state.load(Ordering::Acquire);
        h.reset_from.store(state & GENERATION, Ordering::Release);
        h.state.store((state + 1) & GENERATION, Ordering::Release);
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

    /// How many parties are waiting in the current generation
    /// (`n_waiting`); 0 while it is broken.
    pub fn n_waiting(&self) -> u32 {
        if self.is_broken() {
            return 0;
        }
        self.header().arrived.load(Ordering::Acquire)
    }
}

/// The last party's part, or the action thread's for it: runs the action,
/// then starts the next generation, which releases the others.
fn trip(h: &BarrierHeader, state: u32, action: Option<&(dyn Fn() + Send + Sync)>) -> Result<bool> {
    let state = state & GENERATION;
    if let Some(action) = action {
        if let Err(caught) = crate::panic::catch(action) {
            h.action_failed.store(1, Ordering::Release);
            h.state.fetch_or(BROKEN, Ordering::AcqRel);
            futex::wake(&h.state, i32::MAX);
            return Err(Error::Sync(format!(
                "the Barrier's action panicked, so the barrier is broken: {}{}",
                caught.message,
                caught
                    .location
                    .map(|at| format!(" (at {at})"))
                    .unwrap_or_default()
            )));
        }
    }
    h.arrived.store(0, Ordering::Release);
    let next = (state + 1) & GENERATION;
    // Fails only when the barrier broke or was reset meanwhile.
    let passed = [state, state | TRIPPING].into_iter().any(|from| {
        h.state
            .compare_exchange(from, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    });
    futex::wake(&h.state, i32::MAX);
    if passed {
        Ok(true)
    } else {
        Err(broken(h))
    }
}

/// The action thread: runs the action whenever a party in another process
/// trips the barrier, until the last handle holding the action is dropped.
fn serve_action(
    region: &Region<BarrierHeader>,
    action: &(dyn Fn() + Send + Sync),
    stop: &AtomicBool,
) {
    let h = region.header();
    while !stop.load(Ordering::Acquire) {
        let now = h.state.load(Ordering::Acquire);
        if now & TRIPPING != 0 && now & BROKEN == 0 {
            let _ = trip(h, now, Some(action));
            continue;
        }
        futex::wait(&h.state, now, None);
    }
}

fn broken(h: &BarrierHeader) -> Error {
    Error::Sync(if h.action_failed.load(Ordering::Acquire) != 0 {
        "the Barrier is broken: its action panicked (reset it to use it again)".into()
    } else {
        "the Barrier is broken: a party timed out or called abort (reset it to use it again)".into()
    })
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.is_broken())
            .finish()
    }
}
