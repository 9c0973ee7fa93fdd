//! Which job a worker is running, and since when, readable by the parent.
//!
//! A beacon is two atomic words: the running job's sequence number (or
//! [`IDLE`]) and its start time on `CLOCK_MONOTONIC`, which is one clock for
//! every process on the machine. A worker thread or process writes it before
//! each job of a batch, so the scheduler can enforce per-task timeouts and
//! name the exact job of a batch that a crashed worker was running, without
//! one message per job. A third word says which call a pool's chunk (one
//! job of many calls) is on, so a death in a chunk names its exact item.
//! A fourth word is the claim on a batch queued behind the running one
//! (see [`Beacon::offer`]): the parent can take such a batch back, to
//! give it to an idle worker, for as long as the worker has not claimed it.
//! For worker processes the words live in a `memfd` mapped by both sides;
//! for threads, on the heap.
//!
//! # Memory ordering
//!
//! There is one writer of the job words (the worker) and any number of
//! readers (the parent's scheduler and watcher), in other processes, so
//! the words are plain atomics in shared memory and no lock is taken.
//!
//! - **The running job is a seqlock on `seq`.** [`Beacon::start`] stores
//!   `IDLE`, then the start time and the call, then the new `seq`, each
//!   with `Release`. [`Beacon::running`] loads `seq`, the start time and
//!   `seq` again, each with `Acquire`, and retries when the two `seq`s
//!   differ. A reader that sees the new start time (`Acquire`, pairing
//!   with its `Release`) must then see `IDLE` or the new `seq`, never the
//!   old one, because the `IDLE` store came before it; and its second
//!   `seq` load cannot move before the start-time load, which is
//!   `Acquire`. So a pair `(seq, started)` it returns was written together.
//!   Sequence numbers do not repeat within a worker's batches, so there
//!   is no ABA. A torn read costs one more loop, never a wrong job.
//! - **`call` is advisory.** It is stored with `Release` as a chunk moves
//!   to its next call, and read with `Acquire` once the worker's pipe has
//!   closed (it died or is dying), to name the item in the error. A read
//!   that races the worker's last store names the call before; nothing
//!   but that message depends on it.
//! - **The claim word is decided by compare-and-swap.** The parent
//!   [`offer`](Beacon::offer)s a batch id (`Release`) before it sends the
//!   batch's frame, so the worker, which reads the frame after the pipe
//!   delivers it, finds the offer. The parent's
//!   [`take_back`](Beacon::take_back) swaps `id` for `id | TAKEN_BACK`; the
//!   worker's [`claim`](Beacon::claim) swaps `id` for 0. Both are `AcqRel`
//!   on one word, so exactly one of them succeeds: the batch runs here or
//!   is resent elsewhere, never both and never neither. The loser sees the
//!   winner's value and acts on it (the worker skips a taken-back batch
//!   and clears the word with `Release`, which the parent's `Acquire` in
//!   [`may_offer`](Beacon::may_offer) pairs with before the next offer).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The sequence number of a worker between jobs.
pub(crate) const IDLE: u64 = u64::MAX;

#[repr(C)]
struct Words {
    seq: AtomicU64,
    started_ns: AtomicU64,
    /// The call a chunk job (a pool's) is on, counted in the chunk.
    call: AtomicU64,
    /// The batch offered behind the running one ([`Beacon::offer`]), with
    /// [`TAKEN_BACK`] set once the parent took it back; 0 when none is.
    claim: AtomicU64,
}

/// Set in the claim word on a batch the parent took back.
const TAKEN_BACK: u64 = 1 << 63;

enum Storage {
    Heap(Box<Words>),
    Mapped {
        ptr: NonNull<Words>,
        len: usize,
        fd: Option<OwnedFd>,
    },
}

/// A shared record of the running job.
pub(crate) struct Beacon {
    storage: Storage,
}

// SAFETY: the mapped words are only accessed through atomics.
unsafe impl Send for Beacon {}
// SAFETY: as above.
unsafe impl Sync for Beacon {}

const MAP_LEN: usize = 4096;

impl Beacon {
    /// A beacon for a thread in this process.
    pub(crate) fn in_process() -> Beacon {
        Beacon {
            storage: Storage::Heap(Box::new(Words {
                seq: AtomicU64::new(IDLE),
                started_ns: AtomicU64::new(0),
                call: AtomicU64::new(0),
                claim: AtomicU64::new(0),
            })),
        }
    }

    /// A beacon in a fresh `memfd` (or, where memfds are refused, an
    /// unnamed file of the temp folder), to share with a worker process.
    pub(crate) fn shared() -> io::Result<Beacon> {
        let file = crate::shm::shared_file(MAP_LEN).map_err(io::Error::other)?;
        let fd = OwnedFd::from(file);
        let mut beacon = Beacon::map(fd.as_fd())?;
        if let Storage::Mapped { fd: slot, .. } = &mut beacon.storage {
            *slot = Some(fd);
        }
        beacon.idle();
        Ok(beacon)
    }

    /// Maps a beacon whose `memfd` was inherited (in the worker). A file
    /// shorter than a beacon is refused, so no access can fall past its end.
    pub(crate) fn map(fd: BorrowedFd<'_>) -> io::Result<Beacon> {
        let len = File::from(fd.try_clone_to_owned()?).metadata()?.len();
        if len < MAP_LEN as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a beacon needs {MAP_LEN} bytes, this file has {len}"),
            ));
        }
        let fd = fd.as_raw_fd();
        // SAFETY: a shared read-write mapping of MAP_LEN bytes of a file
        // that is at least that long (checked above; the parent never
        // shrinks it); checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAP_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Beacon {
            storage: Storage::Mapped {
                ptr: NonNull::new(ptr.cast()).expect("mmap returned a non-null pointer"),
                len: MAP_LEN,
                fd: None,
            },
        })
    }

    /// The `memfd` to pass to a worker process.
    pub(crate) fn fd(&self) -> Option<RawFd> {
        match &self.storage {
            Storage::Mapped { fd: Some(fd), .. } => Some(fd.as_raw_fd()),
            _ => None,
        }
    }

    fn words(&self) -> &Words {
        match &self.storage {
            Storage::Heap(words) => words,
            // SAFETY: the mapping lives as long as self and is page-aligned.
            Storage::Mapped { ptr, .. } => unsafe { ptr.as_ref() },
        }
    }

    /// Records that job `seq` starts now.
    pub(crate) fn start(&self, seq: u64) {
        self.start_at(seq, now_ns());
    }

    /// Records that job `seq` starts at `at` ([`now_ns`]'s clock), read by
    /// the caller: a worker reads the clock once between two jobs, for
    /// the end of one and the start of the next.
    pub(crate) fn start_at(&self, seq: u64, at: u64) {
        let w = self.words();
        w.seq.store(IDLE, Ordering::Release);
        w.started_ns.store(at, Ordering::Release);
        w.call.store(0, Ordering::Release);
        w.seq.store(seq, Ordering::Release);
    }

    /// Records that the running chunk job starts its call `call`.
    pub(crate) fn at_call(&self, call: usize) {
        self.words().call.store(call as u64, Ordering::Release);
    }

    /// The call the running chunk job is on (0 for a job of one call).
    pub(crate) fn running_call(&self) -> usize {
        self.words().call.load(Ordering::Acquire) as usize
    }

    /// Records that no job runs.
    pub(crate) fn idle(&self) {
        self.words().seq.store(IDLE, Ordering::Release);
    }

    /// Whether no offered batch is outstanding: the last one offered was
    /// claimed, or was taken back and skipped. Only then may the parent
    /// offer another.
    pub(crate) fn may_offer(&self) -> bool {
        self.words().claim.load(Ordering::Acquire) == 0
    }

    /// Marks batch `id` (non-zero) as offered: queued behind the running
    /// batch, and so still the parent's to take back until the worker
    /// claims it. Called before the batch's frame is sent.
    pub(crate) fn offer(&self, id: u64) {
        debug_assert!(id != 0 && id & TAKEN_BACK == 0 && self.may_offer());
        self.words().claim.store(id, Ordering::Release);
    }

    /// The parent takes offered batch `id` back; false when the worker has
    /// claimed it already (it is running, or ran). One compare-and-swap
    /// decides, so a batch is never both run here and sent elsewhere.
    pub(crate) fn take_back(&self, id: u64) -> bool {
        self.words()
            .claim
            .compare_exchange(id, id | TAKEN_BACK, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The worker, about to start batch `id`: false when the parent took
    /// it back, and the batch must be skipped without an answer. A batch
    /// that was never offered (sent to an idle worker) is always the
    /// worker's.
    pub(crate) fn claim(&self, id: u64) -> bool {
        let claim = &self.words().claim;
        let now = claim.load(Ordering::Acquire);
        if now == id | TAKEN_BACK {
            claim.store(0, Ordering::Release);
            return false;
        }
        if now != id {
            return true;
        }
        match claim.compare_exchange(id, 0, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(_) => {
                // Taken back between the load and the swap.
                claim.store(0, Ordering::Release);
                false
            }
        }
    }

    cfg_mpi! {
        /// The running job's sequence number, if one runs: one atomic load,
        /// safe in a signal handler.
        pub(crate) fn running_seq(&self) -> Option<u64> {
            Some(self.words().seq.load(Ordering::Acquire)).filter(|&s| s != IDLE)
        }
    }

    /// The running job and how long it has run, if one runs.
    pub(crate) fn running(&self) -> Option<(u64, Duration)> {
        let w = self.words();
        loop {
            let seq = w.seq.load(Ordering::Acquire);
            if seq == IDLE {
                return None;
            }
            let started = w.started_ns.load(Ordering::Acquire);
            if w.seq.load(Ordering::Acquire) == seq {
                return Some((seq, Duration::from_nanos(now_ns().saturating_sub(started))));
            }
        }
    }
}

impl Drop for Beacon {
    fn drop(&mut self) {
        if let Storage::Mapped { ptr, len, .. } = &self.storage {
            // SAFETY: unmapping our own mapping once.
            unsafe { libc::munmap(ptr.as_ptr().cast(), *len) };
        }
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process.
pub(crate) use crate::trace::now_ns;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_mapping_sees_the_first_ones_writes() {
        let parent = Beacon::shared().unwrap();
        // SAFETY: `parent` owns the fd and outlives this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(parent.fd().unwrap()) };
        let child = Beacon::map(fd).unwrap();
        assert_eq!(parent.running(), None);
        child.start(41);
        std::thread::sleep(Duration::from_millis(5));
        let (seq, ran) = parent.running().unwrap();
        assert_eq!(seq, 41);
        assert!(ran >= Duration::from_millis(5));
        child.idle();
        assert_eq!(parent.running(), None);
    }

    #[test]
    fn an_offered_batch_goes_to_whoever_decides_first() {
        let parent = Beacon::shared().unwrap();
        // SAFETY: `parent` owns the fd and outlives this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(parent.fd().unwrap()) };
        let child = Beacon::map(fd).unwrap();
        // Never offered: the worker's.
        assert!(child.claim(3));
        // Offered, then claimed: the parent can no longer take it back.
        parent.offer(4);
        assert!(!parent.may_offer());
        assert!(child.claim(4));
        assert!(!parent.take_back(4));
        assert!(parent.may_offer());
        // Offered, then taken back: the worker skips it, and only then
        // may another be offered.
        parent.offer(5);
        assert!(parent.take_back(5));
        assert!(!parent.may_offer());
        assert!(!child.claim(5));
        assert!(parent.may_offer());
        // A batch sent to the idle worker after that one is its own.
        assert!(child.claim(6));
    }
}
