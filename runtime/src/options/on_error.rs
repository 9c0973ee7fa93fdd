//! `on_error`: what one failed item does to the rest of a run.

use crate::error::{Error, Result};
use std::str::FromStr;

/// What a failed item (a panic, a dead worker, a timeout, a codec error)
/// does to the rest of the run.
///
/// ```
/// use parjob_runtime::OnError;
///
/// assert_eq!("continue".parse::<OnError>().unwrap(), OnError::Continue);
/// assert!("ignore".parse::<OnError>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnError {
    /// joblib's behaviour: the first error cancels the rest, and the run
    /// returns that error.
    #[default]
    Stop,
    /// Every item runs: a failure is that item's `Err`, in its place, and
    /// the run goes on (`f::map_results`, `Parallel::run_results`, and
    /// `iter`/`iter_unordered`, which then yield each failure and keep
    /// going). One failure costs only its own item: on worker processes
    /// it is reported as a piece of its batch and the batch goes on;
    /// elsewhere each batch holds one job.
    Continue,
}

impl FromStr for OnError {
    type Err = Error;

    /// `"stop"` or `"continue"`.
    fn from_str(s: &str) -> Result<Self> {
        match parjob_syntax::on_error_continues(s) {
            Some(false) => Ok(OnError::Stop),
            Some(true) => Ok(OnError::Continue),
            None => Err(Error::Config(format!(
                "on_error = {s:?}: expected \"stop\" (the first error ends the run) or \"continue\" (every item runs)"
            ))),
        }
    }
}
