//! A session's hold on worker ranks: the ranks a run may use, taken from
//! the driver's table once they have said hello and have nothing of an
//! earlier run in flight, and given back when the session ends.

use super::driver::{not_started, Incoming, Peer, PeerState, Table, DRIVER};
use super::HELLO_TIMEOUT;
use crate::error::{Error, Result};
use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

/// A session's hold on some idle worker ranks.
pub(crate) struct Lease {
    pub(crate) peers: Vec<Leased>,
    pub(crate) incoming: Receiver<Incoming>,
}

/// A leased rank, as the session needs it.
#[derive(Clone)]
pub(crate) struct Leased {
    pub(crate) index: usize,
    pub(crate) label: String,
    pub(crate) pid: u32,
    /// Its clock's offset from ours (`Peer::clock_offset`).
    pub(crate) clock_offset: i64,
    pub(crate) same_node: bool,
    pub(crate) node: String,
    pub(crate) group: usize,
    pub(crate) rank: i32,
}

/// Leases up to `n` idle, greeted worker ranks: waits for every rank's
/// hello (a mismatch is a handshake error naming the rank), then for at
/// least one rank to finish what an earlier run left on it.
pub(crate) fn lease(n: usize) -> Result<Lease> {
    let driver = DRIVER.get().ok_or_else(not_started)?;
    let mut table = driver.lock_table();
    let deadline = Instant::now() + HELLO_TIMEOUT;
    loop {
        if let Some(broken) = &table.broken {
            return Err(Error::Mpi(broken.clone()));
        }
        let refused: Vec<String> = table
            .peers
            .iter()
            .filter_map(|p| match &p.state {
                PeerState::Refused(why) => Some(why.clone()),
                _ => None,
            })
            .collect();
        if !refused.is_empty() {
            return Err(Error::Handshake(refused.join("; ")));
        }
        let waiting = table.peers.iter().any(|p| p.state == PeerState::Waiting);
        let idle: Vec<usize> = (0..table.peers.len())
            .filter(|&k| {
                let p = &table.peers[k];
                p.state == PeerState::Ready && p.lease.is_none() && p.in_flight == 0
            })
            .take(n)
            .collect();
        if table.peers.is_empty() {
            return Err(Error::Mpi(
                "this MPI job has no worker ranks: start it with more than one rank \
                 (`mpirun -n 3 prog`)"
                    .into(),
            ));
        }
        if !waiting && !idle.is_empty() {
            let (tx, incoming) = mpsc::channel();
            let peers = idle
                .iter()
                .map(|&k| {
                    let p = &mut table.peers[k];
                    p.lease = Some(tx.clone());
                    Leased {
                        index: k,
                        label: p.label.clone(),
                        pid: p.pid,
                        clock_offset: p.clock_offset,
                        same_node: p.same_node,
                        node: p.node.clone(),
                        group: p.group,
                        rank: p.rank,
                    }
                })
                .collect();
            return Ok(Lease { peers, incoming });
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(busy_error(&table, waiting));
        }
        table = driver
            .changed
            .wait_timeout(table, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

fn busy_error(table: &Table, waiting: bool) -> Error {
    let which = |pick: &dyn Fn(&Peer) -> bool| {
        table
            .peers
            .iter()
            .filter(|p| pick(p))
            .map(|p| p.label.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if waiting {
        Error::Handshake(format!(
            "no hello within {HELLO_TIMEOUT:?} from {}",
            which(&|p| p.state == PeerState::Waiting)
        ))
    } else {
        Error::Mpi(format!(
            "every worker rank is busy: {} still run an earlier run's tasks (MPI cannot stop \
             one rank; a task that never returns holds its rank)",
            which(&|p| p.in_flight > 0 || p.lease.is_some())
        ))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(driver) = DRIVER.get() {
            let mut table = driver.lock_table();
            for p in &self.peers {
                table.peers[p.index].lease = None;
            }
            driver.changed.notify_all();
        }
    }
}
