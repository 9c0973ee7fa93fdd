//! How a pool cuts its input into chunks: CPython's `chunksize` formula,
//! fixed sizes, and cutting where the task changes (a chunk is a batch,
//! which holds jobs of one task).

use crate::task::{AnyOutput, Job};

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

/// Cuts `jobs` into chunks of at most `size` (at least 1) jobs, cutting
/// also wherever the task changes. Each chunk is `(offset, jobs)`.
pub(crate) fn cut(jobs: Vec<Job<AnyOutput>>, size: usize) -> Vec<(usize, Vec<Job<AnyOutput>>)> {
    let size = size.max(1);
    let mut chunks: Vec<(usize, Vec<Job<AnyOutput>>)> = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        match chunks.last_mut() {
            Some((_, chunk)) if chunk.len() < size && chunk[0].task() == job.task() => {
                chunk.push(job);
            }
            _ => chunks.push((i, vec![job])),
        }
    }
    chunks
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
    fn chunks_cut_at_size_and_at_task_changes() {
        let jobs: Vec<Job<AnyOutput>> = (0..7).map(|i| Job::new(move || i).erase()).collect();
        let chunks = cut(jobs, 3);
        let shape: Vec<(usize, usize)> = chunks.iter().map(|(o, c)| (*o, c.len())).collect();
        assert_eq!(shape, [(0, 3), (3, 3), (6, 1)]);
    }
}
