//! The files of a cache: where an entry lives, how it is written so no
//! reader ever sees half of it, and how it is checked when read.
//!
//! Layout under the cache dir, per function and then per key:
//!
//! ```text
//! <dir>/<crate>/<module>/<function>/
//!     func_code.rs        the function's source and its fingerprint, for humans
//!     <key>.out           the result: header + (compressed) bincode payload
//!     <key>.json          metadata: created, compute time, arguments, size
//! ```
//!
//! An output file starts with a 72-byte header: the magic `PJMEMO`, the
//! format version, the codec, the creation time, the compute time, the
//! payload length, a sha256 over those fields and the payload, and the
//! value's decompressed length. Every write goes to a unique temporary name
//! (host, pid, random) in the same directory and is renamed into place,
//! which is atomic: a reader sees the old file, the new one, or none; the
//! leftovers of writers that died are swept (`files`). A read opens only a
//! regular file, reads exactly the size its header records, and
//! decompresses no more than the recorded length. A file whose header or
//! checksum does not match is reported as corrupt, never decoded. The
//! file's mtime is the entry's last use: a hit sets it, and eviction reads
//! it.

use super::key::{hex, Key};
use super::Compression;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAGIC: &[u8; 6] = b"PJMEMO";
/// 2: the checksum covers the header's fields; the value's length is recorded.
const VERSION: u8 = 2;
/// A creation time further ahead than this is not trusted to give an age.
pub(crate) const FUTURE_SLACK: Duration = Duration::from_secs(300);
/// The size of an output file's header.
pub const HEADER: usize = 72;

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
    dir.join(format!("{}.out", hex(key)))
}

/// The metadata file of an entry.
pub(crate) fn metadata_path(dir: &Path, key: &Key) -> PathBuf {
    dir.join(format!("{}.json", hex(key)))
}

/// A checked entry, read whole.
pub struct CacheEntry {
    /// When the entry was written.
    pub created: SystemTime,
    /// How long the function took to compute it.
    pub compute: Duration,
    /// The bincode bytes of the value, decompressed.
    pub value: Vec<u8>,
}

impl CacheEntry {
    /// Whether the entry is older than `limit`. An entry dated more than
    /// [`FUTURE_SLACK`] ahead (a clock set wrong, or a forged date) has no
    /// age it can be trusted for, so under a limit it counts as expired.
    pub fn is_expired(&self, limit: Option<Duration>) -> bool {
        let Some(limit) = limit else {
            return false;
        };
        let now = super::clock::now();
        match now.duration_since(self.created) {
            Ok(age) => age > limit,
            Err(ahead) => ahead.duration() > FUTURE_SLACK,
        }
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
/// device in its place is corrupt, a miss), and only as many bytes as its
/// header records.
pub(crate) fn read(path: &Path) -> Result<CacheEntry, Unusable> {
    let (file, size) = match crate::files::open_regular(path) {
        Ok(opened) => opened,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            return Err(Unusable::Corrupt(e.to_string()))
        }
        Err(e) => return Err(Unusable::Io(e)),
    };
    let mut file = file.take(size);
    let mut head = [0u8; HEADER];
    if size < HEADER as u64 {
        return Err(Unusable::Corrupt(format!(
            "{size} bytes, shorter than the {HEADER}-byte header"
        )));
    }
    file.read_exact(&mut head).map_err(Unusable::Io)?;
    let len = u64_at(&head, 24);
    if Some(size) != len.checked_add(HEADER as u64) {
        return Err(Unusable::Corrupt(format!(
            "{size} bytes where the header records {len} after it"
        )));
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(size as usize)
        .map_err(|_| Unusable::Corrupt(format!("{size} bytes cannot be allocated")))?;
    bytes.extend_from_slice(&head);
    file.read_to_end(&mut bytes).map_err(Unusable::Io)?;
    parse(&bytes).map_err(Unusable::Corrupt)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Checks and decompresses an output file's bytes.
pub fn parse(bytes: &[u8]) -> Result<CacheEntry, String> {
    if bytes.len() < HEADER {
        return Err(format!(
            "{} bytes, shorter than the {HEADER}-byte header",
            bytes.len()
        ));
    }
    if &bytes[..6] != MAGIC {
        return Err("not a parjob cache entry (bad magic)".into());
    }
    if bytes[6] != VERSION {
        return Err(format!(
            "format version {} (this parjob reads {VERSION})",
            bytes[6]
        ));
    }
    let codec = bytes[7];
    let created = UNIX_EPOCH + Duration::from_nanos(u64_at(bytes, 8));
    let compute = Duration::from_nanos(u64_at(bytes, 16));
    let len = u64_at(bytes, 24);
    let value_len = u64_at(bytes, 64);
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != len {
        return Err(format!(
            "payload of {} bytes where the header says {len}",
            payload.len()
        ));
    }
    if checksum(&bytes[..32], payload)[..] != bytes[32..64] {
        return Err("checksum mismatch".into());
    }
    if !Compression::known(codec) {
        return Err(format!("unknown codec {codec}"));
    }
    let value = decompress(codec, payload, value_len)?;
    Ok(CacheEntry {
        created,
        compute,
        value,
    })
}

/// The sha256 of the header's fields (before the checksum) and the payload.
fn checksum(fields: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(fields);
    h.update(payload);
    h.finalize().into()
}

/// Decompresses exactly `value_len` bytes, allocated fallibly.
fn decompress(codec: u8, payload: &[u8], value_len: u64) -> Result<Vec<u8>, String> {
    let limit = crate::persist::Limits::default().max_bytes;
    if value_len > limit {
        return Err(format!(
            "a value of {value_len} bytes, over the {limit}-byte limit"
        ));
    }
    // The first buffer is what the payload can plausibly expand to; past
    // it, the buffer grows (fallibly) only as decompressed bytes arrive, so
    // a recorded length the payload does not back allocates nothing extra.
    let plausible = (payload.len() as u64).saturating_mul(64).max(1 << 20);
    let first = value_len.min(plausible) as usize;
    let mut value = Vec::new();
    value
        .try_reserve_exact(first)
        .map_err(|_| format!("{first} bytes cannot be allocated"))?;
    let mut decoder =
        Compression::decoder(codec, payload).map_err(|e| format!("cannot decompress: {e}"))?;
    // One byte more than recorded, to see a stream that runs long.
    (&mut decoder)
        .take(value_len.saturating_add(1))
        .read_to_end(&mut value)
        .map_err(|e| format!("cannot decompress: {e}"))?;
    if value.len() as u64 != value_len {
        return Err(format!(
            "decompressed to {}{} bytes where the header records {value_len}",
            value.len(),
            if value.len() as u64 > value_len {
                "+"
            } else {
                ""
            }
        ));
    }
    Ok(value)
}

/// The bytes of an output file for `value` (bincode bytes).
pub(crate) fn encode(
    value: &[u8],
    compression: Compression,
    compute: Duration,
) -> io::Result<Vec<u8>> {
    let payload = compression.compress(value)?;
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(compression.tag());
    out.extend_from_slice(&created.to_le_bytes());
    out.extend_from_slice(&(compute.as_nanos() as u64).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let sum = checksum(&out, &payload);
    out.extend_from_slice(&sum);
    out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    debug_assert_eq!(out.len(), HEADER);
    out.extend_from_slice(&payload);
    Ok(out)
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

/// Records a use of the entry at `path`: its mtime becomes now. Failing
/// (a read-only cache) only makes eviction less precise.
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

/// JSON string escaping, for the metadata file.
pub(crate) fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The metadata file's text.
pub(crate) fn metadata(
    function: &str,
    arguments: &str,
    compute: Duration,
    output_bytes: usize,
) -> String {
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    format!(
        "{{\n  \"function\": {},\n  \"created_unix_s\": {created:.3},\n  \"compute_s\": {:.6},\n  \"arguments\": {},\n  \"output_bytes\": {output_bytes}\n}}\n",
        json_string(function),
        compute.as_secs_f64(),
        json_string(arguments),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips_and_any_damage_is_caught() {
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd(3)] {
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
        let mut file = encode(b"tiny", Compression::Lz4, Duration::ZERO).unwrap();
        file[64..72].copy_from_slice(&(4u64 << 30).to_le_bytes());
        let payload = file[HEADER..].to_vec();
        let sum = checksum(&file[..32], &payload);
        file[32..64].copy_from_slice(&sum);
        let why = parse(&file).err().expect("refused");
        assert!(why.contains("decompressed to 4 bytes"), "{why}");
    }

    #[test]
    fn entries_dated_ahead_expire_under_a_limit() {
        let at = |created: SystemTime| CacheEntry {
            created,
            compute: Duration::ZERO,
            value: Vec::new(),
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
    fn metadata_is_json_with_escaped_strings() {
        let text = metadata("m::f", "path=\"a\\b\"\n", Duration::from_millis(1), 9);
        assert!(text.contains(r#""arguments": "path=\"a\\b\"\n""#), "{text}");
    }
}
