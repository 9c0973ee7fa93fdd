//! The process backend: re-executed worker processes that find tasks by name.
//!
//! # Life of a worker
//! 1. **Spawn.** Two `O_CLOEXEC` pipes are made; the child's two ends are
//!    made inheritable in the forked child only, so no other process ever
//!    holds them. The child is `/proc/self/exe` (never a path that a rebuild
//!    could replace), started from one long-lived spawner thread, because
//!    `PR_SET_PDEATHSIG` fires when the *thread* that forked exits. The
//!    child also checks, before `exec`, that its parent is still alive.
//! 2. **Handshake.** The worker's first frame is a [`Hello`]: magic,
//!    protocol version and registry fingerprint. A mismatch, or no hello
//!    within [`HELLO_TIMEOUT`], kills it and fails the run with a reason.
//! 3. **Serve.** At most [`DEPTH`] runs are queued on a worker at a time, so
//!    at most `DEPTH * n_jobs` jobs are in flight. Each worker has a reader
//!    thread that forwards its frames to one channel for the whole pool.
//! 4. **End.** A reader that sees end-of-file reports the worker closed;
//!    the pool reaps it, and if it held work, the first job it held fails
//!    with its exit status or signal. Jobs queued behind it are re-sent to
//!    the other workers. Dropping the pool closes the pipes, so idle workers
//!    exit at once; busy ones are killed. If the parent dies first, the
//!    kernel kills the workers (`PR_SET_PDEATHSIG`) and their reads see EOF.

use super::Executor;
use crate::error::{Error, Result};
use crate::ipc::{self, FromWorker, Hello, ToWorker};
use crate::task::{Decoder, Job, Outcome};
use crate::worker::{self, Entry, ENV_WORKER};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, Write};
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How many runs may be queued on one worker: one running, one waiting,
/// so a worker never idles while the parent sends the next.
pub(crate) const DEPTH: usize = 2;
/// How long a new worker has to say hello.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(60);
/// The thread-count variables a worker gets (DESIGN.md decision 6).
pub const THREAD_ENV_VARS: [&str; 5] = [
    "RAYON_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "POLARS_MAX_THREADS",
];

enum Event {
    Frame {
        worker: u64,
        payload: Vec<u8>,
    },
    Closed {
        worker: u64,
        error: Option<io::Error>,
    },
}

struct Sent {
    id: u64,
    index: usize,
    task: &'static str,
    /// Kept until the answer comes, to re-send if the worker dies first.
    frame: Vec<u8>,
}

struct Worker {
    id: u64,
    pid: u32,
    child: Child,
    to_child: File,
    ready: bool,
    queue: VecDeque<Sent>,
}

/// A pool of worker processes, kept between runs.
pub(crate) struct Processes {
    n_jobs: usize,
    workers: Vec<Worker>,
    events_tx: Sender<Event>,
    events: Receiver<Event>,
    next_id: u64,
}

impl Processes {
    /// A pool of `n_jobs` workers, started on first use.
    pub(crate) fn new(n_jobs: usize) -> Self {
        let (events_tx, events) = mpsc::channel();
        Processes {
            n_jobs,
            workers: Vec::new(),
            events_tx,
            events,
            next_id: 0,
        }
    }

    pub(crate) fn n_jobs(&self) -> usize {
        self.n_jobs
    }

    /// The pids of the live workers.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.workers.iter().map(|w| w.pid).collect()
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Starts workers until there are `n_jobs`, and waits for their hellos.
    fn fill(&mut self) -> Result<()> {
        let Some(entry) = worker::entry() else {
            return Err(Error::NoWorkerEntry);
        };
        let share = (crate::config::cpu_count() / self.n_jobs).max(1);
        while self.workers.len() < self.n_jobs {
            let id = self.fresh_id();
            let (child, to_child, from_child) = spawn(&entry, share)?;
            let tx = self.events_tx.clone();
            let pid = child.id();
            std::thread::Builder::new()
                .name(format!("parjob-reader-{pid}"))
                .spawn(move || read_frames(id, from_child, tx))
                .map_err(|e| Error::io("starting a reader thread", e))?;
            self.workers.push(Worker {
                id,
                pid,
                child,
                to_child,
                ready: false,
                queue: VecDeque::new(),
            });
        }
        let deadline = Instant::now() + HELLO_TIMEOUT;
        let ours = Hello::current();
        while let Some(waiting) = self.workers.iter().find(|w| !w.ready).map(|w| w.pid) {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = match self.events.recv_timeout(left) {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout) => {
                    self.kill_all();
                    return Err(Error::Handshake(format!(
                        "worker {waiting} did not say hello within {HELLO_TIMEOUT:?}: \
                         does `main` start with #[parjob::main] or parjob::init()?"
                    )));
                }
                Err(RecvTimeoutError::Disconnected) => unreachable!("the pool holds a sender"),
            };
            match event {
                Event::Frame { worker, payload } => {
                    let Some(pos) = self.position(worker) else {
                        continue;
                    };
                    let hello = match ipc::decode_message::<FromWorker>(&payload) {
                        Ok(FromWorker::Hello(h)) => h.check(&ours),
                        Ok(other) => Err(format!("expected a hello, got {other:?}")),
                        Err(e) => Err(format!("unreadable hello: {e}")),
                    };
                    if let Err(why) = hello {
                        self.kill_all();
                        return Err(Error::Handshake(why));
                    }
                    self.workers[pos].ready = true;
                }
                Event::Closed { worker, .. } => {
                    let Some(pos) = self.position(worker) else {
                        continue;
                    };
                    let mut w = self.workers.swap_remove(pos);
                    let status = describe(w.child.wait());
                    self.kill_all();
                    return Err(Error::Handshake(format!(
                        "worker {} {status} before its hello",
                        w.pid
                    )));
                }
            }
        }
        Ok(())
    }

    fn position(&self, worker: u64) -> Option<usize> {
        self.workers.iter().position(|w| w.id == worker)
    }

    /// Kills every worker that still holds work, and reaps it.
    fn kill_busy(&mut self) {
        let (busy, idle): (Vec<Worker>, Vec<Worker>) =
            self.workers.drain(..).partition(|w| !w.queue.is_empty());
        self.workers = idle;
        for w in busy {
            kill(w);
        }
    }

    fn kill_all(&mut self) {
        for w in self.workers.drain(..) {
            kill(w);
        }
    }
}

fn kill(mut w: Worker) {
    let _ = w.child.kill();
    let _ = w.child.wait();
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.kill_busy();
        // Closing the pipe ends an idle worker's loop.
        let idle: Vec<Worker> = self.workers.drain(..).collect();
        let mut children: Vec<Child> = idle.into_iter().map(|w| w.child).collect();
        let deadline = Instant::now() + Duration::from_secs(2);
        for child in &mut children {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Executor for Processes {
    fn execute<R, I, D>(&mut self, jobs: I, mut deliver: D) -> Result<()>
    where
        R: Send + 'static,
        I: Iterator<Item = Job<R>>,
        D: FnMut(usize, Result<R>) -> ControlFlow<()>,
    {
        if worker::entry().is_none() {
            return Err(Error::NoWorkerEntry);
        }
        // A run that ended by unwinding (a panicking input iterator) may
        // have left work queued; those workers' answers belong to nobody.
        self.kill_busy();
        let mut jobs = jobs.enumerate().peekable();
        // Answers are decoded with the job's own decoder, kept per run id.
        let mut decoders: std::collections::HashMap<u64, fn(&[u8]) -> _> =
            std::collections::HashMap::new();
        let mut resend: VecDeque<Sent> = VecDeque::new();
        loop {
            if self.workers.is_empty() && (jobs.peek().is_some() || !resend.is_empty()) {
                self.fill()?;
            }
            // Dispatch to the least loaded workers while any has room.
            while let Some(pos) = self.least_loaded() {
                let sent = if let Some(sent) = resend.pop_front() {
                    sent
                } else if let Some((index, job)) = jobs.next() {
                    match self.prepare(index, job) {
                        Prepared::Remote(sent, decode) => {
                            decoders.insert(sent.id, decode);
                            sent
                        }
                        Prepared::Done(result) => {
                            if deliver(index, result).is_break() {
                                self.kill_busy();
                                return Ok(());
                            }
                            continue;
                        }
                    }
                } else {
                    break;
                };
                let w = &mut self.workers[pos];
                // A write to a dead worker fails with EPIPE; its reader
                // thread reports the closure, and the run is re-sent then.
                let _ = w.to_child.write_all(&sent.frame);
                w.queue.push_back(sent);
            }
            if self.workers.iter().all(|w| w.queue.is_empty())
                && resend.is_empty()
                && jobs.peek().is_none()
            {
                return Ok(());
            }
            let event = self.events.recv().expect("the pool holds a sender");
            let flow = match event {
                Event::Frame { worker, payload } => {
                    let Some(pos) = self.position(worker) else {
                        continue;
                    };
                    let msg = ipc::decode_message::<FromWorker>(&payload);
                    let w = &mut self.workers[pos];
                    let Some(sent) = w.queue.pop_front() else {
                        continue;
                    };
                    let Some(decode) = decoders.remove(&sent.id) else {
                        continue;
                    };
                    let result = match msg {
                        Ok(FromWorker::Done { id, outcome }) if id == sent.id => {
                            answer(sent.task, sent.index, outcome, decode)
                        }
                        Ok(other) => Err(Error::Codec {
                            task: sent.task.into(),
                            index: sent.index,
                            action: "read the worker's answer",
                            cause: format!("expected the answer to run {}, got {other:?}", sent.id),
                        }),
                        Err(e) => Err(Error::Codec {
                            task: sent.task.into(),
                            index: sent.index,
                            action: "read the worker's answer",
                            cause: e.to_string(),
                        }),
                    };
                    deliver(sent.index, result)
                }
                Event::Closed { worker, error } => {
                    let Some(pos) = self.position(worker) else {
                        continue;
                    };
                    let mut w = self.workers.swap_remove(pos);
                    let mut status = describe(w.child.wait());
                    if let Some(e) = error {
                        status = format!("{status} (its pipe failed: {e})");
                    }
                    let Some(failed) = w.queue.pop_front() else {
                        continue;
                    };
                    decoders.remove(&failed.id);
                    // Runs queued behind the failed one never started.
                    resend.extend(w.queue.drain(..));
                    deliver(
                        failed.index,
                        Err(Error::WorkerDied {
                            task: failed.task.into(),
                            index: failed.index,
                            pid: w.pid,
                            status,
                        }),
                    )
                }
            };
            if flow.is_break() {
                self.kill_busy();
                return Ok(());
            }
        }
    }
}

enum Prepared<R> {
    Remote(
        Sent,
        fn(&[u8]) -> std::result::Result<R, crate::codec::CodecError>,
    ),
    Done(Result<R>),
}

impl Processes {
    fn least_loaded(&self) -> Option<usize> {
        self.workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.queue.len() < DEPTH)
            .min_by_key(|(_, w)| w.queue.len())
            .map(|(i, _)| i)
    }

    fn prepare<R: Send + 'static>(&mut self, index: usize, job: Job<R>) -> Prepared<R> {
        let task = job.task();
        let (Some(args), Some(decode)) = (job.encode_args(), job.decoder()) else {
            // A closure cannot cross a process boundary: it runs here, as
            // joblib runs `require="sharedmem"` work on threads.
            let result = job
                .run_caught()
                .map_err(|caught| super::panic_error(task, index, caught));
            return Prepared::Done(result);
        };
        let codec_error = |action, cause: String| Error::Codec {
            task: task.into(),
            index,
            action,
            cause,
        };
        let args = match args {
            Ok(args) => args,
            Err(e) => return Prepared::Done(Err(codec_error("encode the arguments", e.0))),
        };
        let id = self.fresh_id();
        let msg = ToWorker::Run {
            id,
            task: task.to_string(),
            args,
        };
        match ipc::encode_frame(&msg) {
            Ok(frame) => Prepared::Remote(
                Sent {
                    id,
                    index,
                    task,
                    frame,
                },
                decode,
            ),
            Err(e) => Prepared::Done(Err(codec_error("encode the arguments", e.0))),
        }
    }
}

fn answer<R>(task: &str, index: usize, outcome: Outcome, decode: Decoder<R>) -> Result<R> {
    let codec_error = |action, cause: String| Error::Codec {
        task: task.into(),
        index,
        action,
        cause,
    };
    match outcome {
        Outcome::Ok(bytes) => decode(&bytes).map_err(|e| codec_error("decode the result", e.0)),
        Outcome::Panic { message, location } => Err(Error::Panic {
            task: task.into(),
            index,
            message,
            location,
        }),
        Outcome::UnknownTask => Err(Error::UnknownTask {
            task: task.into(),
            index,
        }),
        Outcome::DecodeArgs(e) => Err(codec_error("decode the arguments in the worker", e)),
        Outcome::EncodeResult(e) => Err(codec_error("encode the result in the worker", e)),
    }
}

fn read_frames(worker: u64, from_child: File, events: Sender<Event>) {
    let mut reader = BufReader::new(from_child);
    let error = loop {
        match ipc::read_frame(&mut reader) {
            Ok(Some(payload)) => {
                if events.send(Event::Frame { worker, payload }).is_err() {
                    return;
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    let _ = events.send(Event::Closed { worker, error });
}

/// Says how a worker ended, in words.
fn describe(status: io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(sig)) => format!("was killed by signal {sig} ({})", signal_name(sig)),
            _ => format!("ended with {s}"),
        },
        Err(e) => format!("ended, but its status could not be read: {e}"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGINT => "SIGINT",
        libc::SIGPIPE => "SIGPIPE",
        _ => "another signal",
    }
}

struct SpawnRequest {
    command: Command,
    child_fds: [OwnedFd; 2],
    reply: Sender<io::Result<Child>>,
}

/// Spawns from one thread that lives as long as the process, because the
/// kernel's parent-death signal follows the thread that forked.
fn spawner() -> &'static Mutex<Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("parjob-spawner".into())
            .spawn(move || {
                for mut req in rx {
                    let result = req.command.spawn();
                    drop(req.child_fds);
                    let _ = req.reply.send(result);
                }
            })
            .expect("starting the parjob spawner thread");
        Mutex::new(tx)
    })
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn worker_program() -> std::path::PathBuf {
    let proc_exe = std::path::Path::new("/proc/self/exe");
    if proc_exe.exists() {
        proc_exe.to_path_buf()
    } else {
        std::env::current_exe().unwrap_or_else(|_| proc_exe.to_path_buf())
    }
}

fn spawn(entry: &Entry, share: usize) -> Result<(Child, File, File)> {
    let (child_reads, parent_writes) = pipe().map_err(|e| Error::io("making a pipe", e))?;
    let (parent_reads, child_writes) = pipe().map_err(|e| Error::io("making a pipe", e))?;
    let mut command = Command::new(worker_program());
    if let Some(arg0) = std::env::args_os().next() {
        command.arg0(arg0);
    }
    if let Entry::Test { name } = entry {
        command.args([
            name.as_str(),
            "--exact",
            "--test-threads=1",
            "-q",
            "--nocapture",
            "--include-ignored",
        ]);
    }
    command
        .env(
            ENV_WORKER,
            format!(
                "{},{},{share}",
                child_reads.as_raw_fd(),
                child_writes.as_raw_fd()
            ),
        )
        .stdin(Stdio::null());
    for var in THREAD_ENV_VARS {
        if std::env::var_os(var).is_none() {
            command.env(var, share.to_string());
        }
    }
    let keep = [child_reads.as_raw_fd(), child_writes.as_raw_fd()];
    // SAFETY: getpid is async-signal-safe and called before the fork.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe calls (fcntl, prctl, getppid, _exit).
    unsafe {
        command.pre_exec(move || {
            for fd in keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // The parent died before the signal was armed.
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (reply, answer) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(SpawnRequest {
            command,
            child_fds: [child_reads, child_writes],
            reply,
        })
        .map_err(|_| {
            Error::io(
                "spawning a worker",
                io::Error::other("spawner thread is gone"),
            )
        })?;
    let child = answer
        .recv()
        .map_err(|_| {
            Error::io(
                "spawning a worker",
                io::Error::other("spawner thread is gone"),
            )
        })?
        .map_err(|e| Error::io(format!("spawning worker {}", worker_program().display()), e))?;
    Ok((child, File::from(parent_writes), File::from(parent_reads)))
}
