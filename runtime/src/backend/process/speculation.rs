//! What a speculating process session keeps: each task's finished
//! durations, and the jobs running twice (the rule that uses them is in
//! `speculate.rs`).

use std::collections::{HashMap, HashSet};

/// What a speculating session keeps.
#[derive(Default)]
pub(super) struct Speculation {
    /// Each task's finished durations.
    pub(super) durations: crate::backend::durations::Durations,
    /// Batches running twice: batch id -> (the original's worker, the
    /// copy's worker).
    pub(super) copies: HashMap<u64, (u64, u64)>,
    /// Every batch that was given a copy: a job is copied at most once,
    /// so a copy that dies is not followed by another.
    pub(super) ever_copied: HashSet<u64>,
    /// Jobs given a copy, and copies that won.
    pub(super) copied: usize,
    pub(super) copies_won: usize,
}

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
    /// the other worker, which lost, when the batch had a copy.
    pub(super) fn answered_by(&mut self, id: u64, worker: u64) -> Option<u64> {
        let (original, copy) = self.copies.remove(&id)?;
        if worker == copy {
            self.copies_won += 1;
            Some(original)
        } else {
            Some(copy)
        }
    }

    /// Worker `worker`, which ran batch `id`, is gone (dead or timed
    /// out): whether the batch's other copy runs on, so the loss is no
    /// failure.
    pub(super) fn lost(&mut self, id: u64, worker: u64) -> bool {
        match self.copies.get(&id) {
            Some(&(original, copy)) if worker == original || worker == copy => {
                self.copies.remove(&id);
                true
            }
            _ => false,
        }
    }
}
