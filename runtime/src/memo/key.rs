//! Cache keys: sha256 over a function's identity and its arguments,
//! streamed through a serde `Serializer` that feeds the hasher directly.
//!
//! The encoding is injective for values of one type, as bincode's is:
//! primitives as little-endian bytes, strings and sequences with their
//! length, options and enum variants with a tag. Nothing is allocated per
//! value: bytes go through a small buffer on the stack into the hasher
//! (one `update` per 256 bytes, not per number), and a large byte run goes
//! straight in, so an 80 MB `Vec<f64>` hashes at about sha256's own speed.
//!
//! Maps hash their entries order-independently: each entry is hashed on its
//! own, and the sorted entry digests go into the key. So do sets whose type
//! serde names as a `HashSet` (serde gives a set to the serializer as a
//! plain sequence; its type name is the only sign). Two `HashMap`s built in
//! different insertion orders give the same key.

use crate::plain::Plain;
use serde::ser::{self, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// A sha256 digest.
pub(crate) type Key = [u8; 32];

const BUFFER: usize = 256;

/// The hashing sink behind [`KeySerializer`].
pub(crate) struct Hasher {
    sha: Sha256,
    buffer: [u8; BUFFER],
    filled: usize,
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher {
            sha: Sha256::new(),
            buffer: [0; BUFFER],
            filled: 0,
        }
    }
}

impl Hasher {
    fn flush(&mut self) {
        self.sha.update(&self.buffer[..self.filled]);
        self.filled = 0;
    }

    /// Adds raw bytes.
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        if self.filled + bytes.len() > BUFFER {
            self.flush();
            if bytes.len() >= BUFFER {
                self.sha.update(bytes);
                return;
            }
        }
        self.buffer[self.filled..self.filled + bytes.len()].copy_from_slice(bytes);
        self.filled += bytes.len();
    }

    /// Adds a fixed-size word: the path every primitive takes, so it is
    /// kept to one bounds check and one copy.
    #[inline]
    fn word<const N: usize>(&mut self, word: [u8; N]) {
        if self.filled + N > BUFFER {
            self.flush();
        }
        self.buffer[self.filled..self.filled + N].copy_from_slice(&word);
        self.filled += N;
    }

    fn len(&mut self, n: usize) {
        self.word((n as u64).to_le_bytes());
    }

    /// Adds `value` through the key serializer.
    pub(crate) fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyError> {
        value.serialize(KeySerializer(self))
    }

    /// The digest.
    pub(crate) fn finish(mut self) -> Key {
        self.flush();
        self.sha.finalize().into()
    }
}

/// A slice of numbers hashed as its raw bytes (one `update`, at sha256's
/// own speed) instead of number by number. `#[memoize]` uses it for
/// parameters written `&[T]`, `Vec<T>` or `&Vec<T>` of a primitive `T`.
pub struct RawSlice<'a, T: Plain>(pub &'a [T]);

impl<T: Plain> Serialize for RawSlice<'_, T> {
    fn serialize<S: ser::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(crate::plain::as_bytes(self.0))
    }
}

/// Hashes one serializable value on its own (an argument, a map entry).
pub(crate) fn digest<T: Serialize + ?Sized>(value: &T) -> Result<Key, KeyError> {
    let mut h = Hasher::default();
    h.value(value)?;
    Ok(h.finish())
}

/// Lowercase hex of a key.
pub(crate) fn hex(key: &Key) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// An entry's file name, `<hex key><extension>`, NUL-terminated on the
/// stack: a hit opens its entry by this name without allocating a path.
pub(crate) struct EntryName {
    bytes: [u8; 72],
    len: usize,
}

impl EntryName {
    /// The output file's name.
    pub(crate) fn output(key: &Key) -> EntryName {
        EntryName::new(key, ".out")
    }

    /// `extension` is one of the store's own, at most 6 bytes.
    pub(crate) fn new(key: &Key, extension: &str) -> EntryName {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut bytes = [0u8; 72];
        for (i, b) in key.iter().enumerate() {
            bytes[2 * i] = DIGITS[usize::from(b >> 4)];
            bytes[2 * i + 1] = DIGITS[usize::from(b & 15)];
        }
        let len = 2 * key.len() + extension.len();
        bytes[2 * key.len()..len].copy_from_slice(extension.as_bytes());
        EntryName { bytes, len }
    }

    /// The name as text.
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("hex digits and an extension")
    }

    /// The name for a system call (the byte after it is NUL).
    pub(crate) fn as_c_str(&self) -> &std::ffi::CStr {
        std::ffi::CStr::from_bytes_until_nul(&self.bytes).expect("a NUL after the name")
    }
}

/// An argument's `Serialize` impl failed.
#[derive(Debug)]
pub(crate) struct KeyError(pub String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

impl ser::Error for KeyError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        KeyError(msg.to_string())
    }
}

/// The serde serializer that hashes what it is given.
pub(crate) struct KeySerializer<'a>(pub &'a mut Hasher);

/// Entry digests of a map or a hashed set, sorted at the end.
pub(crate) struct MapHasher<'a> {
    parent: &'a mut Hasher,
    entries: Vec<Key>,
    pending: Option<Hasher>,
}

impl MapHasher<'_> {
    fn finish(mut self) {
        self.entries.sort_unstable();
        self.parent.len(self.entries.len());
        for entry in &self.entries {
            self.parent.write(entry);
        }
    }
}

/// A sequence, tuple or struct: its parts in order.
pub(crate) struct SeqHasher<'a>(&'a mut Hasher);

macro_rules! primitive {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method(self, v: $ty) -> Result<(), KeyError> {
            self.0.word(v.to_le_bytes());
            Ok(())
        })*
    };
}

impl<'a> ser::Serializer for KeySerializer<'a> {
    type Ok = ();
    type Error = KeyError;
    type SerializeSeq = SeqHasher<'a>;
    type SerializeTuple = SeqHasher<'a>;
    type SerializeTupleStruct = SeqHasher<'a>;
    type SerializeTupleVariant = SeqHasher<'a>;
    type SerializeMap = MapHasher<'a>;
    type SerializeStruct = SeqHasher<'a>;
    type SerializeStructVariant = SeqHasher<'a>;

    primitive!(
        serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128, serialize_f32: f32, serialize_f64: f64,
    );

    fn serialize_bool(self, v: bool) -> Result<(), KeyError> {
        self.0.write(&[u8::from(v)]);
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), KeyError> {
        self.serialize_u32(v as u32)
    }

    fn serialize_str(self, v: &str) -> Result<(), KeyError> {
        self.serialize_bytes(v.as_bytes())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), KeyError> {
        self.0.len(v.len());
        self.0.write(v);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), KeyError> {
        self.0.write(&[0]);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), KeyError> {
        self.0.write(&[1]);
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), KeyError> {
        Ok(())
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), KeyError> {
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
    ) -> Result<(), KeyError> {
        self.serialize_u32(index)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), KeyError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), KeyError> {
        self.0.write(&index.to_le_bytes());
        value.serialize(self)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<SeqHasher<'a>, KeyError> {
        match len {
            Some(n) => self.0.len(n),
            // An unknown length: a marker, and an end marker after.
            None => self.0.write(&[0xff; 8]),
        }
        Ok(SeqHasher(self.0))
    }

    fn serialize_tuple(self, _: usize) -> Result<SeqHasher<'a>, KeyError> {
        Ok(SeqHasher(self.0))
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<SeqHasher<'a>, KeyError> {
        Ok(SeqHasher(self.0))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _: usize,
    ) -> Result<SeqHasher<'a>, KeyError> {
        self.0.write(&index.to_le_bytes());
        Ok(SeqHasher(self.0))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<MapHasher<'a>, KeyError> {
        Ok(MapHasher {
            parent: self.0,
            entries: Vec::new(),
            pending: None,
        })
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<SeqHasher<'a>, KeyError> {
        Ok(SeqHasher(self.0))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _: usize,
    ) -> Result<SeqHasher<'a>, KeyError> {
        self.0.write(&index.to_le_bytes());
        Ok(SeqHasher(self.0))
    }

    fn collect_seq<I>(self, iter: I) -> Result<(), KeyError>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        // serde hands a set over as a plain sequence: a hashed set's order
        // is arbitrary, so its elements are hashed as a bag.
        if std::any::type_name::<I>().contains("HashSet<") {
            let mut set = MapHasher {
                parent: self.0,
                entries: Vec::new(),
                pending: None,
            };
            for item in iter {
                set.entries.push(digest(&item)?);
            }
            set.finish();
            return Ok(());
        }
        let iter = iter.into_iter();
        let mut seq = ser::Serializer::serialize_seq(
            self,
            iter.size_hint().1.filter(|hi| *hi == iter.size_hint().0),
        )?;
        for item in iter {
            ser::SerializeSeq::serialize_element(&mut seq, &item)?;
        }
        ser::SerializeSeq::end(seq)
    }
}

/// The parts of a sequence, tuple or struct go in order, each through the
/// key serializer; field names are not hashed (one type, one layout).
macro_rules! ordered_parts {
    ($($trait:ident :: $method:ident ($($name:ident: $ty:ty)?)),* $(,)?) => {$(
        impl ser::$trait for SeqHasher<'_> {
            type Ok = ();
            type Error = KeyError;
            fn $method<T: Serialize + ?Sized>(&mut self, $($name: $ty,)? value: &T) -> Result<(), KeyError> {
                value.serialize(KeySerializer(self.0))
            }
            fn end(self) -> Result<(), KeyError> {
                Ok(())
            }
        }
    )*};
}

ordered_parts!(
    SerializeSeq::serialize_element(),
    SerializeTuple::serialize_element(),
    SerializeTupleStruct::serialize_field(),
    SerializeTupleVariant::serialize_field(),
    SerializeStruct::serialize_field(_name: &'static str),
    SerializeStructVariant::serialize_field(_name: &'static str),
);

impl ser::SerializeMap for MapHasher<'_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), KeyError> {
        let mut entry = Hasher::default();
        entry.value(key)?;
        self.pending = Some(entry);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyError> {
        let mut entry = self
            .pending
            .take()
            .ok_or_else(|| KeyError("a map value came without its key".into()))?;
        entry.value(value)?;
        self.entries.push(entry.finish());
        Ok(())
    }
    fn end(self) -> Result<(), KeyError> {
        self.finish();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap, HashSet};

    #[test]
    fn equal_values_hash_equal_and_different_ones_differ() {
        assert_eq!(digest(&(1u64, "a")).unwrap(), digest(&(1u64, "a")).unwrap());
        assert_ne!(digest(&(1u64, "a")).unwrap(), digest(&(2u64, "a")).unwrap());
        // Lengths keep neighbouring strings apart.
        assert_ne!(digest(&("ab", "c")).unwrap(), digest(&("a", "bc")).unwrap());
        assert_ne!(digest(&Some(0u8)).unwrap(), digest(&None::<u8>).unwrap());
        assert_ne!(
            digest(&vec![1.0f64, 2.0]).unwrap(),
            digest(&vec![2.0f64, 1.0]).unwrap()
        );
    }

    #[test]
    fn hashed_maps_and_sets_ignore_insertion_order() {
        let a: HashMap<String, u32> = (0..100).map(|i| (format!("k{i}"), i)).collect();
        let mut b = HashMap::with_capacity(1000);
        for i in (0..100).rev() {
            b.insert(format!("k{i}"), i);
        }
        assert_eq!(digest(&a).unwrap(), digest(&b).unwrap());
        let ordered: BTreeMap<String, u32> = a.clone().into_iter().collect();
        assert_eq!(digest(&ordered).unwrap(), digest(&a).unwrap());
        let mut c = b.clone();
        c.insert("k7".into(), 8);
        assert_ne!(digest(&a).unwrap(), digest(&c).unwrap());
        let s: HashSet<u64> = (0..500).collect();
        let t: HashSet<u64> = (0..500).rev().collect();
        assert_eq!(digest(&s).unwrap(), digest(&t).unwrap());
        let u: HashSet<u64> = (1..501).collect();
        assert_ne!(digest(&s).unwrap(), digest(&u).unwrap());
    }

    #[test]
    fn a_raw_slice_hashes_its_bytes() {
        let xs = [1.5f64, -2.0, 3.25];
        let bytes: Vec<u8> = xs.iter().flat_map(|x| x.to_ne_bytes()).collect();
        let mut expected = Hasher::default();
        expected.len(bytes.len());
        expected.write(&bytes);
        assert_eq!(digest(&RawSlice(&xs[..])).unwrap(), expected.finish());
        assert_ne!(
            digest(&RawSlice(&xs[..2])).unwrap(),
            digest(&RawSlice(&xs[..])).unwrap()
        );
    }

    #[test]
    fn a_large_buffer_hashes_like_sha256_of_its_bytes() {
        let xs: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = Hasher::default();
        h.write(&xs[..10]);
        h.write(&xs[10..]);
        assert_eq!(h.finish(), <[u8; 32]>::from(Sha256::digest(&xs)));
    }
}
