//! The memory watch: how much memory each worker process holds, and the
//! run's `max_worker_memory`.
//!
//! Where this process may make memory cgroups, each worker gets one
//! (`cgroup.rs`), and the kernel holds it to the limit exactly; its OOM
//! counter then says that the kernel stopped it at the limit. Elsewhere
//! the watch below stops it.
//!
//! One thread per pool reads `/proc/<pid>/statm` of every live worker,
//! every [`PERIOD_LIMITED`] when the run has a limit and every
//! [`PERIOD_WATCHING`] otherwise, together with `MemAvailable` from
//! `/proc/meminfo`. A worker's memory is its resident pages that are its
//! own (`statm`'s resident minus shared): the shared-memory arguments
//! every worker maps, and the binary's own pages, are not its growth. A
//! worker over the limit is sent SIGKILL through its `pidfd` (never a
//! recycled pid) before the kernel has to act, and its gauge keeps the
//! reading that crossed the limit, so the session names the item that
//! grew too large (`Error::MemoryLimit`). A spike that comes and goes
//! within one period is not seen: the limit is a watch, not a wall.
//!
//! The readings also explain a death the watch did not cause: a worker
//! killed by SIGKILL is reported with its last reading and the memory
//! the machine had left, and the kernel's OOM killer is named when
//! `/proc/vmstat`'s `oom_kill` counter grew since that reading.
//!
//! Nothing here runs on the scheduler's thread but two reads of the
//! gauges' atomics and, at a SIGKILL death, one read of `/proc/vmstat`.

use super::cgroup::WorkerGroup;
use super::exit::ExitWatch;
use crate::error::MemoryReading;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// How often workers are read while the run has a memory limit.
pub(crate) const PERIOD_LIMITED: Duration = Duration::from_millis(20);
/// How often workers are read otherwise (for a death's report and the
/// peaks of `verbose >= 2`).
pub(crate) const PERIOD_WATCHING: Duration = Duration::from_millis(100);

/// What a run asks of the memory watch.
#[derive(Clone, Copy, Default)]
pub(crate) struct MemoryRules {
    /// `max_worker_memory`, in bytes.
    pub(crate) limit: Option<u64>,
    /// Print each worker's peak at the end of the run (`verbose >= 2`).
    pub(crate) report_peaks: bool,
    /// Say how the limit is held (`verbose >= 1`).
    pub(crate) say_how: bool,
}

/// The worker whose readings [`traced_reads`] counts (0: none), and the
/// count: a test waits for two readings of one worker to know that its
/// memory has been read.
static TRACED: AtomicU32 = AtomicU32::new(0);
static TRACED_READS: AtomicU64 = AtomicU64::new(0);

/// Starts counting the memory watch's readings of worker `pid`, from 0.
pub fn trace_reads(pid: u32) {
    TRACED_READS.store(0, Ordering::SeqCst);
    TRACED.store(pid, Ordering::SeqCst);
}

/// How many times the memory watch has read the worker given to
/// [`trace_reads`] since.
pub fn traced_reads() -> u64 {
    TRACED_READS.load(Ordering::SeqCst)
}

/// One worker's readings, written by the watch thread.
pub(super) struct Gauge {
    watch: Arc<ExitWatch>,
    sampled: AtomicBool,
    rss: AtomicU64,
    peak: AtomicU64,
    /// `MemAvailable` at the last reading.
    available: AtomicU64,
    /// `/proc/vmstat`'s `oom_kill` at the last reading.
    oom_kills: AtomicU64,
    /// The reading that made the watch stop the worker (0: not stopped),
    /// and the limit it crossed.
    stopped_at: AtomicU64,
    stopped_limit: AtomicU64,
    /// The worker's own memory cgroup (`cgroup.rs`), once the watch thread
    /// has tried to make it, and the limit the kernel holds it to
    /// (`NO_LIMIT` for none, `UNSET` before one is written).
    group: Mutex<Option<WorkerGroup>>,
    group_tried: AtomicBool,
    group_limit: AtomicU64,
}

/// `Gauge::group_limit` when the group has no limit.
const NO_LIMIT: u64 = u64::MAX;
/// `Gauge::group_limit` before a limit was written.
const UNSET: u64 = 0;

impl Gauge {
    /// The last reading, with the machine's available memory then.
    pub(super) fn last(&self) -> Option<MemoryReading> {
        self.sampled.load(Ordering::Acquire).then(|| MemoryReading {
            rss: self.rss.load(Ordering::Relaxed),
            available: self.available.load(Ordering::Relaxed),
            oom_killer: false,
        })
    }

    /// The most memory seen held in this run.
    pub(super) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// The most memory held in this run, with a reading taken now, so a
    /// run shorter than the watch's period still has one.
    pub(super) fn peak_now(&self) -> u64 {
        let now = own_resident(self.watch.pid()).unwrap_or(0);
        self.peak.fetch_max(now, Ordering::Relaxed).max(now)
    }

    /// `(reading, limit)` when the watch stopped the worker for its memory.
    pub(super) fn stopped(&self) -> Option<(u64, u64)> {
        let at = self.stopped_at.load(Ordering::Acquire);
        (at > 0).then(|| (at, self.stopped_limit.load(Ordering::Relaxed)))
    }

    /// `(peak, limit)` when the kernel stopped the worker at the limit its
    /// cgroup held it to (the group's OOM counter grew).
    pub(super) fn kernel_stopped(&self) -> Option<(u64, u64)> {
        let limit = self.group_limit.load(Ordering::Acquire);
        if limit == UNSET || limit == NO_LIMIT {
            return None;
        }
        let group = self.group.lock().unwrap_or_else(PoisonError::into_inner);
        let group = group.as_ref()?;
        (group.oom_kills() > 0).then(|| (group.peak().unwrap_or_else(|| self.peak()), limit))
    }

    /// Whether the kernel holds the worker to `limit` through its cgroup.
    fn held_by_kernel(&self, limit: u64) -> bool {
        self.group_limit.load(Ordering::Acquire) == limit
    }

    /// Makes the worker's cgroup on the first call, and gives it `limit`
    /// when it holds another. Runs on the watch thread.
    fn sync_group(&self, limit: Option<u64>) {
        let mut group = self.group.lock().unwrap_or_else(PoisonError::into_inner);
        // A group is made only once a run asks for a limit.
        if limit.is_some() && !self.group_tried.swap(true, Ordering::AcqRel) {
            *group = WorkerGroup::create(self.watch.pid());
        }
        let Some(g) = group.as_ref() else {
            return;
        };
        let wanted = limit.unwrap_or(NO_LIMIT);
        if self.group_limit.load(Ordering::Acquire) != wanted {
            let applied = if g.set_limit(limit) { wanted } else { UNSET };
            self.group_limit.store(applied, Ordering::Release);
        }
    }

    /// The last reading of a worker that died by a SIGKILL parjob did not
    /// send, with `oom_killer` set when the kernel's OOM killer has run
    /// since that reading.
    pub(super) fn death_reading(&self) -> Option<MemoryReading> {
        let mut reading = self.last()?;
        let before = self.oom_kills.load(Ordering::Relaxed);
        reading.oom_killer = oom_kills().is_some_and(|now| now > before);
        Some(reading)
    }
}

struct State {
    gauges: Vec<Arc<Gauge>>,
    limit: Option<u64>,
    closed: bool,
    started: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// A pool's memory watch: its gauges, its limit and its thread, which
/// ends when the watch is dropped.
pub(super) struct MemoryWatch {
    shared: Arc<Shared>,
}

impl MemoryWatch {
    pub(super) fn new() -> MemoryWatch {
        let state = State {
            gauges: Vec::new(),
            limit: None,
            closed: false,
            started: false,
        };
        MemoryWatch {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                wake: Condvar::new(),
            }),
        }
    }

    /// Sets the limit of the run about to start (`None`: no limit), and
    /// forgets the peaks of earlier runs.
    pub(super) fn start_run(&self, limit: Option<u64>) {
        let mut state = self.lock();
        state.limit = limit;
        for g in &state.gauges {
            g.peak
                .store(g.rss.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.shared.wake.notify_all();
    }

    /// Starts watching a new worker (and the thread, on the first one).
    pub(super) fn watch(&self, watch: Arc<ExitWatch>) -> Arc<Gauge> {
        let gauge = Arc::new(Gauge {
            watch,
            sampled: AtomicBool::new(false),
            rss: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            available: AtomicU64::new(0),
            oom_kills: AtomicU64::new(0),
            stopped_at: AtomicU64::new(0),
            stopped_limit: AtomicU64::new(0),
            group: Mutex::new(None),
            group_tried: AtomicBool::new(false),
            group_limit: AtomicU64::new(UNSET),
        });
        let mut state = self.lock();
        state.gauges.push(gauge.clone());
        if !state.started {
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("parjob-memory".into())
                .spawn(move || run(&shared));
            // Without the thread there are no readings: the run goes on
            // unwatched rather than failing.
            state.started = spawned.is_ok();
        }
        self.shared.wake.notify_all();
        gauge
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

/// The watch thread: reads every live worker, stops those over the
/// limit, and sleeps a period (or until there is a worker to read).
fn run(shared: &Shared) {
    let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        if state.closed {
            return;
        }
        // A gauge only this thread holds belongs to a worker that is gone.
        state.gauges.retain(|g| Arc::strong_count(g) > 1);
        if state.gauges.is_empty() {
            state = shared
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            continue;
        }
        let gauges = state.gauges.clone();
        let limit = state.limit;
        drop(state);
        read_all(&gauges, limit);
        drop(gauges);
        super::cgroup::remove_left();
        let period = if limit.is_some() {
            PERIOD_LIMITED
        } else {
            PERIOD_WATCHING
        };
        state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.closed {
            state = shared
                .wake
                .wait_timeout(state, period)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// One round of readings.
fn read_all(gauges: &[Arc<Gauge>], limit: Option<u64>) {
    let available = mem_available().unwrap_or(0);
    let oom = oom_kills().unwrap_or(0);
    for g in gauges {
        if g.watch.has_exited() {
            continue;
        }
        g.sync_group(limit);
        let Some(rss) = own_resident(g.watch.pid()) else {
            continue;
        };
        g.rss.store(rss, Ordering::Relaxed);
        g.peak.fetch_max(rss, Ordering::Relaxed);
        g.available.store(available, Ordering::Relaxed);
        g.oom_kills.store(oom, Ordering::Relaxed);
        g.sampled.store(true, Ordering::Release);
        if TRACED.load(Ordering::SeqCst) == g.watch.pid() {
            TRACED_READS.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(limit) = limit.filter(|&l| !g.held_by_kernel(l)) {
            if rss > limit && g.stopped_at.load(Ordering::Relaxed) == 0 {
                g.stopped_limit.store(limit, Ordering::Relaxed);
                g.stopped_at.store(rss, Ordering::Release);
                g.watch.kill();
            }
        }
    }
}

/// A process's resident memory that is its own (resident minus shared
/// pages), in bytes; `None` once it is gone.
fn own_resident(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let mut fields = text.split_whitespace().skip(1);
    let resident: u64 = fields.next()?.parse().ok()?;
    let shared: u64 = fields.next()?.parse().ok()?;
    Some(resident.saturating_sub(shared) * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
pub(crate) fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How many processes the kernel's OOM killer has killed since boot.
fn oom_kills() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/vmstat").ok()?;
    let line = text.lines().find(|l| l.starts_with("oom_kill "))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_its_own_memory_and_the_machines() {
        let own = own_resident(std::process::id()).unwrap();
        assert!(own > 0);
        assert!(mem_available().unwrap() > 0);
        assert!(oom_kills().is_some());
        assert!(own_resident(u32::MAX).is_none());
    }
}
