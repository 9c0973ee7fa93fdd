//! A worker's reader thread, in the parent. It never runs on the
//! scheduler's thread, so nothing the worker does can keep the scheduler
//! from checking timeouts.
//!
//! It decodes results straight from the pipe with the decoder of the batch
//! they belong to, and forwards every other frame. A decoder that panics
//! (a `Deserialize` impl that panics) is caught and reported as that job's
//! panic. When the pipe ends, the worker exits (even while a descendant
//! holds the pipe open), or the thread itself fails, the reader reports
//! [`Event::Closed`]: its end is never silent.

use super::exit::{ExitWatch, Ready};
use crate::panic::Caught;
use crate::wire::codec::CodecError;
use crate::wire::{self, Incoming};
use std::any::Any;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

/// Why a result could not be decoded in the parent.
pub(super) enum DecodeError {
    /// The bytes do not decode as the result type.
    Codec(CodecError),
    /// The result type's `Deserialize` panicked.
    Panic(Caught),
}

impl From<CodecError> for DecodeError {
    fn from(e: CodecError) -> Self {
        DecodeError::Codec(e)
    }
}

/// A result decoded by a reader thread, its type erased for the channel.
pub(super) type Decoded = Result<Box<dyn Any + Send>, DecodeError>;

/// Decodes one result of a batch straight from a worker's pipe.
pub(super) type ErasedDecoder =
    Box<dyn Fn(&mut dyn Read) -> Result<Box<dyn Any + Send>, CodecError> + Send>;

/// What a reader thread reports.
pub(super) enum Event {
    /// A result, decoded in the reader thread (no copy of the frame).
    Value { worker: u64, value: Decoded },
    /// Any other frame.
    Frame { worker: u64, payload: Vec<u8> },
    /// The worker's pipe closed, the worker exited, or the reader failed.
    Closed {
        worker: u64,
        error: Option<io::Error>,
    },
}

impl Event {
    /// The worker the event is about.
    pub(super) fn worker(&self) -> u64 {
        match self {
            Event::Value { worker, .. }
            | Event::Frame { worker, .. }
            | Event::Closed { worker, .. } => *worker,
        }
    }
}

/// A worker's output pipe that ends when the worker does.
struct ExitAwareReader {
    pipe: File,
    watch: Arc<ExitWatch>,
}

impl Read for ExitAwareReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.watch.wait_for(self.pipe.as_raw_fd(), libc::POLLIN)? {
            Ready::Fd => self.pipe.read(buf),
            // Gone, and nothing left in the pipe: whatever descendant still
            // holds its write end, this worker will write no more.
            Ready::Exited => Ok(0),
        }
    }
}

/// Starts a worker's reader thread.
pub(super) fn start_reader(
    worker: u64,
    pid: u32,
    pipe: File,
    watch: Arc<ExitWatch>,
    decoders: Receiver<ErasedDecoder>,
    events: Sender<Event>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name(format!("parjob-reader-{pid}"))
        .spawn(move || {
            let mut report = ClosedReport {
                worker,
                events: events.clone(),
                watch: watch.clone(),
                error: None,
            };
            let reader = ExitAwareReader { pipe, watch };
            report.error = read_frames(worker, reader, decoders, events);
        })?;
    Ok(())
}

/// Sends [`Event::Closed`] when the reader thread ends, however it ends:
/// a reader that died by a panic must not leave its batches waiting.
struct ClosedReport {
    worker: u64,
    events: Sender<Event>,
    watch: Arc<ExitWatch>,
    error: Option<io::Error>,
}

impl Drop for ClosedReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.error = Some(io::Error::other("parjob's reader thread panicked"));
        }
        // A worker that closed its pipe is usually exiting: give it a moment,
        // so the status the session reads is its own.
        self.watch.wait_exit(Duration::from_secs(2));
        let _ = self.events.send(Event::Closed {
            worker: self.worker,
            error: self.error.take(),
        });
    }
}

/// The reader's loop: decodes results with the decoder of the batch they
/// belong to, and forwards everything else. Returns the error that ended
/// the stream, if it did not end cleanly.
///
/// The session sends a batch's decoder before it queues the batch, so the
/// decoder is there before any answer can come. It is taken at the batch's
/// first result and dropped at its `Done`; a batch that produced only
/// failures drops its unused decoder at `Done`, so the queue stays in step.
fn read_frames(
    worker: u64,
    pipe: ExitAwareReader,
    decoders: Receiver<ErasedDecoder>,
    events: Sender<Event>,
) -> Option<io::Error> {
    let mut reader = BufReader::with_capacity(1 << 16, pipe);
    let mut current: Option<ErasedDecoder> = None;
    loop {
        let incoming = wire::read_incoming(&mut reader, |body| {
            if current.is_none() {
                current = decoders.try_recv().ok();
            }
            let Some(decode) = &current else {
                return Err(DecodeError::Codec(CodecError(
                    "a result arrived for no batch".into(),
                )));
            };
            match crate::panic::catch(|| decode(body)) {
                Ok(decoded) => decoded.map_err(DecodeError::Codec),
                Err(caught) => Err(DecodeError::Panic(caught)),
            }
        });
        let event = match incoming {
            Ok(Some(Incoming::Value(value))) => Event::Value { worker, value },
            Ok(Some(Incoming::Other(payload))) => {
                if wire::is_done(&payload) && current.take().is_none() {
                    let _ = decoders.try_recv();
                }
                Event::Frame { worker, payload }
            }
            Ok(None) => return None,
            Err(e) => return Some(e),
        };
        if events.send(event).is_err() {
            return None;
        }
    }
}
