//! `on_error = "continue"` on worker processes, with batches kept whole.
//!
//! A failed job is reported at once, as a piece of its batch of its own
//! (`Finished::more`), and the batch goes on:
//! - a panic or a codec failure: the worker runs the batch's later jobs
//!   anyway, and their values make the next piece;
//! - a death or a timeout of job `j`: the values that came make a piece,
//!   `j` is a piece with its error, the jobs before `j` whose values died
//!   with the worker run again (cut from the batch's kept frame, as a
//!   retry is), and the jobs after `j` follow in a frame of their own.
//!
//! So a failure costs only its own item, and batching stays. (Under
//! `retries` or `speculate` together with "continue", a batch holds one
//! job instead: see `config.rs`.)

use super::session::ProcessSession;
use crate::backend::Finished;
use crate::error::Error;
use crate::task::Work;
use std::time::Duration;

impl<W: Work> ProcessSession<W> {
    /// Job `error.index()` of batch `id` died with its worker or timed
    /// out, under "continue": reports it and the values that came, and
    /// sends the rest of the batch on.
    pub(super) fn continue_past(&mut self, id: u64, error: Error, call: usize) {
        let Some(b) = self.batches.get_mut(&id) else {
            return;
        };
        let received = b.values();
        let failed = b.failed_job(&error);
        if let Some(piece) = b.values_piece() {
            self.here.push_back(piece);
        }
        self.here.push_back(Finished {
            first: b.first + failed,
            jobs: 1,
            values: Vec::new(),
            failure: Some(error),
            elapsed: Duration::ZERO,
            call,
            more: true,
            times: None,
        });
        b.extra.skip = Some(failed);
        if received < failed {
            // The jobs whose values died with the worker run again.
            match b.extra.cut(received, failed - received) {
                Ok(()) => self.place_or_fail(id, "the rest of a batch"),
                Err(e) => self.end_failed(id, |_| e, 0),
            }
        } else {
            self.past_reported(id);
        }
    }

    /// Batch `id`'s current attempt has answered: counts the job whose
    /// failure was reported already, then sends the jobs after it, or
    /// ends the batch when none is left.
    pub(super) fn past_reported(&mut self, id: u64) {
        let Some(b) = self.batches.get_mut(&id) else {
            return;
        };
        if let Some(at) = b.extra.skip.take() {
            if let Some(piece) = b.skip_reported(at) {
                self.here.push_back(piece);
            }
        }
        let at = b.answered();
        if at < b.len {
            match b.extra.cut(at, b.len - at) {
                Ok(()) => self.place_or_fail(id, "the rest of a batch"),
                Err(e) => self.end_failed(id, |_| e, 0),
            }
        } else if let Some(b) = self.batches.remove(&id) {
            let (done, _) = b.finish(Duration::ZERO, |_| unreachable!("every job answered"));
            self.here.push_back(done);
        }
    }
}
