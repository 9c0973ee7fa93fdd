//! An append-only log of records in shared memory behind one robust
//! mutex: the store of [`List`](super::List) and [`Map`](super::Map).
//!
//! An append writes its record past the end and then commits it with one
//! store of `used`, so a writer killed midway leaves the log as it was.
//! The log's memory is reserved whole when it is made but, being a
//! `memfd`, takes pages only as records reach them.

use super::mutex::{Locked, RawMutex};
use super::region::{Header, Region};
use super::ring::{Ring, PREFIX};
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};

/// The reservation of a log made without a size: 64 MiB.
pub const DEFAULT_LOG_BYTES: usize = 64 << 20;

#[repr(C)]
pub(crate) struct LogHeader {
    magic: AtomicU64,
    mutex: RawMutex,
    capacity: AtomicU64,
    /// Bytes of committed records.
    used: AtomicU64,
    /// Records committed (recounted after a death).
    records: AtomicU64,
}

/// The log's lock, held.
pub(crate) struct LogHeld<'a> {
    header: &'a LogHeader,
    ring: Ring,
}

impl Drop for LogHeld<'_> {
    fn drop(&mut self) {
        // SAFETY: a `LogHeld` exists only while its thread holds the mutex.
        unsafe { self.header.mutex.unlock() }
    }
}

/// Makes a log region of header type `H` (a `repr(transparent)` wrapper
/// of [`LogHeader`]) with room for `capacity` bytes of records.
pub(crate) fn create<H: Header>(capacity: usize) -> Result<Region<H>> {
    if capacity < 8 {
        return Err(Error::Sync(format!("{} of {capacity} bytes", H::NAME)));
    }
    // SAFETY: `H` is a transparent `LogHeader`; the init initialises the
    // mutex and writes the capacity and magic word of the zeroed header.
    unsafe {
        Region::create(capacity, |h: *mut H| {
            let h = h.cast::<LogHeader>();
            RawMutex::init(std::ptr::addr_of_mut!((*h).mutex), false);
            (*h).capacity.store(capacity as u64, Ordering::Relaxed);
            (*h).magic.store(H::MAGIC, Ordering::Release);
        })
    }
}

/// Checks a decoded log region: its capacity must fit its memory.
pub(crate) fn check<H: Header>(region: &Region<H>) -> std::result::Result<(), String> {
    let capacity = header(region).capacity.load(Ordering::Relaxed);
    if capacity == 0 || capacity > region.data().1 as u64 {
        return Err(format!("{} whose log does not fit its memory", H::NAME));
    }
    Ok(())
}

fn header<H: Header>(region: &Region<H>) -> &LogHeader {
    // SAFETY: every log header type is a transparent `LogHeader`.
    unsafe { &*(region.header() as *const H).cast::<LogHeader>() }
}

/// Takes the log's lock; a holder's death is repaired by recounting.
pub(crate) fn lock<H: Header>(region: &Region<H>) -> LogHeld<'_> {
    let header = header(region);
    let locked = header.mutex.lock(None);
    let capacity = header.capacity.load(Ordering::Relaxed);
    // SAFETY: the log is the region's data, `capacity` bytes long
    // (checked when made or decoded); positions stay under the capacity,
    // so the ring never wraps. The lock is held.
    let ring = unsafe { Ring::new(region.data().0, capacity) };
    let held = LogHeld { header, ring };
    if locked == Locked::OwnerDied {
        let used = header.used.load(Ordering::Relaxed);
        let (records, end) = held.ring.count(0, used);
        header.records.store(records, Ordering::Relaxed);
        header.used.store(end, Ordering::Relaxed);
    }
    held
}

impl LogHeld<'_> {
    /// Appends one record.
    pub(crate) fn append(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let h = self.header;
        let used = h.used.load(Ordering::Relaxed);
        let capacity = h.capacity.load(Ordering::Relaxed);
        let need = PREFIX + bytes.len() as u64;
        if bytes.len() > u32::MAX as usize || capacity - used < need {
            return Err(Error::Sync(format!(
                "the {name} is full: {used} of its {capacity} bytes are used and the entry \
                 needs {need}; make it with {name}::with_capacity"
            )));
        }
        self.ring.write(used, 0, bytes);
        h.used.store(used + need, Ordering::Release);
        h.records.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How many records it holds.
    pub(crate) fn records(&self) -> u64 {
        self.header.records.load(Ordering::Relaxed)
    }

    /// Every record's bytes, oldest first.
    pub(crate) fn for_each(&self, mut each: impl FnMut(Vec<u8>) -> Result<()>) -> Result<()> {
        let used = self.header.used.load(Ordering::Relaxed);
        let mut at = 0;
        while let Some(len) = self.ring.record_len(at, used) {
            each(self.ring.read(at, len).map_err(Error::Sync)?)?;
            at += PREFIX + len;
        }
        Ok(())
    }

    /// Writes a record past the end without committing it (a test of a
    /// writer that dies midway). It writes only what fits.
    #[cfg(test)]
    pub(crate) fn write_uncommitted(&self, bytes: &[u8]) {
        let used = self.header.used.load(Ordering::Relaxed);
        let room = self.header.capacity.load(Ordering::Relaxed) - used;
        if PREFIX + bytes.len() as u64 <= room {
            self.ring.write(used, 0, bytes);
        }
    }

    /// Forgets every record.
    pub(crate) fn clear(&self) {
        self.header.used.store(0, Ordering::Release);
        self.header.records.store(0, Ordering::Relaxed);
    }
}
