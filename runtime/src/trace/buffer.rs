//! The bounded store of a trace's events.
//!
//! A run of ten million tiny jobs must not hold ten million events, nor
//! write a file of gigabytes. Each kind of event (jobs and transfers,
//! counters, instants) keeps its first [`KEEP`] events and a ring of its
//! last [`KEEP`]; the ones between are counted and dropped, and the file
//! says so. The summary is counted from every event, kept or not.

use super::{Direction, Outcome, Track};
use std::collections::VecDeque;

/// Events of one kind kept from the start, and again from the end.
pub(crate) const KEEP: usize = 100_000;

/// One recorded event: a span (`start < end`) or a moment (`start == end`).
pub(crate) struct Event {
    pub track: Track,
    pub start: u64,
    pub end: u64,
    pub what: What,
}

/// A job's span.
pub(crate) struct Job {
    pub task: &'static str,
    pub index: u64,
    pub batch: u64,
    pub outcome: Outcome,
    pub attempt: u32,
    pub copy: bool,
}

pub(crate) enum What {
    Job(Job),
    /// Bytes between the scheduler and a worker.
    Transfer {
        direction: Direction,
        bytes: u64,
        to: Track,
    },
    Instant {
        name: &'static str,
        detail: Box<str>,
    },
    Counter {
        name: &'static str,
        value: u64,
    },
}

/// The first and the last events of one kind.
#[derive(Default)]
pub(crate) struct Kept {
    pub head: Vec<Event>,
    pub tail: VecDeque<Event>,
    pub dropped: u64,
}

impl Kept {
    fn push(&mut self, event: Event) {
        if self.head.len() < KEEP {
            self.head.push(event);
            return;
        }
        if self.tail.len() == KEEP {
            self.tail.pop_front();
            self.dropped += 1;
        }
        self.tail.push_back(event);
    }

    /// Every kept event, in the order recorded.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Event> {
        self.head.iter().chain(self.tail.iter())
    }
}

/// A trace's events, by kind.
#[derive(Default)]
pub(crate) struct Buffer {
    pub spans: Kept,
    pub counters: Kept,
    pub instants: Kept,
}

impl Buffer {
    pub(crate) fn push(&mut self, event: Event) {
        match event.what {
            What::Job(_) | What::Transfer { .. } => self.spans.push(event),
            What::Counter { .. } => self.counters.push(event),
            What::Instant { .. } => self.instants.push(event),
        }
    }

    /// Events dropped from the middle, of every kind.
    pub(crate) fn dropped(&self) -> u64 {
        self.spans.dropped + self.counters.dropped + self.instants.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(value: u64) -> Event {
        Event {
            track: Track::Scheduler,
            start: value,
            end: value,
            what: What::Counter { name: "n", value },
        }
    }

    #[test]
    fn the_first_and_the_last_events_are_kept_and_the_rest_counted() {
        let mut kept = Kept::default();
        let n = 3 * KEEP as u64 + 7;
        for v in 0..n {
            kept.push(counter(v));
        }
        let starts: Vec<u64> = kept.iter().map(|e| e.start).collect();
        assert_eq!(starts.len(), 2 * KEEP);
        assert_eq!(starts[..3], [0, 1, 2]);
        assert_eq!(starts[KEEP - 1], KEEP as u64 - 1);
        assert_eq!(starts[KEEP], n - KEEP as u64);
        assert_eq!(*starts.last().unwrap(), n - 1);
        assert_eq!(kept.dropped, n - 2 * KEEP as u64);
    }
}
