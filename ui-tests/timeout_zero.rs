use parjob::prelude::*;

#[parallel(n_jobs = 2, timeout = "0ms")]
fn square(x: u64) -> u64 {
    x * x
}

fn main() {
    let _ = square(3);
}
