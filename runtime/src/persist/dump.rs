//! Writing a dump: one pass to a file (the header written last, over the
//! zeros left for it), or two passes to a writer that cannot seek.

use super::format::{fingerprint, trailer, Header, HEADER};
use super::{ser, Compression, PersistError};
use serde::Serialize;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

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
        ..Header::default()
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
    dump_to_file_as(value, file, compression, Header::default())
}

/// [`dump_to_file`] with the header's kind and times from `template`.
fn dump_to_file_as<T: Serialize + ?Sized>(
    value: &T,
    file: &mut fs::File,
    compression: Compression,
    template: Header,
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
        ..template
    };
    w.write_all(&trailer(&header, stored_hash).to_le_bytes())?;
    w.flush()?;
    drop(w);
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header.encode())?;
    Ok(())
}

/// Writes `value` as a cache entry in dump encoding, uncompressed, with
/// its type's fingerprint, so that `map_entry` can map a numeric array in
/// it: a `#[memoize(mmap_mode = "r")]` result. Atomic, and a link at
/// `path` is replaced, never followed, as for every cache write.
pub(crate) fn write_mappable_entry<T: Serialize + ?Sized>(
    value: &T,
    path: &Path,
    created_ns: u64,
    compute_ns: u64,
) -> Result<(), PersistError> {
    let template = Header {
        kind: super::format::KIND_CACHE_ENTRY,
        created_ns,
        compute_ns,
        ..Header::default()
    };
    crate::files::write_atomic(path, crate::files::Links::Replace, |file| {
        dump_to_file_as(value, file, Compression::None, template)
    })
}

/// Dumps to a path through a temporary file renamed into place (see
/// `files::write_atomic`: a symlink is followed, the old file's mode kept).
fn dump_to_path<T: Serialize + ?Sized>(
    value: &T,
    path: &Path,
    compression: Compression,
) -> Result<(), PersistError> {
    crate::files::write_atomic(path, crate::files::Links::Follow, |file| {
        dump_to_file(value, file, compression)
    })
}
