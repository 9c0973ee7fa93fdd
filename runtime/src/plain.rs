//! Primitive numbers seen as bytes: what lets big numeric arrays skip
//! element-by-element encoding in dumps, cache keys and memory maps.

use std::any::TypeId;

mod sealed {
    pub trait Sealed {}
}

/// The element types of raw arrays, as recorded in a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// `u8`
    U8 = 1,
    /// `i8`
    I8,
    /// `u16`
    U16,
    /// `i16`
    I16,
    /// `u32`
    U32,
    /// `i32`
    I32,
    /// `u64` (and `usize`)
    U64,
    /// `i64` (and `isize`)
    I64,
    /// `u128`
    U128,
    /// `i128`
    I128,
    /// `f32`
    F32,
    /// `f64`
    F64,
}

impl Kind {
    /// The kind recorded as `byte`.
    pub fn from_byte(byte: u8) -> Option<Kind> {
        use Kind::*;
        [U8, I8, U16, I16, U32, I32, U64, I64, U128, I128, F32, F64]
            .into_iter()
            .find(|k| *k as u8 == byte)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        use Kind::*;
        match self {
            U8 | I8 => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 => 8,
            U128 | I128 => 16,
        }
    }
}

/// A primitive number: no padding, and every bit pattern is a valid value,
/// so a slice of them can be read as bytes, and bytes as a slice of them.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a plain number, which is all that shared memory holds in place",
    label = "not a plain number",
    note = "`sync::Value`, `sync::Array`, shared slices and `load_mmap` hold the primitive \
            numbers: u8, i8, u16, i16, u32, i32, u64, i64, u128, i128, usize, isize, f32 and f64",
    note = "for a `String`, a struct or any other serde type, share a `sync::Queue` or a \
            `shared::List` / `shared::Map` instead"
)]
pub trait Plain:
    Copy + Send + Sync + 'static + serde::Serialize + serde::de::DeserializeOwned + sealed::Sealed
{
    /// How a dump records it.
    const KIND: Kind;
}

macro_rules! plain {
    ($($t:ty => $kind:ident),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        impl Plain for $t {
            const KIND: Kind = Kind::$kind;
        }
    )*};
}

plain!(
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32,
    u64 => U64, i64 => I64, u128 => U128, i128 => I128, f32 => F32, f64 => F64,
);
#[cfg(target_pointer_width = "64")]
plain!(usize => U64, isize => I64);

/// The bytes of a slice of numbers.
pub(crate) fn as_bytes<P: Plain>(values: &[P]) -> &[u8] {
    // SAFETY: `P` is a primitive number (sealed `Plain`): no padding, every
    // byte initialized, so its memory is a valid `[u8]` of the same size,
    // borrowed for as long as `values`.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
    }
}

/// The bytes of a slice of numbers, writable.
pub(crate) fn as_bytes_mut<P: Plain>(values: &mut [P]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`; and any bytes written are a valid `P`,
    // since every bit pattern is one.
    unsafe {
        std::slice::from_raw_parts_mut(
            values.as_mut_ptr().cast::<u8>(),
            std::mem::size_of_val(values),
        )
    }
}

/// When `I` (a type serde hands to `collect_seq`) is `&Vec<P>` or `&[P]`
/// for a plain `P`, the elements as bytes with their kind.
///
/// The check is on `typeid::of`, which is `TypeId` with lifetimes erased:
/// `I` is then exactly a shared reference to that type, so reading it as
/// one is sound.
#[cfg(feature = "persist")]
pub(crate) fn plain_slice<I>(iter: &I) -> Option<(Kind, &[u8])> {
    // Raw arrays are little-endian on disk: elsewhere, numbers go one by one.
    if cfg!(target_endian = "big") {
        return None;
    }
    fn check<I, P: Plain>(iter: &I) -> Option<(Kind, &[u8])> {
        let id = typeid::of::<I>();
        if id == typeid::of::<&Vec<P>>() {
            // SAFETY: `I` is `&Vec<P>` (lifetimes aside): same layout, and
            // the borrow lives as long as `iter`.
            let v: &Vec<P> = unsafe { *(iter as *const I as *const &Vec<P>) };
            return Some((P::KIND, as_bytes(v)));
        }
        if id == typeid::of::<&[P]>() {
            // SAFETY: `I` is `&[P]`, as above.
            let s: &[P] = unsafe { *(iter as *const I as *const &[P]) };
            return Some((P::KIND, as_bytes(s)));
        }
        None
    }
    check::<I, f64>(iter)
        .or_else(|| check::<I, f32>(iter))
        .or_else(|| check::<I, u8>(iter))
        .or_else(|| check::<I, i8>(iter))
        .or_else(|| check::<I, u16>(iter))
        .or_else(|| check::<I, i16>(iter))
        .or_else(|| check::<I, u32>(iter))
        .or_else(|| check::<I, i32>(iter))
        .or_else(|| check::<I, u64>(iter))
        .or_else(|| check::<I, i64>(iter))
        .or_else(|| check::<I, u128>(iter))
        .or_else(|| check::<I, i128>(iter))
        .or_else(|| check::<I, usize>(iter))
        .or_else(|| check::<I, isize>(iter))
}

/// A byte string as serde reads it: one buffer, never element by element
/// (raw numbers in a shared-memory argument, encoded values on the wire).
pub(crate) struct ByteString(pub(crate) Vec<u8>);

impl<'de> serde::Deserialize<'de> for ByteString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteString;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<ByteString, E> {
                Ok(ByteString(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<ByteString, E> {
                Ok(ByteString(v))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

/// The kind of `T` when it is a primitive number (a check on its type,
/// for code generic over any element type, which the compiler folds),
/// else `None`.
pub(crate) fn kind_of<T: 'static>() -> Option<Kind> {
    fn is<T: 'static, P: Plain>() -> Option<Kind> {
        (TypeId::of::<T>() == TypeId::of::<P>()).then_some(P::KIND)
    }
    is::<T, f64>()
        .or_else(is::<T, f32>)
        .or_else(is::<T, u8>)
        .or_else(is::<T, i8>)
        .or_else(is::<T, u16>)
        .or_else(is::<T, i16>)
        .or_else(is::<T, u32>)
        .or_else(is::<T, i32>)
        .or_else(is::<T, u64>)
        .or_else(is::<T, i64>)
        .or_else(is::<T, u128>)
        .or_else(is::<T, i128>)
        .or_else(is::<T, usize>)
        .or_else(is::<T, isize>)
}

/// The bytes of a slice whose element type [`kind_of`] found to be a
/// primitive number.
pub(crate) fn bytes_of<T: 'static>(values: &[T]) -> Option<&[u8]> {
    kind_of::<T>()?;
    // SAFETY: `T` is one of the primitive numbers (checked just above on
    // its `TypeId`): no padding, every byte initialized.
    Some(unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
    })
}

/// Whether `T` is `Vec<P>`; `TypeId` needs `'static`, which `Vec<P>` is.
#[cfg(feature = "persist")]
pub(crate) fn is_vec_of<T: ?Sized, P: Plain>() -> bool {
    typeid::of::<T>() == TypeId::of::<Vec<P>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "persist")]
    fn plain_slices_are_recognised_and_nothing_else_is() {
        let v = vec![1.5f64, 2.5];
        let r = &v;
        let (kind, bytes) = plain_slice(&r).unwrap();
        assert_eq!(kind, Kind::F64);
        assert_eq!(bytes.len(), 16);
        let s: &[u16] = &[1, 2, 3];
        assert_eq!(plain_slice(&s).unwrap().0, Kind::U16);
        let strings = vec!["a".to_string()];
        let r = &strings;
        assert!(plain_slice(&r).is_none());
        assert!(
            plain_slice(&v).is_none(),
            "a Vec by value is not a reference"
        );
        assert!(is_vec_of::<Vec<f64>, f64>());
        assert!(!is_vec_of::<Vec<f32>, f64>());
    }

    #[test]
    fn numbers_are_told_from_other_types_by_their_type() {
        assert_eq!(kind_of::<f64>(), Some(Kind::F64));
        assert_eq!(kind_of::<usize>(), Some(Kind::U64));
        assert_eq!(kind_of::<String>(), None);
        assert_eq!(bytes_of(&[1u16, 2]).map(<[u8]>::len), Some(4));
        assert!(bytes_of(&["x"]).is_none());
    }
}
