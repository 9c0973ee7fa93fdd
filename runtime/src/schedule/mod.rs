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
mod reorder;
mod traced;

pub(crate) use batch::Batcher;

use crate::backend::{Batch, Session};
use crate::error::{Error, Result};
use crate::options::Plan;
use crate::shm::Sharing;
use crate::task::Work;
use progress::Reporter;
use reorder::{Reorder, Slot};
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

enum Ready<R> {
    Ordered(Reorder<R>),
    Unordered(VecDeque<(usize, Slot<R>)>),
}

/// What the stream yields next: an item's outcome, or the error that
/// ended the run.
enum Next<T> {
    Item(Result<T>),
    RunFailed(Error),
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
    /// Under `on_error = "continue"`: each failed item's error, by input
    /// index, yielded at its place.
    failed: BTreeMap<usize, Error>,
    done: bool,
    report: Reporter,
    /// This run's shared memory, entered while jobs are drawn and sent.
    sharing: Arc<Sharing>,
    /// Under `trace`, the run's timeline.
    trace: Option<Arc<crate::trace::Trace>>,
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
        let (plan, mut session, error) = match start {
            Ok((plan, session)) => (Some(plan), Some(session), None),
            Err(e) => (None, None, Some(e)),
        };
        let trace = match (&plan, &mut session) {
            (Some(p), Some(s)) => traced::start(p, s.as_mut()),
            _ => None,
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
            failed: BTreeMap::new(),
            done: false,
            sharing: Self::run_sharing(plan.as_ref(), sharing),
            report,
            trace,
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
            on_error: crate::options::OnError::Stop,
            retries: 0,
            retry_panics: false,
            max_worker_memory: None,
            speculate: None,
            trace: None,
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
            if let Some(t) = &self.trace {
                traced::in_flight_now(t, self.in_flight_jobs);
            }
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
            Ok(mut finished) => {
                // A piece of a batch that goes on is not the batch's end.
                self.in_flight_batches -= usize::from(!finished.more);
                self.in_flight_jobs -= finished.jobs;
                if let Some(t) = &self.trace {
                    traced::finished(t, &mut finished, self.in_flight_jobs);
                }
                if !finished.more
                    && finished.failure.is_none()
                    && finished.values.len() == finished.jobs
                {
                    self.batcher.record(finished.jobs, finished.elapsed);
                }
                self.report
                    .batch_done(finished.jobs, self.batcher.current());
                let (first, jobs) = (finished.first, finished.jobs);
                let answered = finished.values.len();
                self.held += answered;
                match &mut self.ready {
                    Ready::Ordered(r) => r.insert(first, finished.values),
                    Ready::Unordered(q) => q.extend(
                        finished
                            .values
                            .into_iter()
                            .enumerate()
                            .map(|(k, v)| (first + k, Slot::Value(v))),
                    ),
                }
                match finished.failure {
                    Some(e) if self.keeps_going() => {
                        self.failed_items(first + answered, first + jobs, e);
                        true
                    }
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

    /// Whether a failed item leaves the run going (`on_error = "continue"`).
    fn keeps_going(&self) -> bool {
        self.plan
            .as_ref()
            .is_some_and(|p| p.on_error == crate::options::OnError::Continue)
    }

    /// Items `from..to` of a batch failed with `e` (the first of them) and
    /// a note that an earlier item of the batch stopped them: each is a
    /// gap in the order, its error kept apart. Under "continue" this is
    /// one item: a batch of one job, or a piece of a process batch that
    /// ends at its failed job.
    fn failed_items(&mut self, from: usize, to: usize, e: Error) {
        self.report.caught(&e, false);
        self.failed.insert(from, e);
        for index in from + 1..to {
            let why = format!("item {index} did not run: item {from} of its batch failed first");
            self.failed.insert(index, Error::Pool(why));
        }
        for index in from..to.max(from + 1) {
            self.held += 1;
            match &mut self.ready {
                Ready::Ordered(r) => r.insert_gap(index),
                Ready::Unordered(q) => q.push_back((index, Slot::Gap(index))),
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
        if let Some(trace) = self.trace.take() {
            trace.finish();
        }
        self.in_flight_batches = 0;
        self.in_flight_jobs = 0;
    }

    /// The next result that `pop` finds ready, stepping the scheduler
    /// until one is; then the error, if the stream failed; then nothing.
    fn next_with<T>(
        &mut self,
        pop: impl FnMut(&mut Ready<Output<I>>) -> Option<Slot<T>>,
    ) -> Option<Result<T>> {
        match self.next_tagged(pop)? {
            Next::Item(item) => Some(item),
            Next::RunFailed(e) => Some(Err(e)),
        }
    }

    /// As `next_with`, telling an item's failure from the run's.
    fn next_tagged<T>(
        &mut self,
        mut pop: impl FnMut(&mut Ready<Output<I>>) -> Option<Slot<T>>,
    ) -> Option<Next<T>> {
        loop {
            if let Some(slot) = pop(&mut self.ready) {
                self.held -= 1;
                return Some(Next::Item(match slot {
                    Slot::Value(v) => Ok(v),
                    Slot::Gap(index) => Err(self
                        .failed
                        .remove(&index)
                        .unwrap_or_else(|| Error::Pool(format!("item {index} failed")))),
                }));
            }
            if let Some(e) = self.error.take() {
                self.done = true;
                return Some(Next::RunFailed(e));
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
            Ready::Unordered(q) => q.pop_front().map(|(k, slot)| match slot {
                Slot::Value(v) => Slot::Value((k, v)),
                Slot::Gap(index) => Slot::Gap(index),
            }),
            Ready::Ordered(_) => None,
        })
    }

    /// Runs to the end and returns every item's outcome in input order;
    /// `Err` only for what ended the run as a whole.
    pub(crate) fn collect_results(mut self) -> Result<Vec<Result<Output<I>>>> {
        let mut out = Vec::with_capacity(self.input.size_hint().0);
        let pop = |ready: &mut Ready<Output<I>>| match ready {
            Ready::Ordered(r) => r.pop(),
            Ready::Unordered(_) => None,
        };
        while let Some(next) = self.next_tagged(pop) {
            match next {
                Next::Item(item) => out.push(item),
                Next::RunFailed(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Runs to the end and returns every result in input order. Under
    /// "continue" every item runs first, and the error is the first
    /// failed item's.
    pub(crate) fn collect_ordered(mut self) -> Result<Vec<Output<I>>> {
        if self.keeps_going() {
            return self
                .collect_results()?
                .into_iter()
                .collect::<Result<Vec<_>>>();
        }
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
