//! How a task's values cross the wire: the serde codecs of
//! [`SerdeFns`]/[`TaskCodecs`], the compile-time probe the macros use to
//! pick them, and the worker-side call of a registered task.
//!
//! The task layer declares these as tables of plain function pointers;
//! this module fills them with the codec and the frame writers.

use super::codec::{self, CodecError};
use super::plain_result;
use super::{write_failure, write_value, JobFailure};
use crate::panic::{self, Caught};
use crate::task::chunk::{self, ChunkFailure};
use crate::task::{ProcessTask, SerdeFns, TaskCodecs, TaskEntry};
use serde::{de::DeserializeOwned, Serialize};

impl<A, R> TaskCodecs<A, R>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    /// The serde codecs for the argument tuple and the output.
    pub fn serde() -> Self {
        TaskCodecs {
            args: SerdeFns::serde(),
            output: SerdeFns::serde(),
        }
    }
}

impl<T: Serialize + DeserializeOwned + 'static> SerdeFns<T> {
    /// Encoding and decoding through [`crate::wire::codec`]; a result that
    /// is a `Vec` of numbers is written raw, or through shared memory over
    /// `max_nbytes` (`plain_result`).
    pub fn serde() -> Self {
        let (write, read) = plain_result::fns::<T>().unwrap_or((
            |w, batch, v| write_value(w, batch, v),
            codec::decode_from_reader::<T>,
        ));
        SerdeFns {
            encode: |v| codec::encode(v),
            write,
            decode: codec::decode::<T>,
            read,
            append: |v, out| codec::encode_append(v, out),
            take: codec::decode_prefix::<T>,
        }
    }
}

impl TaskEntry {
    /// The registration of task `T`.
    pub const fn new<T: ProcessTask>() -> Self {
        TaskEntry {
            name: T::NAME,
            invoke: invoke::<T>,
            invoke_chunk: invoke_chunk::<T>,
            signature: std::any::type_name::<fn(T::Args) -> T::Output>,
        }
    }
}

fn invoke<T: ProcessTask>(
    batch: u64,
    args: &[u8],
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let codecs = T::codecs().expect("a process task has codecs");
    let args: T::Args = match (codecs.args.decode)(args) {
        Ok(a) => a,
        Err(e) => return write_failure(out, batch, &JobFailure::DecodeArgs(e.0)),
    };
    match panic::catch(move || T::call(args)) {
        Ok(value) => (codecs.output.write)(out, batch, &value),
        Err(Caught { message, location }) => {
            write_failure(out, batch, &JobFailure::Panic { message, location })
        }
    }
}

/// Runs a chunk of task `T` in a worker: the calls whose arguments follow
/// a count in `args`, in order, until one fails. The answer is one value
/// frame: the count of values, the values, then the failure, if any.
fn invoke_chunk<T: ProcessTask>(
    batch: u64,
    args: &[u8],
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let codecs = T::codecs().expect("a process task has codecs");
    let mut rest = args;
    let n = match chunk::take_u64(&mut rest) {
        Ok(n) => n,
        Err(e) => return write_failure(out, batch, &JobFailure::DecodeArgs(e.0)),
    };
    let mut body = 0u64.to_le_bytes().to_vec();
    let mut done = 0u64;
    let mut failure = None;
    let outcome = panic::catch(|| {
        while done < n {
            let a = match (codecs.args.take)(&mut rest) {
                Ok(a) => a,
                Err(e) => return failure = Some(ChunkFailure::DecodeArgs(e.0)),
            };
            let value = T::call(a);
            let mark = body.len();
            if let Err(e) = (codecs.output.append)(&value, &mut body) {
                body.truncate(mark);
                return failure = Some(ChunkFailure::EncodeResult(e.0));
            }
            done += 1;
        }
    });
    if let Err(Caught { message, location }) = outcome {
        // A panic in a result's `Serialize` may have left part of it.
        body.truncate(8 + values_len(&body, done, codecs.output.take));
        failure = Some(ChunkFailure::Panic { message, location });
    }
    body[..8].copy_from_slice(&done.to_le_bytes());
    if let Some(failure) = failure {
        failure.append(done, &mut body);
    }
    super::write_raw_value(out, batch, &body)
}

/// How many bytes the first `count` values take after a chunk answer's
/// count.
fn values_len<R>(body: &[u8], count: u64, take: fn(&mut &[u8]) -> Result<R, CodecError>) -> usize {
    let mut rest = &body[8..];
    for _ in 0..count {
        if take(&mut rest).is_err() {
            break;
        }
    }
    body.len() - 8 - rest.len()
}

/// Picks [`SerdeFns`] for a concrete type at compile time (autoref
/// specialization): `(&&Probe::<T>::NEW).serde_fns()` gives the codec when
/// `T` is a serde type, and a stub otherwise. The stub is never reached:
/// the same expansion asserts `T: ProcessArg`/`ProcessOutput`, spanned on
/// the user's type, so only that one error is reported, not a cascade.
#[doc(hidden)]
pub struct Probe<T>(std::marker::PhantomData<T>);

impl<T> Probe<T> {
    /// The probe value.
    pub const NEW: Self = Probe(std::marker::PhantomData);
}

/// The serde arm of [`Probe`].
#[doc(hidden)]
pub trait ViaSerde<T> {
    /// The real codec.
    fn serde_fns(&self) -> SerdeFns<T>;
}

impl<T: Serialize + DeserializeOwned + 'static> ViaSerde<T> for &Probe<T> {
    fn serde_fns(&self) -> SerdeFns<T> {
        SerdeFns::serde()
    }
}

/// The fallback arm of [`Probe`], chosen only when the program does not compile anyway.
#[doc(hidden)]
pub trait ViaNothing<T> {
    /// A codec that always fails.
    fn serde_fns(&self) -> SerdeFns<T>;
}

impl<T> ViaNothing<T> for Probe<T> {
    fn serde_fns(&self) -> SerdeFns<T> {
        SerdeFns {
            encode: |_| Err(CodecError("not a serde type".into())),
            write: |w, batch, _| {
                write_failure(
                    w,
                    batch,
                    &JobFailure::EncodeResult("not a serde type".into()),
                )
            },
            decode: |_| Err(CodecError("not a serde type".into())),
            read: |_| Err(CodecError("not a serde type".into())),
            append: |_, _| Err(CodecError("not a serde type".into())),
            take: |_| Err(CodecError("not a serde type".into())),
        }
    }
}
