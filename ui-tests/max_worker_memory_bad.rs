// max_worker_memory takes a size in a string, never zero.
use parjob::prelude::*;

#[parallel(backend = "process", max_worker_memory = 2048)]
fn fit(x: u64) -> u64 {
    x
}

#[parallel(backend = "process", max_worker_memory = "0GB")]
fn score(x: u64) -> u64 {
    x
}

#[parallel(backend = "process", max_worker_memory = "two gigs")]
fn rank(x: u64) -> u64 {
    x
}

#[parjob::main]
fn main() {
    let _ = fit::map(0..4u64);
    let _ = score::map(0..4u64);
    let _ = rank::map(0..4u64);
}
