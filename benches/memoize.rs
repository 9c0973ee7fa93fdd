//! `#[memoize]` benchmarks, measured in one run.
//!
//! `cargo bench --bench memoize`
//!
//! 1. A hit with small arguments (joblib 85 us here; target <= 10 us).
//! 2. A miss that computes nothing and stores a small result (joblib
//!    326 us; target <= 60 us).
//! 3. A hit whose argument is an 80 MB `Vec<f64>` (joblib 105 ms; target
//!    <= 55 ms), beside sha256 of the same 80 MB in the same run.

use parjob::prelude::*;
use sha2::Digest;
use std::hint::black_box;
use std::time::{Duration, Instant};

#[memoize(dir = "target/bench-memo")]
fn small(x: u64, y: u64) -> u64 {
    x + y
}

#[memoize(dir = "target/bench-memo")]
fn first(data: &[f64]) -> f64 {
    data[0]
}

fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    best
}

fn main() {
    let _ = std::fs::remove_dir_all("target/bench-memo");
    println!("| case | parjob | baseline | ratio | target |");
    println!("|---|---|---|---|---|");

    // 1. Small hits.
    small(1, 2);
    let n = 20_000;
    let hit = best(5, || {
        for _ in 0..n {
            black_box(small(black_box(1), 2));
        }
    }) / n;
    assert_eq!(small::stats().misses, 1);
    println!(
        "| small hit | {:.2} us | joblib 85 us | {:.0}x faster | <= 10 us |",
        hit.as_secs_f64() * 1e6,
        85e-6 / hit.as_secs_f64()
    );

    // 2. Small misses: every call has new arguments.
    let mut next = 1_000_000u64;
    let m = 2_000;
    let miss = best(3, || {
        for _ in 0..m {
            next += 1;
            black_box(small(next, 0));
        }
    }) / m as u32;
    println!(
        "| small miss (compute nothing, store a u64) | {:.2} us | joblib 326 us | {:.0}x faster | <= 60 us |",
        miss.as_secs_f64() * 1e6,
        326e-6 / miss.as_secs_f64()
    );

    // 3. A hit with an 80 MB argument, beside sha256 of the same bytes.
    let data: Vec<f64> = (0..10_000_000).map(|i| i as f64 * 0.5).collect();
    first(&data);
    let large = best(5, || {
        black_box(first(black_box(&data)));
    });
    assert!(first::stats().hits >= 5);
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    let sha = best(5, || {
        black_box(sha2::Sha256::digest(black_box(&bytes)));
    });
    println!(
        "| hit with an 80 MB Vec<f64> argument | {:.1} ms | sha256 of 80 MB {:.1} ms, joblib 105 ms | {:.2}x sha256 | <= 55 ms |",
        large.as_secs_f64() * 1e3,
        sha.as_secs_f64() * 1e3,
        large.as_secs_f64() / sha.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all("target/bench-memo");
}
