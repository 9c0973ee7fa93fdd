//! A trace as Chrome trace-event JSON: the format Perfetto and
//! `chrome://tracing` open.
//!
//! Each track is a (pid, tid) pair with `process_name` and `thread_name`
//! metadata: a worker process is its own pid, an MPI rank a pid of
//! `RANK_PIDS + rank`, and the parent's scheduler, caller's thread and
//! pool threads are threads of the parent's pid. Jobs and transfers are
//! complete events (`"ph":"X"`), workers starting and dying instants
//! (`"i"`), jobs in flight and resident memory counters (`"C"`). Times are
//! microseconds from the run's start. parjob's summary rides in
//! `otherData.parjob`, which viewers ignore and the report reads.

use super::buffer::{Buffer, Event, Kept, What};
use super::summary::Summary;
use super::{Direction, JobTimes, Outcome, Track};
use std::fmt::Write;

/// MPI ranks' pids in the file: above any Linux pid (`pid_max` <= 2^22).
const RANK_PIDS: u32 = 1 << 22;

/// The JSON text of a trace that started at `start`, in parts to write
/// one after the other. The jobs, most of a trace, are formatted in two
/// halves on two threads: the run is over, and its CPUs are free.
pub(crate) fn write(
    start: u64,
    buffer: &Buffer,
    summary: &Summary,
    names: &[(Track, String)],
) -> Vec<String> {
    let parent = std::process::id();
    let mut tracks: Vec<Track> = vec![Track::Scheduler];
    for kept in [&buffer.spans, &buffer.instants, &buffer.counters] {
        for e in kept.iter() {
            if !tracks.contains(&e.track) {
                tracks.push(e.track);
            }
        }
    }
    tracks.sort();
    // The metadata comes first, so every event after it starts with ",".
    let mut head = String::from("{\"traceEvents\":[\n");
    for (order, t) in tracks.iter().enumerate() {
        if order > 0 {
            head.push_str(",\n");
        }
        head.push_str(&metadata(*t, order, parent, names));
    }
    let spans: Vec<&Event> = buffer.spans.iter().collect();
    let half = buffer.spans.weight() / 2;
    let mut seen = 0;
    let mid = spans
        .iter()
        .position(|e| {
            seen += weight(e);
            seen > half
        })
        .unwrap_or(spans.len());
    let format = |events: &[&Event], offset: usize| {
        let mut out = String::with_capacity(180 * events.iter().map(|e| weight(e)).sum::<usize>());
        events_into(
            &mut out,
            events,
            offset,
            &buffer.spans,
            start,
            parent,
            names,
        );
        out
    };
    let (first, second) = std::thread::scope(|scope| {
        let second = scope.spawn(|| format(&spans[mid..], mid));
        let first = format(&spans[..mid], 0);
        (first, second.join().unwrap_or_default())
    });
    let mut rest = String::new();
    for kept in [&buffer.instants, &buffer.counters] {
        let events: Vec<&Event> = kept.iter().collect();
        events_into(&mut rest, &events, 0, kept, start, parent, names);
    }
    rest.push_str("\n],\n\"displayTimeUnit\":\"ms\",\n\"otherData\":{\"parjob\":");
    other_data(&mut rest, summary, buffer, parent, names);
    rest.push_str("}}\n");
    vec![head, first, second, rest]
}

/// How many events of the file `e` stands for.
fn weight(e: &Event) -> usize {
    match &e.what {
        What::Jobs(times) => times.ends.len(),
        _ => 1,
    }
}

/// Writes `events`, the kept events of `kept` from its `offset`-th on,
/// each after a ",": a batch's jobs one event each, and the note of the
/// events dropped where the kept head ends.
fn events_into(
    out: &mut String,
    events: &[&Event],
    offset: usize,
    kept: &Kept,
    start: u64,
    parent: u32,
    names: &[(Track, String)],
) {
    let mut tasks = Tasks::default();
    for (n, e) in (offset..).zip(events) {
        if n == kept.head.len() && kept.dropped > 0 {
            out.push_str(",\n");
            out.push_str(&truncated(micros(e.start, start), kept.dropped, parent));
        }
        match &e.what {
            What::Jobs(times) => jobs(out, times, start, parent, tasks.quoted(times.task)),
            _ => {
                out.push_str(",\n");
                event(out, e, start, parent, names);
            }
        }
    }
}

/// Microseconds from `start`, with nanoseconds as decimals.
fn micros(t: u64, start: u64) -> String {
    let mut out = String::new();
    push_micros(&mut out, t.saturating_sub(start));
    out
}

/// `ns` nanoseconds as microseconds with three decimals, written into
/// `out` (a job's event is most of a trace: no `format!` in its path).
fn push_micros(out: &mut String, ns: u64) {
    push_number(out, ns / 1000);
    let frac = ns % 1000;
    out.push('.');
    out.push(char::from(b'0' + (frac / 100) as u8));
    out.push(char::from(b'0' + (frac / 10 % 10) as u8));
    out.push(char::from(b'0' + (frac % 10) as u8));
}

/// `n` in decimal, written into `out`.
fn push_number(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // SAFETY: the digits are ASCII.
    out.push_str(unsafe { std::str::from_utf8_unchecked(&digits[at..]) });
}

/// Each task's name as a JSON string, quoted once.
#[derive(Default)]
struct Tasks(Vec<(&'static str, String)>);

impl Tasks {
    fn quoted(&mut self, task: &'static str) -> &str {
        let at = match self.0.iter().position(|(t, _)| std::ptr::eq(*t, task)) {
            Some(at) => at,
            None => {
                self.0.push((task, quoted(task)));
                self.0.len() - 1
            }
        };
        &self.0[at].1
    }
}

/// A batch's jobs, a span each: a trace's most frequent event, written
/// piece by piece.
fn jobs(out: &mut String, times: &JobTimes, start: u64, parent: u32, task: &str) {
    let (pid, tid) = ids(times.track, parent);
    let mut begin = times.start;
    for (k, &end) in times.ends.iter().enumerate() {
        let index = times.first + k;
        let outcome = match times.failed.iter().find(|(i, _)| *i == index) {
            Some((_, outcome)) => *outcome,
            None => Outcome::Ok,
        };
        out.push_str(",\n{\"name\":");
        out.push_str(task);
        out.push_str(",\"cat\":\"job\",\"ph\":\"X\",\"ts\":");
        push_micros(out, begin.saturating_sub(start));
        out.push_str(",\"dur\":");
        push_micros(out, end.saturating_sub(begin));
        out.push_str(",\"pid\":");
        push_number(out, pid.into());
        out.push_str(",\"tid\":");
        push_number(out, tid.into());
        out.push_str(",\"args\":{\"index\":");
        push_number(out, index as u64);
        out.push_str(",\"batch\":");
        push_number(out, times.batch);
        out.push_str(",\"outcome\":\"");
        out.push_str(outcome.name());
        out.push_str("\",\"attempt\":");
        push_number(out, times.attempt.into());
        out.push_str(if times.copy {
            ",\"copy\":true}}"
        } else {
            ",\"copy\":false}}"
        });
        begin = end;
    }
}

/// A track's (pid, tid) in the file.
pub(crate) fn ids(track: Track, parent: u32) -> (u32, u32) {
    match track {
        Track::Scheduler => (parent, 0),
        Track::Caller => (parent, 1),
        Track::Thread(i) => (parent, 2 + i),
        Track::Process(pid) => (pid, pid),
        Track::Rank(r) => (RANK_PIDS + r, 0),
    }
}

fn name_of(track: Track, names: &[(Track, String)]) -> String {
    names
        .iter()
        .find(|(t, _)| *t == track)
        .map_or_else(|| track.label(), |(_, n)| n.clone())
}

fn event(out: &mut String, e: &Event, start: u64, parent: u32, names: &[(Track, String)]) {
    let (pid, tid) = ids(e.track, parent);
    let ts = micros(e.start, start);
    let dur = micros(e.end, e.start);
    let _ = match &e.what {
        What::Jobs(times) => {
            jobs(out, times, start, parent, &quoted(times.task));
            Ok(())
        }
        What::Transfer { direction, bytes, to } => {
            let name = match direction {
                Direction::Send => "send",
                Direction::Return => "return",
            };
            write!(
                out,
                "{{\"name\":\"{name}\",\"cat\":\"transfer\",\"ph\":\"X\",\"ts\":{ts},\"dur\":{dur},\"pid\":{pid},\"tid\":{tid},\"args\":{{\"bytes\":{bytes},\"worker\":{}}}}}",
                quoted(&name_of(*to, names))
            )
        }
        What::Instant { name, detail } => write!(
            out,
            "{{\"name\":\"{name}\",\"cat\":\"worker\",\"ph\":\"i\",\"s\":\"t\",\"ts\":{ts},\"pid\":{pid},\"tid\":{tid},\"args\":{{\"detail\":{}}}}}",
            quoted(detail)
        ),
        What::Counter { name, value } => write!(
            out,
            "{{\"name\":\"{name}\",\"cat\":\"counter\",\"ph\":\"C\",\"ts\":{ts},\"pid\":{pid},\"args\":{{\"{name}\":{value}}}}}"
        ),
    };
}

fn truncated(ts: String, dropped: u64, parent: u32) -> String {
    format!(
        "{{\"name\":\"trace truncated\",\"cat\":\"parjob\",\"ph\":\"i\",\"s\":\"g\",\"ts\":{ts},\"pid\":{parent},\"tid\":0,\"args\":{{\"detail\":\"{dropped} events between the first and the last kept were dropped; the summary counts them all\"}}}}"
    )
}

fn metadata(track: Track, order: usize, parent: u32, names: &[(Track, String)]) -> String {
    let (pid, tid) = ids(track, parent);
    let name = quoted(&name_of(track, names));
    let process = match track {
        Track::Process(_) | Track::Rank(_) => name.clone(),
        _ => quoted(&format!("parjob run (pid {parent})")),
    };
    format!(
        "{{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":{pid},\"tid\":{tid},\"args\":{{\"name\":{process}}}}},\n\
         {{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":{pid},\"tid\":{tid},\"args\":{{\"name\":{name}}}}},\n\
         {{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":{pid},\"tid\":{tid},\"args\":{{\"sort_index\":{order}}}}}"
    )
}

fn other_data(
    out: &mut String,
    s: &Summary,
    buffer: &Buffer,
    parent: u32,
    names: &[(Track, String)],
) {
    let workers: Vec<String> = s
        .tracks
        .iter()
        .map(|(t, (busy, jobs))| {
            let (pid, tid) = ids(*t, parent);
            format!(
                "{{\"name\":{},\"pid\":{pid},\"tid\":{tid},\"busy_us\":{},\"busy_fraction\":{:.4},\"jobs\":{jobs}}}",
                quoted(&name_of(*t, names)),
                busy / 1000,
                s.busy_fraction(*busy)
            )
        })
        .collect();
    let slowest: Vec<String> = s
        .slowest
        .iter()
        .map(|x| {
            format!(
                "{{\"task\":{},\"index\":{},\"us\":{},\"worker\":{}}}",
                quoted(x.task),
                x.index,
                micros(x.ns, 0),
                quoted(&name_of(x.track, names))
            )
        })
        .collect();
    let failed: Vec<String> = s
        .failed
        .iter()
        .map(|(k, n)| format!("\"{k}\":{n}"))
        .collect();
    let lines: Vec<String> = s.lines(names).iter().map(|l| quoted(l.trim())).collect();
    let _ = write!(
        out,
        "{{\"format\":1,\"parent_pid\":{parent},\"n_jobs\":{},\"wall_us\":{},\"jobs\":{},\"workers\":[{}],\"overhead\":{:.4},\"slowest\":[{}],\"failed\":{{{}}},\"retries\":{},\"deaths\":{},\"worker_starts\":{},\"copies\":{},\"bytes_sent\":{},\"bytes_returned\":{},\"shm_saved\":{},\"dropped_events\":{},\"lines\":[{}]}}",
        s.workers,
        micros(s.wall_ns, 0),
        s.jobs,
        workers.join(","),
        s.overhead(),
        slowest.join(","),
        failed.join(","),
        s.retries,
        s.deaths,
        s.starts,
        s.copies,
        s.bytes_sent,
        s.bytes_returned,
        s.shm_saved,
        buffer.dropped(),
        lines.join(",")
    );
}

/// `text` as a JSON string for the trace: `<`, `>` and `&` are escaped
/// too, so the JSON can sit inside the report's `<script>` element as it
/// is.
pub(crate) fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_for_json_and_for_a_script_element() {
        assert_eq!(quoted("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(quoted("</script>"), r#""\u003c/script\u003e""#);
        assert_eq!(quoted("\u{1}é"), "\"\\u0001é\"");
    }

    #[test]
    fn microseconds_keep_the_nanoseconds() {
        assert_eq!(micros(1_234_567, 1_000), "1233.567");
        assert_eq!(micros(5, 10), "0.000");
        assert_eq!(micros(1_000_000_007, 0), "1000000.007");
        let mut n = String::new();
        push_number(&mut n, u64::MAX);
        assert_eq!(n, u64::MAX.to_string());
    }
}
