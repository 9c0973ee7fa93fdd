//! Tasks, jobs and the registry of process tasks.
//!
//! A [`Task`] is what `#[parallel]` makes of a free function: a name, an
//! argument tuple, an output, and a way to call it. A [`Job`] is one call
//! waiting to run (joblib's `delayed(f)(x)`): it owns its arguments, so it
//! can move to another thread, or, for process tasks, be encoded and sent to
//! a worker process that finds the function by name in the registry.
//!
//! The registry is filled by `inventory` before `main`, but it is only
//! *read* after `main` has started (docs/decisions.md), in
//! [`registry`].

use crate::codec::{self, CodecError};
use crate::config::Options;
use crate::ipc::{self, Failure};
use crate::panic::{self, Caught};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::sync::OnceLock;

/// A function made into a parjob task by `#[parallel]`.
///
/// The macro implements this on the same-named struct beside the function;
/// users rarely implement it by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a parjob task",
    label = "parjob runs this call as a job, so it must be a function marked `#[parallel]`",
    note = "mark the function `#[parallel]` (with `backend = \"process\"` to run it in worker processes)"
)]
pub trait Task: 'static {
    /// The stable name: `module_path!()::fn_name`.
    const NAME: &'static str;
    /// The owned argument tuple (references in the signature become owned
    /// values here: `&[T]` becomes `Vec<T>`, `&str` becomes `String`).
    type Args: Send + 'static;
    /// What the function returns.
    type Output: Send + 'static;
    /// Calls the function with owned arguments.
    fn call(args: Self::Args) -> Self::Output;
    /// The options given in the attribute.
    fn options() -> Options;
}

/// Decodes a worker's encoded result.
pub(crate) type Decoder<R> = fn(&mut dyn std::io::Read) -> Result<R, CodecError>;

/// A task that can run in a worker process. `#[parallel(backend = "process")]`
/// implements it with serde codecs for the argument tuple and the output.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a process task",
    label = "this call runs in a worker process, which finds the function by name, so it must be a process task",
    note = "mark the function `#[parallel(backend = \"process\")]`, or leave out `backend = \"process\"` to run the body on threads"
)]
pub trait ProcessTask: Task {
    /// How the arguments and the output cross the process boundary.
    fn codecs() -> TaskCodecs<Self::Args, Self::Output>;
}

/// The encoders and decoders of one process task.
pub struct TaskCodecs<A, R> {
    /// The argument tuple.
    pub args: SerdeFns<A>,
    /// The output.
    pub output: SerdeFns<R>,
}

impl<A, R> TaskCodecs<A, R>
where
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    /// The serde codecs, for a hand-written [`ProcessTask`] impl.
    pub fn serde() -> Self {
        TaskCodecs {
            args: SerdeFns::serde(),
            output: SerdeFns::serde(),
        }
    }
}

impl<T: Serialize + DeserializeOwned> SerdeFns<T> {
    /// Encoding and decoding through [`crate::codec`].
    pub fn serde() -> Self {
        SerdeFns {
            encode: |v| codec::encode(v),
            write: |w, v| ipc::write_value(w, v),
            decode: codec::decode::<T>,
            read: codec::decode_from_reader::<T>,
        }
    }
}

/// Encode and decode functions for one type.
pub struct SerdeFns<T> {
    /// Encodes a value.
    pub encode: fn(&T) -> Result<Vec<u8>, CodecError>,
    /// Writes a value as one worker result frame.
    pub write: fn(&mut dyn std::io::Write, &T) -> std::io::Result<()>,
    /// Decodes a value that must fill the bytes exactly.
    pub decode: fn(&[u8]) -> Result<T, CodecError>,
    /// Decodes a value from a reader (a result frame, straight from the pipe).
    pub read: fn(&mut dyn std::io::Read) -> Result<T, CodecError>,
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

impl<T: Serialize + DeserializeOwned> ViaSerde<T> for &Probe<T> {
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
            write: |w, _| ipc::write_failure(w, &Failure::EncodeResult("not a serde type".into())),
            decode: |_| Err(CodecError("not a serde type".into())),
            read: |_| Err(CodecError("not a serde type".into())),
        }
    }
}

/// One call waiting to run: joblib's `delayed(f)(args)`.
///
/// Built by `f::delayed(args..)` for a `#[parallel]` function, or by
/// [`Job::new`] from any closure.
pub struct Job<R> {
    task: &'static str,
    body: Box<dyn Body<R>>,
    decode: Option<Decoder<R>>,
}

trait Body<R>: Send {
    fn run(self: Box<Self>) -> R;
    fn encode_args(&self) -> Option<Result<Vec<u8>, CodecError>>;
}

struct Closure<F>(F);

impl<R, F: FnOnce() -> R + Send> Body<R> for Closure<F> {
    fn run(self: Box<Self>) -> R {
        (self.0)()
    }
    fn encode_args(&self) -> Option<Result<Vec<u8>, CodecError>> {
        None
    }
}

struct Call<T: Task>(T::Args);

impl<T: ProcessTask> Body<T::Output> for Call<T> {
    fn run(self: Box<Self>) -> T::Output {
        T::call(self.0)
    }
    fn encode_args(&self) -> Option<Result<Vec<u8>, CodecError>> {
        Some((T::codecs().args.encode)(&self.0))
    }
}

impl<R: Send + 'static> Job<R> {
    /// A job from a closure. It runs on the thread and sequential backends;
    /// on the process backend it runs on threads in the parent, because a
    /// closure cannot cross a process boundary.
    ///
    /// ```
    /// use parjob_runtime::{Job, Parallel};
    /// let jobs = (0..4u32).map(|x| Job::new(move || x + 1));
    /// assert_eq!(Parallel::new().n_jobs(2).run(jobs).unwrap(), vec![1, 2, 3, 4]);
    /// ```
    pub fn new(f: impl FnOnce() -> R + Send + 'static) -> Self {
        Job {
            task: "closure",
            body: Box::new(Closure(f)),
            decode: None,
        }
    }

    /// A job calling task `T` in this process only (a thread-backend task).
    pub fn local<T: Task<Output = R>>(args: T::Args) -> Self {
        Job {
            task: T::NAME,
            body: Box::new(Closure(move || T::call(args))),
            decode: None,
        }
    }

    /// A job calling process task `T`: it can run in a worker process,
    /// which finds `T` by name.
    pub fn process<T: ProcessTask<Output = R>>(args: T::Args) -> Self {
        Job {
            task: T::NAME,
            body: Box::new(Call::<T>(args)),
            decode: Some(T::codecs().output.read),
        }
    }

    /// The task's name, or `"closure"`.
    pub fn task(&self) -> &'static str {
        self.task
    }

    /// Whether this job can be sent to a worker process.
    pub fn is_remote(&self) -> bool {
        self.decode.is_some()
    }
}

/// What the scheduler runs: one call with its arguments, which can run
/// here, and, for process tasks, be encoded for a worker.
///
/// [`Job`] is the general form (one allocation per job); `f::map` uses
/// typed calls ([`LocalCall`], [`RemoteCall`]) that allocate nothing.
pub trait Work: Send + 'static {
    /// What the call returns.
    type Output: Send + 'static;
    /// The task's name.
    fn task(&self) -> &'static str;
    /// Runs the call here. A panic propagates; the scheduler catches it
    /// once per batch.
    fn run(self) -> Self::Output;
    /// The encoded arguments, for work that can cross a process boundary.
    fn encode_args(&self) -> Option<Result<Vec<u8>, CodecError>>;
    /// Decodes a worker's encoded result.
    fn decoder(&self) -> Option<Decoder<Self::Output>>;
}

impl<R: Send + 'static> Work for Job<R> {
    type Output = R;
    fn task(&self) -> &'static str {
        self.task
    }
    fn run(self) -> R {
        self.body.run()
    }
    fn encode_args(&self) -> Option<Result<Vec<u8>, CodecError>> {
        self.body.encode_args()
    }
    fn decoder(&self) -> Option<Decoder<R>> {
        self.decode
    }
}

/// A typed call of a thread-backend task: no allocation per call.
pub struct LocalCall<T: Task>(pub T::Args);

impl<T: Task> Work for LocalCall<T> {
    type Output = T::Output;
    fn task(&self) -> &'static str {
        T::NAME
    }
    fn run(self) -> T::Output {
        T::call(self.0)
    }
    fn encode_args(&self) -> Option<Result<Vec<u8>, CodecError>> {
        None
    }
    fn decoder(&self) -> Option<Decoder<T::Output>> {
        None
    }
}

/// A typed call of a process task: no allocation per call until it is encoded.
pub struct RemoteCall<T: ProcessTask>(pub T::Args);

impl<T: ProcessTask> Work for RemoteCall<T> {
    type Output = T::Output;
    fn task(&self) -> &'static str {
        T::NAME
    }
    fn run(self) -> T::Output {
        T::call(self.0)
    }
    fn encode_args(&self) -> Option<Result<Vec<u8>, CodecError>> {
        Some((T::codecs().args.encode)(&self.0))
    }
    fn decoder(&self) -> Option<Decoder<T::Output>> {
        Some(T::codecs().output.read)
    }
}

impl<R> std::fmt::Debug for Job<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("task", &self.task)
            .field("remote", &self.decode.is_some())
            .finish_non_exhaustive()
    }
}

/// A process task's registration, submitted through `inventory` by the
/// `#[parallel(backend = "process")]` expansion.
pub struct TaskEntry {
    name: &'static str,
    invoke: fn(&[u8], &mut dyn std::io::Write) -> std::io::Result<()>,
    signature: fn() -> &'static str,
}

inventory::collect!(TaskEntry);

impl TaskEntry {
    /// The registration of task `T`.
    pub const fn new<T: ProcessTask>() -> Self {
        TaskEntry {
            name: T::NAME,
            invoke: invoke::<T>,
            signature: std::any::type_name::<fn(T::Args) -> T::Output>,
        }
    }

    /// The registered name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Decodes the arguments, calls the task catching a panic, and writes
    /// the result (or the failure) to `out` as one frame.
    pub fn invoke(&self, args: &[u8], out: &mut dyn std::io::Write) -> std::io::Result<()> {
        (self.invoke)(args, out)
    }
}

fn invoke<T: ProcessTask>(args: &[u8], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let codecs = T::codecs();
    let args: T::Args = match (codecs.args.decode)(args) {
        Ok(a) => a,
        Err(e) => return ipc::write_failure(out, &Failure::DecodeArgs(e.0)),
    };
    match panic::catch(move || T::call(args)) {
        Ok(value) => (codecs.output.write)(out, &value),
        Err(Caught { message, location }) => {
            ipc::write_failure(out, &Failure::Panic { message, location })
        }
    }
}

/// The process tasks of this binary, by name. Read only after `main` starts.
pub fn registry() -> &'static HashMap<&'static str, &'static TaskEntry> {
    static REGISTRY: OnceLock<HashMap<&'static str, &'static TaskEntry>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        inventory::iter::<TaskEntry>
            .into_iter()
            .map(|e| (e.name, e))
            .collect()
    })
}

/// A fingerprint of the registry: names and signatures of every process
/// task, order-independent. Parent and worker must agree on it.
pub fn registry_fingerprint() -> u64 {
    let mut items: Vec<(&str, &str)> = registry()
        .values()
        .map(|e| (e.name, (e.signature)()))
        .collect();
    items.sort_unstable();
    // FNV-1a: stable across runs and builds, unlike std's SipHash keys.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, sig) in items {
        for b in name.bytes().chain([0]).chain(sig.bytes()).chain([0]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// A type that can be an argument of a process task: it is encoded in the
/// parent and decoded in the worker.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an argument of a process task: it is not a serde type",
    label = "this argument must be sent to a worker process, so it must implement `serde::Serialize` and `serde::Deserialize`",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to the type, or use backend = \"thread\", which needs no serde"
)]
pub trait ProcessArg: Serialize + DeserializeOwned {}
impl<T: Serialize + DeserializeOwned> ProcessArg for T {}

/// A type that can be the result of a process task: it is encoded in the
/// worker and decoded in the parent.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the result of a process task: it is not a serde type",
    label = "this result comes back from a worker process, so it must implement `serde::Serialize` and `serde::Deserialize`",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to the type, or use backend = \"thread\", which needs no serde"
)]
pub trait ProcessOutput: Serialize + DeserializeOwned {}
impl<T: Serialize + DeserializeOwned> ProcessOutput for T {}

/// Compile-time check emitted by `#[parallel(backend = "process")]`.
#[doc(hidden)]
pub fn assert_process_arg<T: ProcessArg>() {}

/// Compile-time check emitted by `#[parallel(backend = "process")]`.
#[doc(hidden)]
pub fn assert_process_output<T: ProcessOutput>() {}

/// What a job stores for a `&T` parameter of a task: `T` itself for a sized
/// `T` (the caller hands the job its own value, so no `Clone` is needed),
/// and the owned form of the unsized path and string types.
pub trait ArgOwned {
    /// The owned type; `&Owned` derefs to `&Self`.
    type Owned;
}

impl<T> ArgOwned for T {
    type Owned = T;
}

impl ArgOwned for std::path::Path {
    type Owned = std::path::PathBuf;
}

impl ArgOwned for std::ffi::OsStr {
    type Owned = std::ffi::OsString;
}

impl ArgOwned for std::ffi::CStr {
    type Owned = std::ffi::CString;
}
