//! Starting a worker: pipes, the shared-memory socket, the environment,
//! `fork`+`exec` of this same binary, and the token that ties the worker
//! to this parent.
//!
//! The child's own descriptors are made inheritable in the forked child
//! only, so no other process ever holds them. The child is
//! `/proc/self/exe`, never a path that a rebuild could replace. It is
//! started from one long-lived spawner thread, because `PR_SET_PDEATHSIG`
//! fires when the *thread* that forked exits. Before `exec`, the child
//! checks that its parent is still alive.
//!
//! `PARJOB_WORKER` carries the descriptors, the CPU share, the parent's
//! pid and a random token. The parent's first bytes on the pipe are that
//! token, and the worker checks all three before it serves: the
//! variable set by hand cannot turn a binary into a task server on
//! descriptors that some other process controls.

use super::worker::{EntryPoint, WorkerSpec, ENV_WORKER};
use super::THREAD_ENV_VARS;
use crate::backend::beacon::Beacon;
use crate::error::{Error, Result};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock};

/// A started worker, before its handshake.
pub(super) struct Spawned {
    pub child: Child,
    /// The parent's (non-blocking) write end of the worker's input.
    pub to_child: File,
    /// The parent's read end of the worker's output.
    pub from_child: File,
    /// The parent's end of the worker's segment socket.
    pub segments: OwnedFd,
    /// The token to write first on `to_child`.
    pub token: [u8; 16],
}

struct SpawnRequest {
    command: Command,
    child_fds: Vec<OwnedFd>,
    reply: Sender<io::Result<Child>>,
}

/// Spawns from one thread that lives as long as the process, because the
/// kernel's parent-death signal follows the thread that forked.
fn spawner() -> io::Result<&'static Mutex<Sender<SpawnRequest>>> {
    static SPAWNER: OnceLock<Mutex<Sender<SpawnRequest>>> = OnceLock::new();
    if let Some(spawner) = SPAWNER.get() {
        return Ok(spawner);
    }
    let (tx, rx) = mpsc::channel::<SpawnRequest>();
    std::thread::Builder::new()
        .name("parjob-spawner".into())
        .spawn(move || {
            for mut req in rx {
                let result = req.command.spawn();
                drop(req.child_fds);
                let _ = req.reply.send(result);
            }
        })?;
    // If two threads raced here, the loser's spawner thread ends when its
    // sender is dropped.
    Ok(SPAWNER.get_or_init(|| Mutex::new(tx)))
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

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; F_GETFL/F_SETFL take no pointers.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sixteen bytes from the kernel's random source.
fn random_token() -> io::Result<[u8; 16]> {
    let mut token = [0u8; 16];
    let mut filled = 0;
    while filled < token.len() {
        // SAFETY: getrandom writes at most the given length into the buffer.
        let n = unsafe {
            libc::getrandom(token[filled..].as_mut_ptr().cast(), token.len() - filled, 0)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            filled += n as usize;
        }
    }
    Ok(token)
}

fn worker_program() -> std::path::PathBuf {
    let proc_exe = std::path::Path::new("/proc/self/exe");
    if proc_exe.exists() {
        proc_exe.to_path_buf()
    } else {
        std::env::current_exe().unwrap_or_else(|_| proc_exe.to_path_buf())
    }
}

/// The command that re-executes this binary as a worker: its entry's
/// arguments, its spec and thread counts in the environment, and, between
/// fork and exec, its descriptors kept open and its death tied to ours.
fn worker_command(
    entry: &EntryPoint,
    spec: &WorkerSpec,
    parent: libc::pid_t,
    quiet: Option<&QuietStart>,
) -> Command {
    let mut command = Command::new(worker_program());
    if let Some(arg0) = std::env::args_os().next() {
        command.arg0(arg0);
    }
    if let EntryPoint::Test { name } = entry {
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
        .env(ENV_WORKER, spec.to_string())
        .env_remove(crate::trace::ENV_TRACE)
        .env(super::log::ENV_LOG_LEVEL, super::log::level_for_workers())
        .stdin(Stdio::null());
    for var in THREAD_ENV_VARS {
        if std::env::var_os(var).is_none() {
            command.env(var, spec.share.to_string());
        }
    }
    let keep = [
        spec.read_fd,
        spec.write_fd,
        spec.beacon_fd,
        spec.stdout_fd,
        spec.segments_fd,
    ];
    let null = quiet.map_or(-1, |q| q.null.as_raw_fd());
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe calls (close_range, fcntl, dup2, prctl, getppid,
    // _exit).
    unsafe {
        command.pre_exec(move || {
            // Every descriptor past stderr closes at exec, whatever the
            // parent inherited without CLOEXEC, but for the ones passed on.
            close_on_exec_from(3);
            for fd in keep.into_iter().filter(|&fd| fd >= 0) {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // A test worker's stdout is /dev/null until the worker puts
            // the saved one back: libtest's header is not the user's.
            if null >= 0 && libc::dup2(null, 1) < 0 {
                return Err(io::Error::last_os_error());
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
    command
}

/// Marks every descriptor from `first` on close-on-exec: `close_range`
/// (Linux 5.11), else one `fcntl` per descriptor under the limit. Only
/// async-signal-safe calls: it runs between fork and exec.
fn close_on_exec_from(first: u32) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes this process's descriptor flags.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    } == 0;
    if done {
        return;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.min(1 << 20) as i32
    } else {
        1024
    };
    for fd in first as i32..max {
        // SAFETY: fcntl on a descriptor number; an unused one fails
        // harmlessly with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// A test worker's stdout while libtest starts: /dev/null, and the
/// parent's stdout kept aside to be put back (both close-on-exec here).
struct QuietStart {
    null: OwnedFd,
    saved: OwnedFd,
}

impl QuietStart {
    /// Only a test worker needs one: libtest prints before the test runs.
    fn for_entry(entry: &EntryPoint) -> Result<Option<QuietStart>> {
        if !matches!(entry, EntryPoint::Test { .. }) {
            return Ok(None);
        }
        // /dev/null is a character device: opening it never blocks.
        let null = File::options()
            .write(true)
            .open("/dev/null")
            .map_err(|e| Error::io("opening /dev/null for a test worker's stdout", e))?;
        // SAFETY: F_DUPFD_CLOEXEC on fd 1 returns a new descriptor we own.
        let saved = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
        if saved < 0 {
            return Err(Error::io(
                "keeping stdout aside for a test worker",
                io::Error::last_os_error(),
            ));
        }
        Ok(Some(QuietStart {
            null: OwnedFd::from(null),
            // SAFETY: `saved` was just returned by fcntl and is owned by nobody else.
            saved: unsafe { OwnedFd::from_raw_fd(saved) },
        }))
    }
}

/// Starts one worker with its share of the CPUs and its beacon.
pub(super) fn spawn(entry: &EntryPoint, share: usize, beacon: &Beacon) -> Result<Spawned> {
    let beacon_fd = beacon.fd().expect("a shared beacon has a memfd");
    let (child_reads, parent_writes) = pipe().map_err(|e| Error::io("making a worker pipe", e))?;
    let (parent_reads, child_writes) = pipe().map_err(|e| Error::io("making a worker pipe", e))?;
    set_nonblocking(&parent_writes)
        .map_err(|e| Error::io("making a worker pipe non-blocking", e))?;
    let (parent_segments, child_segments) = crate::shm::socket_pair()
        .map_err(|e| Error::io("making a worker's shared-memory socket", e))?;
    let token = random_token().map_err(|e| Error::io("drawing a worker token", e))?;
    // SAFETY: getpid is async-signal-safe and called before the fork.
    let parent = unsafe { libc::getpid() };
    let quiet = QuietStart::for_entry(entry)?;
    let spec = WorkerSpec {
        read_fd: child_reads.as_raw_fd(),
        write_fd: child_writes.as_raw_fd(),
        beacon_fd,
        share,
        parent: parent as u32,
        token,
        stdout_fd: quiet.as_ref().map_or(-1, |q| q.saved.as_raw_fd()),
        segments_fd: child_segments.as_raw_fd(),
    };
    let command = worker_command(entry, &spec, parent, quiet.as_ref());
    let mut child_fds = vec![child_reads, child_writes, child_segments];
    if let Some(quiet) = quiet {
        child_fds.extend([quiet.null, quiet.saved]);
    }
    let gone = || {
        Error::io(
            "spawning a worker",
            io::Error::other("spawner thread is gone"),
        )
    };
    let (reply, answer) = mpsc::channel();
    spawner()
        .map_err(|e| Error::io("starting the spawner thread", e))?
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(SpawnRequest {
            command,
            child_fds,
            reply,
        })
        .map_err(|_| gone())?;
    let child = answer
        .recv()
        .map_err(|_| gone())?
        .map_err(|e| Error::io(format!("spawning worker {}", worker_program().display()), e))?;
    Ok(Spawned {
        child,
        to_child: File::from(parent_writes),
        from_child: File::from(parent_reads),
        segments: parent_segments,
        token,
    })
}
