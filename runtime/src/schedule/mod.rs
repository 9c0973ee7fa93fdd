//! The scheduler: draws jobs lazily, batches them, bounds what is in
//! flight and what is buffered, orders results, and stops on the first error.
//!
//! A `Stream` pulls from a backend `Session`. Each step it dispatches
//! batches while three things allow it, then waits for one batch to finish:
//! - fewer than `pre_dispatch` batches are in flight;
//! - the session has room (a worker process takes at most two batches);
//! - results held plus jobs in flight stay under `pre_dispatch * batch`.
//!
//! The third bound is what keeps the ordered iterator's memory flat. When
//! an early job is slow, the jobs behind it stop being drawn once the
//! buffer is full, instead of piling up results (joblib's ordered
//! generator held 495 MB in the joblib tutorials' slow-task case). `run` collects
//! everything anyway, so it does not use the third bound.
//!
//! The first error, in completion order, ends the stream. Results already
//! buffered in order before it are still yielded, then the error; then
//! nothing. Dropping a stream early cancels the session: workers holding
//! jobs are killed, and jobs on threads that have not started are skipped.

pub(crate) mod batch;
mod progress;

pub(crate) use batch::Batcher;

use crate::backend::{Batch, Session};
use crate::error::{Error, Result};
use crate::options::Plan;
use crate::shm::Sharing;
use crate::task::Work;
use progress::Reporter;
use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// Task names are `&'static str`s from one place each: compare the
/// pointers first, and the text only when they differ.
fn same_task(a: &'static str, b: &'static str) -> bool {
    std::ptr::eq(a, b) || a == b
}

type Output<I> = <<I as Iterator>::Item as Work>::Output;

/// A resolved plan and its session, or why the run could not start.
pub(crate) type Start<W> = Result<(Plan, Box<dyn Session<W>>)>;

/// Results in input order. Batches arrive whole: a batch that continues
/// the ready run is appended as a chunk, an early one waits in a map. Both
/// cost one operation per batch, and draining chunks into a `Vec` is a copy.
struct Reorder<R> {
    /// Ready chunks, contiguous from the next index to yield.
    chunks: VecDeque<std::vec::IntoIter<R>>,
    /// The index after the last ready chunk.
    ready_end: usize,
    /// Batches that arrived before an earlier one, by first index.
    waiting: BTreeMap<usize, Vec<R>>,
}

impl<R> Reorder<R> {
    fn new() -> Self {
        Reorder {
            chunks: VecDeque::new(),
            ready_end: 0,
            waiting: BTreeMap::new(),
        }
    }

    /// Adds the results of consecutive jobs starting at `first`.
    fn insert(&mut self, first: usize, results: Vec<R>) {
        if results.is_empty() {
            return;
        }
        if first != self.ready_end {
            self.waiting.insert(first, results);
            return;
        }
        self.ready_end += results.len();
        self.chunks.push_back(results.into_iter());
        while let Some(more) = self.waiting.remove(&self.ready_end) {
            self.ready_end += more.len();
            self.chunks.push_back(more.into_iter());
        }
    }

    fn pop(&mut self) -> Option<R> {
        loop {
            let front = self.chunks.front_mut()?;
            if let Some(value) = front.next() {
                return Some(value);
            }
            self.chunks.pop_front();
        }
    }

    /// Moves every ready result to `out`; returns how many.
    fn drain_into(&mut self, out: &mut Vec<R>) -> usize {
        let before = out.len();
        for chunk in self.chunks.drain(..) {
            out.extend(chunk);
        }
        out.len() - before
    }
}

enum Ready<R> {
    Ordered(Reorder<R>),
    Unordered(VecDeque<(usize, R)>),
}

/// The engine behind [`Ordered`], [`Unordered`] and `Parallel::run`.
pub(crate) struct Stream<I: Iterator>
where
    I::Item: Work,
{
    input: I,
    lookahead: Option<I::Item>,
    drawn: usize,
    exhausted: bool,
    session: Option<Box<dyn Session<I::Item>>>,
    plan: Option<Plan>,
    batcher: Batcher,
    bounded: bool,
    in_flight_batches: usize,
    in_flight_jobs: usize,
    /// The most jobs one batch has held (a test hook for auto-batching).
    largest_batch: usize,
    held: usize,
    ready: Ready<Output<I>>,
    error: Option<Error>,
    /// The input's panic, which becomes the stream's error once every job
    /// drawn before it has ended: the error sits at its own position.
    input_error: Option<Error>,
    done: bool,
    report: Reporter,
    /// This run's shared memory, entered while jobs are drawn and sent.
    sharing: Arc<Sharing>,
}

impl<I: Iterator> Stream<I>
where
    I::Item: Work,
{
    /// A stream of `first` (already drawn, if any), then `input`. When the
    /// caller drew `first` inside a `sharing` of its own, that sharing
    /// becomes the run's, with the plan's threshold, so one buffer stays
    /// one segment from the first job on; else the run makes its own.
    pub(crate) fn new(
        input: I,
        first: Option<I::Item>,
        start: Start<I::Item>,
        ordered: bool,
        bounded: bool,
        sharing: Option<Arc<Sharing>>,
    ) -> Self {
        let ready = if ordered {
            Ready::Ordered(Reorder::new())
        } else {
            Ready::Unordered(VecDeque::new())
        };
        let (plan, session, error) = match start {
            Ok((plan, session)) => (Some(plan), Some(session), None),
            Err(e) => (None, None, Some(e)),
        };
        let pending = usize::from(first.is_some());
        let total = match input.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(hi + pending),
            _ => None,
        };
        let (batcher, report) = match (&plan, &session) {
            (Some(p), Some(s)) => (
                Batcher::new(p.batch_size, s.batch_target(), p.n_jobs),
                Reporter::new(p, total),
            ),
            _ => (
                Batcher::new(crate::options::BatchSize::Fixed(1), Default::default(), 1),
                Reporter::new(&Self::quiet(), None),
            ),
        };
        Stream {
            input,
            lookahead: first,
            drawn: 0,
            exhausted: false,
            session,
            plan,
            batcher,
            bounded,
            in_flight_batches: 0,
            in_flight_jobs: 0,
            largest_batch: 0,
            held: 0,
            ready,
            error,
            input_error: None,
            done: false,
            sharing: Self::run_sharing(plan.as_ref(), sharing),
            report,
        }
    }

    /// The run's sharing under `plan`'s threshold and folder: `drawn_in`
    /// when the caller has one, else a new one.
    fn run_sharing(plan: Option<&Plan>, drawn_in: Option<Arc<Sharing>>) -> Arc<Sharing> {
        let max_nbytes = plan.and_then(|p| p.max_nbytes);
        let folder = plan.and_then(|p| p.temp_folder).map(|f| f.path());
        match drawn_in {
            Some(sharing) => {
                sharing.set_plan(max_nbytes, folder);
                sharing
            }
            None => Sharing::new(max_nbytes, folder),
        }
    }

    /// Marks the input as drawn to its end (the caller saw it empty).
    pub(crate) fn input_ended(mut self) -> Self {
        self.exhausted = true;
        self
    }

    fn quiet() -> Plan {
        Plan {
            n_jobs: 1,
            n_jobs_asked: 1,
            backend: crate::options::Backend::Sequential,
            backend_source: crate::options::BackendSource::OneJob,
            batch_size: crate::options::BatchSize::Fixed(1),
            pre_dispatch: 1,
            timeout: None,
            verbose: 0,
            progress: false,
            max_nbytes: None,
            temp_folder: None,
            initializer: None,
            inner_max_num_threads: None,
        }
    }

    fn pre_dispatch(&self) -> usize {
        self.plan.as_ref().map_or(1, |p| p.pre_dispatch)
    }

    fn hold_cap(&self) -> usize {
        if self.bounded {
            self.pre_dispatch().saturating_mul(self.batcher.current())
        } else {
            usize::MAX
        }
    }

    fn remaining(&self) -> Option<usize> {
        let (_, upper) = self.input.size_hint();
        upper.map(|u| u + usize::from(self.lookahead.is_some()))
    }

    /// Draws up to `want` consecutive jobs of one task. One `catch_unwind`
    /// covers the whole draw, so the input's `next` inlines into the loop.
    fn draw(&mut self, want: usize) -> Batch<I::Item> {
        let first = self.drawn;
        let mut items: Vec<I::Item> = Vec::with_capacity(want.min(4096));
        if let Some(work) = self.lookahead.take() {
            items.push(work);
        }
        let (input, lookahead, exhausted) =
            (&mut self.input, &mut self.lookahead, &mut self.exhausted);
        let drawn = catch_unwind(AssertUnwindSafe(|| {
            while !*exhausted && items.len() < want {
                match input.next() {
                    Some(work) => {
                        if items
                            .first()
                            .is_some_and(|w| !same_task(w.task(), work.task()))
                        {
                            *lookahead = Some(work);
                            break;
                        }
                        items.push(work);
                    }
                    None => *exhausted = true,
                }
            }
        }));
        self.drawn = first + items.len();
        if let Err(payload) = drawn {
            self.exhausted = true;
            let message = crate::panic::payload_text(&*payload);
            self.input_error = Some(Error::InputPanicked {
                index: self.drawn,
                message,
            });
        }
        // The jobs drawn before a panic still run.
        Batch { first, items }
    }

    fn dispatch(&mut self) {
        let _sharing = self.sharing.enter();
        while self.error.is_none()
            && !self.done
            && self.in_flight_batches < self.pre_dispatch()
            && self.held + self.in_flight_jobs < self.hold_cap()
            && self.session.as_ref().is_some_and(|s| s.has_room())
        {
            let want = self.batcher.next_size(self.remaining());
            let batch = self.draw(want);
            if batch.items.is_empty() {
                break;
            }
            let jobs = batch.items.len();
            let task = batch.items[0].task();
            let session = self.session.as_mut().expect("checked above");
            if let Err(e) = session.submit(batch) {
                self.fail(e);
                break;
            }
            if self.drawn == jobs {
                self.report.announce(task, &session.worker_pids());
            }
            self.in_flight_batches += 1;
            self.in_flight_jobs += jobs;
            self.largest_batch = self.largest_batch.max(jobs);
        }
    }

    /// Dispatches, then waits for one batch. False when nothing is left to
    /// wait for (the input is done, or the stream failed).
    pub(crate) fn step(&mut self) -> bool {
        self.dispatch();
        if self.in_flight_batches == 0 {
            if let Some(e) = self.input_error.take() {
                self.fail(e);
            }
        }
        if self.error.is_some() || self.in_flight_batches == 0 {
            return false;
        }
        let session = self.session.as_mut().expect("a batch is in flight");
        let waited = loop {
            match session.wait(self.report.patience()) {
                Ok(Some(finished)) => break Ok(finished),
                // Nothing finished for a while: say which job runs longest.
                Ok(None) => self.report.still_running(session.longest_running()),
                Err(e) => break Err(e),
            }
        };
        match waited {
            Ok(finished) => {
                self.in_flight_batches -= 1;
                self.in_flight_jobs -= finished.jobs;
                if finished.failure.is_none() && finished.values.len() == finished.jobs {
                    self.batcher.record(finished.jobs, finished.elapsed);
                }
                self.report
                    .batch_done(finished.jobs, self.batcher.current());
                let first = finished.first;
                self.held += finished.values.len();
                match &mut self.ready {
                    Ready::Ordered(r) => r.insert(first, finished.values),
                    Ready::Unordered(q) => q.extend(
                        finished
                            .values
                            .into_iter()
                            .enumerate()
                            .map(|(k, v)| (first + k, v)),
                    ),
                }
                match finished.failure {
                    Some(e) => {
                        self.fail(e);
                        false
                    }
                    None => true,
                }
            }
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }

    fn fail(&mut self, e: Error) {
        self.report.caught(&e, self.error.is_some());
        if self.error.is_none() && !self.done {
            self.error = Some(e);
        }
        self.close(false);
    }

    /// Ends the stream: cancels what is in flight unless it ended cleanly,
    /// and drops the session, which gives back what it borrowed.
    fn close(&mut self, ok: bool) {
        if let Some(mut session) = self.session.take() {
            if !ok {
                session.cancel();
            }
            // Dropping the session returns what it borrowed (the worker
            // processes) to its home.
            drop(session);
            self.report.finish(ok && self.error.is_none());
        }
        self.in_flight_batches = 0;
        self.in_flight_jobs = 0;
    }

    /// The next result that `pop` finds ready, stepping the scheduler
    /// until one is; then the error, if the stream failed; then nothing.
    fn next_with<T>(
        &mut self,
        mut pop: impl FnMut(&mut Ready<Output<I>>) -> Option<T>,
    ) -> Option<Result<T>> {
        loop {
            if let Some(v) = pop(&mut self.ready) {
                self.held -= 1;
                return Some(Ok(v));
            }
            if let Some(e) = self.error.take() {
                self.done = true;
                return Some(Err(e));
            }
            if self.done {
                return None;
            }
            if !self.step() && self.error.is_none() {
                self.done = true;
                self.close(true);
            }
        }
    }

    fn next_ordered(&mut self) -> Option<Result<Output<I>>> {
        self.next_with(|ready| match ready {
            Ready::Ordered(r) => r.pop(),
            Ready::Unordered(_) => None,
        })
    }

    fn next_unordered(&mut self) -> Option<Result<(usize, Output<I>)>> {
        self.next_with(|ready| match ready {
            Ready::Unordered(q) => q.pop_front(),
            Ready::Ordered(_) => None,
        })
    }

    /// Runs to the end and returns every result in input order.
    pub(crate) fn collect_ordered(mut self) -> Result<Vec<Output<I>>> {
        let mut out = Vec::with_capacity(self.input.size_hint().0);
        loop {
            let more = self.step();
            if let Ready::Ordered(r) = &mut self.ready {
                self.held -= r.drain_into(&mut out);
            }
            if let Some(e) = self.error.take() {
                self.done = true;
                return Err(e);
            }
            if !more {
                self.done = true;
                self.close(true);
                return Ok(out);
            }
        }
    }
}

impl<I: Iterator> Drop for Stream<I>
where
    I::Item: Work,
{
    fn drop(&mut self) {
        let clean = self.done && self.error.is_none() && self.in_flight_batches == 0;
        self.close(clean);
    }
}

/// Results in input order: `Parallel::iter`. Each item is `Ok(result)`, or
/// the first error, after which the iterator ends. Dropping it cancels the
/// jobs still running.
pub struct Ordered<I: Iterator>
where
    I::Item: Work,
{
    pub(crate) stream: Stream<I>,
}

/// The most jobs one batch of `run` has held so far. Not public API
/// (reachable only through `__private`): tests use it to see
/// auto-batching at work.
pub fn largest_batch<I: Iterator>(run: &Ordered<I>) -> usize
where
    I::Item: Work,
{
    run.stream.largest_batch
}

impl<I: Iterator> Iterator for Ordered<I>
where
    I::Item: Work,
{
    type Item = Result<Output<I>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.stream.next_ordered()
    }
}

/// Results as they complete, with their input index:
/// `Parallel::iter_unordered`. Each item is `Ok((index, result))`, or the
/// first error, after which the iterator ends. Dropping it cancels the jobs
/// still running.
pub struct Unordered<I: Iterator>
where
    I::Item: Work,
{
    pub(crate) stream: Stream<I>,
}

impl<I: Iterator> Iterator for Unordered<I>
where
    I::Item: Work,
{
    type Item = Result<(usize, Output<I>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.stream.next_unordered()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reorder_buffer_releases_only_contiguous_results() {
        let mut r = Reorder::new();
        r.insert(2, vec!["c", "d"]);
        assert_eq!(r.pop(), None);
        r.insert(0, vec!["a"]);
        assert_eq!(r.pop(), Some("a"));
        assert_eq!(r.pop(), None);
        r.insert(1, vec!["b"]);
        assert_eq!(
            std::iter::from_fn(|| r.pop()).collect::<Vec<_>>(),
            vec!["b", "c", "d"]
        );
    }
}
