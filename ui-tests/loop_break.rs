use parjob::prelude::*;

#[parallel(n_jobs = 2)]
fn first_big(xs: &[u64]) -> u64 {
    let mut total = 0;
    #[parallel]
    for x in xs {
        if *x > 100 {
            break;
        }
        total += x;
    }
    total
}

fn main() {
    let _ = first_big(&[1, 2, 300]);
}
