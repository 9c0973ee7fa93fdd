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

/// What a pool's handle asks of its manager.
pub(crate) enum Command {
    /// Run these chunks (`(offset, jobs)`), reporting to the sink.
    Submit {
        chunks: Vec<(usize, Vec<PoolJob>)>,
        sink: Box<dyn Sink>,
    },
    /// Stop the workers now; acknowledge when done.
    Terminate { grace: Duration, done: Sender<()> },
}

struct Submission {
    sink: Box<dyn Sink>,
    chunks_left: usize,
}

pub(crate) struct Manager {
    engine: Engine,
    commands: Receiver<Command>,
    on_death: OnWorkerDeath,
    /// Chunks not yet sent: submission, offset, jobs.
    queue: VecDeque<(u64, usize, Vec<PoolJob>)>,
    submissions: HashMap<u64, Submission>,
    /// Chunks in flight by the batch index they were sent at.
    in_flight: HashMap<usize, (u64, usize)>,
    next_submission: u64,
    next_index: usize,
    /// Why the pool broke (`OnWorkerDeath::Break`), once it did.
    broken: Option<String>,
}

impl Manager {
    pub(crate) fn new(
        engine: Engine,
        commands: Receiver<Command>,
        on_death: OnWorkerDeath,
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

    fn submit(&mut self, chunks: Vec<(usize, Vec<PoolJob>)>, sink: Box<dyn Sink>) {
        if chunks.is_empty() {
            sink.end();
            return;
        }
        let id = self.next_submission;
        self.next_submission += 1;
        self.submissions.insert(
            id,
            Submission {
                sink,
                chunks_left: chunks.len(),
            },
        );
        for (offset, jobs) in chunks {
            self.queue.push_back((id, offset, jobs));
        }
        if let Some(why) = self.broken.clone() {
            self.fail_queued(&why);
        }
    }

    /// Sends queued chunks while the backend has room.
    fn dispatch(&mut self) {
        while !self.queue.is_empty() && self.engine.session().has_room() {
            let (id, offset, jobs) = self.queue.pop_front().expect("not empty");
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
        if submission.chunks_left == 0 {
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
        for (id, offset, _) in std::mem::take(&mut self.queue) {
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
