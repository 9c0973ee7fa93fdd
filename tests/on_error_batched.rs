//! `on_error = "continue"` on worker processes keeps batches whole: a
//! failed job is reported as a piece of its batch, and the batch goes on.
//! Each case runs with batches of 8 (or 4), so every failure has jobs
//! before and after it in its batch, and each job counts its runs.

mod common;

use parjob::prelude::*;
use parjob::sync::Event;
use parjob::{Error, OnError};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// Far longer than any run here needs.
const PATIENCE: Duration = Duration::from_secs(60);

use common::outcomes::{count_run, runs};

/// Items 7, 27, 47, 67 and 87 panic.
#[parallel(backend = "process", n_jobs = 2, batch_size = 8, on_error = "continue")]
fn shaky(i: u64, dir: &Path) -> u64 {
    count_run(dir, i);
    assert!(i % 20 != 7, "item {i} is cursed");
    i * 10
}

fn check_panics(outcomes: &[parjob::Result<u64>]) {
    assert_eq!(outcomes.len(), 100);
    for (i, outcome) in (0u64..).zip(outcomes) {
        match outcome {
            Ok(v) => assert!(i % 20 != 7 && *v == i * 10, "item {i}: {v}"),
            Err(Error::Panic { index, message, .. }) => {
                assert_eq!((i % 20, *index as u64), (7, i), "{message}");
            }
            Err(other) => panic!("item {i}: unexpected {other}"),
        }
    }
}

#[parjob::test]
fn panics_in_batches_fail_only_their_items_through_every_api() {
    let dir = common::scratch("on_error_batched", "panics");
    let items = || (0..100u64).map(|i| (i, dir.clone()));
    check_panics(&shaky::map_results(items()).unwrap());
    // Every job ran exactly once: the jobs after a panic in its batch were
    // not run again.
    for i in 0..100 {
        assert_eq!(runs(&dir, i), 1, "item {i}");
    }
    let ordered: Vec<_> = shaky::with(|p| p).iter(items()).collect();
    check_panics(&ordered);
    let mut seen = BTreeSet::new();
    let mut unordered: Vec<parjob::Result<u64>> = (0..100).map(|_| Ok(u64::MAX)).collect();
    for outcome in shaky::with(|p| p).iter_unordered(items()) {
        let (index, value) = match outcome {
            Ok((index, v)) => (index, Ok(v)),
            Err(e) => (e.index().expect("an item's error"), Err(e)),
        };
        assert!(seen.insert(index), "item {index} twice");
        unordered[index] = value;
    }
    assert_eq!(seen.len(), 100);
    check_panics(&unordered);
}

/// Items 3 and 11 abort their worker.
#[parallel(backend = "process", n_jobs = 2, batch_size = 4, on_error = "continue")]
fn aborts_on(i: u64, dir: &Path) -> u64 {
    count_run(dir, i);
    if i == 3 || i == 11 {
        std::process::abort();
    }
    i
}

#[parjob::test]
fn a_death_in_a_batch_fails_only_its_item() {
    let dir = common::scratch("on_error_batched", "deaths");
    let outcomes = aborts_on::map_results((0..16u64).map(|i| (i, dir.clone()))).unwrap();
    common::outcomes::check_deaths_of_3_and_11(&outcomes);
    for i in 0..16 {
        // The dying job ran once; the jobs before it in its batch again
        // only if their values died with the worker; the rest once.
        let allowed = match i {
            0..=2 | 8..=10 => 1..=2,
            _ => 1..=1,
        };
        assert!(
            allowed.contains(&runs(&dir, i)),
            "item {i}: {}",
            runs(&dir, i)
        );
    }
}

/// Item 2 waits for `release`, set only after the run returned.
#[parallel(backend = "process", n_jobs = 2, batch_size = 4)]
fn held(i: u64, release: Event, dir: &Path) -> u64 {
    count_run(dir, i);
    if i == 2 && !release.wait_timeout(PATIENCE) {
        std::fs::write(dir.join("in_vain"), b"").unwrap();
    }
    i
}

#[parjob::test]
fn a_timeout_in_a_batch_fails_only_its_item() {
    let dir = common::scratch("on_error_batched", "timeout");
    let release = Event::new().unwrap();
    let run = held::with(|p| {
        p.timeout(Duration::from_millis(300))
            .on_error(OnError::Continue)
    });
    let outcomes = run
        .map_results((0..8u64).map(|i| (i, release.clone(), dir.clone())))
        .unwrap();
    release.set();
    assert!(!dir.join("in_vain").exists(), "the run waited for item 2");
    common::outcomes::check_timeout_of_2(&outcomes);
    assert_eq!(runs(&dir, 2), 1, "the timed-out item ran once");
    assert_eq!(runs(&dir, 3), 1, "the item after it ran once");
}

type Counts = std::sync::Arc<Vec<std::sync::atomic::AtomicUsize>>;

/// On threads: items 7, 27, 47, 67 and 87 panic; each run is counted.
#[parallel(n_jobs = 2, batch_size = 8, on_error = "continue")]
fn shaky_thread(i: u64, counts: Counts) -> u64 {
    counts[i as usize].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    assert!(i % 20 != 7, "item {i} is cursed");
    i * 10
}

#[parjob::test]
fn on_threads_panics_in_batches_fail_only_their_items() {
    let counts: Counts = std::sync::Arc::new(
        (0..100)
            .map(|_| std::sync::atomic::AtomicUsize::new(0))
            .collect(),
    );
    let items = (0..100u64).map(|i| (i, counts.clone()));
    check_panics(&shaky_thread::map_results(items).unwrap());
    for (i, count) in counts.iter().enumerate() {
        assert_eq!(
            count.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "item {i}"
        );
    }
}
