//! joblib's `test_initializer_parallel`: `Parallel` and `config()` take an
//! initializer, a process task run once in each worker before its first
//! job, on processes, threads and in sequence.

use parjob::prelude::*;
use parjob::{Backend, Error, Initializer, Parallel};
use std::cell::Cell;

thread_local! {
    static TAG: Cell<u64> = const { Cell::new(0) };
    static RUNS: Cell<u32> = const { Cell::new(0) };
}

/// The initializer: leaves a tag in its worker (thread).
#[parallel(backend = "process")]
fn set_tag(tag: u64) {
    TAG.with(|t| t.set(tag));
    RUNS.with(|r| r.set(r.get() + 1));
}

/// What the worker's initializer left, and how often it ran there.
#[parallel(backend = "process")]
fn read_tag(_item: u64) -> (u64, u32) {
    (TAG.with(Cell::get), RUNS.with(Cell::get))
}

#[parallel(backend = "process")]
fn refuse_to_start(code: u64) {
    panic!("initializer {code} cannot start")
}

#[parjob::test]
fn every_job_sees_its_workers_initializer_once_on_every_backend() {
    for (backend, n_jobs) in [
        (Backend::Process, 2),
        (Backend::Thread, 2),
        (Backend::Sequential, 1),
    ] {
        let p = Parallel::new()
            .n_jobs(n_jobs)
            .backend(backend)
            .batch_size(1)
            .initializer(Initializer::of::<set_tag>((42,)));
        let seen = p.run((0..20).map(read_tag::delayed)).unwrap();
        assert!(
            seen.iter().all(|&(tag, runs)| tag == 42 && runs == 1),
            "{backend:?}: {seen:?}"
        );
    }
}

#[parjob::test]
fn process_workers_of_another_initializer_are_not_reused() {
    let first = Parallel::new()
        .n_jobs(2)
        .backend(Backend::Process)
        .initializer(Initializer::of::<set_tag>((1,)));
    assert!(first
        .run((0..4).map(read_tag::delayed))
        .unwrap()
        .iter()
        .all(|r| r.0 == 1));
    let second = first.clone().initializer(Initializer::of::<set_tag>((2,)));
    assert!(second
        .run((0..4).map(read_tag::delayed))
        .unwrap()
        .iter()
        .all(|r| r.0 == 2));
    let plain = first.clone().initializer(Initializer::of::<set_tag>((1,)));
    assert!(plain
        .run((0..4).map(read_tag::delayed))
        .unwrap()
        .iter()
        .all(|r| r.0 == 1));
}

#[parjob::test]
fn a_scoped_config_initializer_reaches_a_tasks_map() {
    let seen = parjob::config()
        .n_jobs(2)
        .backend(Backend::Process)
        .initializer(Initializer::of::<set_tag>((7,)))
        .scope(|| read_tag::map(0..6))
        .unwrap();
    assert!(seen.iter().all(|&(tag, _)| tag == 7), "{seen:?}");
}

#[parjob::test]
fn a_failing_initializer_fails_the_run_and_names_itself() {
    for backend in [Backend::Process, Backend::Thread] {
        let err = Parallel::new()
            .n_jobs(2)
            .backend(backend)
            .initializer(Initializer::of::<refuse_to_start>((9,)))
            .run((0..4).map(read_tag::delayed))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, Error::Pool(_) | Error::Handshake(_)),
            "{backend:?}: {text}"
        );
        assert!(text.contains("refuse_to_start"), "{backend:?}: {text}");
        assert!(
            text.contains("initializer 9 cannot start"),
            "{backend:?}: {text}"
        );
    }
}
