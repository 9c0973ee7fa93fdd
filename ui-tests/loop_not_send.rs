use parjob::prelude::*;
use std::rc::Rc;

#[parallel(n_jobs = 2)]
fn scaled(xs: &[u64]) -> u64 {
    let factor = Rc::new(3u64);
    let mut total = 0;
    #[parallel]
    for x in xs {
        total += x * *factor;
    }
    total
}

fn main() {
    let _ = scaled(&[1, 2, 3]);
}
