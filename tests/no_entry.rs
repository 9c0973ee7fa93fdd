//! Without #[parjob::main], #[parjob::test] or parjob::init(), the process
//! backend refuses to spawn. This file has no such entry on purpose.

use parjob::prelude::*;
use parjob::Error;

#[parallel(n_jobs = 2, backend = "process")]
fn square(x: u64) -> u64 {
    x * x
}

fn children() -> Vec<String> {
    let mut all = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path().join("children");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        all.extend(text.split_whitespace().map(str::to_string));
    }
    all
}

#[test]
fn the_process_backend_refuses_to_spawn_without_a_worker_entry() {
    let before = children();
    let err = square::map(0..10).unwrap_err();
    assert!(matches!(err, Error::NoWorkerEntry), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("#[parjob::main]"), "{message}");
    assert!(message.contains("#[parjob::test]"), "{message}");
    assert_eq!(children(), before, "a process was spawned");

    let p = Parallel::new().n_jobs(2).backend(Backend::Process);
    assert!(matches!(
        p.run((0..3).map(square::delayed)),
        Err(Error::NoWorkerEntry)
    ));
    assert!(p.worker_pids().is_empty());
    // The thread backend needs no entry.
    let threads = Parallel::new().n_jobs(2).backend(Backend::Thread);
    assert_eq!(
        threads.run((0..3).map(square::delayed)).unwrap(),
        vec![0, 1, 4]
    );
}
