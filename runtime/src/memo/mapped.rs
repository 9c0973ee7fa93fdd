//! `#[memoize(mmap_mode = "r")]`: a cached array of numbers comes back
//! mapped from its entry, not read into memory, as joblib's
//! `Memory(mmap_mode="r")` returns a `np.memmap`.
//!
//! Such an entry is written in dump encoding, uncompressed, with its type's
//! fingerprint (`persist::write_mappable_entry`), so its numbers lie
//! 64-byte aligned in the file. A hit maps the file and checks its
//! checksums over the mapping (`persist::map_entry`): a damaged entry is a
//! miss, recomputed, never numbers. When the cache cannot be written, the
//! computed array is returned as it is, owned.
//!
//! **The contract that makes the safe `&[P]` sound.** A mapping shows the
//! file as it is now, so a process that truncated or rewrote the entry in
//! place would fault the reader (SIGBUS) or change the numbers behind the
//! borrow. parjob never does either: every writer, in every thread,
//! process and MPI rank, replaces an entry by writing a new file and
//! renaming it over the old one, and eviction and `clear` unlink; both
//! leave a mapped file as it was. The one risk is a program other than
//! parjob writing into the cache folder in place, which the docs rule
//! out. A hit also checks that the entry's inode, size and modification
//! time did not change while it was checked, so an in-place writer caught
//! in that window is a miss, not a mapping.

use super::{store, Cache, MissReason, PreparedKey, Site};
use crate::persist::{map_entry, write_mappable_entry, Mapped, PersistError};
use crate::plain::Plain;
use serde::Serialize;
use std::ops::Deref;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The result of a `#[memoize(mmap_mode = "r")]` function: an array of
/// numbers that derefs to `[P]`, mapped read-only from the cache entry
/// (on a hit, and on a miss once stored), or owned when the cache could
/// not be used.
pub struct CachedArray<P: Plain> {
    data: Data<P>,
}

enum Data<P: Plain> {
    Mapped(Mapped<P>),
    Owned(Vec<P>),
}

impl<P: Plain> CachedArray<P> {
    fn owned(values: Vec<P>) -> Self {
        CachedArray {
            data: Data::Owned(values),
        }
    }

    /// Whether the numbers are mapped from the cache file (else owned).
    pub fn is_mapped(&self) -> bool {
        matches!(self.data, Data::Mapped(_))
    }

    /// The numbers as an owned `Vec` (a copy when mapped).
    pub fn into_vec(self) -> Vec<P> {
        match self.data {
            Data::Mapped(mapped) => mapped.to_vec(),
            Data::Owned(values) => values,
        }
    }
}

impl<P: Plain> Deref for CachedArray<P> {
    type Target = [P];
    fn deref(&self) -> &[P] {
        match &self.data {
            Data::Mapped(mapped) => mapped,
            Data::Owned(values) => values,
        }
    }
}

impl<P: Plain + std::fmt::Debug> std::fmt::Debug for CachedArray<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedArray")
            .field("mapped", &self.is_mapped())
            .field("len", &self.len())
            .finish()
    }
}

/// What tells one version of an entry's file from another: its inode, size
/// and modification time. `None` when it cannot be read.
fn identity(path: &std::path::Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec()))
}

impl Site {
    /// A call of a `mmap_mode = "r"` function: the cached array mapped, or
    /// `compute`'s, stored and then mapped.
    pub fn call_mapped<P: Plain + Serialize>(
        &self,
        key: PreparedKey,
        compute: impl FnOnce() -> Vec<P>,
    ) -> CachedArray<P> {
        match (self.cache(), key.0) {
            (Some(cache), Some(Ok(key))) => cache.call_mapped(&key, compute),
            (Some(cache), Some(Err(e))) => {
                cache
                    .counters
                    .warn_once(cache.name, &format!("cannot hash the arguments: {e}"));
                cache.counters.missed(MissReason::Unavailable);
                CachedArray::owned(compute())
            }
            _ => {
                self.without_cache();
                CachedArray::owned(compute())
            }
        }
    }
}

impl Cache<'_> {
    /// Maps a valid, unexpired entry, or says why there is none.
    fn map_hit<P: Plain>(&self, key: &super::Key) -> Result<Mapped<P>, MissReason> {
        let path = store::output_path(self.dir, key);
        let before = identity(&path);
        // SAFETY: cache entries are only ever replaced by a rename and
        // removed by unlinking (store::write_atomic, eviction, clear), which
        // leave a mapped file as it was; see `map_entry`. A process other
        // than parjob's that rewrites an entry in place is outside this
        // contract (the module's doc and the guide say so); the identity
        // check below catches one that did it while the hit was checked.
        match unsafe { map_entry::<P>(&path) } {
            Ok(_) if before.is_none() || identity(&path) != before => {
                tracing::warn!(
                    function = self.name,
                    path = %path.display(),
                    "a parjob cache entry changed while it was mapped; recomputing it"
                );
                Err(MissReason::Corrupt)
            }
            Ok((mapped, header)) => {
                let created = UNIX_EPOCH + Duration::from_nanos(header.created_ns);
                if store::expired(created, self.expires_after) {
                    return Err(MissReason::Expired);
                }
                store::touch(&path);
                Ok(mapped)
            }
            Err(PersistError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(if super::was_evicted(self.dir, key) {
                    MissReason::Evicted
                } else if self.code_changed {
                    MissReason::CodeChanged
                } else {
                    MissReason::NoEntry
                })
            }
            Err(e) => {
                tracing::warn!(
                    function = self.name,
                    path = %path.display(),
                    "unusable parjob cache entry ({e}); recomputing it"
                );
                Err(MissReason::Corrupt)
            }
        }
    }

    fn call_mapped<P: Plain + Serialize>(
        &self,
        key: &super::Key,
        compute: impl FnOnce() -> Vec<P>,
    ) -> CachedArray<P> {
        match self.map_hit::<P>(key) {
            Ok(mapped) => {
                self.counters.hit();
                return CachedArray {
                    data: Data::Mapped(mapped),
                };
            }
            Err(reason) => self.counters.missed(reason),
        }
        let started = Instant::now();
        let values = compute();
        let took = started.elapsed();
        let path = store::output_path(self.dir, key);
        let created_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let write = || write_mappable_entry(&values, &path, created_ns, took.as_nanos() as u64);
        let written = write().or_else(|e| match e {
            PersistError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(self.dir)?;
                write()
            }
            other => Err(other),
        });
        if let Err(e) = written {
            self.counters.warn_once(
                self.name,
                &format!("cannot write to {}: {e}", self.dir.display()),
            );
            return CachedArray::owned(values);
        }
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        self.stored(len);
        match self.map_hit::<P>(key) {
            Ok(mapped) => CachedArray {
                data: Data::Mapped(mapped),
            },
            Err(_) => CachedArray::owned(values),
        }
    }
}

/// No type has this: it is the bound of the `call_and_shelve` that a
/// `#[memoize(mmap_mode = "r")]` function gets, so that calling it is an
/// error that says what to do instead.
#[diagnostic::on_unimplemented(
    message = "`call_and_shelve` is not available on a `#[memoize(mmap_mode = \"r\")]` function",
    label = "its result is mapped from the cache, not loaded",
    note = "calling the function itself is already lazy: it returns a `CachedArray` mapped from \
            the entry's file, and loads nothing",
    note = "for a shelved copy that loads on `get()`, use `parjob::Memory::call_and_shelve`"
)]
pub trait MappedHasNoShelve {}
