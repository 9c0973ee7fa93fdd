//! The scheduler: laziness, the pre_dispatch bound, batching, timeouts,
//! cancellation on drop, verbose output, scoped configuration and bad
//! options (result order is in `ordering.rs`).

mod common;
use common::{process, rendezvous, threads};

use parjob::prelude::*;
use parjob::sync::Event;
use parjob::{config, Error};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[parallel(backend = "process", n_jobs = 2)]
fn nap(index: u64, millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    index
}

#[parallel(backend = "process", n_jobs = 2)]
fn nap_pid(index: u64, millis: u64) -> (u64, u32) {
    std::thread::sleep(Duration::from_millis(millis));
    (index, std::process::id())
}

/// Writes its pid into `dir`, then sleeps.
#[parallel(backend = "process", n_jobs = 2)]
fn announce(dir: &std::path::Path, index: u64, millis: u64) -> u64 {
    std::fs::write(dir.join(std::process::id().to_string()), b"").unwrap();
    std::thread::sleep(Duration::from_millis(millis));
    index
}

#[parallel(backend = "process", n_jobs = 2)]
fn abort_at(index: u64, bad: u64) -> u64 {
    if index == bad {
        std::process::abort();
    }
    index
}

#[parallel(backend = "process", n_jobs = 2)]
fn triple(x: u64) -> u64 {
    3 * x
}

/// Far longer than any run here needs: a wait that runs out is a failure,
/// reported by the job that waited, never a hang.
const PATIENCE: Duration = Duration::from_secs(60);

#[parallel]
fn where_am_i(_x: u32) -> std::thread::ThreadId {
    std::thread::current().id()
}

#[parjob::test]
fn an_infinite_input_is_drawn_lazily() {
    for p in [process(2), threads(2)] {
        let drawn = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&drawn);
        let jobs = (0u64..).map(move |i| {
            counter.fetch_add(1, Ordering::SeqCst);
            triple::delayed(i)
        });
        let first: Vec<u64> = p
            .pre_dispatch(4)
            .batch_size(1)
            .iter(jobs)
            .take(10)
            .map(Result::unwrap)
            .collect();
        assert_eq!(first, (0..10).map(|x| 3 * x).collect::<Vec<_>>());
        // Drawn: the 10 taken, at most 4 batches of 1 in flight, at most 4
        // results held, and one job looked ahead.
        let n = drawn.load(Ordering::SeqCst);
        assert!(n <= 10 + 4 + 4 + 1, "{n} jobs drawn for 10 results");
    }
}

#[parjob::test]
fn jobs_in_flight_never_exceed_pre_dispatch() {
    for (p, name) in [(process(2), "process"), (threads(2), "thread")] {
        let drawn = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(AtomicUsize::new(0));
        let worst = Arc::new(AtomicUsize::new(0));
        let (d, r, w) = (
            Arc::clone(&drawn),
            Arc::clone(&received),
            Arc::clone(&worst),
        );
        let jobs = (0..60u64).map(move |i| {
            let in_flight = d.fetch_add(1, Ordering::SeqCst) + 1 - r.load(Ordering::SeqCst);
            w.fetch_max(in_flight, Ordering::SeqCst);
            nap::delayed(i, 2)
        });
        let p = p.pre_dispatch(3).batch_size(1);
        for (i, result) in p.iter(jobs).enumerate() {
            assert_eq!(result.unwrap(), i as u64);
            received.fetch_add(1, Ordering::SeqCst);
        }
        let worst = worst.load(Ordering::SeqCst);
        assert!(
            worst <= 3,
            "{name}: {worst} jobs in flight with pre_dispatch = 3"
        );
        assert!(
            worst >= 2,
            "{name}: only {worst} in flight: nothing ran in parallel"
        );
    }
}

#[parjob::test]
fn many_tiny_tasks_in_auto_batches_come_back_in_order() {
    let got = process(2).run((0..20_000).map(triple::delayed)).unwrap();
    assert_eq!(got, (0..20_000).map(|x| 3 * x).collect::<Vec<_>>());
    // Auto-batching grows batches of tiny tasks well past one job.
    for p in [process(2), threads(2)] {
        let mut results = p.iter((0..20_000).map(triple::delayed));
        let sum: u64 = results.by_ref().map(Result::unwrap).sum();
        assert_eq!(sum, 3 * (0..20_000u64).sum::<u64>());
        let largest = parjob::__private::largest_batch(&results);
        assert!(largest >= 16, "auto batches never grew past {largest} jobs");
    }
    let got = triple::map(0..20_000).unwrap();
    assert_eq!(got.len(), 20_000);
    assert!(got.iter().enumerate().all(|(i, v)| *v == 3 * i as u64));
}

#[parjob::test]
fn a_crash_inside_a_batch_names_the_exact_item() {
    let err = process(2)
        .batch_size(10)
        .run((0..40).map(|i| abort_at::delayed(i, 13)))
        .unwrap_err();
    match err {
        Error::WorkerDied { index, status, .. } => {
            assert_eq!(index, 13);
            assert!(status.contains("SIGABRT"), "{status}");
        }
        other => panic!("expected a dead worker, got {other:?}"),
    }
}

/// Item `index` waits for `release` (the test sets it only after its run
/// returned); if the wait runs out, it leaves `in_vain` in `dir`, so a run
/// that waited for it is seen.
#[parallel(backend = "process", n_jobs = 2)]
fn held_pid(index: u64, release: parjob::sync::Event, dir: &std::path::Path) -> (u64, u32) {
    if !release.wait_timeout(PATIENCE) {
        std::fs::write(dir.join("in_vain"), b"").unwrap();
    }
    (index, std::process::id())
}

#[parjob::test]
fn a_timeout_kills_the_worker_and_the_next_task_succeeds() {
    let p = process(2).timeout(Duration::from_millis(300));
    let dir = common::scratch("scheduler", "timeout");
    let release = Event::new().unwrap();
    let err = p
        .run([
            nap_pid::delayed(0, 5),
            held_pid::delayed(1, release.clone(), dir.clone()),
            nap_pid::delayed(2, 5),
        ])
        .unwrap_err();
    // Job 1 could only have ended by its own minute's bound: the error
    // came without waiting for it.
    release.set();
    assert!(!dir.join("in_vain").exists(), "the run waited for the job");
    let before: HashSet<u32> = p.worker_pids().into_iter().collect();
    match &err {
        Error::Timeout { task, index, after } => {
            assert!(task.ends_with("::held_pid"), "{task}");
            assert_eq!(*index, 1);
            assert_eq!(*after, Duration::from_millis(300));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The next run works, on a replaced worker, under the same timeout.
    let got = p.run((0..4).map(|i| nap_pid::delayed(i, 1))).unwrap();
    assert_eq!(
        got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    let after: HashSet<u32> = p.worker_pids().into_iter().collect();
    assert_eq!(after.len(), 2);
    assert!(
        after.difference(&before).count() >= 1,
        "no worker was replaced"
    );
}

#[parjob::test]
fn a_timeout_on_threads_is_an_error_without_waiting_for_the_task() {
    // Job 1 runs until the test releases it, which the test does only once
    // `run` has returned: if `run` waited for the task, the job would end
    // by its own 60 s bound instead, and say so.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Arc::new(Mutex::new(released));
    let (ended, ending) = std::sync::mpsc::channel::<bool>();
    let jobs = (0..3u64).map(|i| {
        let released = Arc::clone(&released);
        let ended = ended.clone();
        Job::new(move || {
            if i == 1 {
                let gate = released.lock().unwrap();
                let by_test = gate.recv_timeout(Duration::from_secs(60)).is_ok();
                let _ = ended.send(by_test);
            }
            i
        })
    });
    let err = threads(2)
        .timeout(Duration::from_millis(200))
        .run(jobs)
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { index: 1, .. }), "{err:?}");
    release.send(()).unwrap();
    assert!(
        ending.recv().unwrap(),
        "the task ended on its own bound: run waited for it"
    );
}

#[parjob::test]
fn dropping_an_iterator_early_leaves_no_task_running() {
    let dir = common::scratch("scheduler", "drop");
    let p = process(2);
    // Item 0 is quick and leaves no trace; the others announce their
    // worker, then sleep 20 s.
    let quiet = dir.join("quiet");
    std::fs::create_dir_all(&quiet).unwrap();
    let jobs = (0..10u64).map(|i| match i {
        0 => announce::delayed(quiet.clone(), i, 0),
        _ => announce::delayed(dir.clone(), i, 20_000),
    });
    let mut it = p.iter(jobs);
    assert_eq!(it.next().unwrap().unwrap(), 0);
    // A worker is now running a 20 s task (the other is idle: a batch
    // waits for an idle worker, never behind a busy one); learn who runs
    // one, then drop.
    let deadline = Instant::now() + Duration::from_secs(10);
    let busy = loop {
        let pids: Vec<u32> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        if !pids.is_empty() || Instant::now() > deadline {
            break pids;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(!busy.is_empty(), "no worker announced its 20 s task");
    drop(it);
    for pid in busy {
        assert!(
            common::wait_dead(pid, Duration::from_secs(5)),
            "worker {pid} still runs after the iterator was dropped"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    // The pool is usable afterwards.
    assert_eq!(p.run((0..3).map(triple::delayed)).unwrap(), vec![0, 3, 6]);

    // Threads: jobs not yet started are skipped. All 100 are handed to
    // the pool at once; item 0 returns, the others hold their thread until
    // the test opens `gate`, after the drop. So at most item 0 and one
    // held job per thread ever start.
    let started = Arc::new(AtomicUsize::new(0));
    let gate = Event::new().unwrap();
    let (counter, held) = (Arc::clone(&started), gate.clone());
    let jobs = (0..100u64).map(move |i| {
        let (counter, held) = (Arc::clone(&counter), held.clone());
        Job::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            if i > 0 {
                held.wait_timeout(PATIENCE);
            }
            i
        })
    });
    let p = threads(2).batch_size(1).pre_dispatch(100);
    let mut it = p.iter(jobs);
    it.next().unwrap().unwrap();
    drop(it);
    gate.set();
    // The pool takes work first in, first out: once two jobs of a later
    // run have met on its two threads, every job of the dropped run has
    // been taken, and skipped or run.
    let (_, meet) = rendezvous(2);
    let met = p.run((0..2).map(|_| Job::new(meet.clone()))).unwrap();
    assert_eq!(met, [true, true]);
    let n = started.load(Ordering::SeqCst);
    assert!(
        n <= 3,
        "{n} of 100 jobs started: jobs were run after the iterator was dropped"
    );
}

#[parjob::test]
fn scoped_config_applies_to_map_and_nests_and_restores() {
    let me = std::thread::current().id();
    let ids = config()
        .backend(Backend::Sequential)
        .scope(|| where_am_i::map(0..20).unwrap());
    assert!(
        ids.iter().all(|t| *t == me),
        "map ignored the scoped backend"
    );
    let elsewhere = config().n_jobs(2).backend(Backend::Thread).scope(|| {
        let inner = config().n_jobs(1).scope(|| Parallel::new().plan().unwrap());
        assert_eq!(inner.backend, Backend::Sequential);
        let outer = Parallel::new().plan().unwrap();
        assert_eq!((outer.n_jobs, outer.backend), (2, Backend::Thread));
        // An explicit option wins over the scope.
        assert_eq!(Parallel::new().n_jobs(3).plan().unwrap().n_jobs, 3);
        where_am_i::map(0..200).unwrap()
    });
    assert!(elsewhere.iter().any(|t| *t != me));
    let guard = config().n_jobs(5).enter();
    assert_eq!(Parallel::new().plan().unwrap().n_jobs, 5);
    drop(guard);
    assert_eq!(Parallel::new().plan().unwrap().n_jobs, parjob::cpu_count());
}

#[test]
fn zero_options_are_config_errors_from_run_and_iter() {
    let job = || Job::new(|| 1u8);
    let cases = [
        threads(2).pre_dispatch(0),
        threads(2).batch_size(0),
        threads(2).timeout(Duration::ZERO),
        threads(2).require_sharedmem().backend(Backend::Process),
    ];
    for p in cases {
        assert!(matches!(p.run([job()]), Err(Error::Config(_))), "{p:?}");
        let mut it = p.iter([job()]);
        assert!(matches!(it.next(), Some(Err(Error::Config(_)))));
        assert!(it.next().is_none());
    }
}

#[test]
fn a_panicking_input_iterator_on_threads_is_an_error() {
    let p = threads(2);
    let err = p
        .run((0..10u32).map(|i| {
            assert!(i != 4, "no item four");
            Job::new(move || i)
        }))
        .unwrap_err();
    assert!(
        matches!(err, Error::InputPanicked { index: 4, .. }),
        "{err:?}"
    );
    assert_eq!(
        p.run((0..3u32).map(|i| Job::new(move || i))).unwrap(),
        vec![0, 1, 2]
    );
}

/// Run in a child copy of this test binary by `verbose_lines_are_joblib_style_and_few`.
#[parjob::test]
#[ignore = "helper: started by verbose_lines_are_joblib_style_and_few"]
fn verbose_helper() {
    let p = threads(2).verbose(2).timeout(Duration::from_secs(60));
    let got = p
        .run((0..50_000u64).map(|x| Job::new(move || x * 2)))
        .unwrap();
    assert_eq!(got.len(), 50_000);
    let slow = threads(2).verbose(2);
    slow.run((0..24u64).map(|_| Job::new(|| std::thread::sleep(Duration::from_millis(50)))))
        .unwrap();
    // joblib's scale: verbose = 50 is parjob's level 3. The pids the
    // workers report go to stdout, for the parent to compare.
    let pids = process(2)
        .verbose(50)
        .batch_size(1)
        .run((0..8).map(worker_pid::delayed))
        .unwrap();
    let pids: HashSet<u32> = pids.into_iter().collect();
    let mut pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    pids.sort();
    println!("PIDS {}", pids.join(" "));
}

#[parallel(backend = "process")]
fn worker_pid(_x: u64) -> u32 {
    std::process::id()
}

#[test]
fn verbose_lines_are_joblib_style_and_few() {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "verbose_helper",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "-q",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let me = child.id();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("[Parallel("))
        .collect();
    assert!(
        lines[0].starts_with(&format!(
            "[Parallel(n_jobs=2)]: Using the thread backend (from an explicit option) with 2 \
             threads in this process (pid {me}) for task `closure`"
        )),
        "{stderr}"
    );
    // The process run names its workers' pids: exactly those that ran it.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ran: Vec<&str> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PIDS "))
        .expect("the helper prints its workers' pids")
        .split(' ')
        .collect();
    let process_line = lines
        .iter()
        .find(|l| l.contains("Using the process backend"))
        .expect("a line for the process run");
    let named = process_line
        .split("(pids ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("the line names the pids");
    let mut named: Vec<&str> = named.split(", ").collect();
    named.sort();
    assert_eq!(named, ran, "{process_line}");
    assert!(
        process_line.contains("with 2 worker processes")
            && process_line.contains("::worker_pid`")
            && process_line.contains("(from an explicit option)"),
        "{process_line}"
    );
    assert!(lines[1].contains("cannot be stopped"), "{stderr}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Done 50000 tasks") && l.ends_with("finished")),
        "{stderr}"
    );
    assert!(
        lines.iter().any(|l| l.contains("| remaining: ~")),
        "{stderr}"
    );
    // Counts are padded to one width per run (joblib's pretty print).
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Done  24 tasks") && l.ends_with("finished")),
        "{stderr}"
    );
    // 50,024 jobs in about 1.5 s: a handful of lines, not one per job.
    assert!(lines.len() < 20, "{} lines:\n{stderr}", lines.len());
}

#[parjob::test]
fn a_progress_bar_does_not_change_results_on_any_backend() {
    for p in [process(2), threads(2), Parallel::new().n_jobs(1)] {
        let p = p.progress(true).verbose(1);
        let got = p.run((0..500).map(triple::delayed)).unwrap();
        assert_eq!(got, (0..500).map(|x| 3 * x).collect::<Vec<_>>());
        let streamed: Vec<u64> = p
            .iter((0..50).map(triple::delayed))
            .map(Result::unwrap)
            .collect();
        assert_eq!(streamed, (0..50).map(|x| 3 * x).collect::<Vec<_>>());
    }
}

#[parallel(backend = "process", n_jobs = 2)]
fn plus_one(x: u64) -> u64 {
    x + 1
}

#[parjob::test]
fn one_run_may_interleave_tasks_and_closures() {
    // Runs of 5, 10 or more jobs of each kind: batches split where the task
    // changes, each batch is decoded with its own task's decoder, and the
    // closures run in the parent.
    let kind = |i: u64| (i * i + 3 * i) % 3;
    let jobs = (0..600u64).map(|i| match kind(i / 5) {
        0 => triple::delayed(i),
        1 => plus_one::delayed(i),
        _ => Job::new(move || i * 100),
    });
    let expected: Vec<u64> = (0..600u64)
        .map(|i| match kind(i / 5) {
            0 => 3 * i,
            1 => i + 1,
            _ => i * 100,
        })
        .collect();
    for p in [process(2), process(2).batch_size(4), threads(2)] {
        let got = p.run(jobs.clone()).unwrap();
        assert_eq!(got, expected);
    }
}

#[parjob::test]
fn pre_dispatch_all_runs_everything_correctly() {
    for p in [process(2), threads(2)] {
        let p = p.pre_dispatch(PreDispatch::All);
        assert_eq!(p.plan().unwrap().pre_dispatch, usize::MAX);
        let got: Vec<u64> = p
            .iter((0..2_000).map(triple::delayed))
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, (0..2_000).map(|x| 3 * x).collect::<Vec<_>>());
    }
}

/// Run in a child copy of this test binary by `a_quiet_run_names_the_job_running_longest`.
#[parjob::test]
#[ignore = "helper: started by a_quiet_run_names_the_job_running_longest"]
fn still_running_helper() {
    // verbose = 3 reports after 2 s without a finished batch; item 3 takes 3 s.
    let p = Parallel::new()
        .n_jobs(2)
        .backend(Backend::Process)
        .batch_size(1)
        .verbose(3);
    let got = p
        .run((0..4u64).map(|i| nap::delayed(i, if i == 3 { 3_000 } else { 0 })))
        .unwrap();
    assert_eq!(got, vec![0, 1, 2, 3]);
}

#[test]
fn a_quiet_run_names_the_job_running_longest() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "still_running_helper",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "-q",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("still running:"))
        .unwrap_or_else(|| panic!("no still-running line in:\n{stderr}"));
    assert!(
        line.contains("task `scheduler::nap` on item 3 for"),
        "{line}"
    );
    assert!(line.contains("in worker "), "{line}");
    // The process backend names its frame limit up front.
    assert!(stderr.contains("frames of at most 1024 MiB"), "{stderr}");
}
