//! Nothing is left behind when processes holding shared memory are
//! killed: after SIGKILL of the workers mid-run, or of the parent, no entry
//! appears in `/dev/shm`, and `Shmem` in `/proc/meminfo` returns to its
//! baseline once the processes are gone.
//!
//! Each case runs a helper (a child copy of this test binary) whose two
//! workers hold a 128 MB segment in a task that never ends; the test kills
//! processes with SIGKILL and measures.

use parjob::prelude::*;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Mutex, MutexGuard};

const NUMBERS: usize = 16 << 20; // 128 MB of f64
const SEGMENT_KB: u64 = (NUMBERS as u64 * 8) >> 10;
/// Room for what other processes on the machine do meanwhile.
const SLACK_KB: u64 = 32 << 10;

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

fn shmem_kb() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = meminfo.lines().find(|l| l.starts_with("Shmem:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn dev_shm() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Reads the worker's first words and never returns: the task holds the
/// segment until its process is killed.
#[parallel(backend = "process", n_jobs = 2, batch_size = 1)]
fn hold(data: &[f64], k: u64) -> f64 {
    let mapped = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .contains("memfd:parjob-shm");
    println!("HOLD {} {mapped} {}", std::process::id(), data[k as usize]);
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::park();
    }
}

/// Started by the tests below: two workers hold one segment until killed.
#[parjob::test]
#[ignore = "helper: started by the kill tests of shared_memory_faults.rs"]
fn holding_helper() {
    let data: Vec<f64> = (0..NUMBERS).map(|i| i as f64).collect();
    let run = hold::map((0..2u64).map(|k| (&data, k)));
    println!(
        "RUN {}",
        run.map_or_else(|e| e.to_string(), |_| "ok".into())
    );
    println!("DONE");
    std::io::stdout().flush().unwrap();
    // Stay alive, the run over, until the test closes stdin.
    let _ = std::io::stdin().read_line(&mut String::new());
}

fn start_helper() -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "holding_helper",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "-q",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

/// The next line of `out` that starts with `word`, without it.
fn next_line(out: &mut BufReader<ChildStdout>, word: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "the helper ended before {word}"
        );
        if let Some(rest) = line.trim_end().strip_prefix(word) {
            return rest.trim().to_string();
        }
    }
}

/// The pids of the two workers, once both hold the segment mapped.
fn holders(out: &mut BufReader<ChildStdout>) -> Vec<i32> {
    (0..2)
        .map(|_| {
            let words = next_line(out, "HOLD");
            let mut words = words.split_whitespace();
            let pid: i32 = words.next().unwrap().parse().unwrap();
            assert_eq!(words.next(), Some("true"), "worker {pid} has no mapping");
            pid
        })
        .collect()
}

fn kill(pid: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

/// Waits until `pid` (not our child) has exited, through a pidfd.
fn wait_gone(pid: i32) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return; // already gone
    }
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd, then close our descriptor.
    unsafe {
        assert_eq!(
            libc::poll(&mut pollfd, 1, 30_000),
            1,
            "process {pid} did not exit"
        );
        libc::close(fd);
    }
}

fn assert_nothing_left(baseline_kb: u64, shm_before: &BTreeSet<String>) {
    let now = shmem_kb();
    assert!(
        now <= baseline_kb + SLACK_KB,
        "Shmem is {now} kB, {} kB over its baseline of {baseline_kb} kB",
        now.saturating_sub(baseline_kb)
    );
    let after = dev_shm();
    let new: Vec<&String> = after.difference(shm_before).collect();
    assert!(new.is_empty(), "new entries in /dev/shm: {new:?}");
}

#[test]
fn killing_the_workers_mid_run_frees_the_segment() {
    let _turn = one_at_a_time();
    let (baseline, shm_before) = (shmem_kb(), dev_shm());
    let (mut child, mut out) = start_helper();
    let workers = holders(&mut out);
    assert!(
        shmem_kb() >= baseline + SEGMENT_KB - SLACK_KB,
        "the segment does not show in Shmem"
    );
    for &pid in &workers {
        kill(pid);
    }
    let run = next_line(&mut out, "RUN");
    assert!(
        run.contains("died"),
        "the run did not fail by the deaths: {run}"
    );
    next_line(&mut out, "DONE");
    for &pid in &workers {
        wait_gone(pid);
    }
    // The parent lives on, its run over: it holds nothing either.
    assert_nothing_left(baseline, &shm_before);
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

#[test]
fn killing_the_parent_mid_run_frees_the_segment() {
    let _turn = one_at_a_time();
    let (baseline, shm_before) = (shmem_kb(), dev_shm());
    let (mut child, mut out) = start_helper();
    let workers = holders(&mut out);
    assert!(
        shmem_kb() >= baseline + SEGMENT_KB - SLACK_KB,
        "the segment does not show in Shmem"
    );
    kill(child.id() as i32);
    child.wait().unwrap();
    // The workers die with their parent (PR_SET_PDEATHSIG).
    for &pid in &workers {
        wait_gone(pid);
    }
    assert_nothing_left(baseline, &shm_before);
}
