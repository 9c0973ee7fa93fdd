use parjob::prelude::*;

#[parallel(backend = "process", mmap_mode = "r+")]
fn mean(data: &[f64]) -> f64 {
    data.iter().sum::<f64>() / data.len() as f64
}

fn main() {
    let _ = mean::map([vec![1.0]]);
}
