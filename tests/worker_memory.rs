//! `max_worker_memory`: a worker process whose memory grows over the limit
//! is stopped by parjob, and its job fails with `Error::MemoryLimit`
//! naming the item (or runs again under `retries`); a worker killed by a
//! SIGKILL parjob did not send is reported with its last memory reading;
//! `verbose >= 2` prints each worker's peak.
//!
//! The growing task touches its memory in 100 MB steps, 100 ms apart, and
//! records each step in a file. Stopped soon after it crossed the limit,
//! it never reaches the 3 GB it would touch unstopped.

mod common;

use parjob::prelude::*;
use parjob::sync::Event;
use parjob::{Error, OnError};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MB: u64 = 1 << 20;
const GB: u64 = 1 << 30;
/// Far longer than any run here needs.
const PATIENCE: Duration = Duration::from_secs(60);

/// Touches `total` bytes in 100 MB steps, 100 ms apart, writing the
/// amount touched so far to `dir/touched` after each step.
fn grow(total: u64, dir: &Path) -> usize {
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut touched = 0;
    while touched < total {
        let mut step = vec![0u8; (100 * MB) as usize];
        for page in step.chunks_mut(4096) {
            page[0] = 1;
        }
        held.push(step);
        touched += 100 * MB;
        std::fs::write(dir.join("touched"), touched.to_string()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    held.iter().map(|s| s[0] as usize).sum()
}

/// Item 0 grows to 3 GB; the others return at once.
#[parallel(backend = "process", n_jobs = 2, max_worker_memory = "1GB")]
fn grows_on_0(i: u64, dir: &Path) -> u64 {
    if i == 0 {
        grow(3 * GB, dir);
    }
    i
}

/// The lowest `MemAvailable` seen while `run` runs, and its result.
fn lowest_available_during<T>(run: impl FnOnce() -> T) -> (u64, T) {
    let done = Arc::new(AtomicBool::new(false));
    let lowest = Arc::new(AtomicU64::new(u64::MAX));
    let watcher = {
        let (done, lowest) = (done.clone(), lowest.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                lowest.fetch_min(available(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let out = run();
    done.store(true, Ordering::Release);
    watcher.join().unwrap();
    (lowest.load(Ordering::Relaxed), out)
}

fn available() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

fn touched(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("touched"))
        .unwrap()
        .parse()
        .unwrap()
}

#[parjob::test]
fn a_worker_over_the_limit_is_stopped_and_its_item_named() {
    let dir = common::scratch("worker_memory", "limit");
    let before = available();
    let run = grows_on_0::with(|p| p.on_error(OnError::Continue));
    let (lowest, results) =
        lowest_available_during(|| run.map_results((0..8u64).map(|i| (i, dir.clone()))));
    let results = results.unwrap();
    match &results[0] {
        Err(Error::MemoryLimit {
            index,
            peak,
            limit,
            task,
            ..
        }) => {
            assert_eq!((*index, *limit), (0, GB));
            // At the limit (the kernel's count, where a cgroup held the
            // worker), or over it (the watch's reading).
            assert!(*peak >= GB, "the reading that crossed: {peak}");
            assert!(task.ends_with("grows_on_0"), "{task}");
        }
        other => panic!("expected MemoryLimit for item 0, got {other:?}"),
    }
    let message = results[0].as_ref().unwrap_err().to_string();
    assert!(
        message.contains("max_worker_memory") && message.contains("1.0 GB limit"),
        "{message}"
    );
    // Stopped within a few of its 100 ms steps of crossing 1 GB.
    let reached = touched(&dir);
    assert!(reached <= GB + 400 * MB, "it touched {} MB", reached / MB);
    assert!(
        lowest + 2 * GB >= before,
        "available memory fell from {before} to {lowest}"
    );
    // The siblings completed, and the next run on the same workers works.
    let rest: Vec<u64> = results[1..].iter().map(|r| *r.as_ref().unwrap()).collect();
    assert_eq!(rest, (1..8).collect::<Vec<_>>());
    let again = grows_on_0::map((1..5u64).map(|i| (i, dir.clone()))).unwrap();
    assert_eq!(again, vec![1, 2, 3, 4]);
}

#[parjob::test]
fn without_continue_the_memory_limit_ends_the_run() {
    let dir = common::scratch("worker_memory", "stop");
    let err = grows_on_0::map((0..4u64).map(|i| (i, dir.clone()))).unwrap_err();
    assert!(matches!(err, Error::MemoryLimit { index: 0, .. }), "{err}");
}

/// Item 1 grows to 3 GB on its first attempt only.
#[parallel(
    backend = "process",
    n_jobs = 2,
    max_worker_memory = "1GB",
    retries = 1
)]
fn grows_once_on_1(i: u64, dir: &Path) -> u64 {
    let first = !dir.join("tried").exists();
    if i == 1 && first {
        std::fs::write(dir.join("tried"), b"").unwrap();
        grow(3 * GB, dir);
    }
    i
}

#[parjob::test]
fn a_job_stopped_for_its_memory_is_retried() {
    let dir = common::scratch("worker_memory", "retried");
    let out = grows_once_on_1::map((0..4u64).map(|i| (i, dir.clone()))).unwrap();
    assert_eq!(out, vec![0, 1, 2, 3]);
    assert!(dir.join("tried").exists());
}

/// Touches 500 MB, says its pid, and holds the memory until released.
#[parallel(backend = "process", n_jobs = 2)]
fn holds_500mb(pid_file: &Path, held: Event, release: Event) -> u64 {
    let mut block = vec![0u8; (500 * MB) as usize];
    for page in block.chunks_mut(4096) {
        page[0] = 1;
    }
    std::fs::write(pid_file, std::process::id().to_string()).unwrap();
    held.set();
    release.wait_timeout(PATIENCE);
    block.iter().step_by(4096).map(|&b| b as u64).sum()
}

#[parjob::test]
fn a_worker_killed_by_someone_else_is_reported_with_its_last_reading() {
    let dir = common::scratch("worker_memory", "oom");
    let pid_file = dir.join("pid");
    let (held, release) = (Event::new().unwrap(), Event::new().unwrap());
    // Process runs start from the test's own thread: the kill comes from
    // another one, once the memory is held and the memory watch has read
    // the worker twice.
    let killer = {
        let (pid_file, held) = (pid_file.clone(), held.clone());
        std::thread::spawn(move || {
            assert!(held.wait_timeout(PATIENCE), "the task held its memory");
            let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
            parjob::__private::trace_reads(pid);
            let deadline = Instant::now() + PATIENCE;
            while parjob::__private::traced_reads() < 2 {
                assert!(Instant::now() < deadline, "the memory watch did not run");
                std::thread::yield_now();
            }
            // SAFETY: a signal to the worker process this test's run started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        })
    };
    let items = [(pid_file.as_path(), held, release.clone())];
    let err = holds_500mb::map(items).unwrap_err();
    release.set();
    killer.join().unwrap();
    match &err {
        Error::WorkerDied {
            memory: Some(reading),
            status,
            ..
        } => {
            assert!(status.contains("SIGKILL"), "{status}");
            assert!(reading.rss >= 500 * MB, "last reading {}", reading.rss);
            assert!(reading.available > 0);
            assert!(
                !reading.oom_killer,
                "the test's SIGKILL is not the OOM killer"
            );
        }
        other => panic!("expected a death with a memory reading, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("its last reading was") && message.contains("MB with"),
        "{message}"
    );
}

#[parallel(backend = "process", n_jobs = 2)]
fn small(i: u64) -> u64 {
    i * 2
}

#[test]
fn verbose_2_prints_each_workers_peak_memory() {
    let stderr = common::run_helper_stderr("verbose_peaks_helper");
    let line = stderr
        .lines()
        .find(|l| l.contains("peak memory of each worker"))
        .unwrap_or_else(|| panic!("no peak line in:\n{stderr}"));
    // Two workers, each with a pid and a size.
    assert_eq!(
        line.matches(" MB").count() + line.matches(" KB").count(),
        2,
        "{line}"
    );
    assert!(!line.contains(" 0 KB"), "a worker was never read: {line}");
}

#[parjob::test]
#[ignore = "helper: started by verbose_2_prints_each_workers_peak_memory"]
fn verbose_peaks_helper() {
    let run = small::with(|p| p.verbose(2));
    assert_eq!(
        run.map(0..10u64).unwrap(),
        (0..10).map(|i| i * 2).collect::<Vec<_>>()
    );
}

#[parjob::test]
fn a_pool_worker_over_the_limit_fails_its_job_and_the_pool_goes_on() {
    let dir = common::scratch("worker_memory", "pool");
    let pool = parjob::Pool::builder()
        .processes(2)
        .max_worker_memory(GB)
        .build()
        .unwrap();
    let grows = pool.apply_async(grows_on_0::delayed(0, &dir));
    let others: Vec<_> = (1..6u64)
        .map(|i| pool.apply_async(grows_on_0::delayed(i, &dir)))
        .collect();
    match grows.get_timeout(PATIENCE).unwrap() {
        Err(Error::MemoryLimit {
            limit, index: 0, ..
        }) => assert_eq!(limit, GB),
        other => panic!("expected MemoryLimit, got {other:?}"),
    }
    for (i, r) in (1..).zip(others) {
        assert_eq!(r.get_timeout(PATIENCE).unwrap().unwrap(), i);
    }
    assert!(touched(&dir) <= GB + 400 * MB);
    assert_eq!(pool.apply(grows_on_0::delayed(9, &dir)).unwrap(), 9);
}

/// Item 0 grows to 3 GB, with no limit of its own.
#[parallel(backend = "process", n_jobs = 2)]
fn grows_plain(i: u64, dir: &Path) -> u64 {
    grows_on_0(i, dir)
}

#[parjob::test]
fn the_limit_comes_from_config_and_the_environment() {
    let dir = common::scratch("worker_memory", "config");
    let err = parjob::config()
        .max_worker_memory(GB)
        .scope(|| grows_plain::map((0..2u64).map(|i| (i, dir.clone()))))
        .unwrap_err();
    assert!(matches!(err, Error::MemoryLimit { index: 0, .. }), "{err}");
    let out = common::run_helper(
        "env_limit_helper",
        &[("PARJOB_MAX_WORKER_MEMORY", std::ffi::OsStr::new("1GB"))],
    );
    assert!(out.contains("ENV limit 1073741824"), "{out}");
    let out = common::run_helper(
        "env_limit_helper",
        &[("PARJOB_MAX_WORKER_MEMORY", std::ffi::OsStr::new("lots"))],
    );
    assert!(
        out.contains("PARJOB_MAX_WORKER_MEMORY") && out.contains("\"2GB\""),
        "{out}"
    );
}

#[parjob::test]
#[ignore = "helper: started by the_limit_comes_from_config_and_the_environment"]
fn env_limit_helper() {
    let dir = common::scratch("worker_memory", "env");
    match grows_plain::map((0..2u64).map(|i| (i, dir.clone()))) {
        Err(Error::MemoryLimit { limit, .. }) => println!("ENV limit {limit}"),
        Err(e) => println!("ENV error {e}"),
        Ok(_) => println!("ENV no limit"),
    }
}

#[test]
fn both_ways_of_holding_the_limit_stop_the_item() {
    // The default: a memory cgroup per worker where this process may make
    // one (the kernel holds it exactly), else the watch.
    let out = common::run_helper_stderr("mechanism_helper");
    assert!(out.contains("MemoryLimit 0"), "{out}");
    assert!(
        out.contains("[parjob] max_worker_memory = 1.0 GB, held by"),
        "{out}"
    );
    // The watch alone, chosen by its variable.
    let out = common::helper_command("mechanism_helper", &[("PARJOB_MEMORY_WATCH", "statm")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("MemoryLimit 0"), "{stderr}");
    assert!(
        stderr.contains("held by the memory watch (statm"),
        "{stderr}"
    );
}

#[parjob::test]
#[ignore = "helper: started by both_ways_of_holding_the_limit_stop_the_item"]
fn mechanism_helper() {
    let dir = common::scratch("worker_memory", "mechanism");
    let run = grows_on_0::with(|p| p.on_error(OnError::Continue).verbose(1));
    let out = run
        .map_results((0..4u64).map(|i| (i, dir.clone())))
        .unwrap();
    match &out[0] {
        Err(Error::MemoryLimit { index, .. }) => eprintln!("MemoryLimit {index}"),
        other => eprintln!("not stopped: {other:?}"),
    }
    assert!(touched(&dir) <= GB + 400 * MB);
}

/// Under a limit: writes its pid to `dir/worker` once it is in a parjob
/// memory cgroup (at once where there are none), then waits for
/// `dir/release`, a minute at most.
#[parallel(backend = "process", n_jobs = 2, max_worker_memory = "1GB")]
fn held_in_group(dir: &Path) -> u32 {
    let deadline = Instant::now() + PATIENCE;
    let grouped =
        || std::fs::read_to_string("/proc/self/cgroup").is_ok_and(|c| c.contains("/parjob-"));
    while !grouped() && !parjob::__private::memory_groups().is_empty() && Instant::now() < deadline
    {
        std::thread::yield_now();
    }
    std::fs::write(dir.join("worker"), std::process::id().to_string()).unwrap();
    while !dir.join("release").exists() && Instant::now() < deadline {
        std::thread::yield_now();
    }
    std::process::id()
}

#[test]
fn a_killed_parents_memory_groups_are_removed_by_the_next_program() {
    let dir = common::scratch("worker_memory", "orphans");
    let dir_env = dir.to_string_lossy().into_owned();
    let mut parent =
        common::helper_command("held_in_group_helper", &[("PARJOB_TEST_DIR", &dir_env)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let worker: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(dir.join("worker"))
            .ok()
            .and_then(|p| p.parse().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the held run never started");
        std::thread::yield_now();
    };
    let own = format!("parjob-{}-{worker}", parent.id());
    let before = parjob::__private::memory_groups();
    // Where workers get cgroups, the held worker is in one of the parent's.
    let grouped = std::fs::read_to_string(format!("/proc/{worker}/cgroup"))
        .unwrap()
        .contains(&format!("/{own}"));
    assert_eq!(
        grouped,
        before.iter().any(|g| g.ends_with(&own)),
        "{before:?}"
    );
    parent.kill().unwrap();
    parent.wait().unwrap();
    assert!(
        common::wait_dead(worker, PATIENCE),
        "the worker died with its parent"
    );
    // The next parjob program that sets a limit removes the dead
    // parent's groups.
    common::run_helper_stderr("sweeping_helper");
    let after = parjob::__private::memory_groups();
    assert!(!after.iter().any(|g| g.ends_with(&own)), "{after:?}");
    std::fs::write(dir.join("release"), b"").unwrap();
}

#[parjob::test]
#[ignore = "helper: started by a_killed_parents_memory_groups_are_removed_by_the_next_program"]
fn held_in_group_helper() {
    let dir = std::path::PathBuf::from(std::env::var("PARJOB_TEST_DIR").unwrap());
    let _ = held_in_group::map([dir.as_path()]);
}

#[parjob::test]
#[ignore = "helper: started by a_killed_parents_memory_groups_are_removed_by_the_next_program"]
fn sweeping_helper() {
    let dir = common::scratch("worker_memory", "sweep");
    assert_eq!(
        grows_on_0::map((1..3u64).map(|i| (i, dir.clone()))).unwrap(),
        [1, 2]
    );
}

#[parallel(n_jobs = 2, max_worker_memory = "1GB", retries = 1, verbose = 1)]
fn on_threads(i: u64) -> u64 {
    i + 1
}

#[test]
fn process_only_options_on_threads_are_said_to_do_nothing() {
    let stderr = common::run_helper_stderr("on_threads_helper");
    assert!(
        stderr.contains(
            "[parjob] retries and max_worker_memory apply to worker processes only, and this run is on the thread backend"
        ),
        "{stderr}"
    );
}

#[parjob::test]
#[ignore = "helper: started by process_only_options_on_threads_are_said_to_do_nothing"]
fn on_threads_helper() {
    assert_eq!(on_threads::map(0..4u64).unwrap(), [1, 2, 3, 4]);
}
