//! What each case runs as an MPI program. Rank 0 runs the scenario named
//! in `PARJOB_MPI_SCENARIO` and prints `OK <name>` when every check
//! holds; the other ranks never get here (they serve at
//! `#[parjob::main]`). A failed check panics, which ends rank 0 with a
//! non-zero status that the runner reports.

use parjob::prelude::*;
use parjob::{Backend, Error, Parallel};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The square of `x`, the rank that computed it and that rank's pid.
#[parallel(backend = "mpi")]
pub fn square(x: u64) -> (u64, usize, u32) {
    (x * x, parjob::mpi::rank().unwrap_or(0), std::process::id())
}

/// Panics on rank 2, from item 4 on.
#[parallel(backend = "mpi")]
pub fn fragile(x: u64) -> u64 {
    if x >= 4 && parjob::mpi::rank() == Some(2) {
        panic!("item {x} refused");
    }
    x
}

/// Aborts the whole rank on rank 2.
#[parallel(backend = "mpi")]
pub fn aborting(x: u64) -> u64 {
    if parjob::mpi::rank() == Some(2) {
        std::process::abort();
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    x
}

/// Sleeps `millis` milliseconds, then returns them.
#[parallel(backend = "mpi")]
pub fn nap(millis: u64) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(millis));
    millis
}

/// `len` bytes of value `fill`: results larger than one result message.
#[parallel(backend = "mpi")]
pub fn block(len: usize, fill: u8) -> Vec<u8> {
    vec![fill; len]
}

/// The mean of slice `k` of 95, the rank, and how many large arguments
/// that rank has received so far, and taken from what it kept.
#[parallel(backend = "mpi")]
pub fn slice_mean(data: &[f64], k: usize) -> (f64, usize, u64, u64) {
    let chunk = data.len() / 95;
    let slice = &data[k * chunk..(k + 1) * chunk];
    let mean = slice.iter().sum::<f64>() / slice.len() as f64;
    (
        mean,
        parjob::mpi::rank().unwrap_or(0),
        parjob::mpi::segments_received(),
        parjob::mpi::segments_reused(),
    )
}

/// The backend and `n_jobs` a nested run gets inside a rank, asked with
/// `asked` (`"default"` or an explicit backend name).
#[parallel(backend = "mpi")]
pub fn nested_plan(asked: String) -> (String, usize, String) {
    let mut p = Parallel::new();
    if asked != "default" {
        p = p.backend(asked.parse::<Backend>().unwrap());
    }
    let plan = p.plan().unwrap();
    (
        plan.backend.to_string(),
        plan.n_jobs,
        plan.backend_source.to_string(),
    )
}

/// Item 1 waits (up to a minute) until `dir` holds a file `gate`, when
/// `gated`, or else a file for each of the other `n - 1` items; the
/// others leave their file and return at once. Returns the item and
/// whether the wait held.
#[parallel(backend = "mpi")]
pub fn straggle(i: u64, n: u64, dir: String, gated: bool) -> (u64, bool) {
    let dir = std::path::Path::new(&dir);
    if i != 1 {
        std::fs::write(dir.join(i.to_string()), b"").unwrap();
        return (i, true);
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ready = || match gated {
        true => dir.join("gate").exists(),
        false => std::fs::read_dir(dir).unwrap().count() as u64 == n - 1,
    };
    while !ready() {
        if std::time::Instant::now() > until {
            return (i, false);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    (i, true)
}

/// No fast job waits behind a slow one on the ranks: unordered, the nine
/// fast results arrive before the slow job, which waits for a file the
/// driver writes only then; ordered, the slow job waits until every other
/// job has left its file.
fn straggler() {
    let dir = std::env::temp_dir().join(format!("parjob-mpi-straggler-{}", std::process::id()));
    let path = dir.to_string_lossy().into_owned();
    let fresh = || {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
    };
    fresh();
    let jobs = (0..10u64).map(|i| straggle::delayed(i, 10, path.clone(), true));
    let mut fast = 0;
    for r in Parallel::new().backend(Backend::Mpi).iter_unordered(jobs) {
        let (_, (i, in_time)) = r.unwrap();
        if i == 1 {
            assert!(in_time, "the slow job waited in vain");
            assert_eq!(fast, 9, "every fast result arrives before the slow one");
        } else {
            fast += 1;
            if fast == 9 {
                std::fs::write(dir.join("gate"), b"").unwrap();
            }
        }
    }
    assert_eq!(fast, 9);
    for n in [3u64, 10, 40] {
        fresh();
        let out = straggle::map((0..n).map(|i| (i, n, path.clone(), false))).unwrap();
        assert!(out.iter().all(|&(_, in_time)| in_time), "{n} jobs: {out:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `plans_from_here(depth)` on a rank.
#[parallel(backend = "mpi")]
pub fn plans_in_rank(depth: u32) -> Vec<crate::levels::Described> {
    crate::levels::plans_from_here(depth)
}

fn ok(name: &str) {
    println!("OK {name}");
}

pub fn run(name: &str) {
    match name {
        "results" => results(),
        "streams" => streams(),
        "panic" => panic_on_rank_2(),
        "abort" => abort_on_rank_2(),
        "mismatch" => mismatch(),
        "spawn" => spawn(),
        "spawn_without_slots" => spawn_without_slots(),
        "alone" => alone(),
        "broadcast" => broadcast(),
        "nested" => nested(),
        "timeout" => timeout(),
        "timeout_retried" => timeout_retried(),
        "traced" => traced(),
        "broadcast_again" => broadcast_again(),
        "big_results" => big_results(),
        "stopped_rank" => stopped_rank(),
        "straggler" => straggler(),
        "driver_panics" => {
            assert_eq!(square::map(0..4u64).unwrap().len(), 4);
            panic!("the driver gives up");
        }
        other => panic!("no scenario {other}"),
    }
    ok(name);
}

fn results() {
    let out = square::map(0..300u64).unwrap();
    let values: Vec<u64> = out.iter().map(|r| r.0).collect();
    let expected: Vec<u64> = (0..300u64).map(|x| x * x).collect();
    assert_eq!(values, expected);
    let ranks: BTreeSet<usize> = out.iter().map(|r| r.1).collect();
    assert!(!ranks.contains(&0), "rank 0 ran jobs: {ranks:?}");
    assert!(ranks.iter().all(|r| [1, 2].contains(r)), "{ranks:?}");
    println!("RANKS {ranks:?}");
}

fn streams() {
    // Ordered: the order of the input, lazily.
    let ordered: Vec<u64> = Parallel::new()
        .backend(Backend::Mpi)
        .iter((0..100u64).map(square::delayed))
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(ordered, (0..100u64).map(|x| x * x).collect::<Vec<_>>());
    // Unordered: every result once; the input is drawn at most
    // `pre_dispatch` jobs ahead of what was consumed.
    let drawn = Arc::new(AtomicUsize::new(0));
    let counter = drawn.clone();
    let jobs = (0..200u64).map(move |x| {
        counter.fetch_add(1, Ordering::SeqCst);
        square::delayed(x)
    });
    let mut seen = Vec::new();
    let mut worst = 0;
    for r in Parallel::new()
        .backend(Backend::Mpi)
        .batch_size(1)
        .pre_dispatch(3)
        .verbose(10)
        .iter_unordered(jobs)
    {
        let (_index, (square, _, _)) = r.unwrap();
        seen.push(square);
        worst = worst.max(drawn.load(Ordering::SeqCst) - seen.len());
    }
    assert!(worst <= 3, "drew {worst} jobs ahead with pre_dispatch = 3");
    seen.sort_unstable();
    assert_eq!(seen, (0..200u64).map(|x| x * x).collect::<Vec<_>>());
}

fn panic_on_rank_2() {
    let err = Parallel::new()
        .backend(Backend::Mpi)
        .batch_size(1)
        .run((0..50u64).map(fragile::delayed))
        .unwrap_err();
    match &err {
        Error::Panic { message, index, .. } => {
            assert!(message.contains("refused"), "{err}");
            assert!(message.contains("on MPI rank 2 on "), "{err}");
            assert!(*index >= 4, "{err}");
        }
        other => panic!("expected a panic, got {other}"),
    }
    println!("ERROR {err}");
    // The ranks serve the next run.
    assert_eq!(square::map(0..10u64).unwrap().len(), 10);
    // Under on_error = "continue" every item runs: rank 2's panics are
    // those items' errors, in their places.
    let outcomes = Parallel::new()
        .backend(Backend::Mpi)
        .run_results((0..50u64).map(fragile::delayed))
        .unwrap();
    assert_eq!(outcomes.len(), 50);
    let mut failed = 0;
    for (i, outcome) in (0u64..).zip(&outcomes) {
        match outcome {
            Ok(v) => assert_eq!(*v, i),
            Err(Error::Panic { index, message, .. }) => {
                assert_eq!(*index as u64, i);
                assert!(i >= 4 && message.contains("on MPI rank 2 on "), "{message}");
                failed += 1;
            }
            Err(other) => panic!("item {i}: unexpected {other}"),
        }
    }
    println!("CONTINUE {} {failed}", 50 - failed);
}

fn abort_on_rank_2() {
    let _ = Parallel::new()
        .backend(Backend::Mpi)
        .batch_size(1)
        .run((0..1000u64).map(aborting::delayed));
    panic!("the run returned although rank 2 aborted");
}

fn mismatch() {
    let err = square::map(0..10u64).unwrap_err();
    assert!(matches!(err, Error::Handshake(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("rank 2 on "), "{text}");
    assert!(text.contains("another task registry"), "{text}");
    println!("ERROR {err}");
}

fn spawn() {
    assert!(parjob::mpi::launched() || parjob::mpi::rank().is_none());
    let out = Parallel::new()
        .backend(Backend::MpiSpawn { workers: 2 })
        .run((0..40u64).map(square::delayed))
        .unwrap();
    let values: Vec<u64> = out.iter().map(|r| r.0).collect();
    assert_eq!(values, (0..40u64).map(|x| x * x).collect::<Vec<_>>());
    let pids: BTreeSet<u32> = out.iter().map(|r| r.2).collect();
    assert!(!pids.contains(&std::process::id()), "the driver ran jobs");
    println!("PIDS {pids:?}");
    // A second run reuses the spawned ranks.
    let again = Parallel::new()
        .backend(Backend::MpiSpawn { workers: 2 })
        .run((0..10u64).map(square::delayed))
        .unwrap();
    let later: BTreeSet<u32> = again.iter().map(|r| r.2).collect();
    assert!(later.is_subset(&pids), "{later:?} vs {pids:?}");
}

/// More spawned ranks than slots, with oversubscription off: an error
/// that names the setting, and the program goes on.
fn spawn_without_slots() {
    let err = Parallel::new()
        .backend(Backend::MpiSpawn { workers: 256 })
        .run((0..4u64).map(square::delayed))
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, parjob::Error::Mpi(_)), "{text}");
    assert!(
        text.contains("OMPI_MCA_rmaps_base_oversubscribe=1"),
        "{text}"
    );
    println!("ERROR {text}");
}

fn alone() {
    assert!(!parjob::mpi::launched());
    // The same task on the process backend, unchanged.
    let out = Parallel::new()
        .backend(Backend::Process)
        .n_jobs(2)
        .run((0..20u64).map(square::delayed))
        .unwrap();
    assert_eq!(
        out.iter().map(|r| r.0).sum::<u64>(),
        (0..20u64).map(|x| x * x).sum::<u64>()
    );
    assert!(out.iter().all(|r| r.2 != std::process::id()));
    // Asking for MPI outside a launcher says how to start one.
    let err = square::map(0..3u64).unwrap_err();
    assert!(err.to_string().contains("mpirun -n"), "{err}");
}

/// Checks that rank 0 sent `sent` bytes: as many copies of the 80 MB
/// argument as the runner expects from where it put the ranks
/// (`PARJOB_MPI_EXPECT_COPIES`), plus headers and small frames.
fn expect_copies(sent: u64) -> u64 {
    let copies: u64 = std::env::var("PARJOB_MPI_EXPECT_COPIES")
        .unwrap()
        .parse()
        .unwrap();
    let payload = 80_000_000 * copies;
    assert!(
        sent >= payload && sent < payload + 8_000_000,
        "sent {sent} bytes, expected {copies} copies of 80 MB"
    );
    copies
}

fn broadcast() {
    let data: Vec<f64> = (0..10_000_000).map(|i| (i % 1000) as f64).collect();
    let before = parjob::mpi::driver_sent().1;
    let out = slice_mean::map((0..95).map(|k| (&data, k))).unwrap();
    let sent = parjob::mpi::driver_sent().1 - before;
    let chunk = data.len() / 95;
    for (k, (mean, _, _, _)) in out.iter().enumerate() {
        let slice = &data[k * chunk..(k + 1) * chunk];
        let expected = slice.iter().sum::<f64>() / slice.len() as f64;
        assert!(
            (mean - expected).abs() < 1e-9,
            "slice {k}: {mean} vs {expected}"
        );
    }
    // Each rank received the 80 MB argument once, however many slices it ran.
    let mut by_rank: BTreeMap<usize, u64> = BTreeMap::new();
    for (_, rank, received, _) in &out {
        let r = by_rank.entry(*rank).or_default();
        *r = (*r).max(*received);
    }
    assert!(by_rank.values().all(|&n| n == 1), "{by_rank:?}");
    println!("RECEIVED {by_rank:?} SENT_BYTES {sent}");
    expect_copies(sent);
}

fn nested() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    for asked in ["default", "process", "mpi"] {
        let plans = nested_plan::map([asked.to_string()]).unwrap();
        let (backend, n_jobs, source) = &plans[0];
        assert_eq!(
            backend,
            if cpus > 1 { "thread" } else { "sequential" },
            "{asked}"
        );
        assert!(*n_jobs <= cpus, "{asked}: {n_jobs} jobs on {cpus} CPUs");
        if asked != "default" && cpus > 1 {
            assert_eq!(source, "an MPI worker rank", "{asked}");
        }
    }
    // Levels 1 to 3 in a rank: threads with the rank's CPUs, then
    // sequential, each saying it is nested in an MPI rank.
    let levels = plans_in_rank::map([3u32]).unwrap().remove(0);
    assert_eq!(levels.len(), 3);
    for (k, (backend, n_jobs, source)) in levels.iter().enumerate() {
        let level = k + 1;
        assert!(source.contains("MpiRank"), "{source}");
        assert!(source.contains(&format!("level: {level}")), "{source}");
        let threads = level == 1 && *n_jobs > 1;
        assert_eq!(
            backend,
            if threads { "thread" } else { "sequential" },
            "level {level}"
        );
    }
    println!("LEVELS {levels:?}");
}

/// Waits (up to a minute) for a file `release` in `dir`, which the driver
/// writes only after its run returned; leaves `in_vain` there if the wait
/// ran out, so a run that waited for this job is seen.
#[parallel(backend = "mpi")]
pub fn held(dir: String) -> u64 {
    let dir = std::path::Path::new(&dir);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !dir.join("release").exists() {
        if std::time::Instant::now() > until {
            std::fs::write(dir.join("in_vain"), b"").unwrap();
            return 0;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    1
}

/// A timeout fails the run at once, without waiting for the job, which a
/// rank cannot be made to stop.
fn timeout() {
    let dir = std::env::temp_dir().join(format!("parjob-mpi-timeout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let path = dir.to_string_lossy().into_owned();
    let jobs = [
        held::delayed(path),
        nap::delayed(1),
        nap::delayed(1),
        nap::delayed(1),
    ];
    let err = Parallel::new()
        .backend(Backend::Mpi)
        .timeout(std::time::Duration::from_millis(500))
        .batch_size(1)
        .run(jobs)
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { index: 0, .. }), "{err}");
    assert!(!dir.join("in_vain").exists(), "the run waited for the job");
    std::fs::write(dir.join("release"), b"").unwrap();
    println!("ERROR {err}");
    // The rank that ran the held job finishes it and serves again.
    ten_squares();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits like `held` on its first attempt (a marker in `dir` records it);
/// later attempts return 2 at once.
#[parallel(backend = "mpi")]
pub fn held_once(dir: String) -> u64 {
    let marker = std::path::Path::new(&dir).join("tried");
    if std::fs::create_dir(&marker).is_ok() {
        return held(dir);
    }
    2
}

/// Under `retries`, a job past the timeout runs again on another rank:
/// the run succeeds without waiting for the first attempt, and the rank
/// that was abandoned serves the next run once it has finished.
fn timeout_retried() {
    let dir = std::env::temp_dir().join(format!("parjob-mpi-retried-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let path = dir.to_string_lossy().into_owned();
    let jobs = [
        held_once::delayed(path),
        nap::delayed(1),
        nap::delayed(1),
        nap::delayed(1),
    ];
    let out = Parallel::new()
        .backend(Backend::Mpi)
        .timeout(std::time::Duration::from_millis(500))
        .retries(1)
        .verbose(1)
        .batch_size(1)
        .run(jobs)
        .unwrap();
    assert_eq!(out[0], 2, "the second attempt's value");
    assert!(!dir.join("in_vain").exists(), "the run waited for the job");
    std::fs::write(dir.join("release"), b"").unwrap();
    println!("OK timeout_retried {out:?}");
    ten_squares();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run of ten squares on the ranks, which must all come back.
fn ten_squares() {
    let out = Parallel::new()
        .backend(Backend::Mpi)
        .run((0..10u64).map(square::delayed))
        .unwrap();
    assert_eq!(out.len(), 10);
}

/// Stops its own rank with SIGSTOP: only a SIGKILL or SIGCONT from
/// outside moves it again.
#[parallel(backend = "mpi")]
pub fn stop_myself(x: u64) -> u64 {
    // SAFETY: a signal to this very process.
    unsafe { libc::raise(libc::SIGSTOP) };
    x
}

fn stopped_rank() {
    let err = Parallel::new()
        .backend(Backend::Mpi)
        .timeout(std::time::Duration::from_secs(3))
        .batch_size(1)
        .run([stop_myself::delayed(1)])
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    println!("ERROR {err}");
    // The other rank serves the next run; then main returns, and the
    // stopped rank never answers the stop.
    ten_squares();
}

fn big_results() {
    // 96 MiB results, each over the 64 MiB a result message carries, and
    // small ones answered in the same batches.
    let sizes = [96 << 20, 10, 96 << 20, 1 << 20, 5];
    let out = Parallel::new()
        .backend(Backend::Mpi)
        .batch_size(2)
        .run(
            sizes
                .iter()
                .enumerate()
                .map(|(k, &len)| block::delayed(len, k as u8)),
        )
        .unwrap();
    for (k, (bytes, &len)) in out.iter().zip(&sizes).enumerate() {
        assert_eq!(bytes.len(), len, "result {k}");
        assert!(bytes.iter().all(|&b| b == k as u8), "result {k}");
    }
}

/// Two runs over equal 80 MB arguments (two allocations, one content):
/// the second sends only headers, unless the ranks keep nothing.
fn broadcast_again() {
    let data: Vec<f64> = (0..10_000_000).map(|i| (i % 1000) as f64).collect();
    let first = slice_mean::map((0..95).map(|k| (&data, k))).unwrap();
    let again = data.clone();
    drop(data);
    let before = parjob::mpi::driver_sent().1;
    let second = slice_mean::map((0..95).map(|k| (&again, k))).unwrap();
    let sent = parjob::mpi::driver_sent().1 - before;
    let means = |out: &[(f64, usize, u64, u64)]| out.iter().map(|r| r.0).collect::<Vec<_>>();
    assert_eq!(means(&first), means(&second));
    let reused: u64 = second.iter().map(|r| r.3).max().unwrap();
    println!("SECOND_RUN_SENT_BYTES {sent} REUSED {reused}");
    let copies = expect_copies(sent);
    assert_eq!(reused > 0, copies == 0, "reused {reused}");
}

/// `trace`: each job is a span on its rank's track, named by the rank,
/// host and pid, with the rank's real pid in the name.
fn traced() {
    let file = std::env::temp_dir().join(format!("parjob-mpi-trace-{}.json", std::process::id()));
    let out = square::with(|p| p.trace(file.as_path()))
        .map(0..300u64)
        .unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(file.with_extension("html"));
    let trace: serde_json::Value = serde_json::from_str(&text).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let jobs: Vec<&serde_json::Value> = events.iter().filter(|e| e["cat"] == "job").collect();
    assert_eq!(jobs.len(), 300);
    let indexes: BTreeSet<u64> = jobs
        .iter()
        .map(|j| j["args"]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes.len(), 300);
    // Each rank's track is named with its rank and its real pid.
    let pids: BTreeSet<u32> = out.iter().map(|r| r.2).collect();
    for pid in pids {
        let named = events.iter().any(|e| {
            e["name"] == "thread_name"
                && e["args"]["name"]
                    .as_str()
                    .is_some_and(|n| n.contains("rank") && n.contains(&format!("pid {pid}")))
        });
        assert!(named, "no track names the rank of pid {pid}: {text}");
    }
    let tracks: BTreeSet<u64> = jobs.iter().map(|j| j["pid"].as_u64().unwrap()).collect();
    assert_eq!(tracks.len(), 2, "two worker ranks: {tracks:?}");
    // Frames went out, and results came back, with their bytes.
    for name in ["send", "return"] {
        let moved = events
            .iter()
            .any(|e| e["name"] == name && e["args"]["bytes"].as_u64() > Some(0));
        assert!(moved, "no {name} span with bytes");
    }
    println!("OK traced");
}
