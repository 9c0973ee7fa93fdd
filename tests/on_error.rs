//! `on_error = "continue"`: every item runs, and each failure is that
//! item's `Err`, in its place, on threads and worker processes, through
//! `map_results`, `run_results`, `iter` and `iter_unordered`; a panic, a
//! dead worker and a timeout each fail only their own item.

mod common;

use parjob::prelude::*;
use parjob::sync::Event;
use parjob::{Error, OnError};
use std::collections::BTreeSet;
use std::time::Duration;

/// Far longer than any run here needs.
const PATIENCE: Duration = Duration::from_secs(60);

/// Items 7, 27, 47, 67 and 87 fail.
fn cursed(i: u64) -> bool {
    i % 20 == 7
}

#[parallel(backend = "process", n_jobs = 2)]
fn shaky_process(i: u64) -> u64 {
    assert!(!cursed(i), "item {i} is cursed");
    i * 10
}

#[parallel(n_jobs = 2)]
fn shaky_thread(i: u64) -> u64 {
    assert!(!cursed(i), "item {i} is cursed");
    i * 10
}

/// Checks 100 outcomes: 95 values and 5 panics naming their item, in input
/// order.
fn check_in_order(outcomes: Vec<parjob::Result<u64>>) {
    assert_eq!(outcomes.len(), 100);
    for (i, outcome) in (0u64..).zip(outcomes) {
        match outcome {
            Ok(v) => assert!(!cursed(i) && v == i * 10, "item {i}: {v}"),
            Err(Error::Panic { index, message, .. }) => {
                assert!(cursed(i), "item {i} failed: {message}");
                assert_eq!(index as u64, i);
                assert!(
                    message.contains(&format!("item {i} is cursed")),
                    "{message}"
                );
            }
            Err(other) => panic!("item {i}: unexpected {other}"),
        }
    }
}

#[parjob::test]
fn map_results_gives_95_values_and_5_errors_in_order() {
    check_in_order(shaky_process::map_results(0..100u64).unwrap());
    check_in_order(shaky_thread::map_results(0..100u64).unwrap());
    let jobs = (0..100u64).map(shaky_thread::delayed);
    check_in_order(Parallel::new().n_jobs(2).run_results(jobs).unwrap());
}

#[parjob::test]
fn iter_yields_each_failure_in_its_place_and_goes_on() {
    let run = shaky_process::with(|p| p.on_error(OnError::Continue));
    check_in_order(run.iter(0..100u64).collect());
    let run = shaky_thread::with(|p| p.on_error(OnError::Continue));
    check_in_order(run.iter(0..100u64).collect());
}

/// Checks 100 unordered outcomes: each item once, the 5 cursed ones
/// failed.
fn check_unordered(unordered: impl Iterator<Item = parjob::Result<(usize, u64)>>) {
    let (mut ok, mut failed) = (BTreeSet::new(), BTreeSet::new());
    for outcome in unordered {
        match outcome {
            Ok((i, v)) => assert!(ok.insert(i) && v == i as u64 * 10),
            Err(Error::Panic { index, .. }) => assert!(failed.insert(index)),
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(failed, BTreeSet::from([7, 27, 47, 67, 87]));
    assert_eq!(ok.len(), 95);
}

#[parjob::test]
fn iter_unordered_yields_every_item_once() {
    check_unordered(
        shaky_process::with(|p| p.on_error(OnError::Continue)).iter_unordered(0..100u64),
    );
    check_unordered(
        shaky_thread::with(|p| p.on_error(OnError::Continue)).iter_unordered(0..100u64),
    );
}

/// The list form under "continue" runs every item, then returns the first
/// failure in input order.
#[parallel(n_jobs = 2, on_error = "continue")]
fn counted(i: u64, ran: parjob::sync::Value<u64>) -> u64 {
    ran.update(|n| *n += 1);
    assert!(i != 3 && i != 9, "item {i} fails");
    i
}

#[parjob::test]
fn the_list_runs_everything_then_returns_the_first_failure() {
    let ran = parjob::sync::Value::new(0u64).unwrap();
    let err = counted::map((0..20u64).map(|i| (i, ran.clone()))).unwrap_err();
    assert!(matches!(err, Error::Panic { index: 3, .. }), "{err}");
    assert_eq!(ran.get(), 20, "every item ran");
    // The default stays joblib's: the first error to happen stops the run.
    match shaky_thread::map(0..100u64).unwrap_err() {
        Error::Panic { index, .. } => assert!(cursed(index as u64), "{index}"),
        other => panic!("unexpected {other}"),
    }
}

#[parallel(backend = "process", n_jobs = 2)]
fn aborts_on(i: u64) -> u64 {
    if i == 3 || i == 11 {
        std::process::abort();
    }
    i
}

#[parjob::test]
fn a_dead_worker_fails_only_its_item() {
    common::outcomes::check_deaths_of_3_and_11(&aborts_on::map_results(0..16u64).unwrap());
}

/// Item 2 waits for `release`, which the test sets only after the run
/// returned, and leaves a mark in `dir` if its minute runs out.
#[parallel(backend = "process", n_jobs = 2)]
fn held_process(i: u64, release: Event, dir: &std::path::Path) -> u64 {
    if i == 2 && !release.wait_timeout(PATIENCE) {
        std::fs::write(dir.join("in_vain"), b"").unwrap();
    }
    i
}

#[parjob::test]
fn a_timeout_fails_only_its_item_on_processes_and_threads() {
    let dir = common::scratch("on_error", "timeout");
    let release = Event::new().unwrap();
    let run = held_process::with(|p| p.timeout(Duration::from_millis(300)));
    let items = (0..8u64).map(|i| (i, release.clone(), dir.clone()));
    let outcomes = run.map_results(items).unwrap();
    release.set();
    assert!(
        !dir.join("in_vain").exists(),
        "the run waited for the held item"
    );
    common::outcomes::check_timeout_of_2(&outcomes);

    // Threads: the held job's thread cannot be stopped; its item fails
    // and its late result is dropped.
    let release = Event::new().unwrap();
    let jobs = (0..8u64).map(|i| {
        let release = release.clone();
        Job::new(move || {
            if i == 2 {
                release.wait_timeout(PATIENCE);
            }
            i
        })
    });
    let p = Parallel::new()
        .n_jobs(2)
        .timeout(Duration::from_millis(300));
    let outcomes = p.run_results(jobs).unwrap();
    release.set();
    common::outcomes::check_timeout_of_2(&outcomes);
}

#[parjob::test]
fn on_error_comes_from_config_and_the_environment_and_is_checked() {
    let outcomes = parjob::config()
        .on_error(OnError::Continue)
        .scope(|| shaky_thread::with(|p| p).iter(0..100u64).collect());
    check_in_order(outcomes);
    let out = common::run_helper(
        "env_helper",
        &[("PARJOB_ON_ERROR", std::ffi::OsStr::new("continue"))],
    );
    assert!(out.contains("ENV 95 5"), "{out}");
    let out = common::run_helper(
        "bad_env_helper",
        &[("PARJOB_ON_ERROR", std::ffi::OsStr::new("skip"))],
    );
    assert!(
        out.contains("PARJOB_ON_ERROR") && out.contains("\"continue\""),
        "{out}"
    );
}

#[parjob::test]
#[ignore = "helper: started by on_error_comes_from_config_and_the_environment_and_is_checked"]
fn env_helper() {
    let outcomes: Vec<_> = shaky_thread::with(|p| p).iter(0..100u64).collect();
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    println!("ENV {} {failed}", outcomes.len() - failed);
}

#[parjob::test]
#[ignore = "helper: started by on_error_comes_from_config_and_the_environment_and_is_checked"]
fn bad_env_helper() {
    let err = shaky_thread::map(0..4u64).unwrap_err();
    println!("BAD {err}");
}
