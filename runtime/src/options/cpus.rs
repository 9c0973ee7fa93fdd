//! How many CPUs this code may use, cheaply enough to ask on every run.
//!
//! `std::thread::available_parallelism` reads the cgroup's CPU quota files
//! on every call (about 13 us here), and every run, marked loop and nested
//! plan asks. The answer is kept per thread for [`FRESH_FOR`], and only
//! while the thread's affinity mask (one cheap syscall) still counts the
//! same CPUs: `taskset` on a thread is seen at once, a changed quota
//! within a second.

use super::{env_var, ENV_MAX_CPU_COUNT};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long a thread reuses its last count while its mask is unchanged.
const FRESH_FOR: Duration = Duration::from_secs(1);

thread_local! {
    /// The CPUs in this thread's mask, the count then, and when.
    static LAST: Cell<Option<(usize, usize, Instant)>> = const { Cell::new(None) };
}

/// The number of CPUs this process may use.
///
/// It respects the CPU affinity mask (`taskset`, `sched_setaffinity`) and
/// cgroup v1/v2 CPU quotas (containers, Slurm), through
/// [`std::thread::available_parallelism`], and is capped by
/// `PARJOB_MAX_CPU_COUNT` when that is set. It is never below 1.
///
/// ```
/// assert!(parjob_runtime::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    let cpus = available();
    let cap = env_var(ENV_MAX_CPU_COUNT)
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&c| c > 0);
    match cap {
        Some(c) => cpus.min(c),
        None => cpus,
    }
}

/// `available_parallelism`, reused while fresh and the mask is the same.
fn available() -> usize {
    let mask = mask_count();
    if let (Some(mask), Some((seen, count, at))) = (mask, LAST.with(Cell::get)) {
        if seen == mask && at.elapsed() < FRESH_FOR {
            return count;
        }
    }
    let count = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if let Some(mask) = mask {
        LAST.with(|last| last.set(Some((mask, count, Instant::now()))));
    }
    count
}

/// The CPUs in this thread's affinity mask, if the kernel says.
fn mask_count() -> Option<usize> {
    // SAFETY: sched_getaffinity fills a zeroed cpu_set_t of the size given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) != 0 {
            return None;
        }
        Some(libc::CPU_COUNT(&set) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_count_follows_a_changed_mask_at_once() {
        let all = cpu_count();
        let one = std::thread::spawn(|| {
            let first = cpu_count();
            // SAFETY: plain libc calls on a zeroed cpu_set_t for this thread only.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                assert_eq!(
                    libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
                    0
                );
            }
            (first, cpu_count())
        })
        .join()
        .unwrap();
        assert_eq!(one, (all, 1));
    }
}
