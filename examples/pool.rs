//! Python's multiprocessing tutorial, ported: `Pool.map` and `starmap`
//! with `chunksize`, `apply_async` with callbacks, a worker that dies, a
//! `Lock` guarding a list that 5 processes append to, a `Semaphore`
//! limiting how many work at once, `Value` counters with and without
//! their lock, and workers logging through a `Queue`.
//!
//! `cargo run --release --example pool`

use parjob::prelude::*;
use parjob::shared::List;
use parjob::sync::{Barrier, Lock, Queue, Semaphore, Value};
use parjob::{Pool, Process};
use std::sync::{Arc, Mutex};

#[parallel(backend = "process")]
fn square(x: u64) -> u64 {
    x * x
}

#[parallel(backend = "process")]
fn power(base: u64, exp: u32) -> u64 {
    base.pow(exp)
}

#[parallel(backend = "process")]
fn risky(x: u64) -> u64 {
    assert!(x != 3, "3 is unlucky");
    x * 10
}

/// Aborts: the worker dies, as with a crash in C code.
#[parallel(backend = "process")]
fn crash() -> u64 {
    std::process::abort()
}

/// `with lock: shared_list.append(...)`, 1,000 times.
#[parallel(backend = "process")]
fn append_items(lock: Lock, items: List<String>, worker: u32) {
    for i in 0..1000 {
        let _held = lock.lock().expect("no holder died");
        items.push(&format!("worker {worker} item {i}")).unwrap();
    }
}

/// At most 2 tasks at a time inside the semaphore; each logs through the
/// queue and records the most it saw inside at once.
#[parallel(backend = "process")]
fn limited(slots: Semaphore, inside: Value<u32>, most: Value<u32>, log: Queue<String>, id: u32) {
    let _permit = slots.acquire();
    let now = inside.update(|n| {
        *n += 1;
        *n
    });
    most.update(|m| *m = (*m).max(now));
    let line = format!(
        "pid {} (task {id}) got a slot; {now} inside",
        std::process::id()
    );
    log.put(&line).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    inside.update(|n| *n -= 1);
}

/// `counter.value += 1` without and with the value's lock.
#[parallel(backend = "process")]
fn increment(start: Barrier, racy: Value<u64>, locked: Value<u64>) {
    start.wait().unwrap();
    for _ in 0..10_000 {
        let seen = racy.get();
        std::hint::black_box((0..100).fold(seen, |a, b| a ^ b));
        racy.set(seen + 1);
        locked.update(|n| *n += 1);
    }
}

fn map_and_callbacks(pool: &Pool) -> parjob::Result<()> {
    let squares = pool.map(square::task, 0..10)?;
    println!("map: {squares:?}");
    let powers = pool.starmap(power::task, [(2, 10), (3, 3)])?;
    println!("starmap: {powers:?}");
    let chunked = pool.chunksize(100).map(square::task, 0..10_000)?;
    println!(
        "map, chunksize 100: {} results, last {}",
        chunked.len(),
        chunked[9_999]
    );

    let seen = Arc::new(Mutex::new(Vec::new()));
    let results: Vec<_> = (0..5)
        .map(|x| {
            let (ok, err) = (seen.clone(), seen.clone());
            pool.apply_async_with(
                risky::delayed(x),
                move |v| ok.lock().unwrap().push(format!("callback: {v}")),
                move |e| err.lock().unwrap().push(format!("error_callback: {e}")),
            )
        })
        .collect();
    for r in results {
        let _ = r.get(); // the error is also what get() returns
    }
    for line in seen.lock().unwrap().iter() {
        println!("  {line}");
    }
    match pool.apply(crash::delayed()) {
        Err(e) => println!("a worker that aborts fails its task only: {e}"),
        Ok(v) => println!("unexpected: {v}"),
    }
    println!("and the pool goes on: {:?}", pool.map(square::task, 0..3)?);
    Ok(())
}

fn shared_state(pool: &Pool) -> parjob::Result<()> {
    let lock = Lock::new()?;
    let items = List::new()?;
    pool.starmap(
        append_items::task,
        (0..5).map(|w| (lock.clone(), items.clone(), w)),
    )?;
    println!("lock + list: {} entries from 5 processes", items.len());

    let slots = Semaphore::new(2)?;
    let (inside, most) = (Value::new(0u32)?, Value::new(0u32)?);
    let log = Queue::new(64)?;
    let jobs = (0..6).map(|id| (slots.clone(), inside.clone(), most.clone(), log.clone(), id));
    pool.chunksize(1).starmap(limited::task, jobs)?;
    while let Some(line) = log.try_get()? {
        println!("  log: {line}");
    }
    println!("semaphore(2): at most {} inside at once", most.get());

    let start = Barrier::new(4)?;
    let (racy, locked) = (Value::new(0u64)?, Value::new(0u64)?);
    let jobs = (0..4).map(|_| (start.clone(), racy.clone(), locked.clone()));
    pool.chunksize(1).starmap(increment::task, jobs)?;
    println!(
        "4 x 10,000 increments: {} with get/set (updates lost), {} under the lock",
        racy.get(),
        locked.get()
    );
    Ok(())
}

#[parjob::main]
fn main() -> parjob::Result<()> {
    let pool = Pool::new(5)?;
    map_and_callbacks(&pool)?;
    shared_state(&pool)?;
    pool.close();
    pool.join()?;

    let p = Process::spawn(square::delayed(12))?;
    println!("Process {}: {}", p.pid(), p.join()?);
    Ok(())
}
