//! `#[memoize]` on real files: hits, misses and their reasons, keys,
//! damage, races between processes, expiry, eviction, an unwritable
//! directory, shelving, and stacking with `#[parallel]`.

use parjob::prelude::*;
use parjob::MissReason;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::{cache_outputs as outputs, fresh, helper_command as helper};

/// Collects `tracing` events' text on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<String>>>);

struct Text(String);

impl tracing::field::Visit for Text {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl tracing::Subscriber for Captured {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = Text(String::new());
        event.record(&mut text);
        self.0.lock().unwrap().push(text.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl Captured {
    fn during<T>(&self, f: impl FnOnce() -> T) -> T {
        tracing::subscriber::with_default(self.clone(), f)
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

static SQUARES: AtomicUsize = AtomicUsize::new(0);

#[memoize(dir = "target/memo-tests/hits")]
fn square(x: u64, verbose: bool, label: &str) -> u64 {
    SQUARES.fetch_add(1, Ordering::SeqCst);
    if verbose {
        println!("{label}: squaring {x}");
    }
    x * x
}

#[test]
fn a_hit_skips_the_body_and_a_changed_argument_misses() {
    fresh("target/memo-tests/hits");
    let before = SQUARES.load(Ordering::SeqCst);
    assert_eq!(square(12, false, "a"), 144);
    assert_eq!(square::stats().last_miss, Some(MissReason::NoEntry));
    assert_eq!(square(12, false, "a"), 144);
    assert_eq!(
        SQUARES.load(Ordering::SeqCst) - before,
        1,
        "the hit ran the body"
    );
    assert_eq!(square(13, false, "a"), 169);
    assert_eq!(
        SQUARES.load(Ordering::SeqCst) - before,
        2,
        "a new argument did not miss"
    );
    let stats = square::stats();
    assert_eq!((stats.hits, stats.misses), (1, 2));
    // The store is readable: one output file per entry (a miss writes no
    // other file), and the function's code beside them.
    let dir = square::cache_dir().unwrap();
    assert_eq!(outputs(&dir).len(), 2);
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, 3, "two entries and func_code.rs");
    let code = std::fs::read_to_string(dir.join("func_code.rs")).unwrap();
    assert!(code.contains("fn square"), "{code}");
}

static LOGGED: AtomicUsize = AtomicUsize::new(0);

#[memoize(dir = "target/memo-tests/ignored", ignore = [verbose, label])]
fn logged(x: u64, verbose: bool, label: String) -> u64 {
    LOGGED.fetch_add(1, Ordering::SeqCst);
    if verbose {
        println!("{label}");
    }
    x + 1
}

#[test]
fn an_ignored_argument_does_not_change_the_key() {
    fresh("target/memo-tests/ignored");
    let before = LOGGED.load(Ordering::SeqCst);
    assert_eq!(logged(1, false, "one".into()), 2);
    assert_eq!(logged(1, true, "two".into()), 2);
    assert_eq!(LOGGED.load(Ordering::SeqCst) - before, 1);
    assert_eq!(logged(2, false, "one".into()), 3);
    assert_eq!(LOGGED.load(Ordering::SeqCst) - before, 2);
}

static TOTALS: AtomicUsize = AtomicUsize::new(0);

#[memoize(dir = "target/memo-tests/maps")]
fn total(weights: HashMap<String, u64>, tags: HashSet<u32>) -> u64 {
    TOTALS.fetch_add(1, Ordering::SeqCst);
    weights.values().sum::<u64>() + tags.len() as u64
}

#[test]
fn hashed_maps_built_in_different_orders_hit() {
    fresh("target/memo-tests/maps");
    let before = TOTALS.load(Ordering::SeqCst);
    let forward: HashMap<String, u64> = (0..50).map(|i| (format!("k{i}"), i)).collect();
    let mut backward = HashMap::with_capacity(512);
    for i in (0..50).rev() {
        backward.insert(format!("k{i}"), i);
    }
    let tags: HashSet<u32> = (0..30).collect();
    let reversed: HashSet<u32> = (0..30).rev().collect();
    assert_eq!(total(forward.clone(), tags), 1225 + 30);
    assert_eq!(total(backward, reversed), 1225 + 30);
    assert_eq!(TOTALS.load(Ordering::SeqCst) - before, 1);
    let mut changed = forward;
    changed.insert("k0".into(), 1);
    assert_eq!(total(changed, (0..30).collect()), 1226 + 30);
    assert_eq!(TOTALS.load(Ordering::SeqCst) - before, 2);
}

#[memoize(dir = "target/memo-tests/processes")]
fn slow_cube(x: u64) -> u64 {
    println!("computing {x}");
    std::thread::sleep(Duration::from_millis(2));
    x * x * x
}

#[test]
#[ignore = "helper: run by the tests below in their own processes"]
fn helper_cubes() {
    let n: u64 = std::env::var("CUBES").unwrap().parse().unwrap();
    for x in 0..n {
        assert_eq!(slow_cube(x), x * x * x);
    }
    let stats = slow_cube::stats();
    println!("hits={} misses={}", stats.hits, stats.misses);
}

fn run_cubes(n: u64) -> std::process::Child {
    helper("helper_cubes", &[("CUBES", &n.to_string())])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn counts(out: std::process::Output) -> (u64, u64) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("hits="))
        .unwrap_or_else(|| panic!("{text}"));
    let mut parts = line
        .split(' ')
        .map(|p| p.split('=').nth(1).unwrap().parse().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

#[test]
fn the_cache_persists_across_processes_and_survives_a_race() {
    fresh("target/memo-tests/processes");
    // One process computes, the next finds everything.
    assert_eq!(counts(run_cubes(20).wait_with_output().unwrap()), (0, 20));
    assert_eq!(counts(run_cubes(20).wait_with_output().unwrap()), (20, 0));
    // Two processes race on 200 keys: both succeed, and every entry is valid.
    let (a, b) = (run_cubes(200), run_cubes(200));
    let (a, b) = (
        counts(a.wait_with_output().unwrap()),
        counts(b.wait_with_output().unwrap()),
    );
    assert_eq!(a.0 + a.1, 200);
    assert_eq!(b.0 + b.1, 200);
    let dir = PathBuf::from("target/memo-tests/processes/memoize/slow_cube");
    assert_eq!(outputs(&dir).len(), 200);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let after = counts(run_cubes(200).wait_with_output().unwrap());
    assert_eq!(after, (200, 0));
}

mod version_one {
    use parjob::prelude::*;

    #[memoize(dir = "target/memo-tests/code", name = "versioned")]
    pub fn versioned(x: u64) -> u64 {
        x + 1
    }
}

mod version_two {
    use parjob::prelude::*;

    #[memoize(dir = "target/memo-tests/code", name = "versioned")]
    pub fn versioned(x: u64) -> u64 {
        x + 2
    }
}

#[test]
fn changing_the_body_invalidates() {
    // The same cache name compiled twice with two bodies: what the first
    // stored does not answer for the second.
    fresh("target/memo-tests/code");
    assert_eq!(version_one::versioned(1), 2);
    assert_eq!(version_one::versioned(1), 2);
    assert_eq!(version_one::versioned::stats().hits, 1);
    assert_eq!(version_two::versioned(1), 3);
    assert_eq!(
        version_two::versioned::stats().last_miss,
        Some(MissReason::CodeChanged)
    );
    let code = std::fs::read_to_string("target/memo-tests/code/versioned/func_code.rs").unwrap();
    assert!(code.contains("x + 2"), "{code}");
}

static HALVES: AtomicUsize = AtomicUsize::new(0);

#[memoize(dir = "target/memo-tests/damage", compress = "zstd:3")]
fn halves(n: usize) -> Vec<f64> {
    HALVES.fetch_add(1, Ordering::SeqCst);
    (0..n).map(|i| i as f64 / 2.0).collect()
}

#[test]
fn a_truncated_entry_is_recomputed_with_a_warning() {
    fresh("target/memo-tests/damage");
    let expected: Vec<f64> = (0..5000).map(|i| i as f64 / 2.0).collect();
    assert_eq!(halves(5000), expected);
    let file = outputs(&halves::cache_dir().unwrap()).pop().unwrap();
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let before = HALVES.load(Ordering::SeqCst);
    let warnings = Captured::default();
    assert_eq!(warnings.during(|| halves(5000)), expected);
    assert_eq!(HALVES.load(Ordering::SeqCst) - before, 1);
    assert_eq!(halves::stats().last_miss, Some(MissReason::Corrupt));
    let lines = warnings.lines();
    assert!(lines.iter().any(|l| l.contains("corrupt")), "{lines:?}");
    // It was replaced by a valid entry.
    assert_eq!(halves(5000), expected);
    assert_eq!(HALVES.load(Ordering::SeqCst) - before, 1);
    // A flipped byte is caught by the checksum too.
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();
    assert_eq!(halves(5000), expected);
    assert_eq!(halves::stats().last_miss, Some(MissReason::Corrupt));
}

#[memoize(dir = "target/memo-tests/expiry", expires_after = "300ms")]
fn stamped(x: u64) -> u64 {
    x
}

#[test]
fn an_entry_past_expires_after_misses() {
    fresh("target/memo-tests/expiry");
    stamped(1);
    stamped(1);
    assert_eq!(stamped::stats().hits, 1);
    parjob::__private::memo::advance_clock(Duration::from_millis(400));
    stamped(1);
    assert_eq!(stamped::stats().last_miss, Some(MissReason::Expired));
    assert_eq!(stamped::stats().misses, 2);
}

#[memoize(dir = "target/memo-tests/lru", bytes_limit = "4K")]
fn kilobyte(seed: u8) -> Vec<u8> {
    vec![seed; 1000]
}

#[test]
fn the_bytes_limit_keeps_the_most_recently_used() {
    fresh("target/memo-tests/lru");
    // Each entry's last use is its file's mtime: date them 30, 20 and 10
    // seconds ago, in seed order, instead of sleeping between calls.
    for seed in 1..=3u8 {
        let before = outputs(&kilobyte::cache_dir().unwrap_or_default());
        kilobyte(seed);
        let new: Vec<PathBuf> = outputs(&kilobyte::cache_dir().unwrap())
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        assert_eq!(new.len(), 1, "one new entry for seed {seed}");
        let used = std::time::SystemTime::now() - Duration::from_secs(40 - 10 * seed as u64);
        let file = std::fs::File::options().write(true).open(&new[0]).unwrap();
        file.set_modified(used).unwrap();
    }
    assert!((1..=3).all(kilobyte::check_call_in_cache));
    kilobyte(1); // a hit: 1 is now the most recently used
    assert_eq!(kilobyte::stats().hits, 1);
    kilobyte(4); // over 4 KiB: the least recently used (2) goes
    assert!(kilobyte::check_call_in_cache(1));
    assert!(!kilobyte::check_call_in_cache(2));
    assert!(kilobyte::check_call_in_cache(3));
    assert!(kilobyte::check_call_in_cache(4));
    // The evicted entry left a note in its place, and only it.
    let notes: Vec<PathBuf> = std::fs::read_dir(kilobyte::cache_dir().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    let note = std::fs::read_to_string(&notes[0]).unwrap();
    assert!(note.contains("\"evicted_unix_s\""), "{note}");
    assert!(!notes[0].with_extension("out").exists());
    kilobyte(2);
    assert_eq!(kilobyte::stats().last_miss, Some(MissReason::Evicted));
    // Explicitly, down to one entry.
    assert!(kilobyte::reduce_size(None, Some(1), None) >= 2);
    assert_eq!(outputs(&kilobyte::cache_dir().unwrap()).len(), 1);
}

static UNCACHED: AtomicUsize = AtomicUsize::new(0);

#[memoize(dir = "target/memo-tests/blocked/file/cache")]
fn uncached(x: u64) -> u64 {
    UNCACHED.fetch_add(1, Ordering::SeqCst);
    x * 10
}

#[test]
fn an_unwritable_cache_still_returns_results_with_one_warning() {
    // A regular file where a directory should be: no one, root included,
    // can create the cache there.
    let blocked = fresh("target/memo-tests/blocked");
    std::fs::create_dir_all(&blocked).unwrap();
    std::fs::write(blocked.join("file"), b"not a directory").unwrap();
    let warnings = Captured::default();
    let before = UNCACHED.load(Ordering::SeqCst);
    let got = warnings.during(|| (uncached(1), uncached(1), uncached(2)));
    assert_eq!(got, (10, 10, 20));
    assert_eq!(UNCACHED.load(Ordering::SeqCst) - before, 3);
    let lines = warnings.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("unavailable"), "{lines:?}");
}

static SHELVED: AtomicUsize = AtomicUsize::new(0);

#[memoize(dir = "target/memo-tests/shelve")]
fn words(n: usize) -> Vec<String> {
    SHELVED.fetch_add(1, Ordering::SeqCst);
    (0..n).map(|i| format!("w{i}")).collect()
}

#[test]
fn call_and_shelve_loads_only_at_get() {
    fresh("target/memo-tests/shelve");
    let before = SHELVED.load(Ordering::SeqCst);
    let shelved = words::call_and_shelve(3);
    assert_eq!(SHELVED.load(Ordering::SeqCst) - before, 1);
    assert_eq!(shelved.get().unwrap(), vec!["w0", "w1", "w2"]);
    // Found, not recomputed, and not read: damage shows only at `get`.
    let again = words::call_and_shelve(3);
    assert_eq!(SHELVED.load(Ordering::SeqCst) - before, 1);
    std::fs::write(again.path().unwrap(), b"PJMEMO garbage").unwrap();
    assert!(matches!(again.get(), Err(parjob::Error::Cache { .. })));
    assert!(!words::check_call_in_cache(4));
    shelved.clear();
    assert!(!words::check_call_in_cache(3));
}

/// Appends a line to `log`: calls made in worker processes, counted.
fn record_call(log: &str) {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"call\n"))
        .unwrap();
}

#[memoize(dir = "target/memo-tests/stacked-below")]
#[parallel(n_jobs = 2, backend = "process")]
fn column_mean_below(column: u64, log: String) -> f64 {
    record_call(&log);
    column as f64 / 2.0
}

#[parallel(n_jobs = 2, backend = "process")]
#[memoize(dir = "target/memo-tests/stacked-above", ignore = [log])]
fn column_mean_above(column: u64, log: String) -> f64 {
    record_call(&log);
    column as f64 / 2.0
}

#[parjob::test]
fn a_memoized_process_task_shares_the_cache_across_workers() {
    for (dir, above) in [
        ("target/memo-tests/stacked-below", false),
        ("target/memo-tests/stacked-above", true),
    ] {
        let dir = fresh(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("calls.log").display().to_string();
        let round = || {
            let items = (0..8u64).map(|c| (c, log.clone()));
            if above {
                column_mean_above::map(items).unwrap()
            } else {
                column_mean_below::map(items).unwrap()
            }
        };
        let expected: Vec<f64> = (0..8).map(|c| c as f64 / 2.0).collect();
        assert_eq!(round(), expected);
        assert_eq!(round(), expected);
        // Eight calls in the first round, in the workers; none in the second.
        let calls = std::fs::read_to_string(&log).unwrap();
        assert_eq!(calls.lines().count(), 8, "above = {above}");
        // The parent's statistics count what the workers did.
        let stats = if above {
            column_mean_above::stats()
        } else {
            column_mean_below::stats()
        };
        assert_eq!((stats.hits, stats.misses), (8, 8), "above = {above}");
    }
}

#[test]
fn memory_is_the_runtime_form() {
    let dir = fresh("target/memo-tests/memory");
    let memory = Memory::new(&dir);
    let calls = AtomicUsize::new(0);
    let slow = |x: u64| {
        memory.cache("slow", &x, || {
            calls.fetch_add(1, Ordering::SeqCst);
            x + 100
        })
    };
    assert_eq!((slow(1), slow(1), slow(2)), (101, 101, 102));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(memory.stats("slow").hits, 1);
    assert_eq!(memory.reduce_size(None, Some(0), None), 2);
    assert_eq!(slow(1), 101);
    assert_eq!(memory.stats("slow").last_miss, Some(MissReason::Evicted));
}

#[memoize(dir = "target/memo-tests/evict-race")]
fn tripled(x: u64) -> Vec<u64> {
    vec![x * 3; 64]
}

#[test]
fn eviction_racing_with_readers_only_causes_misses() {
    fresh("target/memo-tests/evict-race");
    let reading = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|s| {
        // Evicts down to 5 entries, over and over, until the readers stop.
        let evictor = s.spawn(|| {
            let mut removed = 0;
            while reading.load(Ordering::SeqCst) {
                removed += tripled::reduce_size(None, Some(5), None);
            }
            removed
        });
        for round in 0..20 {
            for x in 0..40u64 {
                assert_eq!(tripled(x), vec![x * 3; 64], "round {round}");
            }
        }
        reading.store(false, Ordering::SeqCst);
        assert!(evictor.join().unwrap() > 0);
    });
    let stats = tripled::stats();
    assert_eq!(stats.hits + stats.misses, 800);
}

#[memoize(location = "target/memo-tests/joblib-zlib", compress = 3)]
fn zlib_cached(x: u64) -> Vec<u64> {
    vec![x; 1000]
}

#[memoize(dir = "target/memo-tests/joblib-gzip", compress = "gzip:3")]
fn gzip_cached(x: u64) -> Vec<u64> {
    vec![x; 1000]
}

#[memoize(dir = "target/memo-tests/joblib-true", compress = true)]
fn bool_cached(x: u64) -> Vec<u64> {
    vec![x; 1000]
}

/// The codec byte of the one entry a function's cache holds.
fn stored_codec(dir: &std::path::Path) -> u8 {
    let entries = outputs(dir);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let bytes = std::fs::read(&entries[0]).unwrap();
    parjob::__private::persist_format::Header::decode(&bytes)
        .unwrap()
        .codec
}

#[test]
fn joblibs_location_and_compress_forms_are_accepted_and_used() {
    use parjob::__private::persist_format::codec_tag;
    use parjob::Compression;
    fresh("target/memo-tests/joblib-zlib");
    fresh("target/memo-tests/joblib-gzip");
    fresh("target/memo-tests/joblib-true");
    for _ in 0..2 {
        assert_eq!(zlib_cached(4), vec![4; 1000]);
        assert_eq!(gzip_cached(5), vec![5; 1000]);
        assert_eq!(bool_cached(6), vec![6; 1000]);
    }
    assert_eq!(zlib_cached::stats().hits, 1);
    assert_eq!(gzip_cached::stats().hits, 1);
    assert_eq!(bool_cached::stats().hits, 1);
    // `location` is the directory; `compress = 3` and `true` are zlib level 3.
    let zlib = zlib_cached::cache_dir().unwrap();
    assert!(
        zlib.starts_with("target/memo-tests/joblib-zlib"),
        "{zlib:?}"
    );
    assert_eq!(stored_codec(&zlib), codec_tag(Compression::Zlib(3)));
    assert_eq!(
        stored_codec(&gzip_cached::cache_dir().unwrap()),
        codec_tag(Compression::Gzip(3))
    );
    assert_eq!(
        stored_codec(&bool_cached::cache_dir().unwrap()),
        codec_tag(Compression::Zlib(3))
    );
}
