use parjob::prelude::*;

#[memoize(dir = "target/ui-cache", mmap_mode = "r")]
fn label(x: u64) -> String {
    x.to_string()
}

#[memoize(dir = "target/ui-cache", mmap_mode = "r", compress = 3)]
fn ramp(n: u64) -> Vec<f64> {
    (0..n).map(|i| i as f64).collect()
}

#[memoize(dir = "target/ui-cache", mmap_mode = "r+")]
fn writable(n: u64) -> Vec<f64> {
    (0..n).map(|i| i as f64).collect()
}

fn main() {
    let _ = (label(1), ramp(2), writable(3));
}
