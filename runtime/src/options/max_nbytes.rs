//! joblib's `max_nbytes`, the size over which a slice of numbers reaches
//! process workers through shared memory.

use crate::error::{Error, Result};
use std::str::FromStr;

/// joblib's `max_nbytes`: a slice of numbers larger than this goes to a
/// process worker through shared memory, not inline (see [`crate::shm`]).
///
/// `From<u64>` gives a size, and `From<Option<u64>>` takes joblib's
/// `None`, which turns the automatic path off; `"1M"` and `"none"` parse.
///
/// ```
/// use parjob_runtime::MaxNbytes;
/// assert_eq!("1M".parse::<MaxNbytes>().unwrap(), MaxNbytes::Bytes(1 << 20));
/// assert_eq!("None".parse::<MaxNbytes>().unwrap(), MaxNbytes::Off);
/// assert_eq!(MaxNbytes::from(None), MaxNbytes::Off);
/// assert_eq!(MaxNbytes::default().limit(), Some(1 << 20));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaxNbytes {
    /// Larger than this many bytes goes to shared memory (default 1 MiB).
    Bytes(u64),
    /// Never automatically: arguments are encoded inline (joblib's `None`).
    /// A [`SharedSlice`](crate::shm::SharedSlice) is still shared.
    Off,
}

impl MaxNbytes {
    /// The threshold, `None` when off.
    pub fn limit(self) -> Option<u64> {
        match self {
            MaxNbytes::Bytes(n) => Some(n),
            MaxNbytes::Off => None,
        }
    }
}

impl Default for MaxNbytes {
    fn default() -> Self {
        MaxNbytes::Bytes(1 << 20)
    }
}

impl From<u64> for MaxNbytes {
    fn from(bytes: u64) -> Self {
        MaxNbytes::Bytes(bytes)
    }
}

impl From<Option<u64>> for MaxNbytes {
    fn from(bytes: Option<u64>) -> Self {
        bytes.map_or(MaxNbytes::Off, MaxNbytes::Bytes)
    }
}

impl FromStr for MaxNbytes {
    type Err = Error;

    /// A size (`"1M"`, `"4096"`) or `"none"`.
    fn from_str(s: &str) -> Result<Self> {
        parjob_syntax::max_nbytes(s)
            .map(MaxNbytes::from)
            .ok_or_else(|| {
                Error::Config(format!(
                    "max_nbytes = {s:?}: expected a size like \"1M\" or \"4096\", or \"none\""
                ))
            })
    }
}
