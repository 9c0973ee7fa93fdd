use parjob::prelude::*;

#[parallel(njobs = 2)]
fn square(x: u64) -> u64 {
    x * x
}

fn main() {
    let _ = square(3);
}
