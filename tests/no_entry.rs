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

/// What a user's `fn main() -> parjob::Result<()>` does when a process
/// run fails: Rust prints the returned error with `Debug`.
#[test]
#[ignore = "helper: started by a_main_that_returns_the_error_prints_its_advice"]
fn main_returning_the_error() {
    fn main_like() -> parjob::Result<()> {
        square::map(0..3)?;
        Ok(())
    }
    let result = main_like();
    let failed = result.is_err();
    let _ = std::process::Termination::report(result);
    std::process::exit(i32::from(failed));
}

/// What `unwrap()` on the same error prints.
#[test]
#[ignore = "helper: started by a_main_that_returns_the_error_prints_its_advice"]
fn unwrapping_the_error() {
    square::map(0..3).unwrap();
}

/// Runs one helper above in a child copy of this binary: its stderr.
fn helper_stderr(name: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--include-ignored", "--nocapture"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the helper {name} did not fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_main_that_returns_the_error_prints_its_advice() {
    let returned = helper_stderr("main_returning_the_error");
    assert!(
        returned.contains("Error: the process backend needs"),
        "{returned}"
    );
    assert!(returned.contains("#[parjob::main]"), "{returned}");
    assert!(!returned.contains("NoWorkerEntry"), "{returned}");
    let unwrapped = helper_stderr("unwrapping_the_error");
    assert!(unwrapped.contains("#[parjob::main]"), "{unwrapped}");
    assert!(!unwrapped.contains("NoWorkerEntry"), "{unwrapped}");
}
