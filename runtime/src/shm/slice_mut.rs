//! Output buffers in shared memory: [`SharedSliceMut`] and the disjoint
//! [`ChunkMut`]s it lends to jobs, joblib's `mmap_mode="r+"` pattern of
//! writing results in place, without overlapping writes.

use super::segment::Segment;
use super::share::{self, Lent};
use crate::error::{Error, Result};
use crate::plain::{self, Plain};
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// A buffer of numbers in shared memory that jobs write into, each through
/// its own [`ChunkMut`]: worker processes write straight into it, and the
/// parent reads the results once the jobs are done.
///
/// The chunks are disjoint by construction, and the buffer cannot be read
/// or lent again while any chunk is held (a job that has not answered, or
/// a thread still running past a timeout): [`Self::as_slice`] then says so.
///
/// ```
/// use parjob_runtime::shm::SharedSliceMut;
/// let mut out = SharedSliceMut::<u32>::zeroed(10).unwrap();
/// for mut chunk in out.chunks(4).unwrap() {
///     let start = chunk.start() as u32;
///     for (i, x) in chunk.iter_mut().enumerate() {
///         *x = start + i as u32;
///     }
/// }
/// assert_eq!(out.as_slice().unwrap(), &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
/// ```
pub struct SharedSliceMut<T> {
    segment: Arc<Segment>,
    /// One clone per chunk held anywhere in this process or in flight.
    lent: Arc<Lent>,
    len: usize,
    element: PhantomData<T>,
}

impl<T: Plain> SharedSliceMut<T> {
    /// A buffer of `len` zeros.
    pub fn zeroed(len: usize) -> Result<Self> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::SharedMemory(format!("{len} numbers do not fit in memory")))?;
        let segment = Segment::create_writable(bytes).map_err(Error::SharedMemory)?;
        Ok(SharedSliceMut {
            segment: Arc::new(segment),
            lent: Arc::new(Lent),
            len,
            element: PhantomData,
        })
    }

    /// The buffer cut into disjoint chunks of `chunk_len` numbers (the last
    /// may be shorter), to hand one to each job.
    ///
    /// # Errors
    /// When chunks lent before are still held.
    ///
    /// # Panics
    /// When `chunk_len` is 0.
    pub fn chunks(&mut self, chunk_len: usize) -> Result<Vec<ChunkMut<T>>> {
        assert!(chunk_len > 0, "chunks of 0 numbers");
        self.check_returned()?;
        let size = std::mem::size_of::<T>();
        Ok((0..self.len)
            .step_by(chunk_len)
            .map(|start| ChunkMut {
                segment: Arc::clone(&self.segment),
                lent: Some(Arc::clone(&self.lent)),
                offset: start * size,
                start,
                len: chunk_len.min(self.len - start),
                element: PhantomData,
            })
            .collect())
    }

    /// The numbers, once every chunk is back.
    pub fn as_slice(&mut self) -> Result<&[T]> {
        Ok(self.as_mut_slice()?)
    }

    /// The numbers, writable, once every chunk is back.
    pub fn as_mut_slice(&mut self) -> Result<&mut [T]> {
        self.check_returned()?;
        let (ptr, _) = self.segment.raw();
        // SAFETY: no chunk is held (checked above, and `&mut self` keeps
        // new ones from being made), so nothing else in this process or
        // in a worker writes the buffer; it holds `len` numbers of `T`
        // from the page-aligned start of its mapping, and any bytes are a
        // valid primitive number.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr.cast::<T>(), self.len) })
    }

    fn check_returned(&self) -> Result<()> {
        let out = Arc::strong_count(&self.lent) - 1;
        if out == 0 {
            return Ok(());
        }
        Err(Error::SharedMemory(format!(
            "{out} chunks of this SharedSliceMut are still held by jobs that have not \
             answered (or threads still running past a timeout); read it once they are done"
        )))
    }
}

/// One chunk of a [`SharedSliceMut`], lent to one job: it derefs to the
/// chunk's numbers, writable, and a worker process writes them in place.
pub struct ChunkMut<T> {
    segment: Arc<Segment>,
    /// The parent's mark that this chunk is lent; `None` in a worker.
    lent: Option<Arc<Lent>>,
    /// Where the chunk starts in the segment, in bytes.
    offset: usize,
    /// Where the chunk starts in the buffer, in numbers.
    start: usize,
    len: usize,
    element: PhantomData<T>,
}

impl<T> ChunkMut<T> {
    /// Where this chunk starts in its buffer, in numbers.
    pub fn start(&self) -> usize {
        self.start
    }
}

impl<T> Deref for ChunkMut<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        let (ptr, _) = self.segment.raw();
        // SAFETY: as in `deref_mut`, shared.
        unsafe { std::slice::from_raw_parts(ptr.add(self.offset).cast::<T>(), self.len) }
    }
}

impl<T> DerefMut for ChunkMut<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        let (ptr, _) = self.segment.raw();
        // SAFETY: a chunk is made only by `SharedSliceMut::chunks` (for a
        // primitive number `T`) or decoded from one, and covers its own
        // range of the buffer: no other chunk overlaps it, it is not
        // `Clone`, and the buffer itself is not readable while it is held.
        // The range lies in the writable mapping, whose size is sealed.
        unsafe { std::slice::from_raw_parts_mut(ptr.add(self.offset).cast::<T>(), self.len) }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for ChunkMut<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkMut")
            .field("start", &self.start)
            .field("values", &&**self)
            .finish()
    }
}

impl<T: 'static> Serialize for ChunkMut<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let kind = plain::kind_of::<T>().expect("a chunk holds numbers") as u8;
        let lent = self
            .lent
            .as_ref()
            .ok_or_else(|| S::Error::custom("a ChunkMut received by a worker cannot be sent on"))?;
        if !share::note_lent(&self.segment, lent) {
            return Err(S::Error::custom(
                "a ChunkMut can only go to a worker process: written anywhere else, \
                 its numbers would never reach the buffer",
            ));
        }
        let placement = (
            self.segment.id(),
            self.offset as u64,
            self.start as u64,
            self.len as u64,
            kind,
        );
        placement.serialize(s)
    }
}

impl<'de, T: 'static> Deserialize<'de> for ChunkMut<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (id, offset, start, len, kind) = <(u64, u64, u64, u64, u8)>::deserialize(d)?;
        let chunk = (|| -> std::result::Result<ChunkMut<T>, String> {
            let ours = plain::kind_of::<T>().ok_or("a ChunkMut of a type that is not a number")?;
            if ours as u8 != kind {
                return Err(format!("a chunk of number kind {kind} for {ours:?}"));
            }
            let segment = share::worker_segment(id)?;
            if !segment.is_writable() {
                return Err("a ChunkMut of a read-only segment".into());
            }
            let size = std::mem::size_of::<T>() as u64;
            let end = len.checked_mul(size).and_then(|b| b.checked_add(offset));
            if end.is_none_or(|end| end > segment.raw().1 as u64) || offset % size != 0 {
                return Err(format!(
                    "a chunk of {len} numbers at byte {offset} does not fit"
                ));
            }
            Ok(ChunkMut {
                segment,
                lent: None,
                offset: offset as usize,
                start: start as usize,
                len: len as usize,
                element: PhantomData,
            })
        })();
        chunk.map_err(D::Error::custom)
    }
}
