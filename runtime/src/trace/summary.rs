//! A trace's figures, counted from every event as it is recorded (so they
//! stay whole when the buffer drops events): wall time, each worker's busy
//! time, the slowest items, failures, retries and deaths, bytes moved.
//! The JSON carries them, the report shows them at its top, and
//! `verbose >= 1` prints the same lines.

use super::{JobTimes, Track};
use crate::error::human_bytes;
use std::collections::BTreeMap;

/// How many of the slowest items are named.
pub(crate) const SLOWEST: usize = 5;

#[derive(Default)]
pub(crate) struct Summary {
    /// The run's workers (`n_jobs`): a replaced worker is a new track,
    /// but not another worker.
    pub workers: usize,
    pub wall_ns: u64,
    pub jobs: u64,
    /// Per worker track: time inside jobs, and jobs run.
    pub tracks: BTreeMap<Track, (u64, u64)>,
    /// The slowest jobs, slowest first.
    pub slowest: Vec<Slow>,
    /// Jobs that did not end `Ok`, by outcome.
    pub failed: BTreeMap<&'static str, u64>,
    pub retries: u64,
    pub copies: u64,
    pub deaths: u64,
    pub starts: u64,
    pub bytes_sent: u64,
    pub bytes_returned: u64,
    pub shm_saved: u64,
}

/// One of the slowest jobs.
#[derive(Clone)]
pub(crate) struct Slow {
    pub task: &'static str,
    pub index: u64,
    pub ns: u64,
    pub track: Track,
}

impl Summary {
    /// Counts a batch's jobs: their time on their track, the slowest of
    /// them, and the failed ones.
    pub(crate) fn batch(&mut self, times: &JobTimes) {
        let mut begin = times.start;
        let mut busy = 0;
        for (k, &end) in times.ends.iter().enumerate() {
            let ns = end.saturating_sub(begin);
            busy += ns;
            begin = end;
            if self.slowest.len() < SLOWEST || self.slowest.last().is_some_and(|s| s.ns < ns) {
                self.slow(times.task, (times.first + k) as u64, ns, times.track);
            }
        }
        for (_, outcome) in &times.failed {
            *self.failed.entry(outcome.name()).or_default() += 1;
        }
        let n = times.ends.len() as u64;
        self.jobs += n;
        let t = self.tracks.entry(times.track).or_default();
        t.0 += busy;
        t.1 += n;
    }

    /// Places a job among the slowest.
    fn slow(&mut self, task: &'static str, index: u64, ns: u64, track: Track) {
        let at = self.slowest.partition_point(|s| s.ns >= ns);
        self.slowest.insert(
            at,
            Slow {
                task,
                index,
                ns,
                track,
            },
        );
        self.slowest.truncate(SLOWEST);
    }

    pub(crate) fn instant(&mut self, name: &str) {
        match name {
            "worker death" => self.deaths += 1,
            "worker start" => self.starts += 1,
            _ => {}
        }
    }

    /// Time inside jobs over the workers' time (wall times workers).
    pub(crate) fn busy_fraction(&self, busy_ns: u64) -> f64 {
        busy_ns as f64 / self.wall_ns.max(1) as f64
    }

    /// The share of the workers' time (wall time times workers) not spent
    /// in task bodies.
    pub(crate) fn overhead(&self) -> f64 {
        let workers = self.workers.max(1) as f64;
        let busy: u64 = self.tracks.values().map(|t| t.0).sum();
        (1.0 - busy as f64 / (self.wall_ns.max(1) as f64 * workers)).clamp(0.0, 1.0)
    }

    /// The summary in words, one line each.
    pub(crate) fn lines(&self, names: &[(Track, String)]) -> Vec<String> {
        let name = |t: Track| {
            names
                .iter()
                .find(|(n, _)| *n == t)
                .map_or_else(|| t.label(), |(_, s)| s.clone())
        };
        let busy: Vec<String> = self
            .tracks
            .iter()
            .map(|(t, (ns, _))| format!("{} {:.0}%", name(*t), 100.0 * self.busy_fraction(*ns)))
            .collect();
        let slowest: Vec<String> = self
            .slowest
            .iter()
            .map(|s| format!("item {} ({}) {}", s.index, s.task, millis(s.ns)))
            .collect();
        let failed: Vec<String> = self
            .failed
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        vec![
            format!(
                "trace: {} jobs on {} workers ({} worker tracks) in {}",
                self.jobs,
                self.workers,
                self.tracks.len(),
                millis(self.wall_ns)
            ),
            format!("  busy: {}", or_none(&busy)),
            format!(
                "  overhead: {:.1}% of the workers' time was outside task bodies",
                100.0 * self.overhead()
            ),
            format!("  slowest: {}", or_none(&slowest)),
            format!(
                "  retries {}, worker deaths {}, speculative copies {}; failed attempts: {}",
                self.retries,
                self.deaths,
                self.copies,
                or_none(&failed)
            ),
            format!(
                "  bytes sent {}, returned {}, saved by shared memory {}",
                bytes(self.bytes_sent),
                bytes(self.bytes_returned),
                bytes(self.shm_saved)
            ),
        ]
    }
}

fn or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// A duration in milliseconds or seconds.
pub(crate) fn millis(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.2} s", ns as f64 / 1e9)
    } else {
        format!("{:.3} ms", ns as f64 / 1e6)
    }
}

/// A byte count, exact under a kilobyte.
pub(crate) fn bytes(n: u64) -> String {
    if n < 1024 {
        format!("{n} B")
    } else {
        human_bytes(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Outcome;

    /// Jobs on `track` from item `first`, each taking its time in `ns`.
    fn jobs(track: Track, first: usize, ns: &[u64], failed: Vec<(usize, Outcome)>) -> JobTimes {
        let mut end = 0;
        JobTimes {
            task: "f",
            track,
            first,
            batch: 0,
            start: 0,
            ends: ns
                .iter()
                .map(|n| {
                    end += n;
                    end
                })
                .collect(),
            attempt: 1,
            copy: false,
            failed,
        }
    }

    #[test]
    fn the_slowest_five_are_kept_in_order_and_failures_counted() {
        let mut s = Summary::default();
        let ns = [5, 90, 10, 70, 30, 80, 1, 60];
        s.batch(&jobs(Track::Process(7), 0, &ns, vec![(2, Outcome::Panic)]));
        let order: Vec<u64> = s.slowest.iter().map(|x| x.ns).collect();
        assert_eq!(order, [90, 80, 70, 60, 30]);
        assert_eq!(s.slowest[0].index, 1);
        assert_eq!(s.failed.get("panic"), Some(&1));
        assert_eq!(s.tracks[&Track::Process(7)], (346, 8));
    }

    #[test]
    fn overhead_is_the_share_of_worker_time_outside_jobs() {
        let mut s = Summary::default();
        s.batch(&jobs(Track::Thread(0), 0, &[750], Vec::new()));
        s.batch(&jobs(Track::Thread(1), 1, &[250], Vec::new()));
        s.wall_ns = 1000;
        s.workers = 2;
        assert!((s.overhead() - 0.5).abs() < 1e-9);
        let lines = s.lines(&[]).join("\n");
        assert!(lines.contains("pool thread 0 75%"), "{lines}");
        assert!(lines.contains("overhead: 50.0%"), "{lines}");
    }
}
