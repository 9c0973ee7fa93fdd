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

use super::buffer::{Buffer, Event, What};
use super::summary::Summary;
use super::{Direction, Track};
use std::fmt::Write;

/// MPI ranks' pids in the file: above any Linux pid (`pid_max` <= 2^22).
const RANK_PIDS: u32 = 1 << 22;

/// The JSON text of a trace that started at `start`.
pub(crate) fn write(
    start: u64,
    buffer: &Buffer,
    summary: &Summary,
    names: &[(Track, String)],
) -> String {
    let parent = std::process::id();
    let mut out = String::with_capacity(256 + 130 * buffer.spans.head.len());
    out.push_str("{\"traceEvents\":[\n");
    let mut tracks: Vec<Track> = vec![Track::Scheduler];
    let mut first = true;
    let mut line = |out: &mut String, text: &str| {
        if !std::mem::take(&mut first) {
            out.push_str(",\n");
        }
        out.push_str(text);
    };
    let mut text = String::new();
    for kept in [&buffer.spans, &buffer.instants, &buffer.counters] {
        for (n, e) in kept.iter().enumerate() {
            if n == kept.head.len() && kept.dropped > 0 {
                let at = micros(e.start, start);
                line(&mut out, &truncated(at, kept.dropped, parent));
            }
            if !tracks.contains(&e.track) {
                tracks.push(e.track);
            }
            text.clear();
            event(&mut text, e, start, parent, names);
            line(&mut out, &text);
        }
    }
    tracks.sort();
    for (order, t) in tracks.iter().enumerate() {
        line(&mut out, &metadata(*t, order, parent, names));
    }
    out.push_str("\n],\n\"displayTimeUnit\":\"ms\",\n\"otherData\":{\"parjob\":");
    other_data(&mut out, summary, buffer, parent, names);
    out.push_str("}}\n");
    out
}

/// Microseconds from `start`, with nanoseconds as decimals.
fn micros(t: u64, start: u64) -> String {
    let ns = t.saturating_sub(start);
    format!("{}.{:03}", ns / 1000, ns % 1000)
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
        What::Job(j) => write!(
            out,
            "{{\"name\":{},\"cat\":\"job\",\"ph\":\"X\",\"ts\":{ts},\"dur\":{dur},\"pid\":{pid},\"tid\":{tid},\"args\":{{\"index\":{},\"batch\":{},\"outcome\":\"{}\",\"attempt\":{},\"copy\":{}}}}}",
            quoted(j.task),
            j.index,
            j.batch,
            j.outcome.name(),
            j.attempt,
            j.copy
        ),
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

/// `text` as a JSON string, as a person would write it: a cache entry's
/// metadata file, which people read.
#[cfg_attr(not(feature = "cache"), allow(dead_code))]
pub(crate) fn json_string(text: &str) -> String {
    escaped(text, |_| false)
}

/// `text` as a JSON string for the trace: `<`, `>` and `&` are escaped
/// too, so the JSON can sit inside the report's `<script>` element as it
/// is.
pub(crate) fn quoted(text: &str) -> String {
    escaped(text, |c| matches!(c, '<' | '>' | '&'))
}

/// `text` as a JSON string, with `also` written as `\u` escapes.
fn escaped(text: &str, also: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || also(c) => {
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
        assert_eq!(
            json_string("x: &str, v: Vec<u8>\t"),
            r#""x: &str, v: Vec<u8>\t""#
        );
        assert_eq!(quoted("</script>"), r#""\u003c/script\u003e""#);
        assert_eq!(quoted("\u{1}é"), "\"\\u0001é\"");
    }

    #[test]
    fn microseconds_keep_the_nanoseconds() {
        assert_eq!(micros(1_234_567, 1_000), "1233.567");
        assert_eq!(micros(5, 10), "0.000");
    }
}
