//! Catching a task's panic with its message and source location.
//!
//! `catch_unwind` gives the payload but not where the panic happened, so
//! parjob installs (once, on first use) a panic hook that records the
//! location in a thread-local while a task runs.
//!
//! A panic that parjob catches is the caller's to report: it comes back
//! as `Error::Panic` with its message and location, so the hook does not
//! also print it (joblib prints nothing when the caller handles the
//! exception). The scheduler prints it at `verbose >= 1`. Any other panic
//! goes to the hook that was there before, as usual.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

/// A caught panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caught {
    /// The payload, when it was a `&str` or a `String`.
    pub message: String,
    /// `file:line:column`, when the hook saw it.
    pub location: Option<String>,
}

thread_local! {
    static LAST_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
    /// How many [`catch`]es (or [`Catching`] guards) this thread is inside.
    static CATCHING: Cell<u32> = const { Cell::new(0) };
}

/// Marks this thread as catching while it lives.
pub(crate) struct Catching;

impl Catching {
    /// This thread catches its tasks' panics until the value is dropped:
    /// one guard for many calls costs one thread-local update, not one a
    /// call.
    pub(crate) fn enter() -> Catching {
        CATCHING.with(|c| c.set(c.get() + 1));
        Catching
    }
}

impl Drop for Catching {
    fn drop(&mut self) {
        CATCHING.with(|c| c.set(c.get() - 1));
    }
}

/// Installs the location-recording hook (once; later calls are free).
pub(crate) fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if let Some(loc) = info.location() {
                let text = format!("{}:{}:{}", loc.file(), loc.line(), loc.column());
                LAST_LOCATION.with(|l| *l.borrow_mut() = Some(text));
            }
            if CATCHING.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into [`Caught`].
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Caught> {
    install_hook();
    LAST_LOCATION.with(|l| l.borrow_mut().take());
    let catching = Catching::enter();
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    drop(catching);
    outcome.map_err(|payload| Caught {
        message: payload_text(&*payload),
        location: LAST_LOCATION.with(|l| l.borrow_mut().take()),
    })
}

/// The [`Caught`] for a payload just caught on this thread, for callers
/// that use `catch_unwind` directly (after [`install_hook`]) to keep the
/// success path free of thread-local work.
pub(crate) fn caught(payload: &(dyn Any + Send)) -> Caught {
    Caught {
        message: payload_text(payload),
        location: LAST_LOCATION.with(|l| l.borrow_mut().take()),
    }
}

pub(crate) fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_and_location_are_caught() {
        let caught = catch(|| -> u32 { panic!("boom {}", 7) }).unwrap_err();
        assert_eq!(caught.message, "boom 7");
        let loc = caught.location.expect("location recorded");
        assert!(loc.starts_with(file!()), "{loc}");
        assert_eq!(catch(|| 5).unwrap(), 5);
    }
}
