use parjob::prelude::*;

#[parallel(n_jobs = 2, bakend = "process")]
fn square(x: u64) -> u64 {
    x * x
}

fn main() {
    // Only the misspelled option is an error: `square::map` still resolves.
    let squares: Vec<u64> = square::map(0..4).unwrap();
    let job = square::delayed(3);
    let _ = (squares, job);
}
