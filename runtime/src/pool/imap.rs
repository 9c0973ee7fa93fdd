//! [`Imap`]: the results of a pool's `imap` and `imap_unordered`, drawn
//! from the input as they are consumed.
//!
//! The iterator submits chunks from the caller's thread as it goes: at
//! most `buffersize` items are drawn and not yet yielded, so a slow
//! consumer holds the producer back (Python 3.14's `buffersize`), and an
//! endless input is fine. In order, early results wait in a map keyed by
//! their index; a failed chunk's later items (never run) are errors too,
//! so the order never waits for what will not come.

use super::chunks::Jobs;
use super::manager::Sizing;
use super::sink::{unbox, ChunkDone, Stream};
use super::Pool;
use crate::error::{Error, Result};
use crate::task::Job;
use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// What `ChunkedCalls::imap` hands the iterator.
pub(crate) struct Parts<'p, R> {
    pub(crate) jobs: Box<dyn Iterator<Item = Job<R>> + 'p>,
    /// Items a chunk.
    pub(crate) chunk: usize,
    /// Items drawn and not yet yielded, at most.
    pub(crate) buffer: usize,
    /// A setting refused (chunksize or buffersize 0): the only item.
    pub(crate) refused: Option<crate::error::Error>,
}

/// The results of [`Pool::imap`] (in input order) or
/// [`Pool::imap_unordered`] (in completion order), as they come.
pub struct Imap<'p, R> {
    pool: &'p Pool,
    parts: Parts<'p, R>,
    ordered: bool,
    tx: Sender<ChunkDone>,
    rx: Receiver<ChunkDone>,
    /// Items drawn from the input so far.
    drawn: usize,
    /// Items yielded so far.
    yielded: usize,
    /// Items sent whose chunk has not ended.
    running: usize,
    /// Results that arrived and wait for their turn.
    early: BTreeMap<usize, Result<R>>,
    ready: VecDeque<Result<R>>,
    exhausted: bool,
    /// The input's panic, yielded once every item drawn before it is.
    input_error: Option<Error>,
}

impl<'p, R: Send + 'static> Imap<'p, R> {
    pub(crate) fn new(pool: &'p Pool, mut parts: Parts<'p, R>, ordered: bool) -> Self {
        let (tx, rx) = mpsc::channel();
        let refused = parts.refused.take();
        Imap {
            pool,
            parts,
            ordered,
            tx,
            rx,
            drawn: 0,
            yielded: 0,
            running: 0,
            early: BTreeMap::new(),
            ready: VecDeque::new(),
            exhausted: refused.is_some(),
            input_error: refused,
        }
    }

    /// Draws and submits chunks while the buffer has room.
    fn top_up(&mut self) {
        while !self.exhausted && self.drawn - self.yielded + self.parts.chunk <= self.parts.buffer {
            let jobs = self.draw();
            if jobs.len() < self.parts.chunk {
                self.exhausted = true;
            }
            if jobs.is_empty() {
                return;
            }
            let (base, len) = (self.drawn, jobs.len());
            self.drawn += len;
            self.running += len;
            let sink = Stream {
                base,
                tx: self.tx.clone(),
            };
            let source = Box::new(Jobs::new(jobs));
            if self
                .pool
                .send(source, Sizing::Fixed(self.parts.chunk), Box::new(sink))
                .is_none()
            {
                self.take_chunk(ChunkDone {
                    offset: base,
                    len,
                    out: None,
                    failure: Some(super::closed()),
                });
                self.exhausted = true;
            }
        }
    }

    /// Draws up to a chunk of jobs. A panic in the input ends it: the jobs
    /// drawn before it still run, and the panic is kept as the error at
    /// its own position.
    fn draw(&mut self) -> Vec<Job<R>> {
        let mut jobs = Vec::with_capacity(self.parts.chunk);
        let input = &mut self.parts.jobs;
        let drawn = crate::panic::catch(|| {
            while jobs.len() < self.parts.chunk {
                match input.next() {
                    Some(job) => jobs.push(job),
                    None => break,
                }
            }
        });
        if let Err(caught) = drawn {
            self.exhausted = true;
            self.input_error = Some(Error::InputPanicked {
                index: self.drawn + jobs.len(),
                message: caught.message,
            });
        }
        jobs
    }

    /// Files a finished chunk's results by index: its values, the failure
    /// that stopped it, and an error for each item it never ran.
    fn take_chunk(&mut self, done: ChunkDone) {
        self.running -= done.len;
        let end = done.offset + done.len;
        let mut index = done.offset;
        let mut failure = done.failure;
        if let Some(out) = done.out {
            let chunk = unbox::<R>(out, done.offset);
            for value in chunk.values {
                self.file(index, Ok(value));
                index += 1;
            }
            failure = failure.or(chunk.failure);
        }
        if index < end {
            let failure =
                failure.unwrap_or_else(|| Error::Pool(format!("item {index} got no result")));
            self.file(index, Err(failure));
            for skipped in index + 1..end {
                let why =
                    format!("item {skipped} was not run: item {index} of its chunk failed first");
                self.file(skipped, Err(Error::Pool(why)));
            }
        }
    }

    fn file(&mut self, index: usize, result: Result<R>) {
        if self.ordered {
            self.early.insert(index, result);
            while let Some(next) = self.early.remove(&(self.yielded + self.ready.len())) {
                self.ready.push_back(next);
            }
        } else {
            self.ready.push_back(result);
        }
    }

    /// The next result, waiting at most `timeout` for it: `None` at the
    /// end, and `Some(Err(Error::Pool(..)))` when the time ran out (the
    /// iterator goes on; the next call waits again).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_until(Instant::now().checked_add(timeout))
    }

    fn next_until(&mut self, deadline: Option<Instant>) -> Option<Result<R>> {
        loop {
            if let Some(next) = self.ready.pop_front() {
                self.yielded += 1;
                return Some(next);
            }
            self.top_up();
            if self.ready.is_empty() && self.running == 0 && self.exhausted {
                return self.input_error.take().map(Err);
            }
            if !self.ready.is_empty() {
                continue;
            }
            let received = match deadline {
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(d) => self
                    .rx
                    .recv_timeout(d.saturating_duration_since(Instant::now())),
            };
            match received {
                Ok(done) => self.take_chunk(done),
                Err(RecvTimeoutError::Timeout) => {
                    return Some(Err(Error::Pool(format!(
                        "no result came within the timeout ({} of {} drawn items yielded)",
                        self.yielded, self.drawn
                    ))))
                }
                // The iterator holds a sender: this cannot happen.
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

impl<R: Send + 'static> Iterator for Imap<'_, R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.next_until(None)
    }
}

impl<R> std::fmt::Debug for Imap<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("ordered", &self.ordered)
            .field("drawn", &self.drawn)
            .field("yielded", &self.yielded)
            .finish_non_exhaustive()
    }
}
