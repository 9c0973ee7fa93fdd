//! What a speculating process session keeps: each task's finished
//! durations, and the jobs running twice (the rule that uses them is in
//! `speculate.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// What a speculating session keeps.
#[derive(Default)]
pub(super) struct Speculation {
    /// Each task's finished durations.
    pub(super) durations: crate::backend::durations::Durations,
    /// Batches running twice: batch id -> (the original's worker, the
    /// copy's worker).
    pub(super) copies: HashMap<u64, Copy>,
    /// Every batch that was given a copy: a job is copied at most once,
    /// so a copy that dies is not followed by another.
    pub(super) ever_copied: HashSet<u64>,
    /// Jobs given a copy, and copies that won.
    pub(super) copied: usize,
    pub(super) copies_won: usize,
}

/// A batch running twice.
pub(super) struct Copy {
    /// The workers of the original and of the copy.
    pub(super) original: u64,
    pub(super) copy: u64,
    /// The batch's jobs answered when the copy started: the copy runs the
    /// rest, from this one, in `frame`.
    pub(super) base: usize,
    pub(super) frame: Arc<Vec<u8>>,
}

/// What the copy's side leaves the batch with when it goes on alone: its
/// first job and its frame.
pub(super) type Adopted = Option<(usize, Arc<Vec<u8>>)>;

impl Speculation {
    /// Whether batch `id` runs on two workers.
    pub(super) fn is_copied(&self, id: u64) -> bool {
        self.copies.contains_key(&id)
    }

    /// Whether batch `id` was ever given a copy.
    pub(super) fn was_copied(&self, id: u64) -> bool {
        self.ever_copied.contains(&id)
    }

    /// Worker `worker` answered batch `id` first: the copy ends. Returns
    /// the other worker, which lost, and, when the copy won, its part of
    /// the batch to adopt; `None` when the batch had no copy.
    pub(super) fn answered_by(&mut self, id: u64, worker: u64) -> Option<(u64, Adopted)> {
        let c = self.copies.remove(&id)?;
        if worker == c.copy {
            self.copies_won += 1;
            Some((c.original, Some((c.base, c.frame))))
        } else {
            Some((c.copy, None))
        }
    }

    /// Worker `worker`, which ran batch `id`, is gone (dead or timed
    /// out): `None` when the batch had no other copy running (the loss is
    /// its failure), else what the side that runs on leaves the batch
    /// with (the copy's part, when the original died).
    pub(super) fn lost(&mut self, id: u64, worker: u64) -> Option<Adopted> {
        let c = self.copies.get(&id)?;
        if worker != c.original && worker != c.copy {
            return None;
        }
        let c = self.copies.remove(&id)?;
        Some((worker == c.original).then_some((c.base, c.frame)))
    }
}
