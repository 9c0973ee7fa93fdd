use parjob::prelude::*;

struct Report {
    total: f64,
}

#[memoize(dir = "target/ui-cache")]
fn report(x: u64) -> Report {
    Report { total: x as f64 }
}

fn main() {
    let _ = report(1).total;
}
