//! The disk cache behind `#[memoize]` and [`Memory`]: joblib's
//! `Memory.cache`, shared by every thread, process and run that points at
//! the same directory.
//!
//! - [`key`]: sha256 over the function's name, a fingerprint of its code,
//!   and its arguments streamed through a hashing serde serializer.
//! - [`store`]: the layout, atomic writes, checked reads.
//! - [`evict`]: least-recently-used eviction under byte, item and age limits.
//!
//! A call looks its key up; a valid entry is decoded and returned (a hit),
//! anything else is a miss with a reason ([`MissReason`]), after which the
//! body runs and its result is stored. The cache never makes a call fail:
//! a corrupt entry is recomputed and replaced, with a `tracing` warning; a
//! directory that cannot be written (read-only, full, missing permissions)
//! makes the call compute and return its result, with one warning per
//! function.

pub(crate) mod clock;
mod counters;
pub(crate) mod evict;
mod handle;
pub(crate) mod key;
pub(crate) mod mapped;
mod memory;
pub(crate) mod probe;
mod shelf;
pub(crate) mod store;

use counters::Counters;
pub use counters::{CacheStats, MissReason};
use handle::DirHandle;
pub use memory::Memory;
pub use shelf::MemorizedResult;
use shelf::Shelf;

use key::{Hasher, Key, KeyError};
use serde::{de::DeserializeOwned, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub(crate) use crate::compress::Compression;
pub(crate) use evict::Limits;

/// Environment variable giving the cache directory of `#[memoize]`
/// functions that do not name one.
pub(crate) const ENV_CACHE_DIR: &str = "PARJOB_CACHE_DIR";

/// The cache root of a `#[memoize]` function that names no `dir`:
/// `PARJOB_CACHE_DIR`, else `parjob/<crate>` in the user's cache directory
/// (`$XDG_CACHE_HOME`, else `$HOME/.cache`), so that caching is never
/// silently skipped. `<crate>` is the first segment of the function's
/// path. `None` only when none of these variables is set.
fn default_root(function: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(ENV_CACHE_DIR).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let user_cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        })?;
    let krate = function.split("::").next().unwrap_or("parjob");
    Some(user_cache.join("parjob").join(krate))
}

/// Everything one cached call needs: where, how, and whose counters.
struct Cache<'a> {
    name: &'a str,
    dir: &'a Path,
    code: Key,
    code_changed: bool,
    compression: Compression,
    expires_after: Option<Duration>,
    bytes_limit: Option<u64>,
    verbose: u8,
    counters: &'a Counters,
    /// The directory's open handle, for `#[memoize]` sites.
    handle: Option<&'a DirHandle>,
}

/// A value, or why there is none.
type Lookup = std::result::Result<store::CacheEntry, MissReason>;

impl Cache<'_> {
    fn key<A: Serialize + ?Sized>(&self, args: &A) -> std::result::Result<Key, KeyError> {
        let mut h = Hasher::default();
        h.write(&(self.name.len() as u64).to_le_bytes());
        h.write(self.name.as_bytes());
        h.write(&self.code);
        h.value(args)?;
        Ok(h.finish())
    }

    /// Finds a valid, unexpired entry.
    fn lookup(&self, key: &Key) -> Lookup {
        let name = key::EntryName::output(key);
        let read = match self.handle {
            Some(handle) => store::read_via(handle, self.dir, &name),
            None => store::read(&self.dir.join(name.as_str())),
        };
        let path = || self.dir.join(name.as_str());
        let entry = match read {
            Ok(entry) => entry,
            Err(store::Unusable::Missing) => {
                return Err(if was_evicted(self.dir, key) {
                    MissReason::Evicted
                } else if self.code_changed {
                    MissReason::CodeChanged
                } else {
                    MissReason::NoEntry
                });
            }
            Err(store::Unusable::Corrupt(why)) => {
                tracing::warn!(
                    function = self.name,
                    path = %path().display(),
                    "corrupt parjob cache entry ({why}); recomputing it"
                );
                return Err(MissReason::Corrupt);
            }
            Err(store::Unusable::Io(e)) => {
                self.counters
                    .warn_once(self.name, &format!("cannot read {}: {e}", path().display()));
                return Err(MissReason::Unavailable);
            }
        };
        if entry.is_expired(self.expires_after) {
            return Err(MissReason::Expired);
        }
        store::touch_unless_recent(path, entry.used);
        Ok(entry)
    }

    fn decode<T: DeserializeOwned>(&self, key: &Key, entry: &store::CacheEntry) -> Option<T> {
        match crate::wire::codec::decode(&entry.value) {
            Ok(value) => Some(value),
            Err(e) => {
                let path = store::output_path(self.dir, key);
                tracing::warn!(
                    function = self.name,
                    path = %path.display(),
                    "parjob cache entry does not decode as the function's result ({e}); recomputing it"
                );
                None
            }
        }
    }

    /// Runs `compute` and stores its result. Returns the value and, when
    /// stored, nothing else is needed; when the store failed, the encoded
    /// bytes (for a shelved result).
    fn compute_and_store<T: Serialize>(
        &self,
        key: &Key,
        compute: impl FnOnce() -> T,
    ) -> (T, Option<Vec<u8>>) {
        if self.verbose >= 1 {
            eprintln!("[Memory] {}: computing", self.name);
        }
        let started = Instant::now();
        let value = compute();
        let took = started.elapsed();
        if self.verbose >= 1 {
            eprintln!(
                "[Memory] {}: computed in {:.3}s",
                self.name,
                took.as_secs_f64()
            );
        }
        let encoded = match crate::wire::codec::encode(&value) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.counters
                    .warn_once(self.name, &format!("cannot encode the result: {e}"));
                return (value, None);
            }
        };
        match self.store(key, &encoded, took) {
            Ok(()) => (value, None),
            Err(e) => {
                self.counters.warn_once(
                    self.name,
                    &format!("cannot write to {}: {e}", self.dir.display()),
                );
                (value, Some(encoded))
            }
        }
    }

    fn store(&self, key: &Key, encoded: &[u8], took: Duration) -> io::Result<()> {
        let file = store::encode(encoded, self.compression, took)?;
        let output = store::output_path(self.dir, key);
        if let Err(e) = store::write_atomic(&output, &file) {
            // The directory may be missing (first use, or cleared).
            if e.kind() != io::ErrorKind::NotFound {
                return Err(e);
            }
            std::fs::create_dir_all(self.dir)?;
            store::write_atomic(&output, &file)?;
        }
        self.stored(file.len() as u64);
        Ok(())
    }

    /// After an entry of `len` bytes was written: its metadata, and
    /// eviction past `bytes_limit`.
    fn stored(&self, len: u64) {
        if let Some(limit) = self.bytes_limit {
            // Amortized: scan once a tenth of the limit has been written.
            let pending = self
                .counters
                .unflushed_bytes
                .fetch_add(len, Ordering::Relaxed)
                + len;
            if pending >= (limit / 10).max(1) {
                self.counters.unflushed_bytes.store(0, Ordering::Relaxed);
                evict::reduce_size(
                    self.dir,
                    Limits {
                        bytes: Some(limit),
                        ..Limits::default()
                    },
                );
            }
        }
    }

    /// A full call: the cached value, or the computed and stored one.
    fn call<T: Serialize + DeserializeOwned>(
        &self,
        key: std::result::Result<Key, KeyError>,
        compute: impl FnOnce() -> T,
    ) -> T {
        let key = match key {
            Ok(key) => key,
            Err(e) => {
                self.counters
                    .warn_once(self.name, &format!("cannot hash the arguments: {e}"));
                self.counters.missed(MissReason::Unavailable);
                return compute();
            }
        };
        let reason = match self.lookup(&key) {
            Ok(entry) => match self.decode(&key, &entry) {
                Some(value) => {
                    self.counters.hit();
                    if self.verbose >= 2 {
                        eprintln!("[Memory] {}: loaded from the cache", self.name);
                    }
                    return value;
                }
                None => MissReason::Corrupt,
            },
            Err(reason) => reason,
        };
        self.counters.missed(reason);
        self.compute_and_store(&key, compute).0
    }

    fn shelve<T: Serialize>(
        &self,
        key: std::result::Result<Key, KeyError>,
        compute: impl FnOnce() -> T,
    ) -> MemorizedResult<T> {
        let key = match key {
            Ok(key) => key,
            Err(_) => {
                self.counters.missed(MissReason::Unavailable);
                return MemorizedResult::in_memory(&compute());
            }
        };
        match self.lookup(&key) {
            Ok(_) => {
                self.counters.hit();
                MemorizedResult::stored(store::output_path(self.dir, &key))
            }
            Err(reason) => {
                self.counters.missed(reason);
                match self.compute_and_store(&key, compute) {
                    (_, None) => MemorizedResult::stored(store::output_path(self.dir, &key)),
                    (_, Some(bytes)) => MemorizedResult {
                        shelf: Shelf::Here(bytes),
                        marker: std::marker::PhantomData,
                    },
                }
            }
        }
    }

    fn contains(&self, key: std::result::Result<Key, KeyError>) -> bool {
        let Ok(key) = key else { return false };
        let path = store::output_path(self.dir, &key);
        match store::read(&path) {
            Ok(entry) => !entry.is_expired(self.expires_after),
            Err(_) => false,
        }
    }
}

/// Whether the entry `key` in `dir` was evicted: eviction leaves its
/// metadata file behind.
pub(crate) fn was_evicted(dir: &Path, key: &Key) -> bool {
    store::metadata_path(dir, key).exists()
}

/// Deletes the entries (outputs and metadata) directly in `dir`.
fn clear_entries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "out" || e == "json") {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Deletes the entries in `root` and every directory below it. Links are
/// not followed; the walk keeps its own stack, so a deep tree cannot
/// exhaust the thread's.
fn clear_tree(root: &Path) {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        clear_entries(&dir);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            }
        }
    }
}

const CODE_FILE: &str = "func_code.rs";
const FINGERPRINT_LINE: &str = "// parjob fingerprint: ";

/// Compares the function's code with what wrote its entries. When it
/// changed, the old entries are removed (they were computed by other code),
/// as joblib does, and the new code is recorded.
fn check_code(dir: &Path, name: &str, source: &str, code: &Key) -> bool {
    let path = dir.join(CODE_FILE);
    let fingerprint = key::hex(code);
    // The source file is for humans, but its fingerprint line is read:
    // only from a regular file, and only so much of it.
    let text = crate::files::read_small(&path, 16 << 20).ok();
    let recorded = text.and_then(|bytes| {
        String::from_utf8_lossy(&bytes)
            .lines()
            .find_map(|l| l.strip_prefix(FINGERPRINT_LINE).map(str::to_owned))
    });
    if recorded.as_deref() == Some(fingerprint.as_str()) {
        return false;
    }
    let changed = recorded.is_some();
    if changed {
        clear_entries(dir);
    }
    if std::fs::create_dir_all(dir).is_ok() {
        let text = format!("// {name}\n{FINGERPRINT_LINE}{fingerprint}\n{source}\n");
        let _ = store::write_atomic(&path, text.as_bytes());
    }
    changed
}

/// How a `#[memoize]` attribute configured its function.
#[derive(Debug, Clone, Copy)]
pub struct SiteOptions {
    /// `dir = ".."`; else `PARJOB_CACHE_DIR`; else `parjob/<crate>` in the
    /// user's cache directory.
    pub dir: Option<&'static str>,
    /// `compress = ".."`.
    pub compression: Compression,
    /// `expires_after = ".."`.
    pub expires_after: Option<Duration>,
    /// `bytes_limit = ".."`.
    pub bytes_limit: Option<u64>,
    /// `verbose = 0..=2`.
    pub verbose: u8,
}

struct SiteDir {
    dir: PathBuf,
    code: Key,
    code_changed: bool,
    handle: DirHandle,
}

/// A call's key, hashed before the call (`None`: no cache directory).
pub struct PreparedKey(Option<std::result::Result<Key, KeyError>>);

/// A memoized function's cache, as a `static` the macro generates.
pub struct Site {
    name: &'static str,
    source: &'static str,
    options: SiteOptions,
    resolved: OnceLock<Option<SiteDir>>,
    counters: OnceLock<Counters>,
}

impl Site {
    /// A site for the function `name` whose code is `source`.
    pub const fn new(name: &'static str, source: &'static str, options: SiteOptions) -> Site {
        Site {
            name,
            source,
            options,
            resolved: OnceLock::new(),
            counters: OnceLock::new(),
        }
    }

    fn counters(&self) -> &Counters {
        self.counters.get_or_init(|| Counters {
            name: self.name,
            ..Counters::default()
        })
    }

    fn resolved(&self) -> Option<&SiteDir> {
        self.resolved
            .get_or_init(|| {
                let root = match self.options.dir {
                    Some(dir) => PathBuf::from(dir),
                    None => default_root(self.name)?,
                };
                let dir = store::function_dir(&root, self.name);
                let code = key::digest(self.source).unwrap_or_default();
                let code_changed = check_code(&dir, self.name, self.source, &code);
                Some(SiteDir {
                    dir,
                    code,
                    code_changed,
                    handle: DirHandle::default(),
                })
            })
            .as_ref()
    }

    fn cache(&self) -> Option<Cache<'_>> {
        let resolved = self.resolved()?;
        Some(Cache {
            name: self.name,
            dir: &resolved.dir,
            code: resolved.code,
            code_changed: resolved.code_changed,
            compression: self.options.compression,
            expires_after: self.options.expires_after,
            bytes_limit: self.options.bytes_limit,
            verbose: self.options.verbose,
            counters: self.counters(),
            handle: Some(&resolved.handle),
        })
    }

    fn without_cache(&self) {
        self.counters().warn_once(
            self.name,
            &format!(
                "no cache directory: give `dir = \"..\"`, or set {ENV_CACHE_DIR} (HOME and \
                 XDG_CACHE_HOME are unset too)"
            ),
        );
        self.counters().missed(MissReason::Unavailable);
    }

    /// Hashes the (non-ignored) arguments into this call's key. Done
    /// before the call, so the arguments can then move into the body.
    pub fn prepare<A: Serialize + ?Sized>(&self, args: &A) -> PreparedKey {
        PreparedKey(self.cache().map(|cache| cache.key(args)))
    }

    /// The cached result for the prepared key, or `compute`'s, stored for
    /// next time.
    pub fn call<T>(&self, key: PreparedKey, compute: impl FnOnce() -> T) -> T
    where
        T: Serialize + DeserializeOwned,
    {
        match (self.cache(), key.0) {
            (Some(cache), Some(key)) => cache.call(key, compute),
            _ => {
                self.without_cache();
                compute()
            }
        }
    }

    /// Computes or finds the result, without loading it: see
    /// [`MemorizedResult`].
    pub fn call_and_shelve<T: Serialize>(
        &self,
        key: PreparedKey,
        compute: impl FnOnce() -> T,
    ) -> MemorizedResult<T> {
        match (self.cache(), key.0) {
            (Some(cache), Some(key)) => cache.shelve(key, compute),
            _ => {
                self.without_cache();
                MemorizedResult::in_memory(&compute())
            }
        }
    }

    /// Whether a valid, unexpired entry exists for the prepared key.
    pub fn check_call_in_cache(&self, key: PreparedKey) -> bool {
        match (self.cache(), key.0) {
            (Some(cache), Some(key)) => cache.contains(key),
            _ => false,
        }
    }

    /// Deletes every entry of this function.
    pub fn clear(&self) {
        if let Some(resolved) = self.resolved() {
            clear_entries(&resolved.dir);
        }
    }

    /// Deletes this function's least recently used entries until the
    /// limits hold; returns how many it deleted.
    pub fn reduce_size(&self, limits: Limits) -> usize {
        self.resolved()
            .map_or(0, |r| evict::reduce_size(&r.dir, limits))
    }

    /// Hits, misses, and why the last miss missed: in this process, and
    /// in the worker processes its runs used (reported with each batch's
    /// end). The last miss's reason is this process's.
    pub fn stats(&self) -> CacheStats {
        let mut stats = self.counters().snapshot();
        let (hits, misses) = crate::wire::tally::received(self.name);
        stats.hits += hits;
        stats.misses += misses;
        stats
    }

    /// Where this function's entries live (`None` without a directory).
    pub fn dir(&self) -> Option<PathBuf> {
        self.resolved().map(|r| r.dir.clone())
    }
}
