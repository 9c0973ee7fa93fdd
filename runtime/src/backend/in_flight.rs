//! One batch's bookkeeping while a worker process or an MPI rank runs it.
//!
//! Both remote sessions keep their batches in an [`InFlight`], as
//! crossbeam writes the logic its channel flavours share once: which jobs
//! have answered, the values of those before any failure, the first
//! failure, the error each kind of bad answer ([`Problem`]) makes for the
//! job it answers, and the rule that a batch is never lost silently (one
//! that ends with fewer values than jobs and no failure fails). What each
//! session keeps besides (the frame to resend, the rank it went to) is
//! its `extra`.

use super::{panic_error, Finished};
use crate::error::{CodecError, Error};
use crate::task::Decoder;
use crate::wire::JobFailure;
use std::time::Duration;

/// What went wrong with the job an answer is for.
pub(crate) enum Problem {
    /// The result did not decode in the parent.
    Decode(String),
    /// The result's `Deserialize` panicked in the parent.
    Panic(crate::panic::Caught),
    /// The worker reported the job's failure.
    Worker(JobFailure),
    /// The answers are out of step with the batches sent.
    Desync(String),
}

impl From<CodecError> for Problem {
    fn from(e: CodecError) -> Self {
        Problem::Decode(e.0)
    }
}

/// A batch sent to a worker and not yet ended.
pub(crate) struct InFlight<R, E> {
    /// The input index of its first job.
    pub(crate) first: usize,
    /// How many jobs it holds.
    pub(crate) len: usize,
    pub(crate) task: &'static str,
    pub(crate) decode: Decoder<R>,
    /// How many jobs have answered, with a value or a failure.
    answered: usize,
    /// Values of the jobs answered before any failure, in order.
    values: Vec<R>,
    /// The first failure.
    failure: Option<Error>,
    /// Under `on_error = "continue"`: a failed job is reported at once, as
    /// a piece of its own, and the batch goes on. `values` then hold the
    /// jobs from `piece_first` on.
    keep_going: bool,
    piece_first: usize,
    /// What the session keeps of the batch besides.
    pub(crate) extra: E,
}

impl<R, E> InFlight<R, E> {
    pub(crate) fn new(
        first: usize,
        len: usize,
        task: &'static str,
        decode: Decoder<R>,
        extra: E,
    ) -> Self {
        InFlight {
            first,
            len,
            task,
            decode,
            answered: 0,
            values: Vec::with_capacity(len),
            failure: None,
            keep_going: false,
            piece_first: first,
            extra,
        }
    }

    /// The batch, reporting each failed job as a piece of its own and
    /// going on, when `on` (`on_error = "continue"`).
    pub(crate) fn keeping_going(mut self, on: bool) -> Self {
        self.keep_going = on;
        self
    }

    /// Job `index`'s failure, as a piece of its own with the values before
    /// it, under `on_error = "continue"`; the batch goes on after it.
    /// `None` otherwise (the failure is then the batch's, kept with
    /// [`InFlight::job_failed`]).
    pub(crate) fn failed_piece(&mut self, error: Error) -> Option<Finished<R>> {
        if !self.keep_going {
            return None;
        }
        self.answered += 1;
        let piece = self.piece(Some(error), 1);
        Some(piece)
    }

    /// Under `on_error = "continue"`, the values answered so far as a
    /// piece of their own (none when there are none): what stays of a
    /// batch whose worker died.
    pub(crate) fn values_piece(&mut self) -> Option<Finished<R>> {
        (self.keep_going && !self.values.is_empty()).then(|| self.piece(None, 0))
    }

    /// Job `at` (of the batch), whose failure was reported as a piece
    /// already, counts as answered; the values before it are a piece.
    pub(crate) fn skip_reported(&mut self, at: usize) -> Option<Finished<R>> {
        let piece = self.values_piece();
        if self.answered == at {
            self.answered += 1;
            self.piece_first = self.first + self.answered;
        }
        piece
    }

    /// A piece of the values held, and `failure` with `extra` more jobs
    /// (the failed one) after them; the next piece starts after it.
    fn piece(&mut self, failure: Option<Error>, extra: usize) -> Finished<R> {
        let values = std::mem::take(&mut self.values);
        let piece = Finished {
            first: self.piece_first,
            jobs: values.len() + extra,
            values,
            failure,
            elapsed: Duration::ZERO,
            call: 0,
            more: true,
            times: None,
        };
        self.piece_first += piece.jobs;
        piece
    }

    /// How many jobs have answered.
    pub(crate) fn answered(&self) -> usize {
        self.answered
    }

    /// The input index of the job the next answer is for.
    pub(crate) fn next_index(&self) -> usize {
        self.first + self.answered
    }

    /// The error `problem` makes for the job the next answer is for.
    pub(crate) fn error(&self, problem: Problem) -> Error {
        let (task, index) = (self.task, self.next_index());
        let codec = |action, cause| Error::Codec {
            task: task.into(),
            index,
            action,
            cause,
        };
        match problem {
            Problem::Decode(cause) => codec("decode the result", cause),
            Problem::Panic(caught) => panic_error(task, index, caught),
            Problem::Worker(failure) => failure_error(task, index, failure),
            Problem::Desync(cause) => codec("read the worker's answer", cause),
        }
    }

    /// The next job answered with `value`.
    pub(crate) fn value(&mut self, value: R) {
        self.answered += 1;
        if self.failure.is_none() {
            self.values.push(value);
        }
    }

    /// The next job failed with `error`; the first failure is kept.
    pub(crate) fn job_failed(&mut self, error: Error) {
        self.answered += 1;
        self.failure.get_or_insert(error);
    }

    /// The batch as a whole failed (its stream broke, its worker died),
    /// unless one of its jobs failed first.
    pub(crate) fn fail(&mut self, error: Error) {
        self.failure.get_or_insert(error);
    }

    /// The first failure, if any.
    pub(crate) fn failure(&self) -> Option<&Error> {
        self.failure.as_ref()
    }

    /// Replaces the failure with what `wrap` makes of it.
    pub(crate) fn wrap_failure(&mut self, wrap: impl FnOnce(Error) -> Error) {
        self.failure = self.failure.take().map(wrap);
    }

    /// Forgets every answer, for the batch to run again (an MPI retry), and
    /// returns the failure that ended this attempt.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn restart(&mut self) -> Option<Error> {
        self.answered = 0;
        self.values.clear();
        self.failure.take()
    }

    /// Forgets the failure, and every answer from the first failed job on,
    /// for that job to run again (a retry of one job); returns the failure.
    pub(crate) fn restart_at_failure(&mut self) -> Option<Error> {
        self.answered = self.values();
        self.failure.take()
    }

    /// The job (counted from the batch's first) that `error` names, no
    /// earlier than the first one not answered yet: the one that died, timed
    /// out or panicked.
    pub(crate) fn failed_job(&self, error: &Error) -> usize {
        let at = self.values();
        error
            .index()
            .map_or(at, |i| i.saturating_sub(self.first))
            .clamp(at, self.len - 1)
    }

    /// Whether more jobs answered than the batch holds.
    pub(crate) fn overran(&self) -> bool {
        self.answered > self.len
    }

    /// Whether every job answered, with a value (or, under "continue",
    /// a failure reported as its own piece).
    pub(crate) fn complete(&self) -> bool {
        self.failure.is_none() && self.values() == self.len
    }

    /// How many of its jobs, from the first, answered with a value (or
    /// were reported as pieces).
    pub(crate) fn values(&self) -> usize {
        self.piece_first - self.first + self.values.len()
    }

    /// Ends the batch after `elapsed` of running. Never a silent loss: a
    /// batch that ends with fewer values than jobs and no failure fails
    /// with the error `short` makes of it.
    pub(crate) fn finish(
        mut self,
        elapsed: Duration,
        short: impl FnOnce(&Self) -> Error,
    ) -> (Finished<R>, E) {
        if self.failure.is_none() && self.values() < self.len {
            self.failure = Some(short(&self));
        }
        let finished = Finished {
            first: self.piece_first,
            jobs: self.len - (self.piece_first - self.first),
            values: self.values,
            failure: self.failure,
            elapsed,
            call: 0,
            more: false,
            times: None,
        };
        (finished, self.extra)
    }
}

/// The error a worker's report of job `index`'s failure makes.
pub(crate) fn failure_error(task: &str, index: usize, failure: JobFailure) -> Error {
    let codec_error = |action, cause: String| Error::Codec {
        task: task.into(),
        index,
        action,
        cause,
    };
    match failure {
        JobFailure::Panic { message, location } => {
            panic_error(task, index, crate::panic::Caught { message, location })
        }
        JobFailure::UnknownTask => Error::UnknownTask {
            task: task.into(),
            index,
        },
        JobFailure::DecodeArgs(e) => codec_error("decode the arguments in the worker", e),
        JobFailure::EncodeResult(e) => codec_error("encode the result in the worker", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(_: &mut dyn std::io::Read) -> Result<u32, CodecError> {
        Ok(0)
    }

    fn batch() -> InFlight<u32, ()> {
        InFlight::new(10, 3, "t", decode, ())
    }

    #[test]
    fn values_after_the_first_failure_are_dropped_and_the_failure_kept() {
        let mut b = batch();
        b.value(1);
        b.job_failed(b.error(Problem::Decode("bad".into())));
        b.value(3);
        b.fail(Error::Mpi("later".into()));
        assert!(!b.complete() && !b.overran());
        let (done, ()) = b.finish(Duration::ZERO, |_| unreachable!("it failed"));
        assert_eq!(done.values, [1]);
        let failure = done.failure.unwrap().to_string();
        assert!(
            failure.contains("decode the result") && failure.contains("item 11"),
            "{failure}"
        );
    }

    #[test]
    fn a_batch_answered_short_fails_and_a_whole_one_does_not() {
        let mut b = batch();
        b.value(1);
        let (done, ()) = b.finish(Duration::ZERO, |b| {
            Error::Mpi(format!("ended after {} of its {} jobs", b.values(), b.len))
        });
        assert_eq!(
            done.failure
                .unwrap()
                .to_string()
                .matches("1 of its 3")
                .count(),
            1
        );
        let mut b = batch();
        (0..3).for_each(|v| b.value(v));
        assert!(b.complete());
        b.value(4);
        assert!(b.overran());
    }
}
