//! Batches of tiny calls go to worker processes packed, one chunk each:
//! one frame of arguments and one answer of values. What a packed batch
//! must keep of the per-job contract: every value in order, and a panic or
//! a dead worker blamed on the exact item that caused it.

use parjob::__private::packed_batches;
use parjob::prelude::*;
use parjob::Error;
use std::time::Duration;

#[parallel(backend = "process", n_jobs = 2)]
fn fails_on(x: u64, bad: u64) -> u64 {
    if x == bad {
        panic!("item {x} is cursed");
    }
    x * 3
}

#[parallel(backend = "process", n_jobs = 2)]
fn aborts_on(x: u64, bad: u64) -> u64 {
    if x == bad {
        std::process::abort();
    }
    x
}

#[parallel(backend = "process", n_jobs = 2)]
fn label(x: u64) -> String {
    format!("item {x}")
}

const N: u64 = 20_000;

/// The packed-batch counter is the process's: these tests take turns.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

#[parjob::test]
fn tiny_calls_go_packed_and_come_back_in_order() {
    let _turn = turn();
    let before = packed_batches();
    let got = fails_on::map((0..N).map(|x| (x, u64::MAX))).unwrap();
    assert_eq!(got, (0..N).map(|x| x * 3).collect::<Vec<_>>());
    assert!(packed_batches() > before, "no batch went packed");
    // Values that are not numbers go packed too, through serde.
    let labels = label::map(0..N).unwrap();
    assert_eq!(labels[12_345], "item 12345");
    assert_eq!(labels.len(), N as usize);
}

#[parjob::test]
fn a_panic_in_a_packed_batch_names_its_item() {
    let _turn = turn();
    let before = packed_batches();
    match fails_on::map((0..N).map(|x| (x, 15_001))).unwrap_err() {
        Error::Panic { index, message, .. } => {
            assert_eq!(index, 15_001);
            assert!(message.contains("item 15001 is cursed"), "{message}");
        }
        other => panic!("expected the panic, got {other:?}"),
    }
    assert!(packed_batches() > before, "no batch went packed");
    // In order, the values before the panic come first, then its error.
    let mut seen = 0u64;
    for r in fails_on::with(|w| w).iter((0..N).map(|x| (x, 15_001))) {
        match r {
            Ok(v) => {
                assert_eq!(v, seen * 3);
                seen += 1;
            }
            Err(e) => {
                assert!(matches!(e, Error::Panic { index: 15_001, .. }), "{e:?}");
                break;
            }
        }
    }
    assert_eq!(seen, 15_001);
}

#[parjob::test]
fn a_worker_that_dies_in_a_packed_batch_is_blamed_on_its_item() {
    let _turn = turn();
    match aborts_on::map((0..N).map(|x| (x, 12_345))).unwrap_err() {
        Error::WorkerDied { index, status, .. } => {
            assert_eq!(index, 12_345);
            assert!(status.contains("SIGABRT"), "{status}");
        }
        other => panic!("expected a dead worker, got {other:?}"),
    }
    // The next run gets new workers and every value.
    let got = aborts_on::map((0..N).map(|x| (x, u64::MAX))).unwrap();
    assert_eq!(got.len(), N as usize);
}

#[parjob::test]
fn a_timeout_keeps_batches_unpacked() {
    let _turn = turn();
    let before = packed_batches();
    let got = fails_on::with(|w| w.timeout(Duration::from_secs(60)))
        .map((0..N).map(|x| (x, u64::MAX)))
        .unwrap();
    assert_eq!(got[N as usize - 1], (N - 1) * 3);
    assert_eq!(
        packed_batches(),
        before,
        "a batch under a timeout went packed"
    );
}

#[parjob::test]
fn delayed_jobs_go_packed_too_and_name_the_failing_item() {
    let _turn = turn();
    let p = Parallel::new().n_jobs(2).backend(parjob::Backend::Process);
    let before = packed_batches();
    let got = p
        .run((0..N).map(|x| fails_on::delayed(x, u64::MAX)))
        .unwrap();
    assert_eq!(got[17_000], 51_000);
    assert!(
        packed_batches() > before,
        "no batch of delayed jobs went packed"
    );
    match p
        .run((0..N).map(|x| fails_on::delayed(x, 9_999)))
        .unwrap_err()
    {
        Error::Panic { index, .. } => assert_eq!(index, 9_999),
        other => panic!("expected the panic, got {other:?}"),
    }
}
