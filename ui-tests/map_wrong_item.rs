use parjob::prelude::*;

#[parallel]
fn total(xs: &[f64]) -> f64 {
    xs.iter().sum()
}

fn main() {
    let names = vec!["a", "b"];
    let _ = total::map(&names);
}
