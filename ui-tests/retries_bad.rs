// retries takes a count of further attempts; retry_panics a bool.
use parjob::prelude::*;

#[parallel(backend = "process", retries = -1, retry_panics = "yes")]
fn fit(x: u64) -> u64 {
    x
}

#[parjob::main]
fn main() {
    let _ = fit::map(0..4u64);
}
