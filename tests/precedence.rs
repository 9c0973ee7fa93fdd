//! The one precedence rule, level by level: explicit (builder or per-call)
//! over scoped `config()`, over the task's attribute, over the `PARJOB_*`
//! environment, over the built-in default. The tests take turns, because
//! the environment is process-wide.

use parjob::prelude::*;
use parjob::{config, BackendSource};
use std::collections::HashSet;
use std::time::Duration;

#[parallel(backend = "process", n_jobs = 3, timeout = 60)]
fn pid_of(_x: u64) -> u32 {
    std::process::id()
}

/// The environment is process-wide: one test at a time changes it.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

fn ran_here(pids: &[u32]) -> bool {
    pids.iter().all(|&p| p == std::process::id())
}

fn ran_in_workers(pids: &[u32], at_most: usize) -> bool {
    let distinct: HashSet<&u32> = pids.iter().collect();
    !pids.is_empty() && !pids.contains(&std::process::id()) && distinct.len() <= at_most
}

#[parjob::test]
fn each_level_wins_over_the_next() {
    let _turn = one_at_a_time();
    std::env::remove_var("PARJOB_N_JOBS");
    std::env::remove_var("PARJOB_BACKEND");
    // 5. The built-in default.
    let plan = Parallel::new().plan().unwrap();
    let default_backend = if parjob::cpu_count() == 1 {
        (Backend::Sequential, BackendSource::OneJob)
    } else {
        (Backend::Thread, BackendSource::Default)
    };
    assert_eq!(plan.n_jobs, parjob::cpu_count());
    assert_eq!((plan.backend, plan.backend_source), default_backend);

    // 4. The environment wins over the default.
    std::env::set_var("PARJOB_N_JOBS", "2");
    std::env::set_var("PARJOB_BACKEND", "sequential");
    let plan = Parallel::new().plan().unwrap();
    assert_eq!(
        (plan.n_jobs, plan.backend, plan.backend_source),
        (2, Backend::Sequential, BackendSource::Environment)
    );
    assert_eq!(plan.timeout, None);
    // joblib's backend names work in the environment too.
    for (name, backend) in [("loky", Backend::Process), ("threading", Backend::Thread)] {
        std::env::set_var("PARJOB_BACKEND", name);
        assert_eq!(Parallel::new().plan().unwrap().backend, backend, "{name}");
    }
    std::env::set_var("PARJOB_BACKEND", "sequential");

    // 3. The task's attribute wins over the environment.
    let plan = pid_of::with(|p| p).plan().unwrap();
    assert_eq!(
        (plan.n_jobs, plan.backend, plan.backend_source),
        (3, Backend::Process, BackendSource::Task)
    );
    assert_eq!(plan.timeout, Some(Duration::from_secs(60)));
    assert!(ran_in_workers(&pid_of::map(0..9).unwrap(), 3));
    // ...also for its jobs in a `Parallel` that names no backend.
    let jobs = Parallel::new().run((0..9).map(pid_of::delayed)).unwrap();
    assert!(ran_in_workers(&jobs, 3));

    // 2. A scoped config() wins over the task's attribute.
    let scope = config()
        .n_jobs(2)
        .backend(Backend::Thread)
        .timeout(Duration::from_secs(5));
    let plan = scope.scope(|| pid_of::with(|p| p).plan().unwrap());
    assert_eq!(
        (plan.n_jobs, plan.backend, plan.backend_source),
        (2, Backend::Thread, BackendSource::Scoped)
    );
    assert_eq!(plan.timeout, Some(Duration::from_secs(5)));
    assert!(ran_here(&scope.scope(|| pid_of::map(0..9)).unwrap()));

    // 1. Explicit options win over the scope: per call, and on a builder.
    let plan = scope.scope(|| {
        pid_of::with(|p| p.n_jobs(2).backend(Backend::Process))
            .plan()
            .unwrap()
    });
    assert_eq!(
        (plan.n_jobs, plan.backend, plan.backend_source),
        (2, Backend::Process, BackendSource::Explicit)
    );
    assert_eq!(
        plan.timeout,
        Some(Duration::from_secs(5)),
        "unset: from the scope"
    );
    let per_call = scope.scope(|| pid_of::with(|p| p.backend(Backend::Process)).map(0..9));
    assert!(ran_in_workers(&per_call.unwrap(), 2));
    let builder = scope.scope(|| {
        Parallel::new()
            .backend(Backend::Process)
            .run((0..9).map(pid_of::delayed))
    });
    assert!(ran_in_workers(&builder.unwrap(), 2));

    std::env::remove_var("PARJOB_N_JOBS");
    std::env::remove_var("PARJOB_BACKEND");
}

/// A task whose attribute turns shared memory off and names a folder.
#[parallel(
    backend = "process",
    max_nbytes = "none",
    temp_folder = "/from/the/task"
)]
fn inline_only(x: u64) -> u64 {
    x
}

/// `max_nbytes` and `temp_folder` follow the same rule. Their variables
/// are read by no other test here.
#[parjob::test]
fn max_nbytes_and_temp_folder_follow_the_same_rule() {
    use parjob::{MaxNbytes, TempFolder};
    let _turn = one_at_a_time();
    std::env::remove_var("PARJOB_MAX_NBYTES");
    std::env::remove_var("PARJOB_TEMP_FOLDER");
    let plan = Parallel::new().plan().unwrap();
    assert_eq!((plan.max_nbytes, plan.temp_folder), (Some(1 << 20), None));
    std::env::set_var("PARJOB_MAX_NBYTES", "4K");
    std::env::set_var("PARJOB_TEMP_FOLDER", "/from/the/env");
    let plan = Parallel::new().plan().unwrap();
    assert_eq!(plan.max_nbytes, Some(4096));
    assert_eq!(plan.temp_folder, Some(TempFolder::new("/from/the/env")));
    // The task's attribute wins over the environment.
    let plan = inline_only::with(|p| p).plan().unwrap();
    assert_eq!(plan.max_nbytes, None);
    assert_eq!(plan.temp_folder, Some(TempFolder::new("/from/the/task")));
    // A scoped config() wins over the attribute, and f::with over both.
    let scope = config().max_nbytes(8192u64).temp_folder("/from/the/scope");
    let plan = scope.scope(|| inline_only::with(|p| p).plan()).unwrap();
    assert_eq!(plan.max_nbytes, Some(8192));
    assert_eq!(plan.temp_folder, Some(TempFolder::new("/from/the/scope")));
    let explicit = scope.scope(|| inline_only::with(|p| p.max_nbytes(MaxNbytes::Bytes(16))).plan());
    assert_eq!(explicit.unwrap().max_nbytes, Some(16));
    // A bad value in the environment is an error that names it.
    std::env::set_var("PARJOB_MAX_NBYTES", "lots");
    let err = Parallel::new().plan().unwrap_err().to_string();
    assert!(err.contains("PARJOB_MAX_NBYTES"), "{err}");
    std::env::remove_var("PARJOB_MAX_NBYTES");
    std::env::remove_var("PARJOB_TEMP_FOLDER");
}
