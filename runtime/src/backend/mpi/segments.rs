//! A worker rank's large arguments: received once per run, kept by content
//! hash between runs, and passed on to the other ranks of its node.
//!
//! A segment arrives three ways: as the driver's memfd on the driver's
//! node (opened through `/proc`), as bytes (into a new sealed segment,
//! checked against its xxh3 hash), or as another rank's memfd on this
//! node. A header marked `cached` names bytes this rank kept from an
//! earlier run; the driver mirrors what each rank keeps and says what to
//! drop (`TAG_EVICT`), so the two never disagree. A job waits for its
//! segment in `shm::worker_segment`, so a segment that comes from another
//! rank may arrive after the task that names it.

use super::link::{self, Address, Body, Link};
use super::{SegmentHeader, Share, TAG_SEGMENT, TAG_SEGMENT_PART};
use crate::shm::Segment;
use crate::wire::codec;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

type Comm = mpi::ffi::MPI_Comm;

static SEGMENTS_RECEIVED: AtomicU64 = AtomicU64::new(0);
static SEGMENTS_REUSED: AtomicU64 = AtomicU64::new(0);

/// Large arguments this rank has received (not counting those it kept
/// from an earlier run).
pub(crate) fn segments_received() -> u64 {
    SEGMENTS_RECEIVED.load(Ordering::Relaxed)
}

/// Large arguments this rank took from its cache instead.
pub(crate) fn segments_reused() -> u64 {
    SEGMENTS_REUSED.load(Ordering::Relaxed)
}

/// What a worker rank's MPI thread knows of its segments.
pub(crate) struct RankSegments {
    rank: usize,
    /// Kept until the driver says to drop them, by content hash.
    by_hash: HashMap<u128, Arc<Segment>>,
    /// The hash of each id adopted, to share it on.
    hash_of: HashMap<u64, u128>,
    /// Ids named as cached before their bytes arrived (from another rank
    /// of a cancelled run), adopted when they do.
    waiting: HashMap<u128, Vec<u64>>,
}

impl RankSegments {
    pub(crate) fn new(rank: usize) -> RankSegments {
        RankSegments {
            rank,
            by_hash: HashMap::new(),
            hash_of: HashMap::new(),
            waiting: HashMap::new(),
        }
    }

    /// Takes a segment's header, and its bytes when they follow. A
    /// failure is printed; the jobs that name it then fail saying so.
    pub(crate) fn receive(&mut self, comm: Comm, probed: link::Probed) {
        let source = probed.source;
        let header = match probed
            .receive(4096)
            .and_then(|b| codec::decode::<SegmentHeader>(&b).map_err(|e| e.0))
        {
            Ok(h) => h,
            Err(e) => {
                return eprintln!("parjob: MPI rank {}: a bad segment header: {e}", self.rank)
            }
        };
        if header.cached {
            return match self.by_hash.get(&header.hash) {
                Some(kept) => {
                    SEGMENTS_REUSED.fetch_add(1, Ordering::Relaxed);
                    self.adopt(header.id, header.hash, kept.clone());
                }
                None => self.waiting.entry(header.hash).or_default().push(header.id),
            };
        }
        let segment = match header.local {
            Some((pid, fd)) => open_local(&header, pid, fd),
            None => receive_bytes(comm, source, &header),
        };
        match segment {
            Ok(segment) => {
                SEGMENTS_RECEIVED.fetch_add(1, Ordering::Relaxed);
                let segment = Arc::new(segment);
                self.by_hash.insert(header.hash, segment.clone());
                self.adopt(header.id, header.hash, segment.clone());
                for alias in self.waiting.remove(&header.hash).unwrap_or_default() {
                    self.adopt(alias, header.hash, segment.clone());
                }
            }
            Err(e) => eprintln!(
                "parjob: MPI rank {}: large argument {} ({} bytes): {e}",
                self.rank, header.id, header.len
            ),
        }
    }

    fn adopt(&mut self, id: u64, hash: u128, segment: Arc<Segment>) {
        self.hash_of.insert(id, hash);
        crate::shm::worker_adopted(id, segment);
    }

    /// Drops these hashes from the cache; runs that use them keep their
    /// own reference until they forget it.
    pub(crate) fn evict(&mut self, hashes: &[u128]) {
        for hash in hashes {
            self.by_hash.remove(hash);
            self.waiting.remove(hash);
        }
        self.hash_of.retain(|_, h| !hashes.contains(h));
    }

    /// Passes segment `share.id` to rank `share.to` of this node (in
    /// `peers`): its memfd's place under `/proc`, which that rank opens.
    pub(crate) fn share(&self, share: Share, peers: Comm, link: &mut Link) {
        let found = self
            .hash_of
            .get(&share.id)
            .and_then(|h| Some((*h, self.by_hash.get(h)?)));
        let Some((hash, segment)) = found else {
            return eprintln!(
                "parjob: MPI rank {}: asked to share large argument {}, which it does not hold",
                self.rank, share.id
            );
        };
        let header = SegmentHeader {
            id: share.id,
            len: segment.bytes().len() as u64,
            hash,
            local: Some((std::process::id(), segment.fd().as_raw_fd())),
            cached: false,
        };
        if let Ok(bytes) = codec::encode(&header) {
            let to = Address {
                comm: peers,
                rank: share.to,
            };
            // The segment stays here until the driver evicts it, which it
            // does only after the runs that use it.
            link.send(to, TAG_SEGMENT, Body::Bytes(bytes));
        }
    }
}

fn open_local(header: &SegmentHeader, pid: u32, fd: i32) -> Result<Segment, String> {
    let path = format!("/proc/{pid}/fd/{fd}");
    let file = File::open(&path).map_err(|e| {
        format!(
            "opening {path} of this node: {e} (set {}=1 on rank 0 to send the bytes instead)",
            super::NO_NODE_SHARING
        )
    })?;
    let len = usize::try_from(header.len).map_err(|_| "larger than memory".to_string())?;
    Segment::adopt(header.id, OwnedFd::from(file), len, false).map_err(|e| e.to_string())
}

fn receive_bytes(comm: Comm, source: i32, header: &SegmentHeader) -> Result<Segment, String> {
    let len = usize::try_from(header.len).map_err(|_| "larger than memory".to_string())?;
    crate::shm::check_capacity(len)?;
    let mut failure = None;
    let segment = Segment::create_filled(header.id, len, |out| {
        let mut at = 0;
        while at < out.len() {
            let Some(part) = link::probe(comm, Some(source)) else {
                std::thread::yield_now();
                continue;
            };
            if part.tag != TAG_SEGMENT_PART || part.len > out.len() - at {
                failure = Some(format!("expected its bytes, got tag {}", part.tag));
                let _ = part.receive(0);
                return;
            }
            let n = part.len;
            part.receive_into(&mut out[at..at + n]);
            at += n;
        }
    })?;
    if let Some(f) = failure {
        return Err(f);
    }
    let hash = xxhash_rust::xxh3::xxh3_128(segment.bytes());
    if hash != header.hash {
        return Err("its bytes do not match their hash".into());
    }
    Ok(segment)
}
