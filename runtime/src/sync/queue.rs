//! [`Queue`]: a bounded multi-producer, multi-consumer queue of serde
//! values shared by threads and worker processes, and [`Pipe`], two
//! queues joined as the two ends of a connection.
//!
//! Items are encoded (outside the lock) into a byte ring in shared memory
//! guarded by one robust mutex and two condition variables. A put writes
//! its record and then publishes it with one store of the tail counter; a
//! get reads it and then frees it with one store of the head counter. So
//! a process killed inside either leaves the ring as it was before or
//! after, never between, and the next process to take the lock (which the
//! kernel hands over as owner-dead) only recounts the items. The two
//! conditions are futex words ([`RawCond`]), so a producer or consumer
//! killed while it waits leaves no trace either: a dead producer or
//! consumer never wedges the others.

use super::mutex::{deadline_after, Locked, RawCond, RawMutex};
use super::region::{magic, Header, Region};
use super::ring::{Ring, CONTINUES, MAX_RECORD, MORE, PREFIX};
use crate::error::{Error, Result};
use crate::wire::codec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The ring's size when none is given: 1 MiB, whose pages the kernel
/// gives only as they are first written.
pub const DEFAULT_QUEUE_BYTES: usize = 1 << 20;

#[repr(C)]
pub(crate) struct QueueHeader {
    magic: AtomicU64,
    mutex: RawMutex,
    /// Held by a producer for a whole put, so the records of an item
    /// larger than the ring are never interleaved with another's.
    writer: RawMutex,
    /// Held by a consumer for a whole get, for the same reason.
    reader: RawMutex,
    not_empty: RawCond,
    not_full: RawCond,
    capacity: AtomicU64,
    max_items: AtomicU64,
    /// Byte counter of the oldest record.
    head: AtomicU64,
    /// Byte counter past the newest record: a put's commit.
    tail: AtomicU64,
    /// Records between head and tail (recounted after a death).
    items: AtomicU64,
    closed: AtomicU64,
}

impl Header for QueueHeader {
    const MAGIC: u64 = magic(b"qu");
    const NAME: &'static str = "a Queue";
}

/// A bounded queue of `T`s shared by threads and worker processes:
/// `multiprocessing.Queue`, with Rust's `Result`s.
///
/// - `put` waits while the queue holds `max_items` items or its ring has
///   no room; `get` waits while it is empty.
/// - `close` ends it: puts fail at once, and gets drain what is left and
///   then fail (so consumers can loop until `get` errs, or over
///   [`Queue::iter`]).
/// - A producer or consumer killed at any point leaves the queue usable by
///   the others; an item it was putting is not delivered, one it had
///   taken is gone with it.
///
/// ```
/// use parjob_runtime::sync::Queue;
/// let q = Queue::<String>::new(16)?;
/// q.put(&"hello".to_string())?;
/// q.put(&"world".to_string())?;
/// q.close();
/// let all: Vec<String> = q.iter().collect::<Result<_, _>>()?;
/// assert_eq!(all, ["hello", "world"]);
/// # Ok::<(), parjob_runtime::Error>(())
/// ```
pub struct Queue<T> {
    region: Region<QueueHeader>,
    item: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            region: self.region.clone(),
            item: PhantomData,
        }
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.region.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let region = Region::<QueueHeader>::deserialize(d)?;
        let capacity = region.header().capacity.load(Ordering::Relaxed);
        if capacity == 0 || capacity > region.data().1 as u64 {
            return Err(D::Error::custom(
                "a Queue whose ring does not fit its memory",
            ));
        }
        Ok(Queue {
            region,
            item: PhantomData,
        })
    }
}

/// The queue's lock, held; it repairs the bookkeeping when the previous
/// holder died.
struct Held<'a> {
    header: &'a QueueHeader,
    ring: Ring,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // SAFETY: a `Held` exists only while its thread holds the mutex.
        unsafe { self.header.mutex.unlock() }
    }
}

impl Held<'_> {
    fn after(&self, locked: Locked) {
        if locked == Locked::OwnerDied {
            self.repair();
        }
    }

    /// Recounts the records between head and tail, after a holder died:
    /// it may have committed its head or tail and not yet its count.
    fn repair(&self) {
        let h = self.header;
        let head = h.head.load(Ordering::Relaxed);
        let tail = h.tail.load(Ordering::Relaxed);
        let (items, end) = self.ring.count(head, tail);
        h.items.store(items, Ordering::Relaxed);
        h.tail.store(end, Ordering::Relaxed);
        // Whoever waited on the dead holder's signal is woken to look.
        h.not_empty.notify_all();
        h.not_full.notify_all();
    }

    /// Waits on `cond` until `deadline`; false when it passed.
    fn wait(&self, cond: &RawCond, deadline: Option<Instant>) -> bool {
        // SAFETY: this thread holds the queue's mutex, the one every
        // waiter on its conditions uses.
        let locked = unsafe { cond.wait(&self.header.mutex, deadline) };
        self.after(locked);
        locked != Locked::TimedOut
    }

    fn used(&self) -> u64 {
        let h = self.header;
        h.tail.load(Ordering::Relaxed) - h.head.load(Ordering::Relaxed)
    }
}

fn closed() -> Error {
    Error::Closed("Queue")
}

/// How often a consumer in the middle of an item checks that its producer
/// is still writing it.
const GAVE_UP_CHECK: Duration = Duration::from_millis(50);

/// A producer's or consumer's turn: the `writer` or `reader` mutex, held
/// for one whole put or get.
struct Turn<'a>(&'a RawMutex);

impl<'a> Turn<'a> {
    /// Waits for the turn until `deadline`. A holder that died leaves
    /// nothing to repair: the records say where an item begins.
    fn take(mutex: &'a RawMutex, deadline: Option<Instant>) -> Option<Turn<'a>> {
        (mutex.lock(deadline) != Locked::TimedOut).then_some(Turn(mutex))
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // SAFETY: a `Turn` exists only while its thread holds the mutex.
        unsafe { self.0.unlock() }
    }
}

/// Whether no producer holds the writer's turn, so the item in parts that
/// a consumer is reading will never be finished. Called under the lock.
fn writer_gave_up(h: &QueueHeader) -> bool {
    match h.writer.try_lock() {
        Locked::TimedOut => false,
        Locked::Yes | Locked::OwnerDied => {
            // SAFETY: the try just took it.
            unsafe { h.writer.unlock() };
            true
        }
    }
}

/// The buffer for an item announced by its first record (its length).
fn begin_item(record: &[u8]) -> Result<(Vec<u8>, u64)> {
    let announced = record
        .try_into()
        .map(u64::from_le_bytes)
        .map_err(|_| Error::Sync("a Queue item's first part is not its length".into()))?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(announced as usize)
        .map_err(|_| Error::Sync(format!("no memory for a Queue item of {announced} bytes")))?;
    Ok((bytes, announced))
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A queue of at most `max_items` items, with a ring of
    /// [`DEFAULT_QUEUE_BYTES`].
    ///
    /// # Errors
    /// `Error::Sync` for 0 items; `Error::SharedMemory` when no shared
    /// memory can be had.
    pub fn new(max_items: usize) -> Result<Self> {
        Queue::with_capacity(max_items, DEFAULT_QUEUE_BYTES)
    }

    /// A queue of at most `max_items` items and `ring_bytes` bytes of
    /// encoded items (each takes 4 more). An item larger than the ring
    /// goes through it in parts, the consumer reading one while the
    /// producer writes the next (each part counts as an item against
    /// `max_items` while it is in the ring).
    ///
    /// # Errors
    /// `Error::Sync` for 0 items or a ring under 16 bytes;
    /// `Error::SharedMemory` when no shared memory can be had.
    pub fn with_capacity(max_items: usize, ring_bytes: usize) -> Result<Self> {
        if max_items == 0 || ring_bytes < 16 {
            return Err(Error::Sync(format!(
                "a Queue of {max_items} items in {ring_bytes} bytes holds nothing"
            )));
        }
        // SAFETY: the init initialises the mutex and conditions and writes
        // the sizes and the magic word of the zeroed header.
        let region = unsafe {
            Region::create(ring_bytes, |h: *mut QueueHeader| {
                RawMutex::init(std::ptr::addr_of_mut!((*h).mutex), false);
                RawMutex::init(std::ptr::addr_of_mut!((*h).writer), false);
                RawMutex::init(std::ptr::addr_of_mut!((*h).reader), false);
                RawCond::init(std::ptr::addr_of_mut!((*h).not_empty));
                RawCond::init(std::ptr::addr_of_mut!((*h).not_full));
                (*h).capacity.store(ring_bytes as u64, Ordering::Relaxed);
                (*h).max_items.store(max_items as u64, Ordering::Relaxed);
                (*h).magic.store(QueueHeader::MAGIC, Ordering::Release);
            })
        }?;
        Ok(Queue {
            region,
            item: PhantomData,
        })
    }

    fn lock(&self) -> Held<'_> {
        let header = self.region.header();
        let locked = header.mutex.lock(None);
        let capacity = header.capacity.load(Ordering::Relaxed);
        // SAFETY: the ring is the region's data, which holds `capacity`
        // bytes (checked when made or decoded), and the lock is held.
        let ring = unsafe { Ring::new(self.region.data().0, capacity) };
        let held = Held { header, ring };
        held.after(locked);
        held
    }

    /// Puts `item` at the back, waiting for room as long as it takes.
    ///
    /// # Errors
    /// `Error::Closed` when the queue is closed; `Error::Sync` when the
    /// item cannot be encoded.
    pub fn put(&self, item: &T) -> Result<()> {
        self.put_until(item, None).map(|_| ())
    }

    /// Puts `item` if there is room now; false when there is none.
    ///
    /// # Errors
    /// As [`Queue::put`].
    pub fn try_put(&self, item: &T) -> Result<bool> {
        self.put_until(item, Some(Instant::now()))
    }

    /// Puts `item`, waiting at most `timeout` for room; false when none
    /// came.
    ///
    /// # Errors
    /// As [`Queue::put`].
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<bool> {
        self.put_until(item, deadline_after(timeout))
    }

    fn put_until(&self, item: &T, deadline: Option<Instant>) -> Result<bool> {
        let bytes = codec::encode(item).map_err(|e| Error::Sync(format!("a Queue item: {e}")))?;
        let header = self.region.header();
        let Some(_turn) = Turn::take(&header.writer, deadline) else {
            return Ok(false);
        };
        let capacity = header.capacity.load(Ordering::Relaxed);
        if PREFIX + bytes.len() as u64 <= capacity && bytes.len() as u64 <= MAX_RECORD {
            return self.put_record(&bytes, 0, deadline);
        }
        // Larger than the ring: its length, then its bytes in parts of
        // half the ring, so the consumer reads one while the next is
        // written. A put that stops halfway (timeout, close, death) leaves
        // parts that the consumer discards.
        let part = (capacity / 2).saturating_sub(PREFIX).clamp(1, MAX_RECORD) as usize;
        if !self.put_record(&(bytes.len() as u64).to_le_bytes(), MORE, deadline)? {
            return Ok(false);
        }
        let mut parts = bytes.chunks(part).peekable();
        while let Some(chunk) = parts.next() {
            let more = if parts.peek().is_some() { MORE } else { 0 };
            if !self.put_record(chunk, CONTINUES | more, deadline)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes one record once there is room, under the lock.
    fn put_record(&self, bytes: &[u8], flags: u32, deadline: Option<Instant>) -> Result<bool> {
        let need = PREFIX + bytes.len() as u64;
        let held = self.lock();
        let h = held.header;
        let capacity = h.capacity.load(Ordering::Relaxed);
        loop {
            if h.closed.load(Ordering::Relaxed) != 0 {
                return Err(closed());
            }
            let full = h.items.load(Ordering::Relaxed) >= h.max_items.load(Ordering::Relaxed);
            if !full && capacity - held.used() >= need {
                break;
            }
            if !held.wait(&h.not_full, deadline) {
                return Ok(false);
            }
        }
        let tail = h.tail.load(Ordering::Relaxed);
        held.ring.write(tail, flags, bytes);
        h.tail.store(tail + need, Ordering::Release);
        h.items.fetch_add(1, Ordering::Relaxed);
        h.not_empty.notify_one();
        Ok(true)
    }

    /// Takes the front item, waiting as long as it takes.
    ///
    /// # Errors
    /// `Error::Closed` once the queue is closed and empty; `Error::Sync`
    /// when an item does not decode as a `T`.
    pub fn get(&self) -> Result<T> {
        let item = self.get_until(None)?;
        Ok(item.expect("a get with no deadline returns an item"))
    }

    /// Takes the front item if there is one now.
    ///
    /// # Errors
    /// As [`Queue::get`].
    pub fn try_get(&self) -> Result<Option<T>> {
        self.get_until(Some(Instant::now()))
    }

    /// Takes the front item, waiting at most `timeout`; `None` when none
    /// came.
    ///
    /// # Errors
    /// As [`Queue::get`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<Option<T>> {
        self.get_until(deadline_after(timeout))
    }

    fn get_until(&self, deadline: Option<Instant>) -> Result<Option<T>> {
        let Some(_turn) = Turn::take(&self.region.header().reader, deadline) else {
            return Ok(None);
        };
        let Some(bytes) = self.take_item(deadline)? else {
            return Ok(None);
        };
        codec::decode(&bytes)
            .map(Some)
            .map_err(|e| Error::Sync(format!("a Queue item did not decode: {e}")))
    }

    /// Takes the records of the front item, under the lock: one record,
    /// or an item's length and its parts. Once an item has begun, the
    /// deadline no longer applies: its producer holds the writer's turn
    /// until its last part, or has given up, which the consumer sees.
    fn take_item(&self, deadline: Option<Instant>) -> Result<Option<Vec<u8>>> {
        let held = self.lock();
        let h = held.header;
        // The bytes of an item in parts, and the length it announced.
        let mut partial: Option<(Vec<u8>, u64)> = None;
        loop {
            if h.items.load(Ordering::Relaxed) == 0 {
                if partial.is_some() {
                    if writer_gave_up(h) {
                        partial = None;
                    } else {
                        held.wait(&h.not_empty, deadline_after(GAVE_UP_CHECK));
                    }
                    continue;
                }
                if h.closed.load(Ordering::Relaxed) != 0 {
                    return Err(closed());
                }
                if !held.wait(&h.not_empty, deadline) {
                    return Ok(None);
                }
                continue;
            }
            let head = h.head.load(Ordering::Relaxed);
            let tail = h.tail.load(Ordering::Relaxed);
            let Some((len, flags)) = held.ring.record(head, tail) else {
                held.repair();
                return Err(Error::Sync(
                    "a Queue's ring was corrupt; it was reset".into(),
                ));
            };
            let read = match (flags & CONTINUES != 0, partial.as_mut()) {
                // A part of an item whose producer gave up or whose
                // consumer died: discarded.
                (true, None) => Ok(None),
                (true, Some((bytes, _))) => held.ring.read_into(head, len, bytes).map(|()| None),
                (false, _) => held.ring.read(head, len).map(Some),
            };
            h.head.store(head + PREFIX + len, Ordering::Release);
            h.items.fetch_sub(1, Ordering::Relaxed);
            h.not_full.notify_one();
            let read = read.map_err(Error::Sync)?;
            if flags & CONTINUES == 0 {
                let record = read.expect("a first record is read");
                if flags & MORE == 0 {
                    return Ok(Some(record));
                }
                partial = Some(begin_item(&record)?);
            } else if flags & MORE == 0 {
                if let Some((bytes, announced)) = partial.take() {
                    if bytes.len() as u64 != announced {
                        return Err(Error::Sync(format!(
                            "a Queue item announced {announced} bytes and held {}",
                            bytes.len()
                        )));
                    }
                    return Ok(Some(bytes));
                }
            }
        }
    }

    /// Closes the queue: puts fail from now on, and gets fail once it is
    /// empty. Every waiter wakes.
    pub fn close(&self) {
        let held = self.lock();
        held.header.closed.store(1, Ordering::Relaxed);
        held.header.not_empty.notify_all();
        held.header.not_full.notify_all();
    }

    /// Whether it was closed.
    pub fn is_closed(&self) -> bool {
        self.lock().header.closed.load(Ordering::Relaxed) != 0
    }

    /// How many items it holds now.
    pub fn len(&self) -> usize {
        self.lock().header.items.load(Ordering::Relaxed) as usize
    }

    /// Whether it holds none now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The items as they come, until the queue is closed and empty.
    pub fn iter(&self) -> impl Iterator<Item = Result<T>> + '_ {
        std::iter::from_fn(move || match self.get() {
            Err(Error::Closed(_)) => None,
            other => Some(other),
        })
    }
}

#[cfg(test)]
impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Takes the lock, writes a record past the tail, and leaves holding
    /// the lock without committing: what a producer killed mid-put leaves.
    pub(crate) fn die_writing(&self, bytes: &[u8]) {
        let held = self.lock();
        held.ring
            .write(held.header.tail.load(Ordering::Relaxed), 0, bytes);
        std::mem::forget(held);
    }

    /// Takes the writer's turn, puts the first two records of an item of
    /// `len` bytes, and leaves holding the turn: what a producer killed
    /// halfway through a large item leaves.
    pub(crate) fn die_streaming(&self, len: u64) {
        let turn = Turn::take(&self.region.header().writer, None);
        assert!(self.put_record(&len.to_le_bytes(), MORE, None).unwrap());
        assert!(self.put_record(&[7; 8], CONTINUES | MORE, None).unwrap());
        std::mem::forget(turn);
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}
