//! What `f::map`, `f::delayed` and `f::repeat` take: owned values, borrows
//! of them for `&T` parameters (cloned once into each job), string
//! literals for `&str`, and nothing at all for a task of no arguments.

use parjob::prelude::*;
use std::path::{Path, PathBuf};

#[parallel(n_jobs = 2)]
fn total(xs: &[f64]) -> f64 {
    xs.iter().sum()
}

#[parallel(n_jobs = 2, backend = "process")]
fn shout(word: &str, times: usize) -> String {
    word.to_uppercase().repeat(times)
}

#[parallel(n_jobs = 2)]
fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[parallel(n_jobs = 2, backend = "process")]
fn seed() -> u32 {
    std::process::id()
}

#[parallel(n_jobs = 2, return_as = "generator")]
fn one() -> u8 {
    1
}

#[parjob::test]
fn borrowed_items_are_cloned_into_their_jobs() {
    let rows = vec![vec![1.0, 2.0], vec![3.0, 4.0, 5.0]];
    assert_eq!(total::map(&rows).unwrap(), [3.0, 12.0]);
    assert_eq!(total::map(rows.iter()).unwrap(), [3.0, 12.0]);
    assert_eq!(
        total::map([&rows[0][..], &rows[1][..1]]).unwrap(),
        [3.0, 3.0]
    );
    // Owned values still move in, with no copy.
    assert_eq!(total::map(rows.clone()).unwrap(), [3.0, 12.0]);
    assert_eq!(total::par_map(&rows).unwrap(), [3.0, 12.0]);
    // The caller keeps its data.
    assert_eq!(rows.len(), 2);

    // `&str` parameters take literals, across a process boundary too.
    let words = shout::map([("a", 2), ("b", 1)]).unwrap();
    assert_eq!(words, ["AA", "B"]);
    let owned = vec![("c".to_string(), 3)];
    assert_eq!(shout::map(owned).unwrap(), ["CCC"]);
    let job = shout::delayed("d", 2);
    assert_eq!(Parallel::new().run([job]).unwrap(), ["DD"]);

    let paths = [PathBuf::from("/a/b.txt"), PathBuf::from("c.rs")];
    assert_eq!(file_name::map(&paths).unwrap(), ["b.txt", "c.rs"]);
    assert_eq!(
        file_name::map(paths.iter().map(PathBuf::as_path)).unwrap(),
        ["b.txt", "c.rs"]
    );
}

#[parjob::test]
fn a_task_of_no_arguments_repeats() {
    let pids = seed::repeat(4).unwrap();
    assert_eq!(pids.len(), 4);
    assert!(pids.iter().all(|&p| p != std::process::id()));
    assert_eq!(seed::with(|p| p.n_jobs(1)).repeat(2).unwrap().len(), 2);
    // The attribute's return_as shapes `repeat` as it shapes `map`.
    let ones: Vec<u8> = one::repeat(3).map(Result::unwrap).collect();
    assert_eq!(ones, [1, 1, 1]);
    assert!(seed::repeat(0).unwrap().is_empty());
}

static CLONES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts its clones.
struct Counted(Vec<u64>);

impl Clone for Counted {
    fn clone(&self) -> Self {
        CLONES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Counted(self.0.clone())
    }
}

#[parallel(n_jobs = 2)]
fn weight(item: &Counted, row: &[u64]) -> u64 {
    item.0.iter().sum::<u64>() + row.iter().sum::<u64>()
}

#[parjob::test]
fn par_map_on_threads_borrows_instead_of_cloning() {
    use std::sync::atomic::Ordering::SeqCst;
    let items: Vec<Counted> = (0..50).map(|i| Counted(vec![i; 4])).collect();
    let rows: Vec<Vec<u64>> = (0..50).map(|i| vec![i, 1]).collect();
    let expected: Vec<u64> = (0..50).map(|i| 4 * i + i + 1).collect();
    let pairs = || items.iter().zip(rows.iter()).collect::<Vec<_>>();
    CLONES.store(0, SeqCst);
    assert_eq!(weight::par_map(pairs()).unwrap(), expected);
    assert_eq!(CLONES.load(SeqCst), 0, "the split path borrows");
    // `map` streams owned jobs through the scheduler: one clone per item.
    assert_eq!(weight::map(pairs()).unwrap(), expected);
    assert_eq!(CLONES.load(SeqCst), 50);
    // So does `par_map` when the plan needs the scheduler (a timeout).
    CLONES.store(0, SeqCst);
    let timed = parjob::config()
        .timeout(std::time::Duration::from_secs(60))
        .scope(|| weight::par_map(pairs()))
        .unwrap();
    assert_eq!(timed, expected);
    assert_eq!(CLONES.load(SeqCst), 50);
}
