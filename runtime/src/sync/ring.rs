//! Length-prefixed records in a byte ring of shared memory, addressed by
//! ever-growing byte counters (a position is `counter % capacity`). The
//! owner of the ring holds its lock around every call.

/// A record's length prefix.
pub(crate) const PREFIX: u64 = 4;

/// A prefix flag: the record continues the item before it (an item larger
/// than the ring goes in several records).
pub(crate) const CONTINUES: u32 = 1 << 31;

/// A prefix flag: more records of this item follow.
pub(crate) const MORE: u32 = 1 << 30;

/// The prefix bits that hold the length.
const LENGTH: u32 = MORE - 1;

/// The most bytes one record holds.
pub(crate) const MAX_RECORD: u64 = LENGTH as u64;

/// The ring's bytes in this process's mapping.
pub(crate) struct Ring {
    base: *mut u8,
    capacity: u64,
}

impl Ring {
    /// The ring of `capacity` bytes at `base`.
    ///
    /// # Safety
    /// `base` must map `capacity` writable bytes for as long as the ring
    /// is used, and the caller must hold the lock that orders every access
    /// to them.
    pub(crate) unsafe fn new(base: *mut u8, capacity: u64) -> Ring {
        Ring { base, capacity }
    }

    fn copy_in(&self, at: u64, bytes: &[u8]) {
        let start = (at % self.capacity) as usize;
        let first = bytes.len().min(self.capacity as usize - start);
        // SAFETY: both ranges lie in the ring (`start + first <= capacity`,
        // and the rest, which wraps to 0, is shorter than the capacity);
        // the lock is held (see `new`).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(start), first);
            std::ptr::copy_nonoverlapping(bytes[first..].as_ptr(), self.base, bytes.len() - first);
        }
    }

    fn copy_out(&self, at: u64, out: &mut [u8]) {
        let start = (at % self.capacity) as usize;
        let first = out.len().min(self.capacity as usize - start);
        let rest = out.len() - first;
        // SAFETY: as in `copy_in`.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.add(start), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(self.base, out[first..].as_mut_ptr(), rest);
        }
    }

    /// Writes a record at `at` with its `flags`; it takes
    /// `PREFIX + bytes.len()` bytes, which the caller has checked are
    /// free, and `bytes` is at most [`MAX_RECORD`] long.
    pub(crate) fn write(&self, at: u64, flags: u32, bytes: &[u8]) {
        debug_assert!(bytes.len() as u64 <= MAX_RECORD);
        self.copy_in(at, &(bytes.len() as u32 | flags).to_le_bytes());
        self.copy_in(at + PREFIX, bytes);
    }

    /// The length of the record at `at`, when it fits before `end`.
    pub(crate) fn record_len(&self, at: u64, end: u64) -> Option<u64> {
        self.record(at, end).map(|(len, _)| len)
    }

    /// The length and flags of the record at `at`, when it fits before
    /// `end`.
    pub(crate) fn record(&self, at: u64, end: u64) -> Option<(u64, u32)> {
        let mut prefix = [0u8; PREFIX as usize];
        if end.checked_sub(at)? < PREFIX {
            return None;
        }
        self.copy_out(at, &mut prefix);
        let prefix = u32::from_le_bytes(prefix);
        let len = u64::from(prefix & LENGTH);
        (at + PREFIX + len <= end).then_some((len, prefix & !LENGTH))
    }

    /// Reads the record of `len` bytes at `at` into a new buffer.
    pub(crate) fn read(&self, at: u64, len: u64) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        self.read_into(at, len, &mut out)?;
        Ok(out)
    }

    /// Appends the record of `len` bytes at `at` to `out`.
    pub(crate) fn read_into(&self, at: u64, len: u64, out: &mut Vec<u8>) -> Result<(), String> {
        out.try_reserve_exact(len as usize)
            .map_err(|_| format!("no memory for an item of {len} bytes"))?;
        let from = out.len();
        out.resize(from + len as usize, 0);
        self.copy_out(at + PREFIX, &mut out[from..]);
        Ok(())
    }

    /// How many whole records lie in `from..end`, and where the last ends
    /// (a torn one is left out).
    pub(crate) fn count(&self, from: u64, end: u64) -> (u64, u64) {
        let (mut at, mut n) = (from, 0);
        while let Some(len) = self.record_len(at, end) {
            at += PREFIX + len;
            n += 1;
        }
        (n, at)
    }
}
