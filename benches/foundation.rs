//! Foundation benchmarks, measured in one run, reported as ratios.
//!
//! `cargo bench --bench foundation`
//!
//! 1. The joblib tutorials' sleep case: 10 tasks of sleep(1 s), n_jobs = 8, process
//!    backend, workers started inside the measurement (joblib/loky: 2.81 s).
//! 2. 2,000 tasks of 1 ms CPU: speedup over sequential on threads and on
//!    processes (n_jobs = 2), and rayon's `par_iter` for reference.
//! 3. Dispatch cost: per-task overhead of 100,000 tiny `x * x` tasks.
//!
//! It prints a Markdown table for `docs/benchmarks.md`.

use parjob::prelude::*;
use rayon::prelude::*;
use std::hint::black_box;
use std::time::{Duration, Instant};

#[parallel(backend = "process")]
fn sleep_for(seconds: f64) -> u32 {
    std::thread::sleep(Duration::from_secs_f64(seconds));
    std::process::id()
}

/// Deterministic CPU work: `iters` rounds of xorshift.
#[parallel(backend = "process")]
fn burn(seed: u64, iters: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..iters {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

#[parallel(backend = "process")]
fn square(x: u64) -> u64 {
    x * x
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

/// Iterations of `burn` that take about 1 ms here.
fn calibrate_one_ms() -> u64 {
    let mut iters = 10_000u64;
    loop {
        let (_, d) = time(|| black_box(burn(1, black_box(iters))));
        if d >= Duration::from_millis(20) {
            return (iters as f64 * 1e-3 / d.as_secs_f64()) as u64;
        }
        iters *= 2;
    }
}

fn main() -> parjob::Result<()> {
    parjob::init();
    let cpus = parjob::cpu_count();
    println!("parjob foundation benchmarks: {cpus} CPUs\n");
    println!("| case | parjob | baseline | ratio | target |");
    println!("|---|---|---|---|---|");

    // 1. The sleep case, including worker start-up.
    let p = Parallel::new().n_jobs(8).backend(Backend::Process);
    let (pids, d) = time(|| p.run((0..10).map(|_| sleep_for::delayed(1.0))));
    let pids = pids?;
    assert_eq!(pids.len(), 10);
    println!(
        "| 10 x sleep(1 s), n_jobs=8, process, cold workers | {:.3} s | joblib/loky 2.81 s | {:.2}x faster | <= 2.05 s |",
        secs(d),
        2.81 / secs(d)
    );
    drop(p);

    // 2. 1 ms CPU tasks.
    let iters = calibrate_one_ms();
    let n = 2_000u64;
    let (seq, d_seq) = time(|| (0..n).map(|s| burn(s, iters)).collect::<Vec<_>>());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let (ray, d_rayon) = time(|| {
        pool.install(|| {
            (0..n)
                .into_par_iter()
                .map(|s| burn(s, iters))
                .collect::<Vec<_>>()
        })
    });
    assert_eq!(ray, seq);
    let threads = Parallel::new().n_jobs(2).backend(Backend::Thread);
    let (thr, d_thr) = time(|| threads.run((0..n).map(|s| burn::delayed(s, iters))));
    assert_eq!(thr?, seq);
    let procs = Parallel::new().n_jobs(2).backend(Backend::Process);
    procs.run((0..2).map(|s| burn::delayed(s, 1)))?; // start the workers
    let (prc, d_prc) = time(|| procs.run((0..n).map(|s| burn::delayed(s, iters))));
    assert_eq!(prc?, seq);
    println!(
        "| 2,000 x 1 ms CPU, sequential | {:.3} s | | 1.00x | |",
        secs(d_seq)
    );
    println!(
        "| 2,000 x 1 ms CPU, rayon par_iter (2 threads) | {:.3} s | sequential {:.3} s | {:.2}x speedup | reference |",
        secs(d_rayon),
        secs(d_seq),
        secs(d_seq) / secs(d_rayon)
    );
    println!(
        "| 2,000 x 1 ms CPU, thread backend, n_jobs=2 | {:.3} s | sequential {:.3} s | {:.2}x speedup | >= 1.9x |",
        secs(d_thr),
        secs(d_seq),
        secs(d_seq) / secs(d_thr)
    );
    println!(
        "| 2,000 x 1 ms CPU, process backend, n_jobs=2, warm | {:.3} s | sequential {:.3} s | {:.2}x speedup | >= 1.9x |",
        secs(d_prc),
        secs(d_seq),
        secs(d_seq) / secs(d_prc)
    );

    // 3. Dispatch cost of tiny tasks.
    let n = 100_000u64;
    let seq: Vec<u64> = (0..n).map(|x| black_box(square(x))).collect();
    let (ray, d_rayon) =
        time(|| pool.install(|| (0..n).into_par_iter().map(square).collect::<Vec<_>>()));
    assert_eq!(ray, seq);
    let (thr, d_thr) = time(|| threads.run((0..n).map(square::delayed)));
    assert_eq!(thr?, seq);
    let (prc, d_prc) = time(|| procs.run((0..n).map(square::delayed)));
    assert_eq!(prc?, seq);
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "| 100,000 x tiny task, thread backend | {:.2} us/task | rayon {:.3} us/task | {:.0}x rayon's | report |",
        per(d_thr),
        per(d_rayon),
        per(d_thr) / per(d_rayon)
    );
    println!(
        "| 100,000 x tiny task, process backend | {:.2} us/task | joblib/loky 2.78 us/task | {:.2}x loky's | report |",
        per(d_prc),
        per(d_prc) / 2.78
    );
    Ok(())
}
