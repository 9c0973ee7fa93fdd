//! Nonblocking MPI messages for the one thread that talks MPI.
//!
//! Sends are `MPI_Isend`s whose buffers the [`Link`] owns until `MPI_Test`
//! says they are done; sends beyond a cap on the bytes in flight wait in a
//! queue, so what MPI holds on this rank's behalf stays bounded whatever
//! the scheduler hands over. Receives are `MPI_Improbe` and `MPI_Mrecv`:
//! the size is known before a buffer is taken, and the buffer is reserved
//! fallibly. Nothing here blocks, so `MPI_THREAD_FUNNELED` is enough.

use crate::shm::Segment;
use mpi::ffi;
use std::collections::VecDeque;
use std::ops::Range;
use std::os::raw::c_int;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a message carries; the link keeps it alive until MPI is done.
pub(crate) enum Body {
    /// Bytes of its own.
    Bytes(Vec<u8>),
    /// A range of a shared-memory segment, sent from its mapping.
    Segment(Arc<Segment>, Range<usize>),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Bytes(b) => b,
            Body::Segment(s, range) => &s.bytes()[range.clone()],
        }
    }
}

/// A destination: a communicator and a rank in it (for an
/// intercommunicator, a rank of the remote group).
#[derive(Clone, Copy)]
pub(crate) struct Address {
    pub(crate) comm: ffi::MPI_Comm,
    pub(crate) rank: c_int,
}

struct Pending {
    request: ffi::MPI_Request,
    len: usize,
    // Owned until the request completes: MPI reads from it.
    _body: Body,
}

/// The sends and receives of the MPI thread.
pub(crate) struct Link {
    queued: VecDeque<(Address, c_int, Body)>,
    pending: Vec<Pending>,
    in_flight: usize,
    cap: usize,
    /// Bytes and messages handed to MPI so far.
    pub(crate) bytes_sent: u64,
    pub(crate) messages_sent: u64,
}

/// A message that has arrived and is waiting to be received.
pub(crate) struct Probed {
    pub(crate) source: c_int,
    pub(crate) tag: c_int,
    pub(crate) len: usize,
    message: ffi::MPI_Message,
}

/// The largest message: MPI counts in `int`.
pub(crate) const MAX_MESSAGE: usize = 1 << 30;

impl Link {
    /// A link that keeps at most `cap` bytes in flight (one message over
    /// the cap still goes when nothing else is in flight).
    pub(crate) fn new(cap: usize) -> Link {
        Link {
            queued: VecDeque::new(),
            pending: Vec::new(),
            in_flight: 0,
            cap,
            bytes_sent: 0,
            messages_sent: 0,
        }
    }

    /// Queues a message; [`Link::progress`] starts it.
    pub(crate) fn send(&mut self, to: Address, tag: c_int, body: Body) {
        debug_assert!(body.bytes().len() <= i32::MAX as usize);
        self.queued.push_back((to, tag, body));
    }

    /// Whether every message has been sent and completed.
    pub(crate) fn is_idle(&self) -> bool {
        self.queued.is_empty() && self.pending.is_empty()
    }

    /// Completes finished sends and starts queued ones under the cap.
    /// Returns whether anything moved.
    pub(crate) fn progress(&mut self) -> bool {
        let mut moved = false;
        let mut k = 0;
        while k < self.pending.len() {
            let mut done: c_int = 0;
            // SAFETY: the request is live (not yet completed) and owned here.
            unsafe {
                let mut status = std::mem::zeroed::<ffi::MPI_Status>();
                ffi::MPI_Test(&mut self.pending[k].request, &mut done, &mut status);
            }
            if done != 0 {
                let p = self.pending.swap_remove(k);
                self.in_flight -= p.len;
                moved = true;
            } else {
                k += 1;
            }
        }
        while let Some((_, _, body)) = self.queued.front() {
            let len = body.bytes().len();
            if self.in_flight > 0 && self.in_flight + len > self.cap {
                break;
            }
            let (to, tag, body) = self.queued.pop_front().expect("front was checked");
            let bytes = body.bytes();
            // SAFETY: a zeroed request is a valid out-parameter.
            let mut request = unsafe { std::mem::zeroed::<ffi::MPI_Request>() };
            // SAFETY: `bytes` stays alive and unmoved in `pending` until
            // MPI_Test reports the send complete; the count fits an int.
            unsafe {
                ffi::MPI_Isend(
                    bytes.as_ptr().cast(),
                    len as c_int,
                    ffi::RSMPI_UINT8_T,
                    to.rank,
                    tag,
                    to.comm,
                    &mut request,
                );
            }
            self.in_flight += len;
            self.bytes_sent += len as u64;
            self.messages_sent += 1;
            self.pending.push(Pending {
                request,
                len,
                _body: body,
            });
            moved = true;
        }
        moved
    }
}

/// A message from `source` (or any source) on `comm` that has arrived.
pub(crate) fn probe(comm: ffi::MPI_Comm, source: Option<c_int>) -> Option<Probed> {
    let mut flag: c_int = 0;
    // SAFETY: zeroed handles and status are valid out-parameters.
    let (mut message, mut status) = unsafe {
        (
            std::mem::zeroed::<ffi::MPI_Message>(),
            std::mem::zeroed::<ffi::MPI_Status>(),
        )
    };
    // SAFETY: plain nonblocking probe on a live communicator.
    unsafe {
        ffi::MPI_Improbe(
            source.unwrap_or(ffi::RSMPI_ANY_SOURCE),
            ffi::RSMPI_ANY_TAG,
            comm,
            &mut flag,
            &mut message,
            &mut status,
        );
    }
    if flag == 0 {
        return None;
    }
    let mut count: c_int = 0;
    // SAFETY: `status` was filled by the probe above.
    unsafe { ffi::MPI_Get_count(&status, ffi::RSMPI_UINT8_T, &mut count) };
    Some(Probed {
        source: status.MPI_SOURCE,
        tag: status.MPI_TAG,
        len: count.max(0) as usize,
        message,
    })
}

impl Probed {
    /// Receives the message into `out`, which must be exactly its length.
    pub(crate) fn receive_into(mut self, out: &mut [u8]) {
        assert_eq!(
            out.len(),
            self.len,
            "a receive buffer of the message's size"
        );
        // SAFETY: `out` holds exactly the message's bytes; the message
        // handle came from MPI_Improbe and is received once.
        unsafe {
            let mut status = std::mem::zeroed::<ffi::MPI_Status>();
            ffi::MPI_Mrecv(
                out.as_mut_ptr().cast(),
                self.len as c_int,
                ffi::RSMPI_UINT8_T,
                &mut self.message,
                &mut status,
            );
        }
    }

    /// Receives the message into a new buffer, reserved fallibly; a
    /// message over `limit` bytes is received and dropped, and is `Err`.
    pub(crate) fn receive(self, limit: usize) -> Result<Vec<u8>, String> {
        let len = self.len;
        let mut buf = Vec::new();
        if len > limit || buf.try_reserve_exact(len).is_err() {
            // Receive it anyway, in pieces of nothing: MPI needs the
            // message matched, and a truncating receive is an error.
            self.discard();
            return Err(format!(
                "a {len}-byte message could not be received (limit {limit} bytes)"
            ));
        }
        buf.resize(len, 0);
        self.receive_into(&mut buf);
        Ok(buf)
    }

    /// Receives the message into a scratch buffer and drops it.
    fn discard(self) {
        let mut scratch = vec![0u8; 1 << 20];
        let len = self.len;
        if len <= scratch.len() {
            scratch.truncate(len);
            self.receive_into(&mut scratch);
        } else {
            // A message this large that cannot be held: nothing sane is left.
            // SAFETY: MPI_Abort ends the job; no Rust state outlives it.
            unsafe { ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, 70) };
        }
    }
}

/// Waits between polls that found nothing.
///
/// MPI's shared-memory and TCP transports give no file descriptor to sleep
/// on, and OpenMPI's own blocking calls spin on its progress engine. So
/// for [`SPIN`] after the last activity this polls again at once (the
/// caller yields its CPU between polls): a message that comes in that
/// window, as the next one-job batch does after an answer, is picked up
/// within microseconds. Past the window the waits grow from 10 us to
/// `max`, so an idle MPI thread costs little CPU.
pub(crate) struct Backoff {
    since: Instant,
    idle_rounds: u32,
    max: Duration,
}

/// How long after the last activity an MPI thread polls without sleeping.
pub(crate) const SPIN: Duration = Duration::from_micros(100);

impl Backoff {
    pub(crate) fn new(max: Duration) -> Backoff {
        Backoff {
            since: Instant::now(),
            idle_rounds: 0,
            max,
        }
    }

    /// Something moved: poll again at once, for the next [`SPIN`].
    pub(crate) fn reset(&mut self) {
        self.since = Instant::now();
        self.idle_rounds = 0;
    }

    /// How long to wait before the next poll, at most `cap` (shorter than
    /// the maximum while an answer is expected soon).
    pub(crate) fn next(&mut self, cap: Option<Duration>) -> Duration {
        self.next_at(Instant::now(), cap)
    }

    fn next_at(&mut self, now: Instant, cap: Option<Duration>) -> Duration {
        if now.saturating_duration_since(self.since) < SPIN {
            return Duration::ZERO;
        }
        self.idle_rounds = self.idle_rounds.saturating_add(1);
        let micros = 10u64 << (self.idle_rounds - 1).min(10);
        let max = cap.map_or(self.max, |c| c.min(self.max));
        Duration::from_micros(micros).min(max)
    }
}

/// Makes this thread's timed waits end when asked, not up to 50 us later
/// (the kernel's default timer slack): an MPI thread's short waits are
/// what a round trip waits on.
pub(crate) fn precise_timers() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer and sets an attribute of
    // the calling thread only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0) };
}

#[cfg(test)]
pub(super) fn backoff_after(b: &mut Backoff, idle: Duration, cap: Option<Duration>) -> Duration {
    let at = b.since + idle;
    b.next_at(at, cap)
}

