//! How a worker starts: spawned with its pipe threads, then its hello is
//! checked, then the pool's initializer runs in it. `fill` starts workers
//! until the pool has `n_jobs` and waits for them; events of running
//! workers that arrive meanwhile are kept, in order, for the session.

use super::exit::ExitWatch;
use super::reader;
use super::reader::Event;
use super::{
    exit, kill, spawn, worker, writer, Processes, Stage, Worker, HELLO_TIMEOUT, STOP_POLL,
};
use crate::backend::beacon::Beacon;
use crate::error::{Error, Result};
use crate::wire::{self, FromWorker, Hello};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

impl Processes {
    /// Starts one worker with its reader and writer threads.
    fn start(&mut self, entry: &worker::EntryPoint, share: usize) -> Result<()> {
        let id = self.fresh_id();
        let beacon = Beacon::shared().map_err(|e| Error::io("making a worker beacon", e))?;
        let spawned = spawn::spawn(entry, share, &beacon)?;
        let mut child = spawned.child;
        let pid = child.id();
        let watch = Arc::new(ExitWatch::new(pid));
        let (decoders, decoders_rx) = mpsc::channel();
        // The writer passes segments on the socket; the reader takes the
        // segments of results from a second descriptor of it.
        let threads = spawned.segments.try_clone().and_then(|reader_socket| {
            let frames = writer::FrameWriter::start(
                pid,
                spawned.to_child,
                spawned.segments,
                spawned.token,
                watch.clone(),
            )?;
            let events = self.events_tx.clone();
            reader::start_reader(
                id,
                pid,
                spawned.from_child,
                reader_socket,
                watch.clone(),
                decoders_rx,
                events,
            )?;
            Ok(frames)
        });
        let frames = match threads {
            Ok(frames) => frames,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::io("starting a worker's pipe threads", e));
            }
        };
        let memory = self.memory.watch(watch.clone());
        self.workers.push(Worker {
            id,
            pid,
            child,
            watch,
            frames,
            decoders,
            beacon,
            stage: Stage::Hello,
            queue: VecDeque::new(),
            batches_done: 0,
            items_done: 0,
            segments: HashSet::new(),
            memory,
            solo: false,
        });
        Ok(())
    }

    /// Starts workers until there are `n_jobs`, and waits for their hellos.
    pub(super) fn fill(&mut self) -> Result<()> {
        self.reap_exited_idle();
        let Some(entry) = worker::entry() else {
            return Err(Error::NoWorkerEntry);
        };
        if self.workers.len() >= self.n_jobs {
            return Ok(());
        }
        let share = self
            .worker_threads
            .unwrap_or_else(|| (crate::backend::nesting::current().cpus / self.n_jobs).max(1));
        if self.rules.lazy {
            // One more worker, and only when every worker is busy.
            let idle = self
                .workers
                .iter()
                .any(|w| w.queue.is_empty() && w.stage != Stage::Hello);
            if idle {
                return Ok(());
            }
            self.start(&entry, share)?;
        }
        while self.workers.len() < self.n_jobs && !self.rules.lazy {
            self.start(&entry, share)?;
        }
        let hello_by = Instant::now() + HELLO_TIMEOUT;
        while let Some((pid, by)) = self.first_due(hello_by) {
            if self.rules.stop.load(Ordering::Acquire) {
                self.kill_all();
                return Err(Error::Pool("the pool was terminated".into()));
            }
            let left = by.map_or(STOP_POLL, |by| {
                by.saturating_duration_since(Instant::now()).min(STOP_POLL)
            });
            let event = match self.events.recv_timeout(left) {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout) if by.is_some_and(|by| Instant::now() >= by) => {
                    let late = self.late_start(pid);
                    self.kill_all();
                    return Err(late);
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => unreachable!("the pool holds a sender"),
            };
            match self.position(event.worker()) {
                // A new worker's event: handled here.
                Some(pos) if self.workers[pos].stage == Stage::Hello => self.hello(pos, event)?,
                Some(pos) if matches!(self.workers[pos].stage, Stage::Init(_)) => {
                    self.initialized(pos, event)?
                }
                // A running worker's: kept, in order, for the session.
                Some(_) => self.deferred.push_back(event),
                None => {}
            }
        }
        Ok(())
    }

    /// The worker not yet ready whose start is due first, and when.
    fn first_due(&self, hello_by: Instant) -> Option<(u32, Option<Instant>)> {
        let due = |w: &Worker| match w.stage {
            Stage::Hello => Some(Some(hello_by)),
            Stage::Init(by) => Some(by),
            Stage::Ready => None,
        };
        self.workers
            .iter()
            .filter_map(|w| Some((w.pid, due(w)?)))
            .min_by_key(|&(_, by)| (by.is_none(), by))
    }

    /// The error for worker `pid`, which did not finish its start in time.
    pub(super) fn late_start(&self, pid: u32) -> Error {
        let initializing = self
            .workers
            .iter()
            .any(|w| w.pid == pid && matches!(w.stage, Stage::Init(_)));
        match &self.rules.init {
            Some(init) if initializing => Error::Pool(format!(
                "the initializer `{}` did not finish within {:?} \
                 (initializer_timeout) in worker {pid}, which was killed",
                init.task,
                init.timeout.unwrap_or_default()
            )),
            _ => Error::Handshake(format!(
                "worker {pid} did not say hello within {HELLO_TIMEOUT:?}: \
                 does `main` start with #[parjob::main] or parjob::init()?"
            )),
        }
    }

    /// Takes a new worker's first event, which must be a matching hello.
    pub(super) fn hello(&mut self, pos: usize, event: Event) -> Result<()> {
        let why = match event {
            Event::Frame { payload, .. } => match wire::parse_from_worker(&payload) {
                Ok(FromWorker::Hello(h)) => h.check(&Hello::current()).err(),
                Ok(other) => Some(format!("expected a hello, got {other:?}")),
                Err(e) => Some(format!("unreadable hello: {e}")),
            },
            Event::Value { .. } => Some("a result before its hello".into()),
            Event::Closed { .. } => {
                let mut w = self.workers.swap_remove(pos);
                let status = exit::reap(&mut w.child, &w.watch);
                Some(format!("worker {} {status} before its hello", w.pid))
            }
        };
        match why {
            None => {
                let w = &mut self.workers[pos];
                w.stage = match &self.rules.init {
                    None => Stage::Ready,
                    Some(init) => {
                        let msg = wire::ToWorker::Init {
                            task: init.task.to_string(),
                            args: wire::Bytes(init.args.clone()),
                        };
                        let frame = wire::encode_frame(&msg).map_err(|e| {
                            Error::Handshake(format!("encoding the initializer: {e}"))
                        })?;
                        w.frames.send(Arc::new(frame));
                        Stage::Init(init.timeout.and_then(|t| Instant::now().checked_add(t)))
                    }
                };
                Ok(())
            }
            Some(why) => {
                self.kill_all();
                Err(Error::Handshake(why))
            }
        }
    }

    /// Takes a new worker's answer to the pool's initializer: `Done` makes
    /// it ready; a failure or its death is the error of the submission
    /// that started it, and it is killed (no worker is retried for ever).
    fn initialized(&mut self, pos: usize, event: Event) -> Result<()> {
        let task = self.rules.init.as_ref().map_or("", |i| i.task);
        let pid = self.workers[pos].pid;
        let why = match event {
            Event::Frame { payload, .. } => match wire::parse_from_worker(&payload) {
                Ok(FromWorker::Done { id: 0, .. }) => None,
                Ok(FromWorker::JobFailure { failure, .. }) => {
                    Some(crate::backend::in_flight::failure_error(task, 0, failure).to_string())
                }
                Ok(other) => Some(format!("expected the initializer's end, got {other:?}")),
                Err(e) => Some(format!("unreadable answer: {e}")),
            },
            Event::Value { .. } => Some("a result before the initializer's end".into()),
            Event::Closed { .. } => {
                let w = &mut self.workers[pos];
                Some(format!("the worker {}", exit::reap(&mut w.child, &w.watch)))
            }
        };
        match why {
            None => {
                self.workers[pos].stage = Stage::Ready;
                Ok(())
            }
            Some(why) => {
                kill(self.workers.swap_remove(pos));
                Err(Error::Handshake(format!(
                    "the initializer `{task}` failed in worker {pid}: {why}"
                )))
            }
        }
    }
}
