//! A batch made ready for a worker process or an MPI rank: its arguments
//! encoded, or the reason it cannot cross, as the batch's failure.

use crate::backend::{Batch, Finished};
use crate::error::{Error, Result};
use crate::options::BackendSource;
use crate::shm::{self, Collected};
use crate::task::{AnyOutput, Decoder, Work};
use crate::wire::{self, Bytes, ToWorker};

static PACKED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many batches this process has sent packed as one chunk each (a
/// test hook: a batch of tiny calls must go packed, and one under
/// `timeout` must not).
pub fn packed_batches() -> u64 {
    PACKED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A batch encoded for a worker process or an MPI rank.
pub(crate) struct Encoded<R> {
    pub(crate) first: usize,
    pub(crate) jobs: usize,
    /// Calls it makes (a pool's chunk is one job of many calls).
    pub(crate) items: usize,
    pub(crate) task: &'static str,
    pub(crate) chunked: bool,
    pub(crate) decode: Decoder<R>,
    /// Packed as one chunk ([`Work::pack`]): the decoder of its one answer.
    pub(crate) packed: Option<Decoder<AnyOutput>>,
    args: Vec<Bytes>,
    /// The segments its arguments reference.
    pub(crate) shared: Collected,
}

impl<R> Encoded<R> {
    /// The batch's `Run` frame as batch `id`, or the batch's failure when
    /// it cannot be encoded; `timed` asks for its jobs' times (`trace`).
    pub(crate) fn run_frame(
        &mut self,
        id: u64,
        max_nbytes: Option<u64>,
        timed: bool,
    ) -> Result<Vec<u8>> {
        let msg = ToWorker::Run {
            id,
            task: self.task.to_string(),
            seq: self.first as u64,
            args: std::mem::take(&mut self.args),
            max_nbytes,
            chunked: self.chunked,
            packed: self.packed.is_some(),
            timed,
        };
        wire::encode_frame(&msg).map_err(|e| encode_error(self.task, self.first, e.0))
    }

    /// The batch, failed with `error` before it ran.
    pub(crate) fn failed(&self, error: Error) -> Finished<R> {
        Finished::failed(self.first, self.jobs, error)
    }
}

/// A batch made ready for a worker, or why it cannot go.
pub(crate) enum Outgoing<R> {
    /// No jobs.
    Empty,
    /// The batch's failure: work that cannot cross, or arguments that do
    /// not encode.
    Failed(Finished<R>),
    Ready(Encoded<R>),
}

/// Encodes a batch's arguments for a worker, packed as one chunk when
/// `pack` allows it and the work can be ([`Work::pack`]). Work that cannot
/// cross a process boundary never runs silently in the parent: the batch
/// fails with an error that says how to fix it.
pub(crate) fn encode_batch<W: Work>(
    batch: Batch<W>,
    backend_from: BackendSource,
    pack: bool,
) -> Outgoing<W::Output> {
    let first = batch.first;
    let jobs = batch.items.len();
    let Some(head) = batch.items.first() else {
        return Outgoing::Empty;
    };
    let task = head.task();
    let chunked = head.chunked();
    let items = batch.items.iter().map(Work::items).sum();
    let Some(decode) = head.decoder() else {
        let e = Error::NotAProcessTask {
            task: task.to_string(),
            index: first,
            backend_from: backend_from.to_string(),
        };
        return Outgoing::Failed(Finished::failed(first, jobs, e));
    };
    if pack && jobs > 1 {
        let (packed, shared) = shm::collecting(|| W::pack(&batch.items));
        // A batch that does not pack is encoded job by job below, which
        // names the job whose arguments fail.
        if let Some(Ok((args, packed))) = packed {
            PACKED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Outgoing::Ready(Encoded {
                first,
                jobs,
                items,
                task,
                chunked: true,
                decode,
                packed: Some(packed),
                args: vec![Bytes(args)],
                shared,
            });
        }
    }
    let (encoded, shared) = shm::collecting(|| encode_all(&batch.items));
    match encoded {
        Ok(args) => Outgoing::Ready(Encoded {
            first,
            jobs,
            items,
            task,
            chunked,
            decode,
            packed: None,
            args,
            shared,
        }),
        Err((k, cause)) => Outgoing::Failed(Finished::failed(
            first,
            jobs,
            encode_error(task, first + k, cause),
        )),
    }
}

/// Each job's arguments encoded for a worker, or the position of the
/// first that cannot be, with why.
fn encode_all<W: Work>(items: &[W]) -> std::result::Result<Vec<Bytes>, (usize, String)> {
    let mut args = Vec::with_capacity(items.len());
    for (k, work) in items.iter().enumerate() {
        match work.encode_args() {
            Some(Ok(bytes)) => args.push(Bytes(bytes)),
            Some(Err(e)) => return Err((k, e.0)),
            None => return Err((k, "this job cannot be sent to a worker process".into())),
        }
    }
    Ok(args)
}

fn encode_error(task: &str, index: usize, cause: String) -> Error {
    Error::Codec {
        task: task.into(),
        index,
        action: "encode the arguments",
        cause,
    }
}

/// The `Run` frame of `count` jobs of the batch framed in `whole`, from
/// its job `from` on: what a retry of one job, or the rest of a batch
/// after it, sends. Decoded from the frame the session kept, so nothing
/// is kept twice while nothing fails.
pub(super) fn sub_frame(whole: &[u8], from: usize, count: usize) -> Result<Vec<u8>> {
    let broken = |why: String| Error::Pool(format!("resending part of a batch: {why}"));
    let mut bytes = whole;
    let payload = wire::read_frame(&mut bytes)
        .map_err(|e| broken(e.to_string()))?
        .ok_or_else(|| broken("the kept frame is empty".into()))?;
    match wire::decode_message::<ToWorker>(&payload).map_err(|e| broken(e.to_string()))? {
        ToWorker::Run {
            id,
            task,
            seq,
            mut args,
            max_nbytes,
            chunked,
            packed,
            timed,
        } if from + count <= args.len() => {
            let args: Vec<Bytes> = args.drain(from..from + count).collect();
            let msg = ToWorker::Run {
                id,
                task,
                seq: seq + from as u64,
                args,
                max_nbytes,
                chunked,
                packed,
                timed,
            };
            wire::encode_frame(&msg).map_err(|e| broken(e.0))
        }
        _ => Err(broken("the kept frame is not that batch's".into())),
    }
}
