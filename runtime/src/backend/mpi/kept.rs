//! The driver's mirror of the large arguments each rank keeps between
//! runs. A rank keeps what it received by content hash and drops only
//! what the driver tells it to (`TAG_EVICT`), so this list, least recently
//! used first, is always what the rank holds.

use super::driver::DRIVER;
use std::sync::OnceLock;

/// Records that worker `peer` keeps the large argument of `hash` (`len`
/// bytes) from now on. Returns whether it kept it already, and the hashes
/// it must drop to stay within `PARJOB_MPI_CACHE_BYTES`.
pub(crate) fn retain(peer: usize, hash: u128, len: u64) -> (bool, Vec<u128>) {
    let Some(driver) = DRIVER.get() else {
        return (false, Vec::new());
    };
    let cap = cache_bytes();
    let mut table = driver.lock_table();
    let p = &mut table.peers[peer];
    if let Some(pos) = p.retained.iter().position(|(h, _)| *h == hash) {
        let entry = p.retained.remove(pos).expect("the position was found");
        p.retained.push_back(entry);
        return (true, Vec::new());
    }
    p.retained.push_back((hash, len));
    p.retained_bytes += len;
    let mut evicted = Vec::new();
    while p.retained_bytes > cap {
        let Some((h, l)) = p.retained.pop_front() else {
            break;
        };
        p.retained_bytes -= l;
        evicted.push(h);
    }
    (false, evicted)
}

/// The bytes of large arguments each rank keeps between runs.
fn cache_bytes() -> u64 {
    static BYTES: OnceLock<u64> = OnceLock::new();
    *BYTES.get_or_init(|| match std::env::var("PARJOB_MPI_CACHE_BYTES") {
        Ok(text) => match text.parse::<crate::options::MaxNbytes>() {
            Ok(size) => size.limit().unwrap_or(0),
            Err(_) => {
                tracing::warn!("PARJOB_MPI_CACHE_BYTES={text:?} is not a size; using the default");
                super::CACHE_BYTES
            }
        },
        Err(_) => super::CACHE_BYTES,
    })
}
