//! Results that are a `Vec` of numbers: never encoded element by element.
//!
//! Such a result's value frame holds a tag, then either the raw bytes
//! (`INLINE`, at or under `max_nbytes`) or the id and length of a sealed
//! segment the worker made and passed on its socket just before the frame
//! (`SEGMENT`, over `max_nbytes`). The parent's reader thread reads the
//! numbers once, into a `Vec` allocated fallibly (reading, not mapping, so
//! the `Vec` is the only memory the result takes in the parent), and
//! closes the segment, which the kernel then frees.

use super::codec::{CodecError, DECODE_LIMIT};
use super::{write_failure, JobFailure, KIND_VALUE, MAX_FRAME, VALUE_HEAD};
use crate::plain::{self, Plain};
use crate::shm::{self, Segment};
use std::any::TypeId;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;

const INLINE: u8 = 0;
const SEGMENT: u8 = 1;

/// A result writer and reader for `T`.
pub(super) type Fns<T> = (
    fn(&mut dyn Write, u64, &T) -> io::Result<()>,
    fn(&mut dyn Read) -> Result<T, CodecError>,
);

/// The raw writer and reader when `T` is `Vec<P>` for a primitive number `P`.
pub(super) fn fns<T: 'static>() -> Option<Fns<T>> {
    fn of<T: 'static, P: Plain>() -> Option<Fns<T>> {
        // `TypeId::of` of two 'static types: the compiler folds the
        // comparison, so a task's codec table costs nothing per call.
        (TypeId::of::<T>() == TypeId::of::<Vec<P>>())
            .then_some((write_vec::<T, P>, read_vec::<T, P>))
    }
    if cfg!(target_endian = "big") {
        return None;
    }
    of::<T, f64>()
        .or_else(of::<T, f32>)
        .or_else(of::<T, u8>)
        .or_else(of::<T, i8>)
        .or_else(of::<T, u16>)
        .or_else(of::<T, i16>)
        .or_else(of::<T, u32>)
        .or_else(of::<T, i32>)
        .or_else(of::<T, u64>)
        .or_else(of::<T, i64>)
        .or_else(of::<T, u128>)
        .or_else(of::<T, i128>)
        .or_else(of::<T, usize>)
        .or_else(of::<T, isize>)
}

fn write_vec<T: 'static, P: Plain>(w: &mut dyn Write, batch: u64, value: &T) -> io::Result<()> {
    debug_assert_eq!(TypeId::of::<T>(), TypeId::of::<Vec<P>>());
    // SAFETY: `fns` hands out this writer only when `T` is `Vec<P>`.
    let values: &Vec<P> = unsafe { &*(value as *const T).cast::<Vec<P>>() };
    let bytes = plain::as_bytes(values);
    if bytes.len() as u64 > shm::result_threshold() {
        if let Some(segment) = passed_segment(bytes) {
            w.write_all(&(VALUE_HEAD + 17).to_le_bytes())?;
            w.write_all(&[KIND_VALUE])?;
            w.write_all(&batch.to_le_bytes())?;
            w.write_all(&[SEGMENT])?;
            w.write_all(&segment.id().to_le_bytes())?;
            return w.write_all(&(bytes.len() as u64).to_le_bytes());
        }
    }
    let len = VALUE_HEAD + 9 + bytes.len() as u64;
    if len > MAX_FRAME {
        let why = format!(
            "the result is {} bytes, over the {MAX_FRAME}-byte frame limit (a result over \
             max_nbytes returns through shared memory; is max_nbytes off?)",
            bytes.len()
        );
        return write_failure(w, batch, &JobFailure::EncodeResult(why));
    }
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&[KIND_VALUE])?;
    w.write_all(&batch.to_le_bytes())?;
    w.write_all(&[INLINE])?;
    w.write_all(&(values.len() as u64).to_le_bytes())?;
    w.write_all(bytes)
}

/// A segment holding `bytes`, already passed to the parent; `None` when
/// it could not be made or passed (the result then goes inline).
fn passed_segment(bytes: &[u8]) -> Option<Segment> {
    let segment = Segment::create(bytes).ok()?;
    shm::worker_pass_result(&segment).ok()?;
    Some(segment)
}

fn read_u64(r: &mut dyn Read) -> Result<u64, CodecError> {
    let mut word = [0u8; 8];
    r.read_exact(&mut word).map_err(short)?;
    Ok(u64::from_le_bytes(word))
}

fn short(e: io::Error) -> CodecError {
    CodecError(format!("a numeric result cut short: {e}"))
}

/// An empty `Vec` with room for exactly `count` numbers, allocated fallibly.
fn room_for<P: Plain>(count: u64) -> Result<Vec<P>, CodecError> {
    let bytes = count.saturating_mul(std::mem::size_of::<P>() as u64);
    if bytes > DECODE_LIMIT as u64 * 64 {
        return Err(CodecError(format!("a numeric result claims {bytes} bytes")));
    }
    let mut values: Vec<P> = Vec::new();
    values
        .try_reserve_exact(count as usize)
        .map_err(|_| CodecError(format!("out of memory for a result of {bytes} bytes")))?;
    Ok(values)
}

/// A `Vec` of `count` zeroed numbers, allocated fallibly.
fn zeroed<P: Plain>(count: u64) -> Result<Vec<P>, CodecError> {
    let mut values = room_for::<P>(count)?;
    // SAFETY: the room for `count` numbers was reserved; all-zero bytes
    // are a valid primitive number.
    unsafe {
        std::ptr::write_bytes(values.as_mut_ptr(), 0, count as usize);
        values.set_len(count as usize);
    }
    Ok(values)
}

/// The numbers of segment `id`, `len` bytes, read straight into a new `Vec`.
fn from_segment<P: Plain>(id: u64, len: u64) -> Result<Vec<P>, CodecError> {
    let size = std::mem::size_of::<P>() as u64;
    if len % size != 0 {
        shm::discard_result(id);
        return Err(CodecError(format!(
            "a {len}-byte segment of {size}-byte numbers"
        )));
    }
    let count = (len / size) as usize;
    let mut values = match room_for::<P>(len / size) {
        Ok(values) => values,
        Err(e) => {
            // Take the descriptor off the socket all the same, so the
            // next result finds its own there, not this one's.
            shm::discard_result(id);
            return Err(e);
        }
    };
    let spare = &mut values.spare_capacity_mut()[..count];
    // SAFETY: the spare room of `count` numbers seen as its bytes, still
    // uninitialized; `MaybeUninit<u8>` has no validity requirement.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(
            spare.as_mut_ptr().cast::<std::mem::MaybeUninit<u8>>(),
            len as usize,
        )
    };
    shm::receive_result_into(id, bytes).map_err(CodecError)?;
    // SAFETY: every byte of the `count` numbers was written just above,
    // and any bytes are a valid primitive number.
    unsafe { values.set_len(count) };
    Ok(values)
}

fn read_vec<T: 'static, P: Plain>(r: &mut dyn Read) -> Result<T, CodecError> {
    let mut tag = [0u8];
    r.read_exact(&mut tag).map_err(short)?;
    let values: Vec<P> = match tag[0] {
        INLINE => {
            let count = read_u64(r)?;
            if count.saturating_mul(std::mem::size_of::<P>() as u64) > MAX_FRAME {
                return Err(CodecError(format!(
                    "an inline result claims {count} numbers"
                )));
            }
            let mut values = zeroed::<P>(count)?;
            r.read_exact(plain::as_bytes_mut(&mut values))
                .map_err(short)?;
            values
        }
        SEGMENT => {
            let id = read_u64(r)?;
            let len = read_u64(r)?;
            from_segment::<P>(id, len)?
        }
        other => return Err(CodecError(format!("unknown numeric result form {other}"))),
    };
    debug_assert_eq!(TypeId::of::<T>(), TypeId::of::<Vec<P>>());
    let values = ManuallyDrop::new(values);
    // SAFETY: `fns` hands out this reader only when `T` is `Vec<P>`; the
    // vector is moved out exactly once (the original is never dropped).
    Ok(unsafe { std::ptr::read((&*values as *const Vec<P>).cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_results_go_raw_and_other_types_keep_serde() {
        assert!(fns::<Vec<String>>().is_none());
        assert!(fns::<(Vec<f64>, u8)>().is_none());
        let (write, read) = fns::<Vec<f64>>().unwrap();
        let value: Vec<f64> = (0..1000).map(|i| i as f64 * 0.5).collect();
        let mut wire = Vec::new();
        write(&mut wire, 4, &value).unwrap();
        // Length, kind, batch, tag, count, then 8 bytes a number.
        assert_eq!(wire.len(), 8 + 1 + 8 + 1 + 8 + 8000);
        let mut r = &wire[8 + 1 + 8..];
        assert_eq!(read(&mut r).unwrap(), value);
        let (_, read_u16) = fns::<Vec<u16>>().unwrap();
        let cut = [INLINE, 9, 0, 0, 0, 0, 0, 0, 0, 1, 2];
        assert!(read_u16(&mut &cut[..]).is_err(), "nine numbers, one byte");
        let huge = [INLINE, 255, 255, 255, 255, 255, 255, 255, 255];
        assert!(read_u16(&mut &huge[..]).is_err());
    }
}
