//! The thread backend: a rayon pool of exactly `n_jobs` threads.
//!
//! Each batch is one rayon task that runs its jobs in order and sends the
//! results back over a channel. Cancelling sets a flag that every job checks
//! before it starts. A job already running cannot be stopped, because Rust
//! has no safe way to kill a thread. After a timeout or an error the run
//! returns at once, and the running job finishes in the background with its
//! result dropped.

use super::{run_here, run_sparing, Batch, Finished, LongestRunning, Session};
use crate::backend::beacon::Beacon;
use crate::error::{Error, Result};
use crate::task::Spent;
use crate::task::Work;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

thread_local! {
    /// Set on the threads of parjob's pools.
    static POOL_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread is one of parjob's pool threads: a loop
/// started on it (in a loop body or a thread task) runs sequentially
/// unless it names its own `n_jobs` or `backend`, so nesting never
/// oversubscribes.
pub(crate) fn on_pool_thread() -> bool {
    POOL_THREAD.with(std::cell::Cell::get)
}

/// Auto-batching aims for batches of this length on threads: a batch costs
/// about 3 us to hand over, so this keeps the overhead under 1%.
pub(crate) const BATCH_TARGET: Duration = Duration::from_micros(500);

/// A rayon pool, shared by every run of one `Parallel`.
#[derive(Clone)]
pub(crate) struct Threads {
    pool: Arc<rayon::ThreadPool>,
    n_jobs: usize,
}

impl Threads {
    /// A pool of exactly `n_jobs` threads.
    pub(crate) fn new(n_jobs: usize) -> Result<Self> {
        // Its threads sit one level below the code that builds it.
        let inside = super::nesting::current().inside_run(n_jobs, crate::options::NestedIn::Thread);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n_jobs)
            .thread_name(|i| format!("parjob-{i}"))
            .start_handler(move |_| {
                POOL_THREAD.with(|f| f.set(true));
                super::nesting::set_for_this_thread(inside);
            })
            .build()
            .map_err(|e| Error::Config(format!("could not start {n_jobs} threads: {e}")))?;
        Ok(Threads {
            pool: Arc::new(pool),
            n_jobs,
        })
    }

    /// Runs `f` inside the pool, so rayon's parallel iterators split
    /// across its threads.
    pub(crate) fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    pub(crate) fn n_jobs(&self) -> usize {
        self.n_jobs
    }

    /// Runs `f` on this thread with a rayon scope of this pool: what it
    /// spawns runs on the pool's threads and may borrow from outside, and
    /// this returns once all of it has ended.
    pub(crate) fn in_place_scope<'s, R>(&self, f: impl FnOnce(&rayon::Scope<'s>) -> R) -> R {
        self.pool.in_place_scope(f)
    }
}

struct Done<R> {
    batch: u64,
    finished: Finished<R>,
    /// It is the result of a `speculate` copy.
    copy: bool,
    /// What the batch's jobs allocated, freed where they were made.
    spent: Spent,
}

struct Running<W> {
    beacon: Arc<Beacon>,
    first: usize,
    tasks: Vec<&'static str>,
    /// Under `speculate`, a second call of each of its jobs, kept to run
    /// as a copy if the batch is late; taken when the copy starts.
    spare: Option<Vec<W>>,
    copied: bool,
}

pub(crate) struct ThreadSession<W: Work> {
    threads: Threads,
    tx: Sender<Done<W::Output>>,
    rx: Receiver<Done<W::Output>>,
    cancelled: Arc<AtomicBool>,
    running: HashMap<u64, Running<W>>,
    next_batch: u64,
    timeout: Option<Duration>,
    /// Whether jobs report to beacons: with a timeout, or when the user
    /// watches (`verbose`) and may want to see which job runs longest.
    beacons: bool,
    /// Runs once on each thread before its first batch of this session.
    init: Option<crate::options::Initializer>,
    /// `on_error = "continue"`: a timeout fails only its batch.
    keep_going: bool,
    /// Batches answered by their timeout, or by the first of a job and its
    /// copy, whose late results are dropped.
    abandoned: std::collections::HashSet<u64>,
    /// `speculate`'s multiplier, when it is on, and what it did.
    speculate: Option<u32>,
    durations: super::durations::Durations,
    /// Under `trace`: batches say when their jobs ended, and copies are
    /// marked.
    trace: Option<Arc<crate::trace::Trace>>,
    copied: usize,
    copies_won: usize,
    watched: bool,
}

impl<W: Work> ThreadSession<W> {
    pub(crate) fn new(threads: Threads, timeout: Option<Duration>, watched: bool) -> Self {
        let (tx, rx) = mpsc::channel();
        ThreadSession {
            threads,
            tx,
            rx,
            cancelled: Arc::new(AtomicBool::new(false)),
            running: HashMap::new(),
            next_batch: 0,
            timeout,
            beacons: timeout.is_some() || watched,
            init: None,
            keep_going: false,
            abandoned: std::collections::HashSet::new(),
            speculate: None,
            durations: Default::default(),
            trace: None,
            copied: 0,
            copies_won: 0,
            watched,
        }
    }

    /// The session, where a job late by `k` times its task's median gets a
    /// copy on a free thread, when its arguments can be copied
    /// (`speculate`): the first result wins, and the other is dropped.
    pub(crate) fn speculating(mut self, k: Option<u32>) -> Self {
        self.speculate = k;
        self.beacons |= k.is_some();
        self
    }

    /// The threads this session runs on.
    pub(crate) fn threads(&self) -> &Threads {
        &self.threads
    }

    /// The session with `init` run once on each thread before its jobs.
    pub(crate) fn with_initializer(mut self, init: Option<crate::options::Initializer>) -> Self {
        self.init = init;
        self
    }

    /// The session, where a job past the timeout fails only its own batch
    /// when `keep_going` (`on_error = "continue"`): the batch's thread
    /// cannot be stopped, so its eventual result is dropped.
    pub(crate) fn keep_going(mut self, keep_going: bool) -> Self {
        self.keep_going = keep_going;
        self
    }

    /// The first running job over the limit (its batch and error), if
    /// any, and else how long until one could be.
    fn overdue(&self, limit: Duration) -> std::result::Result<(u64, Error), Duration> {
        let mut soonest = limit;
        for (&batch, r) in &self.running {
            if let Some((seq, ran)) = r.beacon.running() {
                let index = seq as usize;
                if ran >= limit {
                    let timeout = Error::Timeout {
                        task: r.tasks[index - r.first].into(),
                        index,
                        after: limit,
                    };
                    return Ok((batch, timeout));
                }
                soonest = soonest.min(limit - ran);
            }
        }
        Err(soonest)
    }
}

impl<W: Work> Session<W> for ThreadSession<W> {
    fn has_room(&self) -> bool {
        true
    }

    fn submit(&mut self, batch: Batch<W>) -> Result<()> {
        let id = self.next_batch;
        self.next_batch += 1;
        let beacon = self.beacons.then(|| Arc::new(Beacon::in_process()));
        if let Some(beacon) = &beacon {
            let spare = match self.speculate {
                Some(_) => batch.items.iter().map(Work::duplicate).collect(),
                None => None,
            };
            self.running.insert(
                id,
                Running {
                    beacon: Arc::clone(beacon),
                    first: batch.first,
                    tasks: batch.items.iter().map(Work::task).collect(),
                    spare,
                    copied: false,
                },
            );
        }
        let tx = self.tx.clone();
        let cancelled = Arc::clone(&self.cancelled);
        let init = self.init;
        let pieces = self.keep_going;
        let timed = self.trace.is_some();
        self.threads.pool.spawn(move || {
            let stop = || cancelled.load(Ordering::Relaxed);
            let beacon = beacon.as_deref();
            let mut spent = Spent::default();
            let mut finished = match super::initialize_here(init) {
                // Under "continue" each failed job ends a piece of the batch.
                Ok(()) if pieces => super::run_pieces_here(batch, beacon, stop, timed),
                Ok(()) => vec![run_sparing(batch, beacon, stop, timed, &mut spent)],
                Err(e) => vec![Finished::failed(batch.first, batch.items.len(), e)],
            };
            for f in &mut finished {
                if let Some(t) = f.times.as_mut() {
                    t.batch = id;
                }
            }
            for finished in finished {
                let _ = tx.send(Done {
                    batch: id,
                    finished,
                    copy: false,
                    spent: std::mem::take(&mut spent),
                });
            }
        });
        Ok(())
    }

    fn wait(&mut self, patience: Option<Duration>) -> Result<Option<Finished<W::Output>>> {
        let deadline = patience.map(|p| Instant::now() + p);
        loop {
            let wait = match self.timeout {
                None => None,
                Some(limit) => match self.overdue(limit) {
                    Ok((batch, timeout)) if self.keep_going => {
                        // Under "continue" a batch is one job: the stuck
                        // one, whose thread runs on and whose late result
                        // is dropped.
                        let r = self.running.remove(&batch).expect("overdue found it");
                        self.abandoned.insert(batch);
                        return Ok(Some(Finished::failed(r.first, r.tasks.len(), timeout)));
                    }
                    Ok((_, timeout)) => return Err(timeout),
                    Err(wait) => Some(wait),
                },
            };
            // Under `speculate`, wake when a running job could be late.
            let wait = match (wait, self.speculate_stragglers()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(None);
            }
            let done = match (wait, left) {
                (None, None) => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                (Some(a), Some(b)) => self.rx.recv_timeout(a.min(b)),
                (Some(t), None) | (None, Some(t)) => self.rx.recv_timeout(t),
            };
            match done {
                Ok(done) => {
                    // A batch that timed out under "continue", or whose
                    // copy answered first, was answered already: its late
                    // result is dropped.
                    if self.abandoned.remove(&done.batch) {
                        continue;
                    }
                    if let Some(r) = self.running.remove(&done.batch) {
                        self.settled(done.batch, &r, &done);
                    }
                    // Freed here, on the thread that allocated the jobs.
                    drop(done.spent);
                    return Ok(Some(done.finished));
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    unreachable!("the session holds a sender")
                }
            }
        }
    }

    fn longest_running(&self) -> Option<LongestRunning> {
        self.running
            .values()
            .filter_map(|r| {
                let (seq, ran) = r.beacon.running()?;
                let index = seq as usize;
                Some(LongestRunning {
                    task: r.tasks.get(index.checked_sub(r.first)?)?,
                    index,
                    running_for: ran,
                    pid: None,
                })
            })
            .max_by_key(|l| l.running_for)
    }

    fn cancel(&mut self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    fn batch_target(&self) -> Duration {
        BATCH_TARGET
    }

    fn set_trace(&mut self, trace: &Arc<crate::trace::Trace>) {
        self.trace = Some(Arc::clone(trace));
    }
}

impl<W: Work> ThreadSession<W> {
    /// Threads busy now: running batches, the copies of copied ones, and
    /// the late jobs whose results will be dropped.
    fn busy_threads(&self) -> usize {
        let copies = self.running.values().filter(|r| r.copied).count();
        self.running.len() + copies + self.abandoned.len()
    }

    /// Under `speculate`, when a thread is free, starts a copy of the
    /// latest running job that can be copied and is past `k` times its
    /// task's median. Returns how long until a running job could be late.
    fn speculate_stragglers(&mut self) -> Option<Duration> {
        let k = self.speculate?;
        if self.busy_threads() >= self.threads.n_jobs() {
            return None;
        }
        let mut late: Option<(u64, Duration)> = None;
        let mut soonest: Option<Duration> = None;
        for (&id, r) in &self.running {
            let (Some(_), Some((_, ran))) = (&r.spare, r.beacon.running()) else {
                continue;
            };
            let Some(after) = self.durations.late_after(r.tasks[0], k) else {
                continue;
            };
            if ran > after {
                if late.is_none_or(|(_, longest)| ran > longest) {
                    late = Some((id, ran));
                }
            } else {
                soonest = Some(soonest.map_or(after - ran, |s| s.min(after - ran)));
            }
        }
        if let Some((id, ran)) = late {
            self.copy(id, ran);
        }
        soonest
    }

    /// Runs the spare calls of batch `id`, late after `ran`, on a free
    /// thread: the whole batch again, whose first result wins.
    fn copy(&mut self, id: u64, ran: Duration) {
        let Some(r) = self.running.get_mut(&id) else {
            return;
        };
        let Some(spare) = r.spare.take() else {
            return;
        };
        r.copied = true;
        self.copied += 1;
        if self.watched {
            eprintln!(
                "[parjob] speculating task `{}` on item {}: running for {ran:?}, a copy starts on a free thread",
                r.tasks[0], r.first
            );
        }
        if let Some(trace) = &self.trace {
            trace.copied();
        }
        let (first, tx, init) = (r.first, self.tx.clone(), self.init);
        let timed = self.trace.is_some();
        let cancelled = Arc::clone(&self.cancelled);
        self.threads.pool.spawn(move || {
            let stop = || cancelled.load(Ordering::Relaxed);
            let jobs = spare.len();
            let batch = Batch {
                first,
                items: spare,
            };
            let mut finished = match super::initialize_here(init) {
                Ok(()) => run_here(batch, None, stop, timed),
                Err(e) => Finished::failed(first, jobs, e),
            };
            if let Some(t) = finished.times.as_mut() {
                (t.batch, t.copy) = (id, true);
            }
            let _ = tx.send(Done {
                batch: id,
                finished,
                copy: true,
                spent: Spent::default(),
            });
        });
    }

    /// Batch `id` (`r`) answered with `done`: under `speculate` its time
    /// is recorded, and if it had a copy, the other result is dropped.
    fn settled(&mut self, id: u64, r: &Running<W>, done: &Done<W::Output>) {
        let f = &done.finished;
        if self.speculate.is_some() && f.failure.is_none() && f.values.len() == f.jobs {
            self.durations.record(r.tasks[0], f.jobs, f.elapsed);
        }
        if r.copied {
            self.abandoned.insert(id);
            self.copies_won += usize::from(done.copy);
        }
    }
}

impl<W: Work> Drop for ThreadSession<W> {
    /// Says what `speculate` did, when the user watches.
    fn drop(&mut self) {
        if self.speculate.is_some() && self.watched {
            eprintln!(
                "{}",
                super::durations::speculation_report(self.copied, self.copies_won)
            );
        }
    }
}
