//! Results in input order. Batches arrive whole: a batch that continues
//! the ready run is appended as a chunk, an early one waits in a map. Both
//! cost one operation per batch, and draining chunks into a `Vec` is a
//! copy. Under `on_error = "continue"` a failed item is a *gap*: a place
//! in the order that yields its error instead of a value.

use std::collections::{BTreeMap, VecDeque};

/// What a place in the order holds.
#[derive(Debug, PartialEq)]
pub(crate) enum Slot<R> {
    Value(R),
    /// The item at this input index failed; its error is kept apart.
    Gap(usize),
}

/// Consecutive places: the values of a batch's jobs, or one failed item.
enum Piece<R> {
    Values(std::vec::IntoIter<R>),
    Gap(usize),
}

impl<R> Piece<R> {
    fn len(&self) -> usize {
        match self {
            Piece::Values(values) => values.len(),
            Piece::Gap(_) => 1,
        }
    }
}

pub(crate) struct Reorder<R> {
    /// Ready pieces, contiguous from the next index to yield.
    chunks: VecDeque<Piece<R>>,
    /// The index after the last ready piece.
    ready_end: usize,
    /// Pieces that arrived before an earlier one, by first index.
    waiting: BTreeMap<usize, Piece<R>>,
}

impl<R> Reorder<R> {
    pub(crate) fn new() -> Self {
        Reorder {
            chunks: VecDeque::new(),
            ready_end: 0,
            waiting: BTreeMap::new(),
        }
    }

    /// Adds the results of consecutive jobs starting at `first`.
    pub(crate) fn insert(&mut self, first: usize, results: Vec<R>) {
        if !results.is_empty() {
            self.place(first, Piece::Values(results.into_iter()));
        }
    }

    /// Marks the item at `index` as failed.
    pub(crate) fn insert_gap(&mut self, index: usize) {
        self.place(index, Piece::Gap(index));
    }

    fn place(&mut self, first: usize, piece: Piece<R>) {
        if first != self.ready_end {
            self.waiting.insert(first, piece);
            return;
        }
        self.ready_end += piece.len();
        self.chunks.push_back(piece);
        while let Some(more) = self.waiting.remove(&self.ready_end) {
            self.ready_end += more.len();
            self.chunks.push_back(more);
        }
    }

    pub(crate) fn pop(&mut self) -> Option<Slot<R>> {
        loop {
            match self.chunks.front_mut()? {
                Piece::Values(values) => {
                    if let Some(value) = values.next() {
                        return Some(Slot::Value(value));
                    }
                }
                Piece::Gap(index) => {
                    let index = *index;
                    self.chunks.pop_front();
                    return Some(Slot::Gap(index));
                }
            }
            self.chunks.pop_front();
        }
    }

    /// Moves every ready value to `out`, up to the first gap; returns how
    /// many.
    pub(crate) fn drain_into(&mut self, out: &mut Vec<R>) -> usize {
        let before = out.len();
        while let Some(Piece::Values(values)) = self.chunks.front_mut() {
            out.extend(values);
            self.chunks.pop_front();
        }
        out.len() - before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(r: &mut Reorder<&'static str>) -> Vec<Slot<&'static str>> {
        std::iter::from_fn(|| r.pop()).collect()
    }

    #[test]
    fn the_reorder_buffer_releases_only_contiguous_results() {
        let mut r = Reorder::new();
        r.insert(2, vec!["c", "d"]);
        assert_eq!(r.pop(), None);
        r.insert(0, vec!["a"]);
        assert_eq!(r.pop(), Some(Slot::Value("a")));
        assert_eq!(r.pop(), None);
        r.insert(1, vec!["b"]);
        assert_eq!(
            all(&mut r),
            [Slot::Value("b"), Slot::Value("c"), Slot::Value("d")]
        );
    }

    #[test]
    fn a_gap_holds_its_place_and_lets_later_results_through() {
        let mut r = Reorder::new();
        r.insert(2, vec!["c"]);
        r.insert_gap(1);
        assert_eq!(r.pop(), None);
        r.insert(0, vec!["a"]);
        let mut out = Vec::new();
        assert_eq!(r.drain_into(&mut out), 1, "a drain stops at the gap");
        assert_eq!(out, ["a"]);
        assert_eq!(all(&mut r), [Slot::Gap(1), Slot::Value("c")]);
    }
}
