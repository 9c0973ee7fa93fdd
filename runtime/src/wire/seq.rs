//! Sequences of values in one buffer: a pool chunk's arguments and its
//! values. A sequence of primitive numbers, or of one-number argument
//! tuples `(P,)`, is copied raw (a count, then the bytes); any other is
//! one serde sequence.

use super::codec::{self, CodecError, DECODE_LIMIT};
use crate::plain;
use serde::{de::DeserializeOwned, Serialize};

const SERDE: u8 = 0;
const RAW: u8 = 1;

/// Appends `values` to `out`.
pub(super) fn append<T: Serialize + 'static>(
    values: &[T],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    if let Some(append_singles) = singles::<T>() {
        out.push(RAW);
        out.extend_from_slice(&(values.len() as u64).to_le_bytes());
        append_singles.0(values, out);
        return Ok(());
    }
    match plain::bytes_of(values).filter(|_| cfg!(target_endian = "little")) {
        Some(bytes) => {
            out.push(RAW);
            out.extend_from_slice(&(values.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
            Ok(())
        }
        None => {
            out.push(SERDE);
            codec::encode_append(values, out)
        }
    }
}

/// Appends the values behind `refs`, encoded exactly as [`append`]
/// encodes the values themselves (calls kept apart, in their jobs).
pub(super) fn append_refs<T: Serialize + 'static>(
    refs: &[&T],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let raw = |out: &mut Vec<u8>| {
        out.push(RAW);
        out.extend_from_slice(&(refs.len() as u64).to_le_bytes());
    };
    if let Some((append_singles, _)) = singles::<T>() {
        raw(out);
        for value in refs {
            append_singles(std::slice::from_ref(*value), out);
        }
        return Ok(());
    }
    if plain::kind_of::<T>().is_some() && cfg!(target_endian = "little") {
        raw(out);
        for value in refs {
            let bytes = plain::bytes_of(std::slice::from_ref(*value));
            out.extend_from_slice(bytes.expect("a plain number is raw bytes"));
        }
        return Ok(());
    }
    out.push(SERDE);
    // A sequence of references serializes as the sequence of values.
    codec::encode_append(refs, out)
}

/// Takes a sequence of `T` from the front of `bytes`, moving past it.
pub(super) fn take<T: DeserializeOwned + 'static>(bytes: &mut &[u8]) -> Result<Vec<T>, CodecError> {
    let (&tag, rest) = bytes
        .split_first()
        .ok_or_else(|| CodecError("an empty sequence".into()))?;
    *bytes = rest;
    match tag {
        SERDE => codec::decode_prefix::<Vec<T>>(bytes),
        RAW => match singles::<T>() {
            Some((_, take_singles)) => take_singles(bytes),
            None => take_raw(bytes),
        },
        other => Err(CodecError(format!("a sequence tagged {other}"))),
    }
}

fn take_raw<T: 'static>(bytes: &mut &[u8]) -> Result<Vec<T>, CodecError> {
    if plain::kind_of::<T>().is_none() {
        return Err(CodecError("raw numbers for a type that is not one".into()));
    }
    let (count, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| CodecError("a raw sequence cut short".into()))?;
    let count = u64::from_le_bytes(*count);
    let size = std::mem::size_of::<T>() as u64;
    let len = count
        .checked_mul(size)
        .filter(|&len| len <= rest.len() as u64 && len <= DECODE_LIMIT as u64)
        .ok_or_else(|| CodecError(format!("a raw sequence of {count} numbers does not fit")))?
        as usize;
    let mut values: Vec<T> = Vec::new();
    values
        .try_reserve_exact(count as usize)
        .map_err(|_| CodecError(format!("no memory for {count} numbers")))?;
    // SAFETY: `T` is a primitive number (checked above), so any bytes are
    // a valid `T`; the `Vec` has room for `count` of them, `len` bytes,
    // which `rest` holds; the two do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(rest.as_ptr(), values.as_mut_ptr().cast::<u8>(), len);
        values.set_len(count as usize);
    }
    *bytes = &rest[len..];
    Ok(values)
}

/// Appends and takes `(P,)` tuples as raw numbers.
type Singles<T> = (
    fn(&[T], &mut Vec<u8>),
    fn(&mut &[u8]) -> Result<Vec<T>, CodecError>,
);

/// The raw codec of `T` when it is `(P,)` for a primitive number `P` (a
/// one-argument task's argument tuple).
fn singles<T: 'static>() -> Option<Singles<T>> {
    fn of<T: 'static, P: plain::Plain>() -> Option<Singles<T>> {
        // Two 'static `TypeId`s: the compiler folds the comparison.
        (std::any::TypeId::of::<T>() == std::any::TypeId::of::<(P,)>())
            .then_some((append_singles::<T, P>, take_singles::<T, P>))
    }
    if cfg!(target_endian = "big") {
        return None;
    }
    of::<T, u64>()
        .or_else(of::<T, i64>)
        .or_else(of::<T, f64>)
        .or_else(of::<T, u32>)
        .or_else(of::<T, i32>)
        .or_else(of::<T, f32>)
        .or_else(of::<T, usize>)
        .or_else(of::<T, isize>)
}

fn append_singles<T: 'static, P: plain::Plain>(values: &[T], out: &mut Vec<u8>) {
    debug_assert_eq!(std::any::TypeId::of::<T>(), std::any::TypeId::of::<(P,)>());
    // SAFETY: `singles` hands this out only when `T` is `(P,)`.
    let values: &[(P,)] =
        unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), values.len()) };
    if size_of::<(P,)>() == size_of::<P>() && std::mem::offset_of!((P,), 0) == 0 {
        // SAFETY: a `(P,)` is exactly a `P` at offset 0 with no padding
        // (checked just above, at compile time), so the tuples' memory is
        // that many initialized `P`s.
        let numbers: &[P] =
            unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), values.len()) };
        out.extend_from_slice(plain::as_bytes(numbers));
        return;
    }
    out.reserve(std::mem::size_of_val(values));
    for (p,) in values {
        out.extend_from_slice(plain::as_bytes(std::slice::from_ref(p)));
    }
}

fn take_singles<T: 'static, P: plain::Plain>(bytes: &mut &[u8]) -> Result<Vec<T>, CodecError> {
    let numbers: Vec<P> = take_raw(bytes)?;
    let tuples: Vec<(P,)> = numbers.into_iter().map(|p| (p,)).collect();
    let mut tuples = std::mem::ManuallyDrop::new(tuples);
    // SAFETY: `singles` hands this out only when `T` is `(P,)`, so the
    // `Vec` is of `T` already; `ManuallyDrop` hands its buffer over once.
    Ok(unsafe { Vec::from_raw_parts(tuples.as_mut_ptr().cast(), tuples.len(), tuples.capacity()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_go_raw_and_others_through_serde_and_both_come_back() {
        let mut out = Vec::new();
        append(&[1u64, 2, 3], &mut out).unwrap();
        assert_eq!(out[0], RAW);
        append(&["a".to_string()], &mut out).unwrap();
        append(&[(1.5f64,), (-2.0,)], &mut out).unwrap();
        append(&[(1u8, 2u8)], &mut out).unwrap();
        // Values kept apart encode exactly as the same values together.
        for (whole, each) in [
            (encoded(&[1u64, 2, 3]), encoded_refs(&[&1u64, &2, &3])),
            (
                encoded(&[(1.5f64,), (-2.0,)]),
                encoded_refs(&[&(1.5f64,), &(-2.0,)]),
            ),
            (
                encoded(&["a".to_string()]),
                encoded_refs(&[&"a".to_string()]),
            ),
        ] {
            assert_eq!(whole, each);
        }
        let mut rest = out.as_slice();
        assert_eq!(take::<u64>(&mut rest).unwrap(), [1, 2, 3]);
        assert_eq!(take::<String>(&mut rest).unwrap(), ["a"]);
        assert_eq!(take::<(f64,)>(&mut rest).unwrap(), [(1.5,), (-2.0,)]);
        assert_eq!(take::<(u8, u8)>(&mut rest).unwrap(), [(1, 2)]);
        assert!(rest.is_empty());
    }

    fn encoded<T: Serialize + 'static>(values: &[T]) -> Vec<u8> {
        let mut out = Vec::new();
        append(values, &mut out).unwrap();
        out
    }

    fn encoded_refs<T: Serialize + 'static>(refs: &[&T]) -> Vec<u8> {
        let mut out = Vec::new();
        append_refs(refs, &mut out).unwrap();
        out
    }

    #[test]
    fn a_lying_count_is_an_error_not_an_allocation() {
        let mut bytes = vec![RAW];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(take::<u64>(&mut bytes.as_slice()).is_err());
        assert!(take::<String>(&mut [RAW, 0, 0, 0, 0, 0, 0, 0, 0].as_slice()).is_err());
    }
}
