//! The entry and the loop of a worker process.
//!
//! A worker is this same program, re-executed with `PARJOB_WORKER` in its
//! environment. It must not run the user's `main`, so the entry point is
//! at the top of `main` (`#[parjob::main]` or [`init`]) or of a test
//! (`#[parjob::test]`): there it sees the variable, serves tasks until the
//! parent closes the pipe, and exits without returning. In the parent the
//! same call only records that an entry exists, which is what allows the
//! process backend to spawn at all (docs/decisions.md).

use super::log;
use crate::backend::beacon::Beacon;
use crate::backend::nesting;
use crate::options::NestedIn;
use crate::task::registry;
use crate::wire::{self, Hello, JobFailure, ToWorker};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Set in a worker's environment:
/// `<read fd>,<write fd>,<beacon fd>,<cpu share>,<parent pid>,<token>`.
pub(crate) const ENV_WORKER: &str = "PARJOB_WORKER";

/// What a parent tells a worker through [`ENV_WORKER`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkerSpec {
    pub read_fd: i32,
    pub write_fd: i32,
    pub beacon_fd: i32,
    pub share: usize,
    /// The pid of the parent that spawned this worker.
    pub parent: u32,
    /// The parent's first 16 bytes on the pipe.
    pub token: [u8; 16],
    /// For a test worker: the parent's stdout, kept aside while libtest
    /// starts (its `running 1 test` line goes to /dev/null) and put back
    /// on fd 1 when the worker begins, so the tasks' output is the user's.
    /// -1 when stdout was not moved.
    pub stdout_fd: i32,
    /// The worker's end of the socket shared-memory segments arrive on.
    pub segments_fd: i32,
}

impl std::fmt::Display for WorkerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{},{},{},{},{},{},{},",
            self.read_fd,
            self.write_fd,
            self.beacon_fd,
            self.share,
            self.parent,
            self.stdout_fd,
            self.segments_fd
        )?;
        self.token.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::str::FromStr for WorkerSpec {
    type Err = String;
    fn from_str(spec: &str) -> Result<Self, String> {
        let malformed = || format!("malformed {ENV_WORKER}={spec:?}");
        let fields: Vec<&str> = spec.split(',').collect();
        let [read_fd, write_fd, beacon_fd, share, parent, stdout_fd, segments_fd, token] =
            fields[..]
        else {
            return Err(malformed());
        };
        let number = |f: &str| f.trim().parse::<i32>().map_err(|_| malformed());
        if token.len() != 32 || !token.is_ascii() {
            return Err(malformed());
        }
        let mut bytes = [0u8; 16];
        for (k, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&token[2 * k..2 * k + 2], 16).map_err(|_| malformed())?;
        }
        Ok(WorkerSpec {
            read_fd: number(read_fd)?,
            write_fd: number(write_fd)?,
            beacon_fd: number(beacon_fd)?,
            share: number(share)?.max(1) as usize,
            parent: parent.trim().parse().map_err(|_| malformed())?,
            token: bytes,
            stdout_fd: number(stdout_fd)?,
            segments_fd: number(segments_fd)?,
        })
    }
}

/// How a worker process is started: which entry it goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryPoint {
    /// `#[parjob::main]` or `parjob::init()`: run the binary as is.
    Main,
    /// `#[parjob::test]`: re-run the test binary on this one test.
    Test { name: String },
}

static ENTRY: Mutex<Option<EntryPoint>> = Mutex::new(None);

/// The process backend's part of [`crate::init`]: records the entry, and
/// in a worker process serves and never returns.
pub(crate) fn init_entry() {
    set_entry(EntryPoint::Main);
    if let Some(spec) = worker_spec() {
        serve(&spec);
    }
}

/// The worker entry for tests, called by `#[parjob::test]` with the test
/// function's `module_path!()` and name. It holds for the test's thread
/// until the returned guard drops, at the end of the test: a plain
/// `#[test]` on another thread never borrows it, so whether it can use the
/// process backend does not depend on which tests ran before it.
#[doc(hidden)]
pub fn test_entry(module_path: &str, fn_name: &str) -> TestEntryGuard {
    // libtest names a test by its path inside the crate.
    let name = match module_path.split_once("::") {
        Some((_crate, rest)) => format!("{rest}::{fn_name}"),
        None => fn_name.to_string(),
    };
    if let Some(spec) = worker_spec() {
        serve(&spec);
    }
    TEST_ENTRY.with(|e| *e.borrow_mut() = Some(EntryPoint::Test { name }));
    TestEntryGuard {
        _not_send: std::marker::PhantomData,
    }
}

/// Keeps a test's worker entry for its thread; see [`test_entry`].
#[doc(hidden)]
#[derive(Debug)]
pub struct TestEntryGuard {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for TestEntryGuard {
    fn drop(&mut self) {
        TEST_ENTRY.with(|e| *e.borrow_mut() = None);
    }
}

thread_local! {
    static TEST_ENTRY: std::cell::RefCell<Option<EntryPoint>> =
        const { std::cell::RefCell::new(None) };
}

fn set_entry(entry: EntryPoint) {
    let mut slot = ENTRY.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        *slot = Some(entry);
    }
}

/// How to re-execute this program as a worker, from this thread: the
/// test's entry on a `#[parjob::test]`'s thread, else the program's
/// (`#[parjob::main]`, `parjob::init()`), else none.
pub(crate) fn entry() -> Option<EntryPoint> {
    TEST_ENTRY
        .with(|e| e.borrow().clone())
        .or_else(|| ENTRY.lock().unwrap_or_else(|p| p.into_inner()).clone())
}

/// Makes `entry` this thread's worker entry, for as long as the thread
/// lives: a pool's manager thread takes the entry of the thread that
/// built the pool (a test's entry is per thread).
pub(crate) fn adopt_entry(entry: EntryPoint) {
    TEST_ENTRY.with(|e| *e.borrow_mut() = Some(entry));
}

/// Whether this process is a parjob worker.
pub fn is_worker() -> bool {
    nesting::this_process().is_some()
}

fn worker_spec() -> Option<String> {
    std::env::var(ENV_WORKER).ok()
}

fn serve(spec: &str) -> ! {
    let code = match serve_until_eof(spec) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("parjob worker {}: {e}", std::process::id());
            3
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

fn serve_until_eof(spec: &str) -> Result<(), String> {
    let spec: WorkerSpec = spec.parse()?;
    keep_freed_heap();
    nesting::set_for_this_process(spec.share, NestedIn::ProcessWorker);
    // Nested spawns and the user's own child processes must not inherit
    // the variable, nor the pipe ends (they would keep the pipes open).
    std::env::remove_var(ENV_WORKER);
    check_parent(&spec)?;
    restore_stdout(spec.stdout_fd)?;
    // SAFETY: the parent passed these descriptors to us alone (checked
    // above: they are pipes, from our parent) and nothing else here owns them.
    let (input, output) = unsafe {
        (
            File::from_raw_fd(spec.read_fd),
            File::from_raw_fd(spec.write_fd),
        )
    };
    let mut input = BufReader::new(input);
    // The pipe lives as long as the worker, which never returns from
    // `serve`; the forwarding subscriber writes to it too.
    let output: &'static log::Output = Box::leak(Box::new(log::Output::new(output)));
    let io = |e: std::io::Error| format!("pipe to the parent: {e}");
    let mut token = [0u8; 16];
    input.read_exact(&mut token).map_err(io)?;
    if token != spec.token {
        return Err("the pipe did not start with this worker's token: \
                    not started by a parjob parent"
            .into());
    }
    adopt_segment_socket(spec.segments_fd)?;
    // SAFETY: the parent opened this fd for us and named it in
    // PARJOB_WORKER (checked to be our parent's, with its token, above);
    // nothing in the worker closes it.
    let beacon_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(spec.beacon_fd) };
    let beacon = Beacon::map(beacon_fd).map_err(|e| format!("mapping the beacon: {e}"))?;
    // SAFETY: the mapping holds its own reference to the memfd.
    unsafe { libc::close(spec.beacon_fd) };

    let mut hello_frame = output.frame();
    wire::write_hello(&mut hello_frame, &hello()).map_err(io)?;
    hello_frame.flush().map_err(io)?;
    drop(hello_frame);
    log::install(output, None);
    serve_frames(&mut input, output, &beacon)
}

/// The serve loop: runs each batch read from `input` and answers on
/// `output`, until `input` ends. A worker process reads its pipe from the
/// parent; an MPI worker rank reads a pipe its MPI thread fills.
pub(crate) fn serve_frames(
    input: &mut impl Read,
    output: &log::Output,
    beacon: &Beacon,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("pipe to the parent: {e}");
    let tasks = registry();
    while let Some(frame) = wire::read_frame(input).map_err(io)? {
        match wire::decode_message(&frame).map_err(io)? {
            ToWorker::Run {
                id,
                task,
                seq,
                args,
                max_nbytes,
                chunked,
                packed,
                timed,
            } => {
                drop(frame);
                if !beacon.claim(id) {
                    // The parent took it back for an idle worker: it
                    // expects no answer.
                    continue;
                }
                crate::shm::set_result_threshold(max_nbytes);
                let batch = Batch {
                    id,
                    seq,
                    args,
                    chunked,
                    per_call: packed && timed,
                    timed,
                };
                run_batch(tasks.get(task.as_str()).copied(), batch, beacon, output)?;
            }
            ToWorker::Forget { segments } => crate::shm::worker_forget(&segments),
            ToWorker::Init { task, args } => {
                answered(initialize(tasks, &task, &args.0, output))?;
            }
        }
    }
    Ok(())
}

/// Batches with ids up to this one skip their remaining jobs: an MPI
/// driver cancelled them (a rank cannot be killed alone).
static CANCELLED_UP_TO: AtomicU64 = AtomicU64::new(0);

cfg_mpi! {
    /// Makes batches up to `id` skip the jobs they have not started.
    pub(crate) fn cancel_up_to(id: u64) {
        CANCELLED_UP_TO.fetch_max(id, Ordering::Relaxed);
    }
}

cfg_mpi! {
    /// Marks this process as an MPI worker rank that may use `cpus` CPUs:
    /// nested runs go to threads, never to processes.
    pub(crate) fn become_mpi_rank(cpus: usize) {
        nesting::set_for_this_process(cpus, NestedIn::MpiRank);
    }
}

/// One batch as the serve loop takes it.
struct Batch {
    id: u64,
    seq: u64,
    args: Vec<wire::Bytes>,
    chunked: bool,
    /// Answer with each job's end time before `Done` (`trace`).
    timed: bool,
    /// Those times are each call's of a packed chunk, not each argument's.
    per_call: bool,
}

/// Runs a batch of `entry`'s task (or answers that it is unknown), one
/// answer frame per job, then `Done`.
fn run_batch(
    entry: Option<&'static crate::task::TaskEntry>,
    batch: Batch,
    beacon: &Beacon,
    output: &log::Output,
) -> Result<(), String> {
    let Batch {
        id,
        seq,
        args,
        chunked,
        timed,
        per_call,
    } = batch;
    let started = crate::backend::beacon::now_ns();
    let mut ends = Vec::with_capacity(if timed { args.len() } else { 0 });
    let mut count = 0;
    // One clock read between two jobs: the end of one, the next's start.
    let mut now = started;
    for (k, arg) in args.into_iter().enumerate() {
        if id <= CANCELLED_UP_TO.load(Ordering::Relaxed) {
            break;
        }
        count += 1;
        beacon.start_at(seq + k as u64, now);
        // The frame's writer takes the pipe's lock only when the task has
        // returned and its answer is written.
        let written = match entry {
            Some(entry) if chunked && per_call => {
                // A call's start is the end of the one before it.
                let ends = std::cell::RefCell::new(&mut ends);
                let on_call = |call| {
                    beacon.at_call(call);
                    if call > 0 {
                        ends.borrow_mut().push(crate::backend::beacon::now_ns());
                    }
                };
                entry.invoke_chunk(id, &arg.0, &mut output.frame(), &on_call)
            }
            Some(entry) if chunked => {
                let on_call = |call| beacon.at_call(call);
                entry.invoke_chunk(id, &arg.0, &mut output.frame(), &on_call)
            }
            Some(entry) => entry.invoke(id, &arg.0, &mut output.frame()),
            None => wire::write_failure(&mut output.frame(), id, &JobFailure::UnknownTask),
        };
        answered(written)?;
        now = crate::backend::beacon::now_ns();
        if timed {
            ends.push(now);
        }
    }
    beacon.idle();
    let elapsed_ns = now.saturating_sub(started);
    let mut done = output.frame();
    if timed {
        answered(wire::write_times(&mut done, id, seq, started, &ends))?;
    }
    answered(wire::tally::write_pending(&mut done))?;
    answered(wire::write_done(&mut done, id, count as u64, elapsed_ns))?;
    answered(done.flush())
}

/// Lets this worker process keep freed memory for its next batch. A
/// batch of tiny calls allocates and frees a few buffers of hundreds of
/// kilobytes; glibc served each from a fresh mapping, or from heap it had
/// just returned to the kernel, so every batch faulted them in again, a
/// quarter of a worker's time (docs/decisions.md). Buffers up to
/// [`HEAP_BUFFERS`] now come from the heap, which keeps up to as much
/// freed. Only worker processes do this, never the user's own process.
fn keep_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets tunables of glibc's allocator; this runs
    // before the worker allocates in earnest, on its one thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, HEAP_BUFFERS);
        libc::mallopt(libc::M_TOP_PAD, HEAP_BUFFERS);
    }
}

/// The largest buffer a worker takes from its heap, and the freed heap it
/// keeps (`keep_freed_heap`).
const HEAP_BUFFERS: i32 = 8 << 20;

/// Runs a pool's initializer, answering `Done` of batch 0, or its failure.
/// Its result is dropped, and never goes through shared memory (a result
/// segment would wait on the socket for a frame that is not sent).
fn initialize(
    tasks: &std::collections::HashMap<&'static str, &'static crate::task::TaskEntry>,
    task: &str,
    args: &[u8],
    output: &log::Output,
) -> std::io::Result<()> {
    crate::shm::set_result_threshold(None);
    let mut answer = Vec::new();
    match tasks.get(task) {
        Some(entry) => entry.invoke(0, args, &mut answer)?,
        None => wire::write_failure(&mut answer, 0, &JobFailure::UnknownTask)?,
    }
    let failed = matches!(
        answer.get(8..).map(wire::parse_from_worker),
        Some(Ok(wire::FromWorker::JobFailure { .. }))
    );
    let mut out = output.frame();
    if failed {
        out.write_all(&answer)?;
    } else {
        wire::write_done(&mut out, 0, 1, 0)?;
    }
    out.flush()
}

/// Checks that the descriptors in the spec are pipes and that the process
/// that named them is our parent, before anything is read from them.
fn check_parent(spec: &WorkerSpec) -> Result<(), String> {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() } as u32;
    if parent != spec.parent {
        return Err(format!(
            "{ENV_WORKER} names parent {}, but this process's parent is {parent}: \
             not started by a parjob parent",
            spec.parent
        ));
    }
    for fd in [spec.read_fd, spec.write_fd] {
        // SAFETY: a zeroed stat is a valid out-parameter for fstat.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes into `stat` and touches nothing else.
        let ok = unsafe { libc::fstat(fd, &mut stat) } == 0;
        if !ok || stat.st_mode & libc::S_IFMT != libc::S_IFIFO {
            return Err(format!("descriptor {fd} from {ENV_WORKER} is not a pipe"));
        }
    }
    for fd in [spec.read_fd, spec.write_fd, spec.beacon_fd] {
        // SAFETY: plain fcntl on descriptors this process owns.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(format!("descriptor {fd} from the parent is not open"));
        }
    }
    Ok(())
}

/// Takes the socket the parent passes shared-memory segments on, which
/// must be a socket (the token already proved the parent is ours).
fn adopt_segment_socket(fd: i32) -> Result<(), String> {
    // SAFETY: a zeroed stat is a valid out-parameter for fstat.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into `stat` and touches nothing else.
    let ok = unsafe { libc::fstat(fd, &mut stat) } == 0;
    if !ok || stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(format!("descriptor {fd} from {ENV_WORKER} is not a socket"));
    }
    // SAFETY: the parent passed this descriptor to us alone and named it
    // in PARJOB_WORKER; from here the shared-memory table owns it.
    let socket = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain fcntl on a descriptor this process owns.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    crate::shm::worker_socket(socket);
    Ok(())
}

/// Puts the parent's stdout back on fd 1 (a test worker's was /dev/null
/// while libtest printed its header).
fn restore_stdout(saved: i32) -> Result<(), String> {
    if saved < 0 {
        return Ok(());
    }
    let _ = std::io::stdout().flush();
    // SAFETY: `saved` is the parent's stdout, passed to us alone; after
    // dup2 fd 1 is a copy of it and `saved` is closed, owned by nobody.
    unsafe {
        if libc::dup2(saved, 1) < 0 {
            return Err(format!(
                "restoring stdout from descriptor {saved}: {}",
                std::io::Error::last_os_error()
            ));
        }
        libc::close(saved);
    }
    Ok(())
}

/// A failed write to the parent ends the worker: a broken pipe means the
/// parent is gone or gave up on us; anything else left a torn frame.
fn answered(written: std::io::Result<()>) -> Result<(), String> {
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            let _ = std::io::stdout().flush();
            std::process::exit(0)
        }
        Err(e) => Err(format!("writing to the parent: {e}")),
    }
}

/// This worker's hello. `PARJOB_TEST_FINGERPRINT_SALT=<n>` changes its
/// fingerprint, to test what a parent does with a worker from another
/// build (a fault injection for tests; nothing sets it otherwise).
pub(crate) fn hello() -> Hello {
    let salt = std::env::var("PARJOB_TEST_FINGERPRINT_SALT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let mut hello = Hello::current();
    hello.fingerprint ^= salt;
    hello
}
