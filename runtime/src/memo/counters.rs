//! A function's cache statistics: [`CacheStats`] as callers see them, and
//! the [`Counters`] every call of one function shares (which, in a worker
//! process, also report each call for the parent's `stats()`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Why the last call of a function missed the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissReason {
    /// These arguments were never computed (or the entry was cleared).
    NoEntry,
    /// The function's code changed since its entries were written; they
    /// were removed.
    CodeChanged,
    /// The entry was older than `expires_after`.
    Expired,
    /// The entry was torn, truncated or failed its checksum; it was
    /// recomputed and replaced.
    Corrupt,
    /// The entry was evicted to keep the cache under `bytes_limit`.
    Evicted,
    /// The cache could not be read or has no directory; the result was
    /// computed without it.
    Unavailable,
    /// The cache is turned off ([`Memory::disabled`](super::Memory::disabled), joblib's
    /// `Memory(location=None)`): every call computes.
    Disabled,
}

/// Hits and misses of one function, and why the last miss missed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Calls answered from the cache.
    pub hits: u64,
    /// Calls that ran the function.
    pub misses: u64,
    /// Why the most recent miss missed.
    pub last_miss: Option<MissReason>,
}

/// Counters shared by every call of one function.
#[derive(Default)]
pub(crate) struct Counters {
    /// The function's name, under which a worker reports its counts.
    pub(super) name: &'static str,
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) last_miss: Mutex<Option<MissReason>>,
    pub(super) warned: AtomicBool,
    pub(super) unflushed_bytes: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            last_miss: *self.last_miss.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    pub(super) fn missed(&self, reason: MissReason) {
        self.misses.fetch_add(1, Ordering::Relaxed);
        *self.last_miss.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        if crate::backend::process::worker::is_worker() {
            crate::wire::tally::record(self.name, false);
        }
    }

    pub(super) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        if crate::backend::process::worker::is_worker() {
            crate::wire::tally::record(self.name, true);
        }
    }

    /// Warns about an unusable cache once per function.
    pub(super) fn warn_once(&self, name: &str, what: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                function = name,
                "parjob cache unavailable, computing without it: {what}"
            );
            // Without a subscriber the event shows nowhere: say it anyway.
            if !tracing::dispatcher::has_been_set() {
                eprintln!("[parjob] cache unavailable for `{name}`, computing without it: {what}");
            }
        }
    }
}
