//! The MPI backend: the ranks of an MPI job as worker processes.
//!
//! # Two ways to get ranks
//! - **Static** (`mpirun -n N prog`, `srun -n N prog`): every rank runs the
//!   same binary. At `#[parjob::main]`, rank 0 returns to `main` as the
//!   driver and every other rank serves jobs until rank 0 says stop. This
//!   is mpi4py.futures' static mode.
//! - **Spawned** (`Backend::MpiSpawn`): a program started alone calls
//!   `MPI_Comm_spawn` on its own executable with [`SPAWN_FLAG`]; the
//!   children find their parent communicator and serve.
//!
//! # One thread talks MPI
//! MPI is initialised with `MPI_THREAD_FUNNELED` on a thread of its own
//! (`parjob-mpi`), which makes every MPI call of the process, all of them
//! nonblocking (`link`): it polls without sleeping for 100 us after any
//! activity, where the next message of a busy exchange comes, then backs
//! off to 1 ms sleeps when idle (`link::Backoff`). On rank 0 the sessions
//! hand it messages through a channel and get the ranks' answers back
//! through another (`driver`). On a worker rank it bridges MPI to the
//! process backend's serve loop, which runs on the main thread over a
//! pair of pipes (`rank`): a worker rank runs tasks exactly as a worker
//! process does, from the same frames.
//!
//! # Messages
//! Tags: [`TAG_HELLO`] (worker to driver, once: protocol, registry
//! fingerprint, host), [`TAG_TASK`] (a `ToWorker` frame), [`TAG_RESULT`]
//! (one or more answer frames), [`TAG_CANCEL`] (skip the rest of batches
//! up to an id), [`TAG_STOP`] (serve no more), [`TAG_SEGMENT`] (a large
//! argument, once per rank and run), [`TAG_SHARE`] and [`TAG_EVICT`]. A
//! rank on the driver's node opens the driver's memfd; on any other node
//! the first rank to need the argument receives its bytes (checked by
//! hash), and the driver asks it to pass its memfd to the node's other
//! ranks. Ranks keep recent arguments by content hash between runs, up to
//! [`CACHE_BYTES`]; the driver mirrors what each rank holds and says what
//! to drop, so a later run with the same bytes sends only a header.
//!
//! # A dead rank
//! A rank that dies ends the MPI job: that is MPI's model, and `mpirun`
//! kills the other ranks. The dying rank and the driver each print what
//! they know before they go (`signals`).

mod driver;
mod kept;
mod lease;
mod link;
mod rank;
mod segments;
mod session;
mod signals;
mod traced;
#[cfg(test)]
mod tests;

pub(crate) use driver::{spawn_workers, worker_ranks};
pub(crate) use session::MpiSession;

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A worker's hello.
pub(crate) const TAG_HELLO: i32 = 101;
/// Driver to worker: one `ToWorker` frame.
pub(crate) const TAG_TASK: i32 = 102;
/// Worker to driver: answer frames, whole.
pub(crate) const TAG_RESULT: i32 = 103;
/// Driver to worker: skip the rest of every batch up to this id.
pub(crate) const TAG_CANCEL: i32 = 104;
/// Driver to worker: serve no more.
pub(crate) const TAG_STOP: i32 = 105;
/// Driver to worker: a large argument's header, then its bytes in parts.
pub(crate) const TAG_SEGMENT: i32 = 106;
/// The parts of a segment's bytes, right after its header.
pub(crate) const TAG_SEGMENT_PART: i32 = 107;
/// Driver to worker: pass segment `id`, which you hold, to rank `to` of
/// your node ([`Share`]).
pub(crate) const TAG_SHARE: i32 = 108;
/// Driver to worker: drop these content hashes from your cache of large
/// arguments (a list of `u128`).
pub(crate) const TAG_EVICT: i32 = 109;

/// The argument that makes a spawned copy of this program a worker.
pub const SPAWN_FLAG: &str = "--parjob-mpi-worker";

/// Set to send large arguments' bytes even to ranks on the driver's node.
pub(crate) const NO_NODE_SHARING: &str = "PARJOB_MPI_NO_NODE_SHARING";

/// Auto-batching aims for batches this long on MPI ranks. Each batch is
/// two messages through the single driver thread; at 0.2 s per batch a
/// driver feeding 2,048 ranks (64 nodes x 32) handles about 20,000
/// messages a second, a small share of what one thread sustains
/// (docs/benchmarks.md), and the last batch of a run costs at most 0.2 s
/// of imbalance.
pub(crate) const BATCH_TARGET: Duration = Duration::from_millis(200);

/// The bytes rank 0 keeps in flight at once: sends past this wait their
/// turn, so broadcasting to many ranks never holds many copies.
pub(crate) const IN_FLIGHT_CAP: usize = 256 << 20;

/// How many bytes of large arguments each rank keeps between runs, by
/// content hash (`PARJOB_MPI_CACHE_BYTES` on rank 0; `0` keeps none).
pub(crate) const CACHE_BYTES: u64 = 1 << 30;

/// How long the driver waits for every rank's hello.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(60);

/// What a worker rank tells the driver first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RankHello {
    /// The same hello a worker process sends: protocol and fingerprint.
    pub(crate) hello: crate::wire::Hello,
    /// The rank's host name.
    pub(crate) host: String,
    /// The kernel and pid namespace it runs in: ranks that share it with
    /// the driver can open the driver's memfds.
    pub(crate) node: String,
    /// CPUs the rank may use.
    pub(crate) cpus: usize,
    /// The rank's monotonic clock when it sent the hello, in nanoseconds:
    /// what a trace's times from another node are shifted by.
    pub(crate) clock_ns: u64,
}

/// A large argument on its way to a rank.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SegmentHeader {
    /// The driver's id of the segment, which the task frames name.
    pub(crate) id: u64,
    /// Its length in bytes.
    pub(crate) len: u64,
    /// xxh3-128 of its bytes, checked on arrival.
    pub(crate) hash: u128,
    /// On the driver's node: the driver's pid and the memfd's descriptor,
    /// opened through `/proc` instead of sending the bytes.
    pub(crate) local: Option<(u32, i32)>,
    /// The rank has these bytes from an earlier run, under `hash`: no
    /// bytes follow.
    pub(crate) cached: bool,
}

/// Driver to the rank of a node that holds a segment: give the rank `to`
/// (in the workers' communicator) your memfd of segment `id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Share {
    pub(crate) id: u64,
    pub(crate) to: i32,
}

/// Whether this process was started by an MPI launcher (`mpirun`,
/// `mpiexec`, `srun` with PMI) or spawned by a parjob driver.
pub fn launched() -> bool {
    const VARS: [&str; 4] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"];
    spawned() || VARS.iter().any(|v| std::env::var_os(v).is_some())
}

fn spawned() -> bool {
    std::env::args_os().skip(1).any(|a| a == SPAWN_FLAG)
}

/// The node this process runs on, as far as sharing memfds goes: the
/// kernel's boot id and the pid namespace (finer than
/// `MPI_Comm_split_type(SHARED)`, which also groups containers whose
/// `/proc` cannot see each other). `PARJOB_TEST_NODE` replaces it, so the
/// tests can put ranks of one machine on pretend nodes.
fn node_id() -> String {
    if let Ok(node) = std::env::var("PARJOB_TEST_NODE") {
        return node;
    }
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let pidns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!("{}/{pidns}", boot.trim())
}

/// This host's name, as MPI reports it.
fn host_name() -> String {
    mpi::environment::processor_name().unwrap_or_else(|_| "?".into())
}

/// The CPUs this rank may use: `SLURM_CPUS_PER_TASK` when Slurm set it,
/// else what the scheduler affinity and the cgroup quota allow.
pub(crate) fn rank_cpus() -> usize {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    cpus_for(
        std::env::var("SLURM_CPUS_PER_TASK").ok().as_deref(),
        available,
    )
}

/// The rule behind [`rank_cpus`]: Slurm's count when it is a positive
/// number, but never more than `available`.
fn cpus_for(slurm: Option<&str>, available: usize) -> usize {
    let slurm = slurm
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0);
    slurm.map_or(available, |s| s.min(available))
}

/// Called by `init()`: under an MPI launcher, starts MPI; a worker rank
/// then serves and exits here, and rank 0 returns as the driver.
pub(crate) fn enter_if_launched() {
    if launched() {
        match driver::start() {
            Ok(driver::Role::Driver) => {}
            Ok(driver::Role::Worker(bridge)) => rank::serve(bridge),
            Err(e) => {
                eprintln!("parjob: starting MPI failed: {e}");
                std::process::exit(70);
            }
        }
    }
}

/// Information about this process's place in an MPI job.
pub(crate) mod info {
    /// This process's rank in `MPI_COMM_WORLD` (or among the spawned
    /// workers), `None` outside MPI.
    pub fn rank() -> Option<usize> {
        super::rank::this_rank()
    }

    /// How many large arguments this worker rank has received: one per
    /// argument and run, however many jobs use it, and none for an
    /// argument it kept from an earlier run.
    pub fn segments_received() -> u64 {
        super::segments::segments_received()
    }

    /// How many large arguments this worker rank took from what it kept
    /// of earlier runs (same bytes, same content hash).
    pub fn segments_reused() -> u64 {
        super::segments::segments_reused()
    }

    /// The number of MPI messages and bytes rank 0 has sent to its
    /// workers so far.
    pub fn driver_sent() -> (u64, u64) {
        super::driver::sent()
    }
}

/// The error of an `MPI_Comm_spawn` that found no free slots, with the
/// setting that allows more ranks than slots.
fn spawn_refused(workers: usize, e: impl std::fmt::Display) -> String {
    format!(
        "MPI_Comm_spawn of {workers} workers failed ({e}): MPI found no free slots for them. \
         With OpenMPI, allow more ranks than slots with OMPI_MCA_rmaps_base_oversubscribe=1 \
         (or run under `mpirun --oversubscribe`), or ask for fewer workers in \
         Backend::MpiSpawn {{ workers }}"
    )
}
