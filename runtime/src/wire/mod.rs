//! Frames and messages between the parent and its worker processes.
//!
//! The transport is a pair of anonymous pipes that the worker inherits at
//! descriptors named in `PARJOB_WORKER`, never stdout: the worker's stdout
//! and stderr stay the user's (docs/decisions.md). A frame is a
//! little-endian `u64` length followed by that many bytes. A length above
//! [`MAX_FRAME`] is refused before anything is allocated.
//!
//! Parent to worker, one frame per batch: [`ToWorker::Run`], and at the
//! end of a run that passed shared memory, [`ToWorker::Forget`]. A pool
//! with an initializer sends [`ToWorker::Init`] first, once per worker. The
//! segments themselves travel on a socket beside the pipes (`crate::shm`).
//!
//! Worker to parent, each frame starts with a kind byte:
//! - `Hello`: the handshake, first;
//! - `Value`: one job's result, after the id of the batch it answers,
//!   encoded straight into the pipe. A size pass
//!   gives the length first, so the worker never holds an encoded copy of a
//!   large result, and the parent decodes it from the frame it read;
//! - `Failure`: one job's failure, with its batch's id;
//! - `Times`: under `trace`, when each of a batch's jobs ended, on the
//!   host's monotonic clock, just before its `Done`;
//! - `Done`: the end of a batch, with its job count and compute time;
//! - `Log`: a `tracing` event of the worker ([`LogRecord`]), at any time
//!   between frames; the parent's reader re-emits it and forwards nothing.
//!
//! Small results still go out in one write per batch, through the worker's
//! buffered writer.

pub(crate) mod codec;
mod plain_result;
mod seq;
pub(crate) mod tally;
mod task_codecs;

pub(crate) use task_codecs::run_here;
pub use task_codecs::{Probe, ViaNothing, ViaSerde};

use codec::CodecError;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::{self, Read, Write};

/// Bumped whenever a message changes shape.
pub(crate) const PROTOCOL_VERSION: u32 = 8;
/// `b"PJOB"`, the first field of every hello.
pub(crate) const MAGIC: u32 = u32::from_le_bytes(*b"PJOB");
/// The largest frame either side accepts: 1 GiB.
pub(crate) const MAX_FRAME: u64 = 1 << 30;

const KIND_HELLO: u8 = 0;
const KIND_VALUE: u8 = 1;
const KIND_FAILURE: u8 = 2;
const KIND_DONE: u8 = 3;
const KIND_LOG: u8 = 4;
const KIND_TALLY: u8 = 5;
const KIND_TIMES: u8 = 6;
/// A value frame's bytes before the value: its kind and its batch.
const VALUE_HEAD: u64 = 1 + 8;

/// An encoded value, carried as one byte string (not a sequence of
/// numbers), so a large argument costs one copy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::plain::ByteString::deserialize(d).map(|b| Bytes(b.0))
    }
}

/// Parent to worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// Run task `task` once per entry of `args`, in order, the k-th as job
    /// `seq + k`; answer with one `Value` or `JobFailure` per job, then `Done`.
    Run {
        /// The batch's id, chosen by the parent and echoed in `Done`.
        id: u64,
        /// The registered task name.
        task: String,
        /// The sequence number of the first job, for the beacon.
        seq: u64,
        /// One encoded argument tuple per job.
        args: Vec<Bytes>,
        /// The run's `max_nbytes`: a result of numbers over it returns
        /// through shared memory.
        max_nbytes: Option<u64>,
        /// A pool's chunk: `args` holds one entry, every call's arguments
        /// in one buffer, answered by one value frame.
        chunked: bool,
        /// That chunk is a batch of jobs packed (`Work::pack`): under
        /// `timed`, each call's end is a job's.
        packed: bool,
        /// The run is traced: answer with `Times` before `Done`.
        timed: bool,
    },
    /// Run a pool's initializer once, before any batch. The answer is a
    /// `Done` of batch 0, or the `JobFailure` of batch 0 that says why it
    /// failed.
    Init {
        /// The registered task name.
        task: String,
        /// Its encoded argument tuple.
        args: Bytes,
    },
    /// The parent's run is over: drop these shared-memory segments.
    Forget {
        /// The segments' ids.
        segments: Vec<u64>,
    },
}

/// Why one job failed in the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum JobFailure {
    /// The task panicked.
    Panic {
        /// Panic message.
        message: String,
        /// `file:line:column`.
        location: Option<String>,
    },
    /// The worker has no task of that name.
    UnknownTask,
    /// The arguments did not decode as the task's argument type.
    DecodeArgs(String),
    /// The result could not be encoded.
    EncodeResult(String),
}

/// A frame from a worker, borrowing from the frame's bytes.
#[derive(Debug, PartialEq)]
pub(crate) enum FromWorker<'a> {
    /// The first message of every worker.
    Hello(Hello),
    /// One job's encoded result, in batch `batch`.
    Value {
        /// The `Run` this answers.
        batch: u64,
        /// The encoded result.
        body: &'a [u8],
    },
    /// One job's failure, in batch `batch`.
    JobFailure {
        /// The `Run` this answers.
        batch: u64,
        /// What went wrong.
        failure: JobFailure,
    },
    /// Under `trace`, when batch `batch`'s jobs ran: from `start_ns`, the
    /// end of each job in turn, the first being job `seq`.
    Times {
        /// The `Run` this answers.
        batch: u64,
        /// The `Run`'s `seq`: the first job's index.
        seq: u64,
        /// When the first job started, on `CLOCK_MONOTONIC`.
        start_ns: u64,
        /// When each job ended.
        ends: Vec<u64>,
    },
    /// The end of batch `id`: `count` jobs answered, in `elapsed_ns`.
    Done {
        /// The `Run`'s id.
        id: u64,
        /// How many `Value`/`JobFailure` frames came before it.
        count: u64,
        /// Time spent running the batch's jobs.
        elapsed_ns: u64,
    },
}

/// A `tracing` event of a worker, forwarded to the parent's subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogRecord {
    /// 0 = error, 1 = warn, 2 = info, 3 = debug, 4 = trace.
    pub level: u8,
    /// The event's target in the worker (its module path by default).
    pub target: String,
    /// The message and the other fields, formatted.
    pub message: String,
}

/// What a worker says when it starts, so a mismatch is found at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// Always [`MAGIC`].
    pub magic: u32,
    /// The worker's [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The worker's [`crate::task::registry_fingerprint`].
    pub fingerprint: u64,
    /// The worker's pid.
    pub pid: u32,
}

impl Hello {
    /// This process's hello: its protocol, its registry's fingerprint and
    /// its pid.
    pub(crate) fn current() -> Self {
        Hello {
            magic: MAGIC,
            protocol: PROTOCOL_VERSION,
            fingerprint: crate::task::registry_fingerprint(),
            pid: std::process::id(),
        }
    }

    /// Checks a worker's hello against this process; the error says what differs.
    pub(crate) fn check(&self, ours: &Hello) -> Result<(), String> {
        if self.magic != ours.magic {
            return Err(format!(
                "worker {} spoke another protocol (magic {:#x})",
                self.pid, self.magic
            ));
        }
        if self.protocol != ours.protocol {
            return Err(format!(
                "worker {} speaks protocol version {}, this process {}",
                self.pid, self.protocol, ours.protocol
            ));
        }
        if self.fingerprint != ours.fingerprint {
            return Err(format!(
                "worker {} has another task registry (fingerprint {:#018x}, ours {:#018x}): \
                 was the binary rebuilt while it ran?",
                self.pid, self.fingerprint, ours.fingerprint
            ));
        }
        Ok(())
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Encodes `msg` as one frame, ready for a single `write_all`.
pub(crate) fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let len = codec::encoded_len(msg)? as u64;
    if len > MAX_FRAME {
        return Err(CodecError(format!(
            "a message of {len} bytes is over the {MAX_FRAME}-byte frame limit"
        )));
    }
    let mut buf = Vec::with_capacity(8 + len as usize);
    buf.extend_from_slice(&len.to_le_bytes());
    codec::encode_to_writer(msg, &mut buf)?;
    Ok(buf)
}

fn write_kind<T: Serialize>(w: &mut dyn Write, kind: u8, body: &T) -> io::Result<()> {
    let len = codec::encoded_len(body).map_err(|e| invalid(e.0))? as u64 + 1;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&[kind])?;
    codec::encode_to_writer(body, w).map_err(|e| invalid(e.0))?;
    Ok(())
}

/// Writes the worker's hello.
pub(crate) fn write_hello(w: &mut dyn Write, hello: &Hello) -> io::Result<()> {
    write_kind(w, KIND_HELLO, hello)
}

/// Writes the failure of one job of batch `batch`.
pub(crate) fn write_failure(w: &mut dyn Write, batch: u64, failure: &JobFailure) -> io::Result<()> {
    write_kind(w, KIND_FAILURE, &(batch, failure))
}

/// Writes a forwarded `tracing` event.
pub(crate) fn write_log(w: &mut dyn Write, record: &LogRecord) -> io::Result<()> {
    write_kind(w, KIND_LOG, record)
}

/// The `tracing` event a worker frame's payload carries, if it is a log
/// frame.
pub(crate) fn log_record(payload: &[u8]) -> Option<LogRecord> {
    match payload.split_first() {
        Some((&KIND_LOG, body)) => codec::decode(body).ok(),
        _ => None,
    }
}

/// Writes the end of a batch.
pub(crate) fn write_done(
    w: &mut dyn Write,
    id: u64,
    count: u64,
    elapsed_ns: u64,
) -> io::Result<()> {
    write_kind(w, KIND_DONE, &(id, count, elapsed_ns))
}

/// Writes when a batch's jobs ran (under `trace`).
pub(crate) fn write_times(
    w: &mut dyn Write,
    batch: u64,
    seq: u64,
    start_ns: u64,
    ends: &[u64],
) -> io::Result<()> {
    write_kind(w, KIND_TIMES, &(batch, seq, start_ns, ends))
}

/// Writes one job's result, encoded straight into `w`. A result that cannot
/// be encoded, or is too large for a frame, is written as a failure, and so
/// is a `Serialize` impl that panics while the result is measured (before
/// any byte of it is written), with the panic's message and location.
pub(crate) fn write_value<T: Serialize + ?Sized>(
    w: &mut dyn Write,
    batch: u64,
    value: &T,
) -> io::Result<()> {
    let len = match crate::panic::catch(|| codec::encoded_len(value)) {
        Ok(Ok(len)) => len as u64,
        Ok(Err(e)) => return write_failure(w, batch, &JobFailure::EncodeResult(e.0)),
        Err(crate::panic::Caught { message, location }) => {
            let message = format!("the result's Serialize impl panicked: {message}");
            return write_failure(w, batch, &JobFailure::Panic { message, location });
        }
    };
    if len + VALUE_HEAD > MAX_FRAME {
        return write_failure(
            w,
            batch,
            &JobFailure::EncodeResult(format!(
                "the result is {len} bytes, over the {MAX_FRAME}-byte frame limit"
            )),
        );
    }
    w.write_all(&(len + VALUE_HEAD).to_le_bytes())?;
    w.write_all(&[KIND_VALUE])?;
    w.write_all(&batch.to_le_bytes())?;
    let written = codec::encode_to_writer(value, w).map_err(|e| invalid(e.0))?;
    if written as u64 != len {
        // The frame on the wire is now torn: the worker must stop.
        return Err(invalid(format!(
            "the result encoded to {written} bytes after measuring {len}: its Serialize is not deterministic"
        )));
    }
    Ok(())
}

/// Writes one value frame of batch `batch` whose body is `body`, already
/// encoded (a chunk's answer); one over the frame limit is a failure.
pub(crate) fn write_raw_value(w: &mut dyn Write, batch: u64, body: &[u8]) -> io::Result<()> {
    let len = body.len() as u64;
    if len + VALUE_HEAD > MAX_FRAME {
        let why = format!("a chunk's results are {len} bytes, over the {MAX_FRAME}-byte frame limit: use a smaller chunksize");
        return write_failure(w, batch, &JobFailure::EncodeResult(why));
    }
    w.write_all(&(len + VALUE_HEAD).to_le_bytes())?;
    w.write_all(&[KIND_VALUE])?;
    w.write_all(&batch.to_le_bytes())?;
    w.write_all(body)
}

/// The batch a worker frame's payload ends, if it is a `Done` frame.
pub(crate) fn done_batch(payload: &[u8]) -> Option<u64> {
    match parse_from_worker(payload) {
        Ok(FromWorker::Done { id, .. }) => Some(id),
        _ => None,
    }
}

/// Parses a frame from a worker.
pub(crate) fn parse_from_worker(payload: &[u8]) -> io::Result<FromWorker<'_>> {
    let (&kind, body) = payload
        .split_first()
        .ok_or_else(|| invalid("an empty frame"))?;
    let decode = |e: CodecError| invalid(e.0);
    Ok(match kind {
        KIND_HELLO => FromWorker::Hello(codec::decode(body).map_err(decode)?),
        KIND_VALUE => {
            let (batch, body) = body
                .split_first_chunk::<8>()
                .ok_or_else(|| invalid("a value frame without its batch"))?;
            FromWorker::Value {
                batch: u64::from_le_bytes(*batch),
                body,
            }
        }
        KIND_FAILURE => {
            let (batch, failure) = codec::decode(body).map_err(decode)?;
            FromWorker::JobFailure { batch, failure }
        }
        KIND_DONE => {
            let (id, count, elapsed_ns) = codec::decode(body).map_err(decode)?;
            FromWorker::Done {
                id,
                count,
                elapsed_ns,
            }
        }
        KIND_TIMES => {
            let (batch, seq, start_ns, ends) = codec::decode(body).map_err(decode)?;
            FromWorker::Times {
                batch,
                seq,
                start_ns,
                ends,
            }
        }
        other => return Err(invalid(format!("unknown frame kind {other}"))),
    })
}

/// A frame from a worker as the parent's reader takes it: a result decoded
/// straight from the pipe, or any other frame's whole payload.
pub enum Incoming<V> {
    /// A `Value` frame of batch `batch`, decoded by the caller's decoder.
    Value {
        /// The batch it answers.
        batch: u64,
        /// What the decoder made of it.
        value: V,
        /// The frame's length.
        bytes: u64,
    },
    /// Any other frame (kind byte first), for `parse_from_worker`.
    Other(Vec<u8>),
}

/// Reads one frame from a worker. A `Value` frame's batch is handed to
/// `decode` with a reader bounded to the frame, which must be used up
/// exactly; other frames are read whole. `Ok(None)` is a clean end of stream between frames; a
/// stream that ends inside a frame is `UnexpectedEof`.
pub fn read_incoming<V, E: From<CodecError>>(
    r: &mut impl Read,
    decode: impl FnOnce(u64, &mut dyn Read) -> Result<V, E>,
) -> io::Result<Option<Incoming<Result<V, E>>>> {
    let Some(len) = read_len(r)? else {
        return Ok(None);
    };
    let mut kind = [0u8];
    if len == 0 {
        return Err(invalid("an empty frame"));
    }
    r.read_exact(&mut kind)?;
    if kind[0] != KIND_VALUE {
        let mut payload = vec![kind[0]];
        read_body(r, len - 1, &mut payload)?;
        return Ok(Some(Incoming::Other(payload)));
    }
    if len < VALUE_HEAD {
        return Err(invalid("a value frame without its batch"));
    }
    let mut batch = [0u8; 8];
    r.read_exact(&mut batch)?;
    let batch = u64::from_le_bytes(batch);
    let mut body = r.take(len - VALUE_HEAD);
    let value = decode(batch, &mut body);
    let left = body.limit();
    if left > 0 {
        // Skip what the decoder left; if the stream ends first, the worker
        // died mid-frame, which is not a decoding problem.
        let skipped = io::copy(&mut body, &mut io::sink())?;
        if skipped < left {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if value.is_ok() {
            let value = Err(CodecError(format!(
                "{left} bytes left after the result: the worker encoded another type"
            ))
            .into());
            return Ok(Some(Incoming::Value {
                batch,
                value,
                bytes: len,
            }));
        }
    }
    Ok(Some(Incoming::Value {
        batch,
        value,
        bytes: len,
    }))
}

fn read_len(r: &mut impl Read) -> io::Result<Option<u64>> {
    let mut len = [0u8; 8];
    let mut got = 0;
    while got < len.len() {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u64::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(invalid(format!(
            "a frame claims {len} bytes, over the {MAX_FRAME}-byte limit"
        )));
    }
    Ok(Some(len))
}

/// Reads one frame's payload. `Ok(None)` is a clean end of stream between
/// frames; a stream that ends inside a frame is `UnexpectedEof`.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let Some(len) = read_len(r)? else {
        return Ok(None);
    };
    let mut payload = Vec::new();
    read_body(r, len, &mut payload)?;
    Ok(Some(payload))
}

/// Appends exactly `len` bytes to `out`. The buffer grows as bytes arrive
/// (fallibly), so a length prefix the stream does not back allocates at
/// most 1 MiB before the stream ends.
fn read_body(r: &mut impl Read, len: u64, out: &mut Vec<u8>) -> io::Result<()> {
    let first = len.min(1 << 20) as usize;
    out.try_reserve_exact(first)
        .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    let got = r.take(len).read_to_end(out)? as u64;
    if got < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Decodes a frame's payload as a parent-to-worker message.
pub fn decode_message<T: DeserializeOwned>(payload: &[u8]) -> io::Result<T> {
    codec::decode(payload).map_err(|e| invalid(e.0))
}

#[cfg(test)]
mod tests;
