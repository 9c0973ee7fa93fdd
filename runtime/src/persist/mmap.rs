//! `load_mmap`: an uncompressed dump of a numeric array, mapped read-only,
//! its elements borrowed straight from the mapping. It costs the same for
//! ten elements and ten billion: the header and the array's bounds are
//! checked, the data is not read (and so not checksummed).

use super::format::{fingerprint, mode, padding, Header, HEADER};
use super::PersistError;
use crate::plain::Plain;
use std::marker::PhantomData;
use std::ops::Deref;
use std::path::Path;

/// A numeric array borrowed from a memory-mapped dump; it derefs to `[P]`
/// and unmaps when dropped. A compressed dump cannot be mapped: it is
/// loaded into memory instead ([`Mapped::is_mapped`] is then false).
pub struct Mapped<P: Plain> {
    map: *mut libc::c_void,
    map_len: usize,
    offset: usize,
    len: usize,
    /// The numbers, when they were loaded instead of mapped.
    owned: Option<Vec<P>>,
    marker: PhantomData<P>,
}

impl<P: Plain> Mapped<P> {
    /// Whether the numbers are mapped from the file (false when the dump
    /// was compressed and so was loaded into memory).
    pub fn is_mapped(&self) -> bool {
        self.owned.is_none()
    }

    fn loaded(values: Vec<P>) -> Mapped<P> {
        Mapped {
            map: std::ptr::null_mut(),
            map_len: 0,
            offset: 0,
            len: values.len(),
            owned: Some(values),
            marker: PhantomData,
        }
    }
}

// SAFETY: the mapping is read-only and owned by this value alone; `P` is a
// plain number, so sharing `&[P]` across threads is sound.
unsafe impl<P: Plain> Send for Mapped<P> {}
// SAFETY: as above: only shared, read-only access is ever handed out.
unsafe impl<P: Plain> Sync for Mapped<P> {}

impl<P: Plain> Deref for Mapped<P> {
    type Target = [P];
    fn deref(&self) -> &[P] {
        if let Some(values) = &self.owned {
            return values;
        }
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `load_mmap` checked that `offset + len * size_of::<P>()`
        // lies inside the mapping, that `offset` is 64-byte aligned (and the
        // mapping page-aligned), and any bit pattern is a valid `P`. The
        // mapping lives as long as `self`.
        unsafe {
            std::slice::from_raw_parts(self.map.cast::<u8>().add(self.offset).cast::<P>(), self.len)
        }
    }
}

#[cfg(feature = "ndarray")]
impl<P: Plain> Mapped<P> {
    /// The mapped numbers as an `ndarray` view of this shape (row-major),
    /// borrowing the mapping: dump an array's `as_slice()` or raw `Vec`,
    /// map it, and view it.
    pub fn view<D, Sh>(
        &self,
        shape: Sh,
    ) -> Result<ndarray::ArrayView<'_, P, D>, ndarray::ShapeError>
    where
        D: ndarray::Dimension,
        Sh: Into<ndarray::StrideShape<D>>,
    {
        ndarray::ArrayView::from_shape(shape, self)
    }
}

impl<P: Plain> Drop for Mapped<P> {
    fn drop(&mut self) {
        if self.owned.is_some() {
            return;
        }
        // SAFETY: `map`/`map_len` are exactly what mmap returned.
        unsafe {
            libc::munmap(self.map, self.map_len);
        }
    }
}

impl<P: Plain> std::fmt::Debug for Mapped<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapped<{}>[{}]", std::any::type_name::<P>(), self.len)
    }
}

/// Maps the uncompressed dump of a numeric array at `path` (a dumped
/// `Vec<P>`, `[P]` or `Box<[P]>`): O(1) in its size, with the elements
/// borrowed from the mapping. Only a regular file is mapped; anything else
/// (a FIFO, `/dev/zero`) is an error before a byte is read.
///
/// For a safe copy that nobody else can change, use
/// [`load::<Vec<P>>`](super::load), which reads the same file.
///
/// # Safety
///
/// The returned slice is backed by the file, so the caller must make sure
/// that nothing writes to or truncates the file while the [`Mapped`] lives
/// (as with memmap2's `Mmap::map`). A write can change the numbers under a
/// shared borrow, and a truncation makes reading the lost pages kill the
/// process with `SIGBUS`. A file that only your program writes, and only
/// through `dump` (which replaces the file by renaming a new one over it
/// and so never changes a mapped one), is safe to map.
///
/// ```
/// let path = std::env::temp_dir().join(format!("parjob-doc-mmap-{}", std::process::id()));
/// parjob_runtime::persist::dump(&vec![0.5f64; 1000], &path).unwrap();
/// // SAFETY: this file is ours, and nothing changes it while it is mapped.
/// let mapped = unsafe { parjob_runtime::persist::load_mmap::<f64>(&path) }.unwrap();
/// assert_eq!(mapped.iter().sum::<f64>(), 500.0);
/// # drop(mapped);
/// # std::fs::remove_file(path).unwrap();
/// ```
pub unsafe fn load_mmap<P: Plain>(path: impl AsRef<Path>) -> Result<Mapped<P>, PersistError> {
    let path = path.as_ref();
    // SAFETY: the caller upholds this function's contract.
    match unsafe { map_checked(path) } {
        Ok((mapped, _)) => Ok(mapped),
        Err(PersistError::Compressed { codec }) => {
            tracing::warn!(
                path = %path.display(),
                codec,
                "the dump is compressed, so it cannot be memory-mapped: it is loaded into \
                 memory instead (dump it uncompressed to map it)"
            );
            load_array::<P>(path).map(Mapped::loaded)
        }
        Err(e) => Err(e),
    }
}

/// Loads a dumped `Vec<P>`, `[P]` or `Box<[P]>` (they encode alike).
fn load_array<P: Plain>(path: &Path) -> Result<Vec<P>, PersistError> {
    let mut head = [0u8; HEADER];
    let (mut file, _) = crate::files::open_regular(path)?;
    std::io::Read::read_exact(&mut file, &mut head)?;
    let header = Header::decode(&head)?;
    if !array_fingerprints::<P>().contains(&header.fingerprint) {
        return Err(PersistError::WrongType {
            expected: format!("Vec<{}>", std::any::type_name::<P>()),
        });
    }
    super::load_unchecked::<Vec<P>>(path)
}

/// The fingerprints of the dumps an array of `P` may be read from.
fn array_fingerprints<P: Plain>() -> [u64; 3] {
    [
        fingerprint::<Vec<P>>(),
        fingerprint::<[P]>(),
        fingerprint::<Box<[P]>>(),
    ]
}

/// Maps a cache entry written by `write_mappable_entry`, checks its trailer
/// and payload checksum over the mapping (which pages it in from the page
/// cache but copies nothing), and returns it with its header: a flipped or
/// truncated byte is an error, never numbers.
///
/// # Safety
///
/// As [`load_mmap`]. The cache replaces an entry by renaming a new file
/// over it, and removes it by unlinking, neither of which changes a
/// mapped file; only a process writing into the file in place could.
pub(crate) unsafe fn map_entry<P: Plain>(path: &Path) -> Result<(Mapped<P>, Header), PersistError> {
    // SAFETY: as above.
    let (mapped, header) = unsafe { map_checked::<P>(path) }?;
    if header.kind != super::format::KIND_CACHE_ENTRY {
        return Err(PersistError::Corrupt("not a cache entry".into()));
    }
    // SAFETY: `map`/`map_len` are the live mapping's, checked above to
    // hold the header, the payload and the trailer.
    let bytes = unsafe { std::slice::from_raw_parts(mapped.map.cast::<u8>(), mapped.map_len) };
    let stored_end = bytes.len() - 8;
    let stored = &bytes[HEADER..stored_end];
    let stored_hash = xxhash_rust::xxh3::xxh3_64(stored);
    let end = u64::from_le_bytes(bytes[stored_end..].try_into().expect("8 bytes"));
    if super::format::trailer(&header, stored_hash) != end || stored_hash != header.checksum {
        return Err(PersistError::Corrupt(
            "the mapped entry does not match its checksums".into(),
        ));
    }
    Ok((mapped, header))
}

/// The checks of [`load_mmap`], returning the header too.
///
/// # Safety
///
/// As [`load_mmap`].
unsafe fn map_checked<P: Plain>(path: &Path) -> Result<(Mapped<P>, Header), PersistError> {
    use std::os::unix::io::AsRawFd;
    let (file, size) = crate::files::open_regular(path)?;
    let size =
        usize::try_from(size).map_err(|_| PersistError::Corrupt("file too large to map".into()))?;
    if size < HEADER {
        let mut head = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(&file, HEADER as u64), &mut head)?;
        Header::decode(&head)?;
    }
    // SAFETY: a fresh read-only private mapping of an open file; the
    // result is checked against MAP_FAILED.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error().into());
    }
    let mut mapped = Mapped {
        map,
        map_len: size,
        offset: 0,
        len: 0,
        owned: None,
        marker: PhantomData,
    };
    // SAFETY: `map` points to `size` readable bytes for the mapping's life.
    let bytes = unsafe { std::slice::from_raw_parts(map.cast::<u8>(), size) };
    let header = Header::decode(bytes)?;
    if header.codec != 0 {
        return Err(PersistError::Compressed {
            codec: crate::compress::Compression::name_of(header.codec),
        });
    }
    if !array_fingerprints::<P>().contains(&header.fingerprint) {
        return Err(PersistError::WrongType {
            expected: format!("Vec<{}>", std::any::type_name::<P>()),
        });
    }
    let payload = &bytes[HEADER..];
    let whole = header.payload_len.checked_add((HEADER + 8) as u64);
    if whole != Some(size as u64) {
        return Err(PersistError::Truncated {
            expected: whole.unwrap_or(u64::MAX),
            found: size as u64,
        });
    }
    if payload.len() < 10 || payload[8] != mode::RAW || payload[9] != P::KIND as u8 {
        return Err(PersistError::NotAnArray);
    }
    let len = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
    let offset = HEADER + 10 + padding(10);
    let end = usize::try_from(len)
        .ok()
        .and_then(|n| n.checked_mul(std::mem::size_of::<P>()))
        .and_then(|n| n.checked_add(offset));
    match end {
        Some(end) if end as u64 <= HEADER as u64 + header.payload_len => {}
        _ => {
            return Err(PersistError::Truncated {
                expected: end.map_or(u64::MAX, |e| e as u64),
                found: size as u64,
            })
        }
    }
    mapped.offset = offset;
    mapped.len = len as usize;
    Ok((mapped, header))
}
