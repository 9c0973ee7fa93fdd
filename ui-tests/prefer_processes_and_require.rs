use parjob::parallel;

#[parallel(prefer = "processes", require = "sharedmem")]
fn simulate(seed: u64) -> u64 {
    seed
}

#[parjob::main]
fn main() {
    let _ = simulate::map(0..4);
}
