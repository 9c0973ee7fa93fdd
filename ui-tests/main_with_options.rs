#[parjob::main(n_jobs = 2)]
fn main() {}
