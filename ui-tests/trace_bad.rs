// trace takes the JSON file's path in a string, not a number or nothing.
use parjob::prelude::*;

#[parallel(backend = "process", trace = 5)]
fn fit(x: u64) -> u64 {
    x
}

#[parallel(trace = "")]
fn score(x: u64) -> u64 {
    x
}

#[parjob::main]
fn main() {
    let _ = fit::map(0..4u64);
    let _ = score::map(0..4u64);
}
