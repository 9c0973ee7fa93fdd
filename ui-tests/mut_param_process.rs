use parjob::prelude::*;

#[parallel(backend = "process")]
fn normalize(values: &mut Vec<f64>) {
    let total: f64 = values.iter().sum();
    values.iter_mut().for_each(|v| *v /= total);
}

fn main() {
    normalize(&mut vec![1.0, 3.0]);
}
