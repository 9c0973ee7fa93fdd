// speculate takes a bool; speculation_multiplier a whole number of at
// least 2; a marked loop on threads copies nothing.
use parjob::prelude::*;

#[parallel(backend = "process", speculate = "yes", speculation_multiplier = 1)]
fn fit(x: u64) -> u64 {
    x
}

#[parallel(backend = "process", speculation_multiplier = 1.5)]
fn score(x: u64) -> u64 {
    x
}

#[parallel(n_jobs = 2)]
fn total(xs: &[u64]) -> u64 {
    let mut sum = 0;
    #[parallel(speculate = true, max_worker_memory = "1GB")]
    for x in xs {
        sum += x;
    }
    sum
}

#[parjob::main]
fn main() {
    let _ = fit::map(0..4u64);
    let _ = score::map(0..4u64);
    let _ = total(&[1, 2, 3]);
}
