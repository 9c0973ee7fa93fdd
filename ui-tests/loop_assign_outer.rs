use parjob::prelude::*;

#[parallel(n_jobs = 2)]
fn last_even(xs: &[u64]) -> u64 {
    let mut last = 0;
    #[parallel]
    for x in xs {
        if x % 2 == 0 {
            last = *x;
        }
    }
    last
}

fn main() {
    let _ = last_even(&[1, 2, 3]);
}
