//! The thread and sequential backends, and the runner's joblib semantics.

mod common;
use common::rendezvous;
use parjob::prelude::*;
use parjob::Error;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[parallel(n_jobs = 3)]
fn cube(x: i64) -> i64 {
    x * x * x
}

#[parallel(n_jobs = 2, backend = "sequential")]
fn thread_of(_x: u32) -> std::thread::ThreadId {
    std::thread::current().id()
}

#[parallel(n_jobs = 2)]
fn weighted(x: f64, w: f64, label: &str) -> String {
    format!("{label}={}", x * w)
}

#[parallel(n_jobs = 2)]
fn forty_two() -> u8 {
    42
}

#[parallel(n_jobs = 2)]
fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[parallel(n_jobs = 2)]
fn fails_on_seven(x: u32) -> u32 {
    assert_ne!(x, 7, "seven is not allowed");
    x
}

#[test]
fn a_thousand_tasks_are_correct_and_ordered_on_threads() {
    let got = cube::map(-500..500).unwrap();
    assert_eq!(got, (-500..500i64).map(|x| x * x * x).collect::<Vec<_>>());
    let p = Parallel::new().n_jobs(4).backend(Backend::Thread);
    let again = p.run((-500..500).map(cube::delayed)).unwrap();
    assert_eq!(again, got);
}

#[test]
fn a_thousand_tasks_are_correct_and_ordered_in_sequence_in_the_callers_thread() {
    let me = std::thread::current().id();
    let got = thread_of::map(0..1000).unwrap();
    assert_eq!(got.len(), 1000);
    assert!(got.iter().all(|t| *t == me));
    let p = Parallel::new().backend(Backend::Sequential);
    let squares = p
        .run((0..1000u64).map(|x| Job::new(move || x * x)))
        .unwrap();
    assert_eq!(squares, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
}

#[test]
fn n_jobs_one_is_sequential_whatever_the_backend() {
    let me = std::thread::current().id();
    let p = Parallel::new().n_jobs(1).backend(Backend::Thread);
    let ids = p
        .run((0..10).map(|_| Job::new(|| std::thread::current().id())))
        .unwrap();
    assert!(ids.iter().all(|t| *t == me));
}

#[test]
fn several_parameters_take_tuples_and_references_take_owned_values() {
    let got = weighted::map([(1.0, 2.0, "a".to_string()), (3.0, 0.5, "b".to_string())]).unwrap();
    assert_eq!(got, vec!["a=2", "b=1.5"]);
    assert_eq!(forty_two::map([(), ()]).unwrap(), vec![42, 42]);
    let rows = vec![vec![1.0, 3.0], vec![2.0, 4.0, 6.0]];
    assert_eq!(mean::map(rows.clone()).unwrap(), vec![2.0, 4.0]);
    // The function is still callable with references.
    assert_eq!(mean(&rows[1]), 4.0);
    assert_eq!(weighted(2.0, 2.0, "c"), "c=4");
}

#[test]
fn the_thread_pool_has_exactly_n_jobs_threads() {
    let p = Parallel::new().n_jobs(3).backend(Backend::Thread);
    // Three jobs can all be running at once, on three threads...
    let (_, wait) = rendezvous(3);
    let met = p
        .run((0..3).map(|_| {
            let wait = wait.clone();
            Job::new(move || (wait(), std::thread::current().id()))
        }))
        .unwrap();
    assert!(
        met.iter().all(|(m, _)| *m),
        "fewer than 3 threads ran at once"
    );
    let three: HashSet<_> = met.into_iter().map(|(_, id)| id).collect();
    assert_eq!(three.len(), 3);
    assert!(!three.contains(&std::thread::current().id()));
    // ...and no thread but those three ever runs them.
    let ids: HashSet<_> = p
        .run((0..300).map(|_| Job::new(|| std::thread::current().id())))
        .unwrap()
        .into_iter()
        .collect();
    assert!(ids.is_subset(&three), "{ids:?} is not within {three:?}");
}

#[test]
fn a_panic_on_a_thread_is_an_error_with_message_and_location() {
    let err = fails_on_seven::map(0..20).unwrap_err();
    match &err {
        Error::Panic {
            task,
            index,
            message,
            location,
        } => {
            assert!(task.ends_with("::fails_on_seven"), "{task}");
            assert_eq!(*index, 7);
            assert!(message.contains("seven is not allowed"), "{message}");
            assert!(location.as_deref().unwrap().contains("thread_backend.rs"));
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    // The pool is still usable.
    assert_eq!(fails_on_seven::map(0..3).unwrap(), vec![0, 1, 2]);
}

#[test]
fn the_first_error_on_threads_stops_jobs_not_yet_started() {
    // Jobs after item 3 wait at a gate that opens only once `run` has
    // returned, so every job that started did so before the error ended
    // the run; the rest must never start.
    let started = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let (woke, wakes) = std::sync::mpsc::channel::<bool>();
    let p = Parallel::new()
        .n_jobs(2)
        .backend(Backend::Thread)
        .batch_size(1);
    let (counter, wait) = (Arc::clone(&started), Arc::clone(&gate));
    let jobs = (0..200u32).map(move |i| {
        let (counter, wait, woke) = (Arc::clone(&counter), Arc::clone(&wait), woke.clone());
        Job::new(move || {
            if i == 3 {
                panic!("stop here");
            }
            if i > 3 {
                counter.fetch_add(1, Ordering::SeqCst);
                let (open, opened) = &*wait;
                let guard = open.lock().unwrap();
                let (_open, waited) = opened
                    .wait_timeout_while(guard, Duration::from_secs(60), |open| !*open)
                    .unwrap();
                let _ = woke.send(!waited.timed_out());
            }
            i
        })
    });
    let err = p.run(jobs).unwrap_err();
    assert_eq!(err.index(), Some(3));
    let gated = started.load(Ordering::SeqCst);
    let (open, opened) = &*gate;
    *open.lock().unwrap() = true;
    opened.notify_all();
    assert!(
        gated < 16,
        "{gated} of 196 later jobs started before the error ended the run"
    );
    for _ in 0..gated {
        assert!(
            wakes.recv().unwrap(),
            "a job ended on its own bound: run waited for it"
        );
    }
}

#[test]
fn n_jobs_zero_is_a_config_error_and_negative_counts_back_from_the_cpus() {
    let err = Parallel::new()
        .n_jobs(0)
        .run((0..3).map(|x| Job::new(move || x)))
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("n_jobs = 0"));
    let cpus = parjob::cpu_count();
    assert_eq!(Parallel::new().n_jobs(-1).plan().unwrap().n_jobs, cpus);
    assert_eq!(
        Parallel::new().n_jobs(-2).plan().unwrap().n_jobs,
        (cpus - 1).max(1)
    );
}

#[test]
fn cpu_count_respects_the_affinity_mask() {
    let handle = std::thread::spawn(|| {
        // SAFETY: plain libc calls on a zeroed cpu_set_t for this thread only.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            assert_eq!(
                libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
                0
            );
        }
        (parjob::cpu_count(), parjob::effective_n_jobs(-1).unwrap())
    });
    assert_eq!(handle.join().unwrap(), (1, 1));
}

#[test]
fn a_parallel_nested_in_a_thread_task_works() {
    let outer = Parallel::new().n_jobs(2);
    let got = outer
        .run((0..4u64).map(|i| {
            Job::new(move || {
                let inner = Parallel::new().n_jobs(2);
                inner
                    .run((0..=i).map(|j| Job::new(move || j)))
                    .unwrap()
                    .into_iter()
                    .sum::<u64>()
            })
        }))
        .unwrap();
    assert_eq!(got, vec![0, 1, 3, 6]);
}

mod renamed {
    // A crate that re-exports parjob points the macro at it with `crate`.
    pub use ::parjob as engine;
}

#[parallel(n_jobs = 2, crate = "renamed::engine")]
fn via_renamed_path(x: u32) -> u32 {
    x + 1
}

#[test]
fn the_crate_option_points_expansions_at_another_path() {
    assert_eq!(via_renamed_path::map(0..3).unwrap(), vec![1, 2, 3]);
}
