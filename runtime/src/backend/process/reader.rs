//! A worker's reader thread, in the parent. It never runs on the
//! scheduler's thread, so nothing the worker does can keep the scheduler
//! from checking timeouts.
//!
//! It decodes results straight from the pipe with the decoder of the batch
//! each names, and forwards every other frame. A decoder that panics
//! (a `Deserialize` impl that panics) is caught and reported as that job's
//! panic. A worker's `tracing` events are re-emitted here (`log`). When the pipe ends, the worker exits (even while a descendant
//! holds the pipe open), or the thread itself fails, the reader reports
//! [`Event::Closed`]: its end is never silent.

use super::exit::{ExitWatch, Ready};
use crate::panic::Caught;
use crate::wire::codec::CodecError;
use crate::wire::{self, Incoming};
use std::any::Any;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd};
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
    /// A result of batch `batch`, decoded in the reader thread (no copy of
    /// the frame).
    Value {
        worker: u64,
        batch: u64,
        value: Decoded,
        /// The encoded result's length.
        bytes: usize,
    },
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
    segments: OwnedFd,
    watch: Arc<ExitWatch>,
    decoders: Receiver<(u64, ErasedDecoder)>,
    events: Sender<Event>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name(format!("parjob-reader-{pid}"))
        .spawn(move || {
            // Results over max_nbytes arrive as segments on this socket.
            crate::shm::reader_socket(segments);
            let mut report = ClosedReport {
                worker,
                events: events.clone(),
                watch: watch.clone(),
                error: None,
            };
            let reader = ExitAwareReader { pipe, watch };
            report.error = read_frames(worker, pid, reader, decoders, events);
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
/// name, and forwards everything else. Returns the error that ended the
/// stream, if it did not end cleanly.
///
/// The session sends a batch's decoder before it queues the batch, so the
/// decoder is there before any answer can come; it is dropped at the
/// batch's `Done`. Every result frame names its batch, so no answer relies
/// on the order in which decoders were queued.
fn read_frames(
    worker: u64,
    pid: u32,
    pipe: impl Read,
    decoders: Receiver<(u64, ErasedDecoder)>,
    events: Sender<Event>,
) -> Option<io::Error> {
    let mut reader = BufReader::with_capacity(1 << 16, pipe);
    // The batch being answered, and decoders that arrived for later ones.
    let mut current: Option<(u64, ErasedDecoder)> = None;
    let mut waiting: HashMap<u64, ErasedDecoder> = HashMap::new();
    loop {
        let incoming = wire::read_incoming(&mut reader, |batch, body| {
            if current.as_ref().is_none_or(|(id, _)| *id != batch) {
                waiting.extend(decoders.try_iter());
                if let Some((id, old)) = current.take() {
                    waiting.insert(id, old);
                }
                current = waiting.remove(&batch).map(|decode| (batch, decode));
            }
            let Some((_, decode)) = &current else {
                return Err(DecodeError::Codec(CodecError(format!(
                    "a result for batch {batch}, which this worker was not sent"
                ))));
            };
            match crate::panic::catch(|| decode(body)) {
                Ok(decoded) => decoded.map_err(DecodeError::Codec),
                Err(caught) => Err(DecodeError::Panic(caught)),
            }
        });
        let event = match incoming {
            Ok(Some(Incoming::Value {
                batch,
                value,
                bytes,
            })) => Event::Value {
                worker,
                batch,
                value,
                bytes: bytes as usize,
            },
            Ok(Some(Incoming::Other(payload))) => {
                if let Some(record) = wire::log_record(&payload) {
                    super::log::emit(pid, &record);
                    continue;
                }
                if wire::tally::absorb(&payload) {
                    continue;
                }
                if let Some(done) = wire::done_batch(&payload) {
                    if current.as_ref().is_some_and(|(id, _)| *id == done) {
                        current = None;
                    } else {
                        waiting.extend(decoders.try_iter());
                        waiting.remove(&done);
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec;
    use std::sync::mpsc;

    fn decoder<T: serde::de::DeserializeOwned + Send + 'static>() -> ErasedDecoder {
        Box::new(|r: &mut dyn Read| {
            codec::decode_from_reader::<T>(r).map(|v| Box::new(v) as Box<dyn Any + Send>)
        })
    }

    #[test]
    fn each_result_is_decoded_by_the_decoder_of_the_batch_it_names() {
        let mut pipe = Vec::new();
        wire::write_value(&mut pipe, 1, &7u32).unwrap();
        wire::write_done(&mut pipe, 1, 1, 0).unwrap();
        wire::write_value(&mut pipe, 2, &"two".to_string()).unwrap();
        wire::write_done(&mut pipe, 2, 1, 0).unwrap();
        wire::write_value(&mut pipe, 9, &3u32).unwrap();
        let (decoders_tx, decoders) = mpsc::channel();
        // Queued in the other order than the answers come.
        decoders_tx.send((2, decoder::<String>())).unwrap();
        decoders_tx.send((1, decoder::<u32>())).unwrap();
        let (events_tx, events) = mpsc::channel();
        assert!(read_frames(5, 0, &pipe[..], decoders, events_tx).is_none());
        let values: Vec<(u64, Result<String, String>)> = events
            .try_iter()
            .filter_map(|e| match e {
                Event::Value { batch, value, .. } => Some((
                    batch,
                    match value {
                        Ok(v) => Ok(match v.downcast::<u32>() {
                            Ok(n) => n.to_string(),
                            Err(v) => *v.downcast::<String>().unwrap(),
                        }),
                        Err(DecodeError::Codec(e)) => Err(e.0),
                        Err(DecodeError::Panic(c)) => Err(c.message),
                    },
                )),
                _ => None,
            })
            .collect();
        assert_eq!(values[0], (1, Ok("7".to_string())));
        assert_eq!(values[1], (2, Ok("two".to_string())));
        let (batch, unknown) = &values[2];
        assert_eq!(*batch, 9);
        assert!(
            unknown.as_ref().unwrap_err().contains("batch 9"),
            "{unknown:?}"
        );
    }
}
