use parjob::parallel;

#[parallel(backend = "process", require = "sharedmem")]
fn simulate(seed: u64) -> u64 {
    seed
}

#[parallel(prefer = "gpu")]
fn hinted(seed: u64) -> u64 {
    seed
}

#[parjob::main]
fn main() {
    let _ = simulate::map(0..4);
    let _ = hinted::map(0..4);
}
