//! The joblib tutorials' cache example: a 1 s `costly_compute` memoized on disk and
//! called from worker processes. The first round computes (two workers,
//! four columns: about 2 s); the second finds every result in the cache,
//! written by the workers, and takes milliseconds.
//!
//! `cargo run --release --example memoize`
//!
//! joblib (tutorial): sequential 4.05 s, first round 2.05 s, second 0.02 s.

use parjob::prelude::*;
use std::time::{Duration, Instant};

/// A deterministic stand-in for `rng.randn(1000, 4)`.
fn data(rows: usize, columns: usize) -> Vec<Vec<f64>> {
    let mut state = 42u64;
    (0..rows)
        .map(|_| {
            (0..columns)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
                })
                .collect()
        })
        .collect()
}

#[memoize(dir = "target/parjob-example-cache", verbose = 1)]
fn costly_compute(data: Vec<Vec<f64>>, column: usize) -> Vec<f64> {
    std::thread::sleep(Duration::from_secs(1));
    data.iter().map(|row| row[column]).collect()
}

#[parallel(n_jobs = 2, backend = "process")]
fn data_processing_mean_using_cache(data: Vec<Vec<f64>>, column: usize) -> f64 {
    let values = costly_compute(data, column);
    values.iter().sum::<f64>() / values.len() as f64
}

fn round(data: &[Vec<f64>]) -> parjob::Result<(Vec<f64>, f64)> {
    let start = Instant::now();
    let means = data_processing_mean_using_cache::map((0..4).map(|c| (data.to_vec(), c)))?;
    Ok((means, start.elapsed().as_secs_f64()))
}

#[parjob::main]
fn main() -> parjob::Result<()> {
    let data = data(1000, 4);
    costly_compute::clear();

    let (first, t1) = round(&data)?;
    println!("First round - caching the data: {t1:.2} s, means {first:.4?}");
    let (second, t2) = round(&data)?;
    println!("Second round - reloading from the cache: {t2:.3} s, means {second:.4?}");
    assert_eq!(first, second);
    println!(
        "cache: {} (the workers wrote it; this process never called costly_compute)",
        costly_compute::cache_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default()
    );
    costly_compute::clear();
    Ok(())
}
