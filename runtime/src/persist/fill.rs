//! Filling a large, freshly allocated buffer from a reader at the speed
//! the reader gives, not the speed of page faults.
//!
//! Reading 800 MB into fresh memory costs two things: copying the bytes
//! (from the page cache, about 10 GB/s here) and faulting in 200,000
//! zeroed 4 KiB pages, which is most of `fs::read`'s time. The two are
//! independent, so for a large buffer a helper thread faults the pages in
//! (`MADV_POPULATE_WRITE`, which never changes their contents) ahead of
//! the reader, while this thread reads and hashes chunk after chunk. Both
//! take chunks to fault in from one counter: the reader, when it comes to
//! a chunk the helper has not taken yet, faults it in itself the same way
//! (one call for the chunk is much cheaper than a fault per page during
//! the copy). A page both touch costs time, never correctness.
//!
//! Huge pages would save the faults too, but with this kernel's default
//! `defrag = madvise` an advised region compacts memory on its first
//! fault, which stalled loads for seconds on a fragmented machine
//! (docs/decisions.md).

use std::sync::atomic::{AtomicUsize, Ordering};

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
    let pages = Pages::of(buf);
    std::thread::scope(|s| {
        s.spawn(|| while pages.take_next() {});
        let mut at = 0;
        let result = buf
            .chunks_mut(CHUNK)
            .enumerate()
            .try_for_each(|(k, chunk)| {
                // Chunks up to this one that the helper has not taken.
                while pages.next.load(Ordering::Relaxed) <= k && pages.take_next() {}
                read_chunk(chunk, at)?;
                filled(chunk);
                at += chunk.len();
                Ok(())
            });
        // The helper stops at its next chunk.
        pages.next.store(usize::MAX, Ordering::Relaxed);
        result
    })
}

/// A buffer's whole pages, faulted in [`CHUNK`] at a time by whoever
/// takes the next chunk.
struct Pages {
    /// The first whole page, and the end of the last.
    first: usize,
    end: usize,
    /// The next chunk to fault in (past the end: none left, or stopped).
    next: AtomicUsize,
    /// `MADV_POPULATE_WRITE` was refused (a kernel before 5.14).
    refused: std::sync::atomic::AtomicBool,
}

impl Pages {
    fn of(buf: &mut [u8]) -> Pages {
        const PAGE: usize = 4096;
        let start = buf.as_mut_ptr() as usize;
        // Whole pages only: a partial page at either end may be shared
        // with other memory, and the reader faults it in itself.
        Pages {
            first: (start + PAGE - 1) & !(PAGE - 1),
            end: (start + buf.len()) & !(PAGE - 1),
            next: AtomicUsize::new(0),
            refused: Default::default(),
        }
    }

    /// Takes the next chunk and faults it in; false when none is left.
    fn take_next(&self) -> bool {
        if self.refused.load(Ordering::Relaxed) {
            return false;
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(at) = k.checked_mul(CHUNK).and_then(|o| o.checked_add(self.first)) else {
            return false;
        };
        if at >= self.end {
            return false;
        }
        let n = CHUNK.min(self.end - at);
        // SAFETY: `[at, at + n)` lies inside the buffer `of` was given,
        // which outlives every caller (the helper is a scoped thread), and
        // MADV_POPULATE_WRITE only backs its pages with memory: it writes
        // no byte of them, so the reader's concurrent writes are untouched.
        let r = unsafe { libc::madvise(at as *mut libc::c_void, n, libc::MADV_POPULATE_WRITE) };
        if r != 0 {
            self.refused.store(true, Ordering::Relaxed);
        }
        r == 0
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
