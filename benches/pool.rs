//! The multiprocessing toolbox, measured in one run.
//!
//! `cargo bench --bench pool`
//!
//! 1. `Pool::map` of 100,000 tiny tasks on 2 workers, default chunksize:
//!    the cost per task (target: 10x lower than CPython's `Pool.map`).
//! 2. `apply_async(..).get()` one at a time: the round trip.
//! 3. `Queue` throughput: 1 producer (this process) to 1 consumer (a
//!    worker process), 64-byte items (`[u64; 8]`) (target: at least 1M
//!    items/s).
//! 4. An uncontended `Lock` acquire and release, and the same across two
//!    processes that take turns on it (target: <= 100 ns uncontended).
//! 5. `Pool::map` of 16 items of 20 ms over one 64 MB slice, with the
//!    slice shared (one segment) and sent inline (`max_nbytes` off), as a
//!    ratio to the ideal 16 x 20 ms / 2 workers.
//!
//! CPython's figures for the same cases on the same machine come from
//! `python3 benches/mp_pool.py`.
//!
//! Each figure is the best of 5 runs.

use parjob::prelude::*;
use parjob::sync::{Lock, Queue};
use parjob::{MaxNbytes, Pool};
use std::time::{Duration, Instant};

const TINY: u64 = 100_000;
const ROUND_TRIPS: u64 = 2_000;
const ITEMS: u64 = 1_000_000;
const LOCKS: u64 = 10_000_000;

#[parallel(backend = "process")]
fn square(x: u64) -> u64 {
    x * x
}

/// Per task of a tiny map, and the apply_async round trip, in us.
fn pool_costs() -> (f64, f64) {
    let pool = Pool::new(2).unwrap();
    pool.map(square::delayed, 0..100).unwrap(); // workers up
    let map = best(5, || {
        let t = Instant::now();
        let out = pool.map(square::task, 0..TINY).unwrap();
        assert_eq!(out[TINY as usize - 1], (TINY - 1) * (TINY - 1));
        t.elapsed()
    });
    let trip = best(5, || {
        let t = Instant::now();
        for x in 0..ROUND_TRIPS {
            assert_eq!(pool.apply_async(square::delayed(x)).get().unwrap(), x * x);
        }
        t.elapsed()
    });
    (
        map.as_secs_f64() * 1e6 / TINY as f64,
        trip.as_secs_f64() * 1e6 / ROUND_TRIPS as f64,
    )
}

/// Takes `n` items from `queue` and returns the sum of their first bytes.
#[parallel(backend = "process", n_jobs = 2)]
fn consume(queue: Queue<[u64; 8]>, n: u64) -> u64 {
    (0..n).map(|_| queue.get().unwrap()[0] >> 40).sum()
}

/// Takes and releases `lock` `n` times.
#[parallel(backend = "process", n_jobs = 2)]
fn take_turns(lock: Lock, n: u64) {
    for _ in 0..n {
        drop(std::hint::black_box(lock.lock().unwrap()));
    }
}

fn best(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..runs).map(|_| f()).min().expect("runs > 0")
}

fn queue_throughput() -> f64 {
    // Start the worker first, so its start-up is not timed.
    consume::map([(Queue::new(1).unwrap(), 0)]).unwrap();
    let elapsed = best(5, || {
        let queue = Queue::<[u64; 8]>::new(4096).unwrap();
        let consumer = {
            let queue = queue.clone();
            std::thread::spawn(move || consume::map([(queue, ITEMS)]).unwrap()[0])
        };
        let t = Instant::now();
        let item = [1u64 << 40; 8];
        for _ in 0..ITEMS {
            queue.put(&item).unwrap();
        }
        assert_eq!(consumer.join().unwrap(), ITEMS);
        t.elapsed()
    });
    ITEMS as f64 / elapsed.as_secs_f64()
}

fn lock_costs() -> (f64, f64) {
    let lock = Lock::new().unwrap();
    let here = best(5, || {
        let t = Instant::now();
        for _ in 0..LOCKS {
            drop(std::hint::black_box(lock.lock().unwrap()));
        }
        t.elapsed()
    });
    let per_lock = here.as_nanos() as f64 / LOCKS as f64;
    let n = LOCKS / 10;
    let across = best(5, || {
        let t = Instant::now();
        take_turns::map([(lock.clone(), n), (lock.clone(), n)]).unwrap();
        t.elapsed()
    });
    (per_lock, across.as_nanos() as f64 / (2 * n) as f64)
}

/// Sleeps 20 ms after reading one number of its window of `data`.
#[parallel(backend = "process")]
fn window(data: &[f64], k: usize) -> f64 {
    std::thread::sleep(Duration::from_millis(20));
    data[k * 1000]
}

/// `Pool::map` of 16 windows over a 64 MB slice: shared, then inline.
fn big_slice_costs() -> (Duration, Duration) {
    let data: Vec<f64> = (0..8 << 20).map(|i| i as f64).collect();
    let pool = Pool::new(2).unwrap();
    pool.map(square::delayed, 0..10).unwrap(); // workers up
    let mut run = || {
        let t = Instant::now();
        let out = pool.map(|k| window::delayed(&data, k), 0..16).unwrap();
        assert_eq!(out[15], 15_000.0);
        t.elapsed()
    };
    let shared = best(5, &mut run);
    let inline = parjob::config()
        .max_nbytes(MaxNbytes::Off)
        .scope(|| best(3, &mut run));
    (shared, inline)
}

#[parjob::main]
fn main() {
    let (shared, inline) = big_slice_costs();
    let ideal = 16.0 * 0.020 / 2.0;
    println!(
        "Pool(2)::map, 16 x 20 ms over a 64 MB slice: shared {:.0} ms ({:.2}x ideal), \
         inline {:.0} ms ({:.2}x ideal)",
        shared.as_secs_f64() * 1e3,
        shared.as_secs_f64() / ideal,
        inline.as_secs_f64() * 1e3,
        inline.as_secs_f64() / ideal
    );
    let (per_task, trip) = pool_costs();
    println!("Pool(2)::map, 100,000 tiny tasks, default chunksize: {per_task:.3} us/task");
    println!("Pool(2)::apply_async round trip, one at a time: {trip:.1} us");
    let per_second = queue_throughput();
    println!(
        "queue, 1 producer -> 1 consumer process, 64-byte items: {:.2}M items/s (target >= 1M)",
        per_second / 1e6
    );
    let (uncontended, contended) = lock_costs();
    println!("Lock acquire+release, uncontended: {uncontended:.1} ns (target <= 100 ns)");
    println!("Lock acquire+release, 2 processes taking turns: {contended:.1} ns");
}
