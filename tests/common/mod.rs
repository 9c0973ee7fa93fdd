//! Helpers shared by the integration tests (`mod common;` in each).
#![allow(dead_code)] // each test binary uses some of them

use parjob::{Backend, Parallel};
use std::path::PathBuf;

pub mod outcomes;

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

/// Runs the ignored helper test `name` as `run_helper` does, and returns
/// its stderr.
pub fn run_helper_stderr(name: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--include-ignored", "--nocapture", "-q"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "helper {name} failed:\n{stderr}");
    stderr
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

/// How many cache entries (`*.out` files) lie anywhere under `root`.
pub fn cache_entries(root: &str) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .map(|p| match p.is_dir() {
                    true => count(&p),
                    false => usize::from(p.extension().is_some_and(|e| e == "out")),
                })
                .sum()
        })
    }
    count(std::path::Path::new(root))
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

/// Whether process `pid` is running: a zombie has exited, only its parent
/// has not reaped it yet.
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// Waits until process `pid` has exited, at most `limit`; whether it did.
/// The wait is on the process itself (a `pidfd` becomes readable when it
/// exits), not a poll of `/proc`.
pub fn wait_dead(pid: u32, limit: std::time::Duration) -> bool {
    // SAFETY: pidfd_open takes a pid and flags, and returns a new
    // descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        // Gone already (ESRCH), or reaped and reused: not this process.
        return !is_alive(pid);
    }
    // SAFETY: a descriptor this call just opened and owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let mut poll = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = limit.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the length of the call.
    let ready = unsafe { libc::poll(&mut poll, 1, millis) };
    ready == 1 || !is_alive(pid)
}

/// Waits until every process of `pids` has exited, at most `limit` in
/// all; the ones still running.
pub fn wait_all_dead(pids: &[u32], limit: std::time::Duration) -> Vec<u32> {
    let until = std::time::Instant::now() + limit;
    pids.iter()
        .copied()
        .filter(|&pid| {
            !wait_dead(
                pid,
                until.saturating_duration_since(std::time::Instant::now()),
            )
        })
        .collect()
}

/// Each job waits until `n` jobs are running at once, or gives up after a
/// minute; whether they met.
pub fn rendezvous(
    n: usize,
) -> (
    std::sync::Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>,
    impl Fn() -> bool + Clone,
) {
    let state = std::sync::Arc::new((std::sync::Mutex::new(0usize), std::sync::Condvar::new()));
    let shared = std::sync::Arc::clone(&state);
    let wait = move || {
        let (count, cv) = &*shared;
        let mut c = count.lock().unwrap();
        *c += 1;
        cv.notify_all();
        let (c, _) = cv
            .wait_timeout_while(c, std::time::Duration::from_secs(60), |c| *c < n)
            .unwrap();
        *c >= n
    };
    (state, wait)
}
