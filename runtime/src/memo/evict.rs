//! Keeping a cache under its limits: least recently used entries go first.
//!
//! An entry's last use is its output file's mtime, which a hit sets
//! explicitly (filesystem atime is often off or lazy). Eviction deletes
//! output files only, so a reader that already opened one reads it whole,
//! and one that comes later finds no file: a miss, never an error. A
//! small metadata file takes its place (`<key>.json`, when and how big),
//! which is how a later miss knows the entry was evicted rather than never
//! made. A miss writes no metadata file: the entry's header holds its
//! creation and compute times, and a second file per miss doubled its cost
//! (docs/decisions.md).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What `reduce_size` keeps at most. `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of output files.
    pub bytes: Option<u64>,
    /// Number of entries.
    pub items: Option<usize>,
    /// Age since last use.
    pub age: Option<Duration>,
}

struct Found {
    path: PathBuf,
    bytes: u64,
    used: SystemTime,
}

fn collect(dir: &Path, out: &mut Vec<Found>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "out") {
            out.push(Found {
                path,
                bytes: meta.len(),
                used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
    }
}

/// Deletes the least recently used entries under `dir` (every function
/// below it) until all limits hold. Returns how many entries it deleted.
pub(crate) fn reduce_size(dir: &Path, limits: Limits) -> usize {
    let mut found = Vec::new();
    collect(dir, &mut found);
    // Most recently used first: those are kept.
    found.sort_by_key(|f| std::cmp::Reverse(f.used));
    let now = super::clock::now();
    let (mut kept_bytes, mut kept_items, mut removed) = (0u64, 0usize, 0usize);
    for entry in found {
        let too_old = limits
            .age
            .is_some_and(|age| now.duration_since(entry.used).unwrap_or_default() > age);
        let too_many = limits.items.is_some_and(|n| kept_items >= n);
        let too_big = limits.bytes.is_some_and(|b| kept_bytes + entry.bytes > b);
        if too_old || too_many || too_big {
            if fs::remove_file(&entry.path).is_ok() {
                removed += 1;
                let note = super::store::eviction_note(entry.used, entry.bytes);
                let _ =
                    super::store::write_atomic(&entry.path.with_extension("json"), note.as_bytes());
            }
        } else {
            kept_bytes += entry.bytes;
            kept_items += 1;
        }
    }
    removed
}
