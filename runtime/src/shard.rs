//! Job arrays without MPI: each array task runs its share of the items.
//!
//! Slurm's `sbatch --array=0-9` (or a Kubernetes Indexed Job) starts the
//! same program many times, each with its index. [`Shard::from_env`] reads
//! it, [`Shard::select`] keeps this shard's items, and the work goes into a
//! `#[memoize]` cache on a shared filesystem. A last job (`sbatch
//! --dependency=afterok:<array>`) runs the whole map, which finds every
//! item in the cache and only gathers. The cache writes each entry under a
//! temporary name with the host, pid and random bits, then renames it, so
//! shards on different hosts never collide, on NFS too.

use crate::error::{Error, Result};

/// This process's place in a job array: shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    /// Which shard, from 0.
    pub index: usize,
    /// How many shards there are.
    pub count: usize,
}

impl Shard {
    /// Shard `index` of `count`; `index` must be below `count`.
    ///
    /// ```
    /// let shard = parjob_runtime::Shard::new(1, 3).unwrap();
    /// let mine: Vec<u32> = shard.select(0..10).collect();
    /// assert_eq!(mine, [1, 4, 7]);
    /// assert!(parjob_runtime::Shard::new(3, 3).is_err());
    /// ```
    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if index >= count {
            return Err(Error::Config(format!(
                "shard {index} of {count}: the index must be below the count"
            )));
        }
        Ok(Shard { index, count })
    }

    /// This process's shard, from Slurm (`SLURM_ARRAY_TASK_ID`, counted
    /// from `SLURM_ARRAY_TASK_MIN`, of `SLURM_ARRAY_TASK_COUNT`) or from a
    /// Kubernetes Indexed Job (`JOB_COMPLETION_INDEX` of
    /// `PARJOB_SHARD_COUNT`, since Kubernetes does not tell the count).
    /// `Ok(None)` outside a job array.
    pub fn from_env() -> Result<Option<Shard>> {
        Shard::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Shard::from_env`] over any source of variables.
    ///
    /// ```
    /// use parjob_runtime::Shard;
    /// let vars = |name: &str| match name {
    ///     "SLURM_ARRAY_TASK_ID" => Some("12".to_string()),
    ///     "SLURM_ARRAY_TASK_MIN" => Some("10".to_string()),
    ///     "SLURM_ARRAY_TASK_COUNT" => Some("4".to_string()),
    ///     _ => None,
    /// };
    /// assert_eq!(Shard::from_vars(vars).unwrap(), Some(Shard { index: 2, count: 4 }));
    /// ```
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>> {
        let number = |name: &str| -> Result<Option<usize>> {
            match var(name) {
                None => Ok(None),
                Some(text) => text.trim().parse().map(Some).map_err(|_| {
                    Error::Config(format!("{name}={text:?} is not a non-negative integer"))
                }),
            }
        };
        if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
            let count = number("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                Error::Config("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not".into())
            })?;
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let index = id.checked_sub(min).ok_or_else(|| {
                Error::Config(format!(
                    "SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}"
                ))
            })?;
            return Shard::new(index, count).map(Some);
        }
        if let Some(index) = number("JOB_COMPLETION_INDEX")? {
            let count = number("PARJOB_SHARD_COUNT")?.ok_or_else(|| {
                Error::Config(
                    "JOB_COMPLETION_INDEX is set: set PARJOB_SHARD_COUNT to the Job's completions"
                        .into(),
                )
            })?;
            return Shard::new(index, count).map(Some);
        }
        Ok(None)
    }

    /// Whether the item at position `position` is this shard's: every
    /// `count`-th item, so shards get early and late items alike.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count == self.index
    }

    /// This shard's items, in their order.
    pub fn select<I: IntoIterator>(&self, items: I) -> impl Iterator<Item = I::Item> {
        let shard = *self;
        items
            .into_iter()
            .enumerate()
            .filter(move |(k, _)| shard.owns(*k))
            .map(|(_, item)| item)
    }
}
