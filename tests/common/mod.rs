//! Helpers shared by the integration tests (`mod common;` in each).
#![allow(dead_code)] // each test binary uses some of them

use parjob::{Backend, Parallel};
use std::path::PathBuf;

/// A runner on `n_jobs` worker processes.
pub fn process(n_jobs: i32) -> Parallel {
    Parallel::new().n_jobs(n_jobs).backend(Backend::Process)
}

/// A runner on `n_jobs` threads.
pub fn threads(n_jobs: i32) -> Parallel {
    Parallel::new().n_jobs(n_jobs).backend(Backend::Thread)
}

/// A fresh, empty directory under the system's temporary directory, named
/// for the suite, this process and the test. Every one this process made
/// is removed when it exits (libtest and the chaos runner end with
/// `exit`), so a run leaves nothing in the temporary directory.
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("parjob-{suite}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    remove_at_exit(dir.clone());
    dir
}

static MADE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn remove_at_exit(dir: PathBuf) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    extern "C" fn remove_all() {
        let made = std::mem::take(&mut *MADE.lock().unwrap_or_else(|p| p.into_inner()));
        for dir in made {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    MADE.lock().unwrap_or_else(|p| p.into_inner()).push(dir);
    // SAFETY: atexit with a function that lives as long as the program.
    HOOK.call_once(|| unsafe {
        libc::atexit(remove_all);
    });
}

/// Runs the ignored helper test `name` in a child copy of this test binary
/// with `env` added, and returns its stdout; a helper that fails fails the
/// caller, with the helper's output.
pub fn run_helper(name: &str, env: &[(&str, &std::ffi::OsStr)]) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--include-ignored", "--nocapture", "-q"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "helper {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The output files (`*.out`) of one cached function's directory, sorted;
/// none when it does not exist.
pub fn cache_outputs(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "out"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// A fresh, empty directory at `dir`, relative to the package root (where
/// cargo runs tests, and where relative `#[memoize(dir = ..)]` resolve).
pub fn fresh(dir: &str) -> PathBuf {
    let path = PathBuf::from(dir);
    let _ = std::fs::remove_dir_all(&path);
    path
}

/// The command that re-runs the ignored helper test `name` of this test
/// binary in a new process, with `env` added (see also [`run_helper`]).
pub fn helper_command(name: &str, env: &[(&str, &str)]) -> std::process::Command {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command.args(["--exact", name, "--include-ignored", "--nocapture", "-q"]);
    command.envs(env.iter().copied());
    command
}
