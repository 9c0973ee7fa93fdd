//! A worker rank: the process backend's serve loop, fed by MPI.
//!
//! The main thread runs the serve loop of a worker process
//! (`worker::serve_frames`) over two pipes. The MPI thread (the
//! [`Shuttle`]) writes each task frame from rank 0 into the first pipe,
//! and sends whatever answer frames appear on the second back to rank 0,
//! whole frames per message. Large arguments arrive before the tasks that
//! name them and are adopted as shared-memory segments under the driver's
//! ids. On `TAG_STOP` the rank skips what is left, says goodbye, finalises
//! MPI and exits: the rest of `main` never runs here.

use super::link::{self, Address, Backoff, Body, Link};
use super::segments::RankSegments;
use super::TAG_TASK;
use super::{RankHello, Share, IN_FLIGHT_CAP};
use super::{TAG_CANCEL, TAG_EVICT, TAG_HELLO, TAG_RESULT, TAG_SEGMENT, TAG_SHARE, TAG_STOP};
use crate::backend::beacon::Beacon;
use crate::backend::process::worker;
use crate::wire::{self, codec};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static RANK: AtomicUsize = AtomicUsize::new(usize::MAX);

/// This worker rank's rank, `None` elsewhere.
pub(crate) fn this_rank() -> Option<usize> {
    match RANK.load(Ordering::Relaxed) {
        usize::MAX => None,
        r => Some(r),
    }
}

/// The serve loop's ends of the pipes, before the role is known.
pub(crate) struct BridgeEnd {
    tasks: File,
    answers: File,
}

/// What the main thread of a worker rank serves with.
pub(crate) struct Bridge {
    tasks: File,
    answers: File,
    rank: usize,
    _mpi: std::thread::JoinHandle<()>,
}

impl BridgeEnd {
    pub(crate) fn into_bridge(self, mpi: std::thread::JoinHandle<()>, rank: usize) -> Bridge {
        Bridge {
            tasks: self.tasks,
            answers: self.answers,
            rank,
            _mpi: mpi,
        }
    }
}

/// The MPI thread's ends of the pipes (nonblocking).
pub(crate) struct Shuttle {
    tasks: File,
    answers: File,
}

/// Two pipes: tasks (MPI thread to serve loop) and answers (back).
pub(crate) fn pipes() -> io::Result<(BridgeEnd, Shuttle)> {
    let pipe = || -> io::Result<(File, File)> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two new descriptors into `fds`.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are new and owned by nobody else.
        Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
    };
    let (tasks_read, tasks_write) = pipe()?;
    let (answers_read, answers_write) = pipe()?;
    for f in [&tasks_write, &answers_read] {
        // SAFETY: fcntl on descriptors owned here.
        unsafe {
            let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
    Ok((
        BridgeEnd {
            tasks: tasks_read,
            answers: answers_write,
        },
        Shuttle {
            tasks: tasks_write,
            answers: answers_read,
        },
    ))
}

/// The main thread of a worker rank: serves until the MPI thread ends
/// the process.
pub(crate) fn serve(bridge: Bridge) -> ! {
    RANK.store(bridge.rank, Ordering::Relaxed);
    worker::become_mpi_rank(super::rank_cpus());
    crate::shm::worker_by_mpi();
    super::signals::rank_installed(bridge.rank);
    let output: &'static crate::backend::process::log::Output = Box::leak(Box::new(
        crate::backend::process::log::Output::new(bridge.answers),
    ));
    crate::backend::process::log::install(output, Some(tracing::level_filters::LevelFilter::INFO));
    let beacon: &'static Beacon = Box::leak(Box::new(Beacon::in_process()));
    super::signals::watch_beacon(beacon);
    let mut input = BufReader::new(bridge.tasks);
    if let Err(e) = worker::serve_frames(&mut input, output, beacon) {
        eprintln!("parjob: MPI rank {}: {e}", bridge.rank);
        let _ = io::stdout().flush();
        std::process::exit(3);
    }
    // The task pipe closed: the MPI thread is finishing and will exit.
    loop {
        std::thread::park();
    }
}

impl Shuttle {
    /// The MPI thread of a worker rank: hello, then carry frames both ways
    /// until rank 0 says stop. `comm` reaches the driver (its rank 0);
    /// `peers`, when it is another communicator (spawned ranks), reaches
    /// the other workers.
    pub(crate) fn run(mut self, comm: Comm, peers: Option<Comm>, rank: usize) {
        let driver = Address { comm, rank: 0 };
        let mut link = Link::new(IN_FLIGHT_CAP);
        let hello = RankHello {
            hello: worker::hello(),
            host: super::host_name(),
            node: super::node_id(),
            cpus: super::rank_cpus(),
            clock_ns: crate::trace::now_ns(),
        };
        match codec::encode(&hello) {
            Ok(bytes) => link.send(driver, TAG_HELLO, Body::Bytes(bytes)),
            Err(e) => eprintln!("parjob: MPI rank {rank}: encoding its hello: {}", e.0),
        }
        // Where messages come from: the driver, and the node's other ranks.
        let sources: Vec<(Comm, Option<i32>)> = match peers {
            Some(peers) => vec![(comm, Some(0)), (peers, None)],
            None => vec![(comm, None)],
        };
        let mut state = Ranked {
            rank,
            peers: peers.unwrap_or(comm),
            tasks: VecDeque::new(),
            segments: RankSegments::new(rank),
            stopping: false,
        };
        let mut written = 0;
        let mut answers = Vec::new();
        link::precise_timers();
        let mut backoff = Backoff::new(Duration::from_millis(1));
        loop {
            let mut moved = false;
            for &(c, source) in &sources {
                while let Some(probed) = link::probe(c, source) {
                    moved = true;
                    state.message(c, probed, &mut link);
                }
            }
            if state.stopping {
                return goodbye(&mut link, driver);
            }
            moved |= feed(&mut self.tasks, &mut state.tasks, &mut written);
            moved |= collect(&mut self.answers, &mut answers, |frames| {
                link.send(driver, TAG_RESULT, Body::Bytes(frames))
            });
            moved |= link.progress();
            if moved {
                backoff.reset();
            } else {
                wait_readable(&self.answers, backoff.next(None));
            }
        }
    }
}

type Comm = mpi::ffi::MPI_Comm;

/// A worker rank's MPI thread, between messages.
struct Ranked {
    rank: usize,
    /// The communicator of the workers, for passing segments on.
    peers: Comm,
    /// Task frames not yet written to the serve loop.
    tasks: VecDeque<Vec<u8>>,
    /// Large arguments, by content hash.
    segments: RankSegments,
    stopping: bool,
}

impl Ranked {
    fn message(&mut self, comm: Comm, probed: link::Probed, link: &mut Link) {
        let rank = self.rank;
        match probed.tag {
            TAG_TASK => match probed.receive(wire::MAX_FRAME as usize + 8) {
                Ok(frame) => self.tasks.push_back(frame),
                Err(e) => eprintln!("parjob: MPI rank {rank}: {e}"),
            },
            TAG_SEGMENT => self.segments.receive(comm, probed),
            TAG_SHARE => match probed
                .receive(4096)
                .and_then(|b| codec::decode::<Share>(&b).map_err(|e| e.0))
            {
                Ok(share) => self.segments.share(share, self.peers, link),
                Err(e) => eprintln!("parjob: MPI rank {rank}: a bad share request: {e}"),
            },
            TAG_EVICT => match probed
                .receive(1 << 20)
                .and_then(|b| codec::decode::<Vec<u128>>(&b).map_err(|e| e.0))
            {
                Ok(hashes) => self.segments.evict(&hashes),
                Err(e) => eprintln!("parjob: MPI rank {rank}: a bad eviction: {e}"),
            },
            TAG_CANCEL => {
                let mut id = [0u8; 8];
                if probed.len == 8 {
                    probed.receive_into(&mut id);
                    worker::cancel_up_to(u64::from_le_bytes(id));
                } else {
                    let _ = probed.receive(64);
                }
            }
            TAG_STOP => {
                let _ = probed.receive(64);
                self.stopping = true;
            }
            _ => {
                let _ = probed.receive(1 << 20);
            }
        }
    }
}

/// Skips what is left, says goodbye (after which this rank sends
/// nothing), and waits for its sends to complete.
fn goodbye(link: &mut Link, driver: Address) {
    worker::cancel_up_to(u64::MAX);
    link.send(driver, TAG_STOP, Body::Bytes(Vec::new()));
    while !link.is_idle() {
        if !link.progress() {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// Writes queued task frames into the serve loop's pipe, as far as it
/// takes them now.
fn feed(pipe: &mut File, tasks: &mut VecDeque<Vec<u8>>, written: &mut usize) -> bool {
    let mut moved = false;
    while let Some(frame) = tasks.front() {
        match pipe.write(&frame[*written..]) {
            Ok(n) => {
                moved = true;
                *written += n;
                if *written == frame.len() {
                    tasks.pop_front();
                    *written = 0;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    moved
}

/// Reads what the serve loop wrote and hands every whole frame on, in
/// one message.
fn collect(pipe: &mut File, buffer: &mut Vec<u8>, mut send: impl FnMut(Vec<u8>)) -> bool {
    let mut moved = false;
    let mut chunk = [0u8; 1 << 16];
    loop {
        match pipe.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                moved = true;
                buffer.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    loop {
        let whole = whole_frames(buffer);
        if whole == 0 {
            break;
        }
        let rest = buffer.split_off(whole);
        send(std::mem::replace(buffer, rest));
    }
    moved
}

/// The length of the whole frames at the start of `bytes` that fit in one
/// message: at most [`MESSAGE_FRAMES`] bytes, or one frame (a frame is at
/// most `MAX_FRAME` plus its length), so a count always fits MPI's `int`.
pub(super) fn whole_frames(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Some(len) = bytes.get(at..at + 8) {
        let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
        if bytes.len() - at - 8 < len || (at > 0 && at + 8 + len > MESSAGE_FRAMES) {
            break;
        }
        at += 8 + len;
    }
    at
}

/// How many batches a result message ends.
pub(super) fn count_done(mut bytes: &[u8]) -> usize {
    let mut done = 0;
    while let Some((len, rest)) = bytes.split_first_chunk::<8>() {
        let len = u64::from_le_bytes(*len) as usize;
        let Some(frame) = rest.get(..len) else {
            break;
        };
        done += usize::from(wire::done_batch(frame).is_some());
        bytes = &rest[len..];
    }
    done
}

/// How many bytes of answer frames one result message carries at most,
/// unless a single frame is larger.
pub(super) const MESSAGE_FRAMES: usize = 64 << 20;

fn wait_readable(pipe: &File, wait: Duration) {
    if wait.is_zero() {
        std::thread::yield_now();
        return;
    }
    let mut pollfd = libc::pollfd {
        fd: pipe.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // To the microsecond: `poll`'s milliseconds made every short wait 1 ms.
    let timeout = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: ppoll on one valid pollfd, with a valid timespec and no
    // signal mask, all for the duration of the call.
    unsafe { libc::ppoll(&mut pollfd, 1, &timeout, std::ptr::null()) };
}
