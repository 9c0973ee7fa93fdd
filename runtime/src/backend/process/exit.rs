//! How the parent learns that a worker ended, and says how, in words.
//!
//! End of file on a worker's pipe is not enough: a task that forks without
//! `exec` leaves a descendant holding the pipe, and the pipe stays open
//! after the worker itself is gone. So each worker gets an [`ExitWatch`]: a
//! `pidfd`, which becomes readable the moment the worker exits, whatever
//! its descendants hold. The reader and writer threads poll it beside the
//! pipe, so they return as soon as the worker is gone. On kernels without
//! `pidfd_open` (before Linux 5.3) the watch polls `waitid(WNOWAIT)`
//! between short waits instead.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How often the fallback without a pidfd checks whether the worker exited.
const FALLBACK_POLL: Duration = Duration::from_millis(50);

/// Watches one worker process for its exit, without reaping it.
pub(super) struct ExitWatch {
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
}

/// What [`ExitWatch::wait_for`] saw first.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ready {
    /// The descriptor is ready for the events asked for.
    Fd,
    /// The worker has exited and the descriptor is not ready.
    Exited,
}

impl ExitWatch {
    /// A watch on `pid`, which must be an unreaped child of this process.
    pub(super) fn new(pid: u32) -> ExitWatch {
        let pid = pid as libc::pid_t;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = (fd >= 0).then(|| {
            // SAFETY: the kernel just returned this descriptor to us alone.
            unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
        });
        ExitWatch { pid, pidfd }
    }

    /// Whether the worker has exited (it may not be reaped yet).
    pub(super) fn has_exited(&self) -> bool {
        match &self.pidfd {
            Some(pidfd) => poll(&mut [pollfd(pidfd.as_raw_fd(), libc::POLLIN)], 0)
                .map(|n| n > 0)
                .unwrap_or(false),
            None => exited_by_waitid(self.pid),
        }
    }

    /// Blocks until `fd` is ready for `events` or the worker has exited;
    /// readiness of `fd` wins when both hold, so data a worker wrote just
    /// before it exited is still read.
    pub(super) fn wait_for(&self, fd: RawFd, events: libc::c_short) -> io::Result<Ready> {
        loop {
            let mut fds = [pollfd(fd, events), pollfd(-1, libc::POLLIN)];
            let timeout = match &self.pidfd {
                Some(pidfd) => {
                    fds[1].fd = pidfd.as_raw_fd();
                    -1
                }
                None => FALLBACK_POLL.as_millis() as libc::c_int,
            };
            poll(&mut fds, timeout)?;
            if fds[0].revents != 0 {
                return Ok(Ready::Fd);
            }
            let exited = match &self.pidfd {
                Some(_) => fds[1].revents != 0,
                None => exited_by_waitid(self.pid),
            };
            if exited {
                return Ok(Ready::Exited);
            }
        }
    }

    /// The worker's pid.
    pub(super) fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Sends SIGKILL to the worker through its `pidfd`, so a pid the
    /// system gave to another process since is never hit; without a
    /// `pidfd`, to the pid of the unreaped child.
    pub(super) fn kill(&self) {
        match &self.pidfd {
            // SAFETY: pidfd_send_signal takes our pidfd, a signal, a null
            // siginfo and no flags.
            Some(pidfd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            },
            // SAFETY: kill(2) on our own child, not yet reaped.
            None => unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            },
        }
    }

    /// Waits at most `limit` for the worker to exit; true if it did.
    pub(super) fn wait_exit(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.has_exited() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match &self.pidfd {
                Some(pidfd) => {
                    let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
                    let _ = poll(&mut [pollfd(pidfd.as_raw_fd(), libc::POLLIN)], ms);
                }
                None => std::thread::sleep(left.min(FALLBACK_POLL)),
            }
        }
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// `poll(2)`, retried on `EINTR`.
fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<libc::c_int> {
    loop {
        // SAFETY: `fds` is a valid, exclusively borrowed array of pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n >= 0 {
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn exited_by_waitid(pid: libc::pid_t) -> bool {
    // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid with WNOWAIT only reads the child's state; it reaps nothing.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid is valid to read after a successful waitid.
    rc != 0 || unsafe { info.si_pid() } != 0
}

/// Reaps a worker whose pipe closed and says how it ended. One that has
/// not exited (it closed its pipe and lingers) is killed first, so this
/// never waits on a live process.
pub(super) fn reap(child: &mut Child, watch: &ExitWatch) -> String {
    reap_with_signal(child, watch).0
}

/// [`reap`], with the signal that ended the worker when one did and
/// parjob did not send it here.
pub(super) fn reap_with_signal(child: &mut Child, watch: &ExitWatch) -> (String, Option<i32>) {
    if !watch.wait_exit(Duration::from_millis(500)) {
        let _ = child.kill();
        return (
            format!("{} after it closed its pipe", describe(child.wait())),
            None,
        );
    }
    let status = child.wait();
    let signal = status.as_ref().ok().and_then(|s| s.signal());
    (describe(status), signal)
}

/// Says how a worker ended, in words.
pub(super) fn describe(status: io::Result<ExitStatus>) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_watch_sees_the_exit_while_a_descendant_holds_the_pipe() {
        // The shell forks a sleeper that inherits its stdout, then exits.
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30 & echo $!"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let watch = ExitWatch::new(child.id());
        let out = child.stdout.take().unwrap();
        let fd = out.as_raw_fd();
        let mut line = String::new();
        let mut reader = std::io::BufReader::new(out);
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        let sleeper: i32 = line.trim().parse().unwrap();
        // The pipe stays open (the sleeper holds it), yet the watch reports
        // the shell's exit.
        assert!(watch.wait_exit(Duration::from_secs(10)));
        assert_eq!(watch.wait_for(fd, libc::POLLIN).unwrap(), Ready::Exited);
        assert_eq!(reap(&mut child, &watch), "exited with code 0");
        // SAFETY: plain kill of the sleeper this test started.
        unsafe { libc::kill(sleeper, libc::SIGKILL) };
    }
}
