//! One error for a `#[memoize]` function whose result is not a serde type.
//!
//! The expansion asserts `T: MemoOutput` on the user's return type, whose
//! message says what to do. Its calls go through [`MemoProbe`], which picks
//! the cache when `T` is a serde type and a stub otherwise (autoref
//! specialization, as the process tasks' `Probe`), so the calls add no
//! errors of their own. The stub is never run: the assertion stops the
//! build first.

use super::{MemorizedResult, PreparedKey, Site};
use serde::{de::DeserializeOwned, Serialize};

/// A type that can be a `#[memoize]` function's result: it is written to
/// disk and read back.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the result of a `#[memoize]` function: it is not a serde type",
    label = "this result is written to the cache on disk and read back, so it must implement `serde::Serialize` and `serde::Deserialize`",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to the type, or cache a serde type the function builds it from"
)]
pub trait MemoOutput: Serialize + DeserializeOwned {}
#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> MemoOutput for T {}

/// Compile-time check emitted by `#[memoize]`, spanned on the return type.
pub fn assert_memo_output<T: MemoOutput>() {}

/// Picks the cache for a serde result: `(&&MemoProbe::<T>::NEW).cached(..)`.
pub struct MemoProbe<T>(std::marker::PhantomData<T>);

impl<T> MemoProbe<T> {
    /// The probe value.
    pub const NEW: Self = MemoProbe(std::marker::PhantomData);
}

/// The cache arm of [`MemoProbe`].
pub trait MemoViaSerde<T> {
    /// [`Site::call`].
    fn cached(&self, site: &Site, key: PreparedKey, compute: impl FnOnce() -> T) -> T;
    /// [`Site::call_and_shelve`].
    fn shelved(
        &self,
        site: &Site,
        key: PreparedKey,
        compute: impl FnOnce() -> T,
    ) -> MemorizedResult<T>;
}

impl<T: Serialize + DeserializeOwned> MemoViaSerde<T> for &MemoProbe<T> {
    fn cached(&self, site: &Site, key: PreparedKey, compute: impl FnOnce() -> T) -> T {
        site.call(key, compute)
    }
    fn shelved(
        &self,
        site: &Site,
        key: PreparedKey,
        compute: impl FnOnce() -> T,
    ) -> MemorizedResult<T> {
        site.call_and_shelve(key, compute)
    }
}

/// The fallback arm of [`MemoProbe`], chosen only when the program does
/// not compile anyway.
pub trait MemoViaNothing<T> {
    /// Runs `compute`, uncached.
    fn cached(&self, site: &Site, key: PreparedKey, compute: impl FnOnce() -> T) -> T;
    /// Never runs.
    fn shelved(
        &self,
        site: &Site,
        key: PreparedKey,
        compute: impl FnOnce() -> T,
    ) -> MemorizedResult<T>;
}

impl<T> MemoViaNothing<T> for MemoProbe<T> {
    fn cached(&self, _: &Site, _: PreparedKey, compute: impl FnOnce() -> T) -> T {
        compute()
    }
    fn shelved(&self, _: &Site, _: PreparedKey, _: impl FnOnce() -> T) -> MemorizedResult<T> {
        unreachable!("a #[memoize] result that is not a serde type does not compile")
    }
}
