//! `dump` and `load`: joblib's persistence, for any serde type, as fast as
//! the disk on large numeric data, and safe to load from a file you did
//! not write.
//!
//! - [`format`](mod@format): the header and the payload encoding.
//! - `ser` / `de`: the payload's serde serializer and deserializer.
//! - `mmap`: [`load_mmap`], a numeric array borrowed from a mapping.
//!
//! A dump to a path streams the value once through the codec into a file
//! and then writes the header over the zeros it left at the start. A dump
//! to a writer, which cannot seek, takes two passes: the first measures and
//! checksums the payload (nothing is kept), the second streams it. Either
//! way no encoded copy of the file is ever held in memory. A path is
//! written through a temporary file in the same directory, renamed into
//! place only once everything is written: a failure (a full disk, a panic
//! in a `Serialize` impl, a crash) leaves whatever was at the path as it
//! was.
//!
//! A load checks the header, decompresses the payload as it arrives
//! (never allocating for a length the file does not back), checks the
//! checksum, and then decodes with every length bounded by the bytes left.
//! A `Vec` of numbers at the top level is read straight into its buffer.

pub mod format;

mod de;
mod mmap;
mod ser;

pub use crate::compress::Compression;
pub use mmap::Mapped;

use crate::plain::{self, Kind, Plain};
use format::{fingerprint, mode, padding, trailer, Header, HEADER};
use serde::{de::DeserializeOwned, Serialize};
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// What can go wrong in `dump` or `load`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// Reading or writing the file failed (a full disk is `StorageFull`).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The file does not start with parjob's magic bytes.
    #[error("not a parjob dump (no PJDUMP header)")]
    NotADump,
    /// The file was written by a newer parjob.
    #[error("written in dump format {found}; this parjob reads up to {supported}: upgrade parjob to load it")]
    NewerVersion {
        /// The file's format version.
        found: u16,
        /// The newest version this build reads.
        supported: u16,
    },
    /// The header names a codec this build does not know.
    #[error("unknown codec {0} in the header")]
    UnknownCodec(u8),
    /// The file holds another type than the one asked for.
    #[error("the file holds another type than `{expected}` (by its type fingerprint); load it as the type it was dumped as, or with `load_unchecked`")]
    WrongType {
        /// The type asked for.
        expected: String,
    },
    /// The file ends before the header says it does.
    #[error("truncated: {expected} bytes expected, {found} found")]
    Truncated {
        /// What the header promises.
        expected: u64,
        /// What is there.
        found: u64,
    },
    /// The payload does not match its checksum, or its structure is broken.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// The value could not be encoded (a `Serialize` impl failed).
    #[error("cannot encode: {0}")]
    Encode(String),
    /// `load_mmap` of a compressed file.
    #[error("the file is compressed with {codec}: only an uncompressed dump can be memory-mapped; dump it with Compression::None (no compressing extension) or use `load`")]
    Compressed {
        /// The file's codec.
        codec: &'static str,
    },
    /// `load_mmap` of a dump that is not one raw numeric array.
    #[error("the dump is not a raw numeric array of that element type; `load_mmap` maps only a dumped Vec<P>/[P] of a primitive number")]
    NotAnArray,
}

impl From<ser::WriteError> for PersistError {
    fn from(e: ser::WriteError) -> Self {
        match e {
            ser::WriteError::Io(e) => PersistError::Io(e),
            ser::WriteError::Encode(m) => PersistError::Encode(m),
        }
    }
}

/// Where `dump_with` writes: a path (`&str`, `String`, `&Path`,
/// `PathBuf`), written through a temporary file and a rename, or any
/// writer (`&mut W`).
pub trait DumpTarget {
    /// Writes the dump.
    fn dump_bytes<T: Serialize + ?Sized>(
        self,
        value: &T,
        compression: Compression,
    ) -> Result<(), PersistError>;
}

macro_rules! path_target {
    ($($t:ty),*) => {$(
        impl DumpTarget for $t {
            fn dump_bytes<T: Serialize + ?Sized>(self, value: &T, compression: Compression) -> Result<(), PersistError> {
                dump_to_path(value, self.as_ref(), compression)
            }
        }
    )*};
}

path_target!(&str, String, &String, &Path, PathBuf, &PathBuf);

impl<W: Write + ?Sized> DumpTarget for &mut W {
    fn dump_bytes<T: Serialize + ?Sized>(
        self,
        value: &T,
        compression: Compression,
    ) -> Result<(), PersistError> {
        dump_to_writer(value, self, compression)
    }
}

/// Saves `value` to `path`, compressed as the extension asks (`.z`, `.gz`,
/// `.bz2`, `.xz`, `.lzma`, `.lz4`, `.zst`; anything else: uncompressed).
///
/// ```
/// let path = std::env::temp_dir().join(format!("parjob-doc-dump-{}.gz", std::process::id()));
/// let data: Vec<f64> = (0..1000).map(|i| i as f64).collect();
/// parjob_runtime::persist::dump(&data, &path).unwrap();
/// let back: Vec<f64> = parjob_runtime::persist::load(&path).unwrap();
/// assert_eq!(back, data);
/// std::fs::remove_file(path).unwrap();
/// ```
pub fn dump<T: Serialize + ?Sized>(value: &T, path: impl AsRef<Path>) -> Result<(), PersistError> {
    let path = path.as_ref();
    dump_to_path(value, path, Compression::from_extension(path))
}

/// Saves `value` to a path or a writer with this compression.
pub fn dump_with<T: Serialize + ?Sized>(
    value: &T,
    target: impl DumpTarget,
    compression: Compression,
) -> Result<(), PersistError> {
    target.dump_bytes(value, compression)
}

/// The header for `value`: one pass that measures and checksums.
fn header_for<T: Serialize + ?Sized>(
    value: &T,
    compression: Compression,
) -> Result<Header, PersistError> {
    let mut sink = ser::Sink::new(io::sink());
    ser::write(&mut sink, value)?;
    let (payload_len, checksum, _) = sink.finish();
    Ok(Header {
        codec: compression.tag(),
        fingerprint: fingerprint::<T>(),
        payload_len,
        checksum,
    })
}

/// Counts and hashes what reaches the file: the stored (compressed)
/// bytes, whose hash is the trailer.
struct Stored<W: Write> {
    inner: W,
    /// `None` when the stored bytes are the payload, already hashed.
    hash: Option<xxhash_rust::xxh3::Xxh3>,
}

impl<W: Write> Write for Stored<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(hash) = &mut self.hash {
            hash.update(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Streams `value`'s payload through the codec into `w`. Returns the
/// payload's length and checksum, and the hash of the stored bytes (the
/// payload's own when uncompressed: the same bytes).
fn stream_payload<T: Serialize + ?Sized, W: Write>(
    value: &T,
    w: &mut W,
    compression: Compression,
) -> Result<(u64, u64, u64), PersistError> {
    let raw = compression == Compression::None;
    let stored = Stored {
        inner: w,
        hash: (!raw).then(xxhash_rust::xxh3::Xxh3::new),
    };
    let mut sink = ser::Sink::new(compression.encoder(stored)?);
    ser::write(&mut sink, value)?;
    let (len, checksum, encoder) = sink.finish();
    let stored = encoder.finish()?;
    Ok((len, checksum, stored.hash.map_or(checksum, |h| h.digest())))
}

fn dump_to_writer<T: Serialize + ?Sized, W: Write + ?Sized>(
    value: &T,
    w: &mut W,
    compression: Compression,
) -> Result<(), PersistError> {
    let header = header_for(value, compression)?;
    let mut w = BufWriter::with_capacity(1 << 20, w);
    w.write_all(&header.encode())?;
    let (len, checksum, stored_hash) = stream_payload(value, &mut w, compression)?;
    if (len, checksum) != (header.payload_len, header.checksum) {
        return Err(PersistError::Encode(
            "the value serialized differently on the second pass (a Serialize impl that is not deterministic)".into(),
        ));
    }
    w.write_all(&trailer(&header, stored_hash).to_le_bytes())?;
    w.flush()?;
    Ok(())
}

/// One pass into a file: a zeroed header, the payload streamed through
/// the codec while it is measured and checksummed, the trailer, and then
/// the real header written over the zeros.
fn dump_to_file<T: Serialize + ?Sized>(
    value: &T,
    file: &mut fs::File,
    compression: Compression,
) -> Result<(), PersistError> {
    use std::io::{Seek, SeekFrom};
    let mut w = BufWriter::with_capacity(1 << 20, &mut *file);
    w.write_all(&[0u8; HEADER])?;
    let (payload_len, checksum, stored_hash) = stream_payload(value, &mut w, compression)?;
    let header = Header {
        codec: compression.tag(),
        fingerprint: fingerprint::<T>(),
        payload_len,
        checksum,
    };
    w.write_all(&trailer(&header, stored_hash).to_le_bytes())?;
    w.flush()?;
    drop(w);
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header.encode())?;
    Ok(())
}

fn dump_to_path<T: Serialize + ?Sized>(
    value: &T,
    path: &Path,
    compression: Compression,
) -> Result<(), PersistError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{name}.parjob-tmp.{}.{}",
        std::process::id(),
        unique()
    ));
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        dump_to_file(value, &mut file, compression)?;
        fs::rename(&temp, path)?;
        Ok(())
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Loads a `T` from `path`, whatever its codec (read from the header).
pub fn load<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T, PersistError> {
    let file = fs::File::open(path.as_ref())?;
    let len = file.metadata()?.len();
    load_checked(file, true, Some(len))
}

/// Loads a `T` from a reader.
pub fn load_from<T: DeserializeOwned, R: Read>(reader: R) -> Result<T, PersistError> {
    load_checked(reader, true, None)
}

/// Loads a `T` from `path` without the type-fingerprint check (for a file
/// whose type name changed, say after a crate rename or a compiler
/// upgrade). Every other check still applies.
pub fn load_unchecked<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T, PersistError> {
    let file = fs::File::open(path.as_ref())?;
    let len = file.metadata()?.len();
    load_checked(file, false, Some(len))
}

/// Maps the uncompressed dump of a numeric array at `path`: O(1) in its
/// size, with the elements borrowed from the mapping.
pub fn load_mmap<P: Plain>(path: impl AsRef<Path>) -> Result<Mapped<P>, PersistError> {
    mmap::load_mmap(path.as_ref())
}

fn load_checked<T: DeserializeOwned, R: Read>(
    mut reader: R,
    check_type: bool,
    file_len: Option<u64>,
) -> Result<T, PersistError> {
    let mut head = Vec::with_capacity(HEADER);
    (&mut reader).take(HEADER as u64).read_to_end(&mut head)?;
    let header = Header::decode(&head)?;
    if check_type && header.fingerprint != fingerprint::<T>() {
        return Err(PersistError::WrongType {
            expected: std::any::type_name::<T>().to_string(),
        });
    }
    if header.codec == Compression::None.tag() {
        // Stored bytes are the payload: read it as it streams.
        let available = file_len.map(|n| n.saturating_sub((HEADER + TRAILER) as u64));
        let value = read_payload::<T>(&mut reader, &header, true, available)?;
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
    // this allocate more than the file holds.
    let mut stored = Vec::new();
    reader.read_to_end(&mut stored)?;
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
    let value = read_payload::<T>(&mut decoder, &header, false, Some(plausible))?;
    at_end(&mut decoder).map(|()| value)
}

/// The trailer's size.
const TRAILER: usize = 8;

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
) -> Result<T, PersistError> {
    if let Some(value) = read_plain_vec::<T>(r, header, verify, available)? {
        return Ok(value);
    }
    // Read what is there, growing the buffer only as bytes arrive: a
    // header that claims more than the file holds allocates nothing extra.
    let mut bytes = Vec::new();
    r.take(header.payload_len).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != header.payload_len {
        return Err(PersistError::Truncated {
            expected: header.payload_len,
            found: bytes.len() as u64,
        });
    }
    if verify && xxhash_rust::xxh3::xxh3_64(&bytes) != header.checksum {
        return Err(PersistError::Corrupt("checksum mismatch".into()));
    }
    let mut reader = de::Reader::new(&bytes);
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
    let total = len as usize;
    let backed = available.unwrap_or(0).max(1 << 20) / size;
    let mut values: Vec<P> = vec![zero::<P>(); total.min(backed as usize)];
    advise_huge_pages(&mut values);
    let mut start = 0;
    loop {
        let bytes = plain::as_bytes_mut(&mut values[start..]);
        let at = 10 + pad as u64 + start as u64 * size;
        read_exact_or_truncated(r, bytes, header, at)?;
        if verify {
            hash.update(bytes);
        }
        start = values.len();
        if start == total {
            break;
        }
        values.resize(total.min(start.saturating_mul(2)), zero::<P>());
    }
    if verify && hash.digest() != header.checksum {
        return Err(PersistError::Corrupt("checksum mismatch".into()));
    }
    Ok(values)
}

/// Asks the kernel to back a large, not yet touched buffer with huge pages
/// (where transparent huge pages are on `madvise`): filling it then takes
/// one fault per 2 MiB instead of one per 4 KiB. Only advice: a refusal
/// changes nothing.
fn advise_huge_pages<P: Plain>(values: &mut [P]) {
    const HUGE: usize = 2 << 20;
    let start = values.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(values);
    let aligned = (start + HUGE - 1) & !(HUGE - 1);
    if end >= aligned + HUGE {
        let len = (end - aligned) & !(HUGE - 1);
        // SAFETY: the range lies inside `values`' own allocation, and
        // MADV_HUGEPAGE changes how pages are backed, never their contents.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
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
