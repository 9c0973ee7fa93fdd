//! The joblib tutorials' loop examples, each as the plain loop and the same loop with
//! one line added (`#[parallel]`), with the answers and the speedup.
//!
//! `cargo run --release --example loops`
//!
//! 1. Sum of squares over ten 1000-long vectors, each task sleeping 1 s
//!    (joblib, n_jobs = 8: 10.10 s sequential, 2.38 s parallel).
//! 2. Per-column means of a 1000 x 4 matrix through a 1 s `costly_compute`
//!    (joblib: 4.05 s sequential).
//! 3. Means of 95 overlapping slices of a 10,000,000-long array, each
//!    sleeping 10 ms (joblib, n_jobs = 2: 1.49 s sequential, 1.00 s
//!    parallel). The loop borrows the array: nothing is copied.
//! 4. `parallel_for!`: joblib's `task_demo1`, eight 1 s sleeps returning
//!    when they finished, four at a time.

use parjob::prelude::*;
use std::time::{Duration, Instant};

/// A deterministic stand-in for `np.random.rand`.
fn random(seed: u64, n: usize) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

fn compute_heavy_task(data: &[f64]) -> f64 {
    std::thread::sleep(Duration::from_secs(1));
    data.iter().map(|x| x * x).sum()
}

fn sum_of_squares_plain(rows: &[Vec<f64>]) -> f64 {
    let mut total = 0.0;
    for row in rows {
        total += compute_heavy_task(row);
    }
    total
}

#[parallel(n_jobs = 8)]
fn sum_of_squares(rows: &[Vec<f64>]) -> f64 {
    let mut total = 0.0;
    #[parallel]
    for row in rows {
        total += compute_heavy_task(row);
    }
    total
}

fn costly_compute(data: &[Vec<f64>], column: usize) -> Vec<f64> {
    std::thread::sleep(Duration::from_secs(1));
    data.iter().map(|row| row[column]).collect()
}

fn column_means_plain(data: &[Vec<f64>]) -> Vec<f64> {
    let mut means = Vec::new();
    for column in 0..data[0].len() {
        let values = costly_compute(data, column);
        means.push(values.iter().sum::<f64>() / values.len() as f64);
    }
    means
}

#[parallel(n_jobs = 2)]
fn column_means(data: &[Vec<f64>]) -> Vec<f64> {
    let mut means = Vec::new();
    #[parallel]
    for column in 0..data[0].len() {
        let values = costly_compute(data, column);
        means.push(values.iter().sum::<f64>() / values.len() as f64);
    }
    means
}

fn slow_mean(data: &[f64], start: usize, len: usize) -> f64 {
    std::thread::sleep(Duration::from_millis(10));
    data[start..start + len].iter().sum::<f64>() / len as f64
}

fn slice_means_plain(data: &[f64], starts: &[usize], len: usize) -> Vec<f64> {
    let mut means = Vec::new();
    for &start in starts {
        means.push(slow_mean(data, start, len));
    }
    means
}

#[parallel(n_jobs = 2)]
fn slice_means(data: &[f64], starts: &[usize], len: usize) -> Vec<f64> {
    let mut means = Vec::new();
    #[parallel]
    for &start in starts {
        means.push(slow_mean(data, start, len));
    }
    means
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64())
}

fn report(name: &str, same: bool, plain: f64, marked: f64, joblib: &str) {
    println!(
        "{name}: same result: {same}; plain loop {plain:.2} s, #[parallel] {marked:.2} s, {:.2}x faster ({joblib})",
        plain / marked
    );
}

fn main() {
    // 1. Sum of squares over vectors.
    let rows: Vec<Vec<f64>> = (0..10).map(|i| random(42 + i, 1000)).collect();
    let (plain, t_plain) = timed(|| sum_of_squares_plain(&rows));
    let (marked, t_marked) = timed(|| sum_of_squares(&rows));
    println!("sum of squares = {marked:.6}");
    report(
        "1. sum of squares, n_jobs = 8",
        plain.to_bits() == marked.to_bits(),
        t_plain,
        t_marked,
        "joblib: 10.10 s and 2.38 s",
    );

    // 2. Per-column means.
    let data: Vec<Vec<f64>> = (0..1000).map(|i| random(7 + i, 4)).collect();
    let (plain, t_plain) = timed(|| column_means_plain(&data));
    let (marked, t_marked) = timed(|| column_means(&data));
    println!("column means = {marked:.4?}");
    report(
        "2. per-column means, n_jobs = 2",
        plain == marked,
        t_plain,
        t_marked,
        "joblib: 4.05 s sequential",
    );

    // 3. Means of overlapping slices of a large array, borrowed.
    let big = random(1, 10_000_000);
    let window = 500_000;
    let starts: Vec<usize> = (0..big.len() - window).step_by(100_000).collect();
    let (plain, t_plain) = timed(|| slice_means_plain(&big, &starts, window));
    let (marked, t_marked) = timed(|| slice_means(&big, &starts, window));
    println!("{} slice means, first {:.6}", marked.len(), marked[0]);
    report(
        "3. slice means, n_jobs = 2",
        plain == marked,
        t_plain,
        t_marked,
        "joblib: 1.49 s and 1.00 s",
    );

    // 4. parallel_for!: eight sleeps, four at a time.
    let start = Instant::now();
    let finished: Vec<f64> = parallel_for!(n_jobs = 4; for _ in 0..8 {
        std::thread::sleep(Duration::from_secs(1));
        start.elapsed().as_secs_f64()
    });
    let rounded: Vec<String> = finished.iter().map(|t| format!("{t:.1}")).collect();
    println!("4. parallel_for!, n_jobs = 4: tasks finished at {rounded:?} s");
}
