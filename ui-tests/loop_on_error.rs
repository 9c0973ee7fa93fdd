// A marked loop on threads has no per-item outcomes to keep going past:
// on_error belongs to f::map and Parallel.
use parjob::prelude::*;

#[parallel(n_jobs = 2)]
fn total(xs: &[u64]) -> u64 {
    let mut sum = 0;
    #[parallel(on_error = "continue")]
    for x in xs {
        sum += x;
    }
    sum
}

fn main() {
    let _ = total(&[1, 2, 3]);
}
