//! Faults in worker processes and on the pipes between them and the parent.

use crate::common::is_alive;
use crate::harness::{children, none_left, scratch, Case};
use parjob::prelude::*;
use parjob::Error;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::Path;
use std::time::{Duration, Instant};

pub const CASES: &[Case] = &[
    Case {
        fault: "a result whose Deserialize panics in the parent",
        expect: "Error::Panic naming the task and item",
        within: Duration::from_secs(30),
        run: deserialize_panics,
        ignore: None,
    },
    Case {
        fault: "a result whose Serialize panics in the worker",
        expect: "Error::Panic with the panic's message",
        within: Duration::from_secs(30),
        run: serialize_panics,
        ignore: None,
    },
    Case {
        fault: "a stuck task behind 1 MB arguments, 2 s timeout",
        expect: "Error::Timeout after about 2 s",
        within: Duration::from_secs(30),
        run: stuck_with_big_arguments,
        ignore: None,
    },
    Case {
        fault: "a task that forks without exec, then dies",
        expect: "Error::WorkerDied while the forked child still holds the pipes",
        within: Duration::from_secs(30),
        run: fork_then_die,
        ignore: None,
    },
    Case {
        fault: "a task that panics",
        expect: "Error::Panic with message and location",
        within: Duration::from_secs(30),
        run: task_panics,
        ignore: None,
    },
    Case {
        fault: "a worker that aborts",
        expect: "Error::WorkerDied naming SIGABRT",
        within: Duration::from_secs(30),
        run: || dies(ABORT, "SIGABRT"),
        ignore: None,
    },
    Case {
        fault: "a worker killed with SIGKILL",
        expect: "Error::WorkerDied naming SIGKILL",
        within: Duration::from_secs(30),
        run: || dies(KILL, "SIGKILL"),
        ignore: None,
    },
    Case {
        fault: "a worker that overflows its stack",
        expect: "Error::WorkerDied by a signal",
        within: Duration::from_secs(30),
        run: || dies(OVERFLOW, "signal"),
        ignore: None,
    },
    Case {
        fault: "a task that calls process::exit(17)",
        expect: "Error::WorkerDied naming the exit code",
        within: Duration::from_secs(30),
        run: || dies(EXIT, "exited with code 17"),
        ignore: None,
    },
    Case {
        fault: "a worker that segfaults",
        expect: "Error::WorkerDied naming SIGSEGV",
        within: Duration::from_secs(30),
        run: || dies(SEGV, "SIGSEGV"),
        ignore: None,
    },
    Case {
        fault: "a worker sent SIGTERM",
        expect: "Error::WorkerDied naming SIGTERM",
        within: Duration::from_secs(30),
        run: || dies(TERM, "SIGTERM"),
        ignore: None,
    },
    Case {
        fault: "a worker out of memory under RLIMIT_AS",
        expect: "Error::WorkerDied (abort on allocation failure)",
        within: Duration::from_secs(30),
        run: || dies(OOM, "SIGABRT"),
        ignore: None,
    },
    Case {
        fault: "PARJOB_WORKER set by hand on a program's own stdin and stdout",
        expect: "the program exits with code 3 and serves nothing",
        within: Duration::from_secs(30),
        run: forged_worker_variable,
        ignore: None,
    },
    Case {
        fault: "a worker that stops itself with SIGSTOP, 1 s timeout",
        expect: "Error::Timeout, the stopped worker killed",
        within: Duration::from_secs(30),
        run: stopped_with_timeout,
        ignore: None,
    },
    Case {
        fault: "a task that never ends, 1 s timeout",
        expect: "Error::Timeout",
        within: Duration::from_secs(30),
        run: never_ends,
        ignore: None,
    },
];

/// A result that travels fine and panics when the parent decodes it.
#[derive(Debug, Serialize)]
pub struct Grenade(u64);

impl<'de> Deserialize<'de> for Grenade {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        if n == 3 {
            panic!("grenade {n} went off while decoding");
        }
        Ok(Grenade(n))
    }
}

#[parallel(backend = "process")]
fn grenade(n: u64) -> Grenade {
    Grenade(n)
}

/// A result whose `Serialize` panics in the worker.
#[derive(Debug, Deserialize)]
pub struct Dud(u64);

impl Serialize for Dud {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 2 {
            panic!("dud {} will not serialize", self.0);
        }
        s.serialize_u64(self.0)
    }
}

#[parallel(backend = "process")]
fn dud(n: u64) -> Dud {
    Dud(n)
}

/// Never returns: each worker holds one batch running and one queued
/// behind it, whose 1 MB does not fit in the pipe.
#[parallel(backend = "process")]
fn stuck(payload: Vec<u8>, item: u64) -> usize {
    loop {
        std::thread::park();
        std::hint::black_box((&payload, item));
    }
}

/// Forks a child that keeps the worker's pipes and sleeps, writes its pid
/// to `dir`, then kills this worker.
#[parallel(backend = "process")]
fn fork_and_die(dir: &Path, item: u64) -> u64 {
    if item == 1 {
        // SAFETY: the child only sleeps and exits (async-signal-safe calls).
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: sleep and _exit are async-signal-safe.
            unsafe {
                libc::sleep(60);
                libc::_exit(0);
            }
        }
        std::fs::write(dir.join("grandchild"), child.to_string()).unwrap();
        std::process::abort();
    }
    item
}

#[parallel(backend = "process")]
fn panics_on(item: u64, bad: u64) -> u64 {
    if item == bad {
        panic!("item {item} is cursed");
    }
    item
}

/// How `dies_on` fails on its bad item.
pub const ABORT: u8 = 0;
pub const KILL: u8 = 1;
pub const OVERFLOW: u8 = 2;
pub const OOM: u8 = 3;
pub const EXIT: u8 = 4;
const SEGV: u8 = 5;
const TERM: u8 = 6;
const STOP: u8 = 7;

#[parallel(backend = "process")]
pub fn dies_on(item: u64, bad: u64, how: u8) -> u64 {
    if item == bad {
        match how {
            ABORT => std::process::abort(),
            KILL => {
                // SAFETY: a signal to this very process.
                unsafe { libc::raise(libc::SIGKILL) };
            }
            OVERFLOW => {
                fn deeper(n: u64) -> u64 {
                    let pad = std::hint::black_box([n; 64]);
                    if pad[3] == u64::MAX {
                        return 0;
                    }
                    deeper(pad[3] + 1) + pad[5]
                }
                return deeper(0);
            }
            EXIT => std::process::exit(17),
            STOP => {
                // SAFETY: stops this very process; only SIGKILL or SIGCONT
                // from outside can move it again.
                unsafe { libc::raise(libc::SIGSTOP) };
            }
            SEGV | TERM => {
                let signal = if how == SEGV {
                    libc::SIGSEGV
                } else {
                    libc::SIGTERM
                };
                // SAFETY: the default action (Rust's own SIGSEGV handler
                // would return from a signal that is not a stack overflow),
                // then the signal, to this very process.
                unsafe {
                    libc::signal(signal, libc::SIG_DFL);
                    libc::raise(signal);
                }
            }
            // OOM
            _ => {
                let cap = 256 << 20;
                let limit = libc::rlimit {
                    rlim_cur: cap,
                    rlim_max: cap,
                };
                // SAFETY: lowers this worker's own address-space limit.
                unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
                let big = vec![1u8; 1 << 30];
                return big.iter().map(|&b| b as u64).sum();
            }
        }
    }
    item
}

#[parallel(backend = "process")]
fn sleeps_forever(item: u64) -> u64 {
    loop {
        std::thread::park();
        std::hint::black_box(item);
    }
}

fn runner() -> Parallel {
    Parallel::new().n_jobs(2).backend(Backend::Process)
}

/// Runs `jobs` on a fresh process runner, then drops it and checks that
/// none of the children it started is left.
fn run_and_reap<R: Send + 'static>(
    p: Parallel,
    jobs: impl IntoIterator<Item = Job<R>>,
) -> Result<Result<Vec<R>, Error>, String> {
    let before = children();
    let outcome = p.run(jobs);
    let started: Vec<u32> = children()
        .into_iter()
        .filter(|c| !before.contains(c))
        .collect();
    drop(p);
    none_left(&started)?;
    Ok(outcome)
}

fn expect_err<R: std::fmt::Debug>(outcome: Result<R, Error>) -> Result<Error, String> {
    match outcome {
        Ok(v) => Err(format!("expected an error, got {v:?}")),
        Err(e) => Ok(e),
    }
}

fn deserialize_panics() -> Result<(), String> {
    let e = expect_err(run_and_reap(runner(), (0..6).map(grenade::delayed))?)?;
    match &e {
        Error::Panic {
            task,
            index: 3,
            message,
            ..
        } if task.ends_with("grenade") && message.contains("went off while decoding") => Ok(()),
        other => Err(format!("wrong error: {other}")),
    }
}

fn serialize_panics() -> Result<(), String> {
    let e = expect_err(run_and_reap(runner(), (0..5).map(dud::delayed))?)?;
    match &e {
        Error::Panic {
            index: 2, message, ..
        } if message.contains("dud 2 will not serialize") => Ok(()),
        other => Err(format!("wrong error: {other}")),
    }
}

fn stuck_with_big_arguments() -> Result<(), String> {
    let p = runner().batch_size(1).timeout(Duration::from_secs(2));
    let started = Instant::now();
    let jobs = (0..8).map(|i| stuck::delayed(vec![7u8; 1 << 20], i));
    let e = expect_err(run_and_reap(p, jobs)?)?;
    let took = started.elapsed();
    match e {
        Error::Timeout { index, after, .. } if index < 2 && after == Duration::from_secs(2) => {}
        other => return Err(format!("wrong error: {other}")),
    }
    if took < Duration::from_secs(2) {
        return Err(format!("timed out after {took:?}, before its limit"));
    }
    Ok(())
}

fn fork_then_die() -> Result<(), String> {
    let dir = scratch("fork");
    let outcome = run_and_reap(
        runner(),
        (0..4).map(|i| fork_and_die::delayed(dir.clone(), i)),
    );
    // The forked child sleeps for 60 s holding the worker's pipes: if it is
    // still alive now, the answer came from the worker's own exit, not
    // from the pipe closing.
    let grandchild: Option<u32> = std::fs::read_to_string(dir.join("grandchild"))
        .ok()
        .and_then(|pid| pid.trim().parse().ok());
    let held_the_pipe = grandchild.is_some_and(is_alive);
    if let Some(pid) = grandchild {
        // SAFETY: a signal to the sleeper the task forked.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let _ = std::fs::remove_dir_all(&dir);
    match expect_err(outcome?)? {
        Error::WorkerDied {
            index: 1, status, ..
        } if status.contains("SIGABRT") => {}
        other => return Err(format!("wrong error: {other}")),
    }
    if !held_the_pipe {
        return Err("the error came only after the forked child had exited".into());
    }
    Ok(())
}

fn task_panics() -> Result<(), String> {
    let e = expect_err(run_and_reap(
        runner(),
        (0..10).map(|i| panics_on::delayed(i, 6)),
    )?)?;
    match e {
        Error::Panic {
            index: 6,
            message,
            location: Some(at),
            ..
        } if message == "item 6 is cursed" && at.contains("process_faults.rs") => Ok(()),
        other => Err(format!("wrong error: {other}")),
    }
}

fn dies(how: u8, signal: &str) -> Result<(), String> {
    let e = expect_err(run_and_reap(
        runner(),
        (0..8).map(|i| dies_on::delayed(i, 5, how)),
    )?)?;
    match e {
        Error::WorkerDied {
            index: 5, status, ..
        } if status.contains(signal) => Ok(()),
        other => Err(format!("wrong error: {other}")),
    }
}

fn stopped_with_timeout() -> Result<(), String> {
    let p = runner().timeout(Duration::from_secs(1));
    match expect_err(run_and_reap(
        p,
        (0..8).map(|i| dies_on::delayed(i, 5, STOP)),
    )?)? {
        Error::Timeout { index: 5, .. } => Ok(()),
        other => Err(format!("wrong error: {other}")),
    }
}

fn never_ends() -> Result<(), String> {
    let p = runner().timeout(Duration::from_secs(1));
    match expect_err(run_and_reap(p, (0..3).map(sleeps_forever::delayed))?)? {
        Error::Timeout { .. } => Ok(()),
        other => Err(format!("wrong error: {other}")),
    }
}

/// Starts this program with `PARJOB_WORKER` naming its stdin and stdout,
/// as someone might by hand, and checks that it refuses to serve.
fn forged(spec: String) -> Result<String, String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("PARJOB_WORKER", spec)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    // Sixteen bytes that are not its token, then a would-be frame.
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(&[0x41; 64]);
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.code() != Some(3) || !out.stdout.is_empty() {
        return Err(format!(
            "status {}, stdout {:?}, stderr {stderr}",
            out.status, out.stdout
        ));
    }
    Ok(stderr)
}

fn forged_worker_variable() -> Result<(), String> {
    let me = std::process::id();
    let token = "00112233445566778899aabbccddeeff";
    // Right parent, pipes, wrong token: refused before the hello.
    let stderr = forged(format!("0,1,2,1,{me},-1,0,{token}"))?;
    if !stderr.contains("token") {
        return Err(format!("no word of the token: {stderr}"));
    }
    // Another parent's pid: refused before anything is read.
    let stderr = forged(format!("0,1,2,1,1,-1,0,{token}"))?;
    if !stderr.contains("not started by a parjob parent") {
        return Err(format!("no word of the parent: {stderr}"));
    }
    Ok(())
}
