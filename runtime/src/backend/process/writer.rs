//! Writing batch frames to a worker without ever blocking the scheduler.
//!
//! The worker's input pipe is non-blocking. [`FrameWriter::send`] writes a
//! frame straight into it when nothing is queued and the pipe has room,
//! which is the usual case and costs no thread hop. What does not fit (a
//! worker busy in a stuck task does not read, and a second batch of large
//! arguments fills the 64 KiB pipe) is queued for the worker's writer
//! thread, which waits for room or for the worker's exit. Frames keep their
//! order: while anything is queued, new frames queue behind it.
//!
//! Shared-memory segments go the same way, on the worker's segment socket
//! (`SCM_RIGHTS`), in the same queue, so a segment is always passed before
//! the batch that needs it.

use super::exit::{ExitWatch, Ready};
use crate::shm::{self, Segment};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};

/// What goes to a worker: a frame on its pipe, or a segment on its socket.
enum Outgoing {
    Frame(Arc<Vec<u8>>),
    Segment(Arc<Segment>),
}

/// What is waiting for the writer thread, each frame with how much of it
/// is written.
#[derive(Default)]
struct Queue {
    frames: VecDeque<(Outgoing, usize)>,
    /// The session dropped its writer: finish the queue, then close.
    closed: bool,
    /// The pipe failed (the worker is gone): drop everything.
    broken: bool,
}

struct Shared {
    pipe: File,
    /// The worker's segment socket.
    socket: OwnedFd,
    queue: Mutex<Queue>,
    ready: Condvar,
    watch: Arc<ExitWatch>,
}

/// The session's end of a worker's input pipe.
pub(super) struct FrameWriter {
    shared: Arc<Shared>,
}

impl FrameWriter {
    /// Starts the writer thread for `pipe` (which must be non-blocking) and
    /// the segment `socket`, and sends `token` first.
    pub(super) fn start(
        pid: u32,
        pipe: File,
        socket: OwnedFd,
        token: [u8; 16],
        watch: Arc<ExitWatch>,
    ) -> io::Result<FrameWriter> {
        let shared = Arc::new(Shared {
            pipe,
            socket,
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            watch,
        });
        let theirs = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("parjob-writer-{pid}"))
            .spawn(move || write_queued(&theirs))?;
        let writer = FrameWriter { shared };
        writer.send(Arc::new(token.to_vec()));
        Ok(writer)
    }

    /// Writes `frame` now if it fits, else queues it; never blocks.
    pub(super) fn send(&self, frame: Arc<Vec<u8>>) {
        let mut q = self.shared.lock();
        if q.broken {
            // The worker is gone; its reader reports that.
            return;
        }
        let mut written = 0;
        if q.frames.is_empty() {
            loop {
                match (&self.shared.pipe).write(&frame[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        q.broken = true;
                        return;
                    }
                }
                if written == frame.len() {
                    return;
                }
            }
        }
        q.frames.push_back((Outgoing::Frame(frame), written));
        self.shared.ready.notify_one();
    }

    /// Passes `segment` to the worker now if its socket has room, else
    /// queues it; never blocks.
    pub(super) fn send_segment(&self, segment: &Arc<Segment>) {
        let mut q = self.shared.lock();
        if q.broken {
            return;
        }
        if q.frames.is_empty() {
            match self.shared.pass(segment) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    q.broken = true;
                    return;
                }
            }
        }
        q.frames
            .push_back((Outgoing::Segment(Arc::clone(segment)), 0));
        self.shared.ready.notify_one();
    }
}

impl Drop for FrameWriter {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One non-blocking attempt to pass a segment.
    fn pass(&self, segment: &Segment) -> io::Result<()> {
        shm::send_segment(self.socket.as_fd(), segment.announce(), segment.fd())
    }

    /// Waits until `fd` is ready for `events`, or the worker exits: false
    /// when it exited (or polling failed), and the queue is then broken.
    fn wait_room(&self, fd: i32) -> bool {
        let room = self.watch.wait_for(fd, libc::POLLOUT);
        if matches!(room, Ok(Ready::Fd)) {
            return true;
        }
        self.lock().broken = true;
        false
    }
}

/// The writer thread: writes the queue's front frame, waiting for room or
/// for the worker's exit, until the session is gone and the queue empty.
/// Only this thread writes while the queue is not empty, so it writes
/// without holding the lock.
fn write_queued(shared: &Shared) {
    loop {
        let (next, written) = {
            let mut q = shared.lock();
            loop {
                if q.broken || (q.closed && q.frames.is_empty()) {
                    return;
                }
                if let Some((next, written)) = q.frames.front() {
                    let next = match next {
                        Outgoing::Frame(f) => Outgoing::Frame(Arc::clone(f)),
                        Outgoing::Segment(s) => Outgoing::Segment(Arc::clone(s)),
                    };
                    break (next, *written);
                }
                q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let sent = match next {
            Outgoing::Frame(frame) => write_frame(shared, &frame, written),
            Outgoing::Segment(segment) => pass_segment(shared, &segment),
        };
        if !sent {
            shared.lock().broken = true;
            return;
        }
        shared.lock().frames.pop_front();
    }
}

/// Writes the rest of `frame`, waiting for room; false when the worker is gone.
fn write_frame(shared: &Shared, frame: &[u8], mut written: usize) -> bool {
    while written < frame.len() {
        match (&shared.pipe).write(&frame[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !shared.wait_room(shared.pipe.as_raw_fd()) {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

/// Passes `segment`, waiting for room; false when the worker is gone.
fn pass_segment(shared: &Shared, segment: &Segment) -> bool {
    loop {
        match shared.pass(segment) {
            Ok(()) => return true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !shared.wait_room(shared.socket.as_raw_fd()) {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}
