//! The chaos suite: every fault class parjob promises to survive, as a
//! table of (fault, expected error, time bound).
//!
//! Each row runs its fault under [`within`], which fails the row if the
//! call does not return inside its bound: a hang is what the suite catches,
//! not a slow run, so bounds are about five times the expected time.
//! Rows that start workers check through `/proc` that none is left once
//! the runner is dropped; rows where memory is the point run in a child
//! process under `setrlimit`.

#[path = "../common/mod.rs"]
mod common;
mod harness;
mod persist_faults;
mod pool_faults;
mod process_faults;
mod shm_faults;
mod sync_faults;

#[parjob::main]
fn main() {
    harness::run_all(&[
        process_faults::CASES,
        persist_faults::CASES,
        sync_faults::CASES,
        pool_faults::CASES,
        shm_faults::CASES,
    ]);
}
