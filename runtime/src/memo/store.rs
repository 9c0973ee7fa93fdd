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
//! payload length and the payload's sha256. Every write goes to a unique
//! temporary name (pid, thread, counter, random) in the same directory and
//! is renamed into place, which is atomic: a reader sees the old file, the
//! new one, or none. A file whose header or checksum does not match is
//! reported as corrupt, never decoded. The file's mtime is the entry's last
//! use: a hit sets it, and eviction reads it.

use super::key::{hex, Key};
use super::Compression;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAGIC: &[u8; 6] = b"PJMEMO";
const VERSION: u8 = 1;
/// The size of an output file's header.
pub const HEADER: usize = 72;

/// The directory of one function's entries.
pub fn function_dir(root: &Path, name: &str) -> PathBuf {
    let mut dir = root.to_path_buf();
    for part in name.split("::").filter(|p| !p.is_empty()) {
        dir.push(part);
    }
    dir
}

/// The output file of an entry.
pub fn output_path(dir: &Path, key: &Key) -> PathBuf {
    dir.join(format!("{}.out", hex(key)))
}

/// The metadata file of an entry.
pub fn metadata_path(dir: &Path, key: &Key) -> PathBuf {
    dir.join(format!("{}.json", hex(key)))
}

/// A checked entry, read whole.
pub struct Entry {
    /// When the entry was written.
    pub created: SystemTime,
    /// How long the function took to compute it.
    pub compute: Duration,
    /// The bincode bytes of the value, decompressed.
    pub value: Vec<u8>,
}

/// Why an entry could not be used.
pub enum Unusable {
    /// There is no output file.
    Missing,
    /// The file is there but is not a whole, valid entry.
    Corrupt(String),
    /// It could not be read (permissions, I/O).
    Io(io::Error),
}

/// Reads and checks an entry.
pub fn read(path: &Path) -> Result<Entry, Unusable> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(e) => return Err(Unusable::Io(e)),
    };
    parse(&bytes).map_err(Unusable::Corrupt)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Checks and decompresses an output file's bytes.
pub fn parse(bytes: &[u8]) -> Result<Entry, String> {
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
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != len {
        return Err(format!(
            "payload of {} bytes where the header says {len}",
            payload.len()
        ));
    }
    let checksum: [u8; 32] = Sha256::digest(payload).into();
    if checksum[..] != bytes[32..64] {
        return Err("checksum mismatch".into());
    }
    if !Compression::known(codec) {
        return Err(format!("unknown codec {codec}"));
    }
    let value =
        Compression::decompress(codec, payload).map_err(|e| format!("cannot decompress: {e}"))?;
    Ok(Entry {
        created,
        compute,
        value,
    })
}

/// The bytes of an output file for `value` (bincode bytes).
pub fn encode(value: &[u8], compression: Compression, compute: Duration) -> io::Result<Vec<u8>> {
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
    out.extend_from_slice(&Sha256::digest(&payload));
    out.extend_from_slice(&[0u8; 8]);
    debug_assert_eq!(out.len(), HEADER);
    out.extend_from_slice(&payload);
    Ok(out)
}

/// A name no other writer uses: the pid, the thread, a process-wide
/// counter, and a random number drawn once per process (from std's
/// randomly seeded hasher), so a reused pid cannot collide either.
fn temp_name(target: &Path) -> PathBuf {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SALT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let salt = SALT.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id().into());
        h.finish()
    });
    // SAFETY: gettid has no preconditions.
    let thread = unsafe { libc::syscall(libc::SYS_gettid) };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(
        ".{name}.tmp.{}.{thread}.{}.{salt:016x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes `bytes` to `path` atomically: a unique temporary file in the same
/// directory, then a rename. On any failure the temporary file is removed
/// and whatever was at `path` is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = temp_name(path);
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// Writes `bytes` to `path` in place: for the metadata file, which no
/// reader depends on, so it skips the rename.
pub fn write_plain(path: &Path, bytes: &[u8]) -> io::Result<()> {
    fs::write(path, bytes)
}

/// Records a use of the entry at `path`: its mtime becomes now. Failing
/// (a read-only cache) only makes eviction less precise.
pub fn touch(path: &Path) {
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
pub fn json_string(text: &str) -> String {
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
pub fn metadata(function: &str, arguments: &str, compute: Duration, output_bytes: usize) -> String {
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
            let mut flipped = file.clone();
            let at = file.len() / 2 + HEADER / 2;
            flipped[at] ^= 0x40;
            assert!(parse(&flipped).is_err());
        }
    }

    #[test]
    fn metadata_is_json_with_escaped_strings() {
        let text = metadata("m::f", "path=\"a\\b\"\n", Duration::from_millis(1), 9);
        assert!(text.contains(r#""arguments": "path=\"a\\b\"\n""#), "{text}");
    }
}
