//! A pool's manager thread: it owns the backend session, takes
//! submissions from the pool's handle, cuts each into chunks as room
//! appears (one job of the session per chunk), and hands each finished
//! chunk to its submission.
//!
//! It never waits on anything but the session and its command channel:
//! callbacks run on their own thread, and a result is handed over with a
//! channel send or a condition variable, so a slow consumer never stalls
//! the workers.

use super::chunks::{PoolJob, Source};
use super::sink::Sink;
use crate::backend::open::Engine;
use crate::backend::{Batch, Finished};
use crate::error::Error;
use crate::options::BatchSize;
use crate::schedule::batch::Batcher;
use crate::task::AnyOutput;
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

/// How long the manager waits on the workers before it looks for new
/// submissions again while work is in flight.
const POLL: Duration = Duration::from_millis(2);

/// What a pool does when a worker dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnWorkerDeath {
    /// Fail the chunk it was running, start a new worker, go on.
    #[default]
    Replace,
    /// Fail everything pending and every later submission:
    /// concurrent.futures' `BrokenProcessPool`.
    Break,
}

/// How a submission's chunks are sized.
pub(crate) enum Sizing {
    /// This many jobs a chunk.
    Fixed(usize),
    /// From how long the last chunks took (`Chunksize::Auto`).
    Auto,
}

/// What a pool's handle asks of its manager.
pub(crate) enum Command {
    /// Run these jobs, reporting each chunk to the sink.
    Submit {
        /// Its ticket, for [`Command::Cancel`].
        id: u64,
        source: Box<dyn Source>,
        sizing: Sizing,
        sink: Box<dyn Sink>,
    },
    /// Drop submission `id` if none of it has been sent yet; the reply
    /// says whether it was (its result is then `Error::Cancelled`).
    Cancel { id: u64, reply: Sender<bool> },
    /// Drop every submission none of which has been sent yet.
    CancelPending,
    /// Take no more submissions; end once what was submitted has run.
    /// (Futures keep senders for `Cancel`, so the channel's end cannot
    /// say it.)
    Close,
    /// Stop the workers now; acknowledge when done.
    Terminate { grace: Duration, done: Sender<()> },
}

struct Submission {
    source: Box<dyn Source>,
    /// `None`: fixed-size chunks of `size`.
    batcher: Option<Batcher>,
    size: usize,
    sink: Box<dyn Sink>,
    /// Chunks sent and not yet ended.
    in_flight: usize,
    /// Chunks sent so far.
    sent: usize,
}

impl Submission {
    fn next_size(&self) -> usize {
        match &self.batcher {
            Some(b) => b.next_size(Some(self.source.remaining())),
            None => self.size,
        }
    }
}

/// A chunk on its way: its submission, offset and length.
struct Sent {
    submission: u64,
    offset: usize,
    len: usize,
}

pub(crate) struct Manager {
    engine: Engine<PoolJob>,
    commands: Receiver<Command>,
    on_death: OnWorkerDeath,
    /// Submissions with jobs not cut yet, in turn.
    queue: VecDeque<u64>,
    submissions: HashMap<u64, Submission>,
    /// Chunks in flight, by the index they were sent at.
    in_flight: HashMap<usize, Sent>,
    next_index: usize,
    /// Why the pool broke (`OnWorkerDeath::Break`), once it did.
    broken: Option<String>,
    /// How many workers, for auto-sizing.
    workers: usize,
    /// The pool's timeline (`PoolBuilder::trace`), written when it ends.
    trace: Option<Arc<crate::trace::Trace>>,
}

impl Manager {
    pub(crate) fn new(
        engine: Engine<PoolJob>,
        commands: Receiver<Command>,
        on_death: OnWorkerDeath,
        workers: usize,
    ) -> Self {
        Manager {
            engine,
            commands,
            on_death,
            queue: VecDeque::new(),
            submissions: HashMap::new(),
            in_flight: HashMap::new(),
            next_index: 0,
            broken: None,
            workers,
            trace: None,
        }
    }

    /// The manager, recording its chunks into `trace`.
    pub(crate) fn traced(mut self, trace: Option<Arc<crate::trace::Trace>>) -> Self {
        self.trace = trace;
        self
    }

    /// Runs until the pool is closed (its command channel ends) and every
    /// submission has ended, or until it is terminated.
    pub(crate) fn run(mut self) {
        self.serve();
        // The session's last records (its workers' deaths) come first.
        drop(self.engine);
        if let Some(trace) = self.trace {
            trace.finish();
        }
    }

    fn serve(&mut self) {
        let mut open = true;
        loop {
            let idle = self.in_flight.is_empty() && self.queue.is_empty();
            if idle && !open {
                return;
            }
            let waited = if idle {
                self.commands.recv().ok()
            } else {
                None
            };
            let mut commands: Vec<Command> = waited.into_iter().collect();
            loop {
                match self.commands.try_recv() {
                    Ok(command) => commands.push(command),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            for command in commands {
                match command {
                    Command::Submit {
                        id,
                        source,
                        sizing,
                        sink,
                    } => {
                        self.submit(id, source, sizing, sink);
                        // Handed to workers in the order of the commands,
                        // so a later CancelPending spares what already
                        // went (CPython's executor runs what it queued).
                        self.dispatch();
                    }
                    Command::Cancel { id, reply } => {
                        let _ = reply.send(self.cancel(id));
                    }
                    Command::Close => open = false,
                    Command::CancelPending => {
                        let ids: Vec<u64> = self.submissions.keys().copied().collect();
                        for id in ids {
                            self.cancel(id);
                        }
                    }
                    Command::Terminate { grace, done } => {
                        self.engine.terminate(grace);
                        self.fail_everything("the pool was terminated");
                        let _ = done.send(());
                        return;
                    }
                }
            }
            self.dispatch();
            if !self.in_flight.is_empty() {
                match self.engine.session().wait(Some(POLL)) {
                    Ok(Some(done)) => self.finished(done),
                    Ok(None) => {}
                    Err(e) => self.fail_in_flight(e),
                }
            }
        }
    }

    /// Drops submission `id` if nothing of it was sent: true when it was.
    fn cancel(&mut self, id: u64) -> bool {
        let unsent = self.submissions.get(&id).is_some_and(|s| s.sent == 0);
        if !unsent {
            return false;
        }
        let mut submission = self.submissions.remove(&id).expect("looked up");
        self.queue.retain(|&q| q != id);
        let len = submission.source.remaining();
        submission.sink.chunk(0, len, None, Some(Error::Cancelled));
        submission.sink.end();
        true
    }

    fn submit(&mut self, id: u64, source: Box<dyn Source>, sizing: Sizing, sink: Box<dyn Sink>) {
        if source.remaining() == 0 {
            sink.end();
            return;
        }
        if let Some(why) = &self.broken {
            let mut sink = sink;
            let len = source.remaining();
            sink.chunk(0, len, None, Some(Error::Pool(why.clone())));
            sink.end();
            return;
        }
        let (batcher, size) = match sizing {
            Sizing::Fixed(n) => (None, n.max(1)),
            Sizing::Auto => {
                let target = self.engine.session().batch_target();
                (Some(Batcher::new(BatchSize::Auto, target, self.workers)), 1)
            }
        };
        self.submissions.insert(
            id,
            Submission {
                source,
                batcher,
                size,
                sink,
                in_flight: 0,
                sent: 0,
            },
        );
        self.queue.push_back(id);
    }

    /// Cuts and sends chunks while the backend has room, taking the
    /// submissions in turn.
    fn dispatch(&mut self) {
        while self.engine.session().has_room() {
            let Some(id) = self.queue.pop_front() else {
                return;
            };
            let Some(submission) = self.submissions.get_mut(&id) else {
                continue;
            };
            let size = submission.next_size();
            let Some((offset, len, job)) = submission.source.next(size) else {
                continue;
            };
            submission.in_flight += 1;
            submission.sent += 1;
            if submission.source.remaining() > 0 {
                self.queue.push_back(id);
            }
            let first = self.next_index;
            self.next_index += 1;
            let sent = Sent {
                submission: id,
                offset,
                len,
            };
            self.in_flight.insert(first, sent);
            let batch = Batch {
                first,
                items: vec![job],
            };
            if let Err(e) = self.engine.session().submit(batch) {
                self.deliver(first, None, Some(e));
            }
        }
    }

    /// Hands a finished chunk to its submission; ends the submission with
    /// its last chunk.
    fn deliver(&mut self, first: usize, out: Option<AnyOutput>, failure: Option<Error>) {
        self.deliver_at(first, out, failure, 0);
    }

    /// Delivers chunk `first`'s answer; a failure of the chunk as a whole
    /// (its worker's death) names the item of its call `call`.
    fn deliver_at(
        &mut self,
        first: usize,
        out: Option<AnyOutput>,
        failure: Option<Error>,
        call: usize,
    ) {
        let Some(sent) = self.in_flight.remove(&first) else {
            return;
        };
        let Some(submission) = self.submissions.get_mut(&sent.submission) else {
            return;
        };
        // A failure of the chunk as a whole names the item it was on.
        let call = call.min(sent.len.saturating_sub(1));
        let failure = failure.map(|e| e.reindex(|_| sent.offset + call));
        submission.sink.chunk(sent.offset, sent.len, out, failure);
        submission.in_flight -= 1;
        if submission.in_flight == 0 && submission.source.remaining() == 0 {
            let done = self
                .submissions
                .remove(&sent.submission)
                .expect("looked up");
            done.sink.end();
        }
    }

    fn finished(&mut self, mut done: Finished<AnyOutput>) {
        if let (Some(trace), Some(times)) = (&self.trace, done.times.take()) {
            trace.jobs(times);
        }
        let died = done.failure.as_ref().and_then(worker_death);
        // An auto-sized submission learns how long its items take.
        if let Some(sent) = self.in_flight.get(&done.first) {
            let submission = self.submissions.get_mut(&sent.submission);
            if let Some(batcher) = submission.and_then(|s| s.batcher.as_mut()) {
                batcher.record(sent.len, done.elapsed);
            }
        }
        self.deliver_at(done.first, done.values.pop(), done.failure, done.call);
        if let (Some(why), OnWorkerDeath::Break) = (died, self.on_death) {
            let why = format!("the pool is broken: {why}; it runs nothing more");
            self.engine.session().cancel();
            self.broken = Some(why.clone());
            self.fail_everything(&why);
        }
    }

    /// A failure of the session as a whole: every chunk in flight gets it.
    fn fail_in_flight(&mut self, e: Error) {
        let why = e.to_string();
        let mut first = Some(e);
        let chunks: Vec<usize> = self.in_flight.keys().copied().collect();
        for index in chunks {
            let e = first.take().unwrap_or_else(|| Error::Pool(why.clone()));
            self.deliver(index, None, Some(e));
        }
    }

    /// Fails every chunk in flight, and what is not cut yet as one chunk
    /// of each submission.
    fn fail_everything(&mut self, why: &str) {
        let chunks: Vec<usize> = self.in_flight.keys().copied().collect();
        for index in chunks {
            self.deliver(index, None, Some(Error::Pool(why.to_string())));
        }
        self.queue.clear();
        for (_, mut submission) in self.submissions.drain() {
            while let Some((offset, len, _)) = submission.source.next(usize::MAX) {
                let e = Error::Pool(why.to_string());
                submission.sink.chunk(offset, len, None, Some(e));
            }
            submission.sink.end();
        }
    }
}

/// How a worker's death reads, when `error` is one (after retries, the
/// last attempt's): what [`OnWorkerDeath`] acts on.
fn worker_death(error: &Error) -> Option<String> {
    match error {
        Error::WorkerDied {
            pid, status, task, ..
        } => Some(format!("worker {pid} running `{task}` {status}")),
        Error::MemoryLimit { .. } => Some(error.to_string()),
        Error::Retried { last, .. } => worker_death(last),
        _ => None,
    }
}
