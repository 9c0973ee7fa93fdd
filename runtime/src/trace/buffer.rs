//! The bounded store of a trace's events.
//!
//! A run of ten million tiny jobs must not hold ten million events, nor
//! write a file of gigabytes. Each kind of event (jobs and transfers,
//! counters, instants) keeps its first [`KEEP`] events and a ring of its
//! last [`KEEP`]; the ones between are counted and dropped, and the file
//! says so. The summary is counted from every event, kept or not.

use super::{Direction, JobTimes, Track};
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

pub(crate) enum What {
    /// A batch's jobs, one span each, kept as their worker sent them: a
    /// job costs its 8 bytes of end time here, and becomes its JSON
    /// event only when the file is written.
    Jobs(Box<JobTimes>),
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

impl Event {
    /// How many events of the file it stands for: a batch's jobs, else 1.
    fn weight(&self) -> usize {
        match &self.what {
            What::Jobs(times) => times.ends.len(),
            _ => 1,
        }
    }
}

/// The first and the last events of one kind, counted by their weight (a
/// batch is whole, so a kept end may hold a batch more).
#[derive(Default)]
pub(crate) struct Kept {
    pub head: Vec<Event>,
    pub tail: VecDeque<Event>,
    head_weight: usize,
    tail_weight: usize,
    /// Events of the file dropped between the head and the tail.
    pub dropped: u64,
}

impl Kept {
    fn push(&mut self, event: Event) {
        let weight = event.weight();
        if self.head_weight < KEEP {
            self.head_weight += weight;
            self.head.push(event);
            return;
        }
        self.tail_weight += weight;
        self.tail.push_back(event);
        while self.tail_weight > KEEP {
            let Some(front) = self.tail.front() else {
                break;
            };
            let w = front.weight();
            if self.tail_weight - w < KEEP {
                break;
            }
            self.tail_weight -= w;
            self.dropped += w as u64;
            self.tail.pop_front();
        }
    }

    /// How many events of the file the kept ones stand for.
    pub(crate) fn weight(&self) -> usize {
        self.head_weight + self.tail_weight
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
            What::Jobs(_) | What::Transfer { .. } => self.spans.push(event),
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

    fn batch(first: usize, jobs: usize) -> Event {
        let times = JobTimes {
            task: "f",
            track: Track::Thread(0),
            first,
            batch: 0,
            start: first as u64,
            ends: (first..first + jobs).map(|e| e as u64 + 1).collect(),
            attempt: 1,
            copy: false,
            failed: Vec::new(),
        };
        Event {
            track: Track::Thread(0),
            start: first as u64,
            end: (first + jobs) as u64,
            what: What::Jobs(Box::new(times)),
        }
    }

    #[test]
    fn batches_are_kept_whole_and_counted_by_their_jobs() {
        let mut kept = Kept::default();
        let n = 1000;
        for b in 0..(3 * KEEP / n) {
            kept.push(batch(b * n, n));
        }
        assert_eq!(kept.weight(), 2 * KEEP);
        assert_eq!(kept.dropped as usize, KEEP);
        assert_eq!(kept.head.last().unwrap().start as usize, KEEP - n);
        assert_eq!(kept.tail.front().unwrap().start as usize, 2 * KEEP);
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
