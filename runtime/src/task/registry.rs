//! The registry of process tasks: what a worker process looks a task up
//! in, by name.
//!
//! `#[parallel(backend = "process")]` submits one [`TaskEntry`] per task
//! through `inventory`. The registry is filled before `main`, but it is
//! only *read* after `main` has started (docs/decisions.md).

use std::collections::HashMap;
use std::sync::OnceLock;

/// Runs one call of a task in a worker: decodes the arguments, calls the
/// task catching a panic, and writes the result (or the failure) as one
/// frame. Made by `TaskEntry::new` (in `wire::task_codecs`).
/// Its `u64` is the batch the call belongs to, which every answer names.
pub(crate) type Invoke = fn(u64, &[u8], &mut dyn std::io::Write) -> std::io::Result<()>;

/// As [`Invoke`], for a chunk: the last argument is told the index of each
/// call (in the chunk) before it runs.
pub(crate) type InvokeChunk =
    fn(u64, &[u8], &mut dyn std::io::Write, &dyn Fn(usize)) -> std::io::Result<()>;

/// A process task's registration, submitted through `inventory` by the
/// `#[parallel(backend = "process")]` expansion.
pub struct TaskEntry {
    pub(crate) name: &'static str,
    pub(crate) invoke: Invoke,
    /// Runs a pool's chunk: many calls' arguments in one buffer, answered
    /// by one value frame (`chunk.rs`).
    pub(crate) invoke_chunk: InvokeChunk,
    pub(crate) signature: fn() -> &'static str,
}

inventory::collect!(TaskEntry);

impl TaskEntry {
    /// Decodes the arguments, calls the task catching a panic, and writes
    /// the result (or the failure) to `out` as one frame of batch `batch`.
    pub(crate) fn invoke(
        &self,
        batch: u64,
        args: &[u8],
        out: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        (self.invoke)(batch, args, out)
    }

    /// Runs a chunk of calls and writes their values (and the failure that
    /// stopped it) as one frame of batch `batch`.
    pub(crate) fn invoke_chunk(
        &self,
        batch: u64,
        args: &[u8],
        out: &mut dyn std::io::Write,
        on_call: &dyn Fn(usize),
    ) -> std::io::Result<()> {
        (self.invoke_chunk)(batch, args, out, on_call)
    }
}

/// The process tasks of this binary, by name. Read only after `main` starts.
pub(crate) fn registry() -> &'static HashMap<&'static str, &'static TaskEntry> {
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
pub(crate) fn registry_fingerprint() -> u64 {
    let mut items: Vec<(&str, &str)> = registry()
        .values()
        .map(|e| (e.name, (e.signature)()))
        .collect();
    items.sort_unstable();
    crate::hash::fnv1a(
        items
            .into_iter()
            .flat_map(|(name, sig)| name.bytes().chain([0]).chain(sig.bytes()).chain([0])),
    )
}
