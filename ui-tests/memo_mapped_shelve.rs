use parjob::prelude::*;

#[memoize(dir = "target/ui-cache", mmap_mode = "r")]
fn ramp(n: u64) -> Vec<f64> {
    (0..n).map(|i| i as f64).collect()
}

fn main() {
    let _later = ramp::call_and_shelve(3);
}
