//! The tiny task the benches time fixed costs with: `x * x`, on 2
//! worker processes and on 2 threads.

use parjob::prelude::*;

/// `x * x` on 2 worker processes.
#[parallel(n_jobs = 2, backend = "process")]
pub fn square(x: u64) -> u64 {
    x * x
}

/// `x * x` on 2 threads.
#[parallel(n_jobs = 2)]
pub fn square_here(x: u64) -> u64 {
    x * x
}
