//! `#[memoize]` benchmarks, measured in one run.
//!
//! `cargo bench --bench memoize`
//!
//! 1. A hit with small arguments (joblib 85 us here; target <= 2 us).
//! 2. A miss that computes nothing and stores a small result, beside one
//!    atomic small-file write in the same run (joblib 326 us; target <= 2x
//!    the write).
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
        "| small hit | {:.2} us | joblib 85 us | {:.0}x faster | <= 2 us |",
        hit.as_secs_f64() * 1e6,
        85e-6 / hit.as_secs_f64()
    );

    // 2. Small misses: every call has new arguments, beside one atomic
    // small-file write (a temporary file written and renamed), in
    // alternated blocks of 100: the file system's speed drifts within
    // seconds (ext4 skips recently deleted inodes when it makes a file).
    let files = std::path::Path::new("target/bench-memo/files");
    std::fs::create_dir_all(files).unwrap();
    let mut next = 1_000_000u64;
    let (mut miss, mut write) = (Duration::ZERO, Duration::ZERO);
    let m = 2_000u32;
    for block in 0..m / 100 {
        let t = Instant::now();
        for _ in 0..100 {
            next += 1;
            black_box(small(next, 0));
        }
        miss += t.elapsed();
        let t = Instant::now();
        for k in 0..100 {
            let tmp = files.join(format!(".tmp-{block}-{k}"));
            std::fs::write(&tmp, next.to_le_bytes()).unwrap();
            std::fs::rename(&tmp, files.join(format!("entry-{block}-{k}"))).unwrap();
        }
        write += t.elapsed();
    }
    let (miss, write) = (miss / m, write / m);
    println!(
        "| small miss (compute nothing, store a u64) | {:.2} us | atomic small-file write {:.2} us, joblib 326 us | {:.2}x the write | <= 2x the write |",
        miss.as_secs_f64() * 1e6,
        write.as_secs_f64() * 1e6,
        miss.as_secs_f64() / write.as_secs_f64()
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
