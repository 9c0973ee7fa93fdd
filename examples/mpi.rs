//! More than one machine: the quickstart's tasks on the ranks of an MPI job.
//!
//! ```text
//! mpirun -n 3 cargo run --release --features mpi --example mpi
//! ```
//!
//! Rank 0 runs `main` and schedules; ranks 1 and 2 run the jobs and never
//! get past `#[parjob::main]`. Started without `mpirun`, the same binary
//! runs the same tasks on worker processes.
//!
//! 1. joblib's first example, squares, on the worker ranks.
//! 2. The tutorials' sleep case: 10 tasks of 1 s each, and who ran them.
//! 3. A long run that survives a crash: `#[memoize]` on a shared
//!    filesystem. A dead rank ends the whole MPI job (MPI's model); rerun
//!    the job, and every item computed before the crash comes from the
//!    cache. The second pass here stands in for that rerun.

use parjob::prelude::*;
use parjob::Backend;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// joblib: `def process(x): return x * x`
#[parallel(backend = "process")]
fn process(x: u64) -> u64 {
    x * x
}

/// The joblib tutorials' `task_demo1`: sleep, report who did it.
#[parallel(n_jobs = 8, backend = "process")]
fn sleepy(seconds: f64) -> (String, u32) {
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let rank = rank_name();
    (rank, std::process::id())
}

/// A slow simulation step, cached where every rank can see it.
#[parallel(backend = "process")]
#[memoize(dir = "target/mpi-example-cache")]
fn simulate(seed: u64) -> f64 {
    std::thread::sleep(Duration::from_millis(50));
    (0..1000).map(|i| ((seed * 1000 + i) as f64).sqrt()).sum()
}

fn rank_name() -> String {
    match parjob::mpi::rank() {
        Some(r) => format!("MPI rank {r}"),
        None => "worker process".into(),
    }
}

#[parjob::main]
fn main() -> parjob::Result<()> {
    let backend = if parjob::mpi::launched() {
        Backend::Mpi
    } else {
        Backend::Process
    };
    println!("parjob on the {backend} backend\n");
    parjob::config().backend(backend).n_jobs(-1).scope(run)
}

fn run() -> parjob::Result<()> {
    // 1. Squares, in input order.
    let started = Instant::now();
    let squares = process::map(0..100_000)?;
    println!(
        "1. squares of 0..100000: last = {}, sum = {} in {:.3} s",
        squares[99_999],
        squares.iter().sum::<u64>(),
        started.elapsed().as_secs_f64()
    );

    // 2. The sleep case, and who ran it.
    let started = Instant::now();
    let who = sleepy::map(std::iter::repeat_n(0.2, 10))?;
    let mut by_worker: BTreeMap<(String, u32), usize> = BTreeMap::new();
    for w in who {
        *by_worker.entry(w).or_default() += 1;
    }
    println!(
        "2. 10 sleeps of 0.2 s in {:.2} s:",
        started.elapsed().as_secs_f64()
    );
    for ((rank, pid), n) in &by_worker {
        println!("   {rank} (pid {pid}) ran {n}");
    }

    // 3. A long run, then its rerun after a crash: the cache answers.
    for pass in ["first run", "rerun"] {
        let started = Instant::now();
        let total: f64 = simulate::map(0..40)?.iter().sum();
        println!(
            "3. {pass}: 40 steps, total {total:.1}, in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
