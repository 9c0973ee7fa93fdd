//! A pool's chunk: consecutive calls of one task, run as one job.
//!
//! In a worker, a chunk is one `Run` frame holding every call's arguments
//! as one encoded sequence, and one result frame holding every value as
//! another, so a tiny task costs its share of two encodings and nothing
//! per call besides (no frame, no channel message, no allocation of its
//! own). A chunk stops at the first call that panics; its answer is the
//! values before it and that failure, written as a [`ChunkFailure`] after
//! them.

use super::{declared, AnyOutput, Body, BodySlot, Call, Decoder, Job, Task};
use crate::error::{CodecError, Error};
use std::any::Any;

/// What a chunk returns: the values of its first calls, in order, and the
/// failure of the call after them (its index counted in the chunk).
pub(crate) struct ChunkOut<R> {
    pub(crate) values: Vec<R>,
    pub(crate) failure: Option<Error>,
}

/// Why a call of a chunk failed in a worker, as the worker writes it after
/// the values: a kind byte, the call's index (`u64`), then the message and
/// the location as length-prefixed text (`u32::MAX`: no location).
pub(crate) enum ChunkFailure {
    Panic {
        message: String,
        location: Option<String>,
    },
    EncodeResult(String),
}

impl ChunkFailure {
    /// Appends the failure of call `index` to a chunk's answer.
    pub(crate) fn append(&self, index: u64, out: &mut Vec<u8>) {
        let (kind, message, location) = match self {
            ChunkFailure::Panic { message, location } => (1u8, message, location.as_deref()),
            ChunkFailure::EncodeResult(m) => (3, m, None),
        };
        out.push(kind);
        out.extend_from_slice(&index.to_le_bytes());
        put_text(out, Some(message));
        put_text(out, location);
    }

    /// The failure at the end of a chunk's answer, as an error of `task`.
    fn parse(mut bytes: &[u8], task: &str) -> Result<Option<Error>, CodecError> {
        let Some((&kind, rest)) = bytes.split_first() else {
            return Ok(None);
        };
        bytes = rest;
        let index = take_u64(&mut bytes)? as usize;
        let message = take_text(&mut bytes)?.unwrap_or_default();
        let location = take_text(&mut bytes)?;
        let codec = |action, cause| Error::Codec {
            task: task.into(),
            index,
            action,
            cause,
        };
        Ok(Some(match kind {
            1 => Error::Panic {
                task: task.into(),
                index,
                message,
                location,
            },
            2 => codec("decode the arguments in the worker", message),
            3 => codec("encode the result in the worker", message),
            other => return Err(CodecError(format!("a chunk failure of kind {other}"))),
        }))
    }
}

fn put_text(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
        Some(t) => {
            let t = &t.as_bytes()[..t.len().min(u32::MAX as usize - 1)];
            out.extend_from_slice(&(t.len() as u32).to_le_bytes());
            out.extend_from_slice(t);
        }
    }
}

/// Reads a little-endian `u64` from the front of `bytes`.
pub(crate) fn take_u64(bytes: &mut &[u8]) -> Result<u64, CodecError> {
    let (head, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| CodecError("a chunk cut short".into()))?;
    *bytes = rest;
    Ok(u64::from_le_bytes(*head))
}

fn take_text(bytes: &mut &[u8]) -> Result<Option<String>, CodecError> {
    let (head, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| CodecError("a chunk failure cut short".into()))?;
    let len = u32::from_le_bytes(*head);
    if len == u32::MAX {
        *bytes = rest;
        return Ok(None);
    }
    let len = len as usize;
    if rest.len() < len {
        return Err(CodecError("a chunk failure cut short".into()));
    }
    *bytes = &rest[len..];
    Ok(Some(String::from_utf8_lossy(&rest[..len]).into_owned()))
}

/// The calls of one process-capable task.
struct ChunkCalls<T: Task>(Vec<T::Args>);

impl<T: Task> Body<AnyOutput> for ChunkCalls<T> {
    fn invoke(self) -> AnyOutput {
        let mut values = Vec::with_capacity(self.0.len());
        let args = self.0;
        let outcome = crate::panic::catch(|| {
            for a in args {
                values.push(T::call(a));
            }
        });
        let failure = outcome.err().map(|caught| Error::Panic {
            task: T::NAME.into(),
            index: values.len(),
            message: caught.message,
            location: caught.location,
        });
        Box::new(ChunkOut { values, failure })
    }

    fn encode_args(&self) -> Option<Result<Vec<u8>, CodecError>> {
        let codecs = T::codecs()?;
        let mut out = Vec::new();
        Some((codecs.args.append_seq)(&self.0, &mut out).map(|()| out))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Reads a worker's answer to a chunk of task `T`: the values, then the
/// failure, if any.
pub(crate) fn read_chunk<T: Task>(r: &mut dyn std::io::Read) -> Result<AnyOutput, CodecError> {
    let codecs = T::codecs().ok_or_else(|| CodecError("not a process task".into()))?;
    let mut body = Vec::new();
    r.read_to_end(&mut body)
        .map_err(|e| CodecError(format!("reading a chunk's answer: {e}")))?;
    let mut rest = body.as_slice();
    let values = (codecs.output.take_seq)(&mut rest)?;
    let failure = ChunkFailure::parse(rest, T::NAME)?;
    Ok(Box::new(ChunkOut { values, failure }))
}

/// The chunk of `jobs`, all calls of task `T` (checked by [`chunk`]).
fn chunk_of<T: Task>(jobs: Vec<Job<T::Output>>) -> Job<AnyOutput> {
    let args = jobs
        .into_iter()
        .filter_map(|job| job.body.into_any().downcast::<Call<T>>().ok())
        .map(|call| call.0)
        .collect();
    calls::<T>(args)
}

/// The chunk job of task `T` called with each of `args`.
pub(crate) fn calls<T: Task>(args: Vec<T::Args>) -> Job<AnyOutput> {
    let items = args.len();
    Job {
        task: T::NAME,
        body: BodySlot::new(ChunkCalls::<T>(args)),
        decode: T::codecs().map(|_| read_chunk::<T> as Decoder<AnyOutput>),
        chunker: None,
        packer: None,
        chunked: true,
        items,
        declared: declared::<T>,
    }
}

/// Any jobs (closures included) run here in order, as one chunk; they
/// cannot cross a process boundary.
struct Here<R>(Vec<Job<R>>);

impl<R: Send + 'static> Body<AnyOutput> for Here<R> {
    fn invoke(self) -> AnyOutput {
        let task = self.0.first().map_or("closure", |j| j.task);
        let mut values = Vec::with_capacity(self.0.len());
        let jobs = self.0;
        let outcome = crate::panic::catch(|| {
            for job in jobs {
                values.push(job.body.run());
            }
        });
        let failure = outcome.err().map(|caught| Error::Panic {
            task: task.into(),
            index: values.len(),
            message: caught.message,
            location: caught.location,
        });
        Box::new(ChunkOut { values, failure })
    }

    fn encode_args(&self) -> Option<Result<Vec<u8>, CodecError>> {
        None
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `jobs` (consecutive jobs of one task) as one job whose output is a
/// boxed [`ChunkOut<R>`]: one buffer of arguments and one answer when the
/// task can run in a worker, else run here in order.
pub(crate) fn chunk<R: Send + 'static>(jobs: Vec<Job<R>>) -> Job<AnyOutput> {
    let first_type = jobs.first().map(|j| j.body.as_any().type_id());
    let one_type = jobs
        .iter()
        .all(|j| Some(j.body.as_any().type_id()) == first_type);
    match jobs.first().and_then(|j| j.chunker) {
        Some(chunker) if one_type => chunker(jobs),
        _ => {
            let items = jobs.len();
            let task = jobs.first().map_or("closure", |j| j.task);
            let declared = jobs
                .first()
                .map_or(super::closure_declared as fn() -> _, |j| j.declared);
            Job {
                task,
                body: BodySlot::new(Here(jobs)),
                decode: None,
                chunker: None,
                packer: None,
                chunked: true,
                items,
                declared,
            }
        }
    }
}

/// The chunker of task `T`'s jobs, kept in each of them.
pub(crate) fn chunker_of<T: Task>() -> super::Chunker<T::Output> {
    chunk_of::<T>
}
