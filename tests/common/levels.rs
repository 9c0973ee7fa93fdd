//! What a default run plans at each nesting level, for the nesting tests
//! here and the MPI ones (`tests/mpi`), which include this file.

use parjob::prelude::*;
use parjob::{Backend, Plan};

/// A plan as it crosses a process boundary: backend, n_jobs, and the
/// source's `Debug` text.
pub type Described = (String, usize, String);

/// `plan` as [`Described`].
pub fn describe(plan: Plan) -> Described {
    (
        plan.backend.to_string(),
        plan.n_jobs,
        format!("{:?}", plan.backend_source),
    )
}

/// The plan of a default run here, then `depth - 1` levels below, each
/// inside an explicit run of two threads.
#[parallel]
pub fn plans_from_here(depth: u32) -> Vec<Described> {
    let mut out = vec![describe(Parallel::new().plan().unwrap())];
    if depth > 1 {
        let below = Parallel::new()
            .n_jobs(2)
            .backend(Backend::Thread)
            .run([plans_from_here::delayed(depth - 1)])
            .unwrap();
        out.extend(below.into_iter().next().unwrap());
    }
    out
}
