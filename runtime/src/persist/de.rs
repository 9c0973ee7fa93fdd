//! Reading a payload: a serde `Deserializer` over the payload's bytes.
//!
//! Every read is checked against what is left, so no length in the data
//! can make it read past the end or allocate for bytes that are not there:
//! strings and byte strings are borrowed from the payload, and sequence
//! lengths are only hints that serde caps. Nesting is limited to
//! [`MAX_DEPTH`], so a hostile file cannot overflow the stack through a
//! recursive type. Any mismatch is an error, never a panic.

use super::format::{mode, padding, UNKNOWN_LEN};
use crate::plain::Kind;
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use std::fmt;

use crate::error::MAX_DEPTH;

/// Elements that take no bytes (`Vec<()>`) can outnumber the bytes left by
/// at most this many.
const SPARE_EMPTY_ELEMENTS: u64 = 1 << 20;

/// What is wrong with a payload.
#[derive(Debug)]
pub struct ReadError(pub String);

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReadError {}

impl de::Error for ReadError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ReadError(msg.to_string())
    }
}

type Result<T> = std::result::Result<T, ReadError>;

/// A cursor over a payload.
pub struct Reader<'de> {
    bytes: &'de [u8],
    pos: usize,
    depth: usize,
    max_depth: usize,
}

impl<'de> Reader<'de> {
    /// A reader at the payload's start that accepts nesting up to
    /// `max_depth` (never more than [`MAX_DEPTH`]).
    pub fn new(bytes: &'de [u8], max_depth: usize) -> Self {
        Reader {
            bytes,
            pos: 0,
            depth: 0,
            max_depth: max_depth.min(MAX_DEPTH),
        }
    }

    /// Whether every byte was read.
    pub fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        if n > self.left() {
            return Err(ReadError(format!(
                "the payload ends {} bytes early (wanted {n} at offset {})",
                n - self.left(),
                self.pos
            )));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn len_bytes(&mut self) -> Result<&'de [u8]> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| ReadError(format!("a length of {n} bytes")))?;
        self.take(n)
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(ReadError(format!(
                "nesting deeper than {} levels",
                self.max_depth
            )));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// A count of elements that cannot be more than the bytes left allow.
    fn count(&self, n: u64) -> Result<u64> {
        if n > self.left() as u64 + SPARE_EMPTY_ELEMENTS {
            return Err(ReadError(format!(
                "a length of {n} elements with only {} bytes left",
                self.left()
            )));
        }
        Ok(n)
    }
}

macro_rules! number {
    ($($method:ident: $ty:ty => $visit:ident),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            visitor.$visit(<$ty>::from_le_bytes(self.array()?))
        })*
    };
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = ReadError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(ReadError(
            "this format is not self-describing: load into a concrete type (not serde_json::Value or an untagged enum)"
                .into(),
        ))
    }

    number!(
        deserialize_i8: i8 => visit_i8, deserialize_i16: i16 => visit_i16,
        deserialize_i32: i32 => visit_i32, deserialize_i64: i64 => visit_i64,
        deserialize_i128: i128 => visit_i128, deserialize_u8: u8 => visit_u8,
        deserialize_u16: u16 => visit_u16, deserialize_u32: u32 => visit_u32,
        deserialize_u64: u64 => visit_u64, deserialize_u128: u128 => visit_u128,
        deserialize_f32: f32 => visit_f32, deserialize_f64: f64 => visit_f64,
    );

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.u8()? {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            other => Err(ReadError(format!("{other} is not a bool"))),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let code = self.u32()?;
        let c =
            char::from_u32(code).ok_or_else(|| ReadError(format!("{code:#x} is not a char")))?;
        visitor.visit_char(c)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let bytes = self.len_bytes()?;
        let s = std::str::from_utf8(bytes)
            .map_err(|e| ReadError(format!("a string is not UTF-8: {e}")))?;
        visitor.visit_borrowed_str(s)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let bytes = self.len_bytes()?;
        visitor.visit_borrowed_bytes(bytes)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.u8()? {
            0 => visitor.visit_none(),
            // Not a level: a recursive type nests through a struct, enum,
            // tuple or sequence, which are counted.
            1 => visitor.visit_some(&mut *self),
            other => Err(ReadError(format!("{other} is not an option tag"))),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.enter()?;
        let value = visitor.visit_newtype_struct(&mut *self);
        self.leave();
        value
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.u64()?;
        self.enter()?;
        let value = if len == UNKNOWN_LEN {
            match self.u8()? {
                mode::STREAMED => visitor.visit_seq(Streamed { reader: self }),
                other => Err(ReadError(format!(
                    "mode {other} for a sequence of unknown length"
                ))),
            }
        } else {
            match self.u8()? {
                mode::ELEMENTS => {
                    let left = self.count(len)?;
                    visitor.visit_seq(Counted { reader: self, left })
                }
                mode::RAW => {
                    let kind = Kind::from_byte(self.u8()?)
                        .ok_or_else(|| ReadError("unknown raw element kind".into()))?;
                    self.take(padding(self.pos as u64))?;
                    let bytes = usize::try_from(len)
                        .ok()
                        .and_then(|n| n.checked_mul(kind.size()))
                        .ok_or_else(|| ReadError(format!("a raw array of {len} elements")))?;
                    let data = self.take(bytes)?;
                    visitor.visit_seq(Raw { data, kind })
                }
                other => Err(ReadError(format!("unknown sequence mode {other}"))),
            }
        };
        self.leave();
        value
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        self.enter()?;
        let value = visitor.visit_seq(Counted {
            reader: &mut *self,
            left: len as u64,
        });
        self.leave();
        value
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.u64()?;
        self.enter()?;
        let value = if len == UNKNOWN_LEN {
            visitor.visit_map(Streamed { reader: &mut *self })
        } else {
            let left = self.count(len)?;
            visitor.visit_map(Counted {
                reader: &mut *self,
                left,
            })
        };
        self.leave();
        value
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(fields.len(), visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.enter()?;
        let value = visitor.visit_enum(&mut *self);
        self.leave();
        value
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_u32(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(ReadError("this format cannot skip unknown data".into()))
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// A known number of elements, fields or entries.
struct Counted<'a, 'de> {
    reader: &'a mut Reader<'de>,
    left: u64,
}

impl<'de> de::SeqAccess<'de> for Counted<'_, 'de> {
    type Error = ReadError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.reader).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        usize::try_from(self.left).ok()
    }
}

impl<'de> de::MapAccess<'de> for Counted<'_, 'de> {
    type Error = ReadError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.reader).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.reader)
    }
    fn size_hint(&self) -> Option<usize> {
        usize::try_from(self.left).ok()
    }
}

/// Elements or entries each preceded by 1, ended by 0.
struct Streamed<'a, 'de> {
    reader: &'a mut Reader<'de>,
}

impl Streamed<'_, '_> {
    fn more(&mut self) -> Result<bool> {
        match self.reader.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(ReadError(format!("{other} is not a stream marker"))),
        }
    }
}

impl<'de> de::SeqAccess<'de> for Streamed<'_, 'de> {
    type Error = ReadError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if !self.more()? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.reader).map(Some)
    }
}

impl<'de> de::MapAccess<'de> for Streamed<'_, 'de> {
    type Error = ReadError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if !self.more()? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.reader).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.reader)
    }
}

/// The elements of a raw array.
struct Raw<'de> {
    data: &'de [u8],
    kind: Kind,
}

impl<'de> de::SeqAccess<'de> for Raw<'de> {
    type Error = ReadError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.data.is_empty() {
            return Ok(None);
        }
        let (element, rest) = self.data.split_at(self.kind.size());
        self.data = rest;
        seed.deserialize(RawElement {
            bytes: element,
            kind: self.kind,
        })
        .map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.data.len() / self.kind.size())
    }
}

/// One number of a raw array: it answers whatever number type is asked
/// for with its own, and serde's number visitors convert or refuse.
struct RawElement<'de> {
    bytes: &'de [u8],
    kind: Kind,
}

impl<'de> de::Deserializer<'de> for RawElement<'de> {
    type Error = ReadError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        fn le<const N: usize>(b: &[u8]) -> [u8; N] {
            b.try_into().expect("the kind's size")
        }
        let b = self.bytes;
        match self.kind {
            Kind::U8 => visitor.visit_u8(b[0]),
            Kind::I8 => visitor.visit_i8(b[0] as i8),
            Kind::U16 => visitor.visit_u16(u16::from_le_bytes(le(b))),
            Kind::I16 => visitor.visit_i16(i16::from_le_bytes(le(b))),
            Kind::U32 => visitor.visit_u32(u32::from_le_bytes(le(b))),
            Kind::I32 => visitor.visit_i32(i32::from_le_bytes(le(b))),
            Kind::U64 => visitor.visit_u64(u64::from_le_bytes(le(b))),
            Kind::I64 => visitor.visit_i64(i64::from_le_bytes(le(b))),
            Kind::U128 => visitor.visit_u128(u128::from_le_bytes(le(b))),
            Kind::I128 => visitor.visit_i128(i128::from_le_bytes(le(b))),
            Kind::F32 => visitor.visit_f32(f32::from_le_bytes(le(b))),
            Kind::F64 => visitor.visit_f64(f64::from_le_bytes(le(b))),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> de::EnumAccess<'de> for &mut Reader<'de> {
    type Error = ReadError;
    type Variant = Self;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let index = self.u32()?;
        let value = seed.deserialize(IntoDeserializer::<ReadError>::into_deserializer(index))?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut Reader<'de> {
    type Error = ReadError;
    fn unit_variant(self) -> Result<()> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(self, len, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(self, fields.len(), visitor)
    }
}
