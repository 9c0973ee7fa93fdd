//! PARJOB_N_JOBS, PARJOB_BACKEND and PARJOB_MAX_CPU_COUNT. One test, because
//! the environment is process-wide.

use parjob::prelude::*;
use parjob::Error;

#[test]
fn environment_defaults_apply_and_explicit_options_win() {
    std::env::set_var("PARJOB_N_JOBS", "3");
    std::env::set_var("PARJOB_BACKEND", "sequential");
    let r = Parallel::new().plan().unwrap();
    // n_jobs = 3 with the sequential backend: runs in this thread.
    assert_eq!((r.n_jobs, r.backend), (3, Backend::Sequential));
    let me = std::thread::current().id();
    let ids = Parallel::new()
        .run((0..4).map(|_| Job::new(|| std::thread::current().id())))
        .unwrap();
    assert!(ids.iter().all(|t| *t == me));

    // Explicit options win over the environment.
    let r = Parallel::new()
        .n_jobs(2)
        .backend(Backend::Thread)
        .plan()
        .unwrap();
    assert_eq!((r.n_jobs, r.backend), (2, Backend::Thread));

    std::env::set_var("PARJOB_BACKEND", "gpu");
    let err = Parallel::new().plan().unwrap_err();
    assert!(
        matches!(err, Error::Config(ref m) if m.contains("gpu")),
        "{err}"
    );
    std::env::set_var("PARJOB_BACKEND", "thread");
    std::env::set_var("PARJOB_N_JOBS", "many");
    assert!(matches!(Parallel::new().plan(), Err(Error::Config(_))));
    std::env::remove_var("PARJOB_N_JOBS");
    std::env::remove_var("PARJOB_BACKEND");

    std::env::set_var("PARJOB_MAX_CPU_COUNT", "1");
    assert_eq!(parjob::cpu_count(), 1);
    assert_eq!(Parallel::new().plan().unwrap().backend, Backend::Sequential);
    std::env::remove_var("PARJOB_MAX_CPU_COUNT");
    assert!(parjob::cpu_count() >= 1);
}
