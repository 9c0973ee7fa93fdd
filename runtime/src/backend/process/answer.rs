//! A worker's answers, as the session reads them: each frame names the
//! batch it answers, and is a value, a job's failure, the batch's end, or
//! a sign that the stream is out of step.

use super::reader::{DecodeError, Decoded};
use super::session::ProcessSession;
use crate::backend::in_flight::Problem;
use crate::backend::Finished;
use crate::error::Error;
use crate::task::chunk::ChunkOut;
use crate::task::Work;
use crate::wire::{self, FromWorker};
use std::time::Duration;

/// What one frame from a worker means for its batch.
pub(super) enum Answer<R> {
    Value(R),
    /// A packed batch's one answer: every job's value, or those before
    /// the failure that stopped it (its index counted in the batch).
    Values(ChunkOut<R>),
    Fail(Error),
    Done(Duration),
    /// Under `trace`: when the batch's jobs ran, from job `seq`.
    Times(u64, u64, Vec<u64>),
    Desync(Error),
}

impl<W: Work> ProcessSession<W> {
    /// Takes one frame from a worker; returns the batch when it is complete.
    ///
    /// Every answer names its batch. A worker answers its batches in the
    /// order they were sent, so the batch named must be the worker's
    /// oldest; any other is a desynchronised stream, which ends the batch.
    pub(super) fn answer(
        &mut self,
        worker: u64,
        frame: Result<(u64, Decoded), Vec<u8>>,
    ) -> Option<Finished<W::Output>> {
        let mut pos = self.pool.position(worker)?;
        let id = *self.pool.workers[pos].queue.front()?;
        if self.speculation.is_copied(id) {
            // The first answer settles a copied job: the other worker stops.
            self.settle_copy(id, worker);
            pos = self.pool.position(worker)?;
        }
        let batch = self.batches.get_mut(&id)?;
        // A worker counts the jobs of the frame it was sent: a retried
        // job, or the rest of a batch after one, starts past the first.
        let answered = batch.answered() - batch.extra.base;
        // A packed batch is one job of its worker's, whose one answer
        // holds every value.
        let answered = match batch.extra.packed {
            Some(_) => usize::from(answered > 0),
            None => answered,
        };
        let (named, step) = classify::<W::Output>(frame, id, answered, |p| batch.error(p));
        let step = match named {
            Some(named) if named != id => Answer::Desync(batch.error(Problem::Desync(format!(
                "an answer for batch {named} while batch {id} is the oldest"
            )))),
            _ => step,
        };
        if let (Answer::Fail(e), Some(t)) = (&step, self.tracing.as_mut()) {
            t.failed(id, batch.next_index(), e);
        }
        match step {
            Answer::Value(value) => batch.value(value),
            Answer::Values(ChunkOut { values, failure }) => {
                let first = batch.first + batch.extra.base;
                values.into_iter().for_each(|v| batch.value(v));
                if let Some(e) = failure {
                    let e = e.reindex(|call| first + call);
                    if let Some(t) = self.tracing.as_mut() {
                        t.failed(id, batch.next_index(), &e);
                    }
                    batch.job_failed(e);
                }
            }
            Answer::Times(seq, start, ends) => {
                self.trace_times(worker, id, seq, start, ends);
                return None;
            }
            // Under "continue" the failed job is its own piece, at once.
            Answer::Fail(e) if self.keep_going => {
                self.here.extend(batch.failed_piece(e));
            }
            Answer::Fail(e) => batch.job_failed(e),
            Answer::Done(elapsed) => return self.done_or_retry(pos, id, elapsed),
            Answer::Desync(e) => {
                batch.fail(e);
                return Some(self.finish(pos, id, Duration::ZERO));
            }
        }
        if batch.overran() {
            batch.fail(batch.error(Problem::Desync("more answers than jobs".into())));
            return Some(self.finish(pos, id, Duration::ZERO));
        }
        None
    }
}

/// What one frame means for batch `id`, whose `answered` jobs have
/// answered, and the batch the frame names (`None` when it names none).
/// `error` makes the error for the job the frame answers.
fn classify<R: 'static>(
    frame: Result<(u64, Decoded), Vec<u8>>,
    id: u64,
    answered: usize,
    error: impl Fn(Problem) -> Error,
) -> (Option<u64>, Answer<R>) {
    let desync = |cause: String| Answer::Desync(error(Problem::Desync(cause)));
    match frame {
        Ok((named, Ok(boxed))) => match boxed.downcast::<R>() {
            Ok(value) => (Some(named), Answer::Value(*value)),
            Err(boxed) if boxed.is::<ChunkOut<R>>() => {
                let chunk = boxed.downcast::<ChunkOut<R>>().expect("checked by is");
                (Some(named), Answer::Values(*chunk))
            }
            Err(_) => (
                Some(named),
                Answer::Fail(error(Problem::Decode("a result of another type".into()))),
            ),
        },
        Ok((named, Err(DecodeError::Codec(e)))) => {
            (Some(named), Answer::Fail(error(Problem::Decode(e.0))))
        }
        Ok((named, Err(DecodeError::Panic(caught)))) => {
            (Some(named), Answer::Fail(error(Problem::Panic(caught))))
        }
        Err(payload) => match wire::parse_from_worker(&payload) {
            Ok(FromWorker::JobFailure { batch, failure }) => {
                (Some(batch), Answer::Fail(error(Problem::Worker(failure))))
            }
            Ok(FromWorker::Times {
                batch,
                seq,
                start_ns,
                ends,
            }) => (Some(batch), Answer::Times(seq, start_ns, ends)),
            Ok(FromWorker::Done {
                id: done,
                count,
                elapsed_ns,
            }) if count as usize == answered => {
                (Some(done), Answer::Done(Duration::from_nanos(elapsed_ns)))
            }
            Ok(FromWorker::Value { body, .. }) => (
                None,
                desync(format!(
                    "a {}-byte result outside its batch's decoder",
                    body.len()
                )),
            ),
            Ok(other) => (None, desync(format!("unexpected {other:?} in batch {id}"))),
            Err(e) => (None, desync(e.to_string())),
        },
    }
}
