//! [`Executor`]: concurrent.futures' `ProcessPoolExecutor`, over a
//! [`Pool`]: `submit` returns a [`Future`], and [`as_completed`] and
//! [`wait`] watch several.

use super::manager::Command;
use super::result::{OnDone, Slot};
use super::{AsyncResult, Chunksize, Imap, IntoJob, MapTask, Pool, PoolBuilder};
use crate::error::{Error, Result};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A pool in concurrent.futures' terms: `submit`, `map` and `shutdown`.
///
/// ```
/// use parjob_runtime::pool::{as_completed, Executor, Pool};
/// use parjob_runtime::{Backend, Job};
///
/// let ex = Executor::from(Pool::builder().processes(2).backend(Backend::Thread).build()?);
/// let futures: Vec<_> = (0..4u64).map(|x| ex.submit(Job::new(move || x * 10))).collect();
/// let mut done: Vec<u64> = as_completed(futures, None)
///     .map(|f| f.unwrap().result().unwrap())
///     .collect();
/// done.sort();
/// assert_eq!(done, [0, 10, 20, 30]);
/// ex.shutdown(true, false);
/// # Ok::<(), parjob_runtime::Error>(())
/// ```
#[derive(Debug)]
pub struct Executor {
    pool: Pool,
}

impl From<Pool> for Executor {
    fn from(pool: Pool) -> Self {
        Executor { pool }
    }
}

/// When [`wait`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnWhen {
    /// When any future ends.
    FirstCompleted,
    /// When any future fails, or all end.
    FirstException,
    /// When all end.
    AllCompleted,
}

/// A job submitted to an [`Executor`]: concurrent.futures' `Future`. It is
/// also a `std::future::Future`, to `.await` from async code.
pub struct Future<R> {
    result: AsyncResult<R>,
    ticket: Option<u64>,
    commands: Option<mpsc::Sender<Command>>,
}

impl Executor {
    /// An executor of `workers` worker processes (`max_workers`).
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn new(workers: usize) -> Result<Executor> {
        Executor::with(Pool::builder().processes(workers))
    }

    /// An executor from a pool's settings (initializer,
    /// `max_tasks_per_child`, the thread backend, ...). Its worker
    /// processes start as CPython's do since 3.9: one at a time, only when
    /// a submission finds none idle, up to `max_workers`.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn with(mut settings: PoolBuilder) -> Result<Executor> {
        settings.lazy = true;
        Ok(Executor {
            pool: settings.build()?,
        })
    }

    /// Runs `job` in a worker; its result comes to the [`Future`]. Its
    /// done callbacks run on the pool's callback thread.
    pub fn submit<R: Send + 'static>(&self, job: impl IntoJob<R>) -> Future<R> {
        let noop: OnDone<R> = Box::new(|_| ());
        let (result, ticket) = self.pool.submit(
            super::one(job),
            Chunksize::Fixed(1),
            super::first,
            Some(noop),
        );
        Future {
            result,
            ticket,
            commands: self.pool.command_sender(),
        }
    }

    /// The results of `task` on each item, in order, as they come
    /// (`Executor.map`). With a `timeout`, the iterator yields an error
    /// and ends once it has run that long since this call.
    pub fn map<'p, A: 'p, R: Send + 'static>(
        &'p self,
        task: impl MapTask<A, R> + 'p,
        items: impl IntoIterator<Item = A> + 'p,
        timeout: Option<Duration>,
    ) -> Timed<Imap<'p, R>> {
        self.map_chunked(task, items, timeout, 1, None)
    }

    /// As [`Executor::map`], with `chunksize` items a chunk and at most
    /// `buffersize` items drawn ahead of the consumer.
    pub fn map_chunked<'p, A: 'p, R: Send + 'static>(
        &'p self,
        task: impl MapTask<A, R> + 'p,
        items: impl IntoIterator<Item = A> + 'p,
        timeout: Option<Duration>,
        chunksize: usize,
        buffersize: Option<usize>,
    ) -> Timed<Imap<'p, R>> {
        let calls = self.pool.chunksize(chunksize);
        let calls = match buffersize {
            Some(b) => calls.buffersize(b),
            None => calls,
        };
        Timed {
            inner: calls.imap(task, items),
            deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
            over: false,
        }
    }

    /// Ends the executor (`shutdown`): no new work; with `cancel_futures`,
    /// what has not started is cancelled; with `wait`, returns once the
    /// rest has run and the workers have exited.
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        if cancel_futures {
            self.pool.command(Command::CancelPending);
        }
        self.pool.close();
        if wait {
            let _ = self.pool.join();
        }
    }

    /// The pool underneath.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl<R> Future<R> {
    fn slot(&self) -> &Arc<Slot<R>> {
        self.result.slot()
    }

    /// Waits for the result and returns it (`result()`).
    pub fn result(self) -> Result<R> {
        self.result.get()
    }

    /// As [`Future::result`], waiting at most `timeout`; the future comes
    /// back as `Err` when it runs out.
    pub fn result_timeout(self, timeout: Duration) -> std::result::Result<Result<R>, Self> {
        let Future {
            result,
            ticket,
            commands,
        } = self;
        result.get_timeout(timeout).map_err(|result| Future {
            result,
            ticket,
            commands,
        })
    }

    /// Cancels it if it has not started (`cancel()`): true when it was, and
    /// its result is then [`Error::Cancelled`].
    pub fn cancel(&self) -> bool {
        let (Some(id), Some(commands)) = (self.ticket, &self.commands) else {
            return false;
        };
        let (reply, answer) = mpsc::channel();
        if commands.send(Command::Cancel { id, reply }).is_err() {
            return false;
        }
        let cancelled = answer.recv().unwrap_or(false);
        if cancelled {
            // Its result is being set on the callback thread: a moment.
            // From that very thread (a done-callback) the wait returns at
            // once, and the result is set right after the callback.
            self.result.wait_timeout(Duration::MAX);
        }
        cancelled
    }

    /// Whether it was cancelled.
    pub fn cancelled(&self) -> bool {
        self.slot().is_cancelled()
    }

    /// Whether it has ended (`done()`): true once its result is known, as
    /// its done callbacks start, as in concurrent.futures.
    pub fn done(&self) -> bool {
        self.slot().has_ended()
    }

    /// Runs `callback` with the result once it is done, on the pool's
    /// callback thread, or here at once if it is done already
    /// (`add_done_callback`).
    pub fn add_done_callback(&self, callback: impl FnOnce(&Result<R>) + Send + 'static) {
        self.slot().on_done(Box::new(callback));
    }
}

impl<R> std::future::Future for Future<R> {
    type Output = Result<R>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<R>> {
        std::pin::Pin::new(&mut self.result).poll(cx)
    }
}

impl<R> std::fmt::Debug for Future<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Future")
            .field("done", &self.done())
            .finish_non_exhaustive()
    }
}

/// The futures of `futures` as they end, first done first
/// (`as_completed`). With a `timeout`, an error comes instead of the rest
/// once it has run out (their work goes on; their results are dropped).
pub fn as_completed<R>(
    futures: Vec<Future<R>>,
    timeout: Option<Duration>,
) -> impl Iterator<Item = Result<Future<R>>> {
    let rx = completions(&futures);
    let mut futures: Vec<Option<Future<R>>> = futures.into_iter().map(Some).collect();
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut left = futures.len();
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let next = match deadline {
            None => rx.recv().ok(),
            Some(d) => rx
                .recv_timeout(d.saturating_duration_since(Instant::now()))
                .ok(),
        };
        match next.and_then(|(i, _)| futures[i].take()) {
            Some(f) => {
                left -= 1;
                Some(Ok(f))
            }
            None => {
                let e = Error::Pool(format!("{left} futures were not done within the timeout"));
                left = 0;
                Some(Err(e))
            }
        }
    })
}

/// A channel that receives each future's index as it ends, and whether
/// it failed.
fn completions<R>(futures: &[Future<R>]) -> mpsc::Receiver<(usize, bool)> {
    let (tx, rx) = mpsc::channel();
    for (i, f) in futures.iter().enumerate() {
        let tx = tx.clone();
        f.slot().on_done(Box::new(move |result| {
            let _ = tx.send((i, result.is_err()));
        }));
    }
    rx
}

/// Waits on `futures` until `when` holds or `timeout` runs out (`wait`):
/// the indices of the futures done, and of those not done.
pub fn wait<R>(
    futures: &[Future<R>],
    timeout: Option<Duration>,
    when: ReturnWhen,
) -> (Vec<usize>, Vec<usize>) {
    let rx = completions(futures);
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut done = Vec::new();
    while done.len() < futures.len() {
        let next = match deadline {
            None => rx.recv().ok(),
            Some(d) => rx
                .recv_timeout(d.saturating_duration_since(Instant::now()))
                .ok(),
        };
        let Some((i, failed)) = next else { break };
        done.push(i);
        match when {
            ReturnWhen::FirstCompleted => break,
            ReturnWhen::FirstException if failed => break,
            _ => {}
        }
    }
    // Every future that has ended by now is done, not only those whose
    // ending woke this wait: CPython's `wait` sorts them by state too.
    done.sort_unstable();
    (0..futures.len()).partition(|&i| done.binary_search(&i).is_ok() || futures[i].done())
}

/// An iterator with a deadline: [`Executor::map`]'s results.
#[derive(Debug)]
pub struct Timed<I> {
    inner: I,
    deadline: Option<Instant>,
    over: bool,
}

impl<R: Send + 'static> Iterator for Timed<Imap<'_, R>> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        if self.over {
            return None;
        }
        let next = match self.deadline {
            None => self.inner.next(),
            Some(d) => self
                .inner
                .next_timeout(d.saturating_duration_since(Instant::now())),
        };
        if matches!(next, Some(Err(Error::Pool(_))))
            && self.deadline.is_some_and(|d| Instant::now() >= d)
        {
            self.over = true;
        }
        next
    }
}
