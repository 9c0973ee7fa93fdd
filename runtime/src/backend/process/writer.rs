//! Writing batch frames to a worker without ever blocking the scheduler.
//!
//! The worker's input pipe is non-blocking. [`FrameWriter::send`] writes a
//! frame straight into it when nothing is queued and the pipe has room,
//! which is the usual case and costs no thread hop. What does not fit (a
//! worker busy in a stuck task does not read, and a second batch of large
//! arguments fills the 64 KiB pipe) is queued for the worker's writer
//! thread, which waits for room or for the worker's exit. Frames keep their
//! order: while anything is queued, new frames queue behind it.

use super::exit::{ExitWatch, Ready};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex};

/// Frames waiting for the writer thread, each with how much of it is written.
#[derive(Default)]
struct Queue {
    frames: VecDeque<(Arc<Vec<u8>>, usize)>,
    /// The session dropped its writer: finish the queue, then close.
    closed: bool,
    /// The pipe failed (the worker is gone): drop everything.
    broken: bool,
}

struct Shared {
    pipe: File,
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
    /// sends `token` first.
    pub(super) fn start(
        pid: u32,
        pipe: File,
        token: [u8; 16],
        watch: Arc<ExitWatch>,
    ) -> io::Result<FrameWriter> {
        let shared = Arc::new(Shared {
            pipe,
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
        q.frames.push_back((frame, written));
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
}

/// The writer thread: writes the queue's front frame, waiting for room or
/// for the worker's exit, until the session is gone and the queue empty.
/// Only this thread writes while the queue is not empty, so it writes
/// without holding the lock.
fn write_queued(shared: &Shared) {
    loop {
        let (frame, mut written) = {
            let mut q = shared.lock();
            loop {
                if q.broken || (q.closed && q.frames.is_empty()) {
                    return;
                }
                if let Some((frame, written)) = q.frames.front() {
                    break (Arc::clone(frame), *written);
                }
                q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        while written < frame.len() {
            match (&shared.pipe).write(&frame[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let room = shared
                        .watch
                        .wait_for(shared.pipe.as_raw_fd(), libc::POLLOUT);
                    if !matches!(room, Ok(Ready::Fd)) {
                        shared.lock().broken = true;
                        return;
                    }
                }
                Err(_) => {
                    shared.lock().broken = true;
                    return;
                }
            }
        }
        shared.lock().frames.pop_front();
    }
}
