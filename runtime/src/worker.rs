//! The entry and the loop of a worker process.
//!
//! A worker is this same program, re-executed with `PARJOB_WORKER` in its
//! environment. It must not run the user's `main`, so the entry point is
//! at the top of `main` (`#[parjob::main]` or [`init`]) or of a test
//! (`#[parjob::test]`): there it sees the variable, serves tasks until the
//! parent closes the pipe, and exits without returning. In the parent the
//! same call only records that an entry exists, which is what allows the
//! process backend to spawn at all (DESIGN.md decision 1).

use crate::beacon::Beacon;
use crate::ipc::{self, Failure, Hello, ToWorker};
use crate::task::registry;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::os::fd::FromRawFd;
use std::sync::{Mutex, OnceLock};

/// Set in a worker's environment: `<read fd>,<write fd>,<beacon fd>,<cpu share>`.
pub const ENV_WORKER: &str = "PARJOB_WORKER";

/// How a worker process is started: which entry it goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// `#[parjob::main]` or `parjob::init()`: run the binary as is.
    Main,
    /// `#[parjob::test]`: re-run the test binary on this one test.
    Test { name: String },
}

static ENTRY: Mutex<Option<Entry>> = Mutex::new(None);
static WORKER_SHARE: OnceLock<usize> = OnceLock::new();

/// The worker entry for binaries. Call it first in `main`; `#[parjob::main]`
/// does this for you.
///
/// In a process started by the process backend it serves tasks and exits,
/// never returning. Anywhere else it returns at once, after recording that
/// this program can be re-executed as a worker.
///
/// ```
/// parjob_runtime::init();
/// // ... the rest of `main`, which may now use the process backend
/// ```
pub fn init() {
    set_entry(Entry::Main);
    if let Some(spec) = worker_spec() {
        serve(&spec);
    }
}

/// The worker entry for tests, called by `#[parjob::test]` with the test
/// function's `module_path!()` and name.
#[doc(hidden)]
pub fn test_entry(module_path: &str, fn_name: &str) {
    // libtest names a test by its path inside the crate.
    let name = match module_path.split_once("::") {
        Some((_crate, rest)) => format!("{rest}::{fn_name}"),
        None => fn_name.to_string(),
    };
    set_entry(Entry::Test { name });
    if let Some(spec) = worker_spec() {
        serve(&spec);
    }
}

fn set_entry(entry: Entry) {
    let mut slot = ENTRY.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        *slot = Some(entry);
    }
}

pub(crate) fn entry() -> Option<Entry> {
    ENTRY.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// In a worker process: its share of the CPUs. `None` in a parent.
pub(crate) fn share_in_worker() -> Option<usize> {
    WORKER_SHARE.get().copied()
}

/// Whether this process is a parjob worker.
pub fn is_worker() -> bool {
    share_in_worker().is_some()
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
    let fields: Vec<i32> = spec
        .split(',')
        .map(|f| f.trim().parse::<i32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("malformed {ENV_WORKER}={spec:?}"))?;
    let [read_fd, write_fd, beacon_fd, share] = fields[..] else {
        return Err(format!("malformed {ENV_WORKER}={spec:?}"));
    };
    let _ = WORKER_SHARE.set(share.max(1) as usize);
    // Nested spawns and the user's own child processes must not inherit
    // the variable, nor the pipe ends (they would keep the pipes open).
    std::env::remove_var(ENV_WORKER);
    for fd in [read_fd, write_fd, beacon_fd] {
        // SAFETY: plain fcntl on descriptors this process owns.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(format!("descriptor {fd} from the parent is not open"));
        }
    }
    // SAFETY: the parent passed these descriptors to us alone and nothing
    // else in this process owns them.
    let (input, output) = unsafe { (File::from_raw_fd(read_fd), File::from_raw_fd(write_fd)) };
    let beacon = Beacon::map(beacon_fd).map_err(|e| format!("mapping the beacon: {e}"))?;
    // SAFETY: the mapping holds its own reference to the memfd.
    unsafe { libc::close(beacon_fd) };
    let mut input = BufReader::new(input);
    let mut output = BufWriter::new(output);
    let io = |e: std::io::Error| format!("pipe to the parent: {e}");

    ipc::write_hello(&mut output, &Hello::current()).map_err(io)?;
    output.flush().map_err(io)?;
    let tasks = registry();
    while let Some(frame) = ipc::read_frame(&mut input).map_err(io)? {
        let ToWorker::Run {
            id,
            task,
            seq,
            args,
        } = ipc::decode_message(&frame).map_err(io)?;
        drop(frame);
        let started = crate::beacon::now_ns();
        let entry = tasks.get(task.as_str());
        let count = args.len() as u64;
        for (k, arg) in args.into_iter().enumerate() {
            beacon.start(seq + k as u64);
            let written = match entry {
                Some(entry) => entry.invoke(&arg.0, &mut output),
                None => ipc::write_failure(&mut output, &Failure::UnknownTask),
            };
            answered(written)?;
        }
        beacon.idle();
        let elapsed_ns = crate::beacon::now_ns().saturating_sub(started);
        answered(ipc::write_done(&mut output, id, count, elapsed_ns))?;
        answered(output.flush())?;
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
