use parjob::prelude::*;

#[parallel(backend = "process")]
fn mean(xs: Vec<f64>) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[parallel]
fn means(rows: &Vec<Vec<f64>>) -> parjob::Result<Vec<f64>> {
    let mut out = Vec::new();
    #[parallel(backend = "process")]
    for row in rows {
        out.push(mean(row));
    }
    Ok(out)
}

#[parjob::main]
fn main() {
    let _ = means(&vec![vec![1.0]]);
}
