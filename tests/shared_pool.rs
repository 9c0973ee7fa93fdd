//! The shared pool behind `f::map`: reused between calls, stopped when idle.

mod common;

use common::is_alive;
use parjob::prelude::*;
use std::collections::HashSet;
use std::time::Duration;

#[parallel(n_jobs = 2, backend = "process")]
fn pid_of(_x: u32) -> u32 {
    std::process::id()
}

#[parjob::test]
fn map_reuses_its_workers_and_stops_them_when_idle() {
    parjob::__private::map::set_shared_idle_timeout(Duration::from_secs(2));
    let first: HashSet<u32> = pid_of::map(0..40).unwrap().into_iter().collect();
    let second: HashSet<u32> = pid_of::map(0..40).unwrap().into_iter().collect();
    assert!(!first.contains(&std::process::id()));
    assert!(second.is_subset(&first) || first.is_subset(&second));
    let all: HashSet<u32> = first.union(&second).copied().collect();
    assert!(
        all.len() <= 2,
        "{all:?}: the second map started new workers"
    );
    assert!(all.iter().all(|&p| is_alive(p)));

    let pids: Vec<u32> = all.iter().copied().collect();
    assert!(
        common::wait_all_dead(&pids, Duration::from_secs(20)).is_empty(),
        "idle workers were not stopped"
    );
    // And the next map starts new ones.
    let third: HashSet<u32> = pid_of::map(0..4).unwrap().into_iter().collect();
    assert!(third.is_disjoint(&all));
}
