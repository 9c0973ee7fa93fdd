//! The time the cache goes by for expiry and age limits: the system clock,
//! which a test can move ahead on its own thread instead of sleeping.

use std::cell::Cell;
use std::time::{Duration, SystemTime};

thread_local! {
    static AHEAD: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// Now, as the cache on this thread sees it.
pub(crate) fn now() -> SystemTime {
    SystemTime::now() + AHEAD.with(Cell::get)
}

/// Moves this thread's cache clock ahead by `by` (tests of expiry).
pub fn advance(by: Duration) {
    AHEAD.with(|ahead| ahead.set(ahead.get() + by));
}
