use parjob::prelude::*;

#[parallel(n_jobs = 2)]
fn find(xs: &[u64], wanted: u64) -> bool {
    #[parallel]
    for x in xs {
        if *x == wanted {
            return true;
        }
    }
    false
}

fn main() {
    let _ = find(&[1, 2, 3], 2);
}
