//! Resident memory of this process and its descendants, from `/proc`,
//! for the benchmarks and examples that report a process tree's peak.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Resident memory of this process and every descendant, in bytes.
pub fn tree_rss() -> u64 {
    fn rss(pid: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    }
    let mut total = 0;
    let mut stack = vec![std::process::id().to_string()];
    while let Some(pid) = stack.pop() {
        total += rss(&pid);
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
        for task in tasks.into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            stack.extend(text.split_whitespace().map(str::to_string));
        }
    }
    total
}

/// The peak of [`tree_rss`] while `f` runs, sampled every `every`.
pub fn peak_rss<T>(every: Duration, f: impl FnOnce() -> T) -> (T, u64) {
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(tree_rss(), Ordering::Relaxed);
                std::thread::sleep(every);
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("the sampler does not panic");
    (out, peak.load(Ordering::Relaxed))
}
