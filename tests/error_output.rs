//! What a person sees when a process run fails and the program does not
//! handle the error: `fn main() -> parjob::Result<()>` and `unwrap()`
//! print the error's `Debug` form, which must carry its advice. This file
//! has no worker entry on purpose, so the run fails with `NoWorkerEntry`.
//! (Apart from tests/no_entry.rs, whose test counts this process's
//! children: the helpers here are child processes.)

use parjob::prelude::*;

#[parallel(n_jobs = 2, backend = "process")]
fn square(x: u64) -> u64 {
    x * x
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
