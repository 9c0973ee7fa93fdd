//! What a test needs to use the process backend, and what its workers
//! print: `#[parjob::test]` holds the worker entry for its own thread, a
//! plain `#[test]` always gets `Error::NoWorkerEntry` (whatever ran before
//! it), and a test worker's libtest header never reaches the user's stdout.

use parjob::prelude::*;
use parjob::Error;

#[parallel(backend = "process", n_jobs = 2)]
fn shout(x: u64) -> u32 {
    println!("task output {x}");
    std::process::id()
}

#[test]
fn a_plain_test_never_borrows_another_tests_worker_entry() {
    // Another thread installs a test entry, as `#[parjob::test]` does, and
    // uses the process backend: its workers start.
    let other = std::thread::spawn(|| {
        let _entry = parjob::__private::test_entry(module_path!(), "shouting_helper");
        shout::map(0..4)
    })
    .join()
    .unwrap();
    assert!(other.unwrap().iter().all(|&pid| pid != std::process::id()));
    // This plain test's thread has no entry: always the same clear error.
    let err = shout::map(0..4).unwrap_err();
    assert!(matches!(err, Error::NoWorkerEntry), "{err:?}");
    assert!(err.to_string().contains("#[parjob::test]"), "{err}");
}

/// Run in a child copy of this test binary by
/// `test_workers_do_not_print_libtests_header`.
#[parjob::test]
#[ignore = "helper: started by test_workers_do_not_print_libtests_header"]
fn shouting_helper() {
    let pids = Parallel::new()
        .n_jobs(2)
        .batch_size(1)
        .run((0..4).map(shout::delayed))
        .unwrap();
    assert!(pids.iter().all(|&pid| pid != std::process::id()));
}

#[test]
fn test_workers_do_not_print_libtests_header() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "shouting_helper",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // The helper's own libtest header, once; none from its two workers.
    assert_eq!(stdout.matches("running 1 test").count(), 1, "{stdout}");
    // The workers' stdout is the user's again once they serve.
    for x in 0..4 {
        assert!(stdout.contains(&format!("task output {x}")), "{stdout}");
    }
}
