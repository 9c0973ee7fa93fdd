//! How an item of `f::map`, or an argument of `f::delayed`, becomes what a
//! job owns.
//!
//! A job owns its arguments, so it can move to another thread or be
//! encoded for a worker process. A `&T` parameter of a task is stored as
//! `T`'s owned form ([`ArgOwned`]), and a caller may pass either that
//! owned value (no copy) or a borrow, which is cloned once into the job
//! ([`IntoOwnedArg`]): `f::map(&xs)`, `f::map(["a", "b"])`. [`FromItem`]
//! is the macro's per-task impl that turns one item (a tuple, for several
//! parameters) into the task's argument tuple.

use super::Task;
use crate::shm::{SharedSlice, SliceArg};

/// What a job stores for a `&T` parameter of a task: `T` itself for a sized
/// `T` (the caller hands the job its own value, so no `Clone` is needed),
/// and the owned form of the unsized path and string types.
pub trait ArgOwned {
    /// The owned type; `&Owned` derefs to `&Self`.
    type Owned;
}

impl<T> ArgOwned for T {
    type Owned = T;
}

impl ArgOwned for std::path::Path {
    type Owned = std::path::PathBuf;
}

impl ArgOwned for std::ffi::OsStr {
    type Owned = std::ffi::OsString;
}

impl ArgOwned for std::ffi::CStr {
    type Owned = std::ffi::CString;
}

/// A value a job can own as `T`, for a task's `&T` parameter: `T` itself
/// (moved, no copy), or a borrow of it (cloned once into the job).
#[diagnostic::on_unimplemented(
    message = "a job cannot own `{Self}` as the `{T}` its task's `&` parameter stores",
    label = "pass a `{T}` (moved into the job) or a reference to one (cloned into the job)",
    note = "a job owns its arguments, because it may run on another thread or in a worker process"
)]
pub trait IntoOwnedArg<T> {
    /// The owned argument.
    fn into_owned_arg(self) -> T;
}

impl<T> IntoOwnedArg<T> for T {
    fn into_owned_arg(self) -> T {
        self
    }
}

impl<T: Clone> IntoOwnedArg<T> for &T {
    fn into_owned_arg(self) -> T {
        self.clone()
    }
}

impl IntoOwnedArg<String> for &str {
    fn into_owned_arg(self) -> String {
        self.to_owned()
    }
}

impl IntoOwnedArg<String> for &&str {
    fn into_owned_arg(self) -> String {
        (*self).to_owned()
    }
}

impl<T: Clone> IntoOwnedArg<Vec<T>> for &[T] {
    fn into_owned_arg(self) -> Vec<T> {
        self.to_vec()
    }
}

impl<T: Clone, const N: usize> IntoOwnedArg<Vec<T>> for [T; N] {
    fn into_owned_arg(self) -> Vec<T> {
        self.to_vec()
    }
}

impl<T: Clone, const N: usize> IntoOwnedArg<Vec<T>> for &[T; N] {
    fn into_owned_arg(self) -> Vec<T> {
        self.to_vec()
    }
}

impl IntoOwnedArg<std::path::PathBuf> for &std::path::Path {
    fn into_owned_arg(self) -> std::path::PathBuf {
        self.to_path_buf()
    }
}

impl IntoOwnedArg<std::ffi::OsString> for &std::ffi::OsStr {
    fn into_owned_arg(self) -> std::ffi::OsString {
        self.to_os_string()
    }
}

impl IntoOwnedArg<std::ffi::CString> for &std::ffi::CStr {
    fn into_owned_arg(self) -> std::ffi::CString {
        self.to_owned()
    }
}

/// A value a job can own for a task's `&[T]` parameter: a moved `Vec`,
/// boxed slice or array is the job's own; a borrow becomes the run's
/// shared segment when it is a slice of numbers over `max_nbytes`, else a
/// copy; a [`SharedSlice`] is shared by reference.
#[diagnostic::on_unimplemented(
    message = "a `&[{T}]` parameter cannot take `{Self}`",
    label = "pass a `Vec<{T}>`, `&Vec<{T}>`, `&[{T}]`, an array of `{T}` or a `SharedSlice<{T}>`",
    note = "a job owns its arguments, because it may run on another thread or in a worker process"
)]
pub trait IntoSliceArg<T> {
    /// What the job stores.
    fn into_slice_arg(self) -> SliceArg<T>;
}

impl<T> IntoSliceArg<T> for SliceArg<T> {
    fn into_slice_arg(self) -> SliceArg<T> {
        self
    }
}

impl<T> IntoSliceArg<T> for Vec<T> {
    fn into_slice_arg(self) -> SliceArg<T> {
        SliceArg::Owned(self)
    }
}

impl<T> IntoSliceArg<T> for Box<[T]> {
    fn into_slice_arg(self) -> SliceArg<T> {
        SliceArg::Owned(self.into_vec())
    }
}

impl<T, const N: usize> IntoSliceArg<T> for [T; N] {
    fn into_slice_arg(self) -> SliceArg<T> {
        SliceArg::Owned(Vec::from(self))
    }
}

impl<T: Clone + 'static> IntoSliceArg<T> for &[T] {
    fn into_slice_arg(self) -> SliceArg<T> {
        SliceArg::borrowed(self)
    }
}

impl<T: Clone + 'static> IntoSliceArg<T> for &&[T] {
    fn into_slice_arg(self) -> SliceArg<T> {
        SliceArg::borrowed(self)
    }
}

impl<T: Clone + 'static> IntoSliceArg<T> for &Vec<T> {
    fn into_slice_arg(self) -> SliceArg<T> {
        SliceArg::borrowed(self)
    }
}

impl<T: Clone + 'static, const N: usize> IntoSliceArg<T> for &[T; N] {
    fn into_slice_arg(self) -> SliceArg<T> {
        SliceArg::borrowed(self)
    }
}

impl<T> IntoSliceArg<T> for SharedSlice<T> {
    fn into_slice_arg(self) -> SliceArg<T> {
        SliceArg::Shared(self)
    }
}

impl<T> IntoSliceArg<T> for &SharedSlice<T> {
    fn into_slice_arg(self) -> SliceArg<T> {
        SliceArg::Shared(self.clone())
    }
}

/// One item of `f::map` made into task `Self`'s argument tuple:
/// `#[parallel]` implements it for each task. An item is the argument for
/// a task of one parameter, a tuple of them for several, and `()` for none.
#[diagnostic::on_unimplemented(
    message = "task `{Self}` cannot take items of type `{Item}`",
    label = "each item must be the task's argument (a tuple of them for several parameters)",
    note = "a job owns its arguments: a by-value parameter needs an owned value (`x.clone()` for a borrowed `x`); a `&T` parameter takes a `T` or a `&T` (cloned into the job), `&str` takes `&str` or `String`, `&[T]` takes `Vec<T>`, `&Vec<T>`, `&[T]`, an array or a `SharedSlice<T>`"
)]
pub trait FromItem<Item>: Task {
    /// The argument tuple for `item`.
    fn from_item(item: Item) -> Self::Args;
}

/// One item of `f::par_map` passed straight to task `Self`'s function,
/// borrowing what its `&T` parameters need from the item instead of
/// cloning it: `#[parallel]` implements it for each task. The indexed path
/// on threads calls it, where rayon's scope proves that the borrow
/// outlives every call.
pub trait CallItem<Item>: Task {
    /// Calls the function with `item`'s arguments, borrowed where the
    /// parameter is a reference.
    fn call_item(item: Item) -> Self::Output;
}
