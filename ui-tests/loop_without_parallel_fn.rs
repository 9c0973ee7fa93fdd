use parjob::prelude::*;

fn total(xs: &[f64]) -> f64 {
    let mut sum = 0.0;
    #[parallel]
    for x in xs {
        sum += x;
    }
    sum
}

fn main() {
    let _ = total(&[1.0]);
}
