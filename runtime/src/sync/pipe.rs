//! [`Pipe`]: two connected ends, each sending to the other, made of two
//! [`Queue`]s (`multiprocessing.Pipe()`).

use super::queue::Queue;
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How many items a pipe direction holds before `send` waits.
const PIPE_ITEMS: usize = 1024;

/// Makes connected pipe ends: [`Pipe::new`].
#[derive(Debug)]
pub struct Pipe;

/// One end of a [`Pipe`]: it sends to the other end and receives what the
/// other end sends. Give one end to a task and keep the other.
///
/// ```
/// use parjob_runtime::sync::Pipe;
/// let (here, there) = Pipe::new::<u32>()?;
/// here.send(&7)?;
/// assert_eq!(there.recv()?, 7);
/// there.send(&8)?;
/// assert_eq!(here.recv()?, 8);
/// there.close();
/// assert!(here.recv().is_err(), "the other end closed");
/// # Ok::<(), parjob_runtime::Error>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Connection<T> {
    outgoing: Queue<T>,
    incoming: Queue<T>,
}

impl<T> Clone for Connection<T> {
    fn clone(&self) -> Self {
        Connection {
            outgoing: self.outgoing.clone(),
            incoming: self.incoming.clone(),
        }
    }
}

impl Pipe {
    /// Two connected ends, each holding up to 1,024 unread items in a ring
    /// of 1 MiB.
    ///
    /// # Errors
    /// `Error::SharedMemory` when no shared memory can be had.
    #[allow(clippy::new_ret_no_self)]
    pub fn new<T: Serialize + DeserializeOwned>() -> Result<(Connection<T>, Connection<T>)> {
        let a = Queue::new(PIPE_ITEMS)?;
        let b = Queue::new(PIPE_ITEMS)?;
        Ok((
            Connection {
                outgoing: a.clone(),
                incoming: b.clone(),
            },
            Connection {
                outgoing: b,
                incoming: a,
            },
        ))
    }
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Sends `item` to the other end, waiting while it has 1,024 unread.
    ///
    /// # Errors
    /// `Error::Closed` once this end was closed; `Error::Sync` when the
    /// item cannot be encoded or is over 1 MiB.
    pub fn send(&self, item: &T) -> Result<()> {
        self.outgoing.put(item).map_err(rename)
    }

    /// Receives the next item from the other end.
    ///
    /// # Errors
    /// `Error::Closed` once the other end closed and everything it sent
    /// was received.
    pub fn recv(&self) -> Result<T> {
        self.incoming.get().map_err(rename)
    }

    /// Receives an item if one is waiting.
    ///
    /// # Errors
    /// As [`Connection::recv`].
    pub fn try_recv(&self) -> Result<Option<T>> {
        self.incoming.try_get().map_err(rename)
    }

    /// Receives the next item, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Connection::recv`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<T>> {
        self.incoming.get_timeout(timeout).map_err(rename)
    }

    /// Whether an item is waiting (Python's `poll()`).
    pub fn poll(&self) -> bool {
        !self.incoming.is_empty()
    }

    /// Closes this end's sending side: the other end receives what was
    /// sent, then `Error::Closed`.
    pub fn close(&self) {
        self.outgoing.close();
    }
}

fn rename(e: Error) -> Error {
    match e {
        Error::Closed(_) => Error::Closed("pipe"),
        other => other,
    }
}

impl<T> std::fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}
