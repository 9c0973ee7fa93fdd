//! Faults in `Pool` and `Process`: workers that hang, die or are killed
//! at awkward moments.

use crate::harness::{none_left, scratch, Case};
use parjob::prelude::*;
use parjob::shared::List;
use parjob::{Error, Pool, Process};
use std::time::Duration;

pub const CASES: &[Case] = &[
    Case {
        fault: "a Pool initializer that never returns, then terminate()",
        expect: "terminate returns, the pending map fails, no worker is left",
        within: Duration::from_secs(20),
        run: initializer_hangs,
        ignore: None,
    },
    Case {
        fault: "a Pool initializer that outlives initializer_timeout",
        expect: "the map fails naming the initializer; the worker is killed",
        within: Duration::from_secs(20),
        run: initializer_times_out,
        ignore: None,
    },
    Case {
        fault: "Process::kill at 0, 1, 5 and 50 ms after spawn, 50 times each",
        expect: "join returns the death every time; the task never runs twice",
        within: Duration::from_secs(240),
        run: kill_right_after_spawn,
        ignore: None,
    },
    Case {
        fault: "a Pool worker dies on item 6 of chunks of 4 (abort, SIGKILL, exit, stack overflow, OOM)",
        expect: "Error::WorkerDied naming item 6 each time",
        within: Duration::from_secs(120),
        run: death_in_a_chunk_names_its_item,
        ignore: None,
    },
];

fn text(e: Error) -> String {
    e.to_string()
}

/// An initializer that says it started (a file named by its pid: an
/// initializer's arguments are plain values), then never returns.
#[parallel(backend = "process")]
fn hang_in_init(dir: std::path::PathBuf) {
    let _ = std::fs::write(dir.join(std::process::id().to_string()), b"");
    loop {
        std::thread::park();
    }
}

#[parallel(backend = "process")]
fn double(x: u64) -> u64 {
    2 * x
}

fn initializer_hangs() -> Result<(), String> {
    let dir = scratch("initializer-hangs");
    let pool = Pool::builder()
        .processes(2)
        .initializer::<hang_in_init>((dir.clone(),))
        .build()
        .map_err(text)?;
    let pending = pool.map_async(double::task, 0..4u64);
    let workers = started_in(&dir, 2)?;
    pool.terminate();
    match pending.get() {
        Err(Error::Pool(_)) => {}
        other => return Err(format!("the pending map gave {other:?}")),
    }
    drop(pool);
    let _ = std::fs::remove_dir_all(&dir);
    none_left(&workers)
}

fn initializer_times_out() -> Result<(), String> {
    let dir = scratch("initializer-timeout");
    let pool = Pool::builder()
        .processes(1)
        .initializer::<hang_in_init>((dir.clone(),))
        .initializer_timeout(Duration::from_millis(300))
        .build()
        .map_err(text)?;
    let failed = pool.map(double::task, 0..4u64);
    let workers = started_in(&dir, 1)?;
    let _ = std::fs::remove_dir_all(&dir);
    match failed {
        Err(Error::Pool(why))
            if why.contains("hang_in_init") && why.contains("initializer_timeout") => {}
        other => return Err(format!("the map gave {other:?}")),
    }
    none_left(&workers)
}

/// Records that it ran (its pid), then never ends.
#[parallel(backend = "process")]
fn run_once_then_park(runs: List<u32>) {
    let _ = runs.push(&std::process::id());
    loop {
        std::thread::park();
    }
}

fn kill_right_after_spawn() -> Result<(), String> {
    for delay_ms in [0u64, 1, 5, 50] {
        for attempt in 0..50 {
            let runs = List::<u32>::new().map_err(text)?;
            let process =
                Process::spawn(run_once_then_park::delayed(runs.clone())).map_err(text)?;
            let pid = process.pid();
            // The fault is the timing itself: a kill this long after spawn.
            std::thread::sleep(Duration::from_millis(delay_ms));
            process.kill();
            let joined = process.join();
            let ran: Vec<u32> = runs.to_vec().map_err(text)?;
            let at = format!("killed {delay_ms} ms after spawn (attempt {attempt})");
            if !matches!(joined, Err(Error::WorkerDied { .. })) {
                return Err(format!("{at}: join gave {joined:?}"));
            }
            if ran.iter().any(|&p| p != pid) {
                return Err(format!(
                    "{at}: the task ran again in {ran:?}, not only in {pid}"
                ));
            }
            let mut pids = ran;
            pids.push(pid);
            none_left(&pids).map_err(|e| format!("{at}: {e}"))?;
        }
    }
    Ok(())
}

fn death_in_a_chunk_names_its_item() -> Result<(), String> {
    use crate::process_faults::{dies_on, ABORT, EXIT, KILL, OOM, OVERFLOW};
    let pool = Pool::builder()
        .processes(2)
        .chunksize(4)
        .build()
        .map_err(text)?;
    for (how, name) in [
        (ABORT, "abort"),
        (KILL, "SIGKILL"),
        (EXIT, "exit"),
        (OVERFLOW, "stack overflow"),
        (OOM, "out of memory"),
    ] {
        match pool.map(|x| dies_on::delayed(x, 6, how), 0..12u64) {
            Err(Error::WorkerDied { index: 6, .. }) => {}
            other => return Err(format!("{name}: the map gave {other:?}")),
        }
    }
    Ok(())
}

/// The pids of the `n` workers that wrote their pid into `dir`, waiting
/// for them (for at most 10 s).
fn started_in(dir: &std::path::Path, n: usize) -> Result<Vec<u32>, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<u32> = std::fs::read_dir(dir)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        if pids.len() >= n {
            return Ok(pids);
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{} of {n} initializers started", pids.len()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
