//! `trace = "run.json"`: a run's timeline as Chrome trace-event JSON, and
//! the HTML report beside it, on every backend and through failures.

mod common;

use parjob::pool::Pool;
use parjob::prelude::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each job says which process ran it.
#[parallel(n_jobs = 2, backend = "process")]
fn whose(x: u64) -> (u64, u32) {
    (x * x, std::process::id())
}

#[parallel(n_jobs = 2)]
fn square(x: u64) -> u64 {
    x * x
}

fn read(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("the trace is JSON")
}

/// The complete events of category `cat`.
fn spans<'a>(trace: &'a Value, cat: &str) -> Vec<&'a Value> {
    events(trace)
        .filter(|e| e["ph"] == "X" && e["cat"] == cat)
        .collect()
}

fn events(trace: &Value) -> impl Iterator<Item = &Value> {
    trace["traceEvents"].as_array().expect("traceEvents").iter()
}

fn instants<'a>(trace: &'a Value, name: &str) -> Vec<&'a Value> {
    events(trace)
        .filter(|e| e["ph"] == "i" && e["name"] == name)
        .collect()
}

fn summary(trace: &Value) -> &Value {
    &trace["otherData"]["parjob"]
}

fn track(e: &Value) -> (u64, u64) {
    (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap())
}

/// Asserts that no two spans of one track overlap.
fn assert_no_overlap(spans: &[&Value]) {
    let mut by_track: BTreeMap<(u64, u64), Vec<(f64, f64)>> = BTreeMap::new();
    for s in spans {
        let (ts, dur) = (s["ts"].as_f64().unwrap(), s["dur"].as_f64().unwrap());
        by_track.entry(track(s)).or_default().push((ts, ts + dur));
    }
    for (t, mut spans) in by_track {
        spans.sort_by(|a, b| a.partial_cmp(b).unwrap());
        for w in spans.windows(2) {
            assert!(
                w[1].0 + 1e-3 >= w[0].1,
                "spans overlap on track {t:?}: {w:?}"
            );
        }
    }
}

#[parjob::test]
fn two_hundred_jobs_over_two_processes_are_two_hundred_spans_on_their_workers_tracks() {
    let dir = common::scratch("trace", "processes");
    let file = dir.join("run.json");
    let out = whose::with(|p| p.trace(file.as_path()))
        .map(0..200)
        .unwrap();
    let trace = read(&file);
    let jobs = spans(&trace, "job");
    assert_eq!(jobs.len(), 200);
    let indexes: BTreeSet<u64> = jobs
        .iter()
        .map(|j| j["args"]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, (0..200).collect());
    // Each span sits on the track of the process that really ran the job.
    for j in &jobs {
        let index = j["args"]["index"].as_u64().unwrap() as usize;
        assert_eq!(
            j["pid"].as_u64().unwrap(),
            u64::from(out[index].1),
            "item {index}"
        );
        assert_eq!(j["args"]["outcome"], "ok");
    }
    let pids: BTreeSet<u32> = out.iter().map(|r| r.1).collect();
    let tracks: BTreeSet<u64> = jobs.iter().map(|j| j["pid"].as_u64().unwrap()).collect();
    assert!(tracks.len() >= 2, "{tracks:?}");
    assert_eq!(tracks, pids.iter().map(|&p| u64::from(p)).collect());
    assert_no_overlap(&jobs);
    // Each worker track is named, and the scheduler's track sent frames.
    for pid in &pids {
        let named = events(&trace).any(|e| e["name"] == "thread_name" && e["pid"] == *pid);
        assert!(named, "worker {pid} has no track name");
    }
    let sends = spans(&trace, "transfer");
    assert!(sends
        .iter()
        .any(|s| s["name"] == "send" && s["args"]["bytes"].as_u64() > Some(0)));
    assert!(sends.iter().any(|s| s["name"] == "return"));
    let s = summary(&trace);
    assert_eq!(s["jobs"], 200);
    assert_eq!(s["workers"].as_array().unwrap().len(), pids.len());
    assert!(s["bytes_sent"].as_u64().unwrap() > 0);
    assert!(events(&trace).any(|e| e["ph"] == "C" && e["name"] == "jobs in flight"));
    // The report sits beside the JSON, with the JSON inside it.
    let html = std::fs::read_to_string(dir.join("run.html")).unwrap();
    assert!(html.contains("\"traceEvents\"") && !html.contains("/*PARJOB_TRACE*/"));
}

/// Item 3 SIGKILLs its own worker on its first attempt.
#[parallel(n_jobs = 2, backend = "process")]
fn cursed_at(x: u64, bad: u64) -> u64 {
    assert!(x != bad, "cursed");
    x
}

#[parjob::test]
fn a_packed_batch_is_a_span_per_call_and_its_panic_is_its_items() {
    let dir = common::scratch("trace", "packed");
    let file = dir.join("run.json");
    let n = 20_000u64;
    cursed_at::with(|p| p.trace(file.as_path()))
        .map((0..n).map(|x| (x, u64::MAX)))
        .unwrap();
    let trace = read(&file);
    let jobs = spans(&trace, "job");
    let indexes: BTreeSet<u64> = jobs
        .iter()
        .map(|j| j["args"]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, (0..n).collect());
    assert_no_overlap(&jobs);
    // Packed: one answer (a return span) for many jobs.
    let returns = spans(&trace, "transfer")
        .into_iter()
        .filter(|s| s["name"] == "return")
        .count();
    assert!(
        returns < jobs.len() / 10,
        "{returns} returns for {} jobs",
        jobs.len()
    );

    let err = cursed_at::with(|p| p.trace(file.as_path()))
        .map((0..n).map(|x| (x, 15_001)))
        .unwrap_err();
    assert!(
        matches!(err, parjob::Error::Panic { index: 15_001, .. }),
        "{err:?}"
    );
    let trace = read(&file);
    let failed: Vec<u64> = spans(&trace, "job")
        .iter()
        .filter(|j| j["args"]["outcome"] == "panic")
        .map(|j| j["args"]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(failed, [15_001]);
}

#[parallel(backend = "process", n_jobs = 2, retries = 1)]
fn dies_once(i: u64, dir: &Path) -> u64 {
    let marker = dir.join(format!("{i}.tried"));
    if i == 3 && !marker.exists() {
        std::fs::write(&marker, b"").unwrap();
        // SAFETY: a signal to this very worker process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    i
}

#[parjob::test]
fn a_killed_worker_shows_its_death_and_a_retried_job_both_attempts() {
    let dir = common::scratch("trace", "death");
    let file = dir.join("run.json");
    let items = (0..8u64).map(|i| (i, dir.clone()));
    let run = dies_once::with(|p| p.trace(file.as_path()).batch_size(1));
    assert_eq!(run.map(items).unwrap(), (0..8).collect::<Vec<_>>());
    let trace = read(&file);
    let deaths = instants(&trace, "worker death");
    assert_eq!(deaths.len(), 1, "{deaths:?}");
    assert!(deaths[0]["args"]["detail"]
        .as_str()
        .unwrap()
        .contains("SIGKILL"));
    let attempts: Vec<(u64, String)> = spans(&trace, "job")
        .into_iter()
        .filter(|j| j["args"]["index"] == 3)
        .map(|j| {
            (
                j["args"]["attempt"].as_u64().unwrap(),
                j["args"]["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(attempts, [(1, "death".to_string()), (2, "ok".to_string())]);
    // The dead worker's track holds the death; its replacement started.
    let dead_pid = deaths[0]["pid"].as_u64().unwrap();
    let first = spans(&trace, "job")
        .into_iter()
        .find(|j| j["args"]["index"] == 3)
        .unwrap();
    assert_eq!(first["pid"].as_u64().unwrap(), dead_pid);
    let starts = instants(&trace, "worker start");
    assert!(starts
        .iter()
        .any(|s| s["args"]["detail"].as_str().unwrap().contains("replacing")));
    let s = summary(&trace);
    assert_eq!(
        (s["retries"].as_u64(), s["deaths"].as_u64()),
        (Some(1), Some(1))
    );
}

#[parallel(n_jobs = 2)]
fn panics_on_7(x: u64) -> u64 {
    assert!(x != 7, "seven");
    x
}

#[parallel(n_jobs = 2, backend = "process")]
fn panics_on_7_in_a_worker(x: u64) -> u64 {
    assert!(x != 7, "seven");
    x
}

#[parjob::test]
fn a_panicking_job_is_a_span_with_its_outcome_on_threads_and_processes() {
    let dir = common::scratch("trace", "panic");
    for (name, on_processes) in [("threads.json", false), ("processes.json", true)] {
        let file = dir.join(name);
        let results = if on_processes {
            panics_on_7_in_a_worker::with(|p| {
                p.trace(file.as_path()).on_error(parjob::OnError::Continue)
            })
            .map_results(0..20)
            .unwrap()
        } else {
            panics_on_7::with(|p| p.trace(file.as_path()).on_error(parjob::OnError::Continue))
                .map_results(0..20)
                .unwrap()
        };
        assert!(results[7].is_err());
        let trace = read(&file);
        let jobs = spans(&trace, "job");
        assert_eq!(jobs.len(), 20, "{name}");
        for j in jobs {
            let expected = if j["args"]["index"] == 7 {
                "panic"
            } else {
                "ok"
            };
            assert_eq!(j["args"]["outcome"], expected, "{name}: {j}");
        }
        assert_eq!(summary(&trace)["failed"]["panic"], 1, "{name}");
    }
}

#[test]
fn threads_put_each_job_on_its_pool_thread() {
    let dir = common::scratch("trace", "threads");
    let file = dir.join("run.json");
    assert_eq!(
        square::with(|p| p.trace(file.as_path()))
            .map(0..500)
            .unwrap()
            .len(),
        500
    );
    let trace = read(&file);
    let jobs = spans(&trace, "job");
    assert_eq!(jobs.len(), 500);
    let parent = u64::from(std::process::id());
    // Pool threads are threads 2.. of this process (0 is the scheduler).
    assert!(jobs
        .iter()
        .all(|j| j["pid"] == parent && j["tid"].as_u64().unwrap() >= 2));
    assert_no_overlap(&jobs);
    // A sequential run's jobs are on the caller's thread.
    let file = dir.join("sequential.json");
    square::with(|p| p.trace(file.as_path()).n_jobs(1))
        .map(0..10)
        .unwrap();
    let trace = read(&file);
    assert!(spans(&trace, "job").iter().all(|j| j["tid"] == 1));
    assert_eq!(spans(&trace, "job").len(), 10);
}

#[parjob::test]
fn a_pool_is_traced_from_build_until_it_is_joined() {
    let dir = common::scratch("trace", "pool");
    let file = dir.join("pool.json");
    let pool = Pool::builder().processes(2).trace(&file).build().unwrap();
    let out = pool.chunksize(5).map(whose::task, 0..40u64).unwrap();
    pool.close();
    pool.join().unwrap();
    let trace = read(&file);
    let chunks = spans(&trace, "job");
    // One span per chunk of 5, on the process that ran it.
    assert_eq!(chunks.len(), 8);
    let pids: BTreeSet<u64> = out.iter().map(|r| u64::from(r.1)).collect();
    let tracks: BTreeSet<u64> = chunks.iter().map(|j| j["pid"].as_u64().unwrap()).collect();
    assert_eq!(tracks, pids);
    assert_no_overlap(&chunks);
}

#[parallel]
fn sum_of_sevens() -> u64 {
    let mut total = 0u64;
    #[parallel]
    for x in 0..100_000u64 {
        total += x % 7;
    }
    total
}

#[test]
fn a_marked_loop_and_parallel_for_are_traced_by_their_splits() {
    let dir = common::scratch("trace", "loop");
    let file = dir.join("loop.json");
    let total = parjob::config()
        .trace(file.as_path())
        .n_jobs(2)
        .scope(sum_of_sevens);
    assert_eq!(total, (0..100_000u64).map(|x| x % 7).sum::<u64>());
    let trace = read(&file);
    let splits = spans(&trace, "job");
    assert!(!splits.is_empty());
    assert!(splits.iter().all(|s| s["name"] == "parallel loop"));
    assert_no_overlap(&splits);
    let file = dir.join("for.json");
    let squares: Vec<u64> = parjob::config().trace(file.as_path()).n_jobs(2).scope(|| {
        parallel_for!(for x in 0..1000u64 {
            x * x
        })
    });
    assert_eq!(squares[999], 999 * 999);
    assert!(!spans(&read(&file), "job").is_empty());
}

#[parallel(n_jobs = 2, backend = "process")]
fn tiny(x: u64) -> u64 {
    x + 1
}

#[parjob::test]
fn a_million_tiny_jobs_keep_their_first_and_last_events_in_a_small_file() {
    let dir = common::scratch("trace", "bounded");
    let file = dir.join("run.json");
    let n = 1_000_000u64;
    let out = tiny::with(|p| p.trace(file.as_path())).map(0..n);
    assert_eq!(out.unwrap().len(), n as usize);
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size < 50 << 20, "the trace is {size} bytes");
    let trace = read(&file);
    let s = summary(&trace);
    assert_eq!(s["jobs"], n, "the summary counts every job");
    assert!(s["dropped_events"].as_u64().unwrap() > 0);
    assert_eq!(instants(&trace, "trace truncated").len(), 1);
    let indexes: Vec<u64> = spans(&trace, "job")
        .iter()
        .map(|j| j["args"]["index"].as_u64().unwrap())
        .collect();
    assert!(indexes.contains(&0) && indexes.contains(&(n - 1)));
}

#[test]
#[ignore = "helper: run with PARJOB_TRACE set by the test below"]
fn helper_traced_by_the_environment() {
    assert_eq!(square::map(0..10).unwrap().len(), 10);
    let unwritable = Path::new("/nonexistent-parjob-dir/run.json");
    square::with(|p| p.trace(unwritable).verbose(1))
        .map(0..10)
        .unwrap();
}

#[test]
fn parjob_trace_turns_tracing_on_and_a_file_that_cannot_be_written_is_said() {
    let dir = common::scratch("trace", "env");
    let file = dir.join("env.json");
    let out = common::helper_command(
        "helper_traced_by_the_environment",
        &[("PARJOB_TRACE", file.to_str().unwrap())],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(spans(&read(&file), "job").len(), 10);
    // The run's results stand; the trace's failure is said.
    assert!(
        stderr.contains("could not write the trace to /nonexistent-parjob-dir/run.json"),
        "{stderr}"
    );
}

#[test]
fn verbose_prints_the_summary_and_the_report_rebuilds_from_the_json() {
    let dir = common::scratch("trace", "summary");
    let file = dir.join("run.json");
    square::with(|p| p.trace(file.as_path()))
        .map(0..50)
        .unwrap();
    let html = std::fs::read_to_string(dir.join("run.html")).unwrap();
    std::fs::remove_file(dir.join("run.html")).unwrap();
    let rebuilt = parjob::trace::rebuild_report(&file).unwrap();
    assert_eq!(rebuilt, dir.join("run.html"));
    assert_eq!(std::fs::read_to_string(&rebuilt).unwrap(), html);
    let lines = summary(&read(&file))["lines"].as_array().unwrap().clone();
    assert!(
        lines[0]
            .as_str()
            .unwrap()
            .starts_with("trace: 50 jobs on 2 workers"),
        "{lines:?}"
    );
    assert!(parjob::trace::report_html("{\"not\": \"a trace\"}").is_err());
}

/// Headless Chromium loads the report: it draws a lane per worker and
/// paints its canvas.
#[parjob::test]
#[ignore = "needs Debian's chromium: .ci/run installs it and runs this test"]
fn the_report_draws_a_lane_per_worker_in_a_real_browser() {
    let dir = common::scratch("trace", "browser");
    let file = dir.join("run.json");
    whose::with(|p| p.trace(file.as_path()))
        .map(0..200)
        .unwrap();
    let page = format!("file://{}", dir.join("run.html").display());
    let chromium = |args: &[&str]| {
        std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1200,800",
            ])
            .args(args)
            .arg(&page)
            .output()
            .expect("chromium runs")
    };
    let dom = String::from_utf8_lossy(&chromium(&["--dump-dom"]).stdout).into_owned();
    assert_eq!(dom.matches("class=\"lane worker\"").count(), 2, "{dom}");
    assert_eq!(dom.matches("class=\"lane scheduler\"").count(), 1);
    let painted: usize = dom
        .split("data-painted=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .expect("the canvas says what it painted");
    assert!(painted >= 2, "the canvas painted {painted} job marks");
    let shot = dir.join("shot.png");
    let out = chromium(&[&format!("--screenshot={}", shot.display())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // A blank page of this size compresses to a few kilobytes.
    assert!(png.len() > 20_000, "the screenshot is {} bytes", png.len());
}
