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
use crate::task::chunk::ChunkFailure;
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
            append_seq: super::seq::append::<T>,
            append_refs: super::seq::append_refs::<T>,
            take_seq: super::seq::take::<T>,
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

/// Runs a chunk of task `T` in a worker: the calls whose arguments are
/// the sequence in `args`, in order, until one panics. The answer is one
/// value frame: the sequence of values, then the failure, if any.
fn invoke_chunk<T: ProcessTask>(
    batch: u64,
    args: &[u8],
    out: &mut dyn std::io::Write,
    on_call: &dyn Fn(usize),
) -> std::io::Result<()> {
    let codecs = T::codecs().expect("a process task has codecs");
    let mut rest = args;
    let calls = match (codecs.args.take_seq)(&mut rest) {
        Ok(calls) => calls,
        Err(e) => return write_failure(out, batch, &JobFailure::DecodeArgs(e.0)),
    };
    let mut values = Vec::with_capacity(calls.len());
    let called = panic::catch(|| {
        calls.into_iter().for_each(|a| {
            on_call(values.len());
            values.push(T::call(a));
        })
    });
    let mut failure = called.err().map(|Caught { message, location }| {
        (values.len(), ChunkFailure::Panic { message, location })
    });
    let mut body = Vec::new();
    let encoded = panic::catch(|| (codecs.output.append_seq)(&values, &mut body));
    let unencoded = match encoded {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(ChunkFailure::EncodeResult(e.0)),
        Err(Caught { message, .. }) => Some(ChunkFailure::EncodeResult(format!(
            "a result's Serialize panicked: {message}"
        ))),
    };
    if let Some(why) = unencoded {
        // No value is sent: the chunk fails at its first call.
        body.clear();
        (codecs.output.append_seq)(&[], &mut body).map_err(|e| std::io::Error::other(e.0))?;
        failure = Some((0, why));
    }
    if let Some((index, failure)) = failure {
        failure.append(index as u64, &mut body);
    }
    super::write_raw_value(out, batch, &body)
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
            append_seq: |_, _| Err(CodecError("not a serde type".into())),
            append_refs: |_, _| Err(CodecError("not a serde type".into())),
            take_seq: |_| Err(CodecError("not a serde type".into())),
        }
    }
}

/// Runs the registered task `task` here, on this thread, with its encoded
/// `args`, dropping its result (an initializer on a thread). `Err` says
/// why it did not run or how it failed.
pub(crate) fn run_here(task: &str, args: &[u8]) -> Result<(), String> {
    let entry = crate::task::registry()
        .get(task)
        .ok_or_else(|| format!("no process task named `{task}` is registered in this binary"))?;
    let mut answer = Vec::new();
    entry
        .invoke(0, args, &mut answer)
        .map_err(|e| e.to_string())?;
    match answer.get(8..).map(super::parse_from_worker) {
        Some(Ok(super::FromWorker::JobFailure { failure, .. })) => Err(match failure {
            JobFailure::Panic {
                message,
                location: Some(at),
            } => format!("panicked at {at}: {message}"),
            JobFailure::Panic { message, .. } => format!("panicked: {message}"),
            other => format!("{other:?}"),
        }),
        _ => Ok(()),
    }
}
