use parjob::prelude::*;

#[memoize(dir = "target/ui-cache", compress = "zlib:10")]
fn features(x: u64) -> Vec<u64> {
    vec![x]
}

fn main() {
    let _ = features(1);
}
