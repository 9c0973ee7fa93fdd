//! `parjob::Executor` (concurrent.futures) and `parjob::Process`, on real
//! worker processes.

use parjob::pool::{as_completed, wait, Pool, ReturnWhen};
use parjob::prelude::*;
use parjob::sync::Event;
use parjob::{Error, Executor, Process};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// Long enough for anything here; a wait past it is a hang.
const PATIENCE: Duration = Duration::from_secs(60);

#[parallel(backend = "process")]
fn double(x: u64) -> u64 {
    2 * x
}

/// Waits for `go`, then returns `x`.
#[parallel(backend = "process")]
fn after(go: Event, x: u64) -> u64 {
    assert!(go.wait_timeout(PATIENCE), "never told to go");
    x
}

/// Says it started, waits for `go`, then returns `x`.
#[parallel(backend = "process")]
fn started_then_after(started: Event, go: Event, x: u64) -> u64 {
    started.set();
    assert!(go.wait_timeout(PATIENCE), "never told to go");
    x
}

#[parallel(backend = "process")]
fn fails(x: u64) -> u64 {
    panic!("task {x} fails")
}

#[parallel(backend = "process")]
fn pid_of(x: u64) -> (u32, u64) {
    (std::process::id(), x)
}

/// Polls a future to its end on this thread, parking between wakes.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

#[parjob::test]
fn submit_returns_futures_that_block_or_await() {
    let ex = Executor::new(2).unwrap();
    assert_eq!(ex.submit(double::delayed(21)).result().unwrap(), 42);
    let awaited = block_on(ex.submit(double::delayed(5)));
    assert_eq!(awaited.unwrap(), 10);
    let futures: Vec<_> = (0..10).map(|x| ex.submit(double::delayed(x))).collect();
    let mut values: Vec<u64> = as_completed(futures, Some(PATIENCE))
        .map(|f| f.unwrap().result().unwrap())
        .collect();
    values.sort_unstable();
    assert_eq!(values, (0..10).map(|x| 2 * x).collect::<Vec<_>>());
}

#[parjob::test]
fn wait_returns_when_asked_and_cancel_stops_what_has_not_started() {
    let ex = Executor::new(1).unwrap();
    let go = Event::new().unwrap();
    let futures = vec![
        ex.submit(after::delayed(go.clone(), 1)),
        ex.submit(double::delayed(3)),
    ];
    let (done, not_done) = wait(
        &futures,
        Some(Duration::from_millis(100)),
        ReturnWhen::FirstCompleted,
    );
    assert!(done.is_empty(), "the one worker is held by the first task");
    assert_eq!(not_done, [0, 1]);
    assert!(futures[1].cancel(), "the second has not started");
    assert!(futures[1].cancelled());
    assert!(!futures[0].cancel(), "the first is running");
    go.set();
    let (done, _) = wait(&futures, Some(PATIENCE), ReturnWhen::AllCompleted);
    assert_eq!(done, [0, 1]);
    let mut results = futures.into_iter().map(|f| f.result());
    assert_eq!(results.next().unwrap().unwrap(), 1);
    assert!(matches!(results.next().unwrap(), Err(Error::Cancelled)));
}

/// CPython's `test_first_completed_some_already_completed`: every future
/// already done is in `done`, not only the first one seen.
#[parjob::test]
fn first_completed_counts_every_future_already_done() {
    let ex = Executor::new(2).unwrap();
    let go = Event::new().unwrap();
    let finished = [ex.submit(double::delayed(1)), ex.submit(double::delayed(2))];
    let (done, _) = wait(&finished, Some(PATIENCE), ReturnWhen::AllCompleted);
    assert_eq!(done, [0, 1]);
    let [a, b] = finished;
    let futures = vec![a, b, ex.submit(after::delayed(go.clone(), 3))];
    let (done, not_done) = wait(&futures, Some(PATIENCE), ReturnWhen::FirstCompleted);
    assert_eq!((done, not_done), (vec![0, 1], vec![2]));
    go.set();
}

#[parjob::test]
fn first_exception_returns_at_the_failure() {
    let ex = Executor::new(2).unwrap();
    let go = Event::new().unwrap();
    let futures = vec![
        ex.submit(after::delayed(go.clone(), 1)),
        ex.submit(fails::delayed(2)),
    ];
    let (done, not_done) = wait(&futures, Some(PATIENCE), ReturnWhen::FirstException);
    assert_eq!((done, not_done), (vec![1], vec![0]));
    go.set();
}

#[parjob::test]
fn done_callbacks_run_on_the_callback_thread_or_here_when_done() {
    let ex = Executor::new(1).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let f = ex.submit(double::delayed(4));
    let s = seen.clone();
    f.add_done_callback(move |r| {
        s.lock()
            .unwrap()
            .push((std::thread::current().id(), *r.as_ref().unwrap()))
    });
    let f2 = ex.submit(double::delayed(5));
    let _ = wait(
        std::slice::from_ref(&f2),
        Some(PATIENCE),
        ReturnWhen::AllCompleted,
    );
    let s = seen.clone();
    f2.add_done_callback(move |r| {
        s.lock()
            .unwrap()
            .push((std::thread::current().id(), *r.as_ref().unwrap()))
    });
    assert_eq!(f.result().unwrap(), 8);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_ne!(
        seen[0].0,
        std::thread::current().id(),
        "on the callback thread"
    );
    assert_eq!(
        seen[1],
        (std::thread::current().id(), 10),
        "done already: run here"
    );
}

#[parjob::test]
fn map_keeps_order_and_a_timeout_ends_it() {
    let ex = Executor::new(2).unwrap();
    let got: Vec<u64> = ex
        .map(double::delayed, 0..50, None)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, (0..50).map(|x| 2 * x).collect::<Vec<_>>());
    let go = Event::new().unwrap();
    let g = go.clone();
    let mut slow = ex.map(
        move |x| after::delayed(g.clone(), x),
        0..2,
        Some(Duration::from_millis(50)),
    );
    assert!(slow.next().unwrap().is_err(), "timed out");
    assert!(slow.next().is_none(), "and ended");
    go.set();
}

#[parjob::test]
fn shutdown_cancels_pending_work_and_waits_for_the_rest() {
    let ex = Executor::with(Pool::builder().processes(1)).unwrap();
    let go = Event::new().unwrap();
    let started = Event::new().unwrap();
    let running = ex.submit(started_then_after::delayed(started.clone(), go.clone(), 7));
    let pending = ex.submit(double::delayed(1));
    assert!(started.wait_timeout(PATIENCE), "the first task started");
    // The running task may end only once the pending one is cancelled.
    let g = go.clone();
    pending.add_done_callback(move |_| g.set());
    ex.shutdown(true, true);
    assert_eq!(running.result().unwrap(), 7);
    assert!(matches!(pending.result(), Err(Error::Cancelled)));
    assert!(ex.submit(double::delayed(1)).result().is_err(), "shut down");
}

#[parjob::test]
fn a_process_runs_one_task_in_a_fresh_worker() {
    let p = Process::spawn(pid_of::delayed(9)).unwrap();
    let pid = p.pid();
    assert_ne!(pid, std::process::id());
    let (ran_in, x) = p.join().unwrap();
    assert_eq!((ran_in, x), (pid, 9));
    let q = Process::spawn(pid_of::delayed(1)).unwrap();
    assert_ne!(q.pid(), pid, "each process is fresh");
    assert!(Process::spawn(fails::delayed(3))
        .unwrap()
        .join()
        .unwrap_err()
        .to_string()
        .contains("task 3 fails"));
}

#[parjob::test]
fn a_killed_process_reports_its_signal_and_is_not_alive() {
    let go = Event::new().unwrap();
    let mut p = Process::spawn(after::delayed(go.clone(), 1)).unwrap();
    assert!(p.is_alive());
    assert!(!p.join_timeout(Duration::from_millis(20)), "still waiting");
    p.kill();
    assert!(p.join_timeout(PATIENCE));
    assert!(!p.is_alive());
    let status = p.exit_status().unwrap().to_string();
    assert!(status.contains("SIGKILL"), "{status}");
    let e = p.join().unwrap_err();
    assert!(matches!(e, Error::WorkerDied { .. }), "{e}");

    let mut done = Process::spawn(double::delayed(2)).unwrap();
    assert!(done.join_timeout(PATIENCE));
    assert!(
        done.exit_status().unwrap().contains("code 0"),
        "{:?}",
        done.exit_status()
    );
    assert_eq!(done.join().unwrap(), 4);
}

#[parjob::test]
fn a_closure_cannot_be_a_process() {
    let e = Process::spawn(parjob::Job::new(|| 1)).unwrap_err();
    assert!(matches!(e, Error::NotAProcessTask { .. }), "{e}");
}

/// Sleeps `ms` milliseconds, then says which process it ran in.
#[parallel(backend = "process")]
fn nap_pid(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// CPython's `test_idle_process_reuse_one` and `..._multiple`: workers
/// start only when no idle one can take the work.
#[parjob::test]
fn workers_start_lazily_and_idle_ones_are_reused() {
    let ex = Executor::new(5).unwrap();
    let pids: Vec<u32> = (0..3)
        .map(|_| ex.submit(nap_pid::delayed(0)).result().unwrap())
        .collect();
    assert!(
        pids.iter().all(|&p| p == pids[0]),
        "three waits, one worker: {pids:?}"
    );
    let go = Event::new().unwrap();
    let held: Vec<_> = (0..3)
        .map(|x| ex.submit(started_and_pid::delayed(go.clone(), x)))
        .collect();
    go.set();
    let mut seen: Vec<u32> = held.into_iter().map(|f| f.result().unwrap()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert!(
        seen.len() <= 3,
        "3 submissions started {} workers",
        seen.len()
    );
    ex.shutdown(true, false);
}

/// Waits for `go`, then says which process it ran in.
#[parallel(backend = "process")]
fn started_and_pid(go: Event, _x: u64) -> u32 {
    assert!(go.wait_timeout(PATIENCE), "never told to go");
    std::process::id()
}

/// CPython's `test_cancel_futures`: of 50 futures submitted at once, the
/// ones already handed to workers finish; the rest are cancelled.
#[parjob::test]
fn shutdown_cancelling_futures_lets_the_running_ones_finish() {
    let ex = Executor::new(2).unwrap();
    let futures: Vec<_> = (0..50).map(|_| ex.submit(nap_pid::delayed(100))).collect();
    ex.shutdown(true, true);
    let cancelled = futures.iter().filter(|f| f.cancelled()).count();
    assert!(cancelled > 20, "only {cancelled} of 50 were cancelled");
    let others: Vec<_> = futures.into_iter().filter(|f| !f.cancelled()).collect();
    assert!(!others.is_empty(), "none of the 50 finished");
    for f in others {
        assert!(f.done());
        assert!(f.result().is_ok());
    }
}
