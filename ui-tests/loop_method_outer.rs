use parjob::prelude::*;

#[parallel(n_jobs = 2)]
fn evens(xs: &[u64]) -> Vec<u64> {
    let mut seen = Vec::new();
    #[parallel]
    for x in xs {
        if x % 2 == 1 {
            seen.clear();
        }
        seen.push(*x);
    }
    seen
}

fn main() {
    let _ = evens(&[1, 2, 3]);
}
