use parjob::prelude::*;

#[parallel(n_jobs = 2)]
struct Simulation {
    seed: u64,
}

fn main() {
    let _ = Simulation { seed: 1 }.seed;
}
