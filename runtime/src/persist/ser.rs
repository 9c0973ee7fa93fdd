//! Writing a payload: a serde `Serializer` for the format in `format.rs`.
//!
//! Every byte goes through [`Sink`], which counts it and feeds the
//! checksum, so the same serializer both measures a payload (into
//! `io::sink()`) and writes it. Slices and `Vec`s of primitive numbers that
//! serde hands over whole (`collect_seq`) are written as one raw block;
//! other sequences of numbers become raw arrays element by element (the
//! first element's kind decides), so `ndarray`'s element sequences are raw
//! too.

use super::format::{mode, padding, ALIGN, UNKNOWN_LEN};
use crate::error::MAX_DEPTH;
use crate::plain::Kind;
use serde::ser::{self, Impossible, Serialize};
use std::fmt;
use std::io::{self, Write};

/// A raw block is worth its padding from this many bytes (or always, for
/// the dumped value itself, so that it can be memory-mapped).
const RAW_MIN_BYTES: usize = 256;
/// Element by element, a sequence becomes raw from this many elements.
const RAW_MIN_ELEMENTS: usize = 32;

/// A failure to write a payload.
#[derive(Debug)]
pub enum WriteError {
    /// The writer failed.
    Io(io::Error),
    /// The value nests deeper than a load accepts.
    TooDeep,
    /// A `Serialize` impl failed, or asked for something the format cannot hold.
    Encode(String),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Io(e) => write!(f, "{e}"),
            WriteError::TooDeep => write!(f, "nesting deeper than {MAX_DEPTH} levels"),
            WriteError::Encode(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for WriteError {}

impl ser::Error for WriteError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        WriteError::Encode(msg.to_string())
    }
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        WriteError::Io(e)
    }
}

type Result<T> = std::result::Result<T, WriteError>;

/// Counts and checksums what goes to `inner`.
pub(crate) struct Sink<W: Write> {
    inner: W,
    pos: u64,
    hash: xxhash_rust::xxh3::Xxh3,
    /// How deep the value being written is nested, counted as the loader
    /// counts it, so nothing is written that a load would refuse.
    depth: usize,
}

impl<W: Write> Sink<W> {
    /// A sink at payload position 0.
    pub(crate) fn new(inner: W) -> Self {
        Sink {
            inner,
            pos: 0,
            hash: xxhash_rust::xxh3::Xxh3::new(),
            depth: 0,
        }
    }

    /// Goes `levels` deeper; an error past [`MAX_DEPTH`].
    fn enter(&mut self, levels: usize) -> Result<()> {
        self.depth += levels;
        if self.depth > MAX_DEPTH {
            return Err(WriteError::TooDeep);
        }
        Ok(())
    }

    fn leave(&mut self, levels: usize) {
        self.depth -= levels;
    }

    /// Hashes and writes `bytes`. A large block is hashed on a second
    /// thread while this one writes it, so the checksum costs no time on
    /// a machine with a core to spare; smaller ones are hashed chunk by
    /// chunk just before each chunk is written, while it is in cache.
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        const CHUNK: usize = 1 << 20;
        const OVERLAP_FROM: usize = 16 << 20;
        if bytes.len() >= OVERLAP_FROM {
            let inner = &mut self.inner;
            let hash = &mut self.hash;
            let (written, hashed) = std::thread::scope(|s| {
                let hashing = std::thread::Builder::new().spawn_scoped(s, || hash.update(bytes));
                let written = bytes.chunks(CHUNK).try_for_each(|c| inner.write_all(c));
                // `Some(true)`: hashed there; `Some(false)`: the thread
                // panicked; `None`: no thread could be started.
                let hashed = hashing.ok().map(|handle| handle.join().is_ok());
                (written, hashed)
            });
            written?;
            match hashed {
                Some(true) => {}
                // The hasher was never touched: hash here instead.
                None => self.hash.update(bytes),
                Some(false) => {
                    return Err(WriteError::Encode(
                        "the thread checksumming a large block panicked".into(),
                    ))
                }
            }
        } else {
            for chunk in bytes.chunks(CHUNK) {
                self.hash.update(chunk);
                self.inner.write_all(chunk)?;
            }
        }
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<()> {
        const ZEROS: [u8; ALIGN as usize] = [0; ALIGN as usize];
        let n = padding(self.pos);
        self.put(&ZEROS[..n])
    }

    /// The payload's length and checksum, and the writer.
    pub(crate) fn finish(self) -> (u64, u64, W) {
        (self.pos, self.hash.digest(), self.inner)
    }
}

/// Writes `value` to `sink`.
pub(crate) fn write<W: Write, T: Serialize + ?Sized>(sink: &mut Sink<W>, value: &T) -> Result<()> {
    value.serialize(PayloadSerializer(sink))
}

/// The serializer.
pub(crate) struct PayloadSerializer<'a, W: Write>(&'a mut Sink<W>);

/// A sequence being written.
pub(crate) struct Seq<'a, W: Write> {
    sink: &'a mut Sink<W>,
    state: SeqState,
}

enum SeqState {
    /// Length written, mode not yet: it waits for the first element.
    Undecided {
        len: u64,
    },
    Elements,
    Raw {
        kind: Kind,
        left: u64,
    },
    Streamed,
}

/// Tuples, structs and variants: fields in order, `levels` deep.
pub(crate) struct Fields<'a, W: Write> {
    sink: &'a mut Sink<W>,
    levels: usize,
}

impl<'a, W: Write> Fields<'a, W> {
    fn new(sink: &'a mut Sink<W>, levels: usize) -> Result<Self> {
        sink.enter(levels)?;
        Ok(Fields { sink, levels })
    }
}

/// A map: length (or streamed markers), then key, value, key, value.
pub(crate) struct Map<'a, W: Write> {
    sink: &'a mut Sink<W>,
    streamed: bool,
}

impl<'a, W: Write> ser::Serializer for PayloadSerializer<'a, W> {
    type Ok = ();
    type Error = WriteError;
    type SerializeSeq = Seq<'a, W>;
    type SerializeTuple = Fields<'a, W>;
    type SerializeTupleStruct = Fields<'a, W>;
    type SerializeTupleVariant = Fields<'a, W>;
    type SerializeMap = Map<'a, W>;
    type SerializeStruct = Fields<'a, W>;
    type SerializeStructVariant = Fields<'a, W>;

    fn serialize_bool(self, v: bool) -> Result<()> {
        self.0.put(&[u8::from(v)])
    }
    fn serialize_i8(self, v: i8) -> Result<()> {
        self.0.put(&v.to_le_bytes())
    }
    fn serialize_i16(self, v: i16) -> Result<()> {
        self.0.put(&v.to_le_bytes())
    }
    fn serialize_i32(self, v: i32) -> Result<()> {
        self.0.put(&v.to_le_bytes())
    }
    fn serialize_i64(self, v: i64) -> Result<()> {
        self.0.put(&v.to_le_bytes())
    }
    fn serialize_i128(self, v: i128) -> Result<()> {
        self.0.put(&v.to_le_bytes())
    }
    fn serialize_u8(self, v: u8) -> Result<()> {
        self.0.put(&[v])
    }
    fn serialize_u16(self, v: u16) -> Result<()> {
        self.0.put(&v.to_le_bytes())
    }
    fn serialize_u32(self, v: u32) -> Result<()> {
        self.0.put(&v.to_le_bytes())
    }
    fn serialize_u64(self, v: u64) -> Result<()> {
        self.0.put(&v.to_le_bytes())
    }
    fn serialize_u128(self, v: u128) -> Result<()> {
        self.0.put(&v.to_le_bytes())
    }
    fn serialize_f32(self, v: f32) -> Result<()> {
        self.0.put(&v.to_le_bytes())
    }
    fn serialize_f64(self, v: f64) -> Result<()> {
        self.0.put(&v.to_le_bytes())
    }
    fn serialize_char(self, v: char) -> Result<()> {
        self.0.put(&(v as u32).to_le_bytes())
    }
    fn serialize_str(self, v: &str) -> Result<()> {
        self.serialize_bytes(v.as_bytes())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        self.0.put(&(v.len() as u64).to_le_bytes())?;
        self.0.put(v)
    }
    fn serialize_none(self) -> Result<()> {
        self.0.put(&[0])
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        self.0.put(&[1])?;
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<()> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<()> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, index: u32, _: &'static str) -> Result<()> {
        self.0.enter(1)?;
        self.0.leave(1);
        self.0.put(&index.to_le_bytes())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<()> {
        self.0.enter(1)?;
        value.serialize(PayloadSerializer(&mut *self.0))?;
        self.0.leave(1);
        Ok(())
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        value: &T,
    ) -> Result<()> {
        self.0.enter(1)?;
        self.0.put(&index.to_le_bytes())?;
        value.serialize(PayloadSerializer(&mut *self.0))?;
        self.0.leave(1);
        Ok(())
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Seq<'a, W>> {
        self.0.enter(1)?;
        match len {
            Some(n) => {
                self.0.put(&(n as u64).to_le_bytes())?;
                Ok(Seq {
                    sink: self.0,
                    state: SeqState::Undecided { len: n as u64 },
                })
            }
            None => {
                self.0.put(&UNKNOWN_LEN.to_le_bytes())?;
                self.0.put(&[mode::STREAMED])?;
                Ok(Seq {
                    sink: self.0,
                    state: SeqState::Streamed,
                })
            }
        }
    }
    fn serialize_tuple(self, _: usize) -> Result<Fields<'a, W>> {
        Fields::new(self.0, 1)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Fields<'a, W>> {
        Fields::new(self.0, 1)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Fields<'a, W>> {
        self.0.put(&index.to_le_bytes())?;
        Fields::new(self.0, 2)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Map<'a, W>> {
        self.0.enter(1)?;
        let streamed = len.is_none();
        self.0
            .put(&len.map_or(UNKNOWN_LEN, |n| n as u64).to_le_bytes())?;
        Ok(Map {
            sink: self.0,
            streamed,
        })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Fields<'a, W>> {
        Fields::new(self.0, 1)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Fields<'a, W>> {
        self.0.put(&index.to_le_bytes())?;
        Fields::new(self.0, 2)
    }

    fn collect_seq<I>(self, iter: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        if let Some((kind, bytes)) = crate::plain::plain_slice(&iter) {
            if bytes.len() >= RAW_MIN_BYTES || self.0.pos == 0 {
                self.0.enter(1)?;
                self.0.leave(1);
                let len = (bytes.len() / kind.size()) as u64;
                self.0.put(&len.to_le_bytes())?;
                self.0.put(&[mode::RAW, kind as u8])?;
                self.0.pad()?;
                return self.0.put(bytes);
            }
        }
        let iter = iter.into_iter();
        let (lo, hi) = iter.size_hint();
        let mut seq = self.serialize_seq(hi.filter(|h| *h == lo))?;
        for item in iter {
            ser::SerializeSeq::serialize_element(&mut seq, &item)?;
        }
        ser::SerializeSeq::end(seq)
    }
}

impl<W: Write> ser::SerializeSeq for Seq<'_, W> {
    type Ok = ();
    type Error = WriteError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        if let SeqState::Undecided { len } = self.state {
            let number = if len as usize >= RAW_MIN_ELEMENTS {
                value.serialize(NumberOnly(|kind, _: &[u8]| Ok(kind))).ok()
            } else {
                None
            };
            match number {
                Some(kind) => {
                    self.sink.put(&[mode::RAW, kind as u8])?;
                    self.sink.pad()?;
                    self.state = SeqState::Raw { kind, left: len };
                }
                None => {
                    self.sink.put(&[mode::ELEMENTS])?;
                    self.state = SeqState::Elements;
                }
            }
        }
        match &mut self.state {
            SeqState::Raw { kind, left } => {
                if *left == 0 {
                    return Err(WriteError::Encode(
                        "a sequence gave more elements than its length".into(),
                    ));
                }
                *left -= 1;
                let (expected, sink) = (*kind, &mut *self.sink);
                value
                    .serialize(NumberOnly(|kind, bytes: &[u8]| {
                        if kind == expected {
                            sink.put(bytes)
                        } else {
                            not_a_number()
                        }
                    }))
                    .map_err(|_| {
                        WriteError::Encode(format!(
                            "a sequence of {expected:?} numbers holds something else too; dump mixed \
                             elements as a sequence of an enum"
                        ))
                    })
            }
            SeqState::Streamed => {
                self.sink.put(&[1])?;
                value.serialize(PayloadSerializer(self.sink))
            }
            _ => value.serialize(PayloadSerializer(self.sink)),
        }
    }

    fn end(self) -> Result<()> {
        self.sink.leave(1);
        match self.state {
            SeqState::Undecided { len: 0 } => self.sink.put(&[mode::ELEMENTS]),
            SeqState::Undecided { .. } | SeqState::Raw { left: 1.., .. } => Err(
                WriteError::Encode("a sequence gave fewer elements than its length".into()),
            ),
            SeqState::Streamed => self.sink.put(&[0]),
            _ => Ok(()),
        }
    }
}

macro_rules! fields {
    ($($trait:ident :: $method:ident ($($name:ident: $ty:ty)?)),* $(,)?) => {$(
        impl<W: Write> ser::$trait for Fields<'_, W> {
            type Ok = ();
            type Error = WriteError;
            fn $method<T: Serialize + ?Sized>(&mut self, $($name: $ty,)? value: &T) -> Result<()> {
                value.serialize(PayloadSerializer(self.sink))
            }
            fn end(self) -> Result<()> {
                self.sink.leave(self.levels);
                Ok(())
            }
        }
    )*};
}

fields!(
    SerializeTuple::serialize_element(),
    SerializeTupleStruct::serialize_field(),
    SerializeTupleVariant::serialize_field(),
    SerializeStruct::serialize_field(_name: &'static str),
    SerializeStructVariant::serialize_field(_name: &'static str),
);

impl<W: Write> ser::SerializeMap for Map<'_, W> {
    type Ok = ();
    type Error = WriteError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        if self.streamed {
            self.sink.put(&[1])?;
        }
        key.serialize(PayloadSerializer(self.sink))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        value.serialize(PayloadSerializer(self.sink))
    }
    fn end(self) -> Result<()> {
        self.sink.leave(1);
        if self.streamed {
            self.sink.put(&[0])?;
        }
        Ok(())
    }
}

/// A serializer that accepts one primitive number and hands its kind and
/// little-endian bytes to `F`; anything else is an error. It probes a
/// sequence's first element, and writes the elements of a raw array.
struct NumberOnly<F>(F);

fn not_a_number<R>() -> Result<R> {
    Err(WriteError::Encode("not a number".into()))
}

macro_rules! numbers {
    ($($method:ident: $ty:ty => $kind:ident),* $(,)?) => {
        $(fn $method(self, v: $ty) -> Result<R> {
            (self.0)(Kind::$kind, &v.to_le_bytes())
        })*
    };
}

macro_rules! refused {
    ($($method:ident($($arg:ty),*) -> $out:ty),* $(,)?) => {
        $(fn $method(self, $(_: $arg),*) -> Result<$out> {
            not_a_number()
        })*
    };
}

impl<R, F: FnOnce(Kind, &[u8]) -> Result<R>> ser::Serializer for NumberOnly<F> {
    type Ok = R;
    type Error = WriteError;
    type SerializeSeq = Impossible<R, WriteError>;
    type SerializeTuple = Impossible<R, WriteError>;
    type SerializeTupleStruct = Impossible<R, WriteError>;
    type SerializeTupleVariant = Impossible<R, WriteError>;
    type SerializeMap = Impossible<R, WriteError>;
    type SerializeStruct = Impossible<R, WriteError>;
    type SerializeStructVariant = Impossible<R, WriteError>;

    numbers!(
        serialize_u8: u8 => U8, serialize_i8: i8 => I8, serialize_u16: u16 => U16,
        serialize_i16: i16 => I16, serialize_u32: u32 => U32, serialize_i32: i32 => I32,
        serialize_u64: u64 => U64, serialize_i64: i64 => I64, serialize_u128: u128 => U128,
        serialize_i128: i128 => I128, serialize_f32: f32 => F32, serialize_f64: f64 => F64,
    );
    refused!(
        serialize_bool(bool) -> R,
        serialize_char(char) -> R,
        serialize_str(&str) -> R,
        serialize_bytes(&[u8]) -> R,
        serialize_none() -> R,
        serialize_unit() -> R,
        serialize_unit_struct(&'static str) -> R,
        serialize_unit_variant(&'static str, u32, &'static str) -> R,
        serialize_seq(Option<usize>) -> Self::SerializeSeq,
        serialize_tuple(usize) -> Self::SerializeTuple,
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct,
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant,
        serialize_map(Option<usize>) -> Self::SerializeMap,
        serialize_struct(&'static str, usize) -> Self::SerializeStruct,
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant,
    );
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<R> {
        not_a_number()
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, _: &T) -> Result<R> {
        not_a_number()
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<R> {
        not_a_number()
    }
}
