use parjob::prelude::*;

fn simulate(seed: u64, steps: usize) -> f64 {
    (seed as usize * steps) as f64
}

#[parjob::main]
fn main() -> parjob::Result<()> {
    let means = parallel_for!(backend = "process"; for s in 0..10u64 { simulate(s, 100) })?;
    assert_eq!(means.len(), 10);
    Ok(())
}
