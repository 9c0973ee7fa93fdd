use parjob::prelude::*;

#[parallel(n_jobs = 2)]
fn pairs(xs: &[u64]) -> u64 {
    let mut total = 0;
    #[parallel]
    'rows: for x in xs {
        for y in xs {
            if y > x {
                continue 'rows;
            }
            total += x * y;
        }
    }
    total
}

fn main() {
    let _ = pairs(&[1, 2, 3]);
}
