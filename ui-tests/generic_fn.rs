use parjob::prelude::*;

#[parallel(n_jobs = 2)]
fn double<T: std::ops::Add<Output = T> + Copy>(x: T) -> T {
    x + x
}

fn main() {
    let _ = double(2);
}
