use parjob::prelude::*;

#[parallel(n_jobs = 2, return_as = "stream")]
fn square(x: u64) -> u64 {
    x * x
}

fn main() {
    let _ = square(3);
}
