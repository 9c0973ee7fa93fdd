use parjob::prelude::*;

#[parallel(n_jobs = 2, batch_size = 0)]
fn square(x: u64) -> u64 {
    x * x
}

fn main() {
    let _ = square(3);
}
