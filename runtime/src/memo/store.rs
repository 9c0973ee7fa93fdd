//! The files of a cache: where an entry lives, how it is written so no
//! reader ever sees half of it, and how it is checked when read.
//!
//! Layout under the cache dir, per function and then per key:
//!
//! ```text
//! <dir>/<crate>/<module>/<function>/
//!     func_code.rs        the function's source and its fingerprint, for humans
//!     <key>.out           the result: header + (compressed) bincode payload
//!     <key>.json          left by eviction: when, and how big the entry was
//! ```
//!
//! An output file is a container of parjob's one on-disk format, the
//! dump's (`persist/format.rs`), of kind "cache entry": a 64-byte header
//! that records the codec, the value's length and xxh3 checksum, and the
//! entry's creation and compute times, then the (compressed) bincode
//! value, then a trailer that covers the header and the stored bytes. Every
//! write goes to a unique temporary name (host, pid, random) in the same
//! directory and is renamed into place, which is atomic: a reader sees the
//! old file, the new one, or none; the leftovers of writers that died are
//! swept (`files`). A read opens only a regular file, reads exactly its
//! size, checks the trailer before decompressing, and decompresses no more
//! than the recorded length. A file that does not check is reported as
//! corrupt, never decoded. The
//! file's mtime is the entry's last use: a hit sets it, and eviction reads
//! it.

use super::handle::DirHandle;
use super::key::{EntryName, Key};
use super::Compression;
use crate::persist::container;
use crate::persist::format::{Header, HEADER as CONTAINER_HEADER, KIND_CACHE_ENTRY, TRAILER};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A creation time further ahead than this is not trusted to give an age.
pub(crate) const FUTURE_SLACK: Duration = Duration::from_secs(300);
/// The size of an output file's header.
pub const HEADER: usize = CONTAINER_HEADER;

/// The directory of one function's entries.
pub(crate) fn function_dir(root: &Path, name: &str) -> PathBuf {
    let mut dir = root.to_path_buf();
    for part in name.split("::").filter(|p| !p.is_empty()) {
        dir.push(part);
    }
    dir
}

/// The output file of an entry.
pub(crate) fn output_path(dir: &Path, key: &Key) -> PathBuf {
    dir.join(EntryName::output(key).as_str())
}

/// The metadata file of an entry.
pub(crate) fn metadata_path(dir: &Path, key: &Key) -> PathBuf {
    dir.join(EntryName::new(key, ".json").as_str())
}

/// A checked entry, read whole.
pub struct CacheEntry {
    /// When the entry was written.
    pub created: SystemTime,
    /// How long the function took to compute it.
    pub compute: Duration,
    /// The bincode bytes of the value, decompressed.
    pub value: Vec<u8>,
    /// When the entry was last used: its file's mtime (its creation time
    /// when parsed from bytes alone).
    pub used: SystemTime,
}

impl CacheEntry {
    /// Whether the entry is older than `limit`. An entry dated more than
    /// [`FUTURE_SLACK`] ahead (a clock set wrong, or a forged date) has no
    /// age it can be trusted for, so under a limit it counts as expired.
    pub fn is_expired(&self, limit: Option<Duration>) -> bool {
        expired(self.created, limit)
    }
}

/// Whether an entry created at `created` is older than `limit`; see
/// [`CacheEntry::is_expired`].
pub(crate) fn expired(created: SystemTime, limit: Option<Duration>) -> bool {
    let Some(limit) = limit else {
        return false;
    };
    let now = super::clock::now();
    match now.duration_since(created) {
        Ok(age) => age > limit,
        Err(ahead) => ahead.duration() > FUTURE_SLACK,
    }
}

/// Why an entry could not be used.
pub(crate) enum Unusable {
    /// There is no output file.
    Missing,
    /// The file is there but is not a whole, valid entry.
    Corrupt(String),
    /// It could not be read (permissions, I/O).
    Io(io::Error),
}

/// Reads and checks an entry. Only a regular file is read (a FIFO or a
/// device in its place is corrupt, a miss), and exactly its size.
pub(crate) fn read(path: &Path) -> Result<CacheEntry, Unusable> {
    read_opened(crate::files::open_regular_with_metadata(path))
}

/// [`read`] of the entry `name` in `dir`, opened through the directory's
/// handle.
pub(crate) fn read_via(
    handle: &DirHandle,
    dir: &Path,
    name: &EntryName,
) -> Result<CacheEntry, Unusable> {
    let opened = handle.open(dir, name).and_then(|file| {
        let meta = crate::files::regular_metadata(&file, || dir.join(name.as_str()))?;
        Ok((file, meta))
    });
    read_opened(opened)
}

fn read_opened(
    opened: io::Result<(std::fs::File, std::fs::Metadata)>,
) -> Result<CacheEntry, Unusable> {
    let (file, meta) = match opened {
        Ok(opened) => opened,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            return Err(Unusable::Corrupt(e.to_string()))
        }
        Err(e) => return Err(Unusable::Io(e)),
    };
    let size = meta.len();
    if size < (HEADER + TRAILER) as u64 {
        return Err(Unusable::Corrupt(format!(
            "{size} bytes, shorter than a header and a trailer"
        )));
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(size as usize)
        .map_err(|_| Unusable::Corrupt(format!("{size} bytes cannot be allocated")))?;
    file.take(size)
        .read_to_end(&mut bytes)
        .map_err(Unusable::Io)?;
    let mut entry = parse(&bytes).map_err(Unusable::Corrupt)?;
    if let Ok(used) = meta.modified() {
        entry.used = used;
    }
    Ok(entry)
}

/// Checks and decompresses an output file's bytes.
pub fn parse(bytes: &[u8]) -> Result<CacheEntry, String> {
    let limit = crate::persist::Limits::default().max_bytes;
    let (header, value) =
        container::unpack(bytes, KIND_CACHE_ENTRY, limit).map_err(|e| e.to_string())?;
    let created = UNIX_EPOCH + Duration::from_nanos(header.created_ns);
    Ok(CacheEntry {
        created,
        compute: Duration::from_nanos(header.compute_ns),
        value,
        used: created,
    })
}

/// The bytes of an output file for `value` (bincode bytes).
pub(crate) fn encode(
    value: &[u8],
    compression: Compression,
    compute: Duration,
) -> io::Result<Vec<u8>> {
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let header = Header {
        kind: KIND_CACHE_ENTRY,
        created_ns: created,
        compute_ns: compute.as_nanos() as u64,
        ..Header::default()
    };
    container::pack(header, compression, value)
}

/// Writes `bytes` to `path` atomically (see `files::write_atomic`): a
/// reader sees the old file or the new one, and a failed write leaves the
/// old one as it was. A symlink at `path` is replaced, never followed: a
/// link planted in the cache cannot redirect a write.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::files::write_atomic(path, crate::files::Links::Replace, |file| {
        file.write_all(bytes)
    })
}

/// How recent a use [`touch_unless_recent`] leaves as it is.
pub(crate) const USE_PRECISION: Duration = Duration::from_secs(1);

/// Records a use of the entry at `path`, last used at `used`: its mtime
/// becomes now, unless `used` is less than [`USE_PRECISION`] ago. An
/// `utimensat` dirties the inode, which costs a hit a third of its time;
/// eviction's order only needs uses a second apart (as `relatime` spares
/// atime writes). Failing (a read-only cache) only makes eviction less
/// precise.
pub(crate) fn touch_unless_recent(path: impl FnOnce() -> PathBuf, used: SystemTime) {
    let recent = SystemTime::now()
        .duration_since(used)
        .is_ok_and(|ago| ago < USE_PRECISION);
    if !recent {
        touch(&path());
    }
}

/// Records a use of the entry at `path`: its mtime becomes now.
pub(crate) fn touch(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
    ];
    // SAFETY: `c_path` is a valid NUL-terminated string and `times` two
    // valid timespecs, for the duration of the call.
    unsafe {
        libc::utimensat(libc::AT_FDCWD, c_path.as_ptr(), times.as_ptr(), 0);
    }
}

/// The text of the metadata file eviction leaves in an entry's place:
/// when the entry was last used and evicted, and how big it was. A later
/// miss of the key finds it and says `Evicted`.
pub(crate) fn eviction_note(last_used: SystemTime, output_bytes: u64) -> String {
    let unix_s = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
    };
    format!(
        "{{\n  \"evicted_unix_s\": {:.3},\n  \"last_used_unix_s\": {:.3},\n  \"output_bytes\": {output_bytes}\n}}\n",
        unix_s(SystemTime::now()),
        unix_s(last_used),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips_and_any_damage_is_caught() {
        for compression in [Compression::None, Compression::Lz4(3), Compression::Zstd(3)] {
            let value: Vec<u8> = (0..10_000u32)
                .flat_map(|i| (i % 97).to_le_bytes())
                .collect();
            let file = encode(&value, compression, Duration::from_millis(5)).unwrap();
            let entry = parse(&file).unwrap();
            assert_eq!(entry.value, value);
            assert_eq!(entry.compute, Duration::from_millis(5));
            for cut in [0, 10, HEADER - 1, HEADER, file.len() - 1] {
                assert!(parse(&file[..cut]).is_err(), "{compression:?} cut at {cut}");
            }
            // A flipped bit anywhere, in the payload or in the header's
            // fields (the creation time included), is caught.
            for at in [9, 17, file.len() / 2 + HEADER / 2, file.len() - 1] {
                let mut flipped = file.clone();
                flipped[at] ^= 0x40;
                assert!(parse(&flipped).is_err(), "{compression:?} flip at {at}");
            }
        }
    }

    #[test]
    fn a_recorded_length_the_payload_does_not_back_is_refused_cheaply() {
        // What the fuzzer found: a valid checksum over a few bytes of lz4
        // claiming a 4 GB value once reserved all 4 GB up front.
        use crate::persist::format::trailer;
        let file = encode(b"tiny", Compression::Lz4(3), Duration::ZERO).unwrap();
        let mut header = Header::decode(&file).unwrap();
        header.payload_len = 4 << 30;
        let stored = &file[HEADER..file.len() - TRAILER];
        let mut forged = header.encode().to_vec();
        forged.extend_from_slice(stored);
        let stored_hash = xxhash_rust::xxh3::xxh3_64(stored);
        forged.extend_from_slice(&trailer(&header, stored_hash).to_le_bytes());
        let why = parse(&forged).err().expect("refused");
        assert!(why.contains("decompressed to 4 bytes"), "{why}");
    }

    #[test]
    fn entries_dated_ahead_expire_under_a_limit() {
        let at = |created: SystemTime| CacheEntry {
            created,
            compute: Duration::ZERO,
            value: Vec::new(),
            used: created,
        };
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let limit = Some(day);
        assert!(!at(now).is_expired(limit));
        assert!(at(now - 2 * day).is_expired(limit));
        // A little ahead is clock skew; far ahead is a date not to trust.
        assert!(!at(now + Duration::from_secs(60)).is_expired(limit));
        assert!(at(now + 365 * day).is_expired(limit));
        // Without a limit nothing expires.
        assert!(!at(now + 365 * day).is_expired(None));
    }

    #[test]
    fn an_eviction_note_is_json_with_its_times_and_size() {
        let used = UNIX_EPOCH + Duration::from_millis(1_500);
        let text = eviction_note(used, 9);
        assert!(text.contains("\"last_used_unix_s\": 1.500,"), "{text}");
        assert!(text.contains("\"output_bytes\": 9\n"), "{text}");
    }
}
