//! The MPI backend under a real `mpirun` (OpenMPI), with 3 ranks: rank 0
//! drives, ranks 1 and 2 serve.
//!
//! This binary is both the runner and the MPI program. Run by `cargo test
//! --features mpi --test mpi`, it launches itself once per case, with
//! `PARJOB_MPI_SCENARIO` naming what rank 0 runs (`scenarios.rs`), and
//! checks the exit status and the output. It needs the `mpi` feature,
//! which needs OpenMPI to build, so wherever it builds `mpirun` exists.

#[path = "../common/levels.rs"]
mod levels;
mod scenarios;

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How a case is launched, and what it must print.
struct Case {
    name: &'static str,
    /// Arguments before the program: `mpirun ...`, or none to run alone.
    launch: fn(&str) -> Command,
    env: &'static [(&'static str, &'static str)],
    /// Whether rank 0 ends with status 0.
    succeeds: bool,
    /// Text that must appear in stdout or stderr.
    expect: &'static [&'static str],
    /// Needs a running Slurm (`.ci/slurm-up`, then `PARJOB_TEST_SLURM=1`).
    slurm: bool,
}

fn mpirun(n: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-n",
        &n.to_string(),
    ]);
    c
}

fn three(exe: &str) -> Command {
    let mut c = mpirun(3);
    c.arg(exe);
    c
}

/// Slurm's launcher, 3 tasks on one node (`-O`: more tasks than CPUs).
fn srun(exe: &str) -> Command {
    let mut c = Command::new("srun");
    c.args(["--mpi=pmix", "-O", "-n", "3", exe]);
    c
}

fn alone(exe: &str) -> Command {
    Command::new(exe)
}

/// Rank 0 alone, ranks 1 and 2 together on a pretend second node.
fn two_nodes(exe: &str) -> Command {
    let mut c = mpirun(1);
    c.args([exe, ":", "-n", "2", "-x", "PARJOB_TEST_NODE=elsewhere", exe]);
    c
}

/// Ranks 0 and 1 from this build, rank 2 with another registry.
fn mismatched(exe: &str) -> Command {
    let mut c = mpirun(2);
    c.args([
        exe,
        ":",
        "-n",
        "1",
        "-x",
        "PARJOB_TEST_FINGERPRINT_SALT=7",
        exe,
    ]);
    c
}

const CASES: &[Case] = &[
    // Under Slurm's srun with PMIx: the same binary, the same scenario.
    Case {
        name: "results",
        launch: srun,
        env: &[],
        succeeds: true,
        expect: &["OK results", "RANKS {1, 2}"],
        slurm: true,
    },
    Case {
        name: "results",
        launch: three,
        env: &[],
        succeeds: true,
        expect: &["OK results", "RANKS {1, 2}"],
        slurm: false,
    },
    Case {
        name: "streams",
        launch: three,
        env: &[],
        succeeds: true,
        expect: &[
            "OK streams",
            "MPI: 2 worker ranks: rank 1 on",
            "Done 200 tasks",
            "finished",
        ],
        slurm: false,
    },
    Case {
        name: "straggler",
        launch: three,
        env: &[],
        succeeds: true,
        expect: &["OK straggler"],
        slurm: false,
    },
    Case {
        name: "panic",
        launch: three,
        env: &[],
        succeeds: true,
        expect: &["OK panic", "on MPI rank 2 on", "CONTINUE "],
        slurm: false,
    },
    Case {
        name: "abort",
        launch: three,
        env: &[],
        succeeds: false,
        expect: &["MPI rank 2 on", "died of SIGABRT", "ends the whole MPI job"],
        slurm: false,
    },
    Case {
        name: "mismatch",
        launch: mismatched,
        env: &[],
        succeeds: true,
        expect: &["OK mismatch", "worker handshake failed"],
        slurm: false,
    },
    Case {
        name: "spawn",
        launch: alone,
        env: &[("OMPI_MCA_rmaps_base_oversubscribe", "1")],
        succeeds: true,
        expect: &["OK spawn"],
        slurm: false,
    },
    Case {
        name: "spawn_without_slots",
        launch: alone,
        env: &[("OMPI_MCA_rmaps_base_oversubscribe", "0")],
        succeeds: true,
        expect: &["OK spawn_without_slots", "oversubscribe"],
        slurm: false,
    },
    Case {
        name: "alone",
        launch: alone,
        env: &[],
        succeeds: true,
        expect: &["OK alone"],
        slurm: false,
    },
    // On rank 0's node: both ranks map rank 0's memfd, no bytes sent.
    Case {
        name: "broadcast",
        launch: three,
        env: &[("PARJOB_MPI_EXPECT_COPIES", "0")],
        succeeds: true,
        expect: &["OK broadcast", "RECEIVED {1: 1, 2: 1}"],
        slurm: false,
    },
    // Sharing off: each rank receives the bytes.
    Case {
        name: "broadcast",
        launch: three,
        env: &[
            ("PARJOB_MPI_NO_NODE_SHARING", "1"),
            ("PARJOB_MPI_EXPECT_COPIES", "2"),
        ],
        succeeds: true,
        expect: &["OK broadcast", "RECEIVED {1: 1, 2: 1}"],
        slurm: false,
    },
    // Another node: one rank receives the bytes, the other its memfd.
    Case {
        name: "broadcast",
        launch: two_nodes,
        env: &[("PARJOB_MPI_EXPECT_COPIES", "1")],
        succeeds: true,
        expect: &["OK broadcast", "RECEIVED {1: 1, 2: 1}"],
        slurm: false,
    },
    // The same bytes in a later run: headers only.
    Case {
        name: "broadcast_again",
        launch: three,
        env: &[
            ("PARJOB_MPI_NO_NODE_SHARING", "1"),
            ("PARJOB_MPI_EXPECT_COPIES", "0"),
        ],
        succeeds: true,
        expect: &["OK broadcast_again"],
        slurm: false,
    },
    // Ranks that keep nothing receive the bytes again.
    Case {
        name: "broadcast_again",
        launch: three,
        env: &[
            ("PARJOB_MPI_NO_NODE_SHARING", "1"),
            ("PARJOB_MPI_CACHE_BYTES", "0"),
            ("PARJOB_MPI_EXPECT_COPIES", "2"),
        ],
        succeeds: true,
        expect: &["OK broadcast_again"],
        slurm: false,
    },
    Case {
        name: "nested",
        launch: three,
        env: &[],
        succeeds: true,
        expect: &["OK nested"],
        slurm: false,
    },
    Case {
        name: "timeout",
        launch: three,
        env: &[],
        succeeds: true,
        expect: &["OK timeout", "ran over its timeout"],
        slurm: false,
    },
    Case {
        name: "timeout_retried",
        launch: three,
        env: &[],
        succeeds: true,
        expect: &[
            "OK timeout_retried",
            "retrying task",
            "(attempt 2 of 2) on rank",
        ],
        slurm: false,
    },
    Case {
        name: "traced",
        launch: three,
        env: &[],
        succeeds: true,
        expect: &["OK traced"],
        slurm: false,
    },
    Case {
        // main returns after the runs; the stop is what must end.
        name: "stopped_rank",
        launch: three,
        env: &[],
        succeeds: false,
        expect: &["OK stopped_rank", "did not answer the stop", "MPI_Abort"],
        slurm: false,
    },
    Case {
        name: "big_results",
        launch: three,
        env: &[],
        succeeds: true,
        expect: &["OK big_results"],
        slurm: false,
    },
    // Rank 0's main panics: the job ends, with its status, and no rank hangs.
    Case {
        name: "driver_panics",
        launch: three,
        env: &[],
        succeeds: false,
        expect: &["the driver gives up"],
        slurm: false,
    },
];

/// Runs `command`, or gives up after `limit` (killing it).
fn run_within(mut command: Command, limit: Duration) -> Result<Output, String> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().map_err(|e| format!("starting: {e}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let deadline = std::time::Instant::now() + limit;
    let mut orphaned_since = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(out) => return out.map_err(|e| e.to_string()),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err("the waiter died".into()),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        // OpenMPI's mpirun has been seen to hang for ever after every rank
        // of the job has exited (they stay zombies it never reaps), when a
        // rank had been stopped by SIGSTOP: that is the launcher's hang,
        // not the program's, so it is ended and the output judged.
        if only_zombie_children(pid) {
            let since = *orphaned_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > Duration::from_secs(5) {
                println!("note: mpirun hung after every rank had exited; it was ended");
                // SAFETY: signalling a child of ours by pid.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                orphaned_since = None;
                continue;
            }
        } else {
            orphaned_since = None;
        }
        if std::time::Instant::now() >= deadline {
            // SAFETY: signalling a child of ours by pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            return Err(format!("still running after {limit:?}: a hang"));
        }
    }
}

/// Whether `pid` has children and every one has exited (a zombie).
fn only_zombie_children(pid: u32) -> bool {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let states: Vec<bool> = children
        .split_whitespace()
        .map(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| Some(stat.rsplit_once(')')?.1.trim_start().starts_with('Z')))
                .unwrap_or(true)
        })
        .collect();
    !states.is_empty() && states.iter().all(|&zombie| zombie)
}

fn check(case: &Case, exe: &str) -> Result<(), String> {
    let mut command = (case.launch)(exe);
    command.env("PARJOB_MPI_SCENARIO", case.name);
    for (k, v) in case.env {
        command.env(k, v);
    }
    let out = run_within(command, Duration::from_secs(120))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() != case.succeeds {
        return Err(format!("exit status {}:\n{text}", out.status));
    }
    for needle in case.expect {
        if !text.contains(needle) {
            return Err(format!("no {needle:?} in the output:\n{text}"));
        }
    }
    Ok(())
}

#[parjob::main]
fn main() {
    if let Ok(name) = std::env::var("PARJOB_MPI_SCENARIO") {
        scenarios::run(&name);
        return;
    }
    let exe = std::env::current_exe().unwrap().display().to_string();
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut failed = 0;
    for case in CASES {
        if !filter.is_empty() && !filter.iter().any(|f| case.name.contains(f.as_str())) {
            continue;
        }
        let env: Vec<String> = case.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let label = format!("{}{}", case.name, if case.slurm { " (srun)" } else { "" });
        if case.slurm && std::env::var_os("PARJOB_TEST_SLURM").is_none() {
            println!(
                "test mpi::{label} ... ignored, needs a running Slurm: run .ci/slurm-up, \
                 then set PARJOB_TEST_SLURM=1"
            );
            continue;
        }
        match check(case, &exe) {
            Ok(()) => println!("test mpi::{label} {} ... ok", env.join(" ")),
            Err(why) => {
                failed += 1;
                println!("test mpi::{label} {} ... FAILED\n{why}", env.join(" "));
            }
        }
    }
    if failed > 0 {
        println!("{failed} MPI case(s) failed");
        std::process::exit(1);
    }
}
