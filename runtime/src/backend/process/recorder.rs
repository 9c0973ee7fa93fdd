//! What a traced process session keeps between events (`traced.rs`
//! records them).

use crate::trace::{Outcome, Trace};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// What a traced session keeps between events.
pub(super) struct Recorder {
    pub(super) trace: Arc<Trace>,
    /// Jobs that failed, by batch, until the batch's times come.
    pub(super) failed: HashMap<u64, Vec<(usize, Outcome)>>,
    /// Results coming back, by batch: when the first came, and bytes.
    pub(super) returned: HashMap<u64, (u64, u64)>,
    /// Segments seen already.
    pub(super) segments: HashSet<u64>,
    /// Workers seen already, by pid.
    pub(super) workers: HashSet<u32>,
    /// Deaths whose replacement has not started yet.
    pub(super) unreplaced: u32,
}

impl Recorder {
    pub(super) fn new(trace: &Arc<Trace>) -> Self {
        Recorder {
            trace: Arc::clone(trace),
            failed: HashMap::new(),
            returned: HashMap::new(),
            segments: HashSet::new(),
            workers: HashSet::new(),
            unreplaced: 0,
        }
    }

    /// Job `index` of batch `id` failed with `error`.
    pub(super) fn failed(&mut self, id: u64, index: usize, error: &crate::error::Error) {
        self.failed
            .entry(id)
            .or_default()
            .push((index, Outcome::of(error)));
    }
}
