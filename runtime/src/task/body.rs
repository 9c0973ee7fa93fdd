//! What a [`Job`](super::Job) runs, and where it keeps it.
//!
//! A job's body is a closure or a task call. [`BodySlot`] holds one of any
//! type: inside the job when it fits in three words (a call of a task with
//! a few numbers, a closure capturing as much), else in a box. `f::delayed`
//! and `Job::new` of a small body then allocate nothing: with tiny jobs on
//! threads, allocating and freeing each job's box was most of the run
//! (docs/decisions.md). The slot keeps, beside the body, a table of the
//! body type's own functions (run it, drop it, view it, box it), made once
//! per type at compile time; that is the only place the body's type is
//! known.

use super::spent::Spent;
use crate::error::CodecError;
use std::alloc::Layout;
use std::any::Any;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ptr::NonNull;

/// A job's work: run once, by value.
pub(crate) trait Body<R>: Send + 'static {
    /// Runs the body.
    fn invoke(self) -> R
    where
        Self: Sized;
    /// Its arguments encoded, for a body that can cross a process boundary.
    fn encode_args(&self) -> Option<Result<Vec<u8>, CodecError>>;
    /// The body itself, to see which call it is.
    fn as_any(&self) -> &dyn Any;
}

/// The room a body has inside its job.
type Words = MaybeUninit<[usize; 3]>;

/// Where a slot's body lives.
enum Place {
    Inline(Words),
    /// A box's allocation, of the body type's layout.
    Heap(NonNull<u8>),
}

/// The functions of one body type `B`, each taking the address of a live
/// `B`.
struct Ops<R> {
    /// Moves the `B` out and runs it.
    run: unsafe fn(*mut u8) -> R,
    /// Drops the `B` in place.
    drop: unsafe fn(*mut u8),
    /// The `B` as a trait object.
    view: fn(*const u8) -> *const dyn Body<R>,
    /// Moves the `B` out into a box.
    boxed: unsafe fn(*mut u8) -> Box<dyn Any>,
    layout: Layout,
}

/// A body of any type, inline when it fits. Send and not Sync, as the
/// `Box<dyn Body<R>>` it stands for.
pub(crate) struct BodySlot<R> {
    place: Place,
    /// The body type's table, a constant that lives as long as the program.
    ops: *const Ops<R>,
}

// SAFETY: a slot owns one body, and every body is `Send` (`Body: Send`);
// its table is immutable constant data.
unsafe impl<R> Send for BodySlot<R> {}

/// # Safety
/// `at` is the address of a live `B`, which this moves out.
unsafe fn run_at<B: Body<R>, R>(at: *mut u8) -> R {
    // SAFETY: the caller's contract.
    unsafe { std::ptr::read(at.cast::<B>()) }.invoke()
}

/// # Safety
/// `at` is the address of a live `B`, which this drops.
unsafe fn drop_at<B>(at: *mut u8) {
    // SAFETY: the caller's contract.
    unsafe { std::ptr::drop_in_place(at.cast::<B>()) }
}

fn view_at<B: Body<R>, R>(at: *const u8) -> *const dyn Body<R> {
    at.cast::<B>() as *const dyn Body<R>
}

/// # Safety
/// `at` is the address of a live `B`, which this moves out.
unsafe fn boxed_at<B: Body<R>, R>(at: *mut u8) -> Box<dyn Any> {
    // SAFETY: the caller's contract.
    Box::new(unsafe { std::ptr::read(at.cast::<B>()) })
}

/// Frees a heap place when dropped, on unwinding too.
struct Free(NonNull<u8>, Layout);

impl Drop for Free {
    fn drop(&mut self) {
        // SAFETY: a heap place is a box's allocation of this layout, of
        // non-zero size (a zero-sized body always fits inline), whose body
        // was moved out or dropped before this runs.
        unsafe { std::alloc::dealloc(self.0.as_ptr(), self.1) }
    }
}

impl<R: 'static> BodySlot<R> {
    /// `body` in a slot: inside it when it fits, else boxed.
    pub(crate) fn new<B: Body<R>>(body: B) -> Self {
        let ops: &'static Ops<R> = const {
            &Ops {
                run: run_at::<B, R>,
                drop: drop_at::<B>,
                view: view_at::<B, R>,
                boxed: boxed_at::<B, R>,
                layout: Layout::new::<B>(),
            }
        };
        let fits = size_of::<B>() <= size_of::<Words>() && align_of::<B>() <= align_of::<Words>();
        let place = if fits {
            let mut words = Words::uninit();
            // SAFETY: `words` has room and alignment for a `B` (checked
            // just above), and nothing lives in it yet.
            unsafe { words.as_mut_ptr().cast::<B>().write(body) };
            Place::Inline(words)
        } else {
            let raw = Box::into_raw(Box::new(body));
            // SAFETY: `Box::into_raw` never returns null.
            Place::Heap(unsafe { NonNull::new_unchecked(raw.cast()) })
        };
        BodySlot { place, ops }
    }

    /// The body type's table.
    fn ops(&self) -> &'static Ops<R> {
        // SAFETY: `ops` was made from a `&'static Ops<R>` in `new`.
        unsafe { &*self.ops }
    }

    /// The body's address, and its heap allocation when it is boxed.
    fn at(&mut self) -> (*mut u8, Option<Free>) {
        let layout = self.ops().layout;
        match &mut self.place {
            Place::Inline(words) => (words.as_mut_ptr().cast(), None),
            Place::Heap(p) => (p.as_ptr(), Some(Free(*p, layout))),
        }
    }

    /// Runs the body.
    pub(crate) fn run(self) -> R {
        let mut this = ManuallyDrop::new(self);
        let run = this.ops().run;
        let (at, _free) = this.at();
        // SAFETY: `at` holds the live body `ops` was made for; `run` moves
        // it out, and `this` is never dropped, so it is not dropped again.
        // A heap place is freed after, by `_free`, on unwinding too.
        unsafe { run(at) }
    }

    /// [`BodySlot::run`], leaving a boxed body's allocation to `spent`.
    pub(crate) fn run_sparing(self, spent: &mut Spent) -> R {
        let mut this = ManuallyDrop::new(self);
        let run = this.ops().run;
        let (at, free) = this.at();
        if let Some(free) = free {
            let Free(ptr, layout) = free;
            std::mem::forget(free);
            // SAFETY: the allocation's body is moved out just below,
            // before anything could free it.
            unsafe { spent.keep(ptr, layout) };
        }
        // SAFETY: as in `run`; the allocation is `spent`'s to free.
        unsafe { run(at) }
    }

    /// The body, moved into a box of its own type (to take a call's
    /// arguments out, `chunk.rs`).
    pub(crate) fn into_any(self) -> Box<dyn Any> {
        let mut this = ManuallyDrop::new(self);
        let boxed = this.ops().boxed;
        let (at, _free) = this.at();
        // SAFETY: as in `run`, with `boxed` moving the body out.
        unsafe { boxed(at) }
    }

    fn get(&self) -> &dyn Body<R> {
        let at: *const u8 = match &self.place {
            Place::Inline(words) => words.as_ptr().cast(),
            Place::Heap(p) => p.as_ptr(),
        };
        // SAFETY: `at` holds the live body `view` was made for, borrowed
        // for as long as `self` is.
        unsafe { &*(self.ops().view)(at) }
    }

    /// The body's arguments encoded, when it can cross.
    pub(crate) fn encode_args(&self) -> Option<Result<Vec<u8>, CodecError>> {
        self.get().encode_args()
    }

    /// The body itself, to see which call it is.
    pub(crate) fn as_any(&self) -> &dyn Any {
        self.get().as_any()
    }
}

impl<R> Drop for BodySlot<R> {
    fn drop(&mut self) {
        // SAFETY: `ops` was made from a `&'static Ops<R>` in `new`.
        let ops = unsafe { &*self.ops };
        let drop_body = ops.drop;
        // A heap place is freed when `_free` goes, after the body.
        let (at, _free) = match &mut self.place {
            Place::Inline(words) => (words.as_mut_ptr().cast(), None),
            Place::Heap(p) => (p.as_ptr(), Some(Free(*p, ops.layout))),
        };
        // SAFETY: a slot not run or boxed still holds its live body.
        unsafe { drop_body(at) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A body that counts its drops, of `N` words.
    struct Counted<const N: usize>(Arc<AtomicUsize>, [u64; N]);

    impl<const N: usize> Drop for Counted<N> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl<const N: usize> Body<u64> for Counted<N> {
        fn invoke(self) -> u64 {
            self.1.iter().sum()
        }
        fn encode_args(&self) -> Option<Result<Vec<u8>, CodecError>> {
            None
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    fn each_way<const N: usize>(inline: bool) {
        let drops = Arc::new(AtomicUsize::new(0));
        let make = || BodySlot::new(Counted::<N>(Arc::clone(&drops), [2; N]));
        assert_eq!(matches!(make().place, Place::Inline(_)), inline);
        assert_eq!(make().run(), 2 * N as u64);
        let mut spent = Spent::default();
        assert_eq!(make().run_sparing(&mut spent), 2 * N as u64);
        drop(spent);
        drop(make());
        let any = make().into_any();
        assert!(any.downcast_ref::<Counted<N>>().is_some());
        assert!(make().as_any().is::<Counted<N>>());
        drop(any);
        // Each slot's body was dropped exactly once (made six times).
        assert_eq!(drops.load(Ordering::SeqCst), 6);
    }

    #[test]
    fn small_bodies_live_inline_large_ones_in_a_box_and_each_drops_once() {
        each_way::<2>(true);
        each_way::<8>(false);
    }

    #[test]
    fn a_body_that_panics_is_dropped_once_and_its_box_freed() {
        struct Bomb(Arc<AtomicUsize>, [u64; 8]);
        impl Drop for Bomb {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        impl Body<u64> for Bomb {
            fn invoke(self) -> u64 {
                panic!("boom {}", self.1[0])
            }
            fn encode_args(&self) -> Option<Result<Vec<u8>, CodecError>> {
                None
            }
            fn as_any(&self) -> &dyn Any {
                self
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let slot = BodySlot::new(Bomb(Arc::clone(&drops), [1; 8]));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| slot.run()));
        assert!(caught.is_err());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
}
