//! `MemorizedResult`: a result on the shelf, loaded only when asked for.

use super::store;
use crate::error::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};

/// A result that is computed (or found) but not loaded: joblib's
/// `MemorizedResult`. `get` reads, checks and decodes the entry each time.
#[derive(Debug)]
pub struct MemorizedResult<T> {
    pub(super) shelf: Shelf,
    pub(super) marker: std::marker::PhantomData<fn() -> T>,
}

#[derive(Debug)]
pub(super) enum Shelf {
    /// On disk.
    Stored(PathBuf),
    /// The cache could not store it: the encoded value, here.
    Here(Vec<u8>),
}

impl<T> MemorizedResult<T> {
    pub(super) fn stored(path: PathBuf) -> Self {
        MemorizedResult {
            shelf: Shelf::Stored(path),
            marker: std::marker::PhantomData,
        }
    }

    pub(super) fn in_memory(value: &T) -> Self
    where
        T: Serialize,
    {
        MemorizedResult {
            shelf: Shelf::Here(crate::wire::codec::encode(value).unwrap_or_default()),
            marker: std::marker::PhantomData,
        }
    }

    /// The entry's file, when the result is on disk.
    pub fn path(&self) -> Option<&Path> {
        match &self.shelf {
            Shelf::Stored(path) => Some(path),
            Shelf::Here(_) => None,
        }
    }

    /// Loads the result. Fails if the entry was cleared, evicted or
    /// damaged since.
    pub fn get(&self) -> Result<T>
    where
        T: DeserializeOwned,
    {
        let cache_error = |path: &Path, cause: String| Error::Cache {
            path: path.display().to_string(),
            cause,
        };
        match &self.shelf {
            Shelf::Stored(path) => {
                let entry = match store::read(path) {
                    Ok(entry) => entry,
                    Err(store::Unusable::Missing) => {
                        return Err(cache_error(
                            path,
                            "the entry is gone (cleared or evicted)".into(),
                        ))
                    }
                    Err(store::Unusable::Corrupt(why)) => return Err(cache_error(path, why)),
                    Err(store::Unusable::Io(e)) => return Err(cache_error(path, e.to_string())),
                };
                crate::wire::codec::decode(&entry.value)
                    .map_err(|e| cache_error(path, e.to_string()))
            }
            Shelf::Here(bytes) => crate::wire::codec::decode(bytes)
                .map_err(|e| cache_error(Path::new("(memory)"), e.to_string())),
        }
    }

    /// Deletes the entry.
    pub fn clear(&self) {
        if let Shelf::Stored(path) = &self.shelf {
            let _ = std::fs::remove_file(path);
        }
    }
}
