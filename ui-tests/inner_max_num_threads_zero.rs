use parjob::prelude::*;

#[parallel(backend = "process", inner_max_num_threads = 0)]
fn fit(x: u64) -> u64 {
    x
}

fn main() {
    let _ = fit(1);
}
