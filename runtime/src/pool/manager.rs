//! A pool's manager thread: it owns the backend session, takes
//! submissions from the pool's handle, sends their chunks to workers as
//! room appears, and hands each finished chunk to its submission.
//!
//! It never waits on anything but the session and its command channel:
//! callbacks run on their own thread, and a result is handed over with a
//! channel send or a condition variable, so a slow consumer never stalls
//! the workers.

use super::sink::Sink;
use super::OnWorkerDeath;
use crate::backend::process::ProcessSession;
use crate::backend::thread::ThreadSession;
use crate::backend::{Batch, Finished, Session};
use crate::error::Error;
use crate::options::BatchSize;
use crate::schedule::batch::Batcher;
use crate::task::{AnyOutput, Job};
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::Duration;

/// How long the manager waits on the workers before it looks for new
/// submissions again while work is in flight.
const POLL: Duration = Duration::from_millis(2);

/// The work a pool runs.
pub(crate) type PoolJob = Job<AnyOutput>;

/// The backend behind a pool.
pub(crate) enum Engine {
    Process(ProcessSession<PoolJob>),
    Thread(ThreadSession<PoolJob>),
}

impl Engine {
    fn session(&mut self) -> &mut dyn Session<PoolJob> {
        match self {
            Engine::Process(s) => s,
            Engine::Thread(s) => s,
        }
    }

    /// Stops the workers now: processes get SIGTERM, then SIGKILL after
    /// `grace`; threads skip the jobs they have not started.
    fn terminate(&mut self, grace: Duration) {
        match self {
            Engine::Process(s) => s.terminate(grace),
            Engine::Thread(s) => s.cancel(),
        }
    }
}

/// A submission's work: cut into chunks (`(offset, jobs)`) already, or
/// to be cut as it goes, by how long its chunks take (`Chunksize::Auto`).
pub(crate) enum Chunks {
    Cut(Vec<(usize, Vec<PoolJob>)>),
    Auto(Vec<PoolJob>),
}

/// What a pool's handle asks of its manager.
pub(crate) enum Command {
    /// Run these jobs, reporting each chunk to the sink.
    Submit { chunks: Chunks, sink: Box<dyn Sink> },
    /// Stop the workers now; acknowledge when done.
    Terminate { grace: Duration, done: Sender<()> },
}

struct Submission {
    sink: Box<dyn Sink>,
    /// Chunks cut and not yet ended.
    chunks_left: usize,
    /// Jobs of an auto-sized submission that are not cut yet.
    uncut: Option<Uncut>,
}

/// The rest of an auto-sized submission, cut one chunk at a time.
struct Uncut {
    jobs: VecDeque<PoolJob>,
    offset: usize,
    batcher: Batcher,
}

/// A queued piece of work: a chunk, or the next chunk of an auto-sized
/// submission.
enum Queued {
    Chunk(u64, usize, Vec<PoolJob>),
    Auto(u64),
}

pub(crate) struct Manager {
    engine: Engine,
    commands: Receiver<Command>,
    on_death: OnWorkerDeath,
    /// Work not yet sent.
    queue: VecDeque<Queued>,
    submissions: HashMap<u64, Submission>,
    /// Chunks in flight by the batch index they were sent at.
    in_flight: HashMap<usize, (u64, usize)>,
    next_submission: u64,
    next_index: usize,
    /// Why the pool broke (`OnWorkerDeath::Break`), once it did.
    broken: Option<String>,
    /// How many workers, for auto-sizing.
    workers: usize,
}

impl Manager {
    pub(crate) fn new(
        engine: Engine,
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
            next_submission: 0,
            next_index: 0,
            broken: None,
            workers,
        }
    }

    /// Runs until the pool is closed (its command channel ends) and every
    /// submission has ended, or until it is terminated.
    pub(crate) fn run(mut self) {
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
                    Command::Submit { chunks, sink } => self.submit(chunks, sink),
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

    fn submit(&mut self, chunks: Chunks, sink: Box<dyn Sink>) {
        let id = self.next_submission;
        self.next_submission += 1;
        let (cut, uncut) = match chunks {
            Chunks::Cut(cut) => (cut, None),
            Chunks::Auto(jobs) if jobs.is_empty() => (Vec::new(), None),
            Chunks::Auto(jobs) => {
                let session = self.engine.session();
                let uncut = Uncut {
                    jobs: jobs.into(),
                    offset: 0,
                    batcher: Batcher::new(BatchSize::Auto, session.batch_target(), self.workers),
                };
                self.queue.push_back(Queued::Auto(id));
                (Vec::new(), Some(uncut))
            }
        };
        if cut.is_empty() && uncut.is_none() {
            sink.end();
            return;
        }
        let chunks_left = cut.len();
        for (offset, jobs) in cut {
            self.queue.push_back(Queued::Chunk(id, offset, jobs));
        }
        let submission = Submission {
            sink,
            chunks_left,
            uncut,
        };
        self.submissions.insert(id, submission);
        if let Some(why) = self.broken.clone() {
            self.fail_queued(&why);
        }
    }

    /// The next chunk to send: a queued one, or the next cut of an
    /// auto-sized submission (which goes back in the queue while jobs
    /// remain).
    fn next_chunk(&mut self) -> Option<(u64, usize, Vec<PoolJob>)> {
        match self.queue.pop_front()? {
            Queued::Chunk(id, offset, jobs) => Some((id, offset, jobs)),
            Queued::Auto(id) => {
                let submission = self.submissions.get_mut(&id)?;
                let uncut = submission.uncut.as_mut()?;
                let size = uncut.batcher.next_size(Some(uncut.jobs.len()));
                let jobs: Vec<PoolJob> = uncut.jobs.drain(..size.min(uncut.jobs.len())).collect();
                let offset = uncut.offset;
                uncut.offset += jobs.len();
                submission.chunks_left += 1;
                if uncut.jobs.is_empty() {
                    submission.uncut = None;
                } else {
                    self.queue.push_back(Queued::Auto(id));
                }
                Some((id, offset, jobs))
            }
        }
    }

    /// Sends queued chunks while the backend has room.
    fn dispatch(&mut self) {
        while !self.queue.is_empty() && self.engine.session().has_room() {
            let Some((id, offset, jobs)) = self.next_chunk() else {
                continue;
            };
            let first = self.next_index;
            self.next_index += jobs.len();
            self.in_flight.insert(first, (id, offset));
            if let Err(e) = self.engine.session().submit(Batch { first, items: jobs }) {
                self.deliver(first, Vec::new(), Some(e));
            }
        }
    }

    /// Hands a finished chunk to its submission; ends the submission with
    /// its last chunk.
    fn deliver(&mut self, first: usize, values: Vec<AnyOutput>, failure: Option<Error>) {
        let Some((id, offset)) = self.in_flight.remove(&first) else {
            return;
        };
        // Errors name the item's place in its own submission.
        let failure = failure.map(|e| e.reindex(|i| i.saturating_sub(first) + offset));
        self.chunk_of(id, offset, values, failure);
    }

    fn chunk_of(&mut self, id: u64, offset: usize, values: Vec<AnyOutput>, failure: Option<Error>) {
        let Some(submission) = self.submissions.get_mut(&id) else {
            return;
        };
        submission.sink.chunk(offset, values, failure);
        submission.chunks_left -= 1;
        if submission.chunks_left == 0 && submission.uncut.is_none() {
            let done = self.submissions.remove(&id).expect("looked up");
            done.sink.end();
        }
    }

    fn finished(&mut self, done: Finished<AnyOutput>) {
        let died = match &done.failure {
            Some(Error::WorkerDied {
                pid, status, task, ..
            }) => Some(format!("worker {pid} running `{task}` {status}")),
            _ => None,
        };
        // An auto-sized submission learns how long its jobs take.
        if let Some(uncut) = self
            .in_flight
            .get(&done.first)
            .and_then(|(id, _)| self.submissions.get_mut(id))
            .and_then(|s| s.uncut.as_mut())
        {
            uncut.batcher.record(done.jobs, done.elapsed);
        }
        self.deliver(done.first, done.values, done.failure);
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
            self.deliver(index, Vec::new(), Some(e));
        }
    }

    fn fail_queued(&mut self, why: &str) {
        for queued in std::mem::take(&mut self.queue) {
            let (id, offset) = match queued {
                Queued::Chunk(id, offset, _) => (id, offset),
                Queued::Auto(id) => {
                    // What is not cut yet fails as one chunk.
                    let Some(uncut) = self.submissions.get_mut(&id).and_then(|s| {
                        s.chunks_left += 1;
                        s.uncut.take()
                    }) else {
                        continue;
                    };
                    (id, uncut.offset)
                }
            };
            self.chunk_of(id, offset, Vec::new(), Some(Error::Pool(why.to_string())));
        }
    }

    fn fail_everything(&mut self, why: &str) {
        let chunks: Vec<usize> = self.in_flight.keys().copied().collect();
        for index in chunks {
            self.deliver(index, Vec::new(), Some(Error::Pool(why.to_string())));
        }
        self.fail_queued(why);
    }
}
