use parjob::prelude::*;

struct Summary {
    total: f64,
}

#[parallel(backend = "process")]
fn summarize(xs: Vec<f64>) -> Summary {
    Summary { total: xs.iter().sum() }
}

fn main() {
    let _ = summarize(vec![1.0]).total;
}
