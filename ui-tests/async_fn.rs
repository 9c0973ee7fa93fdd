use parjob::prelude::*;

#[parallel(n_jobs = 2)]
async fn fetch(id: u64) -> u64 {
    id
}

fn main() {
    let _ = fetch(1);
}
