//! How a pool cuts its input into chunks: CPython's `chunksize` formula,
//! fixed sizes, and cutting where the task changes (a chunk is a batch,
//! which holds jobs of one task).

use crate::task::{chunk, AnyOutput, Job, Task};
use std::collections::VecDeque;
use std::marker::PhantomData;

/// The work a pool runs: one job a chunk, whose output is the chunk's
/// `ChunkOut`.
pub(crate) type PoolJob = Job<AnyOutput>;

/// How many items a pool sends to a worker at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Chunksize {
    /// CPython's `Pool.map` default: `len / (4 * processes)`, rounded up
    /// ([`cpython_chunksize`]). `imap` and `imap_unordered` use 1.
    #[default]
    Default,
    /// This many items a chunk (0 is taken as 1).
    Fixed(usize),
    /// parjob's auto-batching, for `map` and `starmap`: the first chunk is
    /// one item, and later chunks are sized from how long items took, to
    /// last about 4 ms on processes (as `Parallel` sizes its batches).
    /// `imap` takes it as 1.
    Auto,
}

impl From<usize> for Chunksize {
    fn from(n: usize) -> Self {
        Chunksize::Fixed(n)
    }
}

/// CPython's `Pool.map` chunk size for `len` items on `processes` workers:
/// `chunksize, extra = divmod(len, processes * 4)`, plus one if `extra`.
///
/// ```
/// use parjob_runtime::pool::cpython_chunksize;
/// let two_workers: Vec<usize> = [0, 1, 8, 9, 100, 1000, 1001]
///     .iter()
///     .map(|&n| cpython_chunksize(n, 2))
///     .collect();
/// assert_eq!(two_workers, [0, 1, 1, 2, 13, 125, 126]);
/// ```
pub fn cpython_chunksize(len: usize, processes: usize) -> usize {
    let per = processes.max(1) * 4;
    let (chunk, extra) = (len / per, len % per);
    chunk + usize::from(extra != 0)
}

/// A submission's jobs, cut into chunk jobs as the manager sends them.
pub(crate) trait Source: Send {
    /// The next chunk of at most `size` (at least 1) jobs, cut also where
    /// the task changes: its offset in the submission, its length, and
    /// the one job that runs it.
    fn next(&mut self, size: usize) -> Option<(usize, usize, PoolJob)>;
    /// Jobs not cut yet.
    fn remaining(&self) -> usize;
}

/// What a map-like call submits: its items made into jobs, or (for a
/// task named by `f::task`) straight into its argument tuples. Not public
/// API: it is reachable only through `__private`.
pub struct Submission<R> {
    pub(crate) source: Box<dyn Source>,
    pub(crate) len: usize,
    result: PhantomData<fn() -> R>,
}

impl<R: Send + 'static> Submission<R> {
    /// Jobs, each boxed.
    pub(crate) fn jobs(jobs: Vec<Job<R>>) -> Self {
        Submission {
            len: jobs.len(),
            source: Box::new(Jobs::new(jobs)),
            result: PhantomData,
        }
    }

    /// Argument tuples of task `T`, with no job each.
    pub(crate) fn calls<T: Task<Output = R>>(args: Vec<T::Args>) -> Self {
        Submission {
            len: args.len(),
            source: Box::new(TaskArgs::<T> {
                args: args.into(),
                offset: 0,
            }),
            result: PhantomData,
        }
    }
}

/// The argument tuples of a submission of task `T`, in order.
struct TaskArgs<T: Task> {
    args: VecDeque<T::Args>,
    offset: usize,
}

impl<T: Task> Source for TaskArgs<T> {
    fn next(&mut self, size: usize) -> Option<(usize, usize, PoolJob)> {
        if self.args.is_empty() {
            return None;
        }
        let len = size.clamp(1, self.args.len());
        let args: Vec<T::Args> = self.args.drain(..len).collect();
        let offset = self.offset;
        self.offset += len;
        Some((offset, len, chunk::calls::<T>(args)))
    }

    fn remaining(&self) -> usize {
        self.args.len()
    }
}

/// The jobs of a submission, in order.
pub(crate) struct Jobs<R> {
    jobs: VecDeque<Job<R>>,
    offset: usize,
}

impl<R> Jobs<R> {
    pub(crate) fn new(jobs: Vec<Job<R>>) -> Self {
        Jobs {
            jobs: jobs.into(),
            offset: 0,
        }
    }
}

impl<R: Send + 'static> Source for Jobs<R> {
    fn next(&mut self, size: usize) -> Option<(usize, usize, PoolJob)> {
        let task = self.jobs.front()?.task();
        let same = self
            .jobs
            .iter()
            .take(size.max(1))
            .take_while(|j| std::ptr::eq(j.task(), task) || j.task() == task)
            .count();
        let jobs: Vec<Job<R>> = self.jobs.drain(..same).collect();
        let offset = self.offset;
        self.offset += same;
        Some((offset, same, chunk::chunk(jobs)))
    }

    fn remaining(&self) -> usize {
        self.jobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpython_table_for_two_workers() {
        for (len, want) in [
            (0, 0),
            (1, 1),
            (8, 1),
            (9, 2),
            (100, 13),
            (1000, 125),
            (1001, 126),
        ] {
            assert_eq!(cpython_chunksize(len, 2), want, "len {len}");
        }
        assert_eq!(cpython_chunksize(5, 0), 2, "no workers counts as one");
    }

    #[test]
    #[ignore = "runs python3 for CPython's own formula; .ci/run installs python3 and runs it"]
    fn the_formula_matches_cpython() {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys\nfor n in range(0, 3000, 7):\n  for p in (1, 2, 3, 8):\n    c, e = divmod(n, p * 4)\n    print(n, p, c + (1 if e else 0))",
            ])
            .output()
            .expect("python3 runs");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.lines().count() > 1000, "python3 ran: {text:?}");
        for line in text.lines() {
            let v: Vec<usize> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            assert_eq!(cpython_chunksize(v[0], v[1]), v[2], "{line}");
        }
    }

    #[test]
    fn chunks_cut_at_size_and_where_the_task_changes() {
        struct Other;
        impl crate::task::Task for Other {
            const NAME: &'static str = "other";
            type Args = ();
            type Output = i32;
            fn call((): ()) -> i32 {
                -1
            }
            fn options() -> crate::options::Options {
                crate::options::Options::new()
            }
        }
        impl crate::task::Crossing<(), i32> for Other {}
        let mut jobs: Vec<Job<i32>> = (0..7).map(|i| Job::new(move || i)).collect();
        jobs.insert(5, Job::call::<Other>(()));
        let mut source = Jobs::new(jobs);
        let mut shape = Vec::new();
        while let Some((offset, len, job)) = source.next(3) {
            let out = crate::task::Work::run(job);
            let out = out.downcast::<chunk::ChunkOut<i32>>().unwrap();
            assert!(out.failure.is_none());
            shape.push((offset, len, out.values));
        }
        let want = [
            (0, 3, vec![0, 1, 2]),
            (3, 2, vec![3, 4]),
            (5, 1, vec![-1]),
            (6, 2, vec![5, 6]),
        ];
        assert_eq!(shape, want);
        assert_eq!(source.remaining(), 0);
    }
}
