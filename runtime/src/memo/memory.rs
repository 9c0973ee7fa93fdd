//! `Memory`: the cache as a value, for code that cannot take an attribute.

use super::{clear_entries, evict, store, Cache, CacheStats, Compression, Counters, Limits};
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
            compression: Compression::None,
            expires_after: None,
            bytes_limit: None,
            verbose: 0,
            counters: Mutex::new(HashMap::new()),
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

    /// The cached result of `compute` for `name` and `args`, or `compute`'s,
    /// stored for next time. The runtime form cannot see `compute`'s code:
    /// put a version in `name` when it changes.
    pub fn cache<A, T>(&self, name: &str, args: &A, compute: impl FnOnce() -> T) -> T
    where
        A: Serialize + ?Sized,
        T: Serialize + DeserializeOwned,
    {
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
        };
        cache.call(cache.key(args), "", compute)
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
        evict::reduce_size(
            &self.root,
            Limits {
                bytes: bytes_limit,
                items: items_limit,
                age: age_limit,
            },
        )
    }

    /// Deletes every entry of `name`.
    pub fn clear(&self, name: &str) {
        clear_entries(&store::function_dir(&self.root, name));
    }
}
