//! [`AsyncResult`]: the handle of a pool submission's result
//! (`multiprocessing.pool.AsyncResult`), and the slot the pool fills.

use crate::error::{Error, Result};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// A callback run with a submission's result once it is set.
pub(crate) type OnDone<T> = Box<dyn FnOnce(&Result<T>) + Send>;

/// Where a submission's result lands.
pub(crate) struct Slot<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    /// The pool's callback thread, when it is the one that sets this
    /// result: a wait there could never end.
    set_on: OnceLock<ThreadId>,
}

/// How a wait for a slot ended.
#[derive(PartialEq, Eq)]
enum Waited {
    Set,
    TimedOut,
    /// The waiter is the thread that must set the result.
    WouldDeadlock,
}

fn would_deadlock() -> Error {
    Error::Pool(
        "a callback waits for a result that only the pool's callback thread sets, and that \
         thread is the one running the callback: it would wait for ever. Wait for it \
         outside the callback, or chain the work in the callback of that result"
            .into(),
    )
}

struct State<T> {
    value: Option<Result<T>>,
    /// Whether the value was set (it stays set after `get` takes it).
    done: bool,
    /// Whether the value is known: set as `set` begins, before the
    /// callbacks run (a concurrent.futures future is done by then).
    ended: bool,
    /// The thread running `set`, while it runs the callbacks.
    setter: Option<std::thread::ThreadId>,
    /// Whether it ended in an error.
    failed: bool,
    /// Whether it ended as cancelled.
    cancelled: bool,
    /// The value is lent to a late `add_done_callback`, which runs with no
    /// lock held: takers wait for it to come back.
    lent: bool,
    /// Async waiters.
    wakers: Vec<Waker>,
    /// Callbacks to run once done, on the pool's callback thread.
    on_done: Vec<OnDone<T>>,
}

impl<T> Slot<T> {
    pub(crate) fn new() -> Arc<Slot<T>> {
        Arc::new(Slot {
            state: Mutex::new(State {
                value: None,
                done: false,
                ended: false,
                setter: None,
                failed: false,
                cancelled: false,
                lent: false,
                wakers: Vec::new(),
                on_done: Vec::new(),
            }),
            ready: Condvar::new(),
            set_on: OnceLock::new(),
        })
    }

    /// Records that `thread` (a pool's callback thread) sets this result.
    pub(crate) fn set_on(&self, thread: ThreadId) {
        let _ = self.set_on.set(thread);
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the result, after running the callbacks registered so far
    /// (so `ready` turns true only once they ran, as in CPython), and
    /// wakes every waiter. A callback that panics is logged.
    pub(crate) fn set(&self, value: Result<T>) {
        let callbacks = {
            let mut state = self.lock();
            state.ended = true;
            state.setter = Some(std::thread::current().id());
            std::mem::take(&mut state.on_done)
        };
        for callback in callbacks {
            run_logged(|| callback(&value));
        }
        let mut state = self.lock();
        // A callback added while the others ran: run it now.
        for callback in std::mem::take(&mut state.on_done) {
            run_logged(|| callback(&value));
        }
        state.failed = value.is_err();
        state.cancelled = matches!(value, Err(Error::Cancelled));
        state.value = Some(value);
        state.done = true;
        for waker in state.wakers.drain(..) {
            waker.wake();
        }
        drop(state);
        self.ready.notify_all();
    }

    /// Registers `callback` to run when the result is set, or runs it now
    /// when it is set already, with no lock held (so it may ask the result
    /// anything, as concurrent.futures allows).
    pub(crate) fn on_done(&self, callback: OnDone<T>) {
        let mut state = self.lock();
        // Ended, with its callbacks running on another thread: it is done
        // for the caller (`Future::done`), so this one runs here too, once
        // they have.
        let here = Some(std::thread::current().id());
        while state.ended && !state.done && state.setter != here {
            state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if !state.done {
            state.on_done.push(callback);
            return;
        }
        while state.lent {
            state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        let Some(value) = state.value.take() else {
            return; // taken by `get` already: nothing to show it
        };
        state.lent = true;
        drop(state);
        run_logged(|| callback(&value));
        let mut state = self.lock();
        state.value = Some(value);
        state.lent = false;
        let wakers = std::mem::take(&mut state.wakers);
        drop(state);
        self.ready.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Waits until set (and not lent) or until `deadline`.
    fn wait_until(&self, deadline: Option<Instant>) -> Waited {
        let mut state = self.lock();
        if !state.done && self.set_on.get() == Some(&std::thread::current().id()) {
            return Waited::WouldDeadlock;
        }
        while !state.done || state.lent {
            match deadline {
                None => state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Waited::TimedOut;
                    }
                    state = self
                        .ready
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        Waited::Set
    }

    /// Whether its value is known, though its callbacks may still run
    /// (`Future::done`; a pool's `ready` waits for the callbacks).
    pub(crate) fn has_ended(&self) -> bool {
        self.lock().ended
    }

    /// Whether it ended as cancelled.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    fn take(&self) -> Result<T> {
        let mut state = self.lock();
        while state.lent {
            state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state
            .value
            .take()
            .unwrap_or_else(|| Err(Error::Pool("the result was taken already".into())))
    }
}

/// Runs a user callback, logging a panic instead of spreading it: a
/// callback's bug must not take down the pool.
pub(crate) fn run_logged(callback: impl FnOnce()) {
    if let Err(caught) = crate::panic::catch(std::panic::AssertUnwindSafe(callback)) {
        tracing::error!(
            target: "parjob::pool",
            location = caught.location.as_deref().unwrap_or("unknown"),
            "a pool callback panicked: {}",
            caught.message
        );
    }
}

/// A result that a pool is computing: `multiprocessing.pool.AsyncResult`.
/// `get` waits for it; `ready` and `successful` ask without waiting. It
/// is also a `std::future::Future`, for async code.
#[must_use = "the result is lost unless someone gets it"]
pub struct AsyncResult<T> {
    slot: Arc<Slot<T>>,
}

impl<T> AsyncResult<T> {
    pub(crate) fn new(slot: Arc<Slot<T>>) -> Self {
        AsyncResult { slot }
    }

    /// The slot it reads.
    pub(crate) fn slot(&self) -> &Arc<Slot<T>> {
        &self.slot
    }

    /// Waits for the result and returns it: the value, or the error of the
    /// task (a panic, a worker's death, ...).
    ///
    /// # Errors
    /// The task's error; and `Error::Pool` at once when called from a
    /// callback for a result that only that callback's thread can set
    /// (a result with callbacks of the same pool, or an executor's
    /// future): as in CPython, callbacks run one at a time on one thread,
    /// so that wait could never end, and it is refused instead of hanging.
    pub fn get(self) -> Result<T> {
        match self.slot.wait_until(None) {
            Waited::WouldDeadlock => Err(would_deadlock()),
            _ => self.slot.take(),
        }
    }

    /// As [`AsyncResult::get`], waiting at most `timeout`; when it runs
    /// out, the handle comes back as `Err`, to wait again.
    pub fn get_timeout(self, timeout: Duration) -> std::result::Result<Result<T>, Self> {
        match self.slot.wait_until(Instant::now().checked_add(timeout)) {
            Waited::Set => Ok(self.slot.take()),
            Waited::WouldDeadlock => Ok(Err(would_deadlock())),
            Waited::TimedOut => Err(self),
        }
    }

    /// Waits until the result is ready. From a callback, for a result that
    /// only that callback's thread sets (see [`AsyncResult::get`]), it
    /// returns at once, not ready, and logs an error instead of hanging.
    pub fn wait(&self) {
        if self.slot.wait_until(None) == Waited::WouldDeadlock {
            tracing::error!(target: "parjob::pool", "{}", would_deadlock());
        }
    }

    /// Waits at most `timeout`; true when the result is ready (false at
    /// once where [`AsyncResult::wait`] would return at once).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slot.wait_until(Instant::now().checked_add(timeout)) == Waited::Set
    }

    /// Whether the result is ready.
    pub fn ready(&self) -> bool {
        self.slot.lock().done
    }

    /// Whether it succeeded: `None` until it is ready.
    pub fn successful(&self) -> Option<bool> {
        let state = self.slot.lock();
        state.done.then_some(!state.failed)
    }
}

impl<T> Future for AsyncResult<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let mut state = self.slot.lock();
        if state.done && !state.lent {
            let value = state.value.take();
            return Poll::Ready(
                value.unwrap_or_else(|| Err(Error::Pool("the result was taken already".into()))),
            );
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl<T> std::fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}
