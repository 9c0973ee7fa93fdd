//! `dump` and `load`: joblib's persistence, for any serde type, as fast as
//! the disk on large numeric data, and bounded when loading a file you did
//! not write.
//!
//! - `format`: the container's header and trailer, and the payload encoding.
//! - `container`: a whole container in memory (a cache entry).
//! - `ser` / `de`: the payload's serde serializer and deserializer.
//! - `dump`: writing, to a path (atomically) or a writer.
//! - `load`: reading, checked and bounded by [`Limits`].
//! - `mmap`: [`load_mmap`], a numeric array borrowed from a mapping.
//!
//! # What a load promises, whoever wrote the file
//! - It never runs code: a dump is data, and only the type you name is built.
//! - It never panics, aborts or hangs: only regular files are opened (a
//!   FIFO, `/dev/zero` or a socket is an error before a byte is read), and
//!   every failure is a [`PersistError`].
//! - It reads at most the file, and a decompressed payload of at most
//!   [`Limits::max_bytes`]. Buffers whose size comes from the file are
//!   allocated fallibly: memory the system refuses is
//!   [`PersistError::OutOfMemory`], not an abort.
//! - Nesting is bounded by [`Limits::max_depth`] (at most [`MAX_DEPTH`],
//!   which is also what a dump writes), so no file can overflow the stack.
//! - The value built from the payload (its `Vec`s and `String`s, grown by
//!   serde as elements arrive) takes memory in proportion to the payload,
//!   at most a small multiple of it; choose `max_bytes` with that in mind.
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

pub(crate) mod container;
pub(crate) mod format;

mod de;
mod dump;
mod fill;
mod load;
mod mmap;
mod ser;

pub use crate::compress::Compression;
pub use crate::error::{PersistError, MAX_DEPTH};
pub(crate) use dump::write_mappable_entry;
pub use dump::{dump, dump_with, DumpTarget};
pub use load::{load, load_from, load_from_with, load_unchecked, load_with};
pub(crate) use mmap::map_entry;
pub use mmap::{load_mmap, Mapped};

impl From<ser::WriteError> for PersistError {
    fn from(e: ser::WriteError) -> Self {
        match e {
            ser::WriteError::Io(e) => PersistError::Io(e),
            ser::WriteError::Encode(m) => PersistError::Encode(m),
            ser::WriteError::TooDeep => PersistError::TooDeep,
        }
    }
}

/// Bounds on a load, for files you did not write. The defaults are
/// [`Limits::default`]; a field can be set alone:
///
/// ```
/// use parjob_runtime::persist::Limits;
/// let strict = Limits { max_bytes: 64 << 20, ..Limits::default() };
/// assert_eq!(strict.max_depth, parjob_runtime::persist::MAX_DEPTH);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest payload a load accepts, in bytes, after decompression.
    /// Default: the machine's physical memory (16 GiB where it cannot be
    /// read). A larger payload is [`PersistError::TooLarge`] before
    /// anything is allocated for it.
    pub max_bytes: u64,
    /// The deepest nesting a load accepts. Default and maximum:
    /// [`MAX_DEPTH`]; a larger value counts as `MAX_DEPTH`.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: physical_memory().unwrap_or(16 << 30),
            max_depth: MAX_DEPTH,
        }
    }
}

/// This machine's memory, read once (`sysconf` makes a `sysinfo` call,
/// and every cache hit reads the default limits).
fn physical_memory() -> Option<u64> {
    static MEMORY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *MEMORY.get_or_init(read_physical_memory)
}

fn read_physical_memory() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && size > 0).then(|| pages as u64 * size as u64)
}
