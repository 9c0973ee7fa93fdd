//! Which segments a run shares, and which segments a worker holds.
//!
//! **In the parent.** A run (one scheduler stream) owns a [`Sharing`]: its
//! `max_nbytes` and a registry of the segments it made, keyed by the
//! address and length of the buffer they copy. The stream enters it while
//! it draws jobs and hands them to the backend, so a borrowed slice over
//! the threshold becomes one segment however many jobs borrow it (joblib's
//! per-array registry). Only borrowed buffers are keyed by address: a
//! borrow lasts as long as the stream's input, so the address cannot be
//! reused for other data while the registry lives. An owned `Vec` gets a
//! segment of its own.
//!
//! While a job's arguments are encoded for a worker, [`collecting`]
//! records the segments they reference, so the backend can pass their
//! descriptors before the batch that needs them.
//!
//! **In a worker.** The segments received from the parent are kept by id
//! until the parent says to forget them, at the end of its run.

use super::backing::Place;
use super::fdpass;
use super::segment::Segment;
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One run's shared memory: its threshold and its segments.
pub(crate) struct Sharing {
    /// Arguments larger than this many bytes go to shared memory;
    /// `u64::MAX` turns the automatic path off.
    max_nbytes: AtomicU64,
    /// Where its segments are made: a memfd, or the run's `temp_folder`.
    place: Mutex<Place>,
    by_buffer: Mutex<HashMap<(usize, usize), Arc<Segment>>>,
}

/// The mark a [`SharedSliceMut`](super::SharedSliceMut) counts to know
/// whether its chunks are all back.
pub(crate) struct Lent;

/// What the values encoded for a worker reference: the segments to pass,
/// and the lent chunks to hold until the batch is answered (so the buffer
/// is not readable while a worker may still write it).
#[derive(Default)]
pub(crate) struct Collected {
    pub(crate) segments: Vec<Arc<Segment>>,
    pub(crate) lent: Vec<Arc<Lent>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Sharing>>> = const { RefCell::new(None) };
    static COLLECTED: RefCell<Option<Collected>> = const { RefCell::new(None) };
}

impl Sharing {
    /// A run's sharing, with its `max_nbytes` and `temp_folder`.
    pub(crate) fn new(max_nbytes: Option<u64>, temp_folder: Option<PathBuf>) -> Arc<Sharing> {
        Arc::new(Sharing {
            max_nbytes: AtomicU64::new(max_nbytes.unwrap_or(u64::MAX)),
            place: Mutex::new(Place::for_folder(temp_folder)),
            by_buffer: Mutex::new(HashMap::new()),
        })
    }

    /// Sets the threshold and the folder once the run's plan is known (a
    /// job drawn before it, to learn the task, was drawn under the
    /// caller's options).
    pub(crate) fn set_plan(&self, max_nbytes: Option<u64>, temp_folder: Option<PathBuf>) {
        self.max_nbytes
            .store(max_nbytes.unwrap_or(u64::MAX), Ordering::Relaxed);
        *lock(&self.place) = Place::for_folder(temp_folder);
    }

    fn create(&self, bytes: &[u8]) -> Result<Segment, String> {
        let place = lock(&self.place).clone();
        Segment::create_in(bytes, &place)
    }

    /// Makes this the current thread's sharing until the guard drops.
    pub(crate) fn enter(self: &Arc<Self>) -> Entered {
        let previous = CURRENT.with(|c| c.replace(Some(Arc::clone(self))));
        Entered { previous }
    }

    /// How many segments this run made (a test hook).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_buffer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

/// Restores the previous sharing when dropped.
pub(crate) struct Entered {
    previous: Option<Arc<Sharing>>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

fn over_threshold(sharing: &Sharing, bytes: &[u8]) -> bool {
    let max = sharing.max_nbytes.load(Ordering::Relaxed);
    max != u64::MAX && !bytes.is_empty() && bytes.len() as u64 > max
}

/// The current run's segment for a borrowed buffer over its `max_nbytes`:
/// made on first use, then the same for every job. `None` when no run is
/// current or the buffer is small; the segment's error when it could not
/// be made (the caller decides what a job then holds).
pub(crate) fn share_borrowed(bytes: &[u8]) -> Option<Result<Arc<Segment>, String>> {
    // The common case, a small slice, decided without touching the Arc.
    let sharing = CURRENT.with(|c| {
        let current = c.borrow();
        let sharing = current.as_ref()?;
        over_threshold(sharing, bytes).then(|| Arc::clone(sharing))
    })?;
    let key = (bytes.as_ptr() as usize, bytes.len());
    let mut registry = lock(&sharing.by_buffer);
    if let Some(seg) = registry.get(&key) {
        return Some(Ok(Arc::clone(seg)));
    }
    Some(sharing.create(bytes).map(|seg| {
        let seg = Arc::new(seg);
        registry.insert(key, Arc::clone(&seg));
        seg
    }))
}

/// A segment for an owned buffer over the current run's `max_nbytes`,
/// while arguments are encoded for a worker: `None` to encode it inline.
pub(crate) fn share_owned(bytes: &[u8]) -> Option<Result<Arc<Segment>, String>> {
    if !is_collecting() {
        return None;
    }
    let sharing = CURRENT.with(|c| c.borrow().clone())?;
    if !over_threshold(&sharing, bytes) {
        return None;
    }
    Some(sharing.create(bytes).map(Arc::new))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_collecting() -> bool {
    COLLECTED.with(|c| c.borrow().is_some())
}

/// Records that the value being encoded references `segment`. False when
/// nothing is being encoded for a worker: the caller encodes inline.
pub(crate) fn note_sent(segment: &Arc<Segment>) -> bool {
    COLLECTED.with(|c| match c.borrow_mut().as_mut() {
        Some(collected) => {
            if !collected.segments.iter().any(|s| s.id() == segment.id()) {
                collected.segments.push(Arc::clone(segment));
            }
            true
        }
        None => false,
    })
}

/// Records that the value being encoded is a chunk lent from `segment`,
/// held until its batch is answered. False outside an encoding for a worker.
pub(crate) fn note_lent(segment: &Arc<Segment>, lent: &Arc<Lent>) -> bool {
    if !note_sent(segment) {
        return false;
    }
    COLLECTED.with(|c| {
        if let Some(collected) = c.borrow_mut().as_mut() {
            collected.lent.push(Arc::clone(lent));
        }
    });
    true
}

/// Runs `encode` (which encodes values for a worker), returning what it
/// returned and what the values reference.
pub(crate) fn collecting<R>(encode: impl FnOnce() -> R) -> (R, Collected) {
    struct Restore(Option<Collected>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            COLLECTED.with(|c| *c.borrow_mut() = outer);
        }
    }
    let outer = COLLECTED.with(|c| c.replace(Some(Collected::default())));
    let restore = Restore(outer);
    let value = encode();
    let collected = COLLECTED
        .with(|c| c.borrow_mut().take())
        .unwrap_or_default();
    drop(restore);
    (value, collected)
}

/// A worker's segments and the socket they arrive on.
struct Held {
    /// `None` on an MPI worker rank, whose MPI thread adopts segments.
    socket: Option<OwnedFd>,
    by_id: HashMap<u64, Arc<Segment>>,
}

static HELD: Mutex<Option<Held>> = Mutex::new(None);
/// Signalled when an MPI rank's MPI thread adopts a segment.
static ADOPTED: std::sync::Condvar = std::sync::Condvar::new();
/// How long a job on an MPI rank waits for a segment its MPI thread has
/// not adopted yet (it may come from another rank of its node).
const ADOPT_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

fn held() -> std::sync::MutexGuard<'static, Option<Held>> {
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// In a worker: the socket the parent passes segments on.
pub(crate) fn worker_socket(socket: OwnedFd) {
    *held() = Some(Held {
        socket: Some(socket),
        by_id: HashMap::new(),
    });
}

cfg_mpi! {
    /// On an MPI worker rank: its segments arrive by MPI, adopted by its MPI
    /// thread ([`worker_adopted`]), not on a socket.
    pub(crate) fn worker_by_mpi() {
        held().get_or_insert_with(|| Held {
            socket: None,
            by_id: HashMap::new(),
        });
    }
}

cfg_mpi! {
    /// On an MPI worker rank: holds segment `id`, which arrived by MPI, for
    /// the jobs that name it.
    pub(crate) fn worker_adopted(id: u64, segment: Arc<Segment>) {
        held()
            .get_or_insert_with(|| Held {
                socket: None,
                by_id: HashMap::new(),
            })
            .by_id
            .insert(id, segment);
        ADOPTED.notify_all();
    }
}

/// In a worker: segment `id`, received now if it has not been yet. The
/// parent passes a batch's segments before the batch, so this waits only
/// for a message already sent.
pub(crate) fn worker_segment(id: u64) -> Result<Arc<Segment>, String> {
    let mut guard = held();
    let waiting_since = std::time::Instant::now();
    loop {
        let held = guard
            .as_mut()
            .ok_or("a shared-memory argument outside a worker process")?;
        if let Some(seg) = held.by_id.get(&id) {
            return Ok(Arc::clone(seg));
        }
        let Some(socket) = held.socket.as_ref() else {
            // An MPI rank: its MPI thread adopts the segment.
            let left = ADOPT_WAIT.saturating_sub(waiting_since.elapsed());
            if left.is_zero() {
                return Err(format!(
                    "shared-memory argument {id} did not reach this MPI rank within \
                     {ADOPT_WAIT:?} (see the rank's stderr)"
                ));
            }
            guard = ADOPTED
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            continue;
        };
        let (announce, fd) = fdpass::recv_segment(socket.as_fd())
            .map_err(|e| format!("receiving shared memory from the parent: {e}"))?
            .ok_or("the parent closed its shared-memory socket")?;
        let seg = adopt(announce, fd)
            .map_err(|e| format!("mapping shared memory from the parent: {e}"))?;
        held.by_id.insert(announce.id, Arc::new(seg));
    }
}

fn adopt(announce: fdpass::Announce, fd: OwnedFd) -> std::io::Result<Segment> {
    let len = usize::try_from(announce.len)
        .map_err(|_| std::io::Error::other("a segment larger than memory"))?;
    Segment::adopt(announce.id, fd, len, announce.writable)
}

/// In a worker: drops the segments the parent's run is done with.
pub(crate) fn worker_forget(ids: &[u64]) {
    if let Some(held) = held().as_mut() {
        for id in ids {
            held.by_id.remove(id);
        }
    }
}

/// In a worker: the `max_nbytes` of the batch being run, for its results
/// (`u64::MAX` when the automatic path is off).
static RESULT_THRESHOLD: AtomicU64 = AtomicU64::new(u64::MAX);

/// In a worker: sets the threshold over which a result returns through
/// shared memory, from the batch's run.
pub(crate) fn set_result_threshold(max_nbytes: Option<u64>) {
    RESULT_THRESHOLD.store(max_nbytes.unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// In a worker: the threshold over which a result returns through shared
/// memory.
pub(crate) fn result_threshold() -> u64 {
    RESULT_THRESHOLD.load(Ordering::Relaxed)
}

/// In a worker: passes a result's segment to the parent, before the
/// frame that names it. It waits for room: the parent's reader takes the
/// descriptor when it reads the frame.
pub(crate) fn worker_pass_result(segment: &Segment) -> std::io::Result<()> {
    let guard = held();
    let held = guard
        .as_ref()
        .ok_or_else(|| std::io::Error::other("not a worker process"))?;
    loop {
        let socket = held
            .socket
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no shared-memory socket on an MPI rank"))?;
        match fdpass::send_segment(socket.as_fd(), segment.announce(), segment.fd()) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut pollfd = libc::pollfd {
                    fd: socket.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: poll on one valid pollfd; an error or hangup
                // shows in the next send.
                unsafe { libc::poll(&mut pollfd, 1, -1) };
            }
            other => return other,
        }
    }
}

thread_local! {
    /// In the parent's reader thread of one worker: that worker's socket.
    static READER_SOCKET: RefCell<Option<OwnedFd>> = const { RefCell::new(None) };
}

/// In the parent: makes `socket` the one this (reader) thread receives
/// result segments on.
pub(crate) fn reader_socket(socket: OwnedFd) {
    READER_SOCKET.with(|s| *s.borrow_mut() = Some(socket));
}

/// In the parent's reader thread: reads the segment a worker passed for
/// the result frame being read, which names it `id`, into `out` (its
/// length; every byte is written on success). The worker passed it before the frame, so it is waiting on
/// the socket. It is read, not mapped, so the copy is the only memory the
/// result takes here.
pub(crate) fn receive_result_into(
    id: u64,
    out: &mut [std::mem::MaybeUninit<u8>],
) -> Result<(), String> {
    READER_SOCKET.with(|s| {
        let socket = s.borrow();
        let socket = socket
            .as_ref()
            .ok_or("a shared-memory result outside a worker's reader")?;
        let (announce, fd) = fdpass::recv_segment(socket.as_fd())
            .map_err(|e| format!("receiving a result's shared memory: {e}"))?
            .ok_or("the worker closed its shared-memory socket")?;
        let len = out.len() as u64;
        if (announce.id, announce.len, announce.writable) != (id, len, false) {
            return Err(format!(
                "the worker passed {announce:?} for segment {id} of {len} bytes"
            ));
        }
        Segment::read_passed(fd, out)
            .map_err(|e| format!("reading a result's shared memory: {e}"))?;
        RESULTS_RECEIVED.fetch_add(1, Ordering::Relaxed);
        Ok(())
    })
}

/// In the parent's reader of a worker: takes the descriptor of result
/// segment `id` off the socket and closes it, for a result the parent
/// refused (no memory for it), so the socket stays in step with the
/// frames and the next result finds its own descriptor.
pub(crate) fn discard_result(id: u64) {
    READER_SOCKET.with(|s| {
        if let Some(socket) = s.borrow().as_ref() {
            match fdpass::recv_segment(socket.as_fd()) {
                Ok(Some((announce, _closed))) if announce.id == id => {}
                Ok(other) => tracing::warn!(
                    "discarding result segment {id}, the socket held {:?}",
                    other.map(|(a, _)| a)
                ),
                Err(e) => tracing::warn!("discarding result segment {id}: {e}"),
            }
        }
    });
}

static RESULTS_RECEIVED: AtomicU64 = AtomicU64::new(0);

/// In the parent: how many results have come back through shared memory
/// (a test hook).
pub fn results_received() -> u64 {
    RESULTS_RECEIVED.load(Ordering::Relaxed)
}

/// In a worker: how many segments it holds (for its tests).
pub fn worker_holds() -> usize {
    held().as_ref().map_or(0, |h| h.by_id.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_borrowed_buffer_is_one_segment_per_run() {
        let data = vec![7u8; 4096];
        assert!(share_borrowed(&data).is_none(), "no run is current");
        let run = Sharing::new(Some(1024), None);
        let _entered = run.enter();
        let a = share_borrowed(&data).unwrap().unwrap();
        let b = share_borrowed(&data).unwrap().unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(run.len(), 1);
        assert!(
            share_borrowed(&data[..1000]).is_none(),
            "under the threshold"
        );
        assert_ne!(share_borrowed(&data[..2000]).unwrap().unwrap().id(), a.id());
    }

    #[test]
    fn none_disables_the_automatic_path_and_owned_buffers_need_an_encoding() {
        let data = vec![1u8; 1 << 20];
        let off = Sharing::new(None, None);
        let entered = off.enter();
        assert!(share_borrowed(&data).is_none());
        drop(entered);
        let on = Sharing::new(Some(0), None);
        let _entered = on.enter();
        assert!(share_owned(&data).is_none(), "not encoding for a worker");
        let (seg, noted) = collecting(|| {
            let seg = share_owned(&data).unwrap().unwrap();
            assert!(note_sent(&seg) && note_sent(&seg));
            seg
        });
        assert_eq!(noted.segments.len(), 1);
        assert_eq!(noted.segments[0].id(), seg.id());
        assert!(!note_sent(&seg), "the collection ended");
    }
}
