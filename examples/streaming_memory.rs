//! The joblib tutorials' memory experiment: 150 tasks, each sleeping 0.1 s and
//! returning a 10000 x 200 array of f64 (16 MB), on 2 worker processes,
//! reduced by summation. It prints the peak RSS of the whole process tree
//! (this process and its workers) for each way of getting the results,
//! next to joblib's figures from the seed's plot.
//!
//! `cargo run --release --example streaming_memory`
//!
//! Each scenario runs in a fresh copy of this program, so one scenario's
//! peak cannot hide in another's.

#[path = "../benches/support/memory.rs"]
mod memory;

use memory::peak_rss;
use parjob::prelude::*;
use std::time::{Duration, Instant};

const TASKS: u64 = 150;
const ROWS: usize = 10_000;
const COLS: usize = 200;

/// Sleeps, then returns a 16 MB array whose values depend on `i`.
#[parallel(n_jobs = 2, backend = "process")]
fn make_array(i: u64, sleep_s: f64) -> Vec<f64> {
    std::thread::sleep(Duration::from_secs_f64(sleep_s));
    vec![i as f64; ROWS * COLS]
}

fn sleep_for(i: u64, slow: bool) -> f64 {
    if slow && i % 60 == 0 {
        5.0
    } else {
        0.1
    }
}

fn add(acc: &mut [f64], x: &[f64]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

/// The 150 arrays summed as scenario `name` consumes them, and the time.
fn sum_all(name: &str) -> parjob::Result<(Vec<f64>, f64)> {
    let slow = name.ends_with("slow");
    let p = Parallel::new().n_jobs(2).backend(Backend::Process);
    let jobs = (0..TASKS).map(|i| make_array::delayed(i, sleep_for(i, slow)));
    let started = Instant::now();
    let mut acc = vec![0.0; ROWS * COLS];
    match name {
        "run" => {
            for a in p.run(jobs)? {
                add(&mut acc, &a);
            }
        }
        "iter" | "iter_slow" => {
            for a in p.iter(jobs) {
                add(&mut acc, &a?);
            }
        }
        "iter_unordered_slow" => {
            for r in p.iter_unordered(jobs) {
                add(&mut acc, &r?.1);
            }
        }
        other => panic!("unknown scenario {other}"),
    }
    Ok((acc, started.elapsed().as_secs_f64()))
}

/// Runs one scenario here and prints `peak_mb elapsed_s checksum`.
fn scenario(name: &str) -> parjob::Result<()> {
    let (summed, peak) = peak_rss(Duration::from_millis(5), || sum_all(name));
    let (acc, elapsed) = summed?;
    // Every element is the sum 0 + 1 + ... + 149.
    let expected = (TASKS * (TASKS - 1) / 2) as f64;
    assert!(acc.iter().all(|&v| v == expected), "wrong sum");
    println!("{} {elapsed:.2} {}", peak / (1 << 20), acc[0]);
    Ok(())
}

#[parjob::main]
fn main() -> parjob::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(name) = args
        .iter()
        .position(|a| a == "--scenario")
        .map(|i| &args[i + 1])
    {
        return scenario(name);
    }
    println!("150 tasks x (sleep 0.1 s, return 16 MB), n_jobs = 2, process backend, summed\n");
    println!(
        "| how results are consumed | peak RSS, process tree | time | joblib (tutorial) | target |"
    );
    println!("|---|---|---|---|---|");
    let rows = [
        ("run", "run (list)", "-", "report"),
        ("iter", "iter (ordered)", "89 MB", "<= 100 MB"),
        (
            "iter_slow",
            "iter, every 60th task sleeps 5 s",
            "495 MB",
            "<= 150 MB",
        ),
        (
            "iter_unordered_slow",
            "iter_unordered, every 60th task sleeps 5 s",
            "76 MB",
            "<= 100 MB",
        ),
    ];
    for (name, label, joblib, target) in rows {
        let out = std::process::Command::new(std::env::current_exe().expect("this program's path"))
            .args(["--scenario", name])
            .output()
            .expect("running a scenario");
        let text = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = text.split_whitespace().collect();
        if !out.status.success() || fields.len() < 2 {
            eprintln!("{name} failed: {}", String::from_utf8_lossy(&out.stderr));
            continue;
        }
        println!(
            "| {label} | {} MB | {} s | {joblib} | {target} |",
            fields[0], fields[1]
        );
    }
    Ok(())
}
