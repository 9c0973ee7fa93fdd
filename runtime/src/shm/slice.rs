//! Slices in shared memory: the public [`SharedSlice`], and [`SliceArg`],
//! what a job stores for a task's `&[T]` parameter.
//!
//! Both encode, for a worker, as one of three forms: the elements one by
//! one (a slice of another type than a primitive number), the raw bytes
//! (a slice of numbers under `max_nbytes`: one copy, never element by
//! element), or a reference to a segment whose descriptor the backend
//! passes beside the batch. A worker decodes the last as a view of the
//! segment, with no copy.

use super::segment::Segment;
use super::share;
use crate::error::{Error, Result};
use crate::plain::{self, ByteString, Plain};
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::ops::{Bound, Deref, RangeBounds};
use std::sync::Arc;

/// A read-only slice of numbers in shared memory, joblib's memmapped
/// array: made once, cloned into any number of jobs for the cost of a
/// reference count, and seen by worker processes without a copy.
///
/// It derefs to `[T]`. Its memory is a sealed `memfd`, so it is freed when
/// the last clone, in any process, is dropped, and nothing is left in
/// `/dev/shm` even after a SIGKILL.
///
/// ```
/// use parjob_runtime::shm::SharedSlice;
/// let data: Vec<f64> = (0..1_000).map(f64::from).collect();
/// let shared = SharedSlice::new(&data).unwrap();
/// let half = shared.slice(500..);
/// assert_eq!(half.len(), 500);
/// assert_eq!(half[0], 500.0);
/// assert_eq!(shared.iter().sum::<f64>(), data.iter().sum::<f64>());
/// ```
pub struct SharedSlice<T> {
    segment: Arc<Segment>,
    /// Where the first element starts in the segment, in bytes.
    offset: usize,
    /// Elements.
    len: usize,
    element: PhantomData<T>,
}

impl<T: Plain> SharedSlice<T> {
    /// A shared copy of `values`.
    pub fn new(values: &[T]) -> Result<Self> {
        let segment = Segment::create(plain::as_bytes(values)).map_err(Error::SharedMemory)?;
        Ok(SharedSlice::whole(Arc::new(segment), values.len()))
    }

    /// The sub-slice of `range` (of elements), sharing the same memory.
    ///
    /// # Panics
    /// When the range is out of bounds, as slicing does.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Self {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e + 1,
            Bound::Excluded(&e) => e,
            Bound::Unbounded => self.len,
        };
        assert!(
            start <= end && end <= self.len,
            "range {start}..{end} out of bounds for a SharedSlice of {}",
            self.len
        );
        SharedSlice {
            segment: Arc::clone(&self.segment),
            offset: self.offset + start * std::mem::size_of::<T>(),
            len: end - start,
            element: PhantomData,
        }
    }
}

impl<T: 'static> SharedSlice<T> {
    fn whole(segment: Arc<Segment>, len: usize) -> Self {
        SharedSlice {
            segment,
            offset: 0,
            len,
            element: PhantomData,
        }
    }

    /// A view of `len` elements at byte `offset` of a segment received
    /// from the parent: checked, since the numbers came over the wire.
    fn view(segment: Arc<Segment>, offset: u64, len: u64, kind: u8) -> Result<Self, String> {
        let ours = plain::kind_of::<T>().ok_or("a shared slice of a type that is not a number")?;
        if ours as u8 != kind {
            return Err(format!(
                "the segment holds numbers of kind {kind}, this slice {ours:?}"
            ));
        }
        let size = std::mem::size_of::<T>() as u64;
        let end = len.checked_mul(size).and_then(|b| b.checked_add(offset));
        let fits = end.is_some_and(|end| end <= segment.bytes().len() as u64);
        if !fits || offset % std::mem::align_of::<T>() as u64 != 0 {
            return Err(format!(
                "a view of {len} elements at byte {offset} does not fit the segment"
            ));
        }
        Ok(SharedSlice {
            segment,
            offset: offset as usize,
            len: len as usize,
            element: PhantomData,
        })
    }

    /// The segment's id, and the view's place in it.
    fn placement(&self) -> (u64, u64, u64) {
        (self.segment.id(), self.offset as u64, self.len as u64)
    }
}

impl<T> Clone for SharedSlice<T> {
    fn clone(&self) -> Self {
        SharedSlice {
            segment: Arc::clone(&self.segment),
            offset: self.offset,
            len: self.len,
            element: PhantomData,
        }
    }
}

impl<T> Deref for SharedSlice<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        let bytes = &self.segment.bytes()[self.offset..];
        // SAFETY: every constructor either requires `T: Plain` or checks
        // that `T` is a primitive number (`view`), and checks that `len`
        // elements at `offset` fit the segment at `T`'s alignment (the
        // mapping is page-aligned). The bytes are a sealed memfd mapped
        // read-only: `F_SEAL_WRITE` and `F_SEAL_SHRINK` mean no process can
        // write or truncate them while this borrow lives, so the `[T]` is
        // immutable for its whole lifetime, as `&[T]` requires.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for SharedSlice<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: PartialEq> PartialEq for SharedSlice<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

/// What a job stores for a task's `&[T]` parameter: its own copy, or a
/// view of shared memory. The macros use it; it derefs to `[T]`.
#[doc(hidden)]
pub enum SliceArg<T> {
    /// A copy (small, or not a slice of numbers), or a moved `Vec`.
    Owned(Vec<T>),
    /// A view of a segment.
    Shared(SharedSlice<T>),
    /// A slice over `max_nbytes` whose segment could not be made and that
    /// could not be copied either: why. Sending it to a worker fails with
    /// the reason, and so does running it here (as the task's panic,
    /// which the runner reports as the job's error).
    Refused(String),
}

impl<T: Clone + 'static> SliceArg<T> {
    /// A borrowed slice made what a job owns: the current run's segment
    /// when it is a slice of numbers over the run's `max_nbytes` (one
    /// segment however many jobs borrow it), else a copy.
    ///
    /// When the segment cannot be made (a full `temp_folder`, no memory),
    /// the job keeps a copy if memory has room for one, allocated
    /// fallibly: a run on threads uses it, and a run on processes fails
    /// with the segment's error when it sends the job (the copy goes with
    /// the job). Otherwise it is [`SliceArg::Refused`]: never an abort,
    /// and never a copy the OOM killer would answer.
    pub fn borrowed(values: &[T]) -> Self {
        if let Some(bytes) = plain::bytes_of(values) {
            match share::share_borrowed(bytes) {
                Some(Ok(segment)) => {
                    return SliceArg::Shared(SharedSlice::whole(segment, values.len()))
                }
                Some(Err(why)) => return SliceArg::copied(values, why),
                None => {}
            }
        }
        SliceArg::Owned(values.to_vec())
    }

    /// A copy of `values`, made only when memory has room for it and
    /// allocated fallibly, or why there is none: when the segment failed
    /// for want of memory, a copy would only bring the OOM killer.
    fn copied(values: &[T], unshared: String) -> Self {
        let bytes = std::mem::size_of_val(values);
        if let Some((left, source)) = super::capacity::available_memory() {
            if bytes as u64 > left {
                return SliceArg::Refused(format!(
                    "{unshared} (and no copy was made: {} of memory is left, by {source})",
                    super::capacity::human(left as usize)
                ));
            }
        }
        let mut copy = Vec::new();
        match copy.try_reserve_exact(values.len()) {
            Ok(()) => {
                copy.extend_from_slice(values);
                SliceArg::Owned(copy)
            }
            Err(_) => SliceArg::Refused(format!(
                "{unshared} (and a copy of its {} could not be allocated)",
                super::capacity::human(bytes)
            )),
        }
    }
}

impl<T> SliceArg<T> {
    /// The elements as a `Vec`: the moved one itself, or one copy out of
    /// shared memory (a by-value `Vec<T>` parameter of a process task).
    pub fn into_vec(self) -> Vec<T> {
        match self {
            SliceArg::Owned(values) => values,
            SliceArg::Shared(view) => {
                let mut values = Vec::with_capacity(view.len());
                // SAFETY: a `SharedSlice` only ever holds primitive numbers
                // (see its `Deref`), which are `Copy`: copying their bytes
                // into the new vector's room makes `len` valid values.
                unsafe {
                    std::ptr::copy_nonoverlapping(view.as_ptr(), values.as_mut_ptr(), view.len());
                    values.set_len(view.len());
                }
                values
            }
            SliceArg::Refused(why) => refused(&why),
        }
    }
}

/// A job that holds a [`SliceArg::Refused`] ran: it ends as the task's
/// panic, which the runner catches and reports with the task and item.
fn refused(why: &str) -> ! {
    std::panic::panic_any(format!("the task's slice argument is missing: {why}"))
}

impl<T> Deref for SliceArg<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            SliceArg::Owned(v) => v,
            SliceArg::Shared(s) => s,
            SliceArg::Refused(why) => refused(why),
        }
    }
}

impl<T: Clone> Clone for SliceArg<T> {
    fn clone(&self) -> Self {
        match self {
            SliceArg::Owned(v) => SliceArg::Owned(v.clone()),
            SliceArg::Shared(s) => SliceArg::Shared(s.clone()),
            SliceArg::Refused(why) => SliceArg::Refused(why.clone()),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for SliceArg<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SliceArg::Refused(why) => f.debug_tuple("Refused").field(why).finish(),
            _ => f.debug_list().entries(self.iter()).finish(),
        }
    }
}

const NAME: &str = "Slice";
const ELEMENTS: u32 = 0;
const RAW: u32 = 1;
const SHARED: u32 = 2;

/// The raw bytes of numbers, as one byte string.
struct RawOut<'a>(&'a [u8]);

impl Serialize for RawOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

fn serialize_shared<T: 'static, S: Serializer>(
    view: &SharedSlice<T>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    let kind = plain::kind_of::<T>().expect("a SharedSlice holds numbers") as u8;
    if share::note_sent(&view.segment) {
        let (id, offset, len) = view.placement();
        s.serialize_newtype_variant(NAME, SHARED, "Shared", &(id, offset, len, kind))
    } else {
        // Not on its way to a worker: the bytes themselves.
        let bytes = plain::bytes_of::<T>(view).expect("a SharedSlice holds numbers");
        s.serialize_newtype_variant(NAME, RAW, "Raw", &RawOut(bytes))
    }
}

impl<T: Serialize + 'static> Serialize for SharedSlice<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_shared(self, s)
    }
}

impl<T: Serialize + 'static> Serialize for SliceArg<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let values = match self {
            SliceArg::Shared(view) => return serialize_shared(view, s),
            SliceArg::Refused(why) => return Err(S::Error::custom(why)),
            SliceArg::Owned(values) => values,
        };
        let Some(bytes) = plain::bytes_of(values) else {
            return s.serialize_newtype_variant(NAME, ELEMENTS, "Elements", values);
        };
        match share::share_owned(bytes) {
            Some(Ok(segment)) => {
                let view = SharedSlice::<T>::whole(segment, values.len());
                serialize_shared(&view, s)
            }
            Some(Err(message)) => Err(S::Error::custom(message)),
            None => s.serialize_newtype_variant(NAME, RAW, "Raw", &RawOut(bytes)),
        }
    }
}

/// The three forms, as they are read.
#[derive(Deserialize)]
#[serde(rename = "Slice")]
enum WireIn<T> {
    Elements(Vec<T>),
    Raw(ByteString),
    Shared((u64, u64, u64, u8)),
}

/// How many numbers of type `T` the raw `bytes` hold.
fn whole_numbers<T: 'static>(bytes: &[u8]) -> Result<usize, String> {
    plain::kind_of::<T>().ok_or("raw bytes for a slice that is not of numbers")?;
    let size = std::mem::size_of::<T>();
    if bytes.len() % size != 0 {
        return Err(format!(
            "{} raw bytes are not whole numbers of {size} bytes",
            bytes.len()
        ));
    }
    Ok(bytes.len() / size)
}

/// Raw bytes made numbers, with one copy into a fallibly allocated `Vec`.
fn numbers_from_bytes<T: 'static>(bytes: &[u8]) -> Result<Vec<T>, String> {
    let count = whole_numbers::<T>(bytes)?;
    let mut values: Vec<T> = Vec::new();
    values
        .try_reserve_exact(count)
        .map_err(|_| format!("out of memory for {count} numbers"))?;
    // SAFETY: `T` is a primitive number (checked above), so any bytes are
    // valid values; the vector has room for `count` of them, which is
    // exactly `bytes.len()` bytes, and the two buffers do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            values.as_mut_ptr().cast::<u8>(),
            bytes.len(),
        );
        values.set_len(count);
    }
    Ok(values)
}

fn shared_view<T: 'static>(
    id: u64,
    offset: u64,
    len: u64,
    kind: u8,
) -> Result<SharedSlice<T>, String> {
    let segment = share::worker_segment(id)?;
    SharedSlice::view(segment, offset, len, kind)
}

impl<'de, T: Deserialize<'de> + 'static> Deserialize<'de> for SliceArg<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(match WireIn::<T>::deserialize(d)? {
            WireIn::Elements(values) => SliceArg::Owned(values),
            WireIn::Raw(ByteString(bytes)) => {
                SliceArg::Owned(numbers_from_bytes(&bytes).map_err(D::Error::custom)?)
            }
            WireIn::Shared((id, offset, len, kind)) => {
                SliceArg::Shared(shared_view(id, offset, len, kind).map_err(D::Error::custom)?)
            }
        })
    }
}

impl<'de, T: Deserialize<'de> + 'static> Deserialize<'de> for SharedSlice<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match WireIn::<T>::deserialize(d)? {
            WireIn::Shared((id, offset, len, kind)) => {
                shared_view(id, offset, len, kind).map_err(D::Error::custom)
            }
            WireIn::Raw(ByteString(bytes)) => {
                let count = whole_numbers::<T>(&bytes).map_err(D::Error::custom)?;
                let segment = Segment::create(&bytes).map_err(D::Error::custom)?;
                Ok(SharedSlice::whole(Arc::new(segment), count))
            }
            WireIn::Elements(_) => Err(D::Error::custom("a SharedSlice sent element by element")),
        }
    }
}
