//! parjob's quickstart: the seeds' first examples, with timings.
//!
//! `cargo run --release --example quickstart`
//!
//! 1. joblib's first example: squares, `Parallel(n_jobs=8)(delayed(process)(i) for i in ...)`.
//! 2. The sleep case: 10 tasks of `time.sleep(1)` with `n_jobs = 8` on worker
//!    processes, against the same loop run sequentially.
//! 3. Which processes did the work.

use parjob::prelude::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// joblib: `def process(x): return x * x`
#[parallel(n_jobs = -1)]
fn process(x: u64) -> u64 {
    x * x
}

/// The seeds' `task_demo1`: sleep one second, report who did it.
#[parallel(n_jobs = 8, backend = "process")]
fn sleepy(seconds: f64) -> u32 {
    std::thread::sleep(Duration::from_secs_f64(seconds));
    std::process::id()
}

#[parjob::main]
fn main() -> parjob::Result<()> {
    println!("parjob quickstart on {} CPUs\n", parjob::cpu_count());

    // 1. Squares: results come back in input order.
    let started = Instant::now();
    let squares = process::map(0..1_000_000)?;
    println!(
        "1. squares of 0..1,000,000 on threads: {:?}, last = {}, in {:.3} s",
        &squares[..5],
        squares[squares.len() - 1],
        started.elapsed().as_secs_f64()
    );

    // 2. The sleep case: 10 x sleep(1 s), n_jobs = 8, worker processes.
    let started = Instant::now();
    for _ in 0..10 {
        sleepy(1.0);
    }
    let sequential = started.elapsed().as_secs_f64();
    let p = Parallel::new().n_jobs(8).backend(Backend::Process);
    let started = Instant::now();
    let pids = p.run((0..10).map(|_| sleepy::delayed(1.0)))?;
    let parallel = started.elapsed().as_secs_f64();
    println!(
        "2. 10 tasks of sleep(1 s): sequential {sequential:.2} s, process backend (n_jobs = 8) {parallel:.2} s \
         (joblib/loky: 2.81 s), {:.1}x faster",
        sequential / parallel
    );
    // The workers stay up: a second run pays no start-up.
    let started = Instant::now();
    p.run((0..10).map(|_| sleepy::delayed(0.1)))?;
    println!(
        "   again with the same Parallel, 10 x sleep(0.1 s): {:.3} s",
        started.elapsed().as_secs_f64()
    );

    // 3. Who did the work.
    let mut per_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for pid in pids {
        *per_pid.entry(pid).or_default() += 1;
    }
    println!(
        "3. this process is pid {}; the 10 sleeps ran in {} worker processes:",
        std::process::id(),
        per_pid.len()
    );
    for (pid, n) in per_pid {
        println!("   pid {pid}: {n} task(s)");
    }
    Ok(())
}
