//! Reading a dump: the header checked, the payload read and decoded with
//! every size bounded by the file and by [`Limits`], every buffer whose
//! size comes from the file allocated fallibly.

use super::format::{fingerprint, mode, padding, trailer, Header, HEADER, TRAILER};
use super::{de, Compression, Limits, PersistError};
use crate::plain::{self, Kind, Plain};
use serde::de::DeserializeOwned;
use std::io::{self, Read};
use std::path::Path;

/// Loads a `T` from `path`, whatever its codec (read from the header),
/// within the default [`Limits`]. Only a regular file is read (a symlink
/// to one is followed); anything else is an error before a byte is read.
///
/// ```
/// let path = std::env::temp_dir().join(format!("parjob-doc-load-{}", std::process::id()));
/// parjob_runtime::persist::dump(&vec![1u32, 2, 3], &path).unwrap();
/// let back: Vec<u32> = parjob_runtime::persist::load(&path).unwrap();
/// assert_eq!(back, [1, 2, 3]);
/// assert!(parjob_runtime::persist::load::<Vec<u32>>("/dev/zero").is_err());
/// # std::fs::remove_file(path).unwrap();
/// ```
pub fn load<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T, PersistError> {
    load_with(path, Limits::default())
}

/// Loads a `T` from `path` within `limits`: the bound to use for a file
/// you did not write.
///
/// ```
/// use parjob_runtime::persist::{dump, load_with, Limits, PersistError};
/// let path = std::env::temp_dir().join(format!("parjob-doc-limits-{}", std::process::id()));
/// dump(&vec![0u8; 4096], &path).unwrap();
/// let small = Limits { max_bytes: 1024, ..Limits::default() };
/// let refused = load_with::<Vec<u8>>(&path, small);
/// assert!(matches!(refused, Err(PersistError::TooLarge { limit: 1024, .. })));
/// # std::fs::remove_file(path).unwrap();
/// ```
pub fn load_with<T: DeserializeOwned>(
    path: impl AsRef<Path>,
    limits: Limits,
) -> Result<T, PersistError> {
    let (file, len) = crate::files::open_regular(path.as_ref())?;
    load_checked(file, true, Some(len), limits)
}

/// Loads a `T` from a reader, within the default [`Limits`].
pub fn load_from<T: DeserializeOwned, R: Read>(reader: R) -> Result<T, PersistError> {
    load_checked(reader, true, None, Limits::default())
}

/// Loads a `T` from a reader within `limits` (a socket or a pipe: a stream
/// that could go on forever is cut at `limits.max_bytes`).
pub fn load_from_with<T: DeserializeOwned, R: Read>(
    reader: R,
    limits: Limits,
) -> Result<T, PersistError> {
    load_checked(reader, true, None, limits)
}

/// Loads a `T` from `path` without the type-fingerprint check (for a file
/// whose type name changed, say after a crate rename or a compiler
/// upgrade). Every other check still applies.
pub fn load_unchecked<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T, PersistError> {
    let (file, len) = crate::files::open_regular(path.as_ref())?;
    load_checked(file, false, Some(len), Limits::default())
}

fn load_checked<T: DeserializeOwned, R: Read>(
    mut reader: R,
    check_type: bool,
    file_len: Option<u64>,
    limits: Limits,
) -> Result<T, PersistError> {
    let mut head = Vec::with_capacity(HEADER);
    (&mut reader).take(HEADER as u64).read_to_end(&mut head)?;
    let header = match Header::decode(&head) {
        // A whole dump inside a compressed stream (written through a
        // `GzEncoder`, say): read through the codec its magic names.
        Err(PersistError::NotADump) => match Compression::sniff(&head) {
            Some(codec) => {
                let inner = Compression::decoder(codec, io::Cursor::new(head).chain(reader))?;
                return load_inner::<T>(inner, check_type, limits);
            }
            None => return Err(PersistError::NotADump),
        },
        other => other?,
    };
    if header.kind != super::format::KIND_DUMP {
        return Err(PersistError::NotADump);
    }
    if check_type && header.fingerprint != fingerprint::<T>() {
        return Err(PersistError::WrongType {
            expected: std::any::type_name::<T>().to_string(),
        });
    }
    if header.payload_len > limits.max_bytes {
        return Err(PersistError::TooLarge {
            bytes: header.payload_len,
            limit: limits.max_bytes,
        });
    }
    if header.codec == Compression::None.tag() {
        // Stored bytes are the payload: read it as it streams.
        let available = file_len.map(|n| n.saturating_sub((HEADER + TRAILER) as u64));
        let value = read_payload::<T>(&mut reader, &header, true, available, limits)?;
        let mut end = [0u8; TRAILER];
        read_exact_or_truncated(&mut reader, &mut end, &header, header.payload_len)?;
        if u64::from_le_bytes(end) != trailer(&header, header.checksum) {
            return Err(PersistError::Corrupt(
                "the trailer does not match the header and payload".into(),
            ));
        }
        return at_end(&mut reader).map(|()| value);
    }
    // Compressed: the stored bytes are checked whole before any of them is
    // decompressed. They are read as they come, so a header cannot make
    // this allocate more than the file holds, nor a stream more than the
    // limit.
    let most = limits.max_bytes.saturating_add(TRAILER as u64);
    let stored = read_bounded(&mut reader, most.saturating_add(1))?;
    if stored.len() as u64 > most {
        return Err(PersistError::TooLarge {
            bytes: stored.len() as u64,
            limit: limits.max_bytes,
        });
    }
    if stored.len() < TRAILER {
        return Err(PersistError::Truncated {
            expected: (HEADER + TRAILER) as u64,
            found: (HEADER + stored.len()) as u64,
        });
    }
    let (body, end) = stored.split_at(stored.len() - TRAILER);
    let expected = trailer(&header, xxhash_rust::xxh3::xxh3_64(body));
    if expected != u64::from_le_bytes(end.try_into().expect("8 bytes")) {
        return Err(PersistError::Corrupt(
            "the header or the stored bytes do not match the trailer".into(),
        ));
    }
    // The header and stored bytes are exactly those written, and
    // decompression is deterministic, so the payload is too: its own
    // checksum would only repeat the trailer's verdict. A plausible size
    // for it bounds the first allocation (the rest grows as data comes).
    let mut decoder = Compression::slice_decoder(header.codec, body)?;
    let plausible = (body.len() as u64).saturating_mul(64);
    let value = read_payload::<T>(&mut decoder, &header, false, Some(plausible), limits)?;
    at_end(&mut decoder).map(|()| value)
}

/// A dump inside a compressed stream: the same checks, with no further
/// unwrapping (a dump compressed twice over is refused as not a dump).
fn load_inner<T: DeserializeOwned>(
    mut inner: Box<dyn Read + '_>,
    check_type: bool,
    limits: Limits,
) -> Result<T, PersistError> {
    let mut head = Vec::with_capacity(HEADER);
    (&mut inner).take(HEADER as u64).read_to_end(&mut head)?;
    Header::decode(&head)?;
    load_checked(io::Cursor::new(head).chain(inner), check_type, None, limits)
}

fn at_end(r: &mut dyn Read) -> Result<(), PersistError> {
    let mut extra = [0u8; 1];
    loop {
        match r.read(&mut extra) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                return Err(PersistError::Corrupt(
                    "bytes after the end of the dump".into(),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads and decodes the (uncompressed) payload, checking its checksum
/// when `verify` (when nothing checked these bytes already).
fn read_payload<T: DeserializeOwned>(
    r: &mut dyn Read,
    header: &Header,
    verify: bool,
    available: Option<u64>,
    limits: Limits,
) -> Result<T, PersistError> {
    if let Some(value) = read_plain_vec::<T>(r, header, verify, available)? {
        return Ok(value);
    }
    // Read what is there, growing the buffer only as bytes arrive: a
    // header that claims more than the file holds allocates nothing extra.
    let bytes = read_bounded(r, header.payload_len)?;
    if bytes.len() as u64 != header.payload_len {
        return Err(PersistError::Truncated {
            expected: header.payload_len,
            found: bytes.len() as u64,
        });
    }
    if verify && xxhash_rust::xxh3::xxh3_64(&bytes) != header.checksum {
        return Err(PersistError::Corrupt("checksum mismatch".into()));
    }
    let mut reader = de::Reader::new(&bytes, limits.max_depth);
    let value = T::deserialize(&mut reader).map_err(|e| PersistError::Corrupt(e.0))?;
    if !reader.at_end() {
        return Err(PersistError::Corrupt("bytes left after the value".into()));
    }
    Ok(value)
}

/// The top-level `Vec` of numbers, read straight into its buffer.
fn read_plain_vec<T: DeserializeOwned>(
    r: &mut dyn Read,
    header: &Header,
    verify: bool,
    available: Option<u64>,
) -> Result<Option<T>, PersistError> {
    macro_rules! try_kinds {
        ($($p:ty),*) => {$(
            if plain::is_vec_of::<T, $p>() {
                let v: Vec<$p> = read_raw_array(r, header, verify, available)?;
                let v = std::mem::ManuallyDrop::new(v);
                // SAFETY: `T` is `Vec<$p>` (checked by `TypeId`), so this
                // moves the vector out as its own type.
                return Ok(Some(unsafe { std::ptr::read(&*v as *const Vec<$p> as *const T) }));
            }
        )*};
    }
    try_kinds!(f64, f32, u8, i8, u16, i16, u32, i32, u64, i64, u128, i128, usize, isize);
    Ok(None)
}

/// Reads a raw array payload (`len`, mode, kind, padding, bytes) into a
/// `Vec<P>`, checking the checksum as it goes.
fn read_raw_array<P: Plain>(
    r: &mut dyn Read,
    header: &Header,
    verify: bool,
    available: Option<u64>,
) -> Result<Vec<P>, PersistError> {
    let mut hash = xxhash_rust::xxh3::Xxh3::new();
    let mut front = [0u8; 10];
    read_exact_or_truncated(r, &mut front, header, 0)?;
    hash.update(&front);
    let len = u64::from_le_bytes(front[..8].try_into().expect("8 bytes"));
    if front[8] != mode::RAW || Kind::from_byte(front[9]) != Some(P::KIND) {
        return Err(PersistError::Corrupt(
            "the array is not stored raw with its element type".into(),
        ));
    }
    let pad = padding(10);
    let mut zeros = [0u8; 64];
    read_exact_or_truncated(r, &mut zeros[..pad], header, 10)?;
    hash.update(&zeros[..pad]);
    let size = std::mem::size_of::<P>() as u64;
    let expected = len
        .checked_mul(size)
        .and_then(|b| b.checked_add(10 + pad as u64));
    if expected != Some(header.payload_len) {
        return Err(PersistError::Corrupt(format!(
            "an array of {len} elements in a payload of {} bytes",
            header.payload_len
        )));
    }
    // The first allocation is what the file can back (the whole array when
    // it fits in the bytes known to be there, else 1 MiB), zeroed by the
    // allocator (fresh pages, no memset). Past it the vector doubles as
    // data arrives, so a length the data does not back costs at most the
    // memory of the data read so far, twice.
    let total = usize::try_from(len).map_err(|_| PersistError::OutOfMemory {
        bytes: header.payload_len,
    })?;
    let backed = available.unwrap_or(0).max(1 << 20) / size;
    let mut values: Vec<P> = zeroed_vec(total.min(backed as usize))?;
    let mut start = 0;
    loop {
        let bytes = plain::as_bytes_mut(&mut values[start..]);
        let at = 10 + pad as u64 + start as u64 * size;
        super::fill::fill(
            bytes,
            |chunk, from| read_exact_or_truncated(r, chunk, header, at + from as u64),
            |chunk| {
                if verify {
                    hash.update(chunk);
                }
            },
        )?;
        start = values.len();
        if start == total {
            break;
        }
        let next = total.min(start.saturating_mul(2));
        values
            .try_reserve_exact(next - start)
            .map_err(|_| out_of_memory::<P>(next))?;
        values.resize(next, zero::<P>());
    }
    if verify && hash.digest() != header.checksum {
        return Err(PersistError::Corrupt("checksum mismatch".into()));
    }
    Ok(values)
}

fn out_of_memory<P>(elements: usize) -> PersistError {
    PersistError::OutOfMemory {
        bytes: (elements as u64).saturating_mul(std::mem::size_of::<P>() as u64),
    }
}

/// `n` zeros, allocated fallibly and zeroed by the allocator (fresh pages
/// from the kernel need no memset).
fn zeroed_vec<P: Plain>(n: usize) -> Result<Vec<P>, PersistError> {
    if n == 0 || std::mem::size_of::<P>() == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<P>(n).map_err(|_| out_of_memory::<P>(n))?;
    // SAFETY: the layout has a non-zero size (checked above).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<P>();
    if ptr.is_null() {
        return Err(out_of_memory::<P>(n));
    }
    // SAFETY: `ptr` was allocated by the global allocator with the layout
    // of `[P; n]`, which is what a `Vec<P>` of capacity `n` owns, and its
    // `n` elements are zero bytes, a valid `P`.
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

/// Reads at most `max` bytes, growing the buffer only as bytes arrive and
/// fallibly: memory the system refuses is `OutOfMemory`, not an abort.
fn read_bounded(r: &mut dyn Read, max: u64) -> Result<Vec<u8>, PersistError> {
    const FIRST: u64 = 64 << 10;
    let mut bytes: Vec<u8> = Vec::new();
    let mut chunk = FIRST;
    loop {
        let want = chunk.min(max - bytes.len() as u64);
        if want == 0 {
            return Ok(bytes);
        }
        let needed = bytes.len() as u64 + want;
        let oom = PersistError::OutOfMemory { bytes: needed };
        if bytes.try_reserve_exact(want as usize).is_err() {
            return Err(oom);
        }
        let got = match r.take(want).read_to_end(&mut bytes) {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::OutOfMemory => return Err(oom),
            Err(e) => return Err(e.into()),
        };
        if (got as u64) < want {
            return Ok(bytes);
        }
        chunk = chunk.saturating_mul(2).min(1 << 30);
    }
}

fn zero<P: Plain>() -> P {
    // SAFETY: all-zero bytes are a valid value of every plain number.
    unsafe { std::mem::zeroed() }
}

fn read_exact_or_truncated(
    r: &mut dyn Read,
    buf: &mut [u8],
    header: &Header,
    at: u64,
) -> Result<(), PersistError> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => {
                return Err(PersistError::Truncated {
                    expected: header.payload_len,
                    found: at + done as u64,
                })
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
