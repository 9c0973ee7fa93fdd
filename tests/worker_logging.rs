//! `tracing` events of worker processes reach the parent's subscriber,
//! tagged with the worker's pid, at the parent's level.

use parjob::prelude::*;
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One event as the parent's subscriber saw it.
#[derive(Debug, Default, Clone)]
struct Seen {
    level: Option<Level>,
    target: String,
    fields: Vec<(String, String)>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Visit for Seen {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.fields
            .push((field.name().to_string(), format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields
            .push((field.name().to_string(), value.to_string()));
    }
}

static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

/// Keeps INFO and above, and records them.
struct Capture;

impl Subscriber for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::INFO
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::INFO)
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut seen = Seen {
            level: Some(*event.metadata().level()),
            target: event.metadata().target().to_string(),
            ..Seen::default()
        };
        event.record(&mut seen);
        SEEN.lock().unwrap().push(seen);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Logs at three levels, from the task's thread and from another thread.
#[parallel(backend = "process", n_jobs = 2)]
fn noisy(k: u32) -> u32 {
    tracing::info!(k, "task {k} starts");
    tracing::debug!(k, "below the parent's level");
    std::thread::spawn(move || tracing::warn!("from a thread of task {k}"))
        .join()
        .unwrap();
    std::process::id()
}

#[parjob::test]
fn worker_events_reach_the_parents_subscriber_with_the_worker_pid() {
    tracing::subscriber::set_global_default(Capture).unwrap();
    let pids = noisy::map(0..6).unwrap();
    let seen = SEEN.lock().unwrap().clone();
    let from_workers: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.target == "parjob::worker")
        .collect();
    for k in 0..6u32 {
        let pid = pids[k as usize].to_string();
        let starts = from_workers
            .iter()
            .find(|s| s.field("message") == Some(&format!("task {k} starts k={k}")))
            .unwrap_or_else(|| panic!("no start event of task {k} in {seen:?}"));
        assert_eq!(starts.level, Some(Level::INFO));
        assert_eq!(starts.field("pid"), Some(pid.as_str()));
        assert_eq!(starts.field("origin"), Some("worker_logging"));
        assert_ne!(pid, std::process::id().to_string());
        let warned = from_workers
            .iter()
            .filter(|s| s.field("message") == Some(&format!("from a thread of task {k}")))
            .count();
        assert_eq!(warned, 1, "the other thread's event of task {k}");
    }
    assert!(
        !from_workers
            .iter()
            .any(|s| s.field("message").is_some_and(|m| m.contains("below"))),
        "a DEBUG event was forwarded to an INFO subscriber"
    );
}
