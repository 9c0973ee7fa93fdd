//! parjob's quickstart: the joblib tutorials' first examples, with timings.
//!
//! `cargo run --release --example quickstart`
//!
//! 1. joblib's first example: squares, `Parallel(n_jobs=8)(delayed(process)(i) for i in ...)`.
//! 2. The sleep case: 10 tasks of `time.sleep(1)` with `n_jobs = 8` on worker
//!    processes, against the same loop run sequentially.
//! 3. Which processes did the work.
//! 4. A loop you already have, with one line added: the same f64 sum, bit
//!    for bit, on threads.
//! 5. A slow function cached on disk: the second call is a hit.
//! 6. A large array dumped, loaded back, and memory-mapped.

use parjob::prelude::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// joblib: `def process(x): return x * x`
#[parallel(n_jobs = -1)]
fn process(x: u64) -> u64 {
    x * x
}

/// The joblib tutorials' `task_demo1`: sleep one second, report who did it.
#[parallel(n_jobs = 8, backend = "process")]
fn sleepy(seconds: f64) -> u32 {
    std::thread::sleep(Duration::from_secs_f64(seconds));
    std::process::id()
}

/// A sum over a loop that already exists, with `#[parallel]` added.
#[parallel(n_jobs = 2)]
fn energy(xs: &[f64]) -> f64 {
    let mut e = 0.0;
    #[parallel]
    for x in xs {
        let mut term = 0.0;
        for k in 1..=400 {
            term += (x * k as f64 * 1e-3).sin().powi(2);
        }
        e += term / 400.0;
    }
    e
}

/// A slow, deterministic function, cached under `target/`.
#[memoize(dir = "target/quickstart-cache")]
fn slow_features(seed: u64) -> Vec<f64> {
    std::thread::sleep(Duration::from_millis(500));
    (0..5).map(|i| (seed * 31 + i) as f64 / 7.0).collect()
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

    // The workers are not needed any more.
    p.shutdown();

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

    // 4. A marked loop: the plain loop's answer, bit for bit.
    let xs: Vec<f64> = (0..20_000).map(f64::from).collect();
    let started = Instant::now();
    let mut plain = 0.0;
    for x in &xs {
        let mut term = 0.0;
        for k in 1..=400 {
            term += (x * k as f64 * 1e-3).sin().powi(2);
        }
        plain += term / 400.0;
    }
    let t_plain = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let marked = energy(&xs);
    let t_marked = started.elapsed().as_secs_f64();
    println!(
        "4. a marked loop over 20,000 items: {marked} in {t_marked:.3} s, the plain loop {plain} in {t_plain:.3} s \
         (identical bits: {})",
        marked.to_bits() == plain.to_bits()
    );

    // 5. A disk cache: computed once, then loaded.
    slow_features::clear();
    let started = Instant::now();
    let first = slow_features(42);
    let t_first = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let second = slow_features(42);
    let t_second = started.elapsed().as_secs_f64();
    assert_eq!(first, second);
    println!(
        "5. #[memoize]: first call {t_first:.3} s, second {:.3} ms ({:?})",
        t_second * 1e3,
        slow_features::stats()
    );

    // 6. dump / load / load_mmap.
    let xs: Vec<f64> = (0..2_000_000).map(f64::from).collect();
    let path = std::path::Path::new("target/quickstart-array.bin");
    let started = Instant::now();
    parjob::dump(&xs, path)?;
    let t_dump = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let back: Vec<f64> = parjob::load(path)?;
    let t_load = started.elapsed().as_secs_f64();
    // SAFETY: the file is ours, and nothing writes it while it is mapped.
    let mapped = unsafe { parjob::load_mmap::<f64>(path) }?;
    println!(
        "6. 16 MB array: dump {:.1} ms, load {:.1} ms (equal: {}), mapped element 1,999,999 = {}",
        t_dump * 1e3,
        t_load * 1e3,
        back == xs,
        mapped[1_999_999]
    );
    Ok(())
}
