//! `f::par_map`: indexed inputs split across threads, and the same call
//! falling back to the scheduler where splitting cannot honour the plan.

use parjob::prelude::*;
use parjob::Error;
use rayon::prelude::*;
use std::collections::HashSet;
use std::time::Duration;

#[parallel(n_jobs = 2)]
fn square(x: u64) -> u64 {
    x * x
}

#[parallel(n_jobs = 2)]
fn scaled(x: f64, by: f64) -> f64 {
    x * by
}

#[parallel(n_jobs = 3)]
fn thread_of(_x: usize) -> std::thread::ThreadId {
    // Long enough that every pool thread takes part.
    std::thread::sleep(Duration::from_micros(200));
    std::thread::current().id()
}

#[parallel]
fn thread_by_default(_x: usize) -> std::thread::ThreadId {
    std::thread::current().id()
}

#[parallel(n_jobs = 2)]
fn fails_on_seven(x: usize) -> usize {
    assert_ne!(x, 7, "seven is not allowed");
    x
}

#[parallel(n_jobs = 2, timeout = "100ms")]
fn sleeps(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    millis
}

#[parallel(n_jobs = 2, backend = "process")]
fn pid_and_square(x: u64) -> (u32, u64) {
    (std::process::id(), x * x)
}

#[test]
fn vecs_slices_and_ranges_come_back_in_input_order() {
    let xs: Vec<u64> = (0..100_000).collect();
    let expected: Vec<u64> = xs.iter().map(|x| x * x).collect();
    assert_eq!(square::par_map(xs.clone()).unwrap(), expected);
    assert_eq!(square::par_map(xs.par_iter().copied()).unwrap(), expected);
    let from_range = square::par_map((0..100_000usize).into_par_iter().map(|x| x as u64));
    assert_eq!(from_range.unwrap(), expected);
    let pairs: Vec<(f64, f64)> = (0..1000).map(|i| (i as f64, 0.5)).collect();
    let got = scaled::par_map(pairs).unwrap();
    assert_eq!(got, (0..1000).map(|i| i as f64 * 0.5).collect::<Vec<_>>());
    assert_eq!(square::par_map(Vec::new()).unwrap(), Vec::<u64>::new());
}

#[test]
fn the_split_uses_exactly_the_pool_of_n_jobs_threads() {
    let me = std::thread::current().id();
    let threads: HashSet<_> = thread_of::par_map(0..300usize)
        .unwrap()
        .into_iter()
        .collect();
    assert!(!threads.contains(&me), "the caller ran a task");
    assert_eq!(threads.len(), 3, "{threads:?}");
}

#[test]
fn scoped_n_jobs_1_runs_in_the_callers_thread() {
    let me = std::thread::current().id();
    let got = parjob::config()
        .n_jobs(1)
        .scope(|| thread_by_default::par_map(0..20usize))
        .unwrap();
    assert!(got.iter().all(|t| *t == me));
}

#[test]
fn a_panic_names_the_task_the_item_and_the_place() {
    let err = fails_on_seven::par_map(0..1000usize).unwrap_err();
    match err {
        Error::Panic {
            task,
            index,
            message,
            location,
        } => {
            assert!(task.ends_with("::fails_on_seven"), "{task}");
            assert_eq!(index, 7);
            assert!(message.contains("seven is not allowed"), "{message}");
            assert!(location.unwrap().contains("indexed.rs"));
        }
        other => panic!("expected a panic error, got {other:?}"),
    }
    // The pool is still usable.
    assert_eq!(
        fails_on_seven::par_map(0..5usize).unwrap(),
        vec![0, 1, 2, 3, 4]
    );
}

#[test]
fn a_panic_in_the_input_is_an_input_error() {
    let input = (0..1000usize).into_par_iter().map(|x| {
        assert_ne!(x, 500, "bad input");
        x as u64
    });
    match square::par_map(input).unwrap_err() {
        Error::InputPanicked { index, message } => {
            assert!(index <= 500, "{index}");
            assert!(message.contains("bad input"), "{message}");
        }
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn a_timeout_is_honoured_through_the_scheduler() {
    assert_eq!(sleeps::par_map(vec![1, 2, 3]).unwrap(), vec![1, 2, 3]);
    match sleeps::par_map(vec![1, 2_000, 3]).unwrap_err() {
        Error::Timeout { index, after, .. } => {
            assert_eq!(index, 1);
            assert_eq!(after, Duration::from_millis(100));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[parjob::test]
fn a_process_task_runs_in_worker_processes() {
    let got = pid_and_square::par_map((0..500u64).collect::<Vec<_>>()).unwrap();
    let squares: Vec<u64> = got.iter().map(|(_, s)| *s).collect();
    assert_eq!(squares, (0..500u64).map(|x| x * x).collect::<Vec<_>>());
    let pids: HashSet<u32> = got.iter().map(|(p, _)| *p).collect();
    assert!(!pids.contains(&std::process::id()));
    assert!(!pids.is_empty() && pids.len() <= 2, "{pids:?}");
}
