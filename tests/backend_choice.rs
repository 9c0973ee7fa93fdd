//! Work runs where the user asked: a job remembers its task's backend,
//! work that cannot cross a process boundary is an error under a process
//! backend (or runs on threads with `require_sharedmem`), joblib's
//! `prefer` is a soft hint, and per-call options (`f::with`) win over the
//! rest. Each case is checked by the pid the work ran in.
//!
//! The environment level of the precedence rule is in `precedence.rs`,
//! which is a binary of its own because the environment is process-wide.

mod common;
use common::{process, threads};
use parjob::prelude::*;
use parjob::{config, BackendSource, Error, Prefer, Require};

/// The pid of the process that ran the call.
#[parallel(backend = "process", n_jobs = 2)]
fn process_pid(x: u64) -> (u64, u32) {
    (x, std::process::id())
}

/// A thread-only task: it has no `backend = "process"`.
#[parallel(n_jobs = 2)]
fn thread_pid(x: u64) -> (u64, u32) {
    (x, std::process::id())
}

/// A thread task that requires shared memory, as joblib's
/// `require="sharedmem"`.
#[parallel(n_jobs = 2, require = "sharedmem")]
fn sharedmem_pid(x: u64) -> (u64, u32) {
    (x, std::process::id())
}

/// A process task chosen by the soft hint only.
#[parallel(n_jobs = 2, prefer = "processes")]
fn preferred_pid(x: u64) -> (u64, u32) {
    (x, std::process::id())
}

fn pids(results: &[(u64, u32)]) -> Vec<u32> {
    results.iter().map(|&(_, pid)| pid).collect()
}

fn all_here(results: &[(u64, u32)]) -> bool {
    pids(results).iter().all(|&p| p == std::process::id())
}

fn none_here(results: &[(u64, u32)]) -> bool {
    !results.is_empty() && pids(results).iter().all(|&p| p != std::process::id())
}

#[parjob::test]
fn a_job_remembers_its_tasks_backend() {
    // `Parallel::new()` names no backend: the task's attribute decides.
    let got = Parallel::new()
        .run((0..6).map(process_pid::delayed))
        .unwrap();
    assert_eq!(
        got.iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5]
    );
    assert!(none_here(&got), "{got:?}");
    let plan_of_threads = Parallel::new().run((0..6).map(thread_pid::delayed));
    assert!(all_here(&plan_of_threads.unwrap()));
}

#[parjob::test]
fn closures_under_an_explicit_process_backend_are_an_error_naming_the_fix() {
    let p = process(2);
    let err = p
        .run((0..3).map(|i| Job::new(move || (i, std::process::id()))))
        .unwrap_err();
    match &err {
        Error::NotAProcessTask {
            task,
            index,
            backend_from,
        } => {
            assert_eq!((task.as_str(), *index), ("closure", 0));
            assert_eq!(backend_from, "an explicit option");
        }
        other => panic!("expected NotAProcessTask, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("require_sharedmem") && text.contains("backend = \"process\""));
    // Nothing was started for it.
    assert!(p.worker_pids().is_empty());
    // Opting in with joblib's require="sharedmem" runs it on threads here.
    let got = p
        .clone()
        .require_sharedmem()
        .run((0..3).map(|i| Job::new(move || (i, std::process::id()))));
    assert!(
        matches!(&got, Err(Error::Config(m)) if m.contains("sharedmem")),
        "explicit process + require is joblib's ValueError: {got:?}"
    );
    let got = threads(2)
        .require(Require::SharedMem)
        .run((0..3).map(|i| Job::new(move || (i, std::process::id()))))
        .unwrap();
    assert!(all_here(&got));
}

#[parjob::test]
fn a_thread_only_task_under_a_scoped_process_backend_is_an_error() {
    let err = config()
        .backend(Backend::Process)
        .scope(|| thread_pid::map(0..4))
        .unwrap_err();
    match err {
        Error::NotAProcessTask {
            task, backend_from, ..
        } => {
            assert!(task.ends_with("::thread_pid"), "{task}");
            assert_eq!(backend_from, "the scoped config()");
        }
        other => panic!("expected NotAProcessTask, got {other:?}"),
    }
    // require_sharedmem in the scope, or on the task, turns it into threads.
    let got = config()
        .backend(Backend::Process)
        .require_sharedmem()
        .scope(|| thread_pid::map(0..4))
        .unwrap();
    assert!(all_here(&got));
    let got = config()
        .backend(Backend::Process)
        .scope(|| sharedmem_pid::map(0..4))
        .unwrap();
    assert!(all_here(&got));
    let plan = config()
        .backend(Backend::Process)
        .scope(|| Parallel::new().require_sharedmem().n_jobs(2).plan())
        .unwrap();
    assert_eq!(
        (plan.backend, plan.backend_source),
        (Backend::Thread, BackendSource::RequireSharedmem)
    );
}

#[parjob::test]
fn a_mixed_run_follows_its_first_job_and_names_the_job_that_cannot_cross() {
    let jobs = (0..4u64).map(|i| {
        if i < 3 {
            process_pid::delayed(i)
        } else {
            thread_pid::delayed(i)
        }
    });
    let err = Parallel::new().batch_size(1).run(jobs).unwrap_err();
    match err {
        Error::NotAProcessTask {
            task,
            index,
            backend_from,
        } => {
            assert!(task.ends_with("::thread_pid"), "{task}");
            assert_eq!(index, 3);
            assert_eq!(backend_from, "the task's attribute");
        }
        other => panic!("expected NotAProcessTask, got {other:?}"),
    }
    // Led by a thread task, the same mix runs on threads.
    let jobs = (0..4u64).map(|i| {
        if i == 0 {
            thread_pid::delayed(i)
        } else {
            process_pid::delayed(i)
        }
    });
    assert!(all_here(&Parallel::new().run(jobs).unwrap()));
}

#[parjob::test]
fn prefer_is_a_soft_hint() {
    // Alone, it picks processes for a task that can cross...
    assert!(none_here(&preferred_pid::map(0..4).unwrap()));
    // ...but any named backend wins over it,
    let got = config()
        .backend(Backend::Thread)
        .scope(|| preferred_pid::map(0..4))
        .unwrap();
    assert!(all_here(&got));
    // and it never sends work that cannot cross to processes.
    let got = Parallel::new()
        .n_jobs(2)
        .prefer(Prefer::Processes)
        .run((0..3).map(|i| Job::new(move || (i, std::process::id()))))
        .unwrap();
    assert!(all_here(&got));
    let plan = Parallel::new()
        .n_jobs(2)
        .prefer("threads".parse().unwrap())
        .plan()
        .unwrap();
    assert_eq!(
        (plan.backend, plan.backend_source),
        (Backend::Thread, BackendSource::Prefer)
    );
}

#[parjob::test]
fn per_call_options_win_without_leaving_the_attribute_form() {
    // The attribute says processes; `with` says threads for this call.
    let got = process_pid::with(|p| p.backend(Backend::Thread))
        .map(0..5)
        .unwrap();
    assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert!(all_here(&got));
    // ...and wins over a scope, too.
    let got = config()
        .backend(Backend::Thread)
        .scope(|| process_pid::with(|p| p.backend(Backend::Process)).map(0..5))
        .unwrap();
    assert!(none_here(&got));
    // A run-time n_jobs and a timeout, with the attribute's backend.
    let n = 1;
    let got = process_pid::with(|p| p.n_jobs(n).timeout(std::time::Duration::from_secs(60)))
        .map(0..3)
        .unwrap();
    assert!(all_here(&got), "n_jobs = 1 runs in sequence, here");
    // The generator shapes, per call.
    let ordered: Vec<u64> = thread_pid::with(|p| p.n_jobs(2))
        .iter(0..4)
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(ordered, [0, 1, 2, 3]);
    let mut unordered: Vec<usize> = thread_pid::with(|p| p)
        .iter_unordered(0..4)
        .map(|r| r.unwrap().0)
        .collect();
    unordered.sort_unstable();
    assert_eq!(unordered, [0, 1, 2, 3]);
}

#[parjob::test]
fn n_jobs_minus_two_on_two_cpus_is_sequential_with_one_worker() {
    let plan = Parallel::new()
        .n_jobs(-(parjob::cpu_count() as i32))
        .plan()
        .unwrap();
    assert_eq!(plan.n_jobs, 1);
    assert_eq!(plan.n_jobs_asked, -(parjob::cpu_count() as i32));
    assert_eq!(
        (plan.backend, plan.backend_source),
        (Backend::Sequential, BackendSource::OneJob)
    );
}
