//! [`List`] and [`Map`]: collections that threads and worker processes
//! append to and read, in place of `multiprocessing.Manager().list()` and
//! `.dict()`. There is no manager process: each is an append-only log in
//! shared memory (`log`), and every operation takes its robust lock.
//!
//! They are made for what a manager list is used for, collecting results
//! and small shared state: a `get` reads the log (a `Map` lookup scans
//! it), and the log's size is fixed when it is made.

use super::log::{self, LogHeader, DEFAULT_LOG_BYTES};
use super::region::{magic, Header, Region};
use crate::error::{Error, Result};
use crate::wire::codec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::marker::PhantomData;

#[repr(transparent)]
pub(crate) struct ListHeader(LogHeader);
#[repr(transparent)]
pub(crate) struct MapHeader(LogHeader);

/// What a `Map<K, V>` holds, for variance and auto traits only.
type Entries<K, V> = PhantomData<fn(K, V) -> (K, V)>;

impl Header for ListHeader {
    const MAGIC: u64 = magic(b"li");
    const NAME: &'static str = "a List";
}

impl Header for MapHeader {
    const MAGIC: u64 = magic(b"mp");
    const NAME: &'static str = "a Map";
}

fn encode<V: Serialize + ?Sized>(value: &V, what: &str) -> Result<Vec<u8>> {
    codec::encode(value).map_err(|e| Error::Sync(format!("{what}: {e}")))
}

fn decode<V: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<V> {
    codec::decode(bytes).map_err(|e| Error::Sync(format!("{what} did not decode: {e}")))
}

/// A list that threads and worker processes push to and read: the
/// `Manager().list()` of Python's tutorials, with no manager process.
///
/// ```
/// use parjob_runtime::shared::List;
/// let seen = List::<String>::new()?;
/// seen.push(&"a".into())?;
/// seen.push(&"b".into())?;
/// assert_eq!(seen.len(), 2);
/// assert_eq!(seen.to_vec()?, ["a", "b"]);
/// # Ok::<(), parjob_runtime::Error>(())
/// ```
pub struct List<T> {
    region: Region<ListHeader>,
    item: PhantomData<fn(T) -> T>,
}

/// A map that threads and worker processes insert into and read: the
/// `Manager().dict()` of Python's tutorials, with no manager process.
/// Keys are equal when their encodings are.
///
/// ```
/// use parjob_runtime::shared::Map;
/// let scores = Map::<String, u32>::new()?;
/// scores.insert(&"ada".into(), &3)?;
/// scores.insert(&"ada".into(), &5)?;
/// assert_eq!(scores.get(&"ada".into())?, Some(5));
/// assert_eq!(scores.len()?, 1);
/// # Ok::<(), parjob_runtime::Error>(())
/// ```
pub struct Map<K, V> {
    region: Region<MapHeader>,
    entry: Entries<K, V>,
}

impl<T: Serialize + DeserializeOwned> List<T> {
    /// An empty list with [`DEFAULT_LOG_BYTES`] of room for encoded items.
    ///
    /// # Errors
    /// `Error::SharedMemory` when no shared memory can be had.
    pub fn new() -> Result<Self> {
        List::with_capacity(DEFAULT_LOG_BYTES)
    }

    /// An empty list with room for `bytes` of encoded items (each takes
    /// 4 more).
    ///
    /// # Errors
    /// `Error::SharedMemory` when no shared memory can be had.
    pub fn with_capacity(bytes: usize) -> Result<Self> {
        Ok(List {
            region: log::create(bytes)?,
            item: PhantomData,
        })
    }

    /// Appends `item`.
    ///
    /// # Errors
    /// `Error::Sync` when the list is full or the item cannot be encoded.
    pub fn push(&self, item: &T) -> Result<()> {
        let bytes = encode(item, "a List item")?;
        log::lock(&self.region).append("List", &bytes)
    }

    /// How many items it holds.
    pub fn len(&self) -> usize {
        log::lock(&self.region).records() as usize
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the items, in the order they were pushed.
    ///
    /// # Errors
    /// `Error::Sync` when an item does not decode as a `T`.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let held = log::lock(&self.region);
        let mut out = Vec::new();
        held.for_each(|bytes| {
            out.push(decode(&bytes, "a List item")?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Removes every item.
    pub fn clear(&self) {
        log::lock(&self.region).clear();
    }
}

#[cfg(test)]
impl<T: Serialize + DeserializeOwned> List<T> {
    /// What a writer killed mid-push leaves: a record past the end, not
    /// committed, and the lock held.
    pub(crate) fn die_appending(&self, bytes: &[u8]) {
        let held = log::lock(&self.region);
        held.write_uncommitted(bytes);
        std::mem::forget(held);
    }
}

/// A map entry as logged: the key's encoding, then the value (`None` for
/// a removal).
#[derive(Serialize, Deserialize)]
struct Entry {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

impl<K, V> Map<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// An empty map with [`DEFAULT_LOG_BYTES`] of room for its log.
    ///
    /// # Errors
    /// `Error::SharedMemory` when no shared memory can be had.
    pub fn new() -> Result<Self> {
        Map::with_capacity(DEFAULT_LOG_BYTES)
    }

    /// An empty map with room for `bytes` of log: every insert and
    /// removal appends its encoded key and value.
    ///
    /// # Errors
    /// `Error::SharedMemory` when no shared memory can be had.
    pub fn with_capacity(bytes: usize) -> Result<Self> {
        Ok(Map {
            region: log::create(bytes)?,
            entry: PhantomData,
        })
    }

    fn append(&self, key: &K, value: Option<&V>) -> Result<()> {
        let entry = Entry {
            key: encode(key, "a Map key")?,
            value: value.map(|v| encode(v, "a Map value")).transpose()?,
        };
        let bytes = encode(&entry, "a Map entry")?;
        log::lock(&self.region).append("Map", &bytes)
    }

    /// Sets `key` to `value`.
    ///
    /// # Errors
    /// `Error::Sync` when the map's log is full or a value cannot be
    /// encoded.
    pub fn insert(&self, key: &K, value: &V) -> Result<()> {
        self.append(key, Some(value))
    }

    /// Removes `key`.
    ///
    /// # Errors
    /// As [`Map::insert`].
    pub fn remove(&self, key: &K) -> Result<()> {
        self.append(key, None)
    }

    /// The latest entries by key encoding, in the order keys first came.
    fn latest(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let held = log::lock(&self.region);
        let mut order: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut at: HashMap<Vec<u8>, usize> = HashMap::new();
        held.for_each(|bytes| {
            let entry: Entry = decode(&bytes, "a Map entry")?;
            match at.get(&entry.key) {
                Some(&i) => order[i].1 = entry.value,
                None => {
                    at.insert(entry.key.clone(), order.len());
                    order.push((entry.key, entry.value));
                }
            }
            Ok(())
        })?;
        Ok(order
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect())
    }

    /// The value of `key`.
    ///
    /// # Errors
    /// `Error::Sync` when an entry does not decode.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let wanted = encode(key, "a Map key")?;
        let held = log::lock(&self.region);
        let mut found = None;
        held.for_each(|bytes| {
            let entry: Entry = decode(&bytes, "a Map entry")?;
            if entry.key == wanted {
                found = entry.value;
            }
            Ok(())
        })?;
        drop(held);
        found.map(|v| decode(&v, "a Map value")).transpose()
    }

    /// How many keys it holds.
    ///
    /// # Errors
    /// `Error::Sync` when an entry does not decode.
    pub fn len(&self) -> Result<usize> {
        Ok(self.latest()?.len())
    }

    /// Whether it holds no key.
    ///
    /// # Errors
    /// `Error::Sync` when an entry does not decode.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The entries, in the order their keys were first inserted.
    ///
    /// # Errors
    /// `Error::Sync` when an entry does not decode as a `(K, V)`.
    pub fn to_vec(&self) -> Result<Vec<(K, V)>> {
        self.latest()?
            .into_iter()
            .map(|(k, v)| Ok((decode(&k, "a Map key")?, decode(&v, "a Map value")?)))
            .collect()
    }

    /// Removes every entry.
    pub fn clear(&self) {
        log::lock(&self.region).clear();
    }
}

macro_rules! handle_traits {
    ($ty:ident < $($p:ident),+ >, $field:ident) => {
        impl<$($p),+> Clone for $ty<$($p),+> {
            fn clone(&self) -> Self {
                $ty { region: self.region.clone(), $field: PhantomData }
            }
        }

        impl<$($p),+> Serialize for $ty<$($p),+> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.region.serialize(s)
            }
        }

        impl<'de, $($p),+> Deserialize<'de> for $ty<$($p),+> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                use serde::de::Error as _;
                let region = Region::deserialize(d)?;
                log::check(&region).map_err(D::Error::custom)?;
                Ok($ty { region, $field: PhantomData })
            }
        }

        impl<$($p),+> std::fmt::Debug for $ty<$($p),+> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty)).finish_non_exhaustive()
            }
        }
    };
}

handle_traits!(List<T>, item);
handle_traits!(Map<K, V>, entry);
