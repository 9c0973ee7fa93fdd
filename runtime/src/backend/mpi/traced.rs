//! An MPI session's part of a traced run (`trace = "run.json"`).
//!
//! A rank times its jobs as a worker process does (the `Times` frame
//! before each `Done`), on its own host's monotonic clock. A rank on the
//! driver's node shares the driver's clock (the same boot); a rank on
//! another node sent its clock in its hello, and the driver took the
//! difference to its own clock on arrival as the rank's offset, which is
//! exact but for the hello's one-way latency (microseconds on a cluster's
//! network). The rank's times are shifted by it here.

use crate::error::Error;
use crate::trace::{now_ns, Direction, JobTimes, Outcome, Trace, Track};
use std::collections::HashMap;
use std::sync::Arc;

/// What a traced MPI session records.
pub(super) struct RankTrace {
    trace: Arc<Trace>,
    /// Jobs that failed, by batch, until the batch's times come.
    failed: HashMap<u64, Vec<(usize, Outcome)>>,
    /// Results come back, by batch: when the first came, and bytes.
    returned: HashMap<u64, (u64, u64)>,
}

/// A rank's track.
pub(super) fn track(index: usize) -> Track {
    Track::Rank(index as u32)
}

impl RankTrace {
    /// Starts recording, naming each leased rank's track by its label
    /// (`rank 2 on node7 (pid 4242)`).
    pub(super) fn new<'a>(trace: &Arc<Trace>, ranks: impl Iterator<Item = (usize, &'a str)>) -> Self {
        for (index, label) in ranks {
            trace.name_track(track(index), format!("MPI {label}"));
            trace.instant(track(index), "worker start", format!("leased {label}"));
        }
        RankTrace {
            trace: Arc::clone(trace),
            failed: HashMap::new(),
            returned: HashMap::new(),
        }
    }

    /// A result of `bytes` came back for batch `batch`.
    pub(super) fn returned(&mut self, batch: u64, bytes: u64) {
        let entry = self.returned.entry(batch).or_insert_with(|| (now_ns(), 0));
        entry.1 += bytes;
    }

    /// A frame of `bytes` went to rank `index`, from `started` to now.
    pub(super) fn sent(&self, index: usize, started: u64, bytes: usize) {
        let span = (started, now_ns());
        self.trace.transfer(track(index), Direction::Send, span, bytes as u64);
    }

    /// Job `index` of batch `batch` failed with `error`.
    pub(super) fn failed(&mut self, batch: u64, index: usize, error: &Error) {
        self.failed.entry(batch).or_default().push((index, Outcome::of(error)));
    }

    /// Rank `rank`, whose clock is `offset` ahead of ours, ran batch
    /// `batch`'s jobs of `task` from job `seq` at these times.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn times(&mut self, rank: usize, offset: i64, task: &'static str, batch: u64, seq: u64, start: u64, ends: Vec<u64>) {
        let ours = |t: u64| (t as i64).saturating_sub(offset).max(0) as u64;
        let times = JobTimes {
            task,
            track: track(rank),
            first: seq as usize,
            batch,
            start: ours(start),
            ends: ends.into_iter().map(ours).collect(),
            attempt: 1,
            copy: false,
            failed: self.failed.remove(&batch).unwrap_or_default(),
        };
        self.trace.jobs(Box::new(times));
        if let Some((first, bytes)) = self.returned.remove(&batch) {
            let span = (first, now_ns());
            self.trace.transfer(track(rank), Direction::Return, span, bytes);
        }
    }
}
