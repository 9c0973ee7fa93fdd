//! What a dying rank and the driver print before the MPI job ends.
//!
//! A rank that dies ends the whole MPI job: `mpirun` (or `srun`) kills the
//! other ranks. That is MPI's model, and parjob cannot recover a run from
//! it. So that the user learns what happened and what to do:
//! - a worker rank that takes a fatal signal (`abort()`, a segfault)
//!   writes its rank, host, pid, the signal and the item it was running
//!   to stderr, then dies of that signal;
//! - rank 0, told to terminate by the launcher while ranks are busy,
//!   writes which ranks were running work and how to resume.
//!
//! The handlers only format into stack buffers and `write(2)`; the text
//! that names the rank and host is built when they are installed.

use crate::backend::beacon::Beacon;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::OnceLock;

static PREFIX: OnceLock<String> = OnceLock::new();
static BEACON: AtomicPtr<Beacon> = AtomicPtr::new(std::ptr::null_mut());
/// Bit k: the driver's peer k has batches in flight (the first 64 peers).
static BUSY: AtomicU64 = AtomicU64::new(0);

const RESUME: &str = "A dead rank ends the whole MPI job: that is MPI's model. To resume a long \
                      run, put #[memoize(dir = ...)] on the task with the cache on a shared \
                      filesystem: a rerun skips every item already computed.\n";

const FATAL: [(i32, &str); 5] = [
    (libc::SIGABRT, "SIGABRT"),
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGFPE, "SIGFPE"),
    (libc::SIGILL, "SIGILL"),
];

/// On a worker rank: prints the rank's last words on a fatal signal.
pub(crate) fn rank_installed(rank: usize) {
    let _ = PREFIX.set(format!(
        "parjob: MPI rank {rank} on {} (pid {}) ",
        super::host_name(),
        std::process::id()
    ));
    for (signal, _) in FATAL {
        install(signal, on_fatal as extern "C" fn(i32) as usize);
    }
}

/// On a worker rank: the beacon its serve loop reports jobs to.
pub(crate) fn watch_beacon(beacon: &'static Beacon) {
    BEACON.store(beacon as *const Beacon as *mut Beacon, Ordering::Release);
}

/// On rank 0: prints which ranks were busy when the launcher ends the job.
pub(crate) fn driver_installed() {
    let _ = PREFIX.set(format!(
        "parjob: MPI rank 0 (the driver) on {} ",
        super::host_name()
    ));
    install(libc::SIGTERM, on_terminate as extern "C" fn(i32) as usize);
}

/// Records whether the driver's peer `peer` has work in flight.
pub(crate) fn set_busy(peer: usize, busy: bool) {
    if peer < 64 {
        let bit = 1u64 << peer;
        if busy {
            BUSY.fetch_or(bit, Ordering::Relaxed);
        } else {
            BUSY.fetch_and(!bit, Ordering::Relaxed);
        }
    }
}

fn install(signal: i32, handler: usize) {
    // SAFETY: a zeroed sigaction with a plain handler; SA_RESETHAND puts
    // the default back, so re-raising ends the process as the signal would.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut());
    }
}

/// A fixed buffer that signal handlers format into.
struct Text {
    buf: [u8; 1024],
    len: usize,
}

impl Text {
    fn new() -> Text {
        Text {
            buf: [0; 1024],
            len: 0,
        }
    }

    fn push(&mut self, s: &str) -> &mut Self {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        self
    }

    fn number(&mut self, mut n: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut k = digits.len();
        loop {
            k -= 1;
            digits[k] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let text = std::str::from_utf8(&digits[k..]).unwrap_or("?");
        self.push(text)
    }

    fn write(&self) {
        // SAFETY: write(2) is async-signal-safe; the buffer is ours.
        unsafe { libc::write(2, self.buf.as_ptr().cast(), self.len) };
    }
}

extern "C" fn on_fatal(signal: i32) {
    let mut text = Text::new();
    text.push(PREFIX.get().map_or("parjob: an MPI rank ", |p| p.as_str()));
    let name = FATAL
        .iter()
        .find(|(s, _)| *s == signal)
        .map_or("a fatal signal", |(_, n)| n);
    text.push("died of ").push(name);
    let beacon = BEACON.load(Ordering::Acquire);
    // SAFETY: the beacon was leaked: it lives as long as the process.
    if let Some(seq) = unsafe { beacon.as_ref() }.and_then(Beacon::running_seq) {
        text.push(" while running item ").number(seq);
    }
    text.push(". ").push(RESUME);
    text.write();
    // SAFETY: SA_RESETHAND restored the default action.
    unsafe { libc::raise(signal) };
}

extern "C" fn on_terminate(signal: i32) {
    let busy = BUSY.load(Ordering::Relaxed);
    let mut text = Text::new();
    text.push(PREFIX.get().map_or("parjob: MPI rank 0 ", |p| p.as_str()));
    text.push("was told to terminate by the MPI launcher");
    if busy != 0 {
        // All that is known: the launcher said so while ranks were busy.
        // A worker rank may have died, or mpirun itself may have been
        // signalled or killed.
        text.push(" (a worker rank may have died, or mpirun was signalled); ranks running work:");
        for peer in 0..64 {
            if busy & (1 << peer) != 0 {
                text.push(" ").number(peer + 1);
            }
        }
    }
    text.push(". ").push(RESUME);
    text.write();
    // SAFETY: SA_RESETHAND restored the default action.
    unsafe { libc::raise(signal) };
}
