//! `dump` and `load`: joblib's persistence, for any serde type, as fast as
//! the disk on large numeric data, and bounded when loading a file you did
//! not write.
//!
//! - [`format`](mod@format): the header and the payload encoding.
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

pub mod format;

mod de;
mod dump;
mod load;
mod mmap;
mod ser;

pub use crate::compress::Compression;
pub use de::MAX_DEPTH;
pub use dump::{dump, dump_with, DumpTarget};
pub use load::{load, load_from, load_from_with, load_unchecked, load_with};
pub use mmap::{load_mmap, Mapped};

use std::io;

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
    /// `dump` of a value nested deeper than a load accepts.
    #[error("the value nests deeper than {MAX_DEPTH} levels (structs, enums, tuples, sequences and maps), which `load` refuses in order to bound its stack: store a long chain or deep tree as a flat Vec (of nodes with indices) instead")]
    TooDeep,
    /// The payload is larger than the load's limit.
    #[error("the payload is {bytes} bytes, over this load's limit of {limit} bytes (Limits::max_bytes): if you trust the file, load it with `load_with` and a higher limit")]
    TooLarge {
        /// What the file says the payload holds.
        bytes: u64,
        /// The limit in force.
        limit: u64,
    },
    /// The system refused memory for a buffer the file asked for.
    #[error("out of memory: {bytes} bytes for the payload could not be allocated (lower Limits::max_bytes, or free memory)")]
    OutOfMemory {
        /// The allocation that failed.
        bytes: u64,
    },
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

fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && size > 0).then(|| pages as u64 * size as u64)
}
