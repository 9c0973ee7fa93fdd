//! A run's timeline: which worker ran which item, when, and what moved.
//!
//! With `trace = "run.json"`, a run records into a `Trace`: a span per
//! job on its worker's track (a worker process, an MPI rank, a pool
//! thread, or the caller's thread), spans for sending a batch and for its
//! results coming back, with their bytes, instants for workers starting
//! and dying and for shared-memory segments, and counters for the jobs in
//! flight and each worker's resident memory. Sessions record what only
//! they see (a death, a send); the scheduler records each finished
//! batch's job times, which the worker measured on the same clock.
//!
//! The clock is `CLOCK_MONOTONIC`, one clock for every process on a host.
//! An MPI rank on another host measures its offset from the driver's
//! clock when it says hello, and shifts its times by it.
//!
//! Recording is bounded (`buffer.rs`): the first and the last
//! 100,000 events of each kind are kept, and the summary
//! counts everything. At the end of the run the events are written as a
//! Chrome trace-event JSON file (`json.rs`), which Perfetto and
//! `chrome://tracing` open, and beside it a self-contained HTML page
//! (`report.rs`).

mod buffer;
mod json;
mod report;
mod summary;

pub use report::{rebuild_report, report_html};

use buffer::{Buffer, Event, What};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use summary::Summary;

/// Environment variable giving the default `trace` file. Worker processes
/// do not inherit it: the parent's trace records their jobs.
pub(crate) const ENV_TRACE: &str = "PARJOB_TRACE";

/// Now, in nanoseconds of `CLOCK_MONOTONIC`: the clock every trace time
/// is on, in the parent and in its workers alike.
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How often resident memory is sampled into the trace.
pub(crate) const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// This process's resident bytes, from `/proc/self/statm`.
pub(crate) fn own_resident() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(1) as u64)
}

/// Where an event happened: one lane of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Track {
    /// The parent's scheduler: sends, returns, jobs in flight.
    Scheduler,
    /// The caller's own thread, which runs a sequential run's jobs.
    Caller,
    /// A thread of a pool, by its index.
    Thread(u32),
    /// A worker process, by its pid.
    Process(u32),
    /// An MPI rank, by its index in the driver's table.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    Rank(u32),
}

impl Track {
    /// The current thread's track: a pool thread's, else the caller's.
    pub(crate) fn here() -> Track {
        rayon::current_thread_index().map_or(Track::Caller, |i| Track::Thread(i as u32))
    }

    /// Its default name, until [`Trace::name_track`] gives another.
    fn label(self) -> String {
        match self {
            Track::Scheduler => "scheduler".into(),
            Track::Caller => "caller's thread".into(),
            Track::Thread(i) => format!("pool thread {i}"),
            Track::Process(pid) => format!("worker process {pid}"),
            Track::Rank(r) => format!("MPI rank {r}"),
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Panic,
    /// Its arguments or result did not cross, or another job error.
    Error,
    /// Its worker died while it ran.
    Death,
    Timeout,
    MemoryLimit,
}

impl Outcome {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Panic => "panic",
            Outcome::Error => "error",
            Outcome::Death => "death",
            Outcome::Timeout => "timeout",
            Outcome::MemoryLimit => "memory limit",
        }
    }

    /// The outcome an error stands for.
    pub(crate) fn of(error: &crate::error::Error) -> Outcome {
        use crate::error::Error;
        match error {
            Error::Panic { .. } => Outcome::Panic,
            Error::WorkerDied { .. } => Outcome::Death,
            Error::Timeout { .. } => Outcome::Timeout,
            Error::MemoryLimit { .. } => Outcome::MemoryLimit,
            Error::Retried { last, .. } => Outcome::of(last),
            _ => Outcome::Error,
        }
    }
}

/// One batch's job times, measured where its jobs ran: `start`, then the
/// end of each job in turn (a job starts where the one before it ended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobTimes {
    pub task: &'static str,
    pub track: Track,
    /// The input index of the first timed job.
    pub first: usize,
    /// The batch it was sent in (0 where batches have no ids).
    pub batch: u64,
    pub start: u64,
    pub ends: Vec<u64>,
    /// Which attempt this was (1 unless `retries` ran it again).
    pub attempt: u32,
    /// It ran as a `speculate` copy.
    pub copy: bool,
    /// The jobs that failed, by input index, and how.
    pub failed: Vec<(usize, Outcome)>,
}

impl JobTimes {
    /// Times for jobs of `task` starting at input index `first`, from now,
    /// on this thread's track: a pool thread's, else the caller's.
    pub(crate) fn here(task: &'static str, first: usize, capacity: usize) -> JobTimes {
        JobTimes {
            task,
            track: Track::here(),
            first,
            batch: 0,
            start: now_ns(),
            ends: Vec::with_capacity(capacity),
            attempt: 1,
            copy: false,
            failed: Vec::new(),
        }
    }
}

/// Which way bytes moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// A batch's frame, to a worker.
    Send,
    /// A batch's results, back.
    Return,
}

/// One traced run (or a pool's life): events in, files out at the end.
pub(crate) struct Trace {
    path: PathBuf,
    /// When the run started, on [`now_ns`]'s clock.
    start: u64,
    verbose: u8,
    state: Mutex<State>,
}

struct State {
    buffer: Buffer,
    summary: Summary,
    /// Tracks named by their session (an MPI rank's host and pid).
    names: Vec<(Track, String)>,
    /// When memory was last sampled.
    sampled: u64,
    written: bool,
}

impl Trace {
    /// Starts a trace of a run on `workers` workers that [`Trace::finish`]
    /// writes to `path` (the JSON) and beside it, with the extension
    /// `html`, the report.
    pub(crate) fn start(path: &Path, verbose: u8, workers: usize) -> Arc<Trace> {
        Arc::new(Trace {
            path: path.to_path_buf(),
            start: now_ns(),
            verbose,
            state: Mutex::new(State {
                buffer: Buffer::default(),
                summary: Summary {
                    workers,
                    ..Summary::default()
                },
                names: Vec::new(),
                sampled: 0,
                written: false,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Names a track (an MPI rank's host and pid).
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn name_track(&self, track: Track, name: String) {
        let mut s = self.state();
        s.names.retain(|(t, _)| *t != track);
        s.names.push((track, name));
    }

    /// Records a finished batch's jobs: one span each.
    pub(crate) fn jobs(&self, times: Box<JobTimes>) {
        let (Some(&end), track) = (times.ends.last(), times.track) else {
            return;
        };
        let mut s = self.state();
        s.summary.batch(&times);
        let start = times.start;
        s.buffer.push(Event {
            track,
            start,
            end,
            what: What::Jobs(times),
        });
    }

    /// Records one job that ended without its worker's times: a death, a
    /// timeout, a memory stop seen from the parent, or a loop's split.
    pub(crate) fn job(
        &self,
        track: Track,
        task: &'static str,
        index: usize,
        span: (u64, u64),
        outcome: Outcome,
        attempt: u32,
    ) {
        self.jobs(Box::new(JobTimes {
            task,
            track,
            first: index,
            batch: 0,
            start: span.0,
            ends: vec![span.1.max(span.0)],
            attempt,
            copy: false,
            failed: match outcome {
                Outcome::Ok => Vec::new(),
                _ => vec![(index, outcome)],
            },
        }));
    }

    /// Records bytes moving between the scheduler and `track`.
    pub(crate) fn transfer(
        &self,
        track: Track,
        direction: Direction,
        span: (u64, u64),
        bytes: u64,
    ) {
        let mut s = self.state();
        match direction {
            Direction::Send => s.summary.bytes_sent += bytes,
            Direction::Return => s.summary.bytes_returned += bytes,
        }
        let what = What::Transfer {
            direction,
            bytes,
            to: track,
        };
        s.buffer.push(Event {
            track: Track::Scheduler,
            start: span.0,
            end: span.1.max(span.0),
            what,
        });
    }

    /// Records a moment on `track`, now: a worker starting or dying, a
    /// segment.
    pub(crate) fn instant(&self, track: Track, name: &'static str, detail: String) {
        self.instant_at(track, name, now_ns(), detail);
    }

    /// Records a moment on `track` at `at`; one before the run started
    /// shows at its start.
    pub(crate) fn instant_at(&self, track: Track, name: &'static str, at: u64, detail: String) {
        let mut s = self.state();
        s.summary.instant(name);
        let at = at.max(self.start);
        s.buffer.push(Event {
            track,
            start: at,
            end: at,
            what: What::Instant {
                name,
                detail: detail.into(),
            },
        });
    }

    /// Records a counter's value on `track`: jobs in flight, a worker's
    /// resident bytes.
    pub(crate) fn counter(&self, track: Track, name: &'static str, value: u64) {
        let at = now_ns();
        self.state().buffer.push(Event {
            track,
            start: at,
            end: at,
            what: What::Counter { name, value },
        });
    }

    /// Whether memory is due to be sampled again (every
    /// [`SAMPLE_EVERY`]); true at most once per period.
    pub(crate) fn sample_due(&self) -> bool {
        let now = now_ns();
        let mut s = self.state();
        if now.saturating_sub(s.sampled) < SAMPLE_EVERY.as_nanos() as u64 {
            return false;
        }
        s.sampled = now;
        true
    }

    /// Counts a job that `retries` runs again.
    pub(crate) fn retried(&self) {
        self.state().summary.retries += 1;
    }

    /// Counts a `speculate` copy.
    pub(crate) fn copied(&self) {
        self.state().summary.copies += 1;
    }

    /// Counts bytes that crossed by shared memory instead of in a frame.
    pub(crate) fn shared(&self, bytes: u64) {
        self.state().summary.shm_saved += bytes;
    }

    /// Writes the JSON and the HTML report (once; later calls do nothing),
    /// and at `verbose >= 1` prints the summary to stderr. A file that
    /// cannot be written is said on stderr: the run's results stand.
    pub(crate) fn finish(&self) {
        let mut s = self.state();
        if std::mem::replace(&mut s.written, true) {
            return;
        }
        let end = now_ns();
        s.summary.wall_ns = end.saturating_sub(self.start);
        let json = json::write(self.start, &s.buffer, &s.summary, &s.names);
        let html = self.path.with_extension("html");
        let (before, after) = report::around();
        let json: Vec<&[u8]> = json.iter().map(|part| part.as_bytes()).collect();
        let page: Vec<&[u8]> = std::iter::once(before.as_bytes())
            .chain(json.iter().copied())
            .chain(std::iter::once(after.as_bytes()))
            .collect();
        // The two files are written at once, on two threads.
        let written = std::thread::scope(|scope| {
            let page = scope.spawn(|| write_file(&html, &page));
            let json = write_file(&self.path, &json);
            json.and(
                page.join()
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::Other.into())),
            )
        });
        if let Err(e) = written {
            eprintln!(
                "[parjob] could not write the trace to {}: {e}",
                self.path.display()
            );
            return;
        }
        if self.verbose >= 1 {
            for line in s.summary.lines(&s.names) {
                eprintln!("[parjob] {line}");
            }
            eprintln!(
                "[parjob] trace written to {} and {}",
                self.path.display(),
                html.display()
            );
        }
    }
}

/// Writes `parts` to `path`, through a temporary beside it renamed over
/// it, so a reader never sees half a trace. A link is followed, and
/// anything but a regular file at the end of it is refused. The old file
/// is removed first: ext4 flushes a file renamed over another to disk
/// (`auto_da_alloc`), which would cost a traced run of tiny jobs more than
/// the run; a trace does not need to survive a crash of the machine.
fn write_file(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind, Write};
    let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let target = if link {
        std::fs::canonicalize(path)?
    } else {
        path.to_path_buf()
    };
    let existing = match std::fs::symlink_metadata(&target) {
        Ok(m) if !m.is_file() => {
            let why = format!(
                "{} is not a regular file: refusing to replace it",
                target.display()
            );
            return Err(Error::new(ErrorKind::InvalidInput, why));
        }
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    let name = target
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    let temp = target.with_file_name(format!(".{name}.parjob-tmp.{}", std::process::id()));
    let written = std::fs::File::create(&temp)
        .and_then(|mut f| parts.iter().try_for_each(|p| f.write_all(p)))
        .and_then(|()| match existing {
            true => std::fs::remove_file(&target),
            false => Ok(()),
        })
        .and_then(|()| std::fs::rename(&temp, &target));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::write_file;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn a_trace_replaces_a_file_follows_a_link_and_refuses_anything_else() {
        let dir = std::env::temp_dir().join(format!("parjob-trace-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("run.json");
        write_file(&file, &[b"old"]).unwrap();
        write_file(&file, &[b"ne", b"w"]).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        let link = dir.join("link.json");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        write_file(&link, &[b"through"]).unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&file).unwrap(), b"through");
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = write_file(&fifo, &[b"x"]).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 3, "no temporary left: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
