//! Results come in input order from ordered runs and as they finish from
//! unordered ones, on processes and threads.
//!
//! Each test is causal, not timed: the first item ends only after the
//! others have run, or waits for a gate that the test opens once the
//! others' results are in. A wait that runs out (a minute) is reported by
//! the job that waited, so a regression fails the test instead of hanging
//! it.

mod common;
use common::{process, threads};

use parjob::prelude::*;
use parjob::sync::{Event, Semaphore};
use std::time::Duration;

/// Far longer than any run here needs: a wait that runs out is a failure,
/// reported by the job that waited, never a hang.
const PATIENCE: Duration = Duration::from_secs(60);

/// Item 0 ends only once the `n - 1` other items have run (each releases
/// `ran`), so it ends last; each returns its index and whether its wait,
/// if any, held.
fn last_to_end(i: u64, n: u64, ran: &Semaphore) -> (u64, bool) {
    if i != 0 {
        ran.release();
        return (i, true);
    }
    let all_ran = (1..n).all(|_| ran.acquire_timeout(PATIENCE).map(|p| p.forget()).is_some());
    (i, all_ran)
}

#[parallel(backend = "process", n_jobs = 3, batch_size = 1)]
fn ends_last_if_first(i: u64, n: u64, ran: Semaphore) -> (u64, bool) {
    last_to_end(i, n, &ran)
}

#[parallel(
    backend = "process",
    n_jobs = 2,
    batch_size = 1,
    return_as = "generator"
)]
fn ends_last_if_first_streamed(i: u64, n: u64, ran: Semaphore) -> (u64, bool) {
    last_to_end(i, n, &ran)
}

/// Item 0 waits for `gate`, which the test opens once another result has
/// arrived; the rest return at once.
fn gated(i: u64, gate: &Event) -> (u64, bool) {
    (i, i != 0 || gate.wait_timeout(PATIENCE))
}

#[parallel(backend = "process", n_jobs = 2, batch_size = 1)]
fn gated_process(i: u64, gate: Event) -> (u64, bool) {
    gated(i, &gate)
}

#[parallel(n_jobs = 2, batch_size = 1, return_as = "generator_unordered")]
fn gated_threads(i: u64, gate: Event) -> (u64, bool) {
    gated(i, &gate)
}

#[parjob::test]
fn ordered_iter_keeps_input_order_when_the_first_task_ends_last() {
    // Item 0 ends only after every other item has run. Five items fit
    // the reorder bound of 3 workers (pre_dispatch 2 * n_jobs batches of
    // one), so none of them waits for item 0 to be consumed.
    let ran = Semaphore::new(0).unwrap();
    let jobs = (0..5u64).map(|i| ends_last_if_first::delayed(i, 5, ran.clone()));
    let got: Vec<(u64, bool)> = process(3).iter(jobs).map(Result::unwrap).collect();
    assert_eq!(got, (0..5).map(|i| (i, true)).collect::<Vec<_>>());
    // The same on threads.
    let (ran, others) = std::sync::mpsc::channel::<()>();
    let mut others = Some(others);
    let jobs: Vec<Job<(u64, bool)>> = (0..5u64)
        .map(|i| match (i, others.take()) {
            (0, Some(others)) => {
                Job::new(move || (0, (1..5).all(|_| others.recv_timeout(PATIENCE).is_ok())))
            }
            _ => {
                let ran = ran.clone();
                Job::new(move || (i, ran.send(()).is_ok()))
            }
        })
        .collect();
    let got: Vec<(u64, bool)> = threads(3)
        .batch_size(1)
        .iter(jobs)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, (0..5).map(|i| (i, true)).collect::<Vec<_>>());
}

/// Consumes unordered results (input index, then the job's index and
/// whether its wait held), opening `gate` once the two others are in:
/// item 0 waits for the gate, so it comes last, and in time only if no
/// other item waited behind it.
fn first_comes_last(results: impl Iterator<Item = (usize, (u64, bool))>, gate: &Event) {
    let mut got = Vec::new();
    for result in results {
        got.push(result);
        if got.len() == 2 {
            gate.set();
        }
    }
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[2],
        (0, (0, true)),
        "the gated item did not come last: {got:?}"
    );
}

#[parjob::test]
fn unordered_iter_yields_a_fast_task_before_a_slow_earlier_one() {
    let gate = Event::new().unwrap();
    let jobs = (0..3u64).map(|i| gated_process::delayed(i, gate.clone()));
    first_comes_last(process(2).iter_unordered(jobs).map(Result::unwrap), &gate);
    let gate = Event::new().unwrap();
    let items = (0..3u64).map(|i| (i, gate.clone()));
    first_comes_last(gated_threads::map(items).map(Result::unwrap), &gate);
}

#[parjob::test]
fn return_as_generator_yields_in_order() {
    // Four items fit the reorder bound of 2 workers.
    let ran = Semaphore::new(0).unwrap();
    let items = (0..4u64).map(|i| (i, 4, ran.clone()));
    let got: Vec<(u64, bool)> = ends_last_if_first_streamed::map(items)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, (0..4).map(|i| (i, true)).collect::<Vec<_>>());
}
