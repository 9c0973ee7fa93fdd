use parjob::prelude::*;

#[memoize(dir = "target/cache")]
fn slow(x: u64) -> u64 {
    x + 1
}

fn main() {
    let _ = slow(1);
}
