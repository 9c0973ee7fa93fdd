//! Shared memory: big arrays reach worker processes without copies.
//!
//! joblib memmaps a numpy array over `max_nbytes` into a file in
//! `/dev/shm` that every worker opens. parjob keeps the idea and drops the
//! file: a slice of numbers over `max_nbytes` (1 MiB by default) is copied
//! once into a sealed `memfd` (`segment`), whose descriptor is passed to
//! each worker over a socket with `SCM_RIGHTS` (`fdpass`); the worker
//! maps it read-only and the task borrows a `&[T]` into the mapping.
//!
//! - A run keeps one segment per buffer (`share`): one array borrowed by
//!   a thousand jobs is copied once.
//! - Nothing can leak. A segment has no name, so the kernel frees it when
//!   the last process holding it exits, even by SIGKILL. There is no
//!   resource-tracker process and nothing to sweep.
//! - Nothing fills `/dev/shm`: a memfd is bounded by memory and the
//!   cgroup's limit, which are checked before a segment is made.
//! - Nothing is read-only by surprise: a task's `&[T]` parameter is
//!   read-only anyway, and an owned parameter (`Vec<T>`) gets its own copy.
//!
//! [`SharedSlice`] is the explicit form, for data shared on purpose
//! (`SharedArray` for `ndarray` arrays, with the `ndarray` feature), and
//! [`SharedSliceMut`] an output buffer whose disjoint [`ChunkMut`]s jobs
//! write in place (joblib's `mmap_mode="r+"` pattern).

#[cfg(feature = "ndarray")]
mod array;
mod backing;
mod capacity;
mod fdpass;
mod segment;
mod share;
mod slice;
mod slice_mut;

#[cfg(feature = "ndarray")]
pub use array::SharedArray;
#[cfg(feature = "ndarray")]
#[doc(hidden)]
pub use array::{ArrayArg, IntoArrayArg};
#[doc(hidden)]
pub use segment::segments_created;
#[doc(hidden)]
pub use share::{results_received, worker_holds};
pub use slice::SharedSlice;
#[doc(hidden)]
pub use slice::SliceArg;
pub use slice_mut::{ChunkMut, SharedSliceMut};

cfg_mpi! {
    pub(crate) use capacity::check_capacity;
}
pub(crate) use fdpass::{send_segment, socket_pair};

/// A zeroed file of `len` bytes to share with a worker by descriptor: a
/// memfd, or, where `memfd_create` is refused (a seccomp filter), an
/// unnamed file of the temp folder, as segments fall back.
pub(crate) fn shared_file(len: usize) -> Result<std::fs::File, String> {
    backing::new_file(len, &backing::Place::Memfd).map(|(file, _)| file)
}
pub(crate) use segment::Segment;
pub(crate) use share::{
    collecting, discard_result, note_sent, reader_socket, receive_result_into, result_threshold,
    set_result_threshold, worker_forget, worker_pass_result, worker_segment, worker_socket,
    Collected, Sharing,
};
cfg_mpi! {
    pub(crate) use share::{worker_adopted, worker_by_mpi};
}
