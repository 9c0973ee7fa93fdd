//! The `sync` primitives and `shared` collections across real worker
//! processes: each handle is a task argument, so the workers and the
//! parent use the same shared memory.

use parjob::prelude::*;
use parjob::shared::List;
use parjob::sync::{
    Barrier, Connection, Event, JoinableQueue, Lock, Pipe, Queue, Semaphore, Value,
};
use parjob::Error;
use std::collections::HashSet;
use std::time::Duration;

/// Long enough for any wait here to end normally; a wait that runs out
/// fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(60);

/// Appends `n` entries under `lock`, each recording the list's length it
/// saw: with mutual exclusion, every entry's length is its own index.
#[parallel(backend = "process", n_jobs = 5, batch_size = 1)]
fn append_under_lock(lock: Lock, list: List<(u32, u64)>, n: u32) -> u32 {
    for _ in 0..n {
        let _held = lock.lock().unwrap();
        let seen = list.len() as u64;
        list.push(&(std::process::id(), seen)).unwrap();
    }
    std::process::id()
}

#[parjob::test]
fn five_processes_append_5000_entries_under_a_lock() {
    let lock = Lock::new().unwrap();
    let list = List::new().unwrap();
    let jobs = (0..5).map(|_| (lock.clone(), list.clone(), 1000));
    let pids: HashSet<u32> = append_under_lock::map(jobs).unwrap().into_iter().collect();
    assert_eq!(pids.len(), 5, "five worker processes");
    assert!(!pids.contains(&std::process::id()));
    let entries = list.to_vec().unwrap();
    assert_eq!(entries.len(), 5000);
    for (i, (pid, seen)) in entries.iter().enumerate() {
        assert_eq!(*seen, i as u64, "entry {i} was appended outside the lock");
        assert!(pids.contains(pid));
    }
}

/// Increments both counters `n` times once all parties are in: `racy`
/// with a separate read and write (the lost-update race), `locked` under
/// the value's own lock.
#[parallel(backend = "process", n_jobs = 5, batch_size = 1)]
fn count(start: Barrier, racy: Value<u64>, locked: Value<u64>, n: u32) {
    start.wait_timeout(PATIENCE).unwrap();
    for _ in 0..n {
        let seen = racy.get();
        // A little work between the read and the write, as real code has.
        std::hint::black_box((0..200).fold(seen, |a, b| a ^ b));
        racy.set(seen + 1);
        locked.update(|v| *v += 1);
    }
}

#[parjob::test]
fn a_value_loses_updates_without_its_lock_and_none_with_it() {
    let mut lost_somewhere = false;
    for _round in 0..5 {
        let start = Barrier::new(5).unwrap();
        let racy = Value::new(0u64).unwrap();
        let locked = Value::new(0u64).unwrap();
        let jobs = (0..5).map(|_| (start.clone(), racy.clone(), locked.clone(), 2000));
        count::map(jobs).unwrap();
        assert_eq!(locked.get(), 10_000, "an update under the lock was lost");
        assert!(racy.get() <= 10_000);
        lost_somewhere |= racy.get() < 10_000;
        if lost_somewhere {
            break;
        }
    }
    assert!(
        lost_somewhere,
        "five processes racing on get/set never lost an update in 5 rounds"
    );
}

/// Holds a permit while doing some work, and records how many held one.
#[parallel(backend = "process", n_jobs = 4, batch_size = 1)]
fn hold_permit(permits: Semaphore, holders: Value<u32>, most: Value<u32>) {
    for _ in 0..50 {
        let _permit = permits.acquire_timeout(PATIENCE).expect("a permit");
        let now = holders.update(|h| {
            *h += 1;
            *h
        });
        most.update(|m| *m = (*m).max(now));
        std::hint::black_box((0..20_000u64).sum::<u64>());
        holders.update(|h| *h -= 1);
    }
}

#[parjob::test]
fn a_semaphore_of_2_admits_at_most_2_holders() {
    let permits = Semaphore::new(2).unwrap();
    let holders = Value::new(0u32).unwrap();
    let most = Value::new(0u32).unwrap();
    let jobs = (0..4).map(|_| (permits.clone(), holders.clone(), most.clone()));
    hold_permit::map(jobs).unwrap();
    assert!((1..=2).contains(&most.get()), "{} held at once", most.get());
    assert_eq!(holders.get(), 0);
    assert_eq!(permits.available(), 2, "every permit came back");
}

/// Arrives, waits for every party, and reports the arrivals it then sees.
#[parallel(backend = "process", n_jobs = 3, batch_size = 1)]
fn meet(barrier: Barrier, arrived: Value<u32>) -> (bool, u32) {
    arrived.update(|a| *a += 1);
    let leader = barrier.wait_timeout(PATIENCE).unwrap();
    (leader, arrived.get())
}

#[parjob::test]
fn a_barrier_holds_3_processes_until_all_arrive() {
    let barrier = Barrier::new(3).unwrap();
    let arrived = Value::new(0u32).unwrap();
    let got = meet::map((0..3).map(|_| (barrier.clone(), arrived.clone()))).unwrap();
    assert!(got.iter().all(|&(_, seen)| seen == 3), "{got:?}");
    assert_eq!(got.iter().filter(|&&(leader, _)| leader).count(), 1);
}

/// Takes the lock and dies holding it, after saying so.
#[parallel(backend = "process", n_jobs = 2)]
fn die_holding(lock: Lock, holding: Event) {
    let guard = lock.lock().unwrap();
    holding.set();
    std::mem::forget(guard);
    // SAFETY: kill(2) on this process.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

/// Whether the lock is poisoned, as a worker sees it.
#[parallel(backend = "process", n_jobs = 2)]
fn poisoned_here(lock: Lock) -> bool {
    match lock.lock_timeout(PATIENCE) {
        Ok(_) => false,
        Err(std::sync::TryLockError::Poisoned(_)) => true,
        Err(std::sync::TryLockError::WouldBlock) => panic!("the dead holder's lock never came"),
    }
}

#[parjob::test]
fn a_worker_killed_holding_a_lock_poisons_it_instead_of_hanging() {
    let lock = Lock::new().unwrap();
    let holding = Event::new().unwrap();
    let died = die_holding::map([(lock.clone(), holding.clone())]).unwrap_err();
    assert!(matches!(died, Error::WorkerDied { .. }), "{died}");
    assert!(holding.is_set(), "the worker took the lock before it died");
    assert!(poisoned_here::map([lock.clone()]).unwrap()[0]);
    let here = lock.lock();
    assert!(here.is_err(), "the parent sees the poison too");
    drop(here);
    lock.clear_poison();
    assert!(lock.lock().is_ok());
}

/// Puts `range` on the queue; the last producer to finish closes it.
#[parallel(backend = "process", n_jobs = 4, batch_size = 1)]
fn produce_or_consume(queue: Queue<u64>, range: Option<(u64, u64)>, done: Value<u32>) -> Vec<u64> {
    match range {
        Some((from, to)) => {
            for i in from..to {
                queue.put(&i).unwrap();
            }
            if done.update(|d| {
                *d += 1;
                *d
            }) == 2
            {
                queue.close();
            }
            Vec::new()
        }
        None => queue.iter().map(Result::unwrap).collect(),
    }
}

#[parjob::test]
fn two_producers_and_two_consumers_deliver_each_item_once() {
    // A small queue, so producers wait for the consumers.
    let queue = Queue::with_capacity(64, 4096).unwrap();
    let done = Value::new(0u32).unwrap();
    let roles = [Some((0, 5000)), None, Some((5000, 10_000)), None];
    let jobs = roles.map(|r| (queue.clone(), r, done.clone()));
    let got = produce_or_consume::map(jobs).unwrap();
    let mut all: Vec<u64> = got.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (0..10_000).collect::<Vec<_>>());
    assert!(queue.is_closed() && queue.is_empty());
}

/// Answers each number with its square, until the parent closes its end.
#[parallel(backend = "process", n_jobs = 2)]
fn squares(end: Connection<u64>) -> u32 {
    let mut answered = 0;
    while let Ok(x) = end.recv() {
        end.send(&(x * x)).unwrap();
        answered += 1;
    }
    end.close();
    answered
}

#[parjob::test]
fn a_pipe_carries_values_both_ways_to_a_worker() {
    let (here, there) = Pipe::new::<u64>().unwrap();
    for x in 1..=100 {
        here.send(&x).unwrap();
    }
    here.close();
    assert_eq!(squares::map([there]).unwrap(), [100]);
    let back: Vec<u64> = std::iter::from_fn(|| here.recv().ok()).collect();
    assert_eq!(back, (1..=100u64).map(|x| x * x).collect::<Vec<_>>());
}

#[parallel(n_jobs = 2)]
fn bump_on_threads(counter: Value<u64>) {
    counter.update(|c| *c += 1);
}

#[test]
fn handles_work_on_threads_and_refuse_to_be_stored() {
    let counter = Value::new(0u64).unwrap();
    bump_on_threads::map((0..100).map(|_| counter.clone())).unwrap();
    assert_eq!(counter.get(), 100);
    let dir = std::env::temp_dir().join(format!("parjob-sync-{}", std::process::id()));
    let err = parjob::dump(&counter, &dir).unwrap_err().to_string();
    assert!(err.contains("task argument"), "{err}");
    assert!(!dir.exists(), "nothing was written");
}

/// One party of CPython's `test_reset`: the leader of the first round
/// resets the barrier once the other four wait in the second, which fails
/// them; then all five pass a third round. Returns (passed, broken) of
/// the second round.
#[parallel(backend = "process", n_jobs = 5, batch_size = 1)]
fn reset_round(barrier: Barrier) -> (u32, u32) {
    let leader = barrier.wait_timeout(PATIENCE).unwrap();
    let mut second = (0, 0);
    if leader {
        let since = std::time::Instant::now();
        while barrier.n_waiting() < barrier.parties() - 1 {
            assert!(since.elapsed() < PATIENCE, "the others never came");
            std::thread::yield_now();
        }
        barrier.reset();
    } else {
        match barrier.wait_timeout(PATIENCE) {
            Ok(_) => second.0 += 1,
            Err(e) => {
                assert!(e.to_string().contains("reset"), "{e}");
                second.1 += 1
            }
        }
    }
    barrier.wait_timeout(PATIENCE).unwrap();
    second
}

#[parjob::test]
fn reset_fails_the_parties_waiting_as_cpython_counts_it() {
    let barrier = Barrier::new(5).unwrap();
    let got = reset_round::map((0..5).map(|_| barrier.clone())).unwrap();
    let passed: u32 = got.iter().map(|r| r.0).sum();
    let broken: u32 = got.iter().map(|r| r.1).sum();
    assert_eq!((passed, broken, got.len()), (0, 4, 5));
    assert!(!barrier.is_broken(), "reset leaves it usable");
}

/// Passes the barrier twice; after each pass, the action has run exactly
/// once per round already (it runs before anyone is released).
#[parallel(backend = "process", n_jobs = 3, batch_size = 1)]
fn pass_twice(barrier: Barrier, trips: Value<u32>) -> (u32, u32) {
    barrier.wait_timeout(PATIENCE).unwrap();
    let first = trips.get();
    // Nobody may start round two before everyone has read round one.
    barrier.wait_timeout(PATIENCE).unwrap();
    barrier.wait_timeout(PATIENCE).unwrap();
    (first, trips.get())
}

/// CPython's `test_action`, on worker processes: the action made in the
/// parent runs once per trip, before any party is released.
#[parjob::test]
fn a_barrier_action_runs_once_per_round_before_the_release() {
    let trips = Value::new(0u32).unwrap();
    let counter = trips.clone();
    let barrier = Barrier::with_action(3, move || counter.update(|t| *t += 1)).unwrap();
    let got = pass_twice::map((0..3).map(|_| (barrier.clone(), trips.clone()))).unwrap();
    assert!(got.iter().all(|&(first, _)| first == 1), "{got:?}");
    assert!(got.iter().all(|&(_, last)| last == 3), "{got:?}");
}

#[parjob::test]
fn a_panicking_action_breaks_the_barrier_and_reports_why() {
    let barrier = Barrier::with_action(2, || panic!("action 7 fails")).unwrap();
    std::thread::scope(|s| {
        let other = s.spawn(|| barrier.wait_timeout(PATIENCE));
        let here = barrier.wait_timeout(PATIENCE);
        let outcomes = [here, other.join().unwrap()].map(|r| r.unwrap_err().to_string());
        assert!(
            outcomes.iter().any(|e| e.contains("action 7 fails")),
            "{outcomes:?}"
        );
        assert!(
            outcomes.iter().all(|e| e.contains("action")),
            "{outcomes:?}"
        );
    });
    assert!(barrier.is_broken());
    barrier.reset();
    assert!(!barrier.is_broken());
}

/// Echoes what arrives on `end` back, once.
#[parallel(backend = "process")]
fn echo(end: Connection<Vec<u8>>) -> usize {
    let got = end.recv().unwrap();
    end.send(&got).unwrap();
    got.len()
}

/// CPython's `test_large_fd_transfer`-sized message: 16 MiB through a
/// Pipe whose ring is 1 MiB, to a worker process and back.
#[parjob::test]
fn a_pipe_carries_16_mib_to_a_worker_and_back() {
    let (here, there) = Pipe::new::<Vec<u8>>().unwrap();
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    std::thread::scope(|s| {
        // Process runs start from the test's own thread; the parent's end
        // is served from another.
        let parent = s.spawn(|| {
            here.send(&big).unwrap();
            here.recv().unwrap() == big
        });
        assert_eq!(echo::map([there]).unwrap(), [16 << 20]);
        assert!(parent.join().unwrap(), "the echo differs");
    });
}

/// A consumer of a JoinableQueue: takes items until the queue closes,
/// marking each done once it has recorded it.
#[parallel(backend = "process", n_jobs = 2, batch_size = 1)]
fn consume_and_mark(jobs: JoinableQueue<u64>, seen: Value<u64>) -> u32 {
    let mut taken = 0;
    while let Ok(job) = jobs.get() {
        seen.update(|s| *s += job);
        jobs.task_done().unwrap();
        taken += 1;
    }
    taken
}

/// CPython's `test_task_done`: `join` returns once consumers in other
/// processes have marked every item done, and not before.
#[parjob::test]
fn join_waits_until_workers_mark_every_item_done() {
    let jobs = JoinableQueue::<u64>::new(64).unwrap();
    let seen = Value::new(0u64).unwrap();
    std::thread::scope(|s| {
        let producer = s.spawn(|| {
            for job in 1..=100 {
                jobs.put(&job).unwrap();
            }
            jobs.join();
            // Every item was recorded before join returned.
            let total = seen.get();
            jobs.queue().close();
            total
        });
        let taken = consume_and_mark::map((0..2).map(|_| (jobs.clone(), seen.clone()))).unwrap();
        assert_eq!(taken.iter().sum::<u32>(), 100);
        assert_eq!(producer.join().unwrap(), 5050);
    });
    assert_eq!(jobs.unfinished_tasks(), 0);
    assert!(jobs.task_done().is_err(), "one task_done too many");
    assert!(jobs.join_timeout(Duration::ZERO));
}
