// on_error takes "stop" or "continue"; anything else says both.
use parjob::prelude::*;

#[parallel(on_error = "skip")]
fn square(x: u64) -> u64 {
    x * x
}

fn main() {
    let _ = square::map(0..4u64);
}
