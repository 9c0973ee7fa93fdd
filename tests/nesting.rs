//! Nested runs follow joblib's rule against oversubscription: inside a
//! worker (process, MPI rank or thread of a run) a run defaults to
//! threads with that worker's share of the CPUs, one level deeper to
//! sequential, and under threads nothing starts worker processes unless
//! the nested run names the process backend itself.

use parjob::prelude::*;
use parjob::{Backend, BackendSource, NestedIn};

mod common;
#[path = "common/levels.rs"]
mod levels;
use levels::{describe, plans_from_here, Described};

/// The thread-count variables a worker sees, in `THREAD_VARS` order.
const THREAD_VARS: [&str; 7] = [
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "RAYON_NUM_THREADS",
];

/// In a worker process: the plans of three levels, and the variables.
#[parallel(backend = "process", n_jobs = 2)]
fn in_a_worker(depth: u32) -> (Vec<Described>, Vec<String>) {
    let vars = THREAD_VARS
        .iter()
        .map(|v| std::env::var(v).unwrap_or_default())
        .collect();
    (plans_from_here(depth), vars)
}

/// What a run at `level` inside `within`, given `cpus` of the machine's,
/// should plan.
fn expected(within: NestedIn, level: u8, cpus: usize) -> Described {
    let source = BackendSource::Nested {
        within,
        level,
        cpus,
        of: parjob::cpu_count(),
    };
    let backend = if level == 1 && cpus > 1 {
        Backend::Thread
    } else {
        Backend::Sequential
    };
    let n_jobs = cpus;
    (backend.to_string(), n_jobs, format!("{source:?}"))
}

/// The three levels below a run of two workers started at level 0.
fn three_levels(within: NestedIn) -> Vec<Described> {
    let share = (parjob::cpu_count() / 2).max(1);
    let deeper = (share / 2).max(1);
    let deepest = (deeper / 2).max(1);
    vec![
        expected(within, 1, share),
        expected(within, 2, deeper),
        expected(within, 3, deepest),
    ]
}

#[parjob::test]
fn inside_worker_processes_threads_then_sequential_with_the_share() {
    let out = in_a_worker::map([3u32, 3]).unwrap();
    let share = (parjob::cpu_count() / 2).max(1);
    for (plans, vars) in out {
        assert_eq!(plans, three_levels(NestedIn::ProcessWorker));
        assert_eq!(vars, vec![share.to_string(); THREAD_VARS.len()]);
    }
}

#[test]
fn inside_threads_threads_then_sequential_with_the_share() {
    let plans = Parallel::new()
        .n_jobs(2)
        .backend(Backend::Thread)
        .run([plans_from_here::delayed(3), plans_from_here::delayed(3)])
        .unwrap();
    for levels in plans {
        assert_eq!(levels, three_levels(NestedIn::Thread));
    }
}

#[test]
fn a_backend_named_for_the_nested_run_itself_wins() {
    let named = Parallel::new()
        .n_jobs(2)
        .backend(Backend::Thread)
        .run([named_inside::delayed(())])
        .unwrap();
    assert_eq!(named[0], ("thread".to_string(), 3, "Explicit".to_string()));
    let line = Parallel::new()
        .n_jobs(2)
        .backend(Backend::Thread)
        .run([source_line::delayed(())])
        .unwrap();
    let share = (parjob::cpu_count() / 2).max(1);
    assert_eq!(
        line[0],
        format!(
            "nested in a thread of a parjob run: {share} of {} CPUs",
            parjob::cpu_count()
        )
    );
}

/// An explicit three-thread run, nested.
#[parallel]
fn named_inside(_: ()) -> Described {
    describe(
        Parallel::new()
            .n_jobs(3)
            .backend(Backend::Thread)
            .plan()
            .unwrap(),
    )
}

/// What `verbose` names as the source of a nested run's backend.
#[parallel]
fn source_line(_: ()) -> String {
    Parallel::new().plan().unwrap().backend_source.to_string()
}

/// A task that prefers processes, and one whose attribute names them.
#[parallel(prefer = "processes")]
fn prefers_processes(x: u64) -> u32 {
    let _ = x;
    std::process::id()
}

#[parallel(backend = "process", n_jobs = 2)]
fn names_processes(x: u64) -> u32 {
    let _ = x;
    std::process::id()
}

/// Under a thread run, ten nested runs of each task.
#[parallel]
fn nested_runs(x: u64) -> Vec<u32> {
    let mut pids = prefers_processes::map(x..x + 4).unwrap();
    pids.extend(names_processes::map(x..x + 4).unwrap());
    pids
}

/// The processes this one has started and not yet reaped.
fn children() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .map(|task| {
            std::fs::read_to_string(task.unwrap().path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .count()
        })
        .sum()
}

#[parjob::test]
#[ignore = "helper: run by the test below in a process of its own"]
fn helper_nested_runs_under_threads() {
    let before = children();
    let pids = Parallel::new()
        .n_jobs(2)
        .backend(Backend::Thread)
        .run((0..10u64).map(nested_runs::delayed))
        .unwrap();
    let me = std::process::id();
    assert!(pids.iter().flatten().all(|&p| p == me), "{pids:?}");
    println!("children before={before} after={}", children());
}

#[test]
fn nested_runs_under_threads_start_no_processes() {
    let out = common::run_helper("helper_nested_runs_under_threads", &[]);
    assert!(out.contains("children before=0 after=0"), "{out}");
}

#[parjob::test]
#[ignore = "helper: run by the test below with NUMEXPR_NUM_THREADS set"]
fn helper_inner_max_num_threads() {
    let given = Parallel::new()
        .n_jobs(2)
        .backend(Backend::Process)
        .inner_max_num_threads(3)
        .run([in_a_worker::delayed(1)])
        .unwrap();
    let (plans, vars) = &given[0];
    println!("given plan={:?} vars={}", plans[0], vars.join(","));
    let from_env = in_a_worker::map([1u32]).unwrap();
    println!("env vars={}", from_env[0].1.join(","));
}

#[test]
fn inner_max_num_threads_sets_the_variables_and_the_nested_share() {
    let out = common::run_helper(
        "helper_inner_max_num_threads",
        &[
            ("NUMEXPR_NUM_THREADS", "5".as_ref()),
            ("PARJOB_INNER_MAX_NUM_THREADS", "4".as_ref()),
        ],
    );
    let plan = expected(NestedIn::ProcessWorker, 1, 3);
    // The variable the parent set is kept; the rest follow the option.
    assert!(
        out.contains(&format!("given plan={plan:?} vars=3,3,3,3,3,5,3")),
        "{out}"
    );
    assert!(out.contains("env vars=4,4,4,4,4,5,4"), "{out}");
}

#[test]
fn inner_max_num_threads_zero_is_refused() {
    let err = Parallel::new().inner_max_num_threads(0).plan().unwrap_err();
    assert!(
        err.to_string().contains("inner_max_num_threads = 0"),
        "{err}"
    );
}
