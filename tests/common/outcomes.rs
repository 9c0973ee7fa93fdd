//! Checks of `on_error = "continue"` outcomes, and a per-item run count in
//! files, shared by the suites that make items fail.

use parjob::Error;
use std::path::Path;

/// Records one run of item `i` in `dir` (a file that grows a byte a run).
pub fn count_run(dir: &Path, i: u64) {
    let runs = dir.join(format!("{i}.runs"));
    let before = std::fs::read(&runs).map_or(0, |r| r.len());
    std::fs::write(&runs, vec![b'x'; before + 1]).unwrap();
}

/// How many times item `i` ran, by [`count_run`].
pub fn runs(dir: &Path, i: u64) -> usize {
    std::fs::read(dir.join(format!("{i}.runs"))).map_or(0, |r| r.len())
}

/// 16 outcomes where items 3 and 11 aborted their worker: 14 values equal
/// to their index, and 2 `WorkerDied` naming their item and SIGABRT.
pub fn check_deaths_of_3_and_11(outcomes: &[parjob::Result<u64>]) {
    assert_eq!(outcomes.len(), 16);
    for (i, outcome) in (0u64..).zip(outcomes) {
        match outcome {
            Ok(v) => assert_eq!(*v, i),
            Err(Error::WorkerDied { index, status, .. }) => {
                assert!(i == 3 || i == 11, "item {i} died");
                assert_eq!(*index as u64, i);
                assert!(status.contains("SIGABRT"), "{status}");
            }
            Err(other) => panic!("item {i}: unexpected {other}"),
        }
    }
    assert_eq!(outcomes.iter().filter(|o| o.is_err()).count(), 2);
}

/// 8 outcomes where item 2 ran past its timeout: 7 values equal to their
/// index, and item 2's `Timeout`.
pub fn check_timeout_of_2(outcomes: &[parjob::Result<u64>]) {
    assert_eq!(outcomes.len(), 8);
    for (i, outcome) in (0u64..).zip(outcomes) {
        match outcome {
            Ok(v) => assert!(i != 2 && *v == i),
            Err(Error::Timeout { index: 2, .. }) => assert_eq!(i, 2),
            Err(other) => panic!("item {i}: unexpected {other}"),
        }
    }
}
