//! Cross-process communication and synchronisation: Python's
//! `multiprocessing` primitives, for threads and worker processes alike.
//!
//! Each primitive is a small region of shared memory (a sealed-size
//! `memfd`, as in [`shm`](crate::shm)) holding atomics and robust
//! process-shared pthread mutexes. Every wait sleeps on a futex word (the
//! condition variables too, not glibc's `pthread_cond_t`), so a process
//! killed mid-wait costs the others nothing. A handle is cheap to clone, and passing it as a task
//! argument to a worker process passes the memory itself, so the worker
//! and the parent use the same lock, queue or value:
//!
//! - [`Lock`], [`RLock`] and [`Condition`] are robust mutexes: a holder
//!   killed while holding one releases it, and the next `lock` returns
//!   `Err(PoisonError)`, as `std::sync::Mutex` does after a panic;
//! - [`Semaphore`], [`BoundedSemaphore`], [`Event`] and [`Barrier`] are
//!   futex words; a [`Barrier`] that waits too long breaks, so a party
//!   that died cannot leave the others waiting for ever, and `reset`
//!   fails the parties waiting, as CPython's does;
//! - [`Value`] and [`Array`] are numbers behind a robust lock;
//! - [`Queue`], [`JoinableQueue`] and [`Pipe`] carry serde values of any
//!   size through a byte ring, an item larger than the ring in parts (and
//!   [`shared::List`](crate::shared::List) and
//!   [`shared::Map`](crate::shared::Map), Python's manager collections
//!   with no manager process, are append-only logs). A process killed
//!   inside any of them leaves it consistent for the others.
//!
//! A handle can only travel to a worker as a task argument (its memory
//! goes with the batch); encoding it anywhere else (a cache key, a dump)
//! is an error. Within one run or pool every worker sees the same memory,
//! which is freed when the last handle in any process is dropped.

mod barrier;
pub(crate) mod collections;
mod condition;
mod event;
mod futex;
mod joinable;
mod lock;
pub(crate) mod log;
mod mutex;
mod pipe;
mod queue;
mod region;
mod ring;
mod semaphore;
#[cfg(test)]
mod tests;
mod value;

pub use barrier::Barrier;
pub use condition::Condition;
pub use event::Event;
pub use joinable::JoinableQueue;
pub use lock::{Lock, LockGuard, RLock};
pub use pipe::{Connection, Pipe};
pub use queue::{Queue, DEFAULT_QUEUE_BYTES};
pub use semaphore::{BoundedSemaphore, Permit, Semaphore};
pub use value::{Array, Value, ValueGuard};
