//! One run on leased MPI ranks, as a [`Session`]: the scheduler above it
//! is the same one that drives threads and processes, so ordering,
//! `pre_dispatch`, batching, progress and timeouts work unchanged.
//!
//! A batch is the process backend's `Run` frame, sent as one message; the
//! rank answers with the same frames a worker process writes. Large
//! arguments (over `max_nbytes`) are sent to each rank once per run,
//! before the first batch that names them. Results always come back in the
//! answer message. A timeout cannot kill a rank: the run fails, the rank
//! is told to skip the rest of its batches, and it is leased again once it
//! has finished the job it was in.

use super::driver::{self, Command, Incoming};
use super::kept;
use super::lease::{lease, Lease, Leased};
use super::link::{Body, MAX_MESSAGE};
use super::{SegmentHeader, Share, BATCH_TARGET, TAG_CANCEL, TAG_SEGMENT, TAG_SEGMENT_PART};
use super::{TAG_EVICT, TAG_SHARE, TAG_TASK};
use crate::backend::in_flight::Problem;
use crate::backend::process::{encode_batch, log, Encoded, Outgoing, Retry};
use crate::backend::{Batch, Finished, LongestRunning, Session};
use crate::error::{Error, Result};
use crate::options::BackendSource;
use crate::shm::{Collected, Segment};
use crate::task::Work;
use crate::wire::{self, codec::CodecError, FromWorker, Incoming as Frame, ToWorker};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Batches queued on one rank: the one it runs. A rank pulls its next
/// batch when it answers the last, so no batch ever waits behind a slow
/// one while another rank is idle. A rank runs its serve loop on one
/// thread and cannot give back a batch it was sent, so a second batch
/// queued behind a straggler would wait for it: the round trip this
/// costs per batch is what auto-batching's target amortizes
/// (`docs/decisions.md`, "A job waits only for an idle worker").
const DEPTH: usize = 1;

/// Batch ids, unique for the process: a rank told to skip batches up to
/// an id skips only older runs' batches and this one's.
static NEXT_BATCH: AtomicU64 = AtomicU64::new(1);

/// A leased rank, and what this run has sent it.
struct Slot {
    /// Which rank: its index in the driver's table, label, pid and node.
    at: Leased,
    /// Batch ids sent and not yet done, oldest first.
    queue: VecDeque<u64>,
    /// When the oldest batch began running (as far as the driver knows).
    front_since: Instant,
    /// Segments this rank has been sent in this run.
    segments: HashSet<u64>,
    /// It ran a job past the timeout that `retries` sends elsewhere: it
    /// gets nothing more in this run, and its answers are dropped.
    abandoned: bool,
}

/// What an MPI session keeps of a batch besides its answers.
struct OnRank {
    /// The slot of the rank it went to.
    slot: usize,
    /// The segments its arguments name, held until it is answered.
    _shared: Collected,
    /// The batch's message, kept under `retries` to send it again.
    frame: Option<Vec<u8>>,
    /// How many times it has been sent to run.
    attempts: u32,
}

type InFlight<R> = crate::backend::in_flight::InFlight<R, OnRank>;

/// One run's use of the worker ranks.
pub(crate) struct MpiSession<W: Work> {
    lease: Lease,
    slots: Vec<Slot>,
    batches: HashMap<u64, InFlight<W::Output>>,
    here: VecDeque<Finished<W::Output>>,
    timeout: Option<Duration>,
    backend_from: BackendSource,
    /// xxh3 of each segment sent, computed once.
    hashes: HashMap<u64, u128>,
    /// The slot that received each segment's bytes first, by node and
    /// group: the others of its node get its memfd from it.
    holders: HashMap<(u64, String, usize), usize>,
    node_sharing: bool,
    /// `retries`: a job past the timeout runs again on another rank.
    retry: Retry,
    /// Under `trace`, what the session records (`traced.rs`).
    trace: Option<super::traced::RankTrace>,
}

impl<W: Work> MpiSession<W> {
    /// The session, where a job past the timeout runs again on another
    /// rank, up to `retry.retries` more times (a rank that died still ends
    /// the MPI job: MPI's model).
    pub(crate) fn retrying(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Leases up to `n_jobs` idle ranks, and says which when `verbose`.
    pub(crate) fn new(
        n_jobs: usize,
        timeout: Option<Duration>,
        backend_from: BackendSource,
        verbose: bool,
    ) -> Result<Self> {
        let lease = lease(n_jobs)?;
        let now = Instant::now();
        let slots: Vec<Slot> = lease
            .peers
            .iter()
            .map(|p| Slot {
                at: p.clone(),
                queue: VecDeque::new(),
                front_since: now,
                segments: HashSet::new(),
                abandoned: false,
            })
            .collect();
        if verbose {
            let ranks: Vec<&str> = slots.iter().map(|s| s.at.label.as_str()).collect();
            eprintln!(
                "[parjob] MPI: {} worker ranks: {}",
                ranks.len(),
                ranks.join(", ")
            );
        }
        Ok(MpiSession {
            lease,
            slots,
            batches: HashMap::new(),
            here: VecDeque::new(),
            timeout,
            backend_from,
            hashes: HashMap::new(),
            holders: HashMap::new(),
            node_sharing: std::env::var_os(super::NO_NODE_SHARING).is_none(),
            retry: Retry::default(),
            trace: None,
        })
    }

    fn least_loaded(&self) -> Option<usize> {
        (0..self.slots.len())
            .filter(|&k| self.slots[k].queue.len() < DEPTH && !self.slots[k].abandoned)
            .min_by_key(|&k| self.slots[k].queue.len())
    }

    /// Sends `segment` to slot `k`'s rank, unless it has it already: kept
    /// from an earlier run (a header only), on the driver's node as the
    /// driver's memfd, on a node where a rank has it from that rank, else
    /// as bytes. Then tells the rank what to drop from what it keeps.
    fn send_segment(&mut self, k: usize, segment: &Arc<Segment>) -> Result<()> {
        if !self.slots[k].segments.insert(segment.id()) {
            return Ok(());
        }
        let hash = *self
            .hashes
            .entry(segment.id())
            .or_insert_with(|| xxhash_rust::xxh3::xxh3_128(segment.bytes()));
        let len = segment.bytes().len();
        let slot = &self.slots[k];
        let peer = slot.at.index;
        let (kept, evicted) = kept::retain(peer, hash, len as u64);
        let key = (segment.id(), slot.at.node.clone(), slot.at.group);
        let mut header = SegmentHeader {
            id: segment.id(),
            len: len as u64,
            hash,
            local: None,
            cached: kept,
        };
        if kept {
            send_encoded(peer, TAG_SEGMENT, &header)?;
            self.holders.entry(key).or_insert(k);
        } else if let Some(&holder) = self.holders.get(&key).filter(|_| self.node_sharing) {
            let share = Share {
                id: segment.id(),
                to: slot.at.rank,
            };
            send_encoded(self.slots[holder].at.index, TAG_SHARE, &share)?;
        } else if slot.at.same_node {
            use std::os::fd::AsRawFd;
            header.local = Some((std::process::id(), segment.fd().as_raw_fd()));
            send_encoded(peer, TAG_SEGMENT, &header)?;
        } else {
            send_encoded(peer, TAG_SEGMENT, &header)?;
            for start in (0..len).step_by(MAX_MESSAGE) {
                let range = start..(start + MAX_MESSAGE).min(len);
                let part = Body::Segment(segment.clone(), range);
                send(peer, TAG_SEGMENT_PART, part, false)?;
            }
            self.holders.insert(key, k);
        }
        if !evicted.is_empty() {
            send_encoded(peer, TAG_EVICT, &evicted)?;
        }
        Ok(())
    }

    /// Takes one message of answer frames from a rank.
    fn absorb(&mut self, incoming: Incoming) -> Result<()> {
        let Some(k) = self.slots.iter().position(|s| s.at.index == incoming.peer) else {
            return Ok(());
        };
        if self.slots[k].abandoned {
            // Its job runs again elsewhere; what it says now is stale.
            return Ok(());
        }
        let mut bytes = &incoming.payload[..];
        loop {
            let batches = &self.batches;
            let frame = wire::read_incoming(&mut bytes, |batch, r| {
                let Some(b) = batches.get(&batch) else {
                    return Err(Answered::Stale);
                };
                match crate::panic::catch(|| (b.decode)(r)) {
                    Ok(v) => v.map_err(Answered::from),
                    Err(caught) => Err(Answered::Problem(Problem::Panic(caught))),
                }
            });
            match frame {
                Ok(None) => return Ok(()),
                Ok(Some(Frame::Value {
                    batch,
                    value,
                    bytes,
                })) => {
                    if let Some(t) = self.trace.as_mut() {
                        t.returned(batch, bytes);
                    }
                    self.value(batch, value)
                }
                Ok(Some(Frame::Other(payload))) => self.other(k, &payload),
                Err(e) => {
                    return Err(Error::Mpi(format!(
                        "a garbled answer from {}: {e}",
                        self.slots[k].at.label
                    )))
                }
            }
        }
    }

    fn value(&mut self, batch: u64, value: std::result::Result<W::Output, Answered>) {
        let Some(b) = self.batches.get_mut(&batch) else {
            return;
        };
        match value {
            Ok(v) => b.value(v),
            Err(Answered::Stale) => {}
            Err(Answered::Problem(problem)) => {
                let error = on_rank(b.error(problem), &self.slots[b.extra.slot].at.label);
                b.job_failed(error);
            }
        }
    }

    fn other(&mut self, k: usize, payload: &[u8]) {
        if let Some(record) = wire::log_record(payload) {
            return log::emit(self.slots[k].at.pid, &record);
        }
        match wire::parse_from_worker(payload) {
            Ok(FromWorker::JobFailure { batch, failure }) => {
                if let Some(b) = self.batches.get_mut(&batch) {
                    let e = b.error(Problem::Worker(failure));
                    if let Some(t) = self.trace.as_mut() {
                        t.failed(batch, b.next_index(), &e);
                    }
                    b.job_failed(on_rank(e, &self.slots[k].at.label));
                }
            }
            Ok(FromWorker::Times {
                batch,
                seq,
                start_ns,
                ends,
            }) => {
                let (at, task) = (&self.slots[k].at, self.batches.get(&batch).map(|b| b.task));
                if let (Some(t), Some(task)) = (self.trace.as_mut(), task) {
                    t.times(at.index, at.clock_offset, task, batch, seq, start_ns, ends);
                }
            }
            Ok(FromWorker::Done { id, elapsed_ns, .. }) => {
                let slot = &mut self.slots[k];
                slot.queue.retain(|&b| b != id);
                slot.front_since = Instant::now();
                if let Some(b) = self.batches.remove(&id) {
                    let elapsed = Duration::from_nanos(elapsed_ns);
                    let (done, _) = b.finish(elapsed, |b| {
                        Error::Mpi(format!(
                            "{} ended batch {id} after {} of its {} jobs",
                            slot.at.label,
                            b.values(),
                            b.len
                        ))
                    });
                    self.here.push_back(done);
                }
            }
            _ => {}
        }
    }

    /// The batch that has been running longest, and since when.
    fn oldest(&self) -> Option<(&Slot, &InFlight<W::Output>)> {
        self.slots
            .iter()
            .filter_map(|s| Some((s, self.batches.get(s.queue.front()?)?)))
            .min_by_key(|(s, _)| s.front_since)
    }

    fn timed_out(&self, timeout: Duration) -> Option<Error> {
        let (slot, batch) = self.oldest()?;
        (slot.front_since.elapsed() >= timeout).then(|| Error::Timeout {
            task: batch.task.into(),
            index: batch.next_index(),
            after: timeout,
        })
    }

    /// A job ran past the timeout (`cause`): under `retries`, while attempts are left
    /// and another rank can take it, its rank is abandoned for the rest
    /// of the run (it cannot be stopped; it is leased again once it has
    /// finished) and the batch is sent to another rank. Otherwise the
    /// run's error: the timeout, or how many times the job failed.
    fn on_timeout(&mut self, cause: Error) -> Result<()> {
        let Some((slot, batch)) = self.oldest() else {
            return Err(cause);
        };
        let k = self
            .slots
            .iter()
            .position(|s| std::ptr::eq(s, slot))
            .expect("the slot is one of ours");
        let id = *slot.queue.front().expect("the oldest slot runs a batch");
        let attempts = batch.extra.attempts;
        let others = (0..self.slots.len()).filter(|&j| j != k && !self.slots[j].abandoned);
        let to = others.min_by_key(|&j| self.slots[j].queue.len());
        let (Some(frame), Some(to), true) = (
            batch.extra.frame.clone(),
            to,
            self.retry.allows(&cause, attempts),
        ) else {
            return Err(match attempts {
                1 => cause,
                _ => Error::Retried {
                    task: batch.task.into(),
                    index: batch.first,
                    attempts,
                    last: Box::new(cause),
                },
            });
        };
        let slot = &mut self.slots[k];
        slot.abandoned = true;
        slot.queue.clear();
        let b = self.batches.get_mut(&id).expect("the batch is in flight");
        b.restart();
        b.extra.attempts += 1;
        b.extra.slot = to;
        if self.retry.verbose {
            eprintln!(
                "[parjob] retrying task `{}` on item {} (attempt {} of {}) on {}: {cause}",
                b.task,
                b.first,
                b.extra.attempts,
                self.retry.retries + 1,
                self.slots[to].at.label
            );
        }
        let slot = &mut self.slots[to];
        if slot.queue.is_empty() {
            slot.front_since = Instant::now();
        }
        slot.queue.push_back(id);
        send(slot.at.index, TAG_TASK, Body::Bytes(frame), true)
    }
}

/// Why a result frame did not give a value.
enum Answered {
    /// It names no batch of this run (an older run's, cancelled).
    Stale,
    Problem(Problem),
}

impl From<CodecError> for Answered {
    fn from(e: CodecError) -> Self {
        Answered::Problem(e.into())
    }
}

/// Adds the rank and host to the error of a job that ran there.
pub(super) fn on_rank(error: Error, label: &str) -> Error {
    match error {
        Error::Panic {
            task,
            index,
            message,
            location,
        } => Error::Panic {
            task,
            index,
            message: format!("{message} (on MPI {label})"),
            location,
        },
        Error::Codec {
            task,
            index,
            action,
            cause,
        } => Error::Codec {
            task,
            index,
            action,
            cause: format!("{cause} (on MPI {label})"),
        },
        other => other,
    }
}

fn send_encoded<T: serde::Serialize>(peer: usize, tag: i32, value: &T) -> Result<()> {
    let bytes = crate::wire::codec::encode(value).map_err(|e| Error::Mpi(e.0))?;
    send(peer, tag, Body::Bytes(bytes), false)
}

fn send(peer: usize, tag: i32, body: Body, batch: bool) -> Result<()> {
    driver::command(Command::Send {
        peer,
        tag,
        body,
        batch,
    })
}

impl<W: Work> Session<W> for MpiSession<W> {
    fn has_room(&self) -> bool {
        self.least_loaded().is_some()
    }

    fn submit(&mut self, batch: Batch<W>) -> Result<()> {
        let mut encoded = match encode_batch(batch, self.backend_from, false) {
            Outgoing::Empty => return Ok(()),
            Outgoing::Failed(failed) => {
                self.here.push_back(failed);
                return Ok(());
            }
            Outgoing::Ready(encoded) => encoded,
        };
        let id = NEXT_BATCH.fetch_add(1, Ordering::Relaxed);
        // Results come back in the answer message, never as segments.
        let started = crate::trace::now_ns();
        let frame = match encoded.run_frame(id, None, self.trace.is_some()) {
            Ok(frame) => frame,
            Err(e) => {
                self.here.push_back(encoded.failed(e));
                return Ok(());
            }
        };
        let Encoded {
            first,
            jobs,
            task,
            decode,
            shared,
            ..
        } = encoded;
        let k = self.least_loaded().expect("has_room said a rank has room");
        for segment in &shared.segments {
            self.send_segment(k, segment)?;
        }
        let slot = &mut self.slots[k];
        if slot.queue.is_empty() {
            slot.front_since = Instant::now();
        }
        slot.queue.push_back(id);
        let kept = (self.retry.retries > 0).then(|| frame.clone());
        let (index, bytes) = (slot.at.index, frame.len());
        send(index, TAG_TASK, Body::Bytes(frame), true)?;
        if let Some(t) = &self.trace {
            t.sent(index, started, bytes);
        }
        self.batches.insert(
            id,
            InFlight::new(
                first,
                jobs,
                task,
                decode,
                OnRank {
                    slot: k,
                    _shared: shared,
                    frame: kept,
                    attempts: 1,
                },
            ),
        );
        Ok(())
    }

    fn wait(&mut self, patience: Option<Duration>) -> Result<Option<Finished<W::Output>>> {
        let deadline = patience.map(|p| Instant::now() + p);
        loop {
            if let Some(done) = self.here.pop_front() {
                return Ok(Some(done));
            }
            if let Some(t) = self.timeout {
                if let Some(e) = self.timed_out(t) {
                    self.on_timeout(e)?;
                    continue;
                }
            }
            let mut wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if wait == Some(Duration::ZERO) {
                return Ok(None);
            }
            if let (Some(t), Some((slot, _))) = (self.timeout, self.oldest()) {
                let left = t.saturating_sub(slot.front_since.elapsed());
                wait = Some(wait.map_or(left, |w| w.min(left)));
            }
            let received = match wait {
                Some(w) => self.lease.incoming.recv_timeout(w),
                None => self
                    .lease
                    .incoming
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(incoming) => self.absorb(incoming)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::Mpi("the MPI thread has stopped".into()))
                }
            }
        }
    }

    fn longest_running(&self) -> Option<LongestRunning> {
        let (slot, batch) = self.oldest()?;
        Some(LongestRunning {
            task: batch.task,
            index: batch.next_index(),
            running_for: slot.front_since.elapsed(),
            pid: None,
        })
    }

    fn cancel(&mut self) {
        // The last id handed out: the next run's batches stay untouched.
        let last = NEXT_BATCH.load(Ordering::Relaxed) - 1;
        for slot in &self.slots {
            if !slot.queue.is_empty() {
                let _ = send(
                    slot.at.index,
                    TAG_CANCEL,
                    Body::Bytes(last.to_le_bytes().to_vec()),
                    false,
                );
            }
        }
        self.batches.clear();
        self.here.clear();
    }

    fn batch_target(&self) -> Duration {
        BATCH_TARGET
    }

    fn set_trace(&mut self, trace: &std::sync::Arc<crate::trace::Trace>) {
        let ranks = self.slots.iter().map(|s| (s.at.index, s.at.label.as_str()));
        self.trace = Some(super::traced::RankTrace::new(trace, ranks));
    }
}

impl<W: Work> Drop for MpiSession<W> {
    /// Each rank drops the segments it was sent in this run.
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if slot.segments.is_empty() {
                continue;
            }
            let segments: Vec<u64> = slot.segments.drain().collect();
            if let Ok(frame) = wire::encode_frame(&ToWorker::Forget { segments }) {
                let _ = send(slot.at.index, TAG_TASK, Body::Bytes(frame), false);
            }
        }
    }
}
