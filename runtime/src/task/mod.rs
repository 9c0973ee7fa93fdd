//! Tasks, jobs and the registry of process tasks.
//!
//! A [`Task`] is what `#[parallel]` makes of a free function: a name, an
//! argument tuple, an output, and a way to call it. A [`Job`] is one call
//! waiting to run (joblib's `delayed(f)(x)`): it owns its arguments, so it
//! can move to another thread, or, for process tasks, be encoded and sent to
//! a worker process that finds the function by name in the registry.
//!
//! This layer is plain types: how a task's values are encoded is a table
//! of function pointers ([`TaskCodecs`]) that the wire layer fills, and the
//! registry ([`registry()`]) maps names to entries the wire layer builds.

mod args;
mod body;
pub(crate) mod chunk;
mod registry;
mod spent;

pub use args::{ArgOwned, CallItem, FromItem, IntoOwnedArg, IntoSliceArg};

pub use registry::TaskEntry;
pub(crate) use registry::{registry, registry_fingerprint};

use crate::error::CodecError;
use crate::options::Options;
use body::{Body, BodySlot};
use serde::{de::DeserializeOwned, Serialize};
pub(crate) use spent::Spent;

/// A function made into a parjob task by `#[parallel]`.
///
/// The macro implements this on the same-named struct beside the function;
/// users rarely implement it by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a parjob task",
    label = "parjob runs this call as a job, so it must be a function marked `#[parallel]`",
    note = "mark the function `#[parallel]` (with `backend = \"process\"` to run it in worker processes)"
)]
pub trait Task: 'static + Crossing<Self::Args, Self::Output> {
    /// The stable name: `module_path!()::fn_name`.
    const NAME: &'static str;
    /// The owned argument tuple (references in the signature become owned
    /// values here: `&[T]` becomes a `SliceArg<T>`, a copy or a view of
    /// shared memory; `&str` becomes `String`).
    type Args: Send + 'static;
    /// What the function returns.
    type Output: Send + 'static;
    /// Calls the function with owned arguments.
    fn call(args: Self::Args) -> Self::Output;
    /// The options given in the attribute.
    fn options() -> Options;
}

/// How a task's arguments `A` and output `R` cross a process boundary:
/// the plumbing half of [`Task`], which `#[parallel]` implements beside
/// it. Not public API: it is reachable only through `__private`, so its
/// types never show in `Task`'s contract.
pub trait Crossing<A, R> {
    /// The codecs of a task that can run in a worker process
    /// (`backend = "process"`); `None` for a task that runs only in this
    /// process.
    fn codecs() -> Option<TaskCodecs<A, R>> {
        None
    }

    /// How to copy a call's arguments, when they are `Clone`: what lets
    /// `speculate` give a late thread job a copy. `#[parallel]` fills it
    /// in through [`CopyProbe`].
    fn copier() -> Option<fn(&A) -> A> {
        None
    }
}

/// Picks `Clone::clone` for `T` when `T: Clone`, and nothing otherwise, by
/// autoref: `(&&CopyProbe::<T>::NEW).copier()`.
#[doc(hidden)]
pub struct CopyProbe<T>(std::marker::PhantomData<T>);

impl<T> CopyProbe<T> {
    /// The probe value.
    pub const NEW: Self = CopyProbe(std::marker::PhantomData);
}

/// The `Clone` arm of [`CopyProbe`].
#[doc(hidden)]
pub trait ViaClone<T> {
    /// `Clone::clone`.
    fn copier(&self) -> Option<fn(&T) -> T>;
}

impl<T: Clone> ViaClone<T> for &CopyProbe<T> {
    fn copier(&self) -> Option<fn(&T) -> T> {
        Some(T::clone)
    }
}

/// The fallback arm of [`CopyProbe`]: arguments that cannot be copied.
#[doc(hidden)]
pub trait ViaNoClone<T> {
    /// Nothing.
    fn copier(&self) -> Option<fn(&T) -> T>;
}

impl<T> ViaNoClone<T> for CopyProbe<T> {
    fn copier(&self) -> Option<fn(&T) -> T> {
        None
    }
}

/// Decodes a worker's encoded result.
pub(crate) type Decoder<R> = fn(&mut dyn std::io::Read) -> Result<R, CodecError>;

/// Calls packed as one chunk for a worker process ([`Work::pack`]): their
/// arguments as one encoded sequence, and the decoder of the chunk's
/// answer, a boxed `ChunkOut` of their outputs.
pub(crate) type Packed = (Vec<u8>, Decoder<AnyOutput>);

/// A task that can run in a worker process: its [`Crossing::codecs`] are
/// `Some`. `#[parallel(backend = "process")]` implements both, with serde
/// codecs for the argument tuple and the output; this marker lets a
/// compile-time check ask for a process task.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a process task",
    label = "this call runs in a worker process, which finds the function by name, so it must be a process task",
    note = "mark the function `#[parallel(backend = \"process\")]`, or leave out `backend = \"process\"` to run the body on threads"
)]
pub trait ProcessTask: Task {}

/// The encoders and decoders of one process task.
pub struct TaskCodecs<A, R> {
    /// The argument tuple.
    pub args: SerdeFns<A>,
    /// The output.
    pub output: SerdeFns<R>,
}

/// Encode and decode functions for one type.
pub struct SerdeFns<T> {
    /// Encodes a value.
    pub encode: fn(&T) -> Result<Vec<u8>, CodecError>,
    /// Writes a value as one worker result frame of the batch given.
    pub write: fn(&mut dyn std::io::Write, u64, &T) -> std::io::Result<()>,
    /// Decodes a value that must fill the bytes exactly.
    pub decode: fn(&[u8]) -> Result<T, CodecError>,
    /// Decodes a value from a reader (a result frame, straight from the pipe).
    pub read: fn(&mut dyn std::io::Read) -> Result<T, CodecError>,
    /// Appends the encoding of a sequence of values to a buffer (a pool's
    /// chunk: every call's arguments, or every value, in one pass).
    pub append_seq: fn(&[T], &mut Vec<u8>) -> Result<(), CodecError>,
    /// [`SerdeFns::append_seq`] of values kept apart (the arguments of
    /// `delayed` jobs): the same bytes.
    pub append_refs: fn(&[&T], &mut Vec<u8>) -> Result<(), CodecError>,
    /// Decodes a sequence of values from the front of a buffer, moving
    /// past it.
    pub take_seq: fn(&mut &[u8]) -> Result<Vec<T>, CodecError>,
}

/// One call waiting to run: joblib's `delayed(f)(args)`.
///
/// Built by `f::delayed(args..)` for a `#[parallel]` function, or by
/// [`Job::new`] from any closure.
pub struct Job<R> {
    task: &'static str,
    body: BodySlot<R>,
    decode: Option<Decoder<R>>,
    /// Makes one chunk job of many jobs of this task (`chunk.rs`).
    chunker: Option<Chunker<R>>,
    /// Packs jobs of this task for a worker process (`Work::pack`).
    packer: Option<Packer<R>>,
    /// Whether this is a chunk: its arguments are many calls' (a worker
    /// answers it with one frame).
    chunked: bool,
    /// How many calls it makes.
    items: usize,
    declared: fn() -> Declared,
}

/// Makes one chunk job of many jobs of one task.
type Chunker<R> = fn(Vec<Job<R>>) -> Job<AnyOutput>;

/// Packs jobs of one task (`Work::pack`).
type Packer<R> = fn(&[Job<R>]) -> Option<Result<Packed, CodecError>>;

/// Jobs that all call task `T`, packed as one chunk; `None` when one of
/// them is not such a call.
fn pack_calls<T: Task>(jobs: &[Job<T::Output>]) -> Option<Result<Packed, CodecError>> {
    let codecs = T::codecs()?;
    let mut args = Vec::with_capacity(jobs.len());
    for job in jobs {
        args.push(&job.body.as_any().downcast_ref::<Call<T>>()?.0);
    }
    let mut out = Vec::new();
    let decode = chunk::read_chunk::<T> as Decoder<AnyOutput>;
    Some((codecs.args.append_refs)(&args, &mut out).map(|()| (out, decode)))
}

/// A result with its type erased, as a pool that runs jobs of many result
/// types carries them.
pub(crate) type AnyOutput = Box<dyn std::any::Any + Send>;

/// A task's own options, as a run sees them at the task level of the
/// precedence rule, and whether its calls can cross a process boundary.
pub(crate) fn declared<T: Task>() -> Declared {
    Declared {
        options: T::options(),
        crosses: T::codecs().is_some(),
    }
}

/// What a closure declares: no options, and it cannot cross.
fn closure_declared() -> Declared {
    Declared {
        options: Options::new(),
        crosses: false,
    }
}

/// The task level of a run: the options of its (first) task, and whether
/// its calls can cross a process boundary. Work that cannot cross is never
/// sent to processes by joblib's soft `prefer` hint.
#[derive(Debug, Clone, Copy, Default)]
pub struct Declared {
    /// The task's attribute.
    pub options: Options,
    /// Whether it is a process task.
    pub crosses: bool,
}

/// A closure as a job's body.
struct Closure<F>(F);

impl<R, F: FnOnce() -> R + Send + 'static> Body<R> for Closure<F> {
    fn invoke(self) -> R {
        (self.0)()
    }
    fn encode_args(&self) -> Option<Result<Vec<u8>, CodecError>> {
        None
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl<T: Task> Body<T::Output> for Call<T> {
    fn invoke(self) -> T::Output {
        T::call(self.0)
    }
    fn encode_args(&self) -> Option<Result<Vec<u8>, CodecError>> {
        Work::encode_args(self)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl<R: Send + 'static> Job<R> {
    /// A job from a closure. It runs on the thread and sequential backends.
    /// A closure cannot cross a process boundary: under a process backend
    /// asked for explicitly or by a scoped `config()`, the run fails with
    /// [`Error::NotAProcessTask`](crate::Error::NotAProcessTask), unless
    /// it also says `.require_sharedmem()`, which runs it on threads.
    ///
    /// ```
    /// use parjob_runtime::{Job, Parallel};
    /// let jobs = (0..4u32).map(|x| Job::new(move || x + 1));
    /// assert_eq!(Parallel::new().n_jobs(2).run(jobs).unwrap(), vec![1, 2, 3, 4]);
    /// ```
    pub fn new(f: impl FnOnce() -> R + Send + 'static) -> Self {
        Job {
            task: "closure",
            body: BodySlot::new(Closure(f)),
            decode: None,
            chunker: None,
            packer: None,
            chunked: false,
            items: 1,
            declared: closure_declared,
        }
    }

    /// A job calling task `T`: `f::delayed(..)`. A process task's job can
    /// run in a worker process, which finds `T` by name.
    pub fn call<T: Task<Output = R>>(args: T::Args) -> Self {
        Job {
            task: T::NAME,
            body: BodySlot::new(Call::<T>(args)),
            decode: T::codecs().map(|c| c.output.read),
            chunker: Some(chunk::chunker_of::<T>()),
            packer: Some(pack_calls::<T>),
            chunked: false,
            items: 1,
            declared: declared::<T>,
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
/// typed calls ([`Call`]) that allocate nothing.
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
    /// The task's own options (the task level of the precedence rule).
    fn declared(&self) -> Declared;
    /// Whether it is a pool's chunk, whose arguments are many calls'.
    fn chunked(&self) -> bool {
        false
    }
    /// How many calls it makes.
    fn items(&self) -> usize {
        1
    }
    /// [`Work::run`] on a pool thread, leaving what the work allocated to
    /// `spent`, which goes back to be freed by the thread that made it.
    #[doc(hidden)]
    fn run_sparing(self, spent: &mut Spent) -> Self::Output
    where
        Self: Sized,
    {
        let _ = spent;
        self.run()
    }
    /// `items` (consecutive calls of one task) packed as one chunk for a
    /// worker process, which answers with all their values in one frame:
    /// the batch of a tiny task then costs its share of two encodings, and
    /// nothing per call besides. `None` for work that cannot be packed.
    #[doc(hidden)]
    fn pack(items: &[Self]) -> Option<Result<Packed, CodecError>>
    where
        Self: Sized,
    {
        let _ = items;
        None
    }
    /// A second call with the same arguments, when they can be copied
    /// (`speculate` on threads).
    fn duplicate(&self) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
}

impl<R: Send + 'static> Work for Job<R> {
    type Output = R;
    fn task(&self) -> &'static str {
        self.task
    }
    fn run(self) -> R {
        self.body.run()
    }
    fn run_sparing(self, spent: &mut Spent) -> R {
        self.body.run_sparing(spent)
    }
    fn encode_args(&self) -> Option<Result<Vec<u8>, CodecError>> {
        self.body.encode_args()
    }
    fn decoder(&self) -> Option<Decoder<R>> {
        self.decode
    }
    fn declared(&self) -> Declared {
        (self.declared)()
    }
    fn chunked(&self) -> bool {
        self.chunked
    }
    fn items(&self) -> usize {
        self.items
    }
    fn pack(jobs: &[Self]) -> Option<Result<Packed, CodecError>> {
        (jobs.first()?.packer?)(jobs)
    }
}

/// A typed call of a task: no allocation per call. It can cross a
/// process boundary when the task has codecs ([`Crossing::codecs`]).
#[repr(transparent)]
pub struct Call<T: Task>(pub T::Args);

impl<T: Task> Work for Call<T> {
    type Output = T::Output;
    fn task(&self) -> &'static str {
        T::NAME
    }
    fn run(self) -> T::Output {
        T::call(self.0)
    }
    fn encode_args(&self) -> Option<Result<Vec<u8>, CodecError>> {
        T::codecs().map(|c| (c.args.encode)(&self.0))
    }
    fn decoder(&self) -> Option<Decoder<T::Output>> {
        T::codecs().map(|c| c.output.read)
    }
    fn declared(&self) -> Declared {
        declared::<T>()
    }
    fn duplicate(&self) -> Option<Self> {
        T::copier().map(|copy| Call(copy(&self.0)))
    }
    fn pack(calls: &[Self]) -> Option<Result<Packed, CodecError>> {
        let codecs = T::codecs()?;
        // SAFETY: `Call<T>` is `repr(transparent)` over `T::Args`, so a
        // slice of calls has the layout of a slice of argument tuples, and
        // this borrows it for as long as `calls` is borrowed.
        let args =
            unsafe { std::slice::from_raw_parts(calls.as_ptr().cast::<T::Args>(), calls.len()) };
        let mut out = Vec::new();
        let decode = chunk::read_chunk::<T> as Decoder<AnyOutput>;
        Some((codecs.args.append_seq)(args, &mut out).map(|()| (out, decode)))
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

/// A type that can be an argument of a process task: it is encoded in the
/// parent and decoded in the worker.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an argument of a process task: it is not a serde type",
    label = "this argument must be sent to a worker process, so it must implement `serde::Serialize` and `serde::Deserialize`",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to the type, or use backend = \"thread\", which needs no serde"
)]
pub trait ProcessArg: Serialize + DeserializeOwned {}
// `do_not_recommend`: a non-serde type gets this trait's one message,
// not one error each for `Serialize` and `Deserialize`.
#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> ProcessArg for T {}

/// A type that can be the result of a process task: it is encoded in the
/// worker and decoded in the parent.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the result of a process task: it is not a serde type",
    label = "this result comes back from a worker process, so it must implement `serde::Serialize` and `serde::Deserialize`",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to the type, or use backend = \"thread\", which needs no serde"
)]
pub trait ProcessOutput: Serialize + DeserializeOwned {}
#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> ProcessOutput for T {}

/// Compile-time check emitted by `#[parallel(backend = "process")]`.
#[doc(hidden)]
pub fn assert_process_arg<T: ProcessArg>() {}

/// Compile-time check emitted by `#[parallel(backend = "process")]`.
#[doc(hidden)]
pub fn assert_process_output<T: ProcessOutput>() {}

impl crate::options::Initializer {
    /// The initializer that runs the process task `T` with `args`:
    /// `Parallel::new().initializer(Initializer::of::<setup>((queue,)))`
    /// is joblib's `Parallel(initializer=setup, initargs=(queue,))`.
    pub fn of<T: ProcessTask>(args: T::Args) -> Self {
        let args = match T::codecs() {
            Some(codecs) => (codecs.args.encode)(&args).map_err(|e| e.0),
            None => Err(format!("`{}` is not a process task", T::NAME)),
        };
        crate::options::Initializer::intern(crate::options::InitializerSpec {
            task: T::NAME,
            args,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NotClone;

    #[test]
    #[allow(clippy::needless_borrow)] // the autoref is the point
    fn the_copy_probe_finds_clone_and_only_clone() {
        #[allow(unused_imports)]
        use super::{ViaClone as _, ViaNoClone as _};
        let copy = (&&CopyProbe::<(u64, String)>::NEW).copier().expect("Clone");
        assert_eq!(copy(&(3, "x".into())), (3, "x".to_string()));
        assert!((&&CopyProbe::<(NotClone,)>::NEW).copier().is_none());
        // A closure's job has nothing to copy.
        assert!(Job::new(|| 1).duplicate().is_none());
    }
}
