//! `speculate`: a job running far longer than its task's median gets a
//! copy on an idle worker, the first to finish wins, and the loser's
//! worker is stopped. Item 7's first attempt waits on an event that the
//! test sets only after the run returned, so the tests are causal: with
//! `speculate` the run cannot have waited for it; without, it must have.

mod common;

use parjob::prelude::*;
use parjob::sync::Event;
use std::path::Path;
use std::time::Duration;

/// Far longer than any run here needs.
const PATIENCE: Duration = Duration::from_secs(60);

/// Item 7's first attempt records its pid and waits for `gate`; every
/// other attempt takes 10 ms and records that it finished.
#[parallel(backend = "process", n_jobs = 2, speculate = true, verbose = 1)]
fn straggles_on_7(i: u64, gate: Event, dir: &Path) -> u64 {
    let first = dir.join("7.first");
    if i == 7 && !first.exists() {
        std::fs::write(&first, std::process::id().to_string()).unwrap();
        gate.wait_timeout(PATIENCE);
        std::fs::write(dir.join("7.first-finished"), b"").unwrap();
    } else {
        std::thread::sleep(Duration::from_millis(10));
        std::fs::write(dir.join(format!("{i}.done")), b"").unwrap();
    }
    i
}

fn items(gate: &Event, dir: &Path) -> Vec<(u64, Event, std::path::PathBuf)> {
    (0..40u64)
        .map(|i| (i, gate.clone(), dir.to_path_buf()))
        .collect()
}

#[test]
fn a_straggler_is_copied_and_the_copy_wins() {
    let stderr = common::run_helper_stderr("speculated_run_helper");
    assert!(
        stderr.contains("[parjob] speculation: 1 job copied, 1 copy won"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("[parjob] speculating task").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("on item 7"), "{stderr}");
}

#[parjob::test]
#[ignore = "helper: started by a_straggler_is_copied_and_the_copy_wins"]
fn speculated_run_helper() {
    let dir = common::scratch("speculate", "copied");
    let gate = Event::new().unwrap();
    let out = straggles_on_7::map(items(&gate, &dir)).unwrap();
    assert_eq!(out, (0..40).collect::<Vec<_>>());
    // The run returned while the first attempt still waited: it never
    // finished, and its worker was stopped.
    assert!(!dir.join("7.first-finished").exists());
    assert!(dir.join("7.done").exists(), "the copy ran item 7");
    let pid: u32 = std::fs::read_to_string(dir.join("7.first"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        common::wait_dead(pid, PATIENCE),
        "the loser's worker was stopped"
    );
    gate.set();
}

#[parjob::test]
fn without_speculate_the_run_waits_for_the_straggler() {
    let dir = common::scratch("speculate", "waited");
    let gate = Event::new().unwrap();
    // The gate opens once the other 39 items are done; the run cannot
    // return before, since item 7 is never copied.
    let opener = {
        let (gate, dir) = (gate.clone(), dir.clone());
        std::thread::spawn(move || {
            let others = |d: &Path| {
                std::fs::read_dir(d)
                    .unwrap()
                    .filter(|e| {
                        e.as_ref()
                            .unwrap()
                            .file_name()
                            .to_string_lossy()
                            .ends_with(".done")
                    })
                    .count()
            };
            let deadline = std::time::Instant::now() + PATIENCE;
            while others(&dir) < 39 && std::time::Instant::now() < deadline {
                std::thread::yield_now();
            }
            gate.set();
        })
    };
    let run = straggles_on_7::with(|p| p.speculate(false).verbose(0));
    let out = run.map(items(&gate, &dir)).unwrap();
    opener.join().unwrap();
    assert_eq!(out, (0..40).collect::<Vec<_>>());
    assert!(
        dir.join("7.first-finished").exists(),
        "the straggler ran to its end"
    );
    assert!(!dir.join("7.done").exists(), "item 7 ran once");
}

#[test]
fn speculation_options_come_from_the_environment() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("PARJOB_SPECULATE", "1")], "ENV on 4"),
        (
            &[
                ("PARJOB_SPECULATE", "true"),
                ("PARJOB_SPECULATION_MULTIPLIER", "6"),
            ],
            "ENV on 6",
        ),
        (
            &[("PARJOB_SPECULATE", "maybe")],
            "PARJOB_SPECULATE=\"maybe\": expected true or false",
        ),
        (
            &[("PARJOB_SPECULATION_MULTIPLIER", "1")],
            "PARJOB_SPECULATION_MULTIPLIER=\"1\": expected a whole number, at least 2",
        ),
    ];
    for (env, expected) in cases {
        let out = common::helper_command("speculate_env_helper", env)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(expected), "{env:?}: {stdout}");
    }
}

#[parjob::test]
#[ignore = "helper: started by speculation_options_come_from_the_environment"]
fn speculate_env_helper() {
    match parjob::Options::new().resolve() {
        Ok(plan) => match plan.speculate {
            Some(k) => println!("ENV on {k}"),
            None => println!("ENV off"),
        },
        Err(e) => println!("ENV error {e}"),
    }
}

/// Item 7's first attempt waits for `gate`; its copy aborts its worker.
#[parallel(backend = "process", n_jobs = 2, speculate = true, verbose = 1)]
fn copy_dies_on_7(i: u64, gate: Event, dir: &Path) -> u64 {
    if i == 7 {
        if std::fs::create_dir(dir.join("7.first")).is_ok() {
            gate.wait_timeout(PATIENCE);
            return i;
        }
        std::fs::write(dir.join("7.copy"), std::process::id().to_string()).unwrap();
        std::process::abort();
    }
    std::thread::sleep(Duration::from_millis(10));
    i
}

#[test]
fn a_copy_whose_worker_dies_leaves_the_original_to_finish() {
    let stderr = common::run_helper_stderr("copy_dies_helper");
    assert!(
        stderr.contains("[parjob] speculation: 1 job copied, 0 copies won"),
        "{stderr}"
    );
}

#[parjob::test]
#[ignore = "helper: started by a_copy_whose_worker_dies_leaves_the_original_to_finish"]
fn copy_dies_helper() {
    let dir = common::scratch("speculate", "copy-dies");
    let gate = Event::new().unwrap();
    // The gate opens once the copy's worker is dead: the original then
    // finishes, and the run must not have failed with the copy.
    let opener = {
        let (gate, dir) = (gate.clone(), dir.clone());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + PATIENCE;
            let pid = loop {
                if let Ok(pid) = std::fs::read_to_string(dir.join("7.copy")) {
                    if let Ok(pid) = pid.parse::<u32>() {
                        break pid;
                    }
                }
                assert!(std::time::Instant::now() < deadline, "no copy started");
                std::thread::yield_now();
            };
            assert!(common::wait_dead(pid, PATIENCE));
            gate.set();
        })
    };
    let out = copy_dies_on_7::map(items(&gate, &dir)).unwrap();
    opener.join().unwrap();
    assert_eq!(out, (0..40).collect::<Vec<_>>());
}

/// On threads: item 7's first call waits for `gate` (set only after the
/// run returned); its copy, and every other call, take 10 ms.
#[parallel(n_jobs = 2, speculate = true, verbose = 1)]
fn thread_straggles_on_7(
    i: u64,
    gate: Event,
    first: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u64 {
    if i == 7 && !first.swap(true, std::sync::atomic::Ordering::SeqCst) {
        gate.wait_timeout(PATIENCE);
        return 1000; // a late result: dropped, never returned
    }
    std::thread::sleep(Duration::from_millis(10));
    i
}

#[test]
fn on_threads_a_late_job_is_copied_and_its_result_dropped() {
    let stderr = common::run_helper_stderr("thread_speculation_helper");
    // One run of single jobs, one of batches of 4 (the copy reruns the
    // whole late batch).
    assert_eq!(
        stderr
            .matches("[parjob] speculation: 1 job copied, 1 copy won")
            .count(),
        2,
        "{stderr}"
    );
    assert!(stderr.contains("on item 7"), "{stderr}");
}

#[parjob::test]
#[ignore = "helper: started by on_threads_a_late_job_is_copied_and_its_result_dropped"]
fn thread_speculation_helper() {
    let gate = Event::new().unwrap();
    let first = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let items = (0..40u64).map(|i| (i, gate.clone(), first.clone()));
    let out = thread_straggles_on_7::map(items).unwrap();
    // The copy's value, not the late first call's (which is still waiting).
    assert_eq!(out, (0..40).collect::<Vec<_>>());
    gate.set();
    let gate = Event::new().unwrap();
    let first = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let items = (0..40u64).map(|i| (i, gate.clone(), first.clone()));
    let run = thread_straggles_on_7::with(|p| p.batch_size(4));
    assert_eq!(run.map(items).unwrap(), (0..40).collect::<Vec<_>>());
    gate.set();
}

#[test]
fn a_copy_runs_the_rest_of_a_late_batch() {
    let stderr = common::run_helper_stderr("batched_speculation_helper");
    assert!(
        stderr.contains("[parjob] speculation: 1 job copied, 1 copy won"),
        "{stderr}"
    );
}

#[parjob::test]
#[ignore = "helper: started by a_copy_runs_the_rest_of_a_late_batch"]
fn batched_speculation_helper() {
    let dir = common::scratch("speculate", "batched");
    let gate = Event::new().unwrap();
    let run = straggles_on_7::with(|p| p.batch_size(4));
    let out = run.map(items(&gate, &dir)).unwrap();
    assert_eq!(out, (0..40).collect::<Vec<_>>());
    assert!(!dir.join("7.first-finished").exists());
    gate.set();
}
