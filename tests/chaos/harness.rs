//! Runs the chaos table: each row on its own thread, under its time bound.

use crate::common::is_alive;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One row: a fault, what must come of it, and how long that may take.
pub struct Case {
    /// The fault, in words (and the name to select the row by).
    pub fault: &'static str,
    /// The expected outcome, in words, for the report.
    pub expect: &'static str,
    /// The time bound: about five times the expected time.
    pub within: Duration,
    /// Injects the fault and checks the outcome; `Err` says what differed.
    pub run: fn() -> Result<(), String>,
    /// Why the row cannot run on every machine (it mounts a tmpfs or makes
    /// a cgroup, which need root): it then runs only with `--ignored` or
    /// `--include-ignored`, as libtest's `#[ignore]` rows do.
    pub ignore: Option<&'static str>,
}

/// Runs every row (or those whose fault contains the first argument) and
/// prints a libtest-style summary; exits non-zero if any row failed.
/// Rows with an `ignore` reason run only with `--ignored` (those alone)
/// or `--include-ignored` (with the rest).
pub fn run_all(tables: &[&[Case]]) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .cloned()
        .unwrap_or_default();
    let only_ignored = args.iter().any(|a| a == "--ignored");
    let with_ignored = only_ignored || args.iter().any(|a| a == "--include-ignored");
    let (cases, ignored): (Vec<&Case>, Vec<&Case>) = tables
        .iter()
        .flat_map(|t| t.iter())
        .filter(|c| {
            if is_capped_child() {
                c.fault == filter
            } else {
                c.fault.contains(&filter)
            }
        })
        .filter(|c| !only_ignored || c.ignore.is_some() || is_capped_child())
        .partition(|c| c.ignore.is_none() || with_ignored || is_capped_child());
    println!("running {} chaos cases", cases.len());
    for case in &ignored {
        println!(
            "ignored {} ({})",
            case.fault,
            case.ignore.unwrap_or_default()
        );
    }
    let (mut passed, mut failed) = (0, 0);
    for case in cases {
        let started = Instant::now();
        match within(case.within, case.run) {
            Ok(()) => {
                passed += 1;
                println!(
                    "ok   {:?} {} -> {}",
                    started.elapsed(),
                    case.fault,
                    case.expect
                );
            }
            Err(why) => {
                failed += 1;
                println!("FAIL {} (expected {}): {why}", case.fault, case.expect);
            }
        }
    }
    println!(
        "{passed} passed, {failed} failed, {} skipped",
        ignored.len()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}

/// Runs `f` on its own thread; an error if it does not finish within `bound`.
pub fn within(bound: Duration, f: fn() -> Result<(), String>) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(f)
            .unwrap_or_else(|p| Err(format!("the row panicked: {}", panic_text(&*p))));
        let _ = tx.send(outcome);
    });
    match rx.recv_timeout(bound) {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("still running after {bound:?}: it hangs")),
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// The pids of this process's children, from `/proc`.
pub fn children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(me)
        })
        .collect()
}

/// Fails unless every pid in `pids` has exited.
pub fn none_left(pids: &[u32]) -> Result<(), String> {
    let left: Vec<u32> = pids.iter().copied().filter(|&p| is_alive(p)).collect();
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("processes {left:?} are still alive"))
    }
}

/// A fresh scratch directory for one row.
pub fn scratch(name: &str) -> PathBuf {
    crate::common::scratch("chaos", name)
}

/// Runs this binary again on one row with `env` set, under a resource
/// limit (`RLIMIT_AS` for memory, `RLIMIT_FSIZE` for a full disk), and
/// returns its output.
pub fn in_capped_child(
    row: &str,
    resource: libc::__rlimit_resource_t,
    cap: u64,
    env: &[(&str, &Path)],
) -> std::io::Result<std::process::Output> {
    in_child(
        row,
        env,
        Confine {
            limit: Some((resource, cap)),
            ..Confine::default()
        },
    )
}

/// What a child row runs under; its worker processes inherit all of it.
#[derive(Default)]
pub struct Confine {
    /// A resource limit and its value.
    pub limit: Option<(libc::__rlimit_resource_t, u64)>,
    /// A seccomp filter that fails `memfd_create` with `EPERM`, as some
    /// sandboxes do.
    pub refuse_memfd: bool,
    /// The `cgroup.procs` file of a cgroup the child joins before it runs.
    pub cgroup_procs: Option<PathBuf>,
}

/// Runs this binary again on one row with `env` set, confined as
/// `confine` says, and returns its output.
pub fn in_child(
    row: &str,
    env: &[(&str, &Path)],
    confine: Confine,
) -> std::io::Result<std::process::Output> {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.arg(row).env("PARJOB_CHAOS_CHILD", "1");
    for (k, v) in env {
        command.env(k, v);
    }
    let procs = confine
        .cgroup_procs
        .as_ref()
        .map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap());
    // SAFETY: the closure makes only async-signal-safe calls (setrlimit,
    // signal, open, write, close, prctl) on this child's own state.
    unsafe {
        command.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            if let Some((resource, cap)) = confine.limit {
                let limit = libc::rlimit {
                    rlim_cur: cap,
                    rlim_max: cap,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(procs) = &procs {
                join_cgroup(procs)?;
            }
            if confine.refuse_memfd {
                refuse_memfd()?;
            }
            Ok(())
        });
    }
    command.output()
}

/// Writes "0" (this process) into a cgroup's `cgroup.procs`.
fn join_cgroup(procs: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: open, write and close on a NUL-terminated path and a
    // two-byte buffer.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let wrote = libc::write(fd, b"0\n".as_ptr().cast(), 2);
        libc::close(fd);
        if wrote != 2 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Installs a seccomp filter under which `memfd_create` fails with EPERM
/// and every other call is allowed.
fn refuse_memfd() -> std::io::Result<()> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let filter = [
        // The syscall number is the first word of `struct seccomp_data`.
        op(LD_W_ABS, 0, 0, 0),
        op(JEQ_K, 0, 1, libc::SYS_memfd_create as u32),
        op(RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32),
        op(RET_K, 0, 0, RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with a valid filter program that outlives the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The text a capped child printed on stdout, for the parent's checks.
pub fn child_said(out: &std::process::Output) -> String {
    format!(
        "status {}; stdout: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// Whether this process is a capped child started by [`in_capped_child`].
pub fn is_capped_child() -> bool {
    std::env::var_os("PARJOB_CHAOS_CHILD").is_some()
}

/// Waits until `tid()` names a thread of `pid` (it publishes its id just
/// before it waits) and that thread sleeps in a futex wait, read from
/// `/proc/<pid>/task/<tid>/syscall`; an error after 20 s. This is how a
/// row knows a waiter is inside its wait before it kills it.
pub fn blocked_in_futex(pid: u32, tid: impl Fn() -> u32) -> Result<(), String> {
    let futex = format!("{} ", libc::SYS_futex);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let t = tid();
        if t != 0 {
            let syscall = std::fs::read_to_string(format!("/proc/{pid}/task/{t}/syscall"))
                .unwrap_or_default();
            if syscall.starts_with(&futex) {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(format!(
        "thread {} of process {pid} never slept in a futex wait",
        tid()
    ))
}
