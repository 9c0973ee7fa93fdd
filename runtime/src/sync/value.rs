//! [`Value`] and [`Array`]: numbers in shared memory, each behind its own
//! robust lock (`multiprocessing.Value` and `multiprocessing.Array`).

use super::lock::LockGuard;
use super::mutex::PoisonMutex;
use super::region::{magic, Header, Region};
use crate::error::{Error, Result};
use crate::plain::{self, Plain};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LockResult;

/// The header of both: the numbers follow it, 16-byte aligned.
#[repr(C, align(16))]
pub(crate) struct NumbersHeader {
    magic: AtomicU64,
    /// The `plain::Kind` of the numbers.
    kind: AtomicU64,
    /// How many numbers follow.
    len: AtomicU64,
    mutex: PoisonMutex,
}

/// The header of a [`Value`].
#[repr(transparent)]
pub(crate) struct ValueHeader(NumbersHeader);
/// The header of an [`Array`].
#[repr(transparent)]
pub(crate) struct ArrayHeader(NumbersHeader);

impl Header for ValueHeader {
    const MAGIC: u64 = magic(b"vl");
    const NAME: &'static str = "a Value";
}

impl Header for ArrayHeader {
    const MAGIC: u64 = magic(b"ar");
    const NAME: &'static str = "an Array";
}

/// A region of `len` numbers of type `T` behind a lock.
struct Numbers<H, T> {
    region: Region<H>,
    element: PhantomData<T>,
}

impl<H, T> Clone for Numbers<H, T> {
    fn clone(&self) -> Self {
        Numbers {
            region: self.region.clone(),
            element: PhantomData,
        }
    }
}

impl<H: Header, T: Plain> Numbers<H, T> {
    /// `len` numbers: a copy of `values` when given (of that length),
    /// else zeros.
    fn create(len: usize, values: Option<&[T]>) -> Result<Self> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::SharedMemory(format!("{len} numbers do not fit in memory")))?;
        let kind = plain::kind_of::<T>().expect("a Plain type has a kind") as u64;
        // SAFETY: the init writes the whole header (the numbers start
        // zeroed and are copied in before the memory is shared).
        let region = unsafe {
            Region::create(bytes, |h: *mut H| {
                let h = h.cast::<NumbersHeader>();
                PoisonMutex::init(std::ptr::addr_of_mut!((*h).mutex), false);
                (*h).kind.store(kind, Ordering::Relaxed);
                (*h).len.store(len as u64, Ordering::Relaxed);
                if let Some(values) = values {
                    let data = h.add(1).cast::<T>();
                    std::ptr::copy_nonoverlapping(values.as_ptr(), data, len);
                }
                (*h).magic.store(H::MAGIC, Ordering::Release);
            })
        }?;
        Ok(Numbers {
            region,
            element: PhantomData,
        })
    }

    fn header(&self) -> &NumbersHeader {
        let header: &H = self.region.header();
        // SAFETY: both header types are `repr(transparent)` over
        // `NumbersHeader`.
        unsafe { &*(header as *const H).cast::<NumbersHeader>() }
    }

    fn len(&self) -> usize {
        self.header().len.load(Ordering::Relaxed) as usize
    }

    fn lock(&self) -> LockResult<ValueGuard<'_, [T]>> {
        let header = self.header();
        let poisoned = header.mutex.lock(None).expect("a lock with no deadline");
        let (ptr, _) = self.region.data();
        // SAFETY: the region holds `len` numbers of `T` after the header
        // (checked when made or decoded), 16-byte aligned, and the lock,
        // now held, is what every access to them takes.
        let numbers = std::ptr::slice_from_raw_parts_mut(ptr.cast::<T>(), self.len());
        match LockGuard::new(&header.mutex, poisoned) {
            Ok(guard) => Ok(ValueGuard {
                _guard: guard,
                numbers,
            }),
            Err(e) => Err(std::sync::PoisonError::new(ValueGuard {
                _guard: e.into_inner(),
                numbers,
            })),
        }
    }

    /// The numbers under the lock, poisoned or not: a number has no
    /// invariant a dead writer can break.
    fn with<R>(&self, f: impl FnOnce(&mut [T]) -> R) -> R {
        let mut guard = self.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    fn decode(region: Region<H>) -> std::result::Result<Self, String> {
        let numbers = Numbers {
            region,
            element: PhantomData,
        };
        let kind = plain::kind_of::<T>().expect("a Plain type has a kind") as u64;
        let header = numbers.header();
        if header.kind.load(Ordering::Relaxed) != kind {
            return Err(format!("{} of another number type", H::NAME));
        }
        let fits = numbers
            .len()
            .checked_mul(std::mem::size_of::<T>())
            .is_some_and(|bytes| bytes <= numbers.region.data().1);
        if !fits {
            return Err(format!("{} longer than its memory", H::NAME));
        }
        Ok(numbers)
    }
}

/// A number shared by threads and worker processes, behind its own lock:
/// `multiprocessing.Value`.
///
/// `get` and `set` are each atomic, but `v.set(v.get() + 1)` is not: two
/// processes can read the same value and one update is lost. Take the
/// lock for a read-modify-write, with [`Value::lock`] or
/// [`Value::update`].
///
/// ```
/// use parjob_runtime::sync::Value;
/// let counter = Value::new(0u64)?;
/// std::thread::scope(|s| {
///     for _ in 0..4 {
///         s.spawn(|| (0..1000).for_each(|_| counter.update(|n| *n += 1)));
///     }
/// });
/// assert_eq!(counter.get(), 4000);
/// # Ok::<(), parjob_runtime::Error>(())
/// ```
pub struct Value<T> {
    numbers: Numbers<ValueHeader, T>,
}

/// Numbers shared by threads and worker processes, behind one lock:
/// `multiprocessing.Array`.
///
/// ```
/// use parjob_runtime::sync::Array;
/// let hist = Array::<u32>::new(4)?;
/// hist.lock().unwrap()[2] += 5;
/// assert_eq!(hist.get(2), Some(5));
/// assert_eq!(hist.to_vec(), vec![0, 0, 5, 0]);
/// # Ok::<(), parjob_runtime::Error>(())
/// ```
pub struct Array<T> {
    numbers: Numbers<ArrayHeader, T>,
}

/// The lock of a [`Value`] or [`Array`], held: it derefs to the number
/// (`ValueGuard<T>`) or the numbers (`ValueGuard<[T]>`).
#[must_use = "the lock is released when the guard is dropped"]
pub struct ValueGuard<'a, T: ?Sized> {
    _guard: LockGuard<'a>,
    numbers: *mut T,
}

impl<T: ?Sized> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the pointer is to the shared numbers, which only the
        // holder of the lock touches while the guard lives.
        unsafe { &*self.numbers }
    }
}

impl<T: ?Sized> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes it unique here.
        unsafe { &mut *self.numbers }
    }
}

impl<T: Plain> Value<T> {
    /// A new shared number holding `value`.
    ///
    /// # Errors
    /// `Error::SharedMemory` when no shared memory can be had.
    pub fn new(value: T) -> Result<Self> {
        Ok(Value {
            numbers: Numbers::create(1, Some(&[value]))?,
        })
    }

    /// The value now.
    pub fn get(&self) -> T {
        self.numbers.with(|n| n[0])
    }

    /// Replaces the value.
    pub fn set(&self, value: T) {
        self.numbers.with(|n| n[0] = value);
    }

    /// Runs `f` on the value under the lock: a read-modify-write no other
    /// thread or process can interleave with.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        self.numbers.with(|n| f(&mut n[0]))
    }

    /// Takes the value's lock: `multiprocessing.Value.get_lock()`, with the
    /// value behind the guard. `Err` when a holder died or panicked with it.
    pub fn lock(&self) -> LockResult<ValueGuard<'_, T>> {
        fn first<T>(g: ValueGuard<'_, [T]>) -> ValueGuard<'_, T> {
            ValueGuard {
                numbers: g.numbers.cast::<T>(),
                _guard: g._guard,
            }
        }
        match self.numbers.lock() {
            Ok(g) => Ok(first(g)),
            Err(e) => Err(std::sync::PoisonError::new(first(e.into_inner()))),
        }
    }
}

impl<T: Plain> Array<T> {
    /// `len` zeros.
    ///
    /// # Errors
    /// `Error::SharedMemory` when no shared memory can be had.
    pub fn new(len: usize) -> Result<Self> {
        Ok(Array {
            numbers: Numbers::create(len, None)?,
        })
    }

    /// A shared copy of `values`.
    ///
    /// # Errors
    /// `Error::SharedMemory` when no shared memory can be had.
    pub fn from_slice(values: &[T]) -> Result<Self> {
        Ok(Array {
            numbers: Numbers::create(values.len(), Some(values))?,
        })
    }

    /// How many numbers it holds.
    pub fn len(&self) -> usize {
        self.numbers.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<T> {
        self.numbers.with(|n| n.get(index).copied())
    }

    /// Sets number `index`.
    ///
    /// # Errors
    /// `Error::Sync` past the end.
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        self.numbers.with(|n| match n.get_mut(index) {
            Some(slot) => {
                *slot = value;
                Ok(())
            }
            None => Err(Error::Sync(format!(
                "index {index} of an Array of {} numbers",
                n.len()
            ))),
        })
    }

    /// A copy of the numbers.
    pub fn to_vec(&self) -> Vec<T> {
        self.numbers.with(|n| n.to_vec())
    }

    /// Takes the lock, with the numbers behind the guard.
    pub fn lock(&self) -> LockResult<ValueGuard<'_, [T]>> {
        self.numbers.lock()
    }
}

macro_rules! handle_traits {
    ($ty:ident, $header:ident) => {
        impl<T> Clone for $ty<T> {
            fn clone(&self) -> Self {
                $ty {
                    numbers: self.numbers.clone(),
                }
            }
        }

        impl<T: Plain> Serialize for $ty<T> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.numbers.region.serialize(s)
            }
        }

        impl<'de, T: Plain> Deserialize<'de> for $ty<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let region = Region::<$header>::deserialize(d)?;
                let numbers = Numbers::decode(region).map_err(D::Error::custom)?;
                Ok($ty { numbers })
            }
        }

        impl<T: Plain + std::fmt::Debug> std::fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.numbers
                    .with(|n| f.debug_tuple(stringify!($ty)).field(&n).finish())
            }
        }
    };
}

handle_traits!(Value, ValueHeader);
handle_traits!(Array, ArrayHeader);
