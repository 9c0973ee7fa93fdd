use parjob::prelude::*;

#[parallel(n_jobs = 2)]
fn running(xs: &[u64]) -> Vec<u64> {
    let mut total = 0;
    let mut prefix = Vec::new();
    #[parallel]
    for x in xs {
        total += x;
        prefix.push(total);
    }
    prefix
}

fn main() {
    let _ = running(&[1, 2, 3]);
}
