//! Marked-loop benchmarks, measured in one run, reported as ratios.
//!
//! `cargo bench --bench loops`
//!
//! 1. A marked loop over 2,000 items of 1 ms CPU each, `n_jobs = 2`,
//!    against the same loop unmarked (target: >= 1.9x faster), with rayon's
//!    `par_iter().map().sum()` for reference.
//! 2. A marked loop over 1,000,000 trivial items (`s += x`), `n_jobs = 2`,
//!    against the plain loop (target: no more than 3x slower).
//! 3. `parallel_for!` over the 1 ms items, against the unmarked loop.
//! 4. A cheap body, `s += x.sin() * 1e3` over 1,000,000 `f64`, marked with
//!    `n_jobs = 2`, against the plain loop (target: <= 1.5x, aim 1.1x;
//!    bit-identical), with rayon's `fold` for reference. Plain and marked
//!    runs alternate (and, separately, plain and rayon), and each figure is
//!    the median of 31.
//! 5. For the record: 20,000,000 trivial items, and 1,000,000 kept on
//!    threads instead of finishing in the caller's thread.

use parjob::prelude::*;
use rayon::prelude::*;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Spins for `micros` of CPU time.
fn spin(micros: u64) -> u64 {
    let until = Instant::now() + Duration::from_micros(micros);
    let mut n = 0u64;
    while Instant::now() < until {
        n = n.wrapping_add(1);
    }
    black_box(n);
    micros
}

fn spin_plain(items: &[u64]) -> u64 {
    let mut total = 0;
    for &us in items {
        total += spin(us);
    }
    total
}

#[parallel(n_jobs = 2)]
fn spin_marked(items: &[u64]) -> u64 {
    let mut total = 0;
    #[parallel]
    for &us in items {
        total += spin(us);
    }
    total
}

fn sum_plain(xs: &[u64]) -> u64 {
    let mut s = 0;
    for x in xs {
        s += x;
    }
    s
}

#[parallel(n_jobs = 2)]
fn sum_marked(xs: &[u64]) -> u64 {
    let mut s = 0;
    #[parallel]
    for x in xs {
        s += x;
    }
    s
}

fn sin_plain(xs: &[f64]) -> f64 {
    let mut s = 0.0;
    for x in xs {
        s += x.sin() * 1e3;
    }
    s
}

#[parallel(n_jobs = 2)]
fn sin_marked(xs: &[f64]) -> f64 {
    let mut s = 0.0;
    #[parallel]
    for x in xs {
        s += x.sin() * 1e3;
    }
    s
}

/// The median of each of two functions' times over `runs` runs, taken in
/// turn, so that a drift in the machine's speed touches both.
fn medians2<A, B>(
    mut a: impl FnMut() -> A,
    mut b: impl FnMut() -> B,
    runs: usize,
) -> [Duration; 2] {
    let mut times = [vec![], vec![]];
    for _ in 0..runs {
        let t = Instant::now();
        black_box(a());
        times[0].push(t.elapsed());
        let t = Instant::now();
        black_box(b());
        times[1].push(t.elapsed());
    }
    times.map(|mut t| {
        t.sort_unstable();
        t[t.len() / 2]
    })
}

/// Section 4: the cheap body. The marked loop and rayon are each
/// alternated with the plain loop, in separate rounds, so that rayon's
/// threads spinning down after a run do not land on the marked loop's.
fn cheap_body(pool: &rayon::ThreadPool) {
    let xs: Vec<f64> = (0..1_000_000).map(|i| i as f64 * 1e-3).collect();
    assert_eq!(sin_plain(&xs).to_bits(), sin_marked(&xs).to_bits());
    let [plain, marked] = medians2(
        || sin_plain(black_box(&xs)),
        || sin_marked(black_box(&xs)),
        31,
    );
    let [plain_r, rayon] = medians2(
        || sin_plain(black_box(&xs)),
        || {
            pool.install(|| {
                xs.par_iter()
                    .fold(|| 0.0, |s, x| s + x.sin() * 1e3)
                    .sum::<f64>()
            })
        },
        31,
    );
    for (label, d, d_plain) in [
        ("marked loop, n_jobs=2", marked, plain),
        (
            "rayon fold + sum (2 threads, not bit-identical)",
            rayon,
            plain_r,
        ),
    ] {
        println!(
            "| 1,000,000 x `s += x.sin() * 1e3`, {label} | {:.3} ms | plain loop {:.3} ms | {:.2}x the plain loop | <= 1.5x (aim 1.1x) |",
            d.as_secs_f64() * 1e3,
            d_plain.as_secs_f64() * 1e3,
            d.as_secs_f64() / d_plain.as_secs_f64()
        );
    }
}

fn time<T>(mut f: impl FnMut() -> T, runs: usize) -> (T, Duration) {
    let mut out = f();
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        out = black_box(f());
        best = best.min(t.elapsed());
    }
    (out, best)
}

fn main() {
    parjob::init();
    println!("| case | parjob | baseline | ratio | target |");
    println!("|---|---|---|---|---|");

    let items = vec![1000u64; 2000];
    let (plain, d_plain) = time(|| spin_plain(black_box(&items)), 1);
    let (marked, d_marked) = time(|| spin_marked(black_box(&items)), 1);
    assert_eq!(plain, marked);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let (by_rayon, d_rayon) = time(
        || pool.install(|| items.par_iter().map(|&us| spin(us)).sum::<u64>()),
        1,
    );
    assert_eq!(by_rayon, plain);
    let (listed, d_for) = time(
        || parallel_for!(n_jobs = 2; for &us in &items { spin(us) }),
        1,
    );
    assert_eq!(listed.iter().sum::<u64>(), plain);
    println!(
        "| 2,000 x 1 ms CPU, marked loop, n_jobs=2 | {:.3} s | unmarked loop {:.3} s | {:.2}x faster | >= 1.9x |",
        d_marked.as_secs_f64(),
        d_plain.as_secs_f64(),
        d_plain.as_secs_f64() / d_marked.as_secs_f64()
    );
    println!(
        "| 2,000 x 1 ms CPU, parallel_for!, n_jobs=2 | {:.3} s | unmarked loop {:.3} s | {:.2}x faster | report |",
        d_for.as_secs_f64(),
        d_plain.as_secs_f64(),
        d_plain.as_secs_f64() / d_for.as_secs_f64()
    );
    println!(
        "| 2,000 x 1 ms CPU, rayon par_iter sum (2 threads) | {:.3} s | unmarked loop {:.3} s | {:.2}x faster | reference |",
        d_rayon.as_secs_f64(),
        d_plain.as_secs_f64(),
        d_plain.as_secs_f64() / d_rayon.as_secs_f64()
    );

    let xs: Vec<u64> = (0..1_000_000).collect();
    let (plain, d_plain) = time(|| sum_plain(black_box(&xs)), 50);
    let (marked, d_marked) = time(|| sum_marked(black_box(&xs)), 50);
    assert_eq!(plain, marked);
    println!(
        "| 1,000,000 x `s += x`, marked loop, n_jobs=2 | {:.3} ms | plain loop {:.3} ms | {:.2}x the plain loop | <= 3x |",
        d_marked.as_secs_f64() * 1e3,
        d_plain.as_secs_f64() * 1e3,
        d_marked.as_secs_f64() / d_plain.as_secs_f64()
    );
    cheap_body(&pool);
    // Twenty times longer: after the first window, the measured items are
    // too small for threads, so the rest runs in this thread.
    let long: Vec<u64> = (0..20_000_000).collect();
    let (plain_long, d_plain_long) = time(|| sum_plain(black_box(&long)), 10);
    let (marked_long, d_marked_long) = time(|| sum_marked(black_box(&long)), 10);
    assert_eq!(plain_long, marked_long);
    println!(
        "| 20,000,000 x `s += x`, marked loop, n_jobs=2 | {:.3} ms | plain loop {:.3} ms | {:.2}x the plain loop | report |",
        d_marked_long.as_secs_f64() * 1e3,
        d_plain_long.as_secs_f64() * 1e3,
        d_marked_long.as_secs_f64() / d_plain_long.as_secs_f64()
    );
    drop(long);
    // The same loop kept on threads, to show what running tiny items here
    // saves.
    parjob::__private::loops::set_min_parallel_item(Duration::ZERO);
    let (forced, d_forced) = time(|| sum_marked(black_box(&xs)), 50);
    assert_eq!(forced, plain);
    println!(
        "| 1,000,000 x `s += x`, marked loop, kept on threads | {:.3} ms | plain loop {:.3} ms | {:.2}x the plain loop | report |",
        d_forced.as_secs_f64() * 1e3,
        d_plain.as_secs_f64() * 1e3,
        d_forced.as_secs_f64() / d_plain.as_secs_f64()
    );
}
