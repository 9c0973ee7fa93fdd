use parjob::prelude::*;

#[parallel(backend = "process")]
fn square(x: u64) -> u64 {
    x * x
}

#[parallel]
fn squares(n: u64) -> Vec<u64> {
    let mut out = Vec::new();
    #[parallel(backend = "process")]
    for x in 0..n {
        out.push(square(x));
    }
    out
}

#[parjob::main]
fn main() {
    let _ = squares(4);
}
