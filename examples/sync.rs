//! Python's `multiprocessing` tutorial, its shared-state half, on parjob's
//! worker processes: a `Lock` guarding a list that 5 processes append to,
//! a `Semaphore` limiting how many work at once, `Value` counters with and
//! without their lock, and workers logging through a `Queue`.
//!
//! `cargo run --release --example sync`

use parjob::prelude::*;
use parjob::shared::List;
use parjob::sync::{Barrier, Lock, Queue, Semaphore, Value};

/// `with lock: shared_list.append(...)`, 1,000 times.
#[parallel(backend = "process", n_jobs = 5, batch_size = 1)]
fn append_items(lock: Lock, items: List<String>, worker: u32) {
    for i in 0..1000 {
        let _held = lock.lock().expect("no holder died");
        items.push(&format!("worker {worker} item {i}")).unwrap();
    }
}

/// At most 2 workers at a time inside the semaphore; each logs through
/// the queue and records the most it saw inside at once.
#[parallel(backend = "process", n_jobs = 4, batch_size = 1)]
fn limited(slots: Semaphore, inside: Value<u32>, most: Value<u32>, log: Queue<String>, id: u32) {
    let _permit = slots.acquire();
    let now = inside.update(|n| {
        *n += 1;
        *n
    });
    most.update(|m| *m = (*m).max(now));
    log.put(&format!(
        "pid {} (task {id}) got a slot; {now} inside",
        std::process::id()
    ))
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    inside.update(|n| *n -= 1);
}

/// `counter.value += 1` without and with the value's lock.
#[parallel(backend = "process", n_jobs = 4, batch_size = 1)]
fn increment(start: Barrier, racy: Value<u64>, locked: Value<u64>) {
    start.wait().unwrap();
    for _ in 0..10_000 {
        let seen = racy.get();
        std::hint::black_box((0..100).fold(seen, |a, b| a ^ b));
        racy.set(seen + 1);
        locked.update(|n| *n += 1);
    }
}

#[parjob::main]
fn main() -> parjob::Result<()> {
    let lock = Lock::new()?;
    let items = List::new()?;
    append_items::map((0..5).map(|w| (lock.clone(), items.clone(), w)))?;
    println!("lock + list: {} entries from 5 processes", items.len());

    let slots = Semaphore::new(2)?;
    let (inside, most) = (Value::new(0u32)?, Value::new(0u32)?);
    let log = Queue::new(64)?;
    let jobs = (0..6).map(|id| (slots.clone(), inside.clone(), most.clone(), log.clone(), id));
    limited::map(jobs)?;
    while let Some(line) = log.try_get()? {
        println!("  log: {line}");
    }
    println!("semaphore(2): at most {} inside at once", most.get());

    let start = Barrier::new(4)?;
    let (racy, locked) = (Value::new(0u64)?, Value::new(0u64)?);
    increment::map((0..4).map(|_| (start.clone(), racy.clone(), locked.clone())))?;
    println!(
        "4 x 10,000 increments: {} with get/set (updates lost), {} under the lock",
        racy.get(),
        locked.get()
    );
    Ok(())
}
