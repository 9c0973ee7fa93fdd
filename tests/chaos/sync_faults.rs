//! Faults in the `sync` primitives: a waiter SIGKILLed in the middle of
//! its wait, in a real worker process. A dead waiter must cost the living
//! nothing: the next notification reaches a live waiter, and whoever sends
//! it returns.

use crate::harness::{blocked_in_futex, Case};
use parjob::prelude::*;
use parjob::sync::{Barrier, Condition, Connection, Event, Lock, Pipe, Queue, Semaphore, Value};
use parjob::{Error, Process};
use std::time::Duration;

pub const CASES: &[Case] = &[
    Case {
        fault: "a Condition waiter SIGKILLed mid-wait",
        expect: "notify_one returns and wakes the live waiter",
        within: Duration::from_secs(30),
        run: condition_waiter_killed,
        ignore: None,
    },
    Case {
        fault: "a Queue consumer SIGKILLed mid-get",
        expect: "a live consumer gets the next item put",
        within: Duration::from_secs(30),
        run: queue_consumer_killed,
        ignore: None,
    },
    Case {
        fault: "a Queue producer SIGKILLed mid-put",
        expect: "a live producer's put goes through once room is made",
        within: Duration::from_secs(30),
        run: queue_producer_killed,
        ignore: None,
    },
    Case {
        fault: "a Pipe receiver SIGKILLed mid-recv",
        expect: "a live receiver gets the next message",
        within: Duration::from_secs(30),
        run: pipe_receiver_killed,
        ignore: None,
    },
    Case {
        fault: "a Barrier party SIGKILLed mid-wait",
        expect: "reset, then the live parties pass",
        within: Duration::from_secs(30),
        run: barrier_party_killed,
        ignore: None,
    },
    Case {
        fault: "an Event waiter SIGKILLed mid-wait",
        expect: "set wakes the live waiter",
        within: Duration::from_secs(30),
        run: event_waiter_killed,
        ignore: None,
    },
    Case {
        fault: "a Semaphore waiter SIGKILLed mid-acquire",
        expect: "a release reaches the live waiter",
        within: Duration::from_secs(30),
        run: semaphore_waiter_killed,
        ignore: None,
    },
    Case {
        fault: "a Lock waiter SIGKILLed while the lock is held",
        expect: "the lock is not poisoned, and passes to the live waiter",
        within: Duration::from_secs(30),
        run: lock_waiter_killed,
        ignore: None,
    },
];

/// Rounds of wait-and-notify after the kill: glibc's process-shared
/// condition variable loses the second round's wakeup to the dead waiter
/// and hangs in the third round's notify.
const ROUNDS: u32 = 3;

/// How long a live waiter waits in one round before the row fails.
const PATIENCE: Duration = Duration::from_secs(5);

fn gettid() -> u64 {
    // SAFETY: gettid has no preconditions.
    (unsafe { libc::gettid() }) as u64
}

/// Waits on `cond` for ever, after publishing its thread id.
#[parallel(backend = "process")]
fn wait_on_condition(cond: Condition, tid: Value<u64>) {
    let held = cond.lock().unwrap();
    tid.set(gettid());
    let _never = cond.wait_while(held, || true);
}

#[parallel(backend = "process")]
fn get_from_queue(queue: Queue<u64>, tid: Value<u64>) -> u64 {
    tid.set(gettid());
    queue.get().unwrap()
}

#[parallel(backend = "process")]
fn put_on_queue(queue: Queue<u64>, tid: Value<u64>) {
    tid.set(gettid());
    queue.put(&666).unwrap();
}

#[parallel(backend = "process")]
fn recv_from_pipe(end: Connection<u64>, tid: Value<u64>) -> u64 {
    tid.set(gettid());
    end.recv().unwrap()
}

#[parallel(backend = "process")]
fn wait_at_barrier(barrier: Barrier, tid: Value<u64>) -> bool {
    tid.set(gettid());
    barrier.wait().unwrap()
}

#[parallel(backend = "process")]
fn wait_for_event(event: Event, tid: Value<u64>) {
    tid.set(gettid());
    event.wait();
}

#[parallel(backend = "process")]
fn acquire_permit(permits: Semaphore, tid: Value<u64>) {
    tid.set(gettid());
    std::mem::forget(permits.acquire());
}

#[parallel(backend = "process")]
fn take_lock(lock: Lock, tid: Value<u64>) {
    tid.set(gettid());
    let _held = lock.lock();
}

fn text(e: Error) -> String {
    e.to_string()
}

/// Spawns `job` in its own process, waits until the thread that published
/// its id in `tid` sleeps in the kernel, and SIGKILLs it there.
fn kill_mid_wait<R: Send + 'static>(job: parjob::Job<R>, tid: &Value<u64>) -> Result<(), String> {
    let process = Process::spawn(job).map_err(text)?;
    let pid = process.pid();
    blocked_in_futex(pid, || tid.get() as u32)?;
    process.kill();
    match process.join() {
        Err(Error::WorkerDied { .. }) => Ok(()),
        Err(other) => Err(format!("the killed waiter gave {other}")),
        Ok(_) => Err("the killed waiter returned a value".into()),
    }
}

/// Runs `live` on a thread of this process; once it sleeps in the kernel,
/// runs `release`, and returns what `live` returned.
fn live_waiter<T: Send>(
    live: impl FnOnce(&Value<u64>) -> T + Send,
    release: impl FnOnce() -> Result<(), String>,
) -> Result<T, String> {
    let tid = Value::new(0u64).map_err(text)?;
    std::thread::scope(|s| {
        let waiter = s.spawn(|| live(&tid));
        blocked_in_futex(std::process::id(), || tid.get() as u32)?;
        release()?;
        waiter
            .join()
            .map_err(|_| "the live waiter panicked".to_string())
    })
}

fn condition_waiter_killed() -> Result<(), String> {
    let cond = Condition::new().map_err(text)?;
    let tid = Value::new(0u64).map_err(text)?;
    kill_mid_wait(wait_on_condition::delayed(cond.clone(), tid.clone()), &tid)?;
    let flag = Value::new(0u32).map_err(text)?;
    for round in 1..=ROUNDS {
        let woke = live_waiter(
            |tid| {
                let held = cond.lock().unwrap();
                tid.set(gettid());
                let (held, _) = cond
                    .wait_timeout_while(held, PATIENCE, || flag.get() != round)
                    .unwrap();
                drop(held);
                flag.get()
            },
            || {
                let held = cond.lock().map_err(|_| "the lock is poisoned")?;
                flag.set(round);
                cond.notify_one();
                drop(held);
                Ok(())
            },
        )?;
        if woke != round {
            return Err(format!("round {round}: the live waiter was never woken"));
        }
    }
    Ok(())
}

fn queue_consumer_killed() -> Result<(), String> {
    let queue = Queue::<u64>::new(4).map_err(text)?;
    let tid = Value::new(0u64).map_err(text)?;
    kill_mid_wait(get_from_queue::delayed(queue.clone(), tid.clone()), &tid)?;
    for round in 1..=u64::from(ROUNDS) {
        let got = live_waiter(
            |tid| {
                tid.set(gettid());
                queue.get_timeout(PATIENCE)
            },
            || queue.put(&round).map_err(text),
        )?;
        if !matches!(got, Ok(Some(r)) if r == round) {
            return Err(format!(
                "round {round}: the live consumer got {got:?} with {} queued",
                queue.len()
            ));
        }
    }
    Ok(())
}

fn queue_producer_killed() -> Result<(), String> {
    let queue = Queue::<u64>::new(1).map_err(text)?;
    queue.put(&0).map_err(text)?;
    let tid = Value::new(0u64).map_err(text)?;
    kill_mid_wait(put_on_queue::delayed(queue.clone(), tid.clone()), &tid)?;
    for round in 1..=u64::from(ROUNDS) {
        let put = live_waiter(
            |tid| {
                tid.set(gettid());
                queue.put_timeout(&round, PATIENCE)
            },
            || match queue.get().map_err(text)? {
                r if r == round - 1 => Ok(()),
                other => Err(format!("round {round}: the queue held {other}")),
            },
        )?;
        if !matches!(put, Ok(true)) {
            return Err(format!(
                "round {round}: the live put gave {put:?} with room free"
            ));
        }
    }
    Ok(())
}

fn pipe_receiver_killed() -> Result<(), String> {
    let (here, there) = Pipe::new::<u64>().map_err(text)?;
    let tid = Value::new(0u64).map_err(text)?;
    kill_mid_wait(recv_from_pipe::delayed(there.clone(), tid.clone()), &tid)?;
    for round in 1..=u64::from(ROUNDS) {
        let got = live_waiter(
            |tid| {
                tid.set(gettid());
                there.recv_timeout(PATIENCE)
            },
            || here.send(&round).map_err(text),
        )?;
        if !matches!(got, Ok(Some(r)) if r == round) {
            return Err(format!("round {round}: the live receiver got {got:?}"));
        }
    }
    Ok(())
}

fn barrier_party_killed() -> Result<(), String> {
    let barrier = Barrier::new(2).map_err(text)?;
    let tid = Value::new(0u64).map_err(text)?;
    kill_mid_wait(wait_at_barrier::delayed(barrier.clone(), tid.clone()), &tid)?;
    barrier.reset();
    let leaders = std::thread::scope(|s| {
        let other = s.spawn(|| barrier.wait_timeout(PATIENCE));
        let here = barrier.wait_timeout(PATIENCE);
        [here, other.join().unwrap()]
    });
    match leaders {
        [Ok(a), Ok(b)] if a != b => Ok(()),
        other => Err(format!("the live parties got {other:?}")),
    }
}

fn event_waiter_killed() -> Result<(), String> {
    let event = Event::new().map_err(text)?;
    let tid = Value::new(0u64).map_err(text)?;
    kill_mid_wait(wait_for_event::delayed(event.clone(), tid.clone()), &tid)?;
    let set = live_waiter(
        |tid| {
            tid.set(gettid());
            event.wait_timeout(PATIENCE)
        },
        || {
            event.set();
            Ok(())
        },
    )?;
    set.then_some(())
        .ok_or("the live waiter timed out with the event set".into())
}

fn semaphore_waiter_killed() -> Result<(), String> {
    let permits = Semaphore::new(0).map_err(text)?;
    let tid = Value::new(0u64).map_err(text)?;
    kill_mid_wait(acquire_permit::delayed(permits.clone(), tid.clone()), &tid)?;
    for round in 1..=ROUNDS {
        let got = live_waiter(
            |tid| {
                tid.set(gettid());
                permits
                    .acquire_timeout(PATIENCE)
                    .map(std::mem::forget)
                    .is_some()
            },
            || {
                permits.release();
                Ok(())
            },
        )?;
        if !got {
            return Err(format!(
                "round {round}: the release never reached the live waiter"
            ));
        }
    }
    Ok(())
}

fn lock_waiter_killed() -> Result<(), String> {
    let lock = Lock::new().map_err(text)?;
    let tid = Value::new(0u64).map_err(text)?;
    let held = lock.lock().map_err(|_| "a new lock is poisoned")?;
    kill_mid_wait(take_lock::delayed(lock.clone(), tid.clone()), &tid)?;
    let outcome = live_waiter(
        |tid| {
            tid.set(gettid());
            match lock.lock_timeout(PATIENCE) {
                Ok(_) => "taken",
                Err(std::sync::TryLockError::Poisoned(_)) => "poisoned",
                Err(std::sync::TryLockError::WouldBlock) => "never came",
            }
        },
        move || {
            drop(held);
            Ok(())
        },
    )?;
    (outcome == "taken")
        .then_some(())
        .ok_or(format!("the live waiter's lock: {outcome}"))
}
