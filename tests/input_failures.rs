//! An input iterator that panics at item k: every consumer that streams
//! its results yields items 0..k first, then the input's error at its own
//! position, then ends (CPython's `test_imap_handle_iterable_exception`).
//! Real worker processes throughout.

use parjob::pool::Pool;
use parjob::prelude::*;
use parjob::{Error, Parallel};

#[parallel(backend = "process")]
fn square(x: u64) -> u64 {
    x * x
}

#[parallel(backend = "process", n_jobs = 2, return_as = "generator")]
fn square_stream(x: u64) -> u64 {
    x * x
}

/// 0, 1, 2, ... that panics when asked for item `k`.
fn failing_at(k: u64) -> impl Iterator<Item = u64> {
    (0..20).inspect(move |&i| assert!(i != k, "the input fails at {k}"))
}

/// Checks a stream: the squares of 0..k (in any order when `unordered`),
/// then the input's panic naming item k, then the end.
fn check(results: impl Iterator<Item = parjob::Result<u64>>, k: u64, unordered: bool) {
    let all: Vec<_> = results.collect();
    assert_eq!(all.len(), k as usize + 1, "{all:?}");
    let (last, values) = all.split_last().unwrap();
    let mut values: Vec<u64> = values.iter().map(|r| *r.as_ref().unwrap()).collect();
    if unordered {
        values.sort_unstable();
    }
    assert_eq!(values, (0..k).map(|x| x * x).collect::<Vec<_>>());
    match last {
        Err(Error::InputPanicked { index, message }) => {
            assert_eq!(*index, k as usize);
            assert!(message.contains(&format!("fails at {k}")), "{message}");
        }
        other => panic!("expected the input's panic last, got {other:?}"),
    }
}

#[parjob::test]
fn pool_imap_yields_the_items_before_the_input_failed() {
    let pool = Pool::new(2).unwrap();
    for chunk in [1, 3] {
        check(
            pool.chunksize(chunk).imap(square::delayed, failing_at(7)),
            7,
            false,
        );
        check(
            pool.chunksize(chunk)
                .imap_unordered(square::delayed, failing_at(7)),
            7,
            true,
        );
    }
    // The very first item.
    check(pool.imap(square::delayed, failing_at(0)), 0, false);
    assert_eq!(pool.map(square::delayed, 0..3u64).unwrap(), [0, 1, 4]);
}

#[parjob::test]
fn parallel_iter_yields_the_items_before_the_input_failed() {
    let p = Parallel::new().n_jobs(2).backend(parjob::Backend::Process);
    check(p.iter(failing_at(5).map(square::delayed)), 5, false);
    check(
        p.iter_unordered(failing_at(5).map(square::delayed))
            .map(|r| r.map(|(_, v)| v)),
        5,
        true,
    );
    // `run` collects: the error, and the pool still works afterwards.
    let err = p.run(failing_at(5).map(square::delayed)).unwrap_err();
    assert!(
        matches!(err, Error::InputPanicked { index: 5, .. }),
        "{err}"
    );
    assert_eq!(p.run((0..3).map(square::delayed)).unwrap(), [0, 1, 4]);
}

#[parjob::test]
fn a_generator_task_yields_the_items_before_the_input_failed() {
    check(square_stream::map(failing_at(6)), 6, false);
}
