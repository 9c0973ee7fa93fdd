//! `Memory`: the cache as a value, for code that cannot take an attribute.

use super::{
    clear_entries, clear_tree, evict, store, Cache, CacheStats, Compression, Counters, Limits,
    MemorizedResult,
};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A cache directory for code that cannot take an attribute: joblib's
/// `Memory(location)`.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("parjob-doc-memory-{}", std::process::id()));
/// let memory = parjob_runtime::Memory::new(&dir);
/// let slow_square = |x: u64| memory.cache("square", &x, || x * x);
/// assert_eq!(slow_square(12), 144); // computed
/// assert_eq!(slow_square(12), 144); // from the cache
/// assert_eq!(memory.stats("square").hits, 1);
/// std::fs::remove_dir_all(dir).unwrap();
/// ```
pub struct Memory {
    root: PathBuf,
    /// [`Memory::disabled`]: every call computes, nothing is stored.
    disabled: bool,
    compression: Compression,
    expires_after: Option<Duration>,
    bytes_limit: Option<u64>,
    verbose: u8,
    counters: Mutex<HashMap<String, Arc<Counters>>>,
}

impl Memory {
    /// A cache under `dir` (created on first write).
    pub fn new(dir: impl AsRef<Path>) -> Memory {
        Memory {
            root: dir.as_ref().to_path_buf(),
            disabled: false,
            compression: Compression::None,
            expires_after: None,
            bytes_limit: None,
            verbose: 0,
            counters: Mutex::new(HashMap::new()),
        }
    }

    /// A cache that stores nothing: every call computes, `stats` counts
    /// each as a miss ([`MissReason::Disabled`](super::MissReason::Disabled)),
    /// and `clear` and `reduce_size` have nothing to do. joblib's
    /// `Memory(location=None)`, to turn caching off without changing the
    /// code that calls it.
    ///
    /// ```
    /// let memory = parjob_runtime::Memory::disabled();
    /// let mut runs = 0;
    /// for _ in 0..2 {
    ///     memory.cache("square", &3u64, || {
    ///         runs += 1;
    ///         9u64
    ///     });
    /// }
    /// assert_eq!(runs, 2);
    /// assert_eq!(memory.stats("square").misses, 2);
    /// ```
    pub fn disabled() -> Memory {
        Memory {
            disabled: true,
            ..Memory::new("")
        }
    }

    /// Compresses results on disk.
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Treats entries older than `age` as misses.
    pub fn with_expires_after(mut self, age: Duration) -> Self {
        self.expires_after = Some(age);
        self
    }

    /// Evicts least recently used entries of each name past `bytes`.
    pub fn with_bytes_limit(mut self, bytes: u64) -> Self {
        self.bytes_limit = Some(bytes);
        self
    }

    /// 1: a line per miss on stderr; 2: per hit too.
    pub fn with_verbose(mut self, verbose: u8) -> Self {
        self.verbose = verbose;
        self
    }

    fn counters(&self, name: &str) -> Arc<Counters> {
        let mut all = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(all.entry(name.to_string()).or_default())
    }

    /// Counts a call of `name` on a disabled memory.
    fn computed_without(&self, name: &str) {
        self.counters(name).missed(super::MissReason::Disabled);
    }

    /// Runs `with` on the cache of `name`.
    fn with_cache<R>(&self, name: &str, with: impl FnOnce(&Cache<'_>) -> R) -> R {
        let counters = self.counters(name);
        let dir = store::function_dir(&self.root, name);
        let cache = Cache {
            name,
            dir: &dir,
            code: [0; 32],
            code_changed: false,
            compression: self.compression,
            expires_after: self.expires_after,
            bytes_limit: self.bytes_limit,
            verbose: self.verbose,
            counters: &counters,
            handle: None,
        };
        with(&cache)
    }

    /// The cached result of `compute` for `name` and `args`, or `compute`'s,
    /// stored for next time. The runtime form cannot see `compute`'s code:
    /// put a version in `name` when it changes.
    pub fn cache<A, T>(&self, name: &str, args: &A, compute: impl FnOnce() -> T) -> T
    where
        A: Serialize + ?Sized,
        T: Serialize + DeserializeOwned,
    {
        if self.disabled {
            self.computed_without(name);
            return compute();
        }
        self.with_cache(name, |cache| cache.call(cache.key(args), compute))
    }

    /// An existing function made cached, without a wrapper (joblib's
    /// `memory.cache(f)`): the returned closure takes `f`'s argument (a
    /// tuple for several) and returns the cached result.
    ///
    /// ```
    /// fn slow_square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// let dir = std::env::temp_dir().join(format!("parjob-doc-cache-fn-{}", std::process::id()));
    /// let memory = parjob_runtime::Memory::new(&dir);
    /// let square = memory.cache_fn("slow_square", slow_square);
    /// assert_eq!((square(12), square(12)), (144, 144));
    /// assert_eq!(memory.stats("slow_square").hits, 1);
    /// std::fs::remove_dir_all(dir).unwrap();
    /// ```
    pub fn cache_fn<'m, A, T>(
        &'m self,
        name: &'m str,
        f: impl Fn(A) -> T + 'm,
    ) -> impl Fn(A) -> T + 'm
    where
        A: Serialize,
        T: Serialize + DeserializeOwned,
    {
        move |args: A| {
            if self.disabled {
                self.computed_without(name);
                return f(args);
            }
            self.with_cache(name, |cache| cache.call(cache.key(&args), || f(args)))
        }
    }

    /// Computes or finds the result of `name` for `args` without loading
    /// it (joblib's `call_and_shelve`): a small handle to the stored entry,
    /// whose [`MemorizedResult::get`] loads it when needed.
    pub fn call_and_shelve<A, T>(
        &self,
        name: &str,
        args: &A,
        compute: impl FnOnce() -> T,
    ) -> MemorizedResult<T>
    where
        A: Serialize + ?Sized,
        T: Serialize,
    {
        if self.disabled {
            self.computed_without(name);
            return MemorizedResult::in_memory(&compute());
        }
        self.with_cache(name, |cache| cache.shelve(cache.key(args), compute))
    }

    /// Whether a valid, unexpired entry of `name` exists for `args`.
    pub fn check_call_in_cache<A: Serialize + ?Sized>(&self, name: &str, args: &A) -> bool {
        !self.disabled && self.with_cache(name, |cache| cache.contains(cache.key(args)))
    }

    /// Hits, misses, and why the last miss of `name` missed.
    pub fn stats(&self, name: &str) -> CacheStats {
        self.counters(name).snapshot()
    }

    /// Deletes the least recently used entries under this directory (every
    /// name and every `#[memoize]` function stored here) until all given
    /// limits hold. Returns how many entries it deleted.
    pub fn reduce_size(
        &self,
        bytes_limit: Option<u64>,
        items_limit: Option<usize>,
        age_limit: Option<Duration>,
    ) -> usize {
        if self.disabled {
            return 0;
        }
        evict::reduce_size(
            &self.root,
            Limits {
                bytes: bytes_limit,
                items: items_limit,
                age: age_limit,
            },
        )
    }

    /// Deletes every entry under this directory: every name and every
    /// `#[memoize]` function stored here (joblib's `Memory.clear()`).
    /// Files that are not cache entries are left alone, and links are not
    /// followed. [`Memory::clear_name`] deletes one name's entries.
    pub fn clear_all(&self) {
        if !self.disabled {
            clear_tree(&self.root);
        }
    }

    /// [`Memory::clear_all`], under joblib's name. It is deprecated so that
    /// `memory.clear(name)`, which rustc answers with "remove the extra
    /// argument", also says that this call deletes *every* entry.
    #[deprecated(
        note = "`clear()` deletes every entry under the directory: call `clear_all()` for \
                that, or `clear_name(name)` to delete one function's entries"
    )]
    pub fn clear(&self) {
        self.clear_all();
    }

    /// Deletes every entry of `name` (joblib's `func.clear()`).
    pub fn clear_name(&self, name: &str) {
        if !self.disabled {
            clear_entries(&store::function_dir(&self.root, name));
        }
    }
}
