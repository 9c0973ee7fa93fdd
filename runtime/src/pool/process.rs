//! [`Process`]: one task in a fresh worker process of its own
//! (`multiprocessing.Process(target=..).start()`).

use super::chunks::PoolJob;
use super::sink::unbox;
use super::IntoJob;
use crate::backend::open::{self, Api, Engine, Spec, Workers};
use crate::backend::process::{PoolRules, ProcessSession};
use crate::backend::{Batch, Session};
use crate::error::{Error, Result};
use crate::options::Backend;
use crate::task::chunk;
use std::time::{Duration, Instant};

/// How long a finished worker has to exit once its pipe closes.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// One `#[parallel(backend = "process")]` call running in its own worker
/// process, started by [`Process::spawn`]: Python's `Process` with a
/// target, whose result (or panic, or death) `join` returns.
///
/// The worker dies with its parent, as every parjob worker does
/// (`daemon=True`), and dropping a `Process` that was not joined kills it.
/// In a program whose `main` has `#[parjob::main]` (or calls
/// `parjob::init()` first), it can be spawned from any thread. In a
/// `#[parjob::test]`, whose worker entry is the test's own, spawn it from
/// the test's thread.
pub struct Process<R> {
    session: ProcessSession<PoolJob>,
    pid: u32,
    outcome: Option<Result<R>>,
    status: Option<String>,
}

impl<R: Send + 'static> Process<R> {
    /// Starts a fresh worker process and runs `job` in it
    /// (`Process(target=f, args=..).start()`). It returns once the worker
    /// is up, with the job sent.
    ///
    /// # Errors
    /// `Error::NoWorkerEntry` without a worker entry (see above); a job
    /// that cannot cross a process boundary (a closure); a worker that
    /// could not start.
    pub fn spawn(job: impl IntoJob<R>) -> Result<Process<R>> {
        let rules = PoolRules {
            isolate_deaths: true,
            no_resend: true,
            depth: 1,
            ..PoolRules::default()
        };
        let spec = Spec::own_workers(Api::Process, Backend::Process, 1);
        let Engine::Process(mut session) = open::open(&spec, Workers::Own(rules))? else {
            return Err(Error::Pool(
                "Process::spawn opened no worker process".into(),
            ));
        };
        let job = chunk::chunk(vec![job.into_job()]);
        session.submit(Batch {
            first: 0,
            items: vec![job],
        })?;
        let Some(&pid) = session.worker_pids().first() else {
            // Refused before a worker started (a closure): say why.
            let failure = session.wait(Some(Duration::ZERO))?.and_then(|f| f.failure);
            return Err(failure.unwrap_or_else(|| Error::Pool("no worker started".into())));
        };
        Ok(Process {
            session,
            pid,
            outcome: None,
            status: None,
        })
    }

    /// The worker's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the worker is still running the job.
    pub fn is_alive(&self) -> bool {
        self.outcome.is_none() && !self.session.has_exited(self.pid)
    }

    /// How the worker ended ("exited with code 0", "was killed by signal
    /// 9 (SIGKILL)"), once it has (`exitcode`).
    pub fn exit_status(&self) -> Option<&str> {
        self.status.as_deref()
    }

    /// Sends SIGKILL (`kill()`): `join` then returns the worker's death,
    /// at any moment after `spawn`, and the task never runs again
    /// elsewhere (a `Process` runs its task at most once).
    pub fn kill(&self) {
        self.signal(libc::SIGKILL);
    }

    /// Sends SIGTERM (`terminate()`).
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    fn signal(&self, signal: libc::c_int) {
        if self.outcome.is_none() {
            // A worker already reaped is not signalled: its pid may be
            // another process's by now.
            self.session.signal_worker(self.pid, signal);
        }
    }

    /// Waits for the job and returns its result: the value, its panic, or
    /// the worker's death ([`Error::WorkerDied`], with the signal).
    pub fn join(mut self) -> Result<R> {
        self.wait_until(None);
        self.outcome
            .take()
            .unwrap_or_else(|| Err(Error::Pool("the process ended without a result".into())))
    }

    /// Waits at most `timeout` for the job; true once it has ended (then
    /// [`Process::join`] returns at once).
    pub fn join_timeout(&mut self, timeout: Duration) -> bool {
        self.wait_until(Instant::now().checked_add(timeout));
        self.outcome.is_some()
    }

    fn wait_until(&mut self, deadline: Option<Instant>) {
        while self.outcome.is_none() {
            let patience = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let outcome = match self.session.wait(patience) {
                Ok(Some(done)) => {
                    let mut out = done.values.into_iter().next().map(|o| unbox::<R>(o, 0));
                    match (out.as_mut().and_then(|c| c.values.pop()), done.failure) {
                        (Some(value), None) => Ok(value),
                        (_, Some(e)) => Err(e),
                        (None, None) => Err(out.and_then(|c| c.failure).unwrap_or_else(|| {
                            Error::Pool("the process answered without a result".into())
                        })),
                    }
                }
                Ok(None) if patience.is_some() => return,
                Ok(None) => continue,
                Err(e) => Err(e),
            };
            self.status = match &outcome {
                Err(Error::WorkerDied { status, .. }) => Some(status.clone()),
                _ => self.session.close_worker(self.pid, EXIT_GRACE),
            };
            self.outcome = Some(outcome);
        }
    }
}

impl<R> std::fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.pid)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}
