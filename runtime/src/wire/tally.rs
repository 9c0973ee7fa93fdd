//! Cache statistics that cross the wire: a `#[memoize]` function that runs
//! in a worker process counts its hits and misses there, and the parent's
//! `f::stats()` must include them.
//!
//! In a worker, the cache records each hit and miss here by function name;
//! after each batch the serve loop takes what accumulated and sends it as
//! one `Tally` frame before the batch's `Done`. The parent's reader thread
//! adds each frame to its own table, which `stats()` adds to the counts
//! made in the parent itself.

use super::codec;
use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Mutex;

/// Hits and misses by function name.
type Counts = HashMap<String, (u64, u64)>;

/// Counted in this worker and not yet sent.
static PENDING: Mutex<Option<Counts>> = Mutex::new(None);

/// Received from workers (in the parent).
static RECEIVED: Mutex<Option<Counts>> = Mutex::new(None);

fn add(table: &Mutex<Option<Counts>>, name: &str, hits: u64, misses: u64) {
    let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
    let entry = table
        .get_or_insert_with(HashMap::new)
        .entry(name.to_string())
        .or_default();
    entry.0 += hits;
    entry.1 += misses;
}

/// Counts one call of the memoized function `name` in this worker.
pub(crate) fn record(name: &str, hit: bool) {
    add(&PENDING, name, u64::from(hit), u64::from(!hit));
}

/// Writes what this worker counted since the last call as one frame, if
/// anything.
pub(crate) fn write_pending(w: &mut dyn Write) -> io::Result<()> {
    let taken = PENDING.lock().unwrap_or_else(|p| p.into_inner()).take();
    match taken {
        Some(counts) if !counts.is_empty() => {
            let counts: Vec<(String, u64, u64)> =
                counts.into_iter().map(|(n, (h, m))| (n, h, m)).collect();
            super::write_kind(w, super::KIND_TALLY, &counts)
        }
        _ => Ok(()),
    }
}

/// Takes a frame's counts into the parent's table: true when the payload
/// was a tally frame.
pub(crate) fn absorb(payload: &[u8]) -> bool {
    let Some((&super::KIND_TALLY, body)) = payload.split_first() else {
        return false;
    };
    if let Ok(counts) = codec::decode::<Vec<(String, u64, u64)>>(body) {
        for (name, hits, misses) in counts {
            add(&RECEIVED, &name, hits, misses);
        }
    }
    true
}

/// The hits and misses workers reported for `name`.
pub(crate) fn received(name: &str) -> (u64, u64) {
    RECEIVED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|t| t.get(name).copied())
        .unwrap_or_default()
}
