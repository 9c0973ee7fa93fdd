//! Faults in `Pool` and `Process`: workers that hang, die or are killed
//! at awkward moments.

use crate::harness::{none_left, scratch, Case};
use parjob::prelude::*;
use parjob::shared::List;
use parjob::sync::Event;
use parjob::{Error, Executor, Pool, Process};
use std::sync::mpsc;
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
    Case {
        fault: "Future::cancel of another future, called inside a done-callback",
        expect: "cancel answers true at once; the other future is cancelled",
        within: Duration::from_secs(30),
        run: cancel_inside_a_done_callback,
        ignore: None,
    },
    Case {
        fault: "add_done_callback on a done future whose callback calls done()",
        expect: "the callback runs and sees done() true",
        within: Duration::from_secs(30),
        run: late_callback_asks_done,
        ignore: None,
    },
    Case {
        fault: "a callback that gets another result set on the callback thread",
        expect: "get returns Error::Pool at once instead of hanging",
        within: Duration::from_secs(30),
        run: callback_waits_for_a_result,
        ignore: None,
    },
    Case {
        fault: "a Pool dropped inside its own callback",
        expect: "the drop returns; no join of the callback thread by itself",
        within: Duration::from_secs(30),
        run: pool_dropped_in_its_callback,
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

/// Waits for `go`, then returns `x`.
#[parallel(backend = "process")]
fn after_event(go: Event, x: u64) -> u64 {
    go.wait();
    x
}

/// A bound for a callback's answer: the row fails, rather than hangs.
const ANSWER: Duration = Duration::from_secs(10);

fn cancel_inside_a_done_callback() -> Result<(), String> {
    let ex = Executor::new(1).map_err(text)?;
    let (go, go_on) = (Event::new().map_err(text)?, Event::new().map_err(text)?);
    let first = ex.submit(after_event::delayed(go.clone(), 1));
    // One worker: once `first` ends it takes `second`, which waits, so
    // `third` has not started when `first`'s callback runs.
    let second = ex.submit(after_event::delayed(go_on.clone(), 2));
    let third = std::sync::Arc::new(ex.submit(double::delayed(3)));
    let (tx, rx) = mpsc::channel();
    let other = std::sync::Arc::clone(&third);
    first.add_done_callback(move |_| {
        let _ = tx.send(other.cancel());
    });
    go.set();
    let cancelled = rx.recv_timeout(ANSWER).map_err(|_| "cancel never answered");
    go_on.set();
    let _ = second.result();
    if !cancelled? || !third.cancelled() {
        return Err(format!("cancelled() says {}", third.cancelled()));
    }
    Ok(())
}

fn late_callback_asks_done() -> Result<(), String> {
    let ex = Executor::new(1).map_err(text)?;
    let future = std::sync::Arc::new(ex.submit(double::delayed(21)));
    let (tx, rx) = mpsc::channel();
    let done_tx = tx.clone();
    future.add_done_callback(move |_| {
        let _ = done_tx.send(None);
    });
    rx.recv_timeout(ANSWER)
        .map_err(|_| "the future never ended")?;
    let same = std::sync::Arc::clone(&future);
    // Done already: the callback runs here, now.
    future.add_done_callback(move |r| {
        let _ = tx.send(Some((same.done(), r.as_ref().ok().copied())));
    });
    match rx.recv_timeout(ANSWER) {
        Ok(Some((true, Some(42)))) => Ok(()),
        other => Err(format!("the late callback said {other:?}")),
    }
}

fn callback_waits_for_a_result() -> Result<(), String> {
    let pool = Pool::new(2).map_err(text)?;
    let go = Event::new().map_err(text)?;
    let (tx, rx) = mpsc::channel();
    let first = pool.apply_async(double::delayed(1));
    let second = pool.apply_async_with(after_event::delayed(go.clone(), 2), |_| {}, |_| {});
    let slot = std::sync::Mutex::new(Some(second));
    let started = pool.apply_async_with(
        double::delayed(3),
        move |_| {
            let second = slot.lock().unwrap().take().unwrap();
            let _ = tx.send(second.get().map_err(|e| e.to_string()));
        },
        |_| {},
    );
    let answer = rx
        .recv_timeout(ANSWER)
        .map_err(|_| "the callback hangs in get");
    go.set();
    let _ = (first.get(), started.get());
    match answer? {
        Err(why) if why.contains("callback") => Ok(()),
        other => Err(format!("get in the callback gave {other:?}")),
    }
}

fn pool_dropped_in_its_callback() -> Result<(), String> {
    let pool = std::sync::Arc::new(std::sync::Mutex::new(Some(Pool::new(1).map_err(text)?)));
    let (tx, rx) = mpsc::channel();
    let held = std::sync::Arc::clone(&pool);
    let result = pool.lock().unwrap().as_ref().unwrap().apply_async_with(
        double::delayed(4),
        move |_| {
            let last = held.lock().unwrap().take();
            drop(last);
            let _ = tx.send("dropped");
        },
        |_| {},
    );
    match rx.recv_timeout(ANSWER) {
        Ok("dropped") => {}
        other => return Err(format!("the callback's drop did not return: {other:?}")),
    }
    match result.get() {
        Ok(8) => Ok(()),
        other => Err(format!("the result was {other:?}")),
    }
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
