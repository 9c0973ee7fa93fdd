//! Filling a large, freshly allocated buffer from a reader at the speed
//! the reader gives, not the speed of page faults.
//!
//! Reading 800 MB into fresh memory costs two things: copying the bytes
//! (from the page cache, about 10 GB/s here) and faulting in 200,000
//! zeroed 4 KiB pages, which is most of `fs::read`'s time. The two are
//! independent, so for a large buffer a helper thread faults the pages in
//! (`MADV_POPULATE_WRITE`, which never changes their contents) a little
//! ahead of the reader, while this thread reads and hashes chunk after
//! chunk. The reader faults in any page it reaches first itself: the race
//! costs time, never correctness.
//!
//! Huge pages would save the faults too, but with this kernel's default
//! `defrag = madvise` an advised region compacts memory on its first
//! fault, which stalled loads for seconds on a fragmented machine
//! (docs/decisions.md).

use std::sync::atomic::{AtomicBool, Ordering};

/// Below this a buffer is read in one go: a thread costs more than the
/// faults it would save.
const PARALLEL_FROM: usize = 32 << 20;

/// The unit of reading, hashing and faulting in.
const CHUNK: usize = 4 << 20;

/// Fills `buf` from `read_chunk` (which fills the slice it is given
/// completely or fails), passing each filled chunk to `filled` in order.
pub(super) fn fill<E>(
    buf: &mut [u8],
    mut read_chunk: impl FnMut(&mut [u8], usize) -> Result<(), E>,
    mut filled: impl FnMut(&[u8]),
) -> Result<(), E> {
    if buf.len() < PARALLEL_FROM {
        read_chunk(buf, 0)?;
        filled(buf);
        return Ok(());
    }
    let stop = AtomicBool::new(false);
    let (start, len) = (buf.as_mut_ptr() as usize, buf.len());
    std::thread::scope(|s| {
        s.spawn(|| populate(start, len, &stop));
        let mut at = 0;
        let result = buf.chunks_mut(CHUNK).try_for_each(|chunk| {
            read_chunk(chunk, at)?;
            filled(chunk);
            at += chunk.len();
            Ok(())
        });
        stop.store(true, Ordering::Relaxed);
        result
    })
}

/// Faults in `[start, start + len)` chunk by chunk until done, told to
/// stop, or refused (a kernel before 5.14 has no `MADV_POPULATE_WRITE`).
fn populate(start: usize, len: usize, stop: &AtomicBool) {
    const PAGE: usize = 4096;
    let mut at = (start + PAGE - 1) & !(PAGE - 1);
    // Whole pages only: the last partial page may be shared with other
    // memory, and the reader faults it in itself.
    let end = (start + len) & !(PAGE - 1);
    while at < end && !stop.load(Ordering::Relaxed) {
        let n = CHUNK.min(end - at);
        // SAFETY: `[at, at + n)` lies inside the caller's buffer, which
        // outlives this scoped thread, and MADV_POPULATE_WRITE only backs
        // its pages with memory: it writes no byte of them, so the
        // reader's concurrent writes are untouched.
        let r = unsafe { libc::madvise(at as *mut libc::c_void, n, libc::MADV_POPULATE_WRITE) };
        if r != 0 {
            return;
        }
        at += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_buffer_is_filled_in_order_and_a_failure_stops_it() {
        let len = PARALLEL_FROM + CHUNK + 12_345;
        let mut buf = vec![0u8; len];
        let source = |chunk: &mut [u8], at: usize| -> Result<(), String> {
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = ((at + i) % 251) as u8;
            }
            Ok(())
        };
        let mut seen = 0;
        fill(&mut buf, source, |chunk| seen += chunk.len()).unwrap();
        assert_eq!(seen, len);
        assert!(buf.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));

        let failing = |_: &mut [u8], at: usize| {
            if at >= 3 * CHUNK {
                Err(format!("truncated at {at}"))
            } else {
                Ok(())
            }
        };
        let mut chunks = 0;
        let err = fill(&mut buf, failing, |_| chunks += 1).unwrap_err();
        assert_eq!(err, format!("truncated at {}", 3 * CHUNK));
        assert_eq!(chunks, 3);
    }
}
