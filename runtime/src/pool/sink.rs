//! Where a pool's finished chunks go: [`Sink`], the manager's view of a
//! submission, and its two kinds, a list collected into one result
//! ([`Collect`], behind `map`, `apply` and their async forms) and a stream
//! of chunks for `imap` ([`Stream`]).

use super::result::Slot;
use crate::error::Error;
use crate::task::chunk::ChunkOut;
use crate::task::AnyOutput;
use std::collections::BTreeMap;
use std::sync::mpsc::Sender;
use std::sync::Arc;

/// A job that the callback thread runs.
pub(crate) type Callback = Box<dyn FnOnce() + Send>;

/// A submission as the manager thread sees it.
pub(crate) trait Sink: Send {
    /// The chunk of `len` items at `offset` ended: its output (a boxed `ChunkOut` of the
    /// submission's result type), or the failure that ended it as a whole.
    fn chunk(&mut self, offset: usize, len: usize, out: Option<AnyOutput>, failure: Option<Error>);
    /// Every chunk has ended.
    fn end(self: Box<Self>);
}

/// Unboxes a chunk's output, with its failure's index moved to the
/// submission's (`offset` + its index in the chunk).
pub(crate) fn unbox<R: 'static>(out: AnyOutput, offset: usize) -> ChunkOut<R> {
    match out.downcast::<ChunkOut<R>>() {
        Ok(chunk) => ChunkOut {
            values: chunk.values,
            failure: chunk.failure.map(|e| e.reindex(|i| offset + i)),
        },
        Err(_) => ChunkOut {
            values: Vec::new(),
            failure: Some(Error::Pool("a chunk of another result type".into())),
        },
    }
}

/// Collects a submission's values into one result: the first error in
/// completion order, or `finish` of the values in input order.
pub(crate) struct Collect<R, T> {
    /// Each chunk's values, by offset.
    chunks: BTreeMap<usize, Vec<R>>,
    /// How many values the submission has.
    len: usize,
    error: Option<Error>,
    finish: fn(Vec<R>) -> T,
    slot: Arc<Slot<T>>,
    /// Set when the submission has callbacks: the result is set on the
    /// callback thread, which runs them.
    callbacks: Option<Sender<Callback>>,
}

impl<R, T> Collect<R, T> {
    pub(crate) fn new(
        len: usize,
        finish: fn(Vec<R>) -> T,
        slot: Arc<Slot<T>>,
        callbacks: Option<Sender<Callback>>,
    ) -> Self {
        Collect {
            chunks: BTreeMap::new(),
            len,
            error: None,
            finish,
            slot,
            callbacks,
        }
    }
}

impl<R: Send + 'static, T: Send + 'static> Sink for Collect<R, T> {
    fn chunk(
        &mut self,
        offset: usize,
        _len: usize,
        out: Option<AnyOutput>,
        failure: Option<Error>,
    ) {
        if let Some(out) = out {
            let chunk = unbox::<R>(out, offset);
            if let Some(e) = chunk.failure {
                self.error.get_or_insert(e);
            }
            if self.error.is_none() {
                self.chunks.insert(offset, chunk.values);
            }
        }
        if let Some(e) = failure {
            self.error.get_or_insert(e);
        }
    }

    fn end(self: Box<Self>) {
        let Collect {
            chunks,
            len,
            error,
            finish,
            slot,
            callbacks,
        } = *self;
        let result = match error {
            Some(e) => Err(e),
            None => in_order(chunks, len).map(finish),
        };
        match callbacks {
            Some(tx) => {
                let set = move || slot.set(result);
                if let Err(unsent) = tx.send(Box::new(set)) {
                    // The callback thread is gone (the pool is ending):
                    // run them here rather than lose the result.
                    (unsent.0)();
                }
            }
            None => slot.set(result),
        }
    }
}

/// The chunks' values joined in order, which must be `len` in all, with
/// no gap.
fn in_order<R>(chunks: BTreeMap<usize, Vec<R>>, len: usize) -> Result<Vec<R>, Error> {
    let mut values = Vec::with_capacity(len);
    for (offset, chunk) in chunks {
        if offset != values.len() {
            break;
        }
        values.extend(chunk);
    }
    if values.len() != len {
        return Err(Error::Pool(format!(
            "the chunks ended with {} of {len} values",
            values.len()
        )));
    }
    Ok(values)
}

/// One chunk's output, for an `imap` iterator.
pub(crate) struct ChunkDone {
    pub(crate) offset: usize,
    pub(crate) len: usize,
    pub(crate) out: Option<AnyOutput>,
    pub(crate) failure: Option<Error>,
}

/// Sends each finished chunk to an `imap` iterator.
pub(crate) struct Stream {
    pub(crate) base: usize,
    pub(crate) tx: Sender<ChunkDone>,
}

impl Sink for Stream {
    fn chunk(&mut self, offset: usize, len: usize, out: Option<AnyOutput>, failure: Option<Error>) {
        // An iterator dropped early no longer listens: fine.
        let _ = self.tx.send(ChunkDone {
            offset: self.base + offset,
            len,
            out,
            failure: failure.map(|e| e.reindex(|i| self.base + i)),
        });
    }

    fn end(self: Box<Self>) {}
}
