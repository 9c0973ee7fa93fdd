//! Nothing is left behind when processes holding shared memory are
//! killed: after SIGKILL of the workers mid-run, or of the parent, no entry
//! appears in `/dev/shm`, and `Shmem` in `/proc/meminfo` returns to its
//! baseline once the processes are gone.
//!
//! `PARJOB_TEMP_FOLDER` on a 1 MB tmpfs gives a clear error, no hang, and
//! no file left (a root-only test, which `.ci/run` runs).
//!
//! Each kill case runs a helper (a child copy of this test binary) whose two
//! workers hold a 128 MB segment in a task that never ends; the test kills
//! processes with SIGKILL and measures.

mod common;
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
    // A memfd, or an unnamed file of the temp folder when one is set.
    let mark = std::env::var("PARJOB_TEMP_FOLDER").unwrap_or_else(|_| "memfd:parjob-shm".into());
    let mapped = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .any(|l| l.contains(&mark) && l.contains("(deleted)"));
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
    assert!(
        std::env::var_os("PARJOB_SHM_HELPER").is_some(),
        "holding_helper is started by the kill tests, which read its output"
    );
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

/// The helper, with `PARJOB_TEMP_FOLDER` set to `folder` when given.
fn start_helper_in(folder: Option<&std::path::Path>) -> (Child, BufReader<ChildStdout>) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    if let Some(folder) = folder {
        command.env("PARJOB_TEMP_FOLDER", folder);
    }
    let mut child = command
        .args([
            "holding_helper",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "-q",
        ])
        .env("PARJOB_SHM_HELPER", "1")
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

/// A helper whose two workers hold the segment, with the baseline taken
/// before it started.
struct Holding {
    baseline_kb: u64,
    shm_before: BTreeSet<String>,
    child: Child,
    out: BufReader<ChildStdout>,
    workers: Vec<i32>,
}

fn holding(folder: Option<&std::path::Path>) -> Holding {
    let (baseline_kb, shm_before) = (shmem_kb(), dev_shm());
    let (child, mut out) = start_helper_in(folder);
    let workers = holders(&mut out);
    if folder.is_none() {
        assert!(
            shmem_kb() >= baseline_kb + SEGMENT_KB - SLACK_KB,
            "the segment does not show in Shmem"
        );
    }
    Holding {
        baseline_kb,
        shm_before,
        child,
        out,
        workers,
    }
}

impl Holding {
    /// SIGKILL of the parent, then the wait for its workers to die with it
    /// (PR_SET_PDEATHSIG).
    fn kill_parent(&mut self) {
        kill(self.child.id() as i32);
        self.child.wait().unwrap();
        self.workers.iter().for_each(|&pid| wait_gone(pid));
    }
}

#[test]
fn killing_the_workers_mid_run_frees_the_segment() {
    let _turn = one_at_a_time();
    let mut h = holding(None);
    h.workers.iter().for_each(|&pid| kill(pid));
    let run = next_line(&mut h.out, "RUN");
    assert!(
        run.contains("died"),
        "the run did not fail by the deaths: {run}"
    );
    next_line(&mut h.out, "DONE");
    h.workers.iter().for_each(|&pid| wait_gone(pid));
    // The parent lives on, its run over: it holds nothing either.
    assert_nothing_left(h.baseline_kb, &h.shm_before);
    drop(h.child.stdin.take());
    assert!(h.child.wait().unwrap().success());
}

#[test]
fn killing_the_parent_mid_run_frees_the_segment() {
    let _turn = one_at_a_time();
    let mut h = holding(None);
    h.kill_parent();
    assert_nothing_left(h.baseline_kb, &h.shm_before);
}

#[test]
fn killing_the_parent_leaves_nothing_in_the_temp_folder() {
    let _turn = one_at_a_time();
    let folder = common::scratch("shm", "kill");
    holding(Some(&folder)).kill_parent();
    let left: Vec<_> = std::fs::read_dir(&folder).unwrap().collect();
    assert!(left.is_empty(), "left in the temp folder: {left:?}");
    std::fs::remove_dir(&folder).unwrap();
}

/// A tmpfs of `size`, mounted for a test (needs root), unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = std::env::temp_dir().join(format!("parjob-shm-tmpfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The sum of `data`.
#[parallel(backend = "process", n_jobs = 2)]
fn total(data: &[f64]) -> f64 {
    data.iter().sum()
}

/// Started by `temp_folder_on_a_full_tmpfs_is_a_clear_error`, with
/// `PARJOB_TEMP_FOLDER` set: prints the run's error.
#[parjob::test]
#[ignore = "helper: started by temp_folder_on_a_full_tmpfs_is_a_clear_error"]
fn temp_folder_helper() {
    let folder = std::env::var("PARJOB_TEMP_FOLDER").expect("started with PARJOB_TEMP_FOLDER");
    let small = vec![1.0f64; 1_000];
    assert_eq!(
        total::map([&small]).unwrap(),
        [1000.0],
        "small arguments go inline"
    );
    let big = vec![1.0f64; 1 << 20]; // 8 MB
    let err = total::map([&big]).unwrap_err().to_string();
    println!("ERROR {err}");
    assert!(err.contains(&folder), "the error does not name {folder}");
}

#[test]
#[ignore = "mounts a 1 MB tmpfs, which needs root; .ci/run runs it with --ignored"]
fn temp_folder_on_a_full_tmpfs_is_a_clear_error() {
    let tmpfs = Tmpfs::mount("1m");
    let stdout = common::run_helper(
        "temp_folder_helper",
        &[("PARJOB_TEMP_FOLDER", tmpfs.0.as_os_str())],
    );
    let error = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ERROR "))
        .unwrap();
    for word in ["does not fit", "temp_folder", "max_nbytes"] {
        assert!(error.contains(word), "no `{word}` in: {error}");
    }
    let left: Vec<_> = std::fs::read_dir(&tmpfs.0).unwrap().collect();
    assert!(left.is_empty(), "files left in the tmpfs: {left:?}");
}
