use parjob::prelude::*;

#[parallel(n_jobs = 2)]
fn sum_of_squares(xs: &[u64]) -> parjob::Result<u64> {
    let mut total = 0;
    #[parallel(backend = "process")]
    for x in xs {
        total += x * x;
    }
    Ok(total)
}

fn main() {
    let _ = sum_of_squares(&[1, 2, 3]);
}
