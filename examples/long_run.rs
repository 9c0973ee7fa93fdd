//! A long run that survives its failures: one item crashes its worker once,
//! one grows past the memory limit, one straggles, and the run still
//! finishes every other item, quickly, and says what happened to each.
//!
//! `cargo run --release --example long_run`
//!
//! - `retries = 1`: item 11 aborts its worker on its first attempt and
//!   succeeds on the second.
//! - `max_worker_memory = "512MB"`: item 5 touches 1.5 GB; parjob stops its
//!   worker at the limit and names the item (`Error::MemoryLimit`), twice,
//!   since a memory stop is retried like a crash.
//! - `speculate = true`: item 23's first attempt would sleep 20 s; a copy
//!   on an idle worker finishes in 20 ms and wins.
//! - `on_error = "continue"`: the run goes on past item 5, and
//!   `map_results` gives each item's outcome in input order.

use parjob::prelude::*;
use parjob::Error;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[parallel(
    backend = "process",
    n_jobs = 2,
    retries = 1,
    max_worker_memory = "512MB",
    speculate = true,
    on_error = "continue",
    verbose = 1
)]
fn step(item: u64, scratch: &Path) -> u64 {
    let first = !scratch.join(item.to_string()).exists();
    std::fs::write(scratch.join(item.to_string()), b"").expect("the scratch folder");
    match item {
        11 if first => std::process::abort(),
        5 => {
            let mut held = Vec::new();
            for _ in 0..15 {
                held.push(vec![1u8; 100 << 20]);
                std::thread::sleep(Duration::from_millis(50));
            }
            held.len() as u64
        }
        23 if first => {
            std::thread::sleep(Duration::from_secs(20));
            item
        }
        _ => {
            std::thread::sleep(Duration::from_millis(20));
            item * item
        }
    }
}

#[parjob::main]
fn main() -> parjob::Result<()> {
    let scratch = PathBuf::from(format!("target/long-run-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let started = Instant::now();
    let outcomes = step::map_results((0..40u64).map(|i| (i, scratch.as_path())))?;
    let took = started.elapsed();
    std::fs::remove_dir_all(&scratch)?;

    let ok = outcomes.iter().filter(|o| o.is_ok()).count();
    println!("\n40 items in {took:.2?}: {ok} finished");
    for (item, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Err(Error::Retried { attempts, last, .. }) => {
                println!("  item {item}: failed {attempts} times; last: {last}")
            }
            Err(e) => println!("  item {item}: {e}"),
            Ok(_) if [11, 23].contains(&item) => {
                println!("  item {item}: finished despite its first attempt")
            }
            Ok(_) => {}
        }
    }
    Ok(())
}
