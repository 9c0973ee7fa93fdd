//! `tracing` events from worker processes reach the parent's subscriber,
//! in place of Python's `QueueHandler` recipe.
//!
//! **Level.** When it spawns a worker, the parent passes the most verbose
//! level its own subscriber keeps (`LevelFilter::current()`, in
//! [`ENV_LOG_LEVEL`]). With no subscriber that is `OFF`, and the worker
//! installs nothing: events then cost what they cost without parjob.
//!
//! **Worker.** Otherwise the worker installs [`Forward`] as its global
//! subscriber. Each event is formatted (message, then `name=value`
//! fields) and written as one `Log` frame on the worker's output pipe, at
//! once, from whatever thread emitted it. The pipe is shared with the
//! serve loop through [`Output`]: a frame, of either kind, is written whole
//! under its lock, which the serve loop takes only to write, never while a
//! task runs, so a task that logs cannot wait for itself.
//!
//! **Parent.** The worker's reader thread re-emits each record with
//! target `parjob::worker`, the worker's `pid` and the event's own
//! `target` as fields, at its level ([`emit`]).

use crate::wire::{self, LogRecord};
use std::cell::Cell;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// The variable that tells a worker which events to forward.
pub(crate) const ENV_LOG_LEVEL: &str = "PARJOB_WORKER_LOG";

/// The value of [`ENV_LOG_LEVEL`] for a new worker: the parent's level.
pub(crate) fn level_for_workers() -> String {
    LevelFilter::current().to_string()
}

/// A worker's output pipe, shared by the serve loop and [`Forward`].
pub(crate) struct Output(Mutex<BufWriter<File>>);

thread_local! {
    /// Set while this thread writes a frame, so an event emitted meanwhile
    /// (by a result's `Serialize`) is dropped instead of waiting on itself.
    static WRITING: Cell<bool> = const { Cell::new(false) };
}

impl Output {
    /// The worker's output pipe.
    pub(crate) fn new(pipe: File) -> Output {
        Output(Mutex::new(BufWriter::new(pipe)))
    }

    /// A writer that takes the pipe's lock at its first write and keeps
    /// it until dropped: hand it whatever writes one frame.
    pub(crate) fn frame(&self) -> FrameOut<'_> {
        FrameOut {
            output: self,
            held: None,
        }
    }
}

/// One frame's writer: see [`Output::frame`].
pub(crate) struct FrameOut<'a> {
    output: &'a Output,
    held: Option<MutexGuard<'a, BufWriter<File>>>,
}

impl FrameOut<'_> {
    fn pipe(&mut self) -> &mut BufWriter<File> {
        let output = self.output;
        self.held.get_or_insert_with(|| {
            WRITING.with(|w| w.set(true));
            output.0.lock().unwrap_or_else(|p| p.into_inner())
        })
    }
}

impl Write for FrameOut<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pipe().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.pipe().flush()
    }
}

impl Drop for FrameOut<'_> {
    fn drop(&mut self) {
        if self.held.take().is_some() {
            WRITING.with(|w| w.set(false));
        }
    }
}

/// In a worker: installs [`Forward`] when the parent keeps any events
/// (`PARJOB_WORKER_LOG`, else `default`: an MPI rank cannot be told).
pub(crate) fn install(output: &'static Output, default: Option<LevelFilter>) {
    let max = std::env::var(ENV_LOG_LEVEL)
        .ok()
        .and_then(|v| v.parse::<LevelFilter>().ok())
        .or(default)
        .unwrap_or(LevelFilter::OFF);
    std::env::remove_var(ENV_LOG_LEVEL);
    if max != LevelFilter::OFF {
        // Fails only if a subscriber is set already: that one stays.
        let _ = tracing::subscriber::set_global_default(Forward {
            output,
            max,
            next_span: AtomicU64::new(1),
        });
    }
}

/// The worker's subscriber: each event becomes a `Log` frame.
struct Forward {
    output: &'static Output,
    max: LevelFilter,
    next_span: AtomicU64,
}

/// Formats an event's fields: the message first, then `name=value`.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
}

fn level_code(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 0,
        Level::WARN => 1,
        Level::INFO => 2,
        Level::DEBUG => 3,
        Level::TRACE => 4,
    }
}

impl Subscriber for Forward {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.max >= *metadata.level()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        if WRITING.with(Cell::get) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let record = LogRecord {
            level: level_code(event.metadata().level()),
            target: event.metadata().target().to_string(),
            message: fields.message + &fields.rest,
        };
        let mut out = self.output.frame();
        // A parent that is gone ends the worker at the serve loop's next
        // write; a lost log line changes nothing meanwhile.
        let _ = wire::write_log(&mut out, &record).and_then(|()| out.flush());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// In the parent's reader thread: re-emits a worker's event.
pub(crate) fn emit(pid: u32, record: &LogRecord) {
    let (origin, message) = (record.target.as_str(), record.message.as_str());
    match record.level {
        0 => tracing::error!(target: "parjob::worker", pid, origin, "{message}"),
        1 => tracing::warn!(target: "parjob::worker", pid, origin, "{message}"),
        2 => tracing::info!(target: "parjob::worker", pid, origin, "{message}"),
        3 => tracing::debug!(target: "parjob::worker", pid, origin, "{message}"),
        _ => tracing::trace!(target: "parjob::worker", pid, origin, "{message}"),
    }
}
