//! A worker whose task registry differs from the parent's (another build)
//! is refused at the handshake with an error, not a hang, and is not left
//! running. One test, because it sets a process-wide variable.

use parjob::prelude::*;
use parjob::Error;

#[parallel(n_jobs = 2, backend = "process")]
fn square(x: u64) -> u64 {
    x * x
}

fn children() -> Vec<u32> {
    let mut all = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let text =
            std::fs::read_to_string(task.unwrap().path().join("children")).unwrap_or_default();
        all.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    all
}

#[parjob::test]
fn a_worker_with_another_registry_is_refused_at_the_handshake() {
    std::env::set_var("PARJOB_TEST_FINGERPRINT_SALT", "12345");
    let p = Parallel::new().n_jobs(2).backend(Backend::Process);
    let err = p.run((0..4).map(square::delayed)).unwrap_err();
    // Refused for what the hello says, not after waiting for one.
    match &err {
        Error::Handshake(why) => assert!(why.contains("another task registry"), "{why}"),
        other => panic!("expected a handshake error, got {other:?}"),
    }
    // The refused workers were killed and reaped.
    assert!(children().is_empty(), "{:?} still running", children());

    // With matching workers, the same runner works.
    std::env::remove_var("PARJOB_TEST_FINGERPRINT_SALT");
    assert_eq!(
        p.run((0..4).map(square::delayed)).unwrap(),
        vec![0, 1, 4, 9]
    );
}
