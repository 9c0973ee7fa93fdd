//! Allocations that go home to be freed.
//!
//! A job made in the caller's thread (`f::delayed`, `Job::new`) is a box
//! that a pool thread consumes. Freed there, every box lands in the pool
//! thread's cache or contends for the caller's arena, while the caller
//! keeps allocating fresh ones: with tiny jobs, `malloc` and `free` were
//! two thirds of the thread backend's time. A pool thread instead moves
//! each body out of its box and keeps the emptied allocation in a
//! [`Spent`], which travels back with the batch's results and is freed by
//! the caller, whose next boxes then come from what it just freed. (Small
//! bodies have no box at all: `body.rs`.)

use std::alloc::Layout;
use std::ptr::NonNull;

/// Emptied allocations, freed (never dropped as values) when this is.
#[derive(Default)]
pub struct Spent(Vec<(NonNull<u8>, Layout)>);

// SAFETY: a `Spent` only holds allocations of the global allocator that
// no value lives in any more and that nothing else points to; any thread
// may free them.
unsafe impl Send for Spent {}

impl Spent {
    /// Keeps the allocation at `ptr`, to free it when this is dropped.
    ///
    /// # Safety
    /// `ptr` is an allocation of the global allocator with `layout`, of
    /// non-zero size, that nothing else frees, and whose value was moved
    /// out (or is moved out before this `Spent` can be dropped).
    pub(crate) unsafe fn keep(&mut self, ptr: NonNull<u8>, layout: Layout) {
        self.0.push((ptr, layout));
    }
}

impl Drop for Spent {
    fn drop(&mut self) {
        for (ptr, layout) in self.0.drain(..) {
            // SAFETY: each pair is an allocation of the global allocator
            // with its layout, of non-zero size, held only here (`take`).
            unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_made_here_are_freed_by_whoever_drops_it() {
        let mut spent = Spent::default();
        for n in [8usize, 100] {
            let layout = Layout::array::<u8>(n).unwrap();
            // SAFETY: a non-zero layout.
            let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) }).unwrap();
            // SAFETY: a fresh allocation of `layout` holding no value.
            unsafe { spent.keep(ptr, layout) };
        }
        let freed = std::thread::spawn(move || {
            let kept = spent.0.len();
            drop(spent);
            kept
        });
        assert_eq!(freed.join().unwrap(), 2);
    }
}
