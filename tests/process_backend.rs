//! The process backend with real worker processes: results, pids, pool
//! reuse, faults (panic, abort, SIGKILL, codec, unknown task), cancellation,
//! worker environment, nesting, and no orphans.

mod common;
use common::{is_alive, process, wait_all_dead, wait_dead};

use parjob::__private::{Crossing, TaskCodecs};
use parjob::prelude::*;
use parjob::{Error, Task};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[parallel(backend = "process", n_jobs = 2)]
fn square(x: u64) -> u64 {
    x * x
}

#[parallel(backend = "process", n_jobs = 3)]
fn pid_of(_item: u64) -> u32 {
    std::process::id()
}

#[parallel(backend = "process", n_jobs = 2)]
fn panics_on_seven(x: u64) -> u64 {
    if x == 7 {
        panic!("item seven is cursed");
    }
    x
}

#[parallel(backend = "process", n_jobs = 2)]
fn aborts_on(x: u64, bad: u64) -> u64 {
    if x == bad {
        std::process::abort();
    }
    x
}

#[parallel(backend = "process", n_jobs = 2)]
fn exits_on(x: u64, bad: u64) -> u64 {
    if x == bad {
        std::process::exit(17);
    }
    x
}

/// Panics once a worker has announced itself in `dir`, so the failure
/// comes while that worker is busy.
#[parallel(backend = "process")]
fn panics_once_announced(dir: &Path) -> u64 {
    let since = Instant::now();
    while std::fs::read_dir(dir).map_or(0, |d| d.count()) == 0 {
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "nobody announced"
        );
        std::thread::yield_now();
    }
    panic!("the other worker is busy now")
}

/// Writes its pid into `dir` and sleeps, so a test can find and kill it;
/// then writes `<item>.done`, so a test can tell a task that finished from
/// one that was stopped.
#[parallel(backend = "process", n_jobs = 2)]
fn announce_and_sleep(dir: &Path, item: u64, millis: u64) -> u64 {
    std::fs::write(dir.join(format!("{}.pid", std::process::id())), b"").unwrap();
    std::thread::sleep(Duration::from_millis(millis));
    std::fs::write(dir.join(format!("{item}.done")), b"").unwrap();
    item
}

/// The items whose `announce_and_sleep` ran to its end.
fn finished_items(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".done")
                .map(String::from)
        })
        .collect()
}

#[parallel(backend = "process", n_jobs = 2)]
fn thread_env() -> Vec<Option<String>> {
    parjob_runtime_vars()
        .iter()
        .map(|v| std::env::var(v).ok())
        .collect()
}

fn parjob_runtime_vars() -> [&'static str; 5] {
    [
        "RAYON_NUM_THREADS",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "POLARS_MAX_THREADS",
    ]
}

#[parallel(backend = "process", n_jobs = 2)]
fn nested_sum(n: u64) -> (u64, String, bool) {
    // A Parallel inside a worker: threads by default.
    let p = Parallel::new().n_jobs(2);
    let backend = p.plan().unwrap().backend.to_string();
    let parts = p.run((0..n).map(|i| Job::new(move || i * 2))).unwrap();
    (parts.iter().sum(), backend, parjob::is_worker())
}

#[parallel(backend = "process", n_jobs = 2)]
fn join_words(words: &[String], sep: &str) -> String {
    words.join(sep)
}

fn scratch_dir(name: &str) -> PathBuf {
    common::scratch("test", name)
}
#[parjob::test]
fn a_thousand_tasks_come_back_correct_and_in_order() {
    let got = square::map(0..1000).unwrap();
    assert_eq!(got, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
}

#[parjob::test]
fn reference_parameters_are_owned_by_the_job() {
    let words: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let jobs = (0..3).map(|i| join_words::delayed(words[..=i].to_vec(), "-".to_string()));
    assert_eq!(process(2).run(jobs).unwrap(), vec!["a", "a-b", "a-b-c"]);
    // The function itself still takes references.
    assert_eq!(join_words(&words, "+"), "a+b+c");
}

#[parjob::test]
fn tasks_run_in_other_processes_and_the_pool_is_reused() {
    let p = process(3);
    let first = p.run((0..60).map(pid_of::delayed)).unwrap();
    let pids: HashSet<u32> = first.into_iter().collect();
    assert!(
        !pids.contains(&std::process::id()),
        "a task ran in the parent"
    );
    assert!(
        !pids.is_empty() && pids.len() <= 3,
        "{} distinct pids for n_jobs = 3",
        pids.len()
    );
    let workers: HashSet<u32> = p.worker_pids().into_iter().collect();
    assert!(pids.is_subset(&workers));

    let second: HashSet<u32> = p
        .run((0..60).map(pid_of::delayed))
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        second.is_subset(&workers),
        "the second run used new workers"
    );
    assert_eq!(p.worker_pids().into_iter().collect::<HashSet<_>>(), workers);
}

#[parjob::test]
fn a_panic_is_an_error_naming_the_task_item_message_and_location() {
    let err = panics_on_seven::map(0..20).unwrap_err();
    match &err {
        Error::Panic {
            task,
            index,
            message,
            location,
        } => {
            assert!(task.ends_with("::panics_on_seven"), "{task}");
            assert_eq!(*index, 7);
            assert_eq!(message, "item seven is cursed");
            assert!(
                location.as_deref().unwrap().contains("process_backend.rs"),
                "{location:?}"
            );
        }
        other => panic!("expected a panic error, got {other:?}"),
    }
    assert!(err.to_string().contains("item 7"), "{err}");
    // A panic does not kill the worker: the pool goes on.
    assert_eq!(panics_on_seven::map(0..5).unwrap(), vec![0, 1, 2, 3, 4]);
}

#[parjob::test]
fn an_abort_is_an_error_and_the_next_run_gets_new_workers() {
    let p = process(2);
    let err = p
        .run((0..10).map(|x| aborts_on::delayed(x, 4)))
        .unwrap_err();
    match &err {
        Error::WorkerDied {
            index,
            status,
            task,
            ..
        } => {
            assert_eq!(*index, 4);
            assert!(task.ends_with("::aborts_on"));
            assert!(status.contains("SIGABRT"), "{status}");
        }
        other => panic!("expected a dead worker, got {other:?}"),
    }
    assert_eq!(
        p.run((0..10).map(|x| aborts_on::delayed(x, 99))).unwrap(),
        (0..10).collect::<Vec<_>>()
    );
}

#[parjob::test]
fn process_exit_in_a_task_reports_the_exit_code() {
    let p = process(2);
    let err = p.run((0..6).map(|x| exits_on::delayed(x, 2))).unwrap_err();
    match err {
        Error::WorkerDied { index, status, .. } => {
            assert_eq!(index, 2);
            assert!(status.contains("code 17"), "{status}");
        }
        other => panic!("expected a dead worker, got {other:?}"),
    }
}

#[parjob::test]
fn a_worker_killed_with_sigkill_mid_run_is_an_error() {
    let dir = scratch_dir("sigkill");
    let killer_dir = dir.clone();
    let killer = std::thread::spawn(move || loop {
        let found = std::fs::read_dir(&killer_dir)
            .unwrap()
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".pid")?
                    .parse::<i32>()
                    .ok()
            })
            .next();
        if let Some(pid) = found {
            // SAFETY: kill(2) on a pid this test's worker wrote.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return pid as u32;
        }
        std::thread::sleep(Duration::from_millis(5));
    });
    let p = process(2);
    let err = p
        .run((0..4).map(|i| announce_and_sleep::delayed(dir.clone(), i, 20_000)))
        .unwrap_err();
    let killed = killer.join().unwrap();
    match err {
        Error::WorkerDied { pid, status, .. } => {
            assert_eq!(pid, killed);
            assert!(status.contains("SIGKILL"), "{status}");
        }
        other => panic!("expected a dead worker, got {other:?}"),
    }
    // The other worker was busy with a 20 s task: it was cancelled, not
    // awaited, so no task ran to its end.
    assert_eq!(finished_items(&dir), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&dir);
}

#[parjob::test]
fn the_first_error_cancels_the_rest_and_kills_busy_workers() {
    let dir = scratch_dir("cancel");
    let p = process(2);
    // Item 0 sleeps 30 s; item 1 panics once item 0's worker is busy.
    let jobs = (0..2u64).map(|i| {
        if i == 0 {
            announce_and_sleep::delayed(dir.clone(), 0, 30_000)
        } else {
            Job::call::<panics_once_announced>((dir.clone(),))
        }
    });
    let err = p.run(jobs).unwrap_err();
    assert!(matches!(err, Error::Panic { index: 1, .. }), "{err:?}");
    // The 30 s task was stopped, not awaited.
    assert_eq!(finished_items(&dir), Vec::<String>::new());
    // The worker that held the 30 s task was killed.
    let pids: Vec<u32> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".pid")?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(pids.len(), 1);
    assert!(
        wait_dead(pids[0], Duration::from_secs(5)),
        "the busy worker was left running"
    );
    assert_eq!(
        p.run((0..4).map(square::delayed)).unwrap(),
        vec![0, 1, 4, 9]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[parjob::test]
fn workers_get_their_share_of_threads_in_the_environment() {
    let got = process(2)
        .run((0..1).map(|_| thread_env::delayed()))
        .unwrap();
    let share = (parjob::cpu_count() / 2).max(1).to_string();
    for (var, value) in parjob_runtime_vars().iter().zip(&got[0]) {
        if std::env::var_os(var).is_none() {
            assert_eq!(value.as_deref(), Some(share.as_str()), "{var}");
        }
    }
}

#[parjob::test]
fn a_nested_parallel_inside_a_worker_runs_on_threads() {
    let got = nested_sum::map([10u64, 100]).unwrap();
    assert_eq!(got[0], (90, "thread".to_string(), true));
    assert_eq!(got[1].0, 9900);
    assert!(!parjob::is_worker());
}

/// A task that was never registered in the worker.
struct Unregistered;

impl Task for Unregistered {
    const NAME: &'static str = "nowhere::unregistered";
    type Args = (u64,);
    type Output = u64;
    fn call(args: (u64,)) -> u64 {
        args.0
    }
    fn options() -> parjob::Options {
        parjob::Options::default()
    }
}

impl Crossing<(u64,), u64> for Unregistered {
    fn codecs() -> Option<TaskCodecs<(u64,), u64>> {
        Some(TaskCodecs::serde())
    }
}

/// Claims `square`'s name with another argument type.
struct WrongArgs;

impl Task for WrongArgs {
    const NAME: &'static str = <square as Task>::NAME;
    type Args = (String, String);
    type Output = u64;
    fn call(_: (String, String)) -> u64 {
        0
    }
    fn options() -> parjob::Options {
        parjob::Options::default()
    }
}

impl Crossing<(String, String), u64> for WrongArgs {
    fn codecs() -> Option<TaskCodecs<(String, String), u64>> {
        Some(TaskCodecs::serde())
    }
}

#[parjob::test]
fn an_unknown_task_name_is_an_error_from_the_worker() {
    let err = process(2)
        .run((0..3).map(|i| Job::call::<Unregistered>((i,))))
        .unwrap_err();
    match err {
        Error::UnknownTask { task, index } => {
            assert_eq!(task, "nowhere::unregistered");
            assert!(index < 3);
        }
        other => panic!("expected an unknown task, got {other:?}"),
    }
}

#[parjob::test]
fn arguments_of_the_wrong_type_fail_to_decode_with_the_item() {
    let err = process(2)
        .run([Job::call::<WrongArgs>(("not".into(), "a number".into()))])
        .unwrap_err();
    match err {
        Error::Codec {
            task,
            index,
            action,
            ..
        } => {
            assert!(task.ends_with("::square"));
            assert_eq!(index, 0);
            assert!(action.contains("decode the arguments"), "{action}");
        }
        other => panic!("expected a codec error, got {other:?}"),
    }
}

/// Run in a child copy of this test binary by `no_worker_outlives_its_parent`:
/// starts workers, records their pids, then waits to be killed.
#[parjob::test]
#[ignore = "helper: started by no_worker_outlives_its_parent"]
fn orphan_parent_helper() {
    let out = std::env::var_os("PARJOB_TEST_ORPHAN_FILE").expect(
        "started by no_worker_outlives_its_parent, which names the file in PARJOB_TEST_ORPHAN_FILE",
    );
    let p = process(2);
    p.run((0..4).map(pid_of::delayed)).unwrap();
    let pids: Vec<String> = p.worker_pids().iter().map(u32::to_string).collect();
    std::fs::write(PathBuf::from(&out).with_extension("tmp"), pids.join(" ")).unwrap();
    std::fs::rename(PathBuf::from(&out).with_extension("tmp"), &out).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn no_worker_outlives_its_parent() {
    let dir = scratch_dir("orphans");
    let file = dir.join("pids");
    let mut parent = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "orphan_parent_helper",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "-q",
        ])
        .env("PARJOB_TEST_ORPHAN_FILE", &file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !file.exists() {
        assert!(
            Instant::now() < deadline,
            "the helper never wrote its workers' pids"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids: Vec<u32> = std::fs::read_to_string(&file)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| is_alive(p)));
    parent.kill().unwrap();
    parent.wait().unwrap();
    let left = wait_all_dead(&pids, Duration::from_secs(10));
    assert!(left.is_empty(), "workers {left:?} outlived their parent");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A value whose serialization always fails.
#[derive(Debug, Clone, serde::Deserialize)]
struct Unencodable;

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be encoded",
        ))
    }
}

#[parallel(backend = "process", n_jobs = 2)]
fn takes_unencodable(_x: Unencodable, i: u32) -> u32 {
    i
}

#[parjob::test]
fn arguments_that_fail_to_encode_are_an_error_naming_the_item() {
    let p = process(2);
    let err = p
        .run((0..5).map(|i| takes_unencodable::delayed(Unencodable, i)))
        .unwrap_err();
    match err {
        Error::Codec {
            task,
            index,
            action,
            cause,
        } => {
            assert!(task.ends_with("::takes_unencodable"));
            assert_eq!(index, 0);
            assert_eq!(action, "encode the arguments");
            assert!(cause.contains("refuses to be encoded"), "{cause}");
        }
        other => panic!("expected a codec error, got {other:?}"),
    }
    assert_eq!(p.run((0..3).map(square::delayed)).unwrap(), vec![0, 1, 4]);
}

#[parjob::test]
fn a_panicking_input_iterator_is_an_error_and_leaves_the_pool_usable() {
    let p = process(2);
    let dir = scratch_dir("input-dry");
    let err = p
        .run((0..20u64).map(|i| {
            assert!(i < 6, "the input ran dry");
            announce_and_sleep::delayed(dir.clone(), i, 50)
        }))
        .unwrap_err();
    match err {
        Error::InputPanicked { index, message } => {
            assert_eq!(index, 6);
            assert!(message.contains("the input ran dry"), "{message}");
        }
        other => panic!("expected the input's panic, got {other:?}"),
    }
    assert_eq!(
        p.run((0..4).map(square::delayed)).unwrap(),
        vec![0, 1, 4, 9]
    );
}

#[parallel(backend = "process", n_jobs = 2)]
fn shout(marker: String) -> u32 {
    println!("{marker} from worker {}", std::process::id());
    std::process::id()
}

/// Run in a child copy of this test binary by `worker_stdout_is_the_users`.
#[parjob::test]
#[ignore = "helper: started by worker_stdout_is_the_users"]
fn stdout_helper() {
    let pids = shout::map(["parjob-marker-1".to_string(), "parjob-marker-2".to_string()]).unwrap();
    println!("helper {} workers {pids:?}", std::process::id());
}

#[test]
fn worker_stdout_is_the_users() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "stdout_helper",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "-q",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let helper_line = stdout.lines().find(|l| l.starts_with("helper ")).unwrap();
    let helper_pid = helper_line.split_whitespace().nth(1).unwrap();
    for marker in ["parjob-marker-1", "parjob-marker-2"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(marker))
            .unwrap_or_else(|| panic!("{marker} missing from stdout:\n{stdout}"));
        let worker_pid = line.rsplit(' ').next().unwrap();
        assert_ne!(worker_pid, helper_pid, "{line}");
    }
}

#[parjob::test]
fn a_worker_killed_while_idle_is_replaced_without_failing_the_next_run() {
    let p = process(2);
    let first: HashSet<u32> = p
        .run((0..10).map(pid_of::delayed))
        .unwrap()
        .into_iter()
        .collect();
    let victim = p.worker_pids()[0];
    // SAFETY: kill(2) on one of this runner's idle workers.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    assert!(wait_dead(victim, Duration::from_secs(5)));
    let second: HashSet<u32> = p
        .run((0..10).map(pid_of::delayed))
        .unwrap()
        .into_iter()
        .collect();
    assert!(!second.contains(&victim));
    assert!(!first.is_empty());
    assert_eq!(p.worker_pids().len(), 2);
}

#[parallel(n_jobs = 2, backend = "loky")]
fn loky_pid(_x: u64) -> u32 {
    std::process::id()
}

#[parjob::test]
fn joblibs_backend_names_mean_the_same_in_the_attribute_and_the_runtime() {
    let pids = loky_pid::map(0..4).unwrap();
    assert!(
        pids.iter().all(|pid| *pid != std::process::id()),
        "{pids:?}"
    );
    assert_eq!("loky".parse::<Backend>().unwrap(), Backend::Process);
    assert_eq!(" Threading ".parse::<Backend>().unwrap(), Backend::Thread);
}

/// Where each of this worker's descriptors points.
#[parallel(backend = "process", n_jobs = 2)]
fn open_files(_item: u8) -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

#[parjob::test]
fn a_descriptor_the_parent_holds_without_cloexec_does_not_reach_workers() {
    let probe = scratch_dir("leak-probe").join("probe");
    std::fs::write(&probe, b"").unwrap();
    let path = std::ffi::CString::new(probe.to_str().unwrap()).unwrap();
    // SAFETY: open(2) without O_CLOEXEC, as a shell's inherited descriptor.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0);
    let seen = open_files::map([1u8, 2]);
    // SAFETY: our own descriptor, closed once.
    unsafe { libc::close(fd) };
    std::fs::remove_file(&probe).unwrap();
    for files in seen.unwrap() {
        assert!(
            !files.iter().any(|f| f.contains("parjob-leak-probe")),
            "a worker holds the parent's descriptor: {files:?}"
        );
    }
}
