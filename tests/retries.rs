//! `retries`: a job whose worker process died or timed out runs again on
//! a fresh worker; a panic only with `retry_panics`; when the attempts run
//! out, the error says how many there were and the last cause. Each task
//! fails on its first attempt only, which a marker file in the test's own
//! directory records, so the tests are causal, not timed.

mod common;

use parjob::prelude::*;
use parjob::sync::Event;
use parjob::{Error, OnError};
use std::path::Path;
use std::time::Duration;

/// Far longer than any run here needs.
const PATIENCE: Duration = Duration::from_secs(60);

/// Whether this is item `i`'s first attempt (recorded in `dir`).
fn first_attempt(dir: &Path, i: u64) -> bool {
    let marker = dir.join(format!("{i}.tried"));
    let first = !marker.exists();
    std::fs::write(marker, b"").unwrap();
    first
}

/// Item 3 SIGKILLs its own worker on its first attempt.
#[parallel(backend = "process", n_jobs = 2, retries = 2)]
fn kills_itself_once(i: u64, dir: &Path) -> u64 {
    if i == 3 && first_attempt(dir, i) {
        // SAFETY: a signal to this very worker process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    i
}

#[parjob::test]
fn a_job_whose_worker_was_killed_succeeds_on_its_second_attempt() {
    let dir = common::scratch("retries", "killed");
    let items = (0..8u64).map(|i| (i, dir.clone()));
    assert_eq!(
        kills_itself_once::map(items).unwrap(),
        (0..8).collect::<Vec<_>>()
    );
    assert!(dir.join("3.tried").exists(), "item 3 was tried");
    // Without retries, the same death ends the run.
    let dir = common::scratch("retries", "killed-once");
    let run = kills_itself_once::with(|p| p.retries(0));
    match run.map((0..8u64).map(|i| (i, dir.clone()))).unwrap_err() {
        Error::WorkerDied { index, status, .. } => {
            assert_eq!(index, 3);
            assert!(status.contains("SIGKILL"), "{status}");
        }
        other => panic!("expected a dead worker, got {other}"),
    }
}

#[parallel(backend = "process", n_jobs = 2)]
fn always_aborts_on_2(i: u64) -> u64 {
    if i == 2 {
        std::process::abort();
    }
    i
}

#[parjob::test]
fn a_job_that_always_kills_its_worker_fails_after_every_attempt() {
    let run = always_aborts_on_2::with(|p| p.retries(2));
    let err = run.map(0..6u64).unwrap_err();
    match &err {
        Error::Retried {
            index,
            attempts,
            last,
            ..
        } => {
            assert_eq!((*index, *attempts), (2, 3));
            assert!(
                matches!(**last, Error::WorkerDied { index: 2, .. }),
                "{last}"
            );
        }
        other => panic!("expected the attempts to run out, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("failed 3 times") && text.contains("SIGABRT"),
        "{text}"
    );
    // Under "continue", it is that item's error alone.
    let run = always_aborts_on_2::with(|p| p.retries(1).on_error(OnError::Continue));
    let outcomes: Vec<_> = run.iter(0..6u64).collect();
    assert_eq!(outcomes.len(), 6);
    for (i, outcome) in (0u64..).zip(&outcomes) {
        match outcome {
            Ok(v) => assert!(i != 2 && *v == i),
            Err(Error::Retried {
                index: 2,
                attempts: 2,
                ..
            }) => assert_eq!(i, 2),
            Err(other) => panic!("item {i}: unexpected {other}"),
        }
    }
}

/// Item 1 waits on its first attempt for `release`, which nobody sets:
/// the timeout stops it, and the second attempt returns at once.
#[parallel(backend = "process", n_jobs = 2)]
fn stuck_once(i: u64, dir: &Path, release: Event) -> u64 {
    if i == 1 && first_attempt(dir, i) {
        release.wait_timeout(PATIENCE);
    }
    i
}

#[parjob::test]
fn a_job_that_timed_out_succeeds_on_its_second_attempt() {
    let dir = common::scratch("retries", "stuck");
    let release = Event::new().unwrap();
    let run = stuck_once::with(|p| p.retries(1).timeout(Duration::from_millis(300)));
    let items = (0..4u64).map(|i| (i, dir.clone(), release.clone()));
    assert_eq!(run.map(items).unwrap(), vec![0, 1, 2, 3]);
}

/// Item 2 panics on its first attempt.
#[parallel(backend = "process", n_jobs = 2)]
fn panics_once(i: u64, dir: &Path) -> u64 {
    assert!(
        !(i == 2 && first_attempt(dir, i)),
        "item {i}, first attempt"
    );
    i
}

#[parjob::test]
fn a_panic_is_retried_only_with_retry_panics() {
    let dir = common::scratch("retries", "panic");
    let run = panics_once::with(|p| p.retries(2));
    match run.map((0..4u64).map(|i| (i, dir.clone()))).unwrap_err() {
        Error::Panic { index: 2, .. } => {}
        other => panic!("a panic is not retried by default: {other}"),
    }
    let dir = common::scratch("retries", "panic-retried");
    let run = panics_once::with(|p| p.retries(2).retry_panics(true));
    assert_eq!(
        run.map((0..4u64).map(|i| (i, dir.clone()))).unwrap(),
        vec![0, 1, 2, 3]
    );
}

#[parjob::test]
fn each_retry_is_one_verbose_line() {
    let out = common::run_helper_stderr("verbose_retry_helper");
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("retrying")).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("always_aborts_on_2") && lines[0].contains("item 2"),
        "{out}"
    );
    assert!(
        lines[0].contains("attempt 2 of 3") && lines[1].contains("attempt 3 of 3"),
        "{out}"
    );
}

#[parjob::test]
#[ignore = "helper: started by each_retry_is_one_verbose_line"]
fn verbose_retry_helper() {
    let run = always_aborts_on_2::with(|p| p.retries(2).verbose(1));
    assert!(run.map(0..4u64).is_err());
}

#[parjob::test]
fn a_job_that_killed_its_worker_twice_runs_alone() {
    let out = common::run_helper_stderr("alone_retry_helper");
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("retrying")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("attempt 2 of 4)"),
        "one death: not alone yet\n{out}"
    );
    for (line, attempt) in lines[1..].iter().zip([3, 4]) {
        assert!(
            line.contains(&format!("attempt {attempt} of 4, alone on its worker")),
            "{out}"
        );
    }
}

#[parjob::test]
#[ignore = "helper: started by a_job_that_killed_its_worker_twice_runs_alone"]
fn alone_retry_helper() {
    let run = always_aborts_on_2::with(|p| p.retries(3).on_error(OnError::Continue).verbose(1));
    let outcomes = run.map_results(0..20u64).unwrap();
    // The healthy items all ran, however the bad one's deaths fell.
    for (i, outcome) in outcomes.iter().enumerate() {
        match (i, outcome) {
            (2, Err(Error::Retried { attempts: 4, .. })) => {}
            (2, other) => panic!("item 2: {other:?}"),
            (i, Ok(v)) => assert_eq!(*v, i as u64),
            (i, Err(e)) => panic!("item {i} failed beside the bad one: {e}"),
        }
    }
}

/// Counts each run of item `i` in `dir`; item 5 SIGKILLs its worker on
/// its first run.
#[parallel(backend = "process", n_jobs = 2, batch_size = 4, retries = 2)]
fn counted(i: u64, dir: &Path) -> u64 {
    let first = common::outcomes::runs(dir, i) == 0;
    common::outcomes::count_run(dir, i);
    if i == 5 && first {
        // SAFETY: a signal to this very worker process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    i * 10
}

#[parjob::test]
fn a_retry_in_a_batch_reruns_only_what_the_dead_worker_lost() {
    let dir = common::scratch("retries", "batched");
    let out = counted::map((0..16u64).map(|i| (i, dir.clone()))).unwrap();
    assert_eq!(out, (0..16).map(|i| i * 10).collect::<Vec<_>>());
    for i in 0..16u64 {
        let runs = common::outcomes::runs(&dir, i);
        // Item 4 shares item 5's batch and ran before it: it runs again
        // only if its value was lost with the worker. Items 6 and 7 never
        // started, and run once after the retry; other batches, once.
        let allowed = match i {
            5 => 2..=2,
            4 => 1..=2,
            _ => 1..=1,
        };
        assert!(allowed.contains(&runs), "item {i} ran {runs} times");
    }
}

#[parjob::test]
fn a_pool_retries_a_job_whose_worker_died() {
    let dir = common::scratch("retries", "pool");
    let pool = parjob::Pool::builder()
        .processes(2)
        .retries(1)
        .build()
        .unwrap();
    let out: Vec<u64> = (0..6u64)
        .map(|i| pool.apply(kills_itself_once::delayed(i, &dir)).unwrap())
        .collect();
    assert_eq!(out, (0..6).collect::<Vec<_>>());
    assert!(dir.join("3.tried").exists(), "item 3 was tried");
    // Without retries, the same death is the job's error.
    let dir = common::scratch("retries", "pool-once");
    let pool = parjob::Pool::builder().processes(2).build().unwrap();
    let err = pool.apply(kills_itself_once::delayed(3, &dir)).unwrap_err();
    assert!(matches!(err, Error::WorkerDied { .. }), "{err}");
}

#[parjob::test]
fn a_pool_breaks_only_when_the_retries_ran_out() {
    let pool = parjob::Pool::builder()
        .processes(2)
        .retries(1)
        .on_worker_death(parjob::pool::OnWorkerDeath::Break)
        .build()
        .unwrap();
    // One death, retried: the pool is whole.
    let dir = common::scratch("retries", "pool-break");
    assert_eq!(pool.apply(kills_itself_once::delayed(3, &dir)).unwrap(), 3);
    assert_eq!(pool.apply(always_aborts_on_2::delayed(1)).unwrap(), 1);
    // Two deaths: the last attempt's death breaks it.
    match pool.apply(always_aborts_on_2::delayed(2)).unwrap_err() {
        Error::Retried { attempts: 2, .. } => {}
        other => panic!("expected Retried, got {other}"),
    }
    let later = pool.apply(always_aborts_on_2::delayed(1)).unwrap_err();
    assert!(later.to_string().contains("broken"), "{later}");
}
