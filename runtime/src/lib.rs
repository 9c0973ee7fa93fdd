//! The runtime behind parjob's macros.
//!
//! Users depend on the `parjob` facade crate, which re-exports this
//! crate's contract; the macros' expansions reach the rest only through
//! [`__private`], which is not public API.
//!
//! The modules sit on six levels, from the foundations (0: errors,
//! panics, files, hashing, numbers as bytes, codecs, [`shm`]) through
//! options and tasks (1), the wire format and [`sync`] (2), the backends
//! (3) and the scheduler (4) to the API (5). Each imports only from its
//! own level or below; `runtime/tests/layers.rs` holds the one table of
//! levels and checks it on every test run, and `docs/architecture.md`
//! describes each module.

#![warn(missing_docs)]
#![warn(unreachable_pub)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "parjob runs on Linux only: its worker processes use pidfd, memfd, PR_SET_PDEATHSIG and \
     /proc/self/exe. Build on Linux (or in a Linux container or WSL2)."
);

#[macro_use]
mod cfg;

mod backend;
mod calls;
#[cfg(feature = "persist")]
mod compress;
mod config;
mod error;
#[cfg(feature = "persist")]
mod files;
mod hash;
mod indexed;
mod loops;
#[cfg(feature = "cache")]
mod memo;
mod options;
mod panic;
mod parallel;
#[cfg(feature = "persist")]
pub mod persist;
mod plain;
pub mod pool;
mod schedule;
mod shard;
pub mod shm;
pub mod sync;

/// Collections that threads and worker processes share:
/// `multiprocessing.Manager().list()` and `.dict()`, with no manager
/// process. See [`sync`] for how handles reach workers.
pub mod shared {
    pub use crate::sync::collections::{List, Map};
    pub use crate::sync::log::DEFAULT_LOG_BYTES;
}
mod task;
pub mod trace;
mod wire;

pub use backend::init;
pub use backend::process::worker::is_worker;

cfg_mpi! {
    /// The MPI backend's view of this process (parjob's `mpi` feature): see
    /// `Backend::Mpi` and `docs/guide.md`, "More than one machine".
    pub mod mpi {
        pub use crate::backend::mpi::info::*;
        pub use crate::backend::mpi::{launched, SPAWN_FLAG};
    }
}
pub use calls::TaskRun;
#[cfg(feature = "persist")]
pub use compress::Compression;
pub use config::{config, Config, ConfigGuard};
pub use error::{Error, MemoryReading, Result};
#[cfg(feature = "cache")]
pub use memo::mapped::CachedArray;
#[cfg(feature = "cache")]
pub use memo::{CacheStats, MemorizedResult, Memory, MissReason};
pub use options::{
    cpu_count, effective_n_jobs, Backend, BackendSource, BatchSize, Initializer, MaxNbytes,
    NestedIn, OnError, Options, Plan, PreDispatch, Prefer, Require, TempFolder, TraceFile,
};
pub use parallel::Parallel;
pub use schedule::{Ordered, Unordered};
pub use shard::Shard;
pub use task::{Job, Task};

/// What the macros' expansions, parjob's own tests and its fuzz targets
/// call. Not public API: any of it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::backend::process::worker::{test_entry, TestEntryGuard};
    pub use crate::backend::process::{memory_groups, packed_batches, trace_reads, traced_reads};
    pub use crate::shm::{results_received, segments_created, worker_holds, SliceArg};
    /// `ndarray` parameters of tasks (the `ndarray` feature).
    #[cfg(feature = "ndarray")]
    pub mod ndarray_arg {
        pub use crate::shm::{ArrayArg, IntoArrayArg};
        pub use ndarray::{Ix0, Ix1, Ix2, Ix3, Ix4, Ix5, Ix6, IxDyn};
    }
    pub use crate::pool::TaskRef;
    pub use crate::schedule::largest_batch;
    /// The plumbing half of a pool's task traits.
    pub mod pool {
        pub use crate::pool::chunks::Submission;
        pub use crate::pool::tasks::{SubmitMap, SubmitStar};
    }
    pub use crate::task::{
        assert_process_arg, assert_process_output, ArgOwned, Call, CallItem, Crossing, Declared,
        FromItem, IntoOwnedArg, IntoSliceArg, ProcessTask, SerdeFns, TaskCodecs, TaskEntry, Work,
    };
    pub use crate::task::{CopyProbe, ViaClone, ViaNoClone};
    pub use crate::wire::{Probe, ViaNothing, ViaSerde};
    pub use crate::{
        init, Backend, BatchSize, Job, MaxNbytes, OnError, Options, PreDispatch, Prefer, Require,
        Result, Task, TaskRun, TempFolder, TraceFile,
    };
    pub use inventory;
    pub use rayon;

    /// `f::map`, `f::stream`, `f::par_map` and friends.
    pub mod map {
        pub use crate::calls::{calls, indexed, jobs, CallIter, TaskCalls};
        pub use crate::parallel::set_shared_idle_timeout;
    }

    /// The engine behind marked loops and `parallel_for!`.
    pub mod loops {
        pub use crate::loops::{
            process_task, set_min_parallel_item, shared_with_threads, Loop, LoopStep, Question,
            ReturnsError, Unmarked, FIRST_WINDOW,
        };
    }

    /// The cache behind `#[memoize]`.
    #[cfg(feature = "cache")]
    pub mod memo {
        pub use crate::compress::Compression;
        pub use crate::memo::clock::advance as advance_clock;
        pub use crate::memo::evict::Limits;
        pub use crate::memo::mapped::{CachedArray, MappedHasNoShelve};
        pub use crate::memo::probe::{
            assert_memo_output, MemoOutput, MemoProbe, MemoViaNothing, MemoViaSerde,
        };
        pub use crate::memo::{CacheStats, MemorizedResult, Site, SiteOptions};
        /// Argument hashing.
        pub mod key {
            pub use crate::memo::key::RawSlice;
        }
        /// The entry format, for fuzzing.
        pub mod store {
            pub use crate::memo::store::{parse, CacheEntry, HEADER};
        }
    }

    /// The dump format, for tests and fuzzing.
    #[cfg(feature = "persist")]
    pub mod persist_format {
        pub use crate::compress::Encoder;
        pub use crate::persist::format::*;
        use crate::Compression;

        /// The codec byte a header stores for `compression`.
        pub fn codec_tag(compression: Compression) -> u8 {
            compression.tag()
        }

        /// A stream compressor; call `finish` at the end.
        pub fn encoder<W: std::io::Write>(
            compression: Compression,
            out: W,
        ) -> std::io::Result<Encoder<W>> {
            compression.encoder(out)
        }
    }

    /// The worker wire, for fuzzing.
    pub mod wire {
        pub use crate::wire::codec::{decode, decode_from_reader, encode, CodecError};
        pub use crate::wire::{decode_message, read_frame, read_incoming, Incoming, ToWorker};

        /// Whether a worker's frame parses as a message (what the parent's
        /// reader does first with each frame).
        pub fn parses_from_worker(payload: &[u8]) -> bool {
            crate::wire::parse_from_worker(payload).is_ok()
        }
    }
}
