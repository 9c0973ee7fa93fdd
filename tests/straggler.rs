//! No fast job waits behind a slow one, on real worker processes.
//!
//! Each test is causal, not timed: the slow job blocks until the fast
//! ones have all run, which only happens if none of them was stuck behind
//! it. A job stuck behind it would make the slow job's wait run out, and
//! the slow job reports that, so a regression fails the test instead of
//! hanging it.

use parjob::pool::{as_completed, Executor};
use parjob::prelude::*;
use parjob::sync::{Event, Semaphore};
use parjob::{Backend, Parallel, PreDispatch};
use std::time::Duration;

/// Far longer than any of these runs needs.
const PATIENCE: Duration = Duration::from_secs(60);

/// Item 1 waits for `gate`, which the test sets once every other result
/// has arrived; the others return at once. Returns whether the gate
/// opened in time.
#[parallel(backend = "process", n_jobs = 2)]
fn gated(i: usize, gate: Event) -> (usize, bool) {
    if i == 1 {
        return (i, gate.wait_timeout(PATIENCE));
    }
    (i, true)
}

/// Item 1 waits until the `n - 1` other items have run (each releases
/// `ran` once); the others release and return. Returns whether they all
/// ran in time.
#[parallel(backend = "process", n_jobs = 2)]
fn waits_for_the_rest(i: usize, n: usize, ran: Semaphore) -> bool {
    if i != 1 {
        ran.release();
        return true;
    }
    (1..n).all(|_| {
        ran.acquire_timeout(PATIENCE)
            .map(|permit| permit.forget())
            .is_some()
    })
}

/// Consumes `results` (index, then whether the slow job's wait held),
/// setting `gate` once the nine fast results are in: they must all come
/// before the slow one.
fn consume_setting_the_gate(results: impl Iterator<Item = (usize, bool)>, gate: &Event) {
    let mut fast = 0;
    for (i, in_time) in results {
        if i == 1 {
            assert!(
                in_time,
                "the slow job waited in vain: a fast job sat behind it"
            );
            assert_eq!(fast, 9, "every fast result arrives before the slow one");
        } else {
            fast += 1;
            if fast == 9 {
                gate.set();
            }
        }
    }
    assert_eq!(fast, 9);
}

#[parjob::test]
fn unordered_results_of_fast_jobs_arrive_while_a_slow_one_runs() {
    let gate = Event::new().unwrap();
    let jobs = (0..10).map(|i| gated::delayed(i, gate.clone()));
    let parallel = Parallel::new().n_jobs(2).backend(Backend::Process);
    let results = parallel
        .iter_unordered(jobs)
        .map(|r| r.expect("every job succeeds").1);
    consume_setting_the_gate(results, &gate);
}

#[parjob::test]
fn fast_jobs_behind_a_slow_one_run_again_and_again() {
    // Many rounds on one pool, so that batches are queued behind running
    // ones once the run has learned that jobs are short, and the slow
    // job then holds one of them.
    let parallel = Parallel::new().n_jobs(2).backend(Backend::Process);
    for round in 0..20 {
        let gate = Event::new().unwrap();
        let jobs = (0..10).map(|i| gated::delayed(i, gate.clone()));
        let results = parallel
            .iter_unordered(jobs)
            .map(|r| r.unwrap_or_else(|e| panic!("round {round}: {e}")).1);
        consume_setting_the_gate(results, &gate);
    }
}

#[parjob::test]
fn ordered_iter_runs_every_fast_job_while_a_slow_one_runs() {
    let n = 10;
    let ran = Semaphore::new(0).unwrap();
    let jobs = (0..n).map(|i| waits_for_the_rest::delayed(i, n, ran.clone()));
    // With the default bound, an ordered iterator stops drawing while it
    // holds results that wait for the slow one; lift it so all can run.
    let parallel = Parallel::new()
        .n_jobs(2)
        .backend(Backend::Process)
        .pre_dispatch(PreDispatch::All);
    let results: Vec<bool> = parallel.iter(jobs).map(|r| r.unwrap()).collect();
    assert_eq!(results, vec![true; n]);
}

#[parjob::test]
fn ordered_map_runs_every_fast_job_while_a_slow_one_runs() {
    for n in [3, 10, 40] {
        let ran = Semaphore::new(0).unwrap();
        let jobs = (0..n).map(|i| (i, n, ran.clone()));
        let results = waits_for_the_rest::map(jobs).unwrap();
        assert_eq!(results, vec![true; n], "{n} jobs");
    }
}

#[parjob::test]
fn an_executor_yields_fast_futures_while_a_slow_one_runs() {
    let ex = Executor::new(2).unwrap();
    let gate = Event::new().unwrap();
    let futures: Vec<_> = (0..10)
        .map(|i| ex.submit(gated::delayed(i, gate.clone())))
        .collect();
    let results = as_completed(futures, Some(PATIENCE)).map(|f| {
        f.expect("within patience")
            .result()
            .expect("each job succeeds")
    });
    consume_setting_the_gate(results, &gate);
}
