//! `parjob::Pool` on real worker processes: CPython's `Pool` API, with
//! dead workers failing only their own tasks.

use parjob::pool::{Chunksize, OnWorkerDeath, Pool};
use parjob::prelude::*;
use parjob::shared::List;
use parjob::sync::Semaphore;
use parjob::Error;
use proptest::prop_assert_eq;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Long enough for anything here to finish; a wait past it is a hang.
const PATIENCE: Duration = Duration::from_secs(60);

#[parallel(backend = "process")]
fn square(x: u64) -> u64 {
    x * x
}

#[parallel(backend = "process")]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// The worker's pid and the item.
#[parallel(backend = "process")]
fn whose(x: u64) -> (u32, u64) {
    (std::process::id(), x)
}

#[parallel(backend = "process")]
fn fails_on(x: u64, bad: u64) -> u64 {
    assert_ne!(x, bad, "item {x} is bad");
    x
}

/// Dies by abort() on `bad`, returns `x` otherwise.
#[parallel(backend = "process")]
fn aborts_on(x: u64, bad: u64) -> u64 {
    if x == bad {
        std::process::abort();
    }
    x
}

#[parallel(backend = "process")]
fn killed_by_sigkill() -> u64 {
    // SAFETY: kill(2) on this process.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    0
}

/// Says it started (and its pid), then sleeps long.
#[parallel(backend = "process")]
fn sleep_long(started: Semaphore, pids: List<u32>) -> u32 {
    pids.push(&std::process::id()).unwrap();
    started.release();
    std::thread::sleep(PATIENCE);
    std::process::id()
}

#[parallel(backend = "process")]
fn nap(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(5));
    x
}

static TAG: AtomicU64 = AtomicU64::new(0);

#[parallel(backend = "process")]
fn set_tag(tag: u64) {
    TAG.store(tag + u64::from(std::process::id()), Ordering::SeqCst);
}

/// The worker's tag, as its initializer set it, and its pid.
#[parallel(backend = "process")]
fn read_tag() -> (u64, u32) {
    (TAG.load(Ordering::SeqCst), std::process::id())
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[parjob::test]
fn map_and_imap_equal_the_sequential_map() {
    use proptest::test_runner::{Config, TestRunner};
    let pool = Pool::new(2).unwrap();
    let cases = (proptest::collection::vec(0u64..1000, 0..200), 1usize..40);
    let mut runner = TestRunner::new(Config::with_cases(12));
    runner
        .run(&cases, |(xs, chunk)| {
            let want: Vec<u64> = xs.iter().map(|x| x * x).collect();
            prop_assert_eq!(&pool.map(square::delayed, xs.clone()).unwrap(), &want);
            let chunked = pool
                .chunksize(chunk)
                .map(square::delayed, xs.clone())
                .unwrap();
            prop_assert_eq!(&chunked, &want);
            let ordered: Vec<u64> = pool
                .imap(square::delayed, xs.clone())
                .map(Result::unwrap)
                .collect();
            prop_assert_eq!(&ordered, &want);
            let mut unordered: Vec<u64> = pool
                .chunksize(chunk)
                .imap_unordered(square::delayed, xs.clone())
                .map(Result::unwrap)
                .collect();
            unordered.sort_unstable();
            let mut sorted = want.clone();
            sorted.sort_unstable();
            prop_assert_eq!(unordered, sorted);
            Ok(())
        })
        .unwrap();
}

#[parjob::test]
fn starmap_apply_and_async_results() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(
        pool.starmap(add::delayed, [(1, 2), (3, 4)]).unwrap(),
        [3, 7]
    );
    assert_eq!(pool.apply(square::delayed(12)).unwrap(), 144);
    let later = pool.apply_async(square::delayed(5));
    later.wait();
    assert!(later.ready());
    assert_eq!(later.successful(), Some(true));
    assert_eq!(later.get().unwrap(), 25);
    let many = pool.map_async(square::delayed, 0..100);
    assert_eq!(many.get().unwrap()[99], 99 * 99);
    let pids: Vec<u32> = pool
        .map(whose::delayed, 0..20)
        .unwrap()
        .iter()
        .map(|p| p.0)
        .collect();
    assert!(
        pids.iter().all(|&p| p != std::process::id()),
        "ran in workers"
    );
}

#[parjob::test]
fn callbacks_run_on_one_thread_that_is_not_the_callers() {
    let pool = Pool::new(2).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let results: Vec<_> = (0..20)
        .map(|x| {
            let (ok, err) = (seen.clone(), seen.clone());
            pool.apply_async_with(
                fails_on::delayed(x, 7),
                move |v| {
                    ok.lock()
                        .unwrap()
                        .push((std::thread::current().id(), Some(*v)))
                },
                move |_| {
                    err.lock()
                        .unwrap()
                        .push((std::thread::current().id(), None))
                },
            )
        })
        .collect();
    for r in results {
        // The callback ran before the result was ready.
        let _ = r.get();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 20);
    assert_eq!(
        seen.iter().filter(|(_, v)| v.is_none()).count(),
        1,
        "item 7 failed"
    );
    let thread = seen[0].0;
    assert!(
        seen.iter().all(|(t, _)| *t == thread),
        "one callback thread"
    );
    assert_ne!(thread, std::thread::current().id());
}

#[parjob::test]
fn a_panicking_callback_is_logged_and_the_pool_goes_on() {
    let pool = Pool::new(1).unwrap();
    let r = pool.apply_async_with(square::delayed(3), |_| panic!("callback bug"), |_| ());
    assert_eq!(r.get().unwrap(), 9);
    assert_eq!(pool.apply(square::delayed(4)).unwrap(), 16);
}

#[parjob::test]
fn an_aborting_task_fails_alone_and_the_pool_goes_on() {
    let pool = Pool::new(2).unwrap();
    let started = Instant::now();
    let results: Vec<_> = (0..21)
        .map(|x| pool.apply_async(aborts_on::delayed(x, 10)))
        .collect();
    let mut failed = Vec::new();
    for (x, r) in results.into_iter().enumerate() {
        match r
            .get_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("task {x} hung"))
        {
            Ok(v) => assert_eq!(v, x as u64),
            Err(e) => failed.push((x, e)),
        }
    }
    assert_eq!(failed.len(), 1, "{failed:?}");
    let (x, e) = &failed[0];
    assert_eq!(*x, 10);
    match e {
        Error::WorkerDied {
            task, pid, status, ..
        } => {
            assert!(task.ends_with("aborts_on"), "{task}");
            assert_ne!(*pid, std::process::id());
            assert!(status.contains("SIGABRT"), "{status}");
        }
        other => panic!("not a worker death: {other}"),
    }
    eprintln!("21 tasks, one abort: {:?}", started.elapsed());
    assert_eq!(
        pool.map(square::delayed, 0..10).unwrap()[9],
        81,
        "the pool still works"
    );
}

#[parjob::test]
fn a_sigkilled_worker_names_its_task_pid_and_signal() {
    let pool = Pool::new(2).unwrap();
    let e = pool.apply(killed_by_sigkill::delayed()).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::WorkerDied { .. }), "{text}");
    assert!(
        text.contains("killed_by_sigkill") && text.contains("SIGKILL"),
        "{text}"
    );
    assert_eq!(pool.apply(square::delayed(2)).unwrap(), 4);
}

#[parjob::test]
fn a_broken_pool_fails_what_is_pending_and_what_comes() {
    let pool = Pool::builder()
        .processes(2)
        .on_worker_death(OnWorkerDeath::Break)
        .build()
        .unwrap();
    let dead = pool.apply_async(killed_by_sigkill::delayed());
    assert!(matches!(dead.get(), Err(Error::WorkerDied { .. })));
    let later = pool.apply(square::delayed(2)).unwrap_err();
    assert!(later.to_string().contains("broken"), "{later}");
}

#[parjob::test]
fn map_reports_the_first_error_with_the_items_own_index() {
    let pool = Pool::new(2).unwrap();
    let e = pool
        .chunksize(4)
        .map(|x| fails_on::delayed(x, 13), 0..40)
        .unwrap_err();
    match e {
        Error::Panic { index, message, .. } => {
            assert_eq!(index, 13);
            assert!(message.contains("item 13 is bad"), "{message}");
        }
        other => panic!("{other}"),
    }
}

#[parjob::test]
fn max_tasks_per_child_retires_workers_after_two_chunks() {
    let pool = Pool::builder()
        .processes(2)
        .max_tasks_per_child(2)
        .build()
        .unwrap();
    let ran = pool.chunksize(1).map(whose::delayed, 0..20).unwrap();
    let mut chunks_per_pid: HashMap<u32, usize> = HashMap::new();
    for (pid, _) in &ran {
        *chunks_per_pid.entry(*pid).or_default() += 1;
    }
    assert!(
        chunks_per_pid.values().all(|&n| n <= 2),
        "{chunks_per_pid:?}"
    );
    assert!(chunks_per_pid.len() >= 10, "{chunks_per_pid:?}");
}

#[parjob::test]
fn the_initializer_runs_once_in_each_worker_before_its_tasks() {
    let pool = Pool::builder()
        .processes(2)
        .initializer::<set_tag>((1000,))
        .build()
        .unwrap();
    for (tag, pid) in pool
        .chunksize(1)
        .map(|_| read_tag::delayed(), 0..10)
        .unwrap()
    {
        assert_eq!(
            tag,
            1000 + u64::from(pid),
            "the worker's own initializer ran"
        );
    }
}

#[parjob::test]
fn a_failing_initializer_fails_the_work_with_its_reason() {
    let pool = Pool::builder()
        .processes(1)
        .initializer::<fails_on>((3, 3))
        .build()
        .unwrap();
    let e = pool.apply(square::delayed(2)).unwrap_err().to_string();
    assert!(
        e.contains("initializer") && e.contains("item 3 is bad"),
        "{e}"
    );
}

#[parjob::test]
fn terminate_stops_sleeping_tasks_and_leaves_no_zombie() {
    let pool = Pool::new(2).unwrap();
    let started = Semaphore::new(0).unwrap();
    let pids = List::new().unwrap();
    let sleeping: Vec<_> = (0..2)
        .map(|_| pool.apply_async(sleep_long::delayed(started.clone(), pids.clone())))
        .collect();
    for _ in 0..2 {
        started
            .acquire_timeout(PATIENCE)
            .expect("both tasks started")
            .forget();
    }
    let children = pids.to_vec().unwrap();
    assert_eq!(children.len(), 2);
    pool.terminate();
    // Had terminate waited for the sleepers, their minute would have run
    // out and they would have returned their pids: they end as errors.
    for r in sleeping {
        let e = r.get().unwrap_err().to_string();
        assert!(e.contains("terminated"), "{e}");
    }
    for pid in children {
        assert!(
            !alive(pid),
            "worker {pid} is still in /proc (a zombie or alive)"
        );
    }
}

#[parjob::test]
fn close_and_join_drain_the_work_and_drop_leaves_no_process() {
    let pool = Pool::new(2).unwrap();
    let results: Vec<_> = (0..20).map(|x| pool.apply_async(nap::delayed(x))).collect();
    let pids: Vec<u32> = pool
        .map(whose::delayed, 0..4)
        .unwrap()
        .iter()
        .map(|p| p.0)
        .collect();
    pool.close();
    assert!(pool.apply(square::delayed(1)).is_err(), "closed");
    pool.join().unwrap();
    for (x, r) in results.into_iter().enumerate() {
        assert!(r.ready(), "join returned before task {x} ended");
        assert_eq!(r.get().unwrap(), x as u64);
    }
    drop(pool);
    for pid in pids {
        assert!(!alive(pid), "worker {pid} outlived its pool");
    }
}

#[parjob::test]
fn join_on_an_open_pool_is_an_error_not_a_hang() {
    let pool = Pool::new(1).unwrap();
    assert!(pool.join().is_err());
}

#[parjob::test]
fn imap_draws_only_buffersize_ahead_and_times_out_without_ending() {
    let pool = Pool::new(2).unwrap();
    let drawn = AtomicU64::new(0);
    let items = (0..1_000_000u64).inspect(|_| {
        drawn.fetch_add(1, Ordering::SeqCst);
    });
    let mut it = pool.chunksize(1).buffersize(8).imap(square::delayed, items);
    assert_eq!(it.next().unwrap().unwrap(), 0);
    assert!(
        drawn.load(Ordering::SeqCst) <= 9,
        "{} drawn",
        drawn.load(Ordering::SeqCst)
    );
    let first_ten: Vec<u64> = it.by_ref().take(9).map(Result::unwrap).collect();
    assert_eq!(first_ten[8], 81);
    drop(it);
    let slow_args = [(Semaphore::new(0).unwrap(), List::new().unwrap())];
    let mut slow = pool.imap(|(s, l)| sleep_long::delayed(s, l), slow_args);
    assert!(slow
        .next_timeout(Duration::from_millis(50))
        .unwrap()
        .is_err());
    pool.terminate();
}

#[parjob::test]
fn a_thread_pool_runs_the_same_tasks() {
    let pool = Pool::builder()
        .processes(2)
        .backend(Backend::Thread)
        .build()
        .unwrap();
    assert_eq!(pool.map(square::delayed, 0..10).unwrap()[3], 9);
    let (pid, _) = pool.apply(whose::delayed(1)).unwrap();
    assert_eq!(pid, std::process::id(), "threads run here");
    assert!(Pool::builder()
        .backend(Backend::Thread)
        .max_tasks_per_child(1)
        .build()
        .is_err());
}

#[parjob::test]
fn auto_chunks_give_the_same_results_and_errors() {
    let pool = Pool::new(2).unwrap();
    let auto = pool.chunksize(Chunksize::Auto);
    let want: Vec<u64> = (0..20_000u64).map(|x| x * x).collect();
    assert_eq!(auto.map(square::delayed, 0..20_000).unwrap(), want);
    assert_eq!(
        auto.map(square::delayed, Vec::new()).unwrap(),
        Vec::<u64>::new()
    );
    match auto
        .map(|x| fails_on::delayed(x, 5000), 0..20_000)
        .unwrap_err()
    {
        Error::Panic { index, .. } => assert_eq!(index, 5000),
        other => panic!("{other}"),
    }
}

#[parjob::test]
fn a_thread_pool_scope_lets_jobs_borrow() {
    let pool = Pool::builder()
        .processes(2)
        .backend(Backend::Thread)
        .build()
        .unwrap();
    let data: Vec<u64> = (0..1000).collect();
    let offset = 7u64; // borrowed by the closures below
    let (sums, one) = pool
        .scope(|s| {
            let sums = s.map(
                |chunk: &[u64]| chunk.iter().sum::<u64>() + offset,
                data.chunks(100),
            );
            let one = s.apply_async(|| data.len());
            (sums, one.get())
        })
        .unwrap();
    let want: Vec<u64> = data
        .chunks(100)
        .map(|c| c.iter().sum::<u64>() + offset)
        .collect();
    assert_eq!(sums.unwrap(), want);
    assert_eq!(one.unwrap(), 1000);
    let failed = pool
        .scope(|s| s.map(|x: &u64| assert!(*x != 500, "item {x}"), &data))
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(failed, Error::Panic { index: 500, .. }),
        "{failed}"
    );
    let processes = Pool::new(1).unwrap();
    assert!(processes.scope(|_| ()).is_err(), "processes cannot borrow");
}

#[parjob::test]
fn a_slow_callback_never_stalls_the_workers() {
    let pool = Pool::new(2).unwrap();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let slow = pool.apply_async_with(square::delayed(2), move |_| held.recv().unwrap(), |_| ());
    // The callback thread is stuck in the callback; work goes on.
    assert_eq!(pool.map(square::delayed, 0..100).unwrap()[10], 100);
    assert!(!slow.ready(), "ready only once its callback ran");
    release.send(()).unwrap();
    assert_eq!(slow.get().unwrap(), 4);
}

#[parjob::test]
fn terminate_on_drop_stops_running_tasks() {
    let pool = Pool::builder()
        .processes(1)
        .terminate_on_drop(true)
        .build()
        .unwrap();
    let started = Semaphore::new(0).unwrap();
    let pids = List::new().unwrap();
    let sleeping = pool.apply_async(sleep_long::delayed(started.clone(), pids.clone()));
    started
        .acquire_timeout(PATIENCE)
        .expect("the task started")
        .forget();
    drop(pool);
    // A drop that waited would have let the task return its pid.
    assert!(sleeping
        .get()
        .unwrap_err()
        .to_string()
        .contains("terminated"));
    assert!(!alive(pids.to_vec().unwrap()[0]));
}

#[parjob::test]
fn async_forms_with_callbacks_report_once() {
    let pool = Pool::new(2).unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (ok, err) = (calls.clone(), calls.clone());
    let r = pool.chunksize(3).map_async_with(
        |x| fails_on::delayed(x, 4),
        0..10,
        move |_| ok.lock().unwrap().push("success"),
        move |_| err.lock().unwrap().push("error"),
    );
    assert!(r.get().is_err());
    assert_eq!(
        *calls.lock().unwrap(),
        ["error"],
        "one report for the whole map"
    );
    let sums = pool
        .starmap_async(add::delayed, (0..5).map(|x| (x, x)))
        .get()
        .unwrap();
    assert_eq!(sums, [0, 2, 4, 6, 8]);
}

/// A task for threads only (no `backend = "process"`).
#[parallel]
fn on_threads_only(x: u64) -> u64 {
    x + 1
}

#[parjob::test]
fn f_task_maps_items_straight_into_argument_tuples() {
    let pool = Pool::new(2).unwrap();
    let want: Vec<u64> = (0..5000u64).map(|x| x * x).collect();
    assert_eq!(pool.map(square::task, 0..5000).unwrap(), want);
    assert_eq!(
        pool.chunksize(Chunksize::Auto)
            .map(square::task, 0..5000)
            .unwrap(),
        want
    );
    assert_eq!(pool.starmap(add::task, [(1, 2), (3, 4)]).unwrap(), [3, 7]);
    let ordered: Vec<u64> = pool.imap(square::task, 0..50).map(Result::unwrap).collect();
    assert_eq!(ordered, want[..50]);
    match pool
        .chunksize(7)
        .starmap(fails_on::task, (0..100).map(|x| (x, 61)))
        .unwrap_err()
    {
        Error::Panic { index, .. } => assert_eq!(index, 61),
        other => panic!("{other}"),
    }
    let e = pool.map(on_threads_only::task, 0..3).unwrap_err();
    assert!(matches!(e, Error::NotAProcessTask { .. }), "{e}");
    let threads = Pool::builder()
        .processes(2)
        .backend(Backend::Thread)
        .build()
        .unwrap();
    assert_eq!(threads.map(on_threads_only::task, 0..3).unwrap(), [1, 2, 3]);
}

/// The mean of `data[k * 1000..][..1000]`.
#[parallel(backend = "process")]
fn slice_mean(data: &[f64], k: usize) -> f64 {
    data[k * 1000..][..1000].iter().sum::<f64>() / 1000.0
}

#[parjob::test]
fn a_big_borrowed_slice_reaches_pool_workers_through_one_segment() {
    let data: Vec<f64> = (0..1 << 18).map(|i| i as f64).collect(); // 2 MiB
    let pool = Pool::new(2).unwrap();
    let before = parjob::shm::segments_created();
    let means = pool.map(|k| slice_mean::delayed(&data, k), 0..16).unwrap();
    assert_eq!(
        parjob::shm::segments_created() - before,
        1,
        "one segment for the buffer, not a copy in each job"
    );
    let starred = pool
        .starmap(slice_mean::task, (0..16).map(|k| (&data[..], k)))
        .unwrap();
    let streamed: Vec<f64> = pool
        .imap(|k| slice_mean::delayed(&data, k), 0..16)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(parjob::shm::segments_created() - before, 3);
    let expected: Vec<f64> = (0..16).map(|k| k as f64 * 1000.0 + 499.5).collect();
    assert_eq!(
        (means, starred, streamed),
        (expected.clone(), expected.clone(), expected)
    );
    // Under max_nbytes, the bytes go inline.
    let small = &data[..16_000];
    let before = parjob::shm::segments_created();
    pool.map(|k| slice_mean::delayed(small, k), 0..16).unwrap();
    assert_eq!(parjob::shm::segments_created(), before);
}
