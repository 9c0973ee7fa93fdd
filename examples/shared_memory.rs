//! Shared memory on the process backend, timed against the copy path.
//!
//! 1. joblib's slice-means example: an 80 MB `Vec<f64>` and 95 tasks, each
//!    the mean of one slice after a 10 ms sleep, on 2 worker processes. The
//!    array is copied once into a sealed memfd that both workers map; with
//!    `max_nbytes = None` it is copied into every job instead.
//! 2. An in-place fill: 2 workers write an 80 MB output buffer through the
//!    disjoint chunks of a `SharedSliceMut` (joblib's `mmap_mode="r+"`
//!    pattern), against tasks that return their chunk for the parent to
//!    copy into place.
//!
//! `cargo run --release --example shared_memory`

use parjob::prelude::*;
use parjob::shm::{ChunkMut, SharedSliceMut};
use std::time::{Duration, Instant};

const NUMBERS: usize = 10_000_000; // 80 MB of f64
const TASKS: usize = 95;

/// The mean of the `k`-th of `TASKS` slices of `data`, after 10 ms.
#[parallel(backend = "process", n_jobs = 2)]
fn slice_mean(data: &[f64], k: usize) -> f64 {
    std::thread::sleep(Duration::from_millis(10));
    let chunk = data.len() / TASKS;
    let slice = &data[k * chunk..(k + 1) * chunk];
    slice.iter().sum::<f64>() / slice.len() as f64
}

fn value(i: usize) -> f64 {
    (i as f64 * 1e-6).sin()
}

/// Fills its chunk of the output buffer in place.
#[parallel(backend = "process", n_jobs = 2)]
fn fill(mut chunk: ChunkMut<f64>) {
    let start = chunk.start();
    for (i, x) in chunk.iter_mut().enumerate() {
        *x = value(start + i);
    }
}

/// Computes a chunk and returns it, for the parent to copy into place.
#[parallel(backend = "process", n_jobs = 2)]
fn compute(start: usize, len: usize) -> Vec<f64> {
    (start..start + len).map(value).collect()
}

fn seconds(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

#[parjob::main]
fn main() -> parjob::Result<()> {
    let data: Vec<f64> = (0..NUMBERS).map(|i| (i % 1000) as f64).collect();
    // Start the workers, so neither row pays for it.
    slice_mean::map([(&data[..TASKS], 0)])?;

    let t = Instant::now();
    let means = slice_mean::map((0..TASKS).map(|k| (&data, k)))?;
    let shared = seconds(t);
    let few = 8;
    let t = Instant::now();
    let copied = slice_mean::with(|p| p.max_nbytes(None)).map((0..few).map(|k| (&data, k)))?;
    let copy_per_task = seconds(t) / few as f64;
    assert_eq!(&means[..few], &copied[..]);
    println!("joblib's slice means: 80 MB array, {TASKS} tasks of 10 ms, 2 worker processes");
    println!("  shared memory (the default):   {shared:.2} s");
    println!(
        "  a copy per job (max_nbytes = None): {copy_per_task:.3} s per task, about {:.0} s for all {TASKS}",
        copy_per_task * TASKS as f64
    );

    let chunk = NUMBERS / 8;
    let mut out = SharedSliceMut::<f64>::zeroed(NUMBERS)?;
    let t = Instant::now();
    fill::map(out.chunks(chunk)?)?;
    let in_place = seconds(t);
    let t = Instant::now();
    let mut copy = vec![0.0; NUMBERS];
    let parts = compute::with(|p| p.max_nbytes(None)).map(
        (0..NUMBERS)
            .step_by(chunk)
            .map(|s| (s, chunk.min(NUMBERS - s))),
    )?;
    for (k, part) in parts.iter().enumerate() {
        copy[k * chunk..k * chunk + part.len()].copy_from_slice(part);
    }
    let returned = seconds(t);
    assert_eq!(out.as_slice()?, &copy[..]);
    println!("filling an 80 MB output in 8 chunks on 2 worker processes");
    println!("  in place, SharedSliceMut chunks: {in_place:.2} s");
    println!("  returned and copied into place:  {returned:.2} s");
    Ok(())
}
