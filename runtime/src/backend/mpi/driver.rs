//! The `parjob-mpi` thread: it starts MPI, decides this process's role,
//! and on rank 0 carries every message between the sessions and the
//! worker ranks.
//!
//! The sessions never call MPI. They read and lease ranks from the
//! [`Table`], hand messages to the thread as [`Command`]s, and get each
//! `TAG_RESULT` message of their leased ranks through their own channel.
//! The thread counts the batches in flight on each rank (a `Done` frame
//! ends one), so a rank that is still finishing a cancelled run's batch
//! is not leased until it is idle.

use super::link::{self, Address, Backoff, Body, Link};
use super::{rank, RankHello};
use super::{IN_FLIGHT_CAP, SPAWN_FLAG};
use super::{TAG_HELLO, TAG_RESULT, TAG_STOP};
use crate::error::{Error, Result};
use crate::wire::{self, codec, Hello};
use mpi::traits::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// What this process is in the MPI job.
pub(crate) enum Role {
    /// Rank 0 (or a program alone): it runs `main` and schedules.
    Driver,
    /// Any other rank: it serves jobs.
    Worker(rank::Bridge),
}

/// A message for the MPI thread.
pub(crate) enum Command {
    /// Send `body` to worker `peer` with `tag`; `batch` counts it as a
    /// batch in flight until the rank's `Done`.
    Send {
        peer: usize,
        tag: i32,
        body: Body,
        batch: bool,
    },
    /// Spawn `workers` more worker ranks.
    Spawn {
        workers: usize,
        reply: Sender<std::result::Result<(), String>>,
    },
}

/// Answer frames from a leased rank.
pub(crate) struct Incoming {
    pub(crate) peer: usize,
    pub(crate) payload: Vec<u8>,
}

/// Where a worker rank is in its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerState {
    Waiting,
    Ready,
    Refused(String),
}

/// A worker rank, as the sessions see it.
pub(crate) struct Peer {
    /// `rank 2 on node7`, for messages.
    pub(crate) label: String,
    pub(crate) state: PeerState,
    /// Batches sent and not yet done.
    pub(crate) in_flight: usize,
    /// The session that holds it.
    pub(crate) lease: Option<Sender<Incoming>>,
    /// Whether it can open this process's memfds through `/proc`.
    pub(crate) same_node: bool,
    /// Its pid on its host. Then its clock less ours, in ns (0 on this node; `greet`).
    pub(crate) pid: u32,
    pub(crate) clock_offset: i64,
    /// Its node (boot id and pid namespace), from its hello.
    pub(crate) node: String,
    /// Which communicator of workers it is in (0: the world's ranks; k:
    /// the k-th spawn) and its rank there: ranks pass segments on to the
    /// ranks of their own group.
    pub(crate) group: usize,
    pub(crate) rank: i32,
    /// The large arguments it keeps between runs, by content hash, least
    /// recently used first, and their bytes.
    pub(super) retained: VecDeque<(u128, u64)>,
    pub(super) retained_bytes: u64,
    bye: bool,
}

/// Every worker rank this driver has.
pub(crate) struct Table {
    pub(crate) peers: Vec<Peer>,
    /// Why the MPI thread stopped, if it did.
    pub(crate) broken: Option<String>,
}

pub(super) struct Driver {
    commands: Mutex<Sender<Command>>,
    table: Mutex<Table>,
    pub(super) changed: Condvar,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

pub(super) static DRIVER: OnceLock<Driver> = OnceLock::new();
static STARTED: Mutex<bool> = Mutex::new(false);
static MESSAGES_SENT: AtomicU64 = AtomicU64::new(0);
static BYTES_SENT: AtomicU64 = AtomicU64::new(0);

/// Messages and bytes rank 0 has sent to workers.
pub(crate) fn sent() -> (u64, u64) {
    (
        MESSAGES_SENT.load(Ordering::Relaxed),
        BYTES_SENT.load(Ordering::Relaxed),
    )
}

/// Starts MPI on its own thread and says what this process is. Called
/// once, by `init()` under a launcher or by the first `MpiSpawn` run.
pub(crate) fn start() -> std::result::Result<Role, String> {
    let mut started = STARTED.lock().unwrap_or_else(|p| p.into_inner());
    if *started {
        return Ok(Role::Driver);
    }
    *started = true;
    let (role_tx, role_rx) = mpsc::channel();
    let (bridge_end, shuttle) = rank::pipes().map_err(|e| format!("making pipes: {e}"))?;
    let handle = std::thread::Builder::new()
        .name("parjob-mpi".into())
        .spawn(move || mpi_thread(role_tx, shuttle))
        .map_err(|e| format!("starting the MPI thread: {e}"))?;
    match role_rx.recv() {
        Ok(Ok(Some(rank_no))) => Ok(Role::Worker(bridge_end.into_bridge(handle, rank_no))),
        Ok(Ok(None)) => {
            if let Some(d) = DRIVER.get() {
                *d.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
                super::signals::driver_installed();
                // SAFETY: registering a plain extern "C" fn.
                unsafe { libc::atexit(stop_at_exit) };
            }
            Ok(Role::Driver)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the MPI thread ended before it said this process's role".into()),
    }
}

/// What the MPI thread reports: a worker's rank, or `None` for the driver.
type RoleReport = std::result::Result<Option<usize>, String>;

fn mpi_thread(role: Sender<RoleReport>, shuttle: rank::Shuttle) {
    let Some((universe, threading)) = mpi::initialize_with_threading(mpi::Threading::Funneled)
    else {
        let _ = role.send(Err("MPI was initialised already, outside parjob".into()));
        return;
    };
    if threading < mpi::Threading::Funneled {
        let _ = role.send(Err(format!(
            "the MPI library offers {threading:?}, and parjob needs Funneled"
        )));
        return;
    }
    let world = universe.world();
    let rank = world.rank() as usize;
    // Asked once: the handle frees the parent communicator when dropped.
    let parent = world.parent();
    if world.rank() != 0 || parent.is_some() {
        let _ = role.send(Ok(Some(rank)));
        match &parent {
            Some(parent) => shuttle.run(parent.as_raw(), Some(world.as_raw()), rank),
            None => shuttle.run(world.as_raw(), None, rank),
        }
        drop(parent);
        // Rank 0 said stop: finalise, and end the process here (the main
        // thread may still be in a task that no one wants any more).
        drop(universe);
        let _ = std::io::Write::flush(&mut std::io::stdout());
        std::process::exit(0);
    } else {
        drop(shuttle);
        let (commands_tx, commands) = mpsc::channel();
        let peers = (1..world.size())
            .map(|r| new_peer(format!("rank {r}"), 0, r))
            .collect();
        let driver = Driver {
            commands: Mutex::new(commands_tx),
            table: Mutex::new(Table {
                peers,
                broken: None,
            }),
            changed: Condvar::new(),
            thread: Mutex::new(None),
        };
        if DRIVER.set(driver).is_err() {
            let _ = role.send(Err("a second MPI driver".into()));
            return;
        }
        let _ = role.send(Ok(None));
        let driver = DRIVER.get().expect("set above");
        let mut thread = DriverThread::new(&world, commands);
        let broken = thread.run(driver);
        let mut table = driver.lock_table();
        table.broken = Some(broken);
        driver.changed.notify_all();
    }
    drop(universe);
}

fn new_peer(label: String, group: usize, rank: i32) -> Peer {
    Peer {
        label,
        node: String::new(),
        group,
        rank,
        state: PeerState::Waiting,
        in_flight: 0,
        lease: None,
        same_node: false,
        pid: 0,
        clock_offset: 0,
        retained: VecDeque::new(),
        retained_bytes: 0,
        bye: false,
    }
}

impl Driver {
    pub(super) fn lock_table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The longest the driver's MPI thread sleeps while a rank holds a batch.
const ANSWER_EXPECTED: Duration = Duration::from_micros(50);

/// The driver's MPI thread state: where each peer is, and the
/// communicators to probe (the world, then one per spawn).
struct DriverThread<'w> {
    world: &'w mpi::topology::SimpleCommunicator,
    link: Link,
    addresses: Vec<Address>,
    /// Each communicator, and the peer index of its rank 0 (the world's
    /// rank 1 is peer 0).
    comms: Vec<(mpi::ffi::MPI_Comm, isize)>,
    spawned: Vec<mpi::topology::InterCommunicator>,
    commands: Receiver<Command>,
    node: String,
}

impl<'w> DriverThread<'w> {
    fn new(world: &'w mpi::topology::SimpleCommunicator, commands: Receiver<Command>) -> Self {
        let raw = world.as_raw();
        DriverThread {
            world,
            link: Link::new(IN_FLIGHT_CAP),
            addresses: (1..world.size())
                .map(|rank| Address { comm: raw, rank })
                .collect(),
            comms: vec![(raw, -1)],
            spawned: Vec::new(),
            commands,
            node: super::node_id(),
        }
    }

    /// Serves until the process asks it to stop (the command channel
    /// closes at exit); returns why it stopped.
    fn run(&mut self, driver: &Driver) -> String {
        link::precise_timers();
        let mut backoff = Backoff::new(Duration::from_millis(1));
        loop {
            let mut moved = false;
            loop {
                match self.commands.try_recv() {
                    Ok(command) => {
                        moved = true;
                        self.command(driver, command);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return self.stop(driver),
                }
            }
            moved |= self.receive(driver);
            moved |= self.link.progress();
            self.count_sent();
            if moved {
                backoff.reset();
                continue;
            }
            // While a rank holds a batch, its answer is expected: the
            // waits stay short.
            let expecting = driver.lock_table().peers.iter().any(|p| p.in_flight > 0);
            let wait = backoff.next(expecting.then_some(ANSWER_EXPECTED));
            if wait.is_zero() {
                std::thread::yield_now();
                continue;
            }
            match self.commands.recv_timeout(wait) {
                Ok(command) => {
                    backoff.reset();
                    self.command(driver, command);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.stop(driver),
            }
        }
    }

    fn count_sent(&self) {
        MESSAGES_SENT.store(self.link.messages_sent, Ordering::Relaxed);
        BYTES_SENT.store(self.link.bytes_sent, Ordering::Relaxed);
    }

    fn command(&mut self, driver: &Driver, command: Command) {
        match command {
            Command::Send {
                peer,
                tag,
                body,
                batch,
            } => {
                if batch {
                    driver.lock_table().peers[peer].in_flight += 1;
                    super::signals::set_busy(peer, true);
                }
                self.link.send(self.addresses[peer], tag, body);
            }
            Command::Spawn { workers, reply } => {
                let _ = reply.send(self.spawn(driver, workers));
            }
        }
    }

    fn spawn(&mut self, driver: &Driver, workers: usize) -> std::result::Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
        let mut command = std::process::Command::new(exe);
        command.arg(SPAWN_FLAG);
        // A spawn that finds no free slots must be an error here, not an
        // abort of this whole program (MPI's default handler).
        // SAFETY: both handles are valid for as long as MPI is initialised,
        // which it is while the driver runs.
        unsafe {
            mpi::ffi::MPI_Comm_set_errhandler(self.world.as_raw(), mpi::ffi::RSMPI_ERRORS_RETURN);
        }
        let inter = self
            .world
            .process_at_rank(0)
            .spawn(&command, workers as i32)
            .map_err(|e| super::spawn_refused(workers, e))?;
        let base = driver.lock_table().peers.len();
        let raw = inter.as_raw();
        {
            let mut table = driver.lock_table();
            for r in 0..workers {
                let group = self.spawned.len() + 1;
                table
                    .peers
                    .push(new_peer(format!("spawned rank {r}"), group, r as i32));
                self.addresses.push(Address {
                    comm: raw,
                    rank: r as i32,
                });
            }
        }
        self.comms.push((raw, base as isize));
        self.spawned.push(inter);
        Ok(())
    }

    /// Takes every message that has arrived; returns whether there was one.
    fn receive(&mut self, driver: &Driver) -> bool {
        let mut moved = false;
        for k in 0..self.comms.len() {
            let (comm, base) = self.comms[k];
            while let Some(probed) = link::probe(comm, None) {
                moved = true;
                let peer = (base + probed.source as isize) as usize;
                let tag = probed.tag;
                let payload = probed.receive(wire::MAX_FRAME as usize * 2);
                self.message(driver, peer, tag, payload);
            }
        }
        moved
    }

    fn message(
        &mut self,
        driver: &Driver,
        peer: usize,
        tag: i32,
        payload: std::result::Result<Vec<u8>, String>,
    ) {
        let mut table = driver.lock_table();
        let Some(p) = table.peers.get_mut(peer) else {
            return;
        };
        match (tag, payload) {
            (TAG_HELLO, Ok(bytes)) => {
                greet(p, &bytes, &self.node);
                driver.changed.notify_all();
            }
            (TAG_RESULT, Ok(bytes)) => {
                let done = super::rank::count_done(&bytes);
                p.in_flight = p.in_flight.saturating_sub(done);
                super::signals::set_busy(peer, p.in_flight > 0);
                if let Some(lease) = &p.lease {
                    let _ = lease.send(Incoming {
                        peer,
                        payload: bytes,
                    });
                }
                if done > 0 {
                    driver.changed.notify_all();
                }
            }
            (TAG_STOP, _) => p.bye = true,
            (_, Err(e)) => {
                p.state = PeerState::Refused(format!("{}: {e}", p.label));
                driver.changed.notify_all();
            }
            _ => {}
        }
    }

    /// Tells every rank to stop, and waits (up to [`STOP_GRACE`]) for each
    /// one's goodbye, after which it sends nothing more: MPI_Finalize then
    /// finds no message in flight. A rank that never answers (stopped by
    /// SIGSTOP, or its MPI thread stuck) would make MPI_Finalize, which
    /// every rank must enter, wait for ever: the job is then ended with
    /// MPI_Abort, naming the ranks that did not answer.
    fn stop(&mut self, driver: &Driver) -> String {
        let peers = driver.lock_table().peers.len();
        for peer in 0..peers {
            self.link
                .send(self.addresses[peer], TAG_STOP, Body::Bytes(Vec::new()));
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut backoff = Backoff::new(Duration::from_millis(1));
        while Instant::now() < deadline {
            let moved = self.receive(driver) | self.link.progress();
            let all_said_bye = driver.lock_table().peers.iter().all(|p| p.bye);
            if all_said_bye && self.link.is_idle() {
                break;
            }
            if !moved {
                std::thread::sleep(backoff.next(None));
            }
        }
        self.count_sent();
        let silent: Vec<String> = driver
            .lock_table()
            .peers
            .iter()
            .filter(|p| !p.bye)
            .map(|p| p.label.clone())
            .collect();
        if !silent.is_empty() {
            eprintln!(
                "parjob: {} did not answer the stop within {STOP_GRACE:?} (stopped by a \
                 signal, or stuck); ending the MPI job with MPI_Abort, since MPI_Finalize \
                 would wait for it for ever",
                silent.join(", ")
            );
            self.world.abort(1);
        }
        "the MPI driver stopped".into()
    }
}

/// Records a rank's hello: ready if its protocol and registry match ours.
fn greet(p: &mut Peer, bytes: &[u8], node: &str) {
    match codec::decode::<RankHello>(bytes) {
        Ok(hello) => {
            p.label = format!("{} on {} (pid {})", p.label, hello.host, hello.hello.pid);
            p.pid = hello.hello.pid;
            p.node = hello.node.clone();
            p.same_node = hello.node == node && std::env::var_os(super::NO_NODE_SHARING).is_none();
            let theirs = hello.clock_ns as i64 - crate::trace::now_ns() as i64;
            p.clock_offset = if hello.node == node { 0 } else { theirs };
            p.state = match hello.hello.check(&Hello::current()) {
                Ok(()) => PeerState::Ready,
                Err(e) => PeerState::Refused(format!("{}: {e}", p.label)),
            };
        }
        Err(e) => {
            p.state = PeerState::Refused(format!("{}: an unreadable hello ({})", p.label, e.0));
        }
    }
}

/// How long the ranks have to say goodbye when the driver stops.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long spawning worker ranks may take.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(120);

/// At exit on rank 0: stop the workers and finalize MPI, so the job ends
/// cleanly whichever way `main` ended.
extern "C" fn stop_at_exit() {
    let Some(driver) = DRIVER.get() else {
        return;
    };
    // Closing the command channel is the stop signal.
    let (dead, _) = mpsc::channel();
    drop(std::mem::replace(
        &mut *driver.commands.lock().unwrap_or_else(|p| p.into_inner()),
        dead,
    ));
    let handle = driver
        .thread
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(handle) = handle {
        let _ = handle.join();
    }
}

/// Hands a command to the MPI thread.
pub(crate) fn command(command: Command) -> Result<()> {
    let driver = DRIVER.get().ok_or_else(not_started)?;
    driver
        .commands
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(command)
        .map_err(|_| Error::Mpi("the MPI thread has stopped".into()))
}

pub(super) fn not_started() -> Error {
    if super::launched() {
        Error::Mpi(
            "this program runs under an MPI launcher, but parjob's MPI entry did not run: put \
             #[parjob::main] on fn main (or call parjob::init() as its first line)"
                .into(),
        )
    } else {
        Error::Mpi(
            "backend \"mpi\" runs jobs on the other ranks of an MPI job, and this program was \
             not started by an MPI launcher: run it with `mpirun -n 3 prog` (or `srun -n 3 \
             prog`), or use Backend::MpiSpawn { workers } to spawn ranks from here"
                .into(),
        )
    }
}

/// How many worker ranks the driver has (0 outside MPI).
pub(crate) fn worker_ranks() -> usize {
    DRIVER.get().map_or(0, |d| d.lock_table().peers.len())
}

/// Makes sure `workers` spawned ranks exist, starting MPI here first if
/// it is not yet.
pub(crate) fn spawn_workers(workers: usize) -> Result<()> {
    match crate::backend::process::worker_entry() {
        Some(crate::backend::process::worker::EntryPoint::Main) => {}
        _ => {
            return Err(Error::Mpi(
                "Backend::MpiSpawn starts copies of this program, which must enter the worker \
                 loop at once: put #[parjob::main] on fn main (or call parjob::init() first). \
                 Tests cannot spawn MPI ranks"
                    .into(),
            ))
        }
    }
    if DRIVER.get().is_none() {
        match start().map_err(Error::Mpi)? {
            Role::Driver => {}
            Role::Worker(_) => return Err(Error::Mpi("a worker rank cannot spawn".into())),
        }
    }
    let have = worker_ranks();
    if have >= workers {
        return Ok(());
    }
    let (reply, answer) = mpsc::channel();
    command(Command::Spawn {
        workers: workers - have,
        reply,
    })?;
    // MPI_Comm_spawn blocks the MPI thread; a launcher that never answers
    // must not hang the caller.
    answer
        .recv_timeout(SPAWN_TIMEOUT)
        .map_err(|_| {
            Error::Mpi(format!(
                "MPI_Comm_spawn of {} workers did not return within {SPAWN_TIMEOUT:?}",
                workers - have
            ))
        })?
        .map_err(Error::Mpi)
}
