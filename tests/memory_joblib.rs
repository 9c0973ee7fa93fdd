//! joblib's `Memory` forms (an existing fn cached without a wrapper,
//! `call_and_shelve`, a whole-directory `clear`) and `mmap_mode = "r"`:
//! cached arrays that come back mapped, and damaged entries that never do.

use parjob::prelude::*;
use parjob::MissReason;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

fn fresh(dir: &str) -> PathBuf {
    let path = PathBuf::from(dir);
    let _ = std::fs::remove_dir_all(&path);
    path
}

/// The output files of one function's cache.
fn outputs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "out"))
        .collect()
}

static PLAIN_SQUARES: AtomicUsize = AtomicUsize::new(0);

fn plain_square(x: u64) -> u64 {
    PLAIN_SQUARES.fetch_add(1, Ordering::SeqCst);
    x * x
}

#[test]
fn memory_caches_an_existing_fn_shelves_and_clears_the_whole_dir() {
    let dir = fresh("target/memo-tests/memory-joblib");
    let memory = Memory::new(&dir);
    // joblib's `memory.cache(f)`: no wrapper closure.
    let square = memory.cache_fn("plain_square", plain_square);
    assert_eq!((square(7), square(7), square(8)), (49, 49, 64));
    assert_eq!(PLAIN_SQUARES.load(Ordering::SeqCst), 2);
    assert!(memory.check_call_in_cache("plain_square", &7u64));
    assert!(!memory.check_call_in_cache("plain_square", &9u64));

    // joblib's `call_and_shelve`: a handle, loaded on demand.
    let shelved = memory.call_and_shelve("pairs", &(1u8, 2u8), || vec![1u8, 2]);
    assert_eq!(shelved.get().unwrap(), vec![1, 2]);
    let again = memory.call_and_shelve("pairs", &(1u8, 2u8), || -> Vec<u8> {
        panic!("a shelved hit must not recompute")
    });
    assert_eq!(again.get().unwrap(), vec![1, 2]);
    assert_eq!(memory.stats("pairs").hits, 1);

    // A file that is not an entry survives a clear.
    std::fs::write(dir.join("notes.txt"), "keep me").unwrap();
    memory.clear_name("pairs");
    assert!(!memory.check_call_in_cache("pairs", &(1u8, 2u8)));
    assert!(memory.check_call_in_cache("plain_square", &7u64));
    // joblib's `Memory.clear()`: every name under the directory.
    memory.clear_all();
    assert!(!memory.check_call_in_cache("plain_square", &7u64));
    assert!(!memory.check_call_in_cache("plain_square", &8u64));
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "keep me"
    );
    assert_eq!(square(7), 49);
    assert_eq!(PLAIN_SQUARES.load(Ordering::SeqCst), 3);
}

static MAPPED_CALLS: AtomicUsize = AtomicUsize::new(0);

#[memoize(dir = "target/memo-tests/mmap", mmap_mode = "r")]
fn ramp(n: u64, step: f64) -> Vec<f64> {
    MAPPED_CALLS.fetch_add(1, Ordering::SeqCst);
    (0..n).map(|i| i as f64 * step).collect()
}

/// Whether this process maps `path` now (`/proc/self/maps`).
fn is_mapped_here(path: &Path) -> bool {
    let path = std::fs::canonicalize(path).unwrap();
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .any(|l| l.ends_with(path.to_str().unwrap()))
}

#[test]
fn mmap_mode_returns_cached_arrays_mapped_and_never_damaged_ones() {
    ramp::clear();
    let expected: Vec<f64> = (0..100_000).map(|i| i as f64 * 0.5).collect();
    let first = ramp(100_000, 0.5);
    assert_eq!(&first[..], &expected[..]);
    assert!(first.is_mapped(), "stored, then mapped");
    let hit = ramp(100_000, 0.5);
    assert_eq!(MAPPED_CALLS.load(Ordering::SeqCst), 1);
    assert!(hit.is_mapped());
    assert_eq!(&hit[..], &expected[..]);
    let dir = ramp::cache_dir().unwrap();
    let entry = outputs(&dir).pop().unwrap();
    assert!(is_mapped_here(&entry), "the hit is a mapping of {entry:?}");
    drop((first, hit));

    // A flipped byte in the numbers is a miss, recomputed, not wrong numbers.
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&entry, &bytes).unwrap();
    let repaired = ramp(100_000, 0.5);
    assert_eq!(&repaired[..], &expected[..]);
    assert_eq!(MAPPED_CALLS.load(Ordering::SeqCst), 2);
    assert_eq!(ramp::stats().last_miss, Some(MissReason::Corrupt));
    // A truncated entry too.
    let len = std::fs::metadata(&entry).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&entry)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    assert_eq!(&ramp(100_000, 0.5)[..], &expected[..]);
    assert_eq!(MAPPED_CALLS.load(Ordering::SeqCst), 3);
    assert_eq!(ramp(100_000, 0.5).into_vec(), expected);
    assert_eq!(MAPPED_CALLS.load(Ordering::SeqCst), 3);
    // An empty array maps too.
    assert!(ramp(0, 1.0).is_empty());
}

#[memoize(dir = "target/memo-tests/mmap-live", mmap_mode = "r")]
fn ramp_live(n: u64, step: f64) -> Vec<f64> {
    (0..n).map(|i| i as f64 * step).collect()
}

#[test]
fn parjobs_own_rewrites_leave_a_live_cached_array_as_it_was() {
    ramp_live::clear();
    let expected: Vec<f64> = (0..50_000).map(|i| i as f64 * 0.25).collect();
    let live = ramp_live(50_000, 0.25);
    assert!(live.is_mapped());
    // Clearing unlinks; the next call writes a new file and renames it.
    ramp_live::clear();
    let again = ramp_live(50_000, 0.25);
    assert!(again.is_mapped());
    let dir = ramp_live::cache_dir().unwrap();
    for entry in outputs(&dir) {
        // Another file renamed over the entry, as every parjob writer does.
        let tmp = entry.with_extension("tmp-test");
        std::fs::write(&tmp, b"not an entry").unwrap();
        std::fs::rename(&tmp, &entry).unwrap();
    }
    assert_eq!(&live[..], &expected[..], "the first mapping changed");
    assert_eq!(&again[..], &expected[..], "the second mapping changed");
    ramp_live::clear();
}

#[memoize(dir = "/proc/parjob-cannot-write-here", mmap_mode = "r")]
fn ramp_nowhere(n: u64) -> Vec<u32> {
    (0..n as u32).collect()
}

#[test]
fn mmap_mode_without_a_writable_cache_returns_the_array_owned() {
    let values = ramp_nowhere(5);
    assert_eq!(&values[..], &[0, 1, 2, 3, 4]);
    assert!(!values.is_mapped());
    assert_eq!(ramp_nowhere::stats().misses, 1);
}
