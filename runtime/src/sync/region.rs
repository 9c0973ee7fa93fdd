//! A [`Region`]: one small writable shared-memory segment laid out as a
//! `#[repr(C)]` header of atomics and process-shared pthread objects,
//! optionally followed by data. Every primitive of this module is a
//! region; cloning a handle clones an `Arc`, and a handle encoded as a
//! task argument for a worker process passes the segment's descriptor
//! beside the batch (the same path as a `SharedSliceMut`), so the worker
//! maps the same memory.

use crate::error::{Error, Result};
use crate::shm::{self, Segment};
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A header: a `#[repr(C)]` struct whose first field is an `AtomicU64`
/// holding [`Header::MAGIC`], which says which primitive the segment holds,
/// so a handle of one kind cannot decode another's memory.
pub(crate) trait Header: Sync + 'static {
    /// The kind's tag, `b"pjsyncXX"` read as a number.
    const MAGIC: u64;
    /// The user-facing name, for errors ("a Lock").
    const NAME: &'static str;
}

/// A typed view of a shared segment whose first bytes are an `H`.
pub(crate) struct Region<H> {
    segment: Arc<Segment>,
    header: PhantomData<H>,
}

impl<H> Clone for Region<H> {
    fn clone(&self) -> Self {
        Region {
            segment: Arc::clone(&self.segment),
            header: PhantomData,
        }
    }
}

impl<H: Header> Region<H> {
    /// A new zeroed region of a header and `data` bytes after it, with
    /// the header written by `init` (which gets the zeroed header).
    ///
    /// # Safety
    /// `init` must leave a valid `H` at the pointer (zeroed memory need
    /// not be one: a pthread object must be initialised), including its
    /// magic word.
    pub(crate) unsafe fn create(data: usize, init: impl FnOnce(*mut H)) -> Result<Region<H>> {
        let len = std::mem::size_of::<H>()
            .checked_add(data)
            .ok_or_else(|| Error::SharedMemory(format!("{} of {data} bytes", H::NAME)))?;
        let segment = Segment::create_writable(len).map_err(Error::SharedMemory)?;
        let (ptr, _) = segment.raw();
        // The mapping is page-aligned, which suits every header.
        init(ptr.cast::<H>());
        Ok(Region {
            segment: Arc::new(segment),
            header: PhantomData,
        })
    }

    /// The header.
    pub(crate) fn header(&self) -> &H {
        let (ptr, _) = self.segment.raw();
        // SAFETY: the segment is at least `size_of::<H>()` bytes (checked
        // when made or adopted), page-aligned, and holds an initialised
        // `H`: `create` initialised it, or `adopt` checked its magic word
        // in a segment its creator initialised before passing it. `H` is
        // made of atomics and pthread objects in `UnsafeCell`s, so shared
        // references to it stay sound while other processes write it.
        unsafe { &*ptr.cast::<H>() }
    }

    /// The data bytes after the header: their start and length. Access to
    /// them is synchronised by the primitive that owns the region.
    pub(crate) fn data(&self) -> (*mut u8, usize) {
        let (ptr, len) = self.segment.raw();
        let at = std::mem::size_of::<H>();
        // SAFETY: `len >= size_of::<H>()`, so the offset stays inside the
        // mapping.
        (unsafe { ptr.add(at) }, len - at)
    }

    /// A region a worker received from its parent, checked to be a
    /// writable segment large enough for `H` that holds `H`'s magic word.
    fn adopt(id: u64) -> std::result::Result<Region<H>, String> {
        let segment = shm::worker_segment(id)?;
        let (_, len) = segment.raw();
        if !segment.is_writable() || len < std::mem::size_of::<H>() {
            return Err(format!("segment {id} is not {}", H::NAME));
        }
        let region = Region {
            segment,
            header: PhantomData,
        };
        // Read the magic word alone before trusting the rest.
        let (ptr, _) = region.segment.raw();
        // SAFETY: the segment holds at least 8 aligned bytes; an atomic
        // read of them is sound whatever they hold.
        let magic = unsafe { (*ptr.cast::<AtomicU64>()).load(Ordering::Acquire) };
        if magic != H::MAGIC {
            return Err(format!("segment {id} does not hold {}", H::NAME));
        }
        Ok(region)
    }
}

impl<H: Header> Serialize for Region<H> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if !shm::note_sent(&self.segment) {
            return Err(S::Error::custom(format!(
                "{} can only be sent to a worker process, as a task argument: \
                 it is shared memory, not a value to store or hash",
                H::NAME
            )));
        }
        (self.segment.id(), H::MAGIC).serialize(s)
    }
}

impl<'de, H: Header> Deserialize<'de> for Region<H> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (id, magic) = <(u64, u64)>::deserialize(d)?;
        if magic != H::MAGIC {
            return Err(D::Error::custom(format!(
                "a handle of another kind where {} was expected",
                H::NAME
            )));
        }
        Region::adopt(id).map_err(D::Error::custom)
    }
}

/// The magic word of a kind: `b"pjsync"` and two letters.
pub(crate) const fn magic(kind: &[u8; 2]) -> u64 {
    u64::from_le_bytes([b'p', b'j', b's', b'y', b'n', b'c', kind[0], kind[1]])
}
